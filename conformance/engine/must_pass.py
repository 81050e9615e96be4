"""The curated, versioned must-pass list (data/must_pass.json) and the cases a profile runs on a backend.

must_pass_cases(profile)         the cases tagged with a profile (smoke | quick | full | gpu), in file order
must_pass_for(profile, backend, arch, table)  what a certify run of that profile executes on that backend
                                 (and device arch, when known): the tagged cases the hardware can express, plus
                                 the tile-table cases of the table that device reads (tile_cases.py; `table`:
                                 a candidate table given as data, as a certificate records it)
MUST_PASS_VERSION, must_pass_hash()   recorded in every report and certificate
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.devices import HOST_BACKENDS
from moe_cts.conformance.engine.tile_cases import tile_cases

MUST_PASS_PATH = Path(__file__).parents[1] / "data" / "must_pass.json"


@functools.cache
def _must_pass_data() -> dict[str, Any]:
    return json.loads(MUST_PASS_PATH.read_text())


def _load_version() -> str:
    return str(_must_pass_data()["version"])


MUST_PASS_VERSION: str = _load_version()


def must_pass_hash() -> str:
    """sha256 of data/must_pass.json, recorded in every report."""
    return hashlib.sha256(MUST_PASS_PATH.read_bytes()).hexdigest()


def must_pass_entries() -> list[dict[str, Any]]:
    """The raw entries: name, profiles (smoke | quick | full | gpu), note (the edge it aims at), case."""
    return list(_must_pass_data()["cases"])


def must_pass_cases(profile: str | None = None) -> list[Case]:
    """The curated cases, in file order; with `profile`, only those tagged with it."""
    return [
        Case.from_json({**e["case"], "name": e["name"]})
        for e in must_pass_entries()
        if profile is None or profile in e["profiles"]
    ]


def must_pass_profiles(case: Case) -> tuple[str, ...]:
    """Profile tags of a must-pass case (by name); () for a generated case."""
    for e in must_pass_entries():
        if e["name"] == case.name:
            return tuple(e["profiles"])
    return ()


def must_pass_for(
    profile: str, backend: str, arch: str | None = None, table: dict[str, Any] | None = None
) -> list[Case]:
    """Must-pass cases of a profile. Cases tagged "gpu" (real-model presets at the sizes a GPU holds) join the
    quick and full profiles on a GPU, and are left out on the interpreter and the cpu (they need device memory or time the
    CPU does not have) and from smoke (a few minutes anywhere). `arch` (torch's name: "sm_80", "gfx942") also
    leaves out the fp8 flavours that device cannot compile (e4m3fn on sm80); without it, those of the backend."""
    host = backend in HOST_BACKENDS  # the interpreter and the plain cpu: no GPU-sized presets
    cases = [c for c in must_pass_cases(profile) if not (host and "gpu" in must_pass_profiles(c))]
    if not host and profile in ("quick", "full"):
        seen = {c.case_id for c in cases}
        cases += [c for c in must_pass_cases("gpu") if c.case_id not in seen]
    # every row of the table this device reads (the candidate's, or `table` as a certificate recorded it) at its
    # bucket edges, in every profile
    cases += tile_cases(backend, arch, table)
    return [c for c in cases if _expressible(c, backend, arch)]


def _expressible(case: Case, backend: str, arch: str | None) -> bool:
    """False for an fp8 case in a flavour the device cannot compile (e4m3fnuz, an AMD format, on cuda; any fp8
    on sm80). Such a case is not run there: an implementation that claims the flavour would decline it on that
    hardware, and a declined must-pass case inside the claims voids the run (report/coverage.py). Before this
    rule the CUDA certify runs counted the e4m3fnuz case as an executed Pass on its router stage alone."""
    q = case.spec.quant
    if q is None or not q.method.startswith("fp8"):
        return True
    from moe_cts.kernels.target_info import device_rejects_fp8  # lazily: kernels imports triton

    return not device_rejects_fp8(backend, arch, q.fp8_format)
