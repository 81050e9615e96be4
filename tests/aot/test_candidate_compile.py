"""`moe-cts compile --table`: a candidate tile table is compiled ahead of time for the targets that read it (a
table tuned for a GPU we lack, checked on this CPU), the others compile their shipped tables; a table none of the
requested targets reads is a usage error before any compile."""

from __future__ import annotations

import copy
import json

from typer.testing import CliRunner

import moe_cts.kernels.config as cfgmod
from moe_cts.conformance.aot import plan
from moe_cts.conformance.cli.app import app


def _gfx942_candidate(tmp_path) -> str:
    t = copy.deepcopy(cfgmod.load_table("hip"))
    t["targets"] = ["gfx942"]
    t["tables"]["16bit"][-1]["gate_up"]["num_stages"] = 1
    path = tmp_path / "gfx942.json"
    path.write_text(json.dumps(t))
    return str(path)


def test_the_candidates_targets_plan_its_rows_and_the_others_their_own(tmp_path, monkeypatch):
    monkeypatch.setenv(cfgmod.TABLE_ENV, _gfx942_candidate(tmp_path))
    tables = {}
    for s in plan.scenarios("default", ("gfx90a", "gfx942")):
        if s.origin.startswith("table:"):
            tables.setdefault(s.origin.split("/")[0], set()).update(s.targets)
    assert tables == {"table:candidate": {"gfx942"}, "table:hip": {"gfx90a"}}
    stages = {s.config["gate_up"]["num_stages"] for s in plan.scenarios("default", ("gfx942",))
              if s.origin.startswith("table:candidate/16bit/m>any")}  # fmt: skip
    assert stages == {1}  # the candidate's edited row, not the shipped one


def test_a_candidate_no_requested_target_reads_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "compile",
            "--targets",
            "sm90",
            "--table",
            _gfx942_candidate(tmp_path),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2
    assert (
        "expected a table one of the targets ['sm90'] reads, got one for hip targets ['gfx942']"
        in result.output
    )
