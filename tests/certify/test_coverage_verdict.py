"""A verdict needs coverage: a run with nothing executed, or `--cases` that match nothing, exits 2 and writes no
certificate; the report and the console say what was executed, NotSupported and waived."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from moe_cts.conformance.cli.app import app

QUIET = ["--examples", "0", "--jobs", "1"]


def test_a_run_whose_cases_are_all_not_supported_is_void_without_a_certificate(certified):
    run = certified("supports-nothing", ["--impl", "cts_test_impls:SupportsNothing", *QUIET])
    assert run.returncode == 2, run.stdout[-3000:]
    assert not (run.out / "certificate.tgz").exists()
    dev = run.report["devices"][0]
    assert (run.report["verdict"]["node"], dev["verdict"]) == ("void", "void")
    assert dev["coverage"]["cases"]["executed"] == 0
    assert dev["coverage"]["not_supported_share"] == 1.0
    assert any("no case was executed" in m for m in dev["coverage"]["missing"])
    assert "no case was executed" in run.stdout and re.search(r"100% of \d+", run.stdout), run.stdout
    assert "no certificate written" in run.stdout


def test_cases_that_match_no_must_pass_case_exit_2_before_running(tmp_path):
    result = CliRunner().invoke(app, ["certify", "--cases", "bogus", "--out", str(tmp_path / "out")])
    text = result.output + (getattr(result, "stderr", "") or "")
    assert result.exit_code == 2, text
    assert "--cases: bogus is not a must-pass case id of profile smoke" in text
    assert not (tmp_path / "out" / "shards").exists()


def test_the_smoke_report_records_claims_and_coverage_per_stage_and_dtype(smoke_run):
    r = smoke_run.report
    cov = r["devices"][0]["coverage"]
    assert r["implementation"]["capabilities"]["dtypes"] == ["bfloat16", "float16", "float32"]
    assert cov["missing"] == [] and cov["cases"]["executed"] > 0
    assert set(cov["per_dtype"]) == {"float32", "float16", "bfloat16"}
    assert set(cov["claimed"]["stages"]) <= {s for s, c in cov["per_stage"].items() if c["executed"]}
    assert "coverage:" in smoke_run.stdout and "not supported" in smoke_run.stdout
