"""`moe-cts certify --compile`: the AOT tier's records in report.json, report.html and the console, and a
compile Fail makes the verdict non-conformant (issue 6, "the results go into the certification report").

certify runs in this process (typer's CliRunner) with `aot.run_matrix` replaced by the real sm90 / gfx942
records that the shared `compiled` fixture already compiled (conftest.py): the table guard's GEMMs and the
oversized acceptance config, which fits sm90 and is a real shared-memory Fail on gfx942. The conformance
shard itself is the real pytest subprocess (torch-eager naming our kernel registry, on the interpreter).
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from filelock import FileLock
from typer.testing import CliRunner

from moe_cts.conformance.aot import matrix as aot
from moe_cts.conformance.cli.app import app
from moe_cts.conformance.engine.devices import Device
from moe_cts.conformance.engine.must_pass import must_pass_for
from moe_cts.conformance.report import compile as report_compile
from moe_cts.conformance.report.certificate import check_report, verify

#: torch-eager naming our kernel registry (tests/certify/cts_test_impls.py): the compile tier applies to it
WITH_REGISTRY = "cts_test_impls:EagerWithOurRegistry"
DOUBLES = Path(__file__).parents[1] / "certify"
OVERSIZED_ON_GFX942 = "compile FAIL gate_up_kernel [M64 N64 K64 G8 w4 s4] bfloat16 on gfx942"


def _records_for(compiled: dict, targets) -> list[aot.AotRecord]:
    picked = compiled["records"]["guard"] + compiled["records"]["test:oversized"]
    return [aot.AotRecord.from_json(r) for r in picked if r["target"] in targets]


def _certify(shared: Path, key: str, args: list[str], compiled: dict) -> dict:
    """`moe-cts certify ARGS` once per session (a file lock across xdist workers); returns its exit code,
    output, out directory and the run_matrix calls it made."""
    out, done = shared / f"aot-certify-{key}", shared / f"aot-certify-{key}.json"
    with FileLock(str(done) + ".lock"):
        if not done.exists():
            calls = []

            def fake_run_matrix(targets=None, full=False, out=None, jobs=1, tier=None, cancel=None):
                calls.append({"targets": list(targets), "full": full, "jobs": jobs, "tier": tier})
                return _records_for(compiled, targets)

            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(aot, "run_matrix", fake_run_matrix)
                mp.delenv("PYTEST_XDIST_WORKER", raising=False)  # the shard's own xdist workers set theirs
                mp.syspath_prepend(str(DOUBLES))  # this process loads the implementation too
                mp.setenv(
                    "PYTHONPATH", os.pathsep.join(filter(None, (str(DOUBLES), os.environ.get("PYTHONPATH"))))
                )
                result = CliRunner().invoke(app, ["certify", "--out", str(out), *args])
            text = result.output + (str(result.exception) if result.exit_code not in (0, 1, 2) else "")
            done.write_text(json.dumps({"rc": result.exit_code, "output": text, "calls": calls}))
    return {**json.loads(done.read_text()), "out": out}


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory, worker_id) -> Path:
    base = tmp_path_factory.getbasetemp()
    return base.parent if worker_id != "master" else base


@pytest.fixture(scope="session")
def passing(shared_dir, compiled) -> dict:
    args = ["--impl", WITH_REGISTRY, "--examples", "0", "--jobs", "1", "--compile", "sm90"]
    return _certify(shared_dir, "sm90", args, compiled)


@pytest.fixture(scope="session")
def failing(shared_dir, compiled) -> dict:
    one = must_pass_for("smoke", "interpreter")[0].case_id
    args = [
        "--impl",
        WITH_REGISTRY,
        "--examples",
        "0",
        "--jobs",
        "1",
        "--cases",
        one,
        "--compile",
        "gfx942,sm90",
    ]
    return _certify(shared_dir, "gfx942", args, compiled)


def _report(run: dict) -> dict:
    return json.loads((run["out"] / "report.json").read_text())


def test_certify_compile_sm90_runs_the_default_tier_for_sm90_on_the_cpus_the_case_workers_leave(passing):
    from moe_cts.conformance.cli.certify import compile_jobs

    want = compile_jobs(1)  # --jobs 1, one shard
    assert want == max(1, (os.cpu_count() or 1) - 1)
    assert passing["calls"] == [{"targets": ["sm90"], "full": False, "jobs": want, "tier": None}]


def test_a_passing_compile_tier_keeps_the_run_conformant(passing):
    assert passing["rc"] == 0, passing["output"][-3000:]
    r = _report(passing)
    assert (r["schema_version"], r["verdict"]["node"], r["verdict"]["compile"]) == (2, "conformant", "pass")
    assert "compile: pass" in passing["output"] and "verdict: CONFORMANT" in passing["output"]


def test_report_json_has_a_compile_section_with_every_record_and_counts_per_target(passing, compiled):
    section = _report(passing)["compile"]
    want = _records_for(compiled, ("sm90",))
    assert len(section["records"]) == len(want) > 0
    assert {r["target"] for r in section["records"]} == {"sm90"}
    assert section["counts"] == {"sm90": {"compiled": len(want)}}
    assert (section["tier"], section["requested_targets"], section["failures"]) == ("default", ["sm90"], [])


def test_report_html_has_a_compile_table_with_shared_memory_registers_and_matrix_instructions(passing):
    html = (passing["out"] / "report.html").read_text()
    section = html[html.index('<h2 id="compile">') :]
    assert "<h3>sm90 (" in section
    header = "".join(f"<th>{c}</th>" for c in report_compile.COLUMNS)
    assert header in section
    assert "/ 227 KiB</td>" in section and "wgmma" in section  # the limit of sm90, the Hopper matrix unit


def test_the_console_prints_the_per_target_summary_table(passing, compiled):
    n = len(_records_for(compiled, ("sm90",)))
    assert f"compile sm90: {n} compiled" in passing["output"]
    assert "227 KiB" in passing["output"]  # a shared memory / limit cell


def test_the_certificate_with_a_compile_section_verifies(passing):
    assert verify(passing["out"] / "certificate.tgz", allow_dirty=True) == []


def test_verify_names_a_compile_section_that_did_not_pass(passing):
    report = _report(passing)
    report["compile"]["verdict"] = "fail"
    assert "the compile section's verdict is fail, not pass" in check_report(report, allow_dirty=True)


def test_a_compile_fail_makes_certify_exit_1_and_names_kernel_config_and_target(failing):
    assert failing["rc"] == 1, failing["output"][-3000:]
    assert OVERSIZED_ON_GFX942 in failing["output"]
    r = _report(failing)
    assert (r["verdict"]["node"], r["verdict"]["compile"]) == ("not_conformant", "fail")
    assert r["devices"][0]["verdict"] == "conformant"  # the cases passed: only the compile tier failed
    assert any(line.startswith(OVERSIZED_ON_GFX942) for line in r["verdict"]["reasons"])
    assert OVERSIZED_ON_GFX942 in (failing["out"] / "report.html").read_text()


def test_junit_has_a_compile_suite_whose_failure_is_the_gfx942_record(failing):
    root = ET.parse(failing["out"] / "junit.xml").getroot()
    suite = next(s for s in root.iter("testsuite") if s.get("name") == "moe-cts[compile]")
    failed = [tc.get("name") for tc in suite.iter("testcase") if tc.find("failure") is not None]
    assert failed == ["gate_up_kernel[M64 N64 K64 G8 w4 s4] bfloat16 on gfx942"]


# -- resolving --compile ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "arch,target",
    [("sm_90", "sm90"), ("sm_100", "sm100"), ("gfx942", "gfx942"), ("sm_89", None), ("cpu", None)],
)
def test_a_device_architecture_maps_to_its_aot_target(arch, target):
    assert report_compile.arch_target(arch) == target


@pytest.mark.parametrize(
    "spec,devices,arch,want",
    [
        ("auto", ["interpreter"], "cpu", ()),
        ("auto", ["cuda:0"], "sm_90", ("sm90",)),
        ("auto", ["hip:0", "hip:1"], "gfx942", ("gfx942",)),
        ("auto", ["cuda:0"], "sm_89", ()),
        ("none", ["cuda:0"], "sm_90", ()),
        ("all", ["interpreter"], "cpu", ("sm80", "sm90", "sm100", "gfx90a", "gfx942", "gfx950")),
        ("gfx942, sm90", ["interpreter"], "cpu", ("sm90", "gfx942")),
    ],
)
def test_compile_option_resolves_against_the_certified_devices(monkeypatch, spec, devices, arch, want):
    fake = Device("cuda", 0, None, "fake", arch)
    monkeypatch.setattr("moe_cts.conformance.report.compile.select_device", lambda name: fake)
    assert report_compile.compile_targets(spec, devices) == want


@pytest.mark.parametrize("spec", ["bogus", "sm90,sm75", ","])
def test_a_bad_compile_option_is_a_usage_error_in_one_sentence(spec):
    result = CliRunner().invoke(app, ["certify", "--device", "interpreter", "--compile", spec])
    text = result.output  # stdout and stderr
    assert result.exit_code == 2, text
    assert "--compile: expected auto, none, all or a comma-separated subset of sm80" in text
    assert len(text.strip().splitlines()) == 1, text


@pytest.fixture(scope="session")
def no_registry(shared_dir, compiled) -> dict:
    one = must_pass_for("smoke", "interpreter")[0].case_id
    args = ["--impl", "torch-eager", "--examples", "0", "--jobs", "1", "--cases", one, "--compile", "sm90"]
    return _certify(shared_dir, "no-registry", args, compiled)


def test_the_compile_tier_is_not_applicable_to_an_implementation_without_a_kernel_registry(no_registry):
    assert no_registry["rc"] == 0, no_registry["output"][-2000:]
    assert no_registry["calls"] == []  # nothing of ours was compiled in its name
    section = _report(no_registry)["compile"]
    assert (
        section["verdict"] == "not_applicable"
        and "torch-eager exposes no kernel registry" in section["reason"]
    )
    assert "compile: not applicable" in no_registry["output"]
