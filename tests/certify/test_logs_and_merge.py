"""The pieces under certify, on made-up results: the JSONL log (a started case with no result is a Crash;
cut off by Ctrl-C it is left out), device verdicts, device lists, and the fleet comparison."""

from __future__ import annotations

import json

import pytest

from moe_cts.conformance.engine.log import ResultLog, read_results, record_crash
from moe_cts.conformance.engine.protocol import Capabilities
from moe_cts.conformance.engine.results import CaseResult, Outcome, StageVerdict
from moe_cts.conformance.harness.shard import DeviceListError, make_shards, resolve_devices
from moe_cts.conformance.report.fleet import compare
from moe_cts.conformance.report.schema import EXIT_CODES, build_report


def _result(cid: str, outcome: Outcome = Outcome.PASS) -> CaseResult:
    return CaseResult(
        case_id=cid,
        outcome=outcome,
        params={"dtype": "float32"},
        stages=(StageVerdict("end_to_end", outcome),),
    )


#: what the made-up shards claim: fp32 end to end, so two float32 cases judged end to end meet the smoke minimum
CLAIMS = Capabilities(dtypes=frozenset({"float32"})).to_json()


def test_a_started_case_without_a_result_is_a_crash(tmp_path):
    log = ResultLog(tmp_path, "gw0")
    log.started("a", "must_pass")
    log.result(_result("a"), "must_pass")
    log.started("b", "must_pass")
    run = read_results(tmp_path)
    assert [(r.case_id, r.outcome) for _, r in run.results] == [("a", Outcome.PASS), ("b", Outcome.CRASH)]


def test_a_case_cut_off_by_an_interrupt_is_not_a_crash(tmp_path):
    log = ResultLog(tmp_path, "gw0")
    log.started("b", "must_pass")
    run = read_results(tmp_path, interrupted=True)
    assert run.results == [] and [e["case_id"] for e in run.unfinished] == ["b"]


def test_a_torn_last_line_is_ignored(tmp_path):
    ResultLog(tmp_path, "gw0").result(_result("a"), "must_pass")
    with open(tmp_path / "results-gw0.jsonl", "a") as f:
        f.write('{"event": "result", "case_id": "b", "res')
    assert [r.case_id for _, r in read_results(tmp_path).results] == ["a"]


def test_the_controller_records_a_crash_once_per_unfinished_case(tmp_path):
    log = ResultLog(tmp_path, "gw3")
    log.started("a", "generated")
    assert record_crash(tmp_path, "gw3", "worker gw3 crashed") == ["a"]
    assert record_crash(tmp_path, "gw3", "again") == []
    ((source, r),) = read_results(tmp_path).results
    assert (source, r.outcome, r.message) == ("generated", Outcome.CRASH, "worker gw3 crashed")


def _shard(tmp_path, name, ids, results):
    d = tmp_path / name
    d.mkdir()
    (d / "run.json").write_text(
        json.dumps(
            {
                "label": name,
                "device_arg": "interpreter",
                "impl": "x",
                "must_pass_ids": ids,
                "device": {"backend": "interpreter"},
                "profile": "smoke",
                "capabilities": CLAIMS,
            }
        )
    )
    log = ResultLog(d, "gw0")
    for r in results:
        log.result(r, "must_pass")
    return d


VERDICTS = {
    "all pass": ([_result("a"), _result("b")], "conformant"),
    "a warning is conformant": ([_result("a"), _result("b", Outcome.QUALITY_WARNING)], "conformant"),
    "a fail": ([_result("a"), _result("b", Outcome.FAIL)], "not_conformant"),
    "a missing must-pass case": ([_result("a")], "not_conformant"),
    "an internal error voids": ([_result("a"), _result("b", Outcome.INTERNAL_ERROR)], "void"),
    "nothing executed voids": ([_result("a", Outcome.NOT_SUPPORTED), _result("b", Outcome.WAIVED)], "void"),
}


@pytest.mark.parametrize("results,verdict", VERDICTS.values(), ids=VERDICTS.keys())
def test_device_verdicts(tmp_path, results, verdict):
    report = build_report([_shard(tmp_path, "dev", ["a", "b"], results)])
    assert report["verdict"]["node"] == verdict
    assert EXIT_CODES[verdict] == {"conformant": 0, "not_conformant": 1, "void": 2}[verdict]


def test_one_bad_device_makes_the_node_not_conformant(tmp_path):
    good = _shard(tmp_path, "cuda:0", ["a"], [_result("a")])
    bad = _shard(tmp_path, "cuda:1", ["a"], [_result("a", Outcome.FAIL)])
    report = build_report([good, bad])
    assert report["verdict"]["devices"] == {"cuda:0": "conformant", "cuda:1": "not_conformant"}
    assert report["verdict"]["node"] == "not_conformant"


def _dev(dev_id, model, outcomes):
    return {
        "id": dev_id,
        "model": model,
        "_cases": {c: {"outcome": o, "failing_stage": None} for c, o in outcomes.items()},
    }


def test_the_device_that_differs_from_its_siblings_is_flagged():
    rows = [_dev(f"n/cuda:{i}", "H100", {"a": "pass", "b": "pass"}) for i in range(7)]
    rows.append(_dev("n/cuda:7", "H100", {"a": "pass", "b": "fail"}))
    rows.append(_dev("m/cuda:0", "MI300X", {"a": "fail", "b": "pass"}))  # another model: not a sibling
    (diff,) = compare(rows)
    assert (diff["case_id"], diff["majority"], diff["flagged"]) == ("b", "pass", ["n/cuda:7"])


def test_without_a_majority_the_non_conformant_device_is_flagged():
    rows = [_dev("n/cuda:0", "H100", {"a": "pass"}), _dev("n/cuda:1", "H100", {"a": "fail"})]
    (diff,) = compare(rows)
    assert diff["majority"] is None and diff["flagged"] == ["n/cuda:1"]


def test_without_a_majority_among_conformant_results_every_device_is_flagged():
    rows = [_dev("n/cuda:0", "H100", {"a": "pass"}), _dev("n/cuda:1", "H100", {"a": "quality_warning"})]
    (diff,) = compare(rows)
    assert diff["flagged"] == ["n/cuda:0", "n/cuda:1"]


def test_all_devices_can_be_simulated(monkeypatch):
    monkeypatch.setenv("MOE_CTS_FAKE_DEVICES", "3")
    shards = make_shards(resolve_devices("auto", "all"))
    assert [s.label for s in shards] == ["interpreter#0", "interpreter#1", "interpreter#2"]


def test_a_device_list_keeps_its_order_and_rejects_unknown_names():
    assert resolve_devices("auto", "cuda:1,cuda:0") == ["cuda:1", "cuda:0"]
    with pytest.raises(DeviceListError, match="Unknown device 'gpu0'"):
        resolve_devices("auto", "cuda:0,gpu0")
