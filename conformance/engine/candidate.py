"""A candidate tile table under certification: `moe-cts certify --table FILE` (or MOE_CTS_TABLE in the environment).

A tuned table is where bad configs live (docs/bugs.md: bug-12 a bad tuned row at small m, bug-13 a pipeline past
the LDS, bug-25 one config miscompiled on one target, bug-27 a table tuned for another device). Certifying the
table before it ships runs the whole profile with the candidate read in place of the shipped table:

    resolve(path, devices, impl) -> Candidate | None      checked before any shard starts (CandidateError)
    resolve_for_targets(path, targets) -> Candidate | None   `moe-cts compile --table`: read by one of the targets
      path         --table, else $MOE_CTS_TABLE, else None (no candidate)
      checks       JSON; kernels/config.py check_table (every field, every entry's shared memory on the targets
                   that read it); impl is the Triton kernels (the table is their data); every device reads it
                   (its backend, and its "targets" where it names them): a device it does not apply to would
                   run the shipped table under the candidate's name
    candidate.export()                                    MOE_CTS_TABLE for the shards and the compile tier
    candidate.record() -> dict                            report.json run.table: {path, sha256, backend, targets}

What the candidate changes in a run: the device's kernels choose tiles from it (kernels/config.py table_for),
the tile-table cases run every one of its rows at both ends of its bucket (engine/tile_cases.py), and the
compile tier compiles its entries for the targets that read it. The certificate carries the table's bytes
(table.json) so `moe-cts verify` recomputes the must-pass list from it (report/certificate.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moe_cts.conformance.engine.tile_cases import TABLE_ENV

#: the candidate's bytes inside a certificate
TABLE_FILE = "table.json"


class CandidateError(ValueError):
    """A candidate table that cannot be certified here; the message names --table and what was expected."""


@dataclass(frozen=True)
class Candidate:
    path: Path
    sha256: str
    backend: str
    targets: tuple[str, ...]  # as the table names them; () = every target of its backend
    data: bytes

    def export(self) -> None:
        """Set MOE_CTS_TABLE for the processes this one starts (the case shards, the compile tier)."""
        os.environ[TABLE_ENV] = str(self.path)

    def reads(self, backend: str, target: str) -> bool:
        """Whether a device of `backend` / `target` (target_info's name: sm90, gfx942, interpreter) reads it."""
        return backend == self.backend and (not self.targets or target in self.targets)

    def named(self) -> str:
        return self.backend + (f" targets {list(self.targets)}" if self.targets else "")

    def record(self) -> dict[str, Any]:
        return {"path": str(self.path), "sha256": self.sha256, "backend": self.backend,
                "targets": list(self.targets)}  # fmt: skip


def resolve(path: str | None, devices: list[Any], impl: str) -> Candidate | None:
    """The candidate of --table (path) or of MOE_CTS_TABLE, checked against the devices (Device objects of
    engine/devices.py); None when neither names one. CandidateError naming the first problem."""
    found = _read(path)
    if found is None:
        return None
    cand, where = found
    if impl != "triton":
        raise CandidateError(
            f"{where}: expected --impl triton (a tile table is the Triton kernels' data), got {impl!r}"
        )
    for d in devices:
        target = "interpreter" if d.backend == "interpreter" else str(d.arch).replace("_", "")
        if not cand.reads(d.backend, target):
            raise CandidateError(f"{where} {cand.path}: expected a table that {d.arg} ({d.backend}, {d.arch}) reads, "
                                 f"got one for {cand.named()}")  # fmt: skip
    return cand


def resolve_for_targets(path: str | None, targets: tuple[str, ...]) -> Candidate | None:
    """The candidate for `moe-cts compile`: at least one of the AOT targets (kernels/target_info names) must read
    it; the others compile their shipped tables."""
    found = _read(path)
    if found is None:
        return None
    cand, where = found
    from moe_cts.kernels import target_info  # lazily, as in _read

    if not any(cand.reads(target_info.get(t).backend, t) for t in targets):
        raise CandidateError(f"{where} {cand.path}: expected a table one of the targets {list(targets)} reads, "
                             f"got one for {cand.named()}")  # fmt: skip
    return cand


def _read(path: str | None) -> tuple[Candidate, str] | None:
    """(the candidate, the option or variable that named it), checked field by field; None when none is named."""
    given = path if path is not None else os.environ.get(TABLE_ENV)
    if not given:
        return None
    where = "--table" if path is not None else TABLE_ENV
    file = Path(given).expanduser().resolve()
    try:
        data = file.read_bytes()
        table = json.loads(data)
    except OSError as e:
        raise CandidateError(
            f"{where} {given}: expected a readable tile table JSON file ({e.strerror})"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CandidateError(f"{where} {given}: expected a tile table in JSON ({e})") from None
    # lazily: moe_cts.kernels imports Triton, after the devices' TRITON_INTERPRET (check_devices ran first)
    from moe_cts.kernels.config import check_table
    from moe_cts.reference.spec import SpecError

    try:
        check_table(table, f"{where} ")
    except SpecError as e:
        raise CandidateError(str(e)) from None
    targets = tuple(table.get("targets", ()))
    return Candidate(file, hashlib.sha256(data).hexdigest(), table["backend"], targets, data), where
