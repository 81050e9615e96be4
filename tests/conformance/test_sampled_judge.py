"""Cases past the host judge's memory (T*k*max(H, I) > SAMPLE_ABOVE) run the whole batch on the device and
are judged on sampled rows plus a whole-batch NaN check (docs/bugs.md#bug-01-int32-address-overflow).
Exercised on the CPU with the threshold lowered."""

from __future__ import annotations

import pytest

from moe_cts.conformance.engine import sampled
from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.devices import select_device
from moe_cts.conformance.engine.results import Outcome
from moe_cts.conformance.engine.runner import run_case
from moe_cts.conformance.impls.broken import BROKEN
from moe_cts.conformance.impls.torch_eager import TorchEagerImplementation
from moe_cts.reference.spec import MoESpec

SPEC = MoESpec(hidden_size=32, intermediate_size=16, num_experts=8, top_k=2, renormalize=True)
CASE = Case(SPEC, 300, "float32", seed=7)
CPU = select_device("cpu")


@pytest.fixture
def low_threshold(monkeypatch):
    monkeypatch.setattr(sampled, "SAMPLE_ABOVE", 1000)
    monkeypatch.setattr(sampled, "INT32_LIMIT", 5000)  # a crossing inside the batch: t*H passes it at t=157


def test_sample_rows_hold_both_ends_the_crossings_and_random_rows(low_threshold):
    rows = sampled.sample_rows(CASE)
    assert rows[0] == 0 and rows[-1] == CASE.num_tokens - 1 and len(set(rows)) == len(rows)
    cross = -(-5000 // 32)
    assert {cross - 1, cross} <= set(rows.tolist())
    assert len(rows) < CASE.num_tokens


def test_the_real_gpu_case_samples_its_rows():
    big = Case(MoESpec(hidden_size=7168, intermediate_size=1024, num_experts=8, top_k=8), 310_000, "bfloat16")
    assert sampled.needs_sampling(big) and len(sampled.sample_rows(big)) < 300


def test_an_honest_implementation_passes_sampled(low_threshold):
    result = run_case(TorchEagerImplementation(), CASE, CPU)
    e2e = next(v for v in result.stages if v.stage == "end_to_end")
    assert result.outcome == Outcome.PASS and "sampled" in e2e.message, e2e.message


def test_a_wrong_implementation_fails_sampled(low_threshold):
    result = run_case(BROKEN["zero-output"].factory(), CASE, CPU)
    assert result.outcome == Outcome.FAIL and result.failing_stage == "end_to_end", result.message


def test_an_unwritten_row_fails_the_whole_batch_check(low_threshold):
    result = run_case(BROKEN["unwritten-row"].factory(), CASE, CPU)
    assert not result.outcome.conformant, result.message
