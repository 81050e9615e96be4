"""The soak lane (engine/soak.py, soak_judge.py, `moe-cts soak`): its verdict is run_case's, it catches the
deliberately broken implementations, it is reproducible, and a time limit loses no result."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from typer.testing import CliRunner

from moe_cts.conformance.cli.app import app
from moe_cts.conformance.engine import soak_judge as sj
from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.results import Outcome
from moe_cts.conformance.engine.runner import run_case
from moe_cts.conformance.engine.soak import HOST_SHAPES, SoakPlan, soak
from moe_cts.conformance.engine.soak_worker import CompileCounter, run_on_device
from moe_cts.conformance.impls.broken import BROKEN
from moe_cts.conformance.impls.broken_quant import QUANT_TABLE
from moe_cts.conformance.impls.registry import get_implementation
from moe_cts.reference.errors import NotSupportedError
from moe_cts.reference.spec import MoESpec

#: the broken implementations on unquantized cases (the soak stream draws no quantized case: docs/soak.md)
PLAIN_BROKEN = sorted(set(BROKEN) - {row[0] for row in QUANT_TABLE})


def _job(impl, device, **kw) -> sj.SoakJob:
    host = dataclasses.replace(device, torch_device=torch.device("cpu"))
    return sj.SoakJob(impl.name, impl.capabilities(), host, seed=kw.pop("seed", 0), batch=kw.pop("batch", 40),
                      spec_pool=kw.pop("spec_pool", 8), **HOST_SHAPES)  # fmt: skip


def _soak_verdict(impl, case: Case, device) -> dict:
    caps = impl.capabilities()
    inputs = case.build_inputs(device.torch_device)
    rec = sj.record(impl, inputs, device, caps)
    r = sj.judge_one(_job(impl, device), case.case_id, rec, inputs)  # the worker's path: inputs built once
    return {v.stage: (v.outcome, v.max_ratio) for v in r.stages if v.stage in sj.JUDGED} | {"case": r.outcome}


def _run_case_verdict(impl, case: Case, device) -> dict:
    r = run_case(impl, case, device)
    judged = [v for v in r.stages if v.stage in sj.JUDGED]
    worst = max((v.outcome for v in judged), key=lambda o: o.severity)
    return {v.stage: (v.outcome, v.max_ratio) for v in judged} | {"case": worst}


def test_soak_verdict_equals_run_case_on_generated_cases(device):
    """The same outcome and the same err/bound ratio per judged stage as the full run_case."""
    impl = get_implementation("triton")
    job = _job(impl, device)
    ids = sj.generate_batch(job, 0, sj.spec_pool(job))[:4]
    assert len(ids) == 4
    for cid in ids:
        case = Case.from_id(cid)
        assert _soak_verdict(impl, case, device) == _run_case_verdict(impl, case, device), str(case)


@pytest.mark.parametrize("name", ["scaling-twice", "unwritten-row", "zero-output"])
def test_soak_verdict_equals_run_case_on_a_failing_case(name, device):
    """Consistent where it matters most: the Fail, its stage and its ratio are run_case's."""
    impl = get_implementation(f"broken:{name}")
    case = BROKEN[name].case
    got = _soak_verdict(impl, case, device)
    assert got == _run_case_verdict(impl, case, device)
    assert got["case"] == Outcome.FAIL


@pytest.mark.parametrize("name", PLAIN_BROKEN)
def test_soak_judge_catches_each_broken_implementation(name, device):
    """Every broken implementation fails the soak judge on its exposing case (wrong-tie-break gets its
    CompatibilityWarning): a bug caught only at gemm1/gemm2/combine by run_case shows in the output."""
    b = BROKEN[name]
    got = _soak_verdict(get_implementation(f"broken:{name}"), b.case, device)["case"]
    assert got == (b.outcome if b.outcome == Outcome.COMPATIBILITY_WARNING else Outcome.FAIL), name


def test_generation_is_reproducible_and_follows_the_seed(device):
    impl = get_implementation("triton")
    job = _job(impl, device)
    pool = sj.spec_pool(job)
    first = sj.generate_batch(job, 3, pool)
    assert first == sj.generate_batch(job, 3, pool)
    assert first != sj.generate_batch(job, 4, pool)
    assert pool == sj.spec_pool(job) != sj.spec_pool(dataclasses.replace(job, seed=1))
    assert {Case.from_id(i).spec for i in first} <= set(pool)
    assert min(Case.from_id(i).num_tokens for i in first) >= 1  # T = 0: nothing to judge, left out


def test_soak_cli_runs_the_triton_kernels_without_a_fail(tmp_path):
    res = CliRunner().invoke(app, ["soak", "--cases", "30", "--device", "interpreter", "--out", str(tmp_path),
                                   "--workers", "2", "--spec-pool", "8", "--batch", "50"])  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "soak.json").read_text())
    assert doc["cases_run"] == 30 == doc["cases_started"] - doc["duplicates_skipped"]
    assert sum(doc["counts"].values()) == 30 and doc["counts"].get("pass", 0) > 0
    assert not {"fail", "crash", "internal_error"} & set(doc["counts"]), doc["fails"]
    assert doc["ranges"]["T"][0] >= 1 and doc["cases_with_T0"] == 0 and "cases/s" in res.output
    assert (tmp_path / "soak-fails.txt").read_text() == ""


def test_soak_cli_catches_a_broken_implementation_and_its_fails_replay(tmp_path, device):
    res = CliRunner().invoke(app, ["soak", "--cases", "20", "--device", "interpreter", "--out", str(tmp_path),
                                   "--impl", "broken:unwritten-row", "--workers", "1", "--spec-pool", "4"])  # fmt: skip
    assert res.exit_code == 1, res.output
    doc = json.loads((tmp_path / "soak.json").read_text())
    assert doc["counts"]["fail"] == len(doc["fails"]) > 0
    lines = (tmp_path / "soak-fails.txt").read_text().splitlines()
    assert lines == [f["replay"] for f in doc["fails"]] and lines[0].startswith("moe-cts replay c1-")
    case = Case.from_id(doc["fails"][0]["case_id"])  # replayed through the full run_case: still a Fail
    r = run_case(get_implementation("broken:unwritten-row"), case, device)
    assert r.outcome == Outcome.FAIL and r.failing_stage == doc["fails"][0]["failing_stage"] == "memory"


def test_time_limit_stops_early_and_keeps_every_result(device):
    rep = soak(get_implementation("torch-eager"), device,
               SoakPlan(cases=10**6, time_limit_s=25, workers=1, batch=20, spec_pool=4))  # fmt: skip
    assert rep.stopped.startswith("time limit")
    assert 0 < rep.ran == rep.started - rep.duplicates < 10**6
    assert rep.to_json()["cases_run"] == rep.ran


@pytest.mark.parametrize(
    ("field", "value"), [("cases", 0), ("seed", -1), ("workers", -2), ("time_limit_s", 0), ("spec_pool", -1)]
)
def test_plan_names_the_bad_field(field, value):
    with pytest.raises(ValueError, match=rf"SoakPlan\.{field}: expected"):
        SoakPlan(**{"cases": 1, field: value})


def test_bad_shape_bound_is_named():
    with pytest.raises(ValueError, match=r"SoakPlan\.shapes: unknown keys \['max_tokenz'\]"):
        SoakPlan(cases=1, shapes={"max_tokenz": 3})


def test_compile_counter_counts_and_restores_the_listener():
    from triton import knobs  # after conftest set TRITON_INTERPRET

    before = knobs.compilation.listener
    with CompileCounter() as c:
        for hit in (False, False, True):
            knobs.compilation.listener(src=None, metadata={}, metadata_group={}, times=None, cache_hit=hit)
    assert (c.compiles, c.cache_loads) == (2, 1) and knobs.compilation.listener is before


class _Raising:
    """A test double whose forward raises: the soak lane records a Crash (or NotSupported) without judging."""

    name = "raising"

    def __init__(self, err: Exception):
        self.err, self.inner = err, get_implementation("torch-eager")

    def capabilities(self):
        return self.inner.capabilities()

    def run(self, inputs, stage, device=None, *, out=None):
        raise self.err


@pytest.mark.parametrize(
    ("err", "kind"), [(RuntimeError("boom"), "crash"), (NotSupportedError("declined"), "not_supported")]
)
def test_an_implementation_error_is_counted_not_raised(err, kind, device):
    case = BROKEN["zero-output"].case
    got, message = run_on_device(
        _Raising(err), case, device, get_implementation("torch-eager").capabilities()
    )
    assert got == kind and str(err) in message


def test_a_waived_or_unsupported_ratio_is_not_the_worst_conformant_one():
    """A waived Fail (bf16 of outside Triton code on the interpreter) keeps its Fail's ratio: the report's "worst
    err/bound (conformant)" must come from cases judged within the bound only."""
    from moe_cts.conformance.engine.soak import SoakReport, _Loop

    report = SoakReport("x", "interpreter", {})
    loop = _Loop(None, SoakPlan(cases=3), None, None, None, report, None)
    case = Case(MoESpec(hidden_size=8, intermediate_size=8, num_experts=2, top_k=1), 2, seed=1)
    for outcome, ratio in (
        ("pass", 0.25),
        ("waived", 6e13),
        ("not_supported", 9.0),
        ("quality_warning", 0.5),
    ):
        loop._add({"case_id": case.case_id, "outcome": outcome, "max_ratio": {"end_to_end": ratio}}, case)
    assert report.worst_ratio == {"end_to_end": 0.5}
    assert report.counts == {"pass": 1, "waived": 1, "not_supported": 1, "quality_warning": 1}
