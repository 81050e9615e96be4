"""`moe-cts list` loads and checks every implementation: a broken entry point is reported, not a crash."""

from __future__ import annotations

from importlib import metadata

import pytest
from typer.testing import CliRunner

from moe_cts.conformance.cli.app import app
from moe_cts.conformance.engine.protocol import ENTRY_POINT_GROUP
from moe_cts.conformance.impls import registry, validate

GOOD = metadata.EntryPoint("good-moe", "moe_cts.conformance.impls.torch_eager:TorchEagerImplementation",
                           ENTRY_POINT_GROUP)  # fmt: skip
MISSING_MODULE = metadata.EntryPoint("gone-moe", "no_such_package.adapter:Impl", ENTRY_POINT_GROUP)
NOT_AN_IMPL = metadata.EntryPoint("not-an-impl", "moe_cts.conformance.engine.protocol:Capabilities",
                                  ENTRY_POINT_GROUP)  # fmt: skip


@pytest.fixture
def entry_points(monkeypatch):
    eps = [GOOD, MISSING_MODULE, NOT_AN_IMPL]
    real = metadata.entry_points

    def fake(**selection):
        # only our group is faked: triton, pytest and typer read theirs through the same function, and an
        # empty answer there leaves a half-imported triton.backends behind for every later test of the worker
        return eps if selection.get("group") == ENTRY_POINT_GROUP else real(**selection)

    monkeypatch.setattr(registry.metadata, "entry_points", fake)
    monkeypatch.setattr(validate.metadata, "entry_points", fake)
    return eps


def test_survey_reports_each_broken_entry_point_with_its_error(entry_points):
    found = {f.name: f for f in validate.survey()}
    assert found["good-moe"].error == "" and found["good-moe"].capabilities is not None
    assert found["good-moe"].source == GOOD.value
    assert "ModuleNotFoundError" in found["gone-moe"].error
    assert "missing method(s)" in found["not-an-impl"].error
    assert found["triton"].source == "built-in"


def test_list_prints_capabilities_and_broken_entry_points_without_crashing(entry_points):
    res = CliRunner().invoke(app, ["list", "--device", "cpu"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "broken implementation gone-moe (no_such_package.adapter:Impl): loading failed" in res.output
    assert "broken implementation not-an-impl" in res.output
    line = next(ln for ln in res.output.splitlines() if ln.startswith("implementations:"))
    assert "good-moe" in line and "gone-moe" not in line
    assert "scoring sigmoid,softmax" in res.output
