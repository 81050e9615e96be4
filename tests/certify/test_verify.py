"""`moe-cts verify`: the smoke run's certificate is valid; an edited report, a missing or repeated case, an
extra file, a dirty tree or a partial run are each rejected with the reason (acceptance 4)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from moe_cts.conformance.cli.app import app
from moe_cts.conformance.report.certificate import pack_files, read_members, verify
from moe_cts.conformance.report.coverage import coverage


@pytest.fixture
def members(smoke_run) -> dict[str, bytes]:
    assert smoke_run.returncode == 0, smoke_run.stdout[-3000:]
    blobs, problems = read_members(smoke_run.out / "certificate.tgz")
    assert problems == []
    return blobs


def _report(blobs):
    return json.loads(blobs["report.json"])


def _with_report(blobs, report):
    """A forger's certificate: the changed report with a freshly computed manifest."""
    out = {n: b for n, b in blobs.items() if n != "MANIFEST.sha256"}
    out["report.json"] = json.dumps(report).encode()
    return out


def _drop_case(blobs):
    r = _report(blobs)
    r["devices"][0]["cases"] = r["devices"][0]["cases"][1:]
    return _with_report(blobs, r)


def _repeat_case(blobs):
    r = _report(blobs)
    r["devices"][0]["cases"].append(r["devices"][0]["cases"][0])
    return _with_report(blobs, r)


def _dirty(blobs):
    r = _report(blobs)
    r["suite"].update(git_dirty=True, released=False, git_sha=r["suite"]["git_sha"] or "0" * 40)
    return _with_report(blobs, r)


def _partial(blobs):
    r = _report(blobs)
    r["partial"] = True
    return _with_report(blobs, r)


def _edit_without_manifest(blobs):
    return {
        **blobs,
        "report.json": blobs["report.json"].replace(b'"outcome": "pass"', b'"outcome": "fail"', 1),
    }


def _coverage_edited_down(blobs):
    """The coverage section says a dtype ran less than it did (consistent manifest)."""
    r = _report(blobs)
    r["devices"][0]["coverage"]["per_dtype"]["float16"]["executed"] = 0
    return _with_report(blobs, r)


def _nothing_executed(blobs):
    """Every case record turned NotSupported, with a coverage section recomputed to match: still below the
    profile's minimum."""
    r = _report(blobs)
    dev = r["devices"][0]
    for c in dev["cases"]:
        c["outcome"] = "not_supported"
        for s in c["stages"]:
            s["outcome"] = "not_supported"
    dev["coverage"] = coverage(
        dev["cases"], r["implementation"]["capabilities"], dev["must_pass_ids"], "smoke"
    )
    return _with_report(blobs, r)


def _extra_file(blobs):
    return {n: b for n, b in blobs.items() if n != "MANIFEST.sha256"} | {"notes.txt": b"trust me\n"}


TAMPERING = {
    "edited report": (_edit_without_manifest, "report.json does not match its SHA-256"),
    "missing case": (_drop_case, "is missing on interpreter"),
    "repeated case": (_repeat_case, "appears 2 times"),
    "extra file": (_extra_file, "unexpected file notes.txt"),
    "dirty tree": (_dirty, "uncommitted changes"),
    "partial run": (_partial, "partial"),
    "coverage edited down": (
        _coverage_edited_down,
        "coverage section of interpreter disagrees with its case records",
    ),
    "nothing executed": (_nothing_executed, "below the profile's minimum: no case was executed"),
}


def test_the_smoke_certificate_is_valid(smoke_run):
    assert verify(smoke_run.out / "certificate.tgz", allow_dirty=True) == []
    result = CliRunner().invoke(app, ["verify", str(smoke_run.out / "certificate.tgz"), "--allow-dirty"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("tamper,reason", TAMPERING.values(), ids=TAMPERING.keys())
def test_verify_rejects_a_tampered_certificate_and_says_why(members, tamper, reason, tmp_path):
    extra = tamper(members)
    blobs = {n: b for n, b in extra.items() if n != "MANIFEST.sha256"}
    cert = pack_files(blobs, tmp_path / "certificate.tgz")
    if "MANIFEST.sha256" in extra:  # keep the original manifest: the edit is not re-hashed
        cert = _repack_keeping_manifest(extra, tmp_path / "certificate.tgz")
    problems = verify(cert, allow_dirty=tamper is not _dirty)
    assert any(reason in p for p in problems), problems
    result = CliRunner().invoke(app, ["verify", str(cert)])
    assert result.exit_code == 1 and "NOT VALID" in result.output


def _repack_keeping_manifest(blobs, path):
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, data in sorted(blobs.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
