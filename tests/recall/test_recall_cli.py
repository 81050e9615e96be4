"""`moe-cts recall`: usage errors name the option; a run writes the table and JSON and exits by the result."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from moe_cts.conformance.cli.app import app

RUNNER = CliRunner()


def test_an_unknown_fault_is_a_usage_error_naming_it(tmp_path) -> None:
    res = RUNNER.invoke(app, ["recall", "--faults", "no-such-fault", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "no-such-fault" in res.output


def test_an_unknown_profile_is_a_usage_error(tmp_path) -> None:
    res = RUNNER.invoke(app, ["recall", "--profile", "huge", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "--profile" in res.output


def test_a_killed_compile_fault_writes_the_table_and_json_and_exits_zero(tmp_path) -> None:
    res = RUNNER.invoke(
        app, ["recall", "--faults", "config-hip-lds-overflow", "--jobs", "1", "--out", str(tmp_path)]
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "recall.json").read_text())
    (fault,) = report["faults"]
    assert (fault["name"], fault["status"], fault["stage"]) == (
        "config-hip-lds-overflow",
        "killed",
        "compile",
    )
    assert "73728 B > 65536 B" in fault["killed_by"][0]
    assert "recall smoke: 1/1" in (tmp_path / "recall.txt").read_text()
