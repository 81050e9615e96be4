"""A surviving mutation whose forward outputs equal the unmutated kernels' bit for bit on every case it ran is
an equivalent mutant on that device (recall/runner.py step 5): reported, left out of the recall's
denominator, never counted as caught."""

from __future__ import annotations

from moe_cts.conformance.engine.devices import select_device
from moe_cts.conformance.impls.triton import TritonImplementation
from moe_cts.conformance.recall import runner, worker
from moe_cts.conformance.recall.catalog import load_catalog
from moe_cts.conformance.recall.worker import CaseRun, FaultResult

FAULT = load_catalog().by_name(["config-batch-invariant-only-small-batches"])[0]


def _run(case: str, digest: str) -> CaseRun:
    return CaseRun(case, "pass", None, "pass", 0.1, digest=digest)


def _control(*runs: CaseRun):
    return tuple((FAULT.impl_key, r) for r in runs)


def test_equal_digests_on_every_case_make_an_equivalent_mutant():
    r = FaultResult(FAULT.name, "survived", runs=(_run("a", "d1"), _run("b", "d2")))
    out = runner._equivalent(FAULT, r, _control(_run("a", "d1"), _run("b", "d2")))
    assert out.status == "equivalent" and "2 cases" in out.message


def test_one_differing_or_missing_digest_keeps_it_survived():
    r = FaultResult(FAULT.name, "survived", runs=(_run("a", "d1"), _run("b", "d2")))
    assert runner._equivalent(FAULT, r, _control(_run("a", "d1"), _run("b", "xx"))).status == "survived"
    assert runner._equivalent(FAULT, r, _control(_run("a", "d1"))).status == "survived"
    blank = FaultResult(FAULT.name, "survived", runs=(_run("a", ""),))
    assert runner._equivalent(FAULT, blank, _control(_run("a", ""))).status == "survived"


def test_killed_faults_are_untouched_and_equivalent_ones_leave_the_denominator():
    killed = FaultResult(FAULT.name, "killed", killed_by=("a",), runs=(_run("a", "d1"),))
    assert runner._equivalent(FAULT, killed, _control(_run("a", "d1"))) is killed
    report = runner.RecallReport("smoke", "interpreter", "8", (FAULT,),
                                 (FaultResult(FAULT.name, "equivalent"),), (), 0.0, 1)  # fmt: skip
    row = report.recall()[FAULT.profile]
    assert row["run"] == 0 and row["equivalent"] == [FAULT.name]


def test_the_digest_is_the_forward_outputs_bits(monkeypatch):
    monkeypatch.setitem(worker._STATE, "device", select_device("interpreter"))
    case = load_catalog().case("wide-batch")
    impl = TritonImplementation()
    d = worker.digest(impl, case)
    assert len(d) == 64 and d == worker.digest(impl, case)
    assert worker.digest(TritonImplementation(batch_invariant=True), case) != d  # another tile, other bits


def test_a_fault_whose_cases_the_device_declines_is_not_exercised(monkeypatch):
    """Every case NotSupported (an e4m3fnuz case on CUDA): nothing ran, so neither caught nor missed."""
    fault = load_catalog().by_name(["fp8-fnuz-max-224"])[0]
    declined = lambda *a, **k: type("R", (), {"outcome": worker.Outcome.NOT_SUPPORTED, "stages": (),
                                              "failing_stage": None, "message": "e4m3fnuz: not on cuda"})()  # fmt: skip
    monkeypatch.setattr("moe_cts.conformance.engine.runner.run_case", declined)
    monkeypatch.setitem(worker._STATE, "device", select_device("interpreter"))
    status, runs, killed = worker._run_cases(fault, [load_catalog().case(fault.cases[0])], 10.0)
    assert status == "not_exercised" and killed == [] and runs[0].outcome == "not_supported"
    report = runner.RecallReport("smoke", "cuda:0", "10", (fault,),
                                 (FaultResult(fault.name, status, runs=tuple(runs)),), (), 0.0, 1)  # fmt: skip
    row = report.recall()[fault.profile]
    assert row["run"] == 0 and row["not_exercised"] == [fault.name]


def test_quantized_cases_get_a_digest(monkeypatch):
    monkeypatch.setitem(worker._STATE, "device", select_device("interpreter"))
    case = load_catalog().case("quant-fp8-block-small")
    assert len(worker.digest(TritonImplementation(), case)) == 64


def test_only_a_surviving_mutation_gets_digests(monkeypatch):
    """Digests cost a forward each: a killed fault's runs get none, a survivor's every run one."""
    monkeypatch.setitem(worker._STATE, "device", select_device("interpreter"))
    case = load_catalog().case("wide-batch")
    result = lambda outcome: (lambda *a, **k: type("R", (), {"outcome": outcome, "stages": (),
                                                             "failing_stage": None, "message": ""})())  # fmt: skip
    monkeypatch.setattr("moe_cts.conformance.engine.runner.run_case", result(worker.Outcome.PASS))
    status, runs, _ = worker._run_cases(FAULT, [case], 10.0)
    assert status == "survived" and len(runs[0].digest) == 64
    monkeypatch.setattr("moe_cts.conformance.engine.runner.run_case", result(worker.Outcome.FAIL))
    status, runs, _ = worker._run_cases(FAULT, [case], 10.0)
    assert status != "survived" and runs[0].digest == ""
