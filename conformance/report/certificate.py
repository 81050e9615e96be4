"""certificate.tgz: exactly report.json, report.html and junit.xml, plus MANIFEST.sha256 (sha256sum format); a run
that certified a candidate tile table (report.json run.table, engine/candidate.py) also carries its bytes,
table.json.

`verify` says why a certificate is not valid, one reason per line:
- the archive holds exactly the listed files (no extra, no missing, only regular files);
- each file matches its SHA-256 in the manifest (an edited report fails here);
- the report is complete (not partial, not a subset) and its verdict is conformant;
- every must-pass case of the profile appears exactly once per device with a conformant result, and the
  report's must-pass hash is this installation's (so the expected list is the one that was run); with a
  candidate table, table.json matches the report's SHA-256 and the tile-table cases are its rows';
- each device's coverage section equals the coverage recomputed from its case records and the claimed
  capabilities (report/coverage.py), and meets the profile's minimum (an edited-down section fails here);
- for the `triton` implementation, the kernel source hash is that of the installed kernels;
- the suite is a released version or a clean git commit (dirty trees are refused unless allow_dirty).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

from moe_cts.conformance.engine.candidate import TABLE_FILE
from moe_cts.conformance.engine.must_pass import must_pass_for, must_pass_hash
from moe_cts.conformance.report.coverage import coverage
from moe_cts.conformance.report.provenance import kernel_source_hash
from moe_cts.conformance.report.schema import SCHEMA, SCHEMA_VERSION

CERT_FILES = ("report.json", "report.html", "junit.xml")
MANIFEST = "MANIFEST.sha256"


def _manifest(blobs: dict[str, bytes]) -> bytes:
    return "".join(f"{hashlib.sha256(b).hexdigest()}  {n}\n" for n, b in sorted(blobs.items())).encode()


def pack_files(blobs: dict[str, bytes], path: Path) -> Path:
    """Write a deterministic tgz of `blobs` plus their manifest (fixed mtime/owner: same input, same bytes)."""
    members = {**blobs, MANIFEST: _manifest(blobs)}
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(members[name]), 0o644, 0
            tar.addfile(info, io.BytesIO(members[name]))
    return path


def cert_files(report: dict[str, Any]) -> tuple[str, ...]:
    """The files a certificate of this report holds besides the manifest."""
    return (*CERT_FILES, TABLE_FILE) if report.get("run", {}).get("table") else CERT_FILES


def pack(out: Path) -> Path:
    names = cert_files(json.loads((out / "report.json").read_text()))
    return pack_files({n: (out / n).read_bytes() for n in names}, out / "certificate.tgz")


def archive_error(e: BaseException) -> str:
    """Why an archive could not be read, in words: a truncated gzip raises EOFError, which click would turn
    into a bare "Aborted!"."""
    if isinstance(e, EOFError):
        return "gzip stream ends early (the file is truncated)"
    if isinstance(e, gzip.BadGzipFile) or "not a gzip file" in str(e):
        return "not a gzip file"
    if isinstance(e, zlib.error):
        return f"gzip data is corrupt ({e})"
    if isinstance(e, tarfile.TarError):
        return f"not a tar archive inside the gzip stream ({e})"
    return f"cannot be read ({e})"


def read_members(path: Path) -> tuple[dict[str, bytes], list[str]]:
    """Regular files of the archive, and problems with its shape (links, directories, duplicates)."""
    blobs: dict[str, bytes] = {}
    problems: list[str] = []
    with tarfile.open(path, "r:gz") as tar:
        for m in tar.getmembers():
            if not m.isfile():
                problems.append(f"{m.name} is not a regular file")
                continue
            if m.name in blobs:
                problems.append(f"{m.name} appears twice in the archive")
            blobs[m.name] = tar.extractfile(m).read()
    return blobs, problems


def check_manifest(blobs: dict[str, bytes], files: tuple[str, ...] = CERT_FILES) -> list[str]:
    problems = []
    expected = {*files, MANIFEST}
    problems += [f"unexpected file {n} in the certificate" for n in sorted(set(blobs) - expected)]
    problems += [f"missing file {n} in the certificate" for n in sorted(expected - set(blobs))]
    listed: dict[str, str] = {}
    for line in blobs.get(MANIFEST, b"").decode(errors="replace").splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    if MANIFEST in blobs and set(listed) != set(files):
        problems.append(f"the manifest lists {sorted(listed)}, expected exactly {sorted(files)}")
    for name in files:
        if name in blobs and name in listed and hashlib.sha256(blobs[name]).hexdigest() != listed[name]:
            problems.append(f"{name} does not match its SHA-256 in the manifest (edited after certification)")
    return problems


def expected_must_pass(
    report: dict[str, Any], dev: dict[str, Any], table: dict[str, Any] | None = None
) -> tuple[list[str] | None, str | None]:
    """The must-pass ids this installation expects for the report's profile on that device (backend, arch), with
    the candidate table the run certified (`table`, from the certificate's table.json) where it had one."""
    ours = must_pass_hash()
    theirs = report.get("suite", {}).get("must_pass_hash")
    if theirs != ours:
        return None, f"the report's must-pass hash {theirs} is not this installation's {ours}"
    backend = dev.get("device", {}).get("backend") or dev.get("device_arg", "").split(":")[0]
    arch = dev.get("device", {}).get("arch")
    return [c.case_id for c in must_pass_for(report["run"]["profile"], backend, arch, table)], None


def candidate_table(report: dict[str, Any], blob: bytes | None) -> tuple[dict[str, Any] | None, list[str]]:
    """The candidate table a report certified (its table.json bytes, `blob`), and the problems with it: missing,
    or not the bytes whose SHA-256 the report recorded."""
    recorded = report.get("run", {}).get("table")
    if not recorded:
        return None, []
    if blob is None:
        return None, [
            f"the report certified the candidate table {recorded.get('path')}, and {TABLE_FILE} is missing"
        ]
    if hashlib.sha256(blob).hexdigest() != recorded.get("sha256"):
        return None, [f"{TABLE_FILE} is not the candidate table the report certified (SHA-256 differs)"]
    try:
        return json.loads(blob), []
    except json.JSONDecodeError as e:
        return None, [f"{TABLE_FILE} is not valid JSON: {e}"]


def check_cases(report: dict[str, Any], table: dict[str, Any] | None = None) -> list[str]:
    problems = []
    for dev in report.get("devices", []):
        label = dev.get("label", "?")
        expected, why = expected_must_pass(report, dev, table)
        if why:
            problems.append(why)
            continue
        seen = Counter(c["case_id"] for c in dev.get("cases", []) if c.get("source") == "must_pass")
        for cid in expected:
            if seen[cid] == 0:
                problems.append(f"must-pass case {cid} is missing on {label}")
            elif seen[cid] > 1:
                problems.append(f"must-pass case {cid} appears {seen[cid]} times on {label}")
        problems += [
            f"{cid} on {label} is not a must-pass case of this profile" for cid in seen if cid not in expected
        ]
        for c in dev.get("cases", []):
            if not c.get("conformant") or c.get("outcome") not in _ALLOWED:
                problems.append(
                    f"case {c['case_id']} on {label} has result {c.get('outcome')}, not an allowed one"
                )
    return problems


def check_coverage(report: dict[str, Any], table: dict[str, Any] | None = None) -> list[str]:
    """Recompute each device's coverage from its case records; the recorded section must equal it and meet
    the profile's minimum (the expected must-pass ids are this installation's, as in check_cases)."""
    problems = []
    caps = report.get("implementation", {}).get("capabilities")
    for dev in report.get("devices", []):
        label = dev.get("label", "?")
        expected, _ = expected_must_pass(report, dev, table)  # a foreign hash is reported by check_cases
        recomputed = coverage(
            dev.get("cases", []), caps, expected or [], report.get("run", {}).get("profile")
        )
        recorded = dev.get("coverage")
        if recorded is None:
            problems.append(f"the report has no coverage section for {label}")
        elif recorded != recomputed:
            diff = sorted(k for k in recomputed if recorded.get(k) != recomputed[k])
            problems.append(
                f"the coverage section of {label} disagrees with its case records ({', '.join(diff)})"
            )
        problems += [
            f"coverage on {label} is below the profile's minimum: {m}" for m in recomputed["missing"]
        ]
    return problems


_ALLOWED = {"pass", "quality_warning", "compatibility_warning", "not_supported", "waived"}


def check_report(
    report: dict[str, Any], *, allow_dirty: bool = False, table_blob: bytes | None = None
) -> list[str]:
    if report.get("schema") != SCHEMA or report.get("schema_version") != SCHEMA_VERSION:
        return [f"report.json is not a {SCHEMA} v{SCHEMA_VERSION} report"]
    problems = []
    if report.get("partial"):
        problems.append("the report is partial (the run was interrupted)")
    if report.get("run", {}).get("subset"):
        problems.append("the report covers a chosen subset of the cases, not the whole profile")
    verdict = report.get("verdict", {}).get("node")
    if verdict != "conformant":
        problems.append(f"the verdict is {verdict}, not conformant")
    compiled = report.get("compile") or {}
    if compiled and compiled.get("verdict") not in ("pass", "not_applicable"):
        problems.append(f"the compile section's verdict is {compiled.get('verdict')}, not pass")
    suite = report.get("suite", {})
    if not suite.get("released"):
        if not suite.get("git_sha"):
            problems.append(f"suite version {suite.get('version')} is not released and has no git commit")
        elif suite.get("git_dirty") and not allow_dirty:
            problems.append(
                f"the suite ran from commit {suite['git_sha'][:12]} with uncommitted changes (dirty)"
            )
    if (
        report.get("run", {}).get("impl") == "triton"
        and suite.get("kernel_source_hash") != kernel_source_hash()
    ):
        problems.append("the kernel source hash is not that of the installed kernels")
    table, table_problems = candidate_table(report, table_blob)
    if table_problems:  # without the certified table the expected tile-table cases are unknown
        return problems + table_problems
    return problems + check_cases(report, table) + check_coverage(report, table)


def verify(path: Path, *, allow_dirty: bool = False) -> list[str]:
    """Every reason the certificate at `path` is not valid; empty when it is."""
    try:
        blobs, problems = read_members(path)
    except (OSError, EOFError, zlib.error, tarfile.TarError) as e:
        return [f"not a valid certificate: {archive_error(e)}"]
    if "report.json" not in blobs:
        return problems + check_manifest(blobs)
    try:
        report = json.loads(blobs["report.json"])
    except json.JSONDecodeError as e:
        return [*problems, *check_manifest(blobs), f"report.json is not valid JSON: {e}"]
    problems += check_manifest(blobs, cert_files(report))
    return problems + check_report(report, allow_dirty=allow_dirty, table_blob=blobs.get(TABLE_FILE))
