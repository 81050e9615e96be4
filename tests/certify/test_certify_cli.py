"""`moe-cts certify` end to end on the interpreter: the README's command (acceptance 1), broken implementations
(exit 1, the failing stage named, the replay command reproduces it), and usage errors (exit 2)."""

from __future__ import annotations

import json
import shlex
import xml.etree.ElementTree as ET

import pytest
from certify_helpers import run_cli
from typer.testing import CliRunner

from moe_cts.conformance.cli.app import app
from moe_cts.conformance.engine.must_pass import must_pass_for, must_pass_hash
from moe_cts.conformance.impls.broken import BROKEN

OUTPUTS = ("report.json", "report.html", "junit.xml", "certificate.tgz")


# -- acceptance 1: `moe-cts certify` on a CPU machine ----------------------------------------------------------
def test_certify_with_no_options_is_conformant_and_writes_every_output(smoke_run):
    assert smoke_run.returncode == 0, smoke_run.stdout[-3000:]
    assert "verdict: CONFORMANT" in smoke_run.stdout
    missing = [n for n in OUTPUTS if not (smoke_run.out / n).is_file()]
    assert missing == [], f"outputs not written: {missing}"


def test_report_records_provenance_and_one_record_per_must_pass_case(smoke_run):
    r = smoke_run.report
    assert (r["schema"], r["schema_version"], r["run"]["profile"], r["run"]["impl"]) == (
        "moe-cts/report",
        2,
        "smoke",
        "triton",
    )
    assert r["suite"]["must_pass_hash"] == must_pass_hash()
    assert r["suite"]["kernel_source_hash"].startswith("sha256:")
    assert r["environment"]["versions"]["torch"] and r["environment"]["versions"]["python"]
    assert r["devices"][0]["device"]["backend"] == "interpreter"
    expected = sorted(c.case_id for c in must_pass_for("smoke", "interpreter"))
    got = sorted(c["case_id"] for c in r["devices"][0]["cases"] if c["source"] == "must_pass")
    assert got == expected
    keys = {"params", "kernel_config", "duration_s", "outcome", "failing_stage", "max_ratio", "stages"}
    assert all(keys <= set(c) for c in r["devices"][0]["cases"])


def test_junit_has_one_testcase_per_case(smoke_run):
    root = ET.parse(smoke_run.out / "junit.xml").getroot()
    names = sorted(tc.get("name") for tc in root.iter("testcase"))
    assert names == sorted(c["case_id"] for c in smoke_run.report["devices"][0]["cases"])


# -- acceptance 3: broken implementations ----------------------------------------------------------------------
BROKEN_CERTIFIED = ["zero-output", "gate-up-swapped"]
#: the first eight smoke cases (one token, zero tokens, prime E, k = E, Mixtral, Qwen2's shared gate, DeepSeek's
#: grouped sigmoid, gpt-oss interleaved): every broken implementation must fail at its one stage on all that it
#: fails; the whole list through the CLI is the README run above, each broken one on its exposing case in
#: tests/conformance/test_broken_implementations.py
BROKEN_CASES = ",".join(c.case_id for c in must_pass_for("smoke", "interpreter")[:8])


@pytest.fixture(params=BROKEN_CERTIFIED)
def broken_run(request, certified):
    name = request.param
    args = ["--impl", f"broken:{name}", "--cases", BROKEN_CASES, "--examples", "0", "--jobs", "1"]
    return name, certified(f"broken-{name}", args)


def test_certifying_a_broken_implementation_exits_1_naming_its_stage(broken_run):
    name, run = broken_run
    stage = BROKEN[name].stage
    assert run.returncode == 1, run.stdout[-3000:]
    failures = [c for c in run.report["devices"][0]["cases"] if not c["conformant"]]
    assert failures, f"broken:{name} passed every smoke case"
    assert {c["failing_stage"] for c in failures} == {stage}
    assert f"at stage {stage}" in run.stdout


def test_a_failure_directory_holds_the_case_tensors_and_its_replay_line(broken_run):
    name, run = broken_run
    dirs = sorted(p for p in (run.out / "failures").iterdir() if p.is_dir())
    assert dirs
    present = {p.name for p in dirs[0].iterdir()}
    assert {"case.json", "worst.json", "replay.txt", "inputs.safetensors", "outputs.safetensors"} <= present
    assert json.loads((dirs[0] / "case.json").read_text())["impl"] == f"broken:{name}"


def test_the_replay_command_of_a_failure_reproduces_its_stage(broken_run, tmp_path):
    _, run = broken_run
    first = sorted(p for p in (run.out / "failures").iterdir() if p.is_dir())[0]
    record = json.loads((first / "case.json").read_text())["record"]
    words = shlex.split((first / "replay.txt").read_text())
    assert words[:2] == ["moe-cts", "replay"]
    p = run_cli(words[1:], cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"result: {record['outcome']} at stage {record['failing_stage']}" in p.stdout


# -- usage errors: one sentence, exit 2 ------------------------------------------------------------------------
USAGE_ERRORS = {
    "unknown device": (["certify", "--device", "tpu:0"], "device"),
    "empty device list": (["certify", "--devices", ","], "names no device"),
    "unknown device in a list": (["certify", "--devices", "cuda:0,npu:1"], "Unknown device 'npu:1'"),
    "unknown implementation": (["certify", "--impl", "no-such-impl"], "unknown implementation"),
    "bad profile": (["certify", "--profile", "huge"], "huge"),
    "zero jobs": (["certify", "--jobs", "0"], "jobs"),
    "malformed case id": (["replay", "not-a-case"], "case_id"),
    "missing certificate": (["verify", "no-such.tgz"], "is not a file"),
    "not a report": (["merge", "pyproject.toml"], "not a moe-cts report"),
}


@pytest.mark.parametrize("args,says", USAGE_ERRORS.values(), ids=USAGE_ERRORS.keys())
def test_bad_usage_exits_2_with_one_clear_sentence(args, says):
    result = CliRunner().invoke(app, args)
    text = result.output + (getattr(result, "stderr", "") or "")
    assert result.exit_code == 2, text
    assert says in text


@pytest.mark.parametrize("command", ["certify", "list", "replay", "verify", "merge"])
def test_every_command_has_help(command):
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


@pytest.mark.parametrize(
    ("on_gpu", "devices", "cpus", "gib", "want"),
    [(False, 1, 2, None, 2), (False, 2, 16, None, 8), (False, 1, 1, None, 1),  # the interpreter: a worker per CPU
     (True, 1, 16, 139.8, 10), (True, 1, 64, None, 10), (True, 8, 16, 139.8, 2), (True, 1, 1, 139.8, 2),
     (True, 2, 12, 139.8, 6), (True, 1, 26, 79.2, 6), (True, 1, 16, 23.6, 2)],
    ids=["cpu-2", "cpu-16-2dev", "cpu-1", "h200-16cpu", "no-mem-info", "h200-8dev", "h200-1cpu", "h200-2dev",
         "80gb-26cpu", "24gb"],
)  # fmt: skip
def test_default_jobs_share_the_cpus_and_the_gpu_memory(on_gpu, devices, cpus, gib, want):
    """A GPU run waits on the host's float64 judge: one worker per CPU of the device's share, within [2, 10],
    and one per 13 GiB of the GPU (10 is what an H200 host with 16 CPUs was measured with, docs/h200.md)."""
    from moe_cts.conformance.cli.certify import GPU_GIB_PER_WORKER, GPU_JOBS_MAX, default_jobs

    assert (GPU_JOBS_MAX, GPU_GIB_PER_WORKER) == (10, 13)
    assert default_jobs(on_gpu, devices, cpus, gib) == want


def test_the_gpu_memory_is_not_read_without_a_gpu():
    from moe_cts.conformance.cli.certify import smallest_gpu_gib

    assert smallest_gpu_gib(["interpreter"]) is None
