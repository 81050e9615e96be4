"""`moe-cts certify --table FILE`: a candidate tile table is certified in place of the shipped one. It runs every
row of the candidate at its bucket edges, the certificate carries its bytes, and `verify` recomputes the
expected cases from them. A table the devices cannot read, or that does not fit them, stops the run before
any case with a sentence naming --table (engine/candidate.py)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import moe_cts.kernels.config as cfgmod
from moe_cts.conformance.cli.app import app
from moe_cts.conformance.engine import candidate
from moe_cts.conformance.engine.devices import select_device
from moe_cts.conformance.engine.tile_cases import tile_cases
from moe_cts.conformance.report.certificate import pack_files, read_members, verify


def _split_interpreter_table() -> dict:
    """The interpreter's table with its 16-bit decode bucket split at m = 4 and another BLOCK_K past it: new
    bucket edges (m = 4, 5) and a tile the shipped table never runs."""
    t = copy.deepcopy(cfgmod.load_table("interpreter"))
    t["tables"]["16bit"][0]["max_tokens_per_expert"] = 4
    t["tables"]["16bit"][1]["gate_up"]["BLOCK_K"] = 32
    t["about"] = "a candidate of tests/certify/test_candidate_certify.py"
    return t


def _write(path, table) -> str:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # xdist workers may write it at once: same bytes, atomic
    tmp.write_text(json.dumps(table, indent=1))
    os.replace(tmp, path)
    return str(path)


@pytest.fixture(scope="session")
def candidate_run(certified, tmp_path_factory):
    path = _write(
        tmp_path_factory.getbasetemp().parent / "candidate-interpreter.json", _split_interpreter_table()
    )
    return certified("candidate", ["--table", path]), path


def test_certify_runs_the_candidates_rows_and_its_certificate_verifies(candidate_run):
    run, path = candidate_run
    assert run.returncode == 0, run.stdout[-3000:]
    assert "candidate tile table" in run.stdout
    report = run.report
    data = Path(path).read_bytes()
    assert report["run"]["table"] == {"path": path, "sha256": hashlib.sha256(data).hexdigest(),
                                      "backend": "interpreter", "targets": []}  # fmt: skip
    blobs, problems = read_members(run.out / "certificate.tgz")
    assert problems == [] and blobs[candidate.TABLE_FILE] == data
    assert verify(run.out / "certificate.tgz", allow_dirty=True) == []
    cases = report["devices"][0]["cases"]
    ran = {c["params"]["name"] for c in cases}
    assert {"tile-16bit-m4", "tile-16bit-m5"} <= ran  # the candidate's bucket edges
    split = next(c for c in cases if c["params"]["name"] == "tile-16bit-m5")
    assert split["kernel_config"]["gate_up"]["BLOCK_K"] == 32  # chosen from the candidate's row


def _members(run) -> dict[str, bytes]:
    blobs, _ = read_members(run.out / "certificate.tgz")
    return {n: b for n, b in blobs.items() if n != "MANIFEST.sha256"}


def _forge(tmp_path, blobs, report) -> list[str]:
    blobs = {**blobs, "report.json": json.dumps(report).encode()}
    return verify(pack_files(blobs, tmp_path / "certificate.tgz"), allow_dirty=True)


def test_verify_reads_the_certified_table_not_this_installations(candidate_run, smoke_run, tmp_path):
    """The shipped table's cases under a recorded candidate are not its rows; a changed or missing table.json
    is named."""
    run, _ = candidate_run
    blobs = _members(run)
    report = json.loads(blobs["report.json"])
    other = json.dumps(cfgmod.load_table("interpreter")).encode()  # the shipped table, as if certified
    assert any(
        "table.json is not the candidate table" in p
        for p in _forge(tmp_path, {**blobs, "table.json": other}, report)
    )
    missing = {n: b for n, b in blobs.items() if n != "table.json"}
    problems = _forge(tmp_path, missing, report)
    assert any("missing file table.json" in p for p in problems) and any(
        "table.json is missing" in p for p in problems
    )
    # the smoke run's cases (the shipped rows) offered as the candidate's certificate
    shipped = json.loads(_members(smoke_run)["report.json"])
    shipped["run"]["table"] = report["run"]["table"]
    problems = _forge(tmp_path, {**_members(smoke_run), "table.json": blobs["table.json"]}, shipped)
    assert any("is missing on interpreter" in p for p in problems), problems


def _certify(tmp_path, *args: str):
    return CliRunner().invoke(app, ["certify", "--out", str(tmp_path / "out"), *args])


def test_a_table_for_another_device_stops_before_any_case(tmp_path):
    path = _write(tmp_path / "sm90.json", cfgmod.load_table("cuda-sm90"))
    result = _certify(tmp_path, "--table", path)
    assert result.exit_code == 2
    assert "--table" in result.output and "expected a table that interpreter" in result.output
    assert not (tmp_path / "out" / "shards").exists()


@pytest.mark.parametrize(
    "edit,why",
    [
        (
            lambda t: t["tables"]["16bit"][1]["gate_up"].update(num_stages="3"),
            "num_stages: expected an int >= 1",
        ),
        (lambda t: t["tables"]["16bit"].reverse(), "16bit[0].max_tokens_per_expert: expected an int > 0"),
        (lambda t: t.update(targets=["sm90"]), "targets: expected a non-empty list of interpreter targets"),
    ],
)
def test_a_wrong_field_of_the_table_is_named(tmp_path, edit, why):
    t = copy.deepcopy(cfgmod.load_table("interpreter"))
    edit(t)
    result = _certify(tmp_path, "--table", _write(tmp_path / "t.json", t))
    assert result.exit_code == 2 and why in result.output, result.output


def test_a_table_is_the_triton_kernels_data(tmp_path):
    path = _write(tmp_path / "t.json", cfgmod.load_table("interpreter"))
    result = _certify(tmp_path, "--table", path, "--impl", "torch-eager")
    assert result.exit_code == 2 and "expected --impl triton" in result.output, result.output


def test_the_environment_names_a_candidate_too(tmp_path, monkeypatch):
    monkeypatch.delenv(candidate.TABLE_ENV, raising=False)
    interp = [select_device("interpreter")]
    assert candidate.resolve(None, interp, "triton") is None
    path = _write(tmp_path / "t.json", _split_interpreter_table())
    monkeypatch.setenv(candidate.TABLE_ENV, path)
    cand = candidate.resolve(None, interp, "triton")
    assert cand is not None and cand.record()["sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    with pytest.raises(candidate.CandidateError, match=r"^MOE_CTS_TABLE .*expected a readable"):
        monkeypatch.setenv(candidate.TABLE_ENV, str(tmp_path / "none.json"))
        candidate.resolve(None, interp, "triton")


def test_the_candidates_tile_cases_are_its_own_rows():
    split = {c.name for c in tile_cases("interpreter", table=_split_interpreter_table())}
    assert {"tile-16bit-m4", "tile-16bit-m5"} <= split
    assert not {"tile-16bit-m4", "tile-16bit-m5"} & {c.name for c in tile_cases("interpreter")}


def test_a_failure_dir_replays_under_the_candidate_it_failed_with(tmp_path, monkeypatch):
    """case.json keeps the kernel path's variables; `moe-cts replay DIR` sets them again (unless the shell does)."""
    from certify_helpers import run_cli

    from moe_cts.conformance.engine.must_pass import must_pass_for
    from moe_cts.conformance.harness.replay import write_failure_dir

    path = _write(tmp_path / "cand.json", _split_interpreter_table())
    case = next(c for c in must_pass_for("smoke", "interpreter") if c.name == "tile-16bit-m1")
    monkeypatch.setenv(candidate.TABLE_ENV, path)
    record = {
        "case_id": case.case_id,
        "replay": f"MOE_CTS_TABLE={path} moe-cts replay {case.case_id}",
        "stages": [],
    }
    d = write_failure_dir(tmp_path / "failures", record, impl="triton", device="interpreter")
    assert json.loads((d / "case.json").read_text())["env"] == {candidate.TABLE_ENV: path}
    monkeypatch.delenv(candidate.TABLE_ENV)  # the child inherits this environment: without the variable
    p = run_cli(["replay", str(d)], cwd=tmp_path)
    assert f"environment of the failing run: {candidate.TABLE_ENV}={path}" in p.stdout, p.stdout + p.stderr
    assert p.returncode == 0, p.stdout + p.stderr
