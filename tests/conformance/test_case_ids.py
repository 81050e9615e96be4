"""Acceptance 4: a case id replays the same inputs bit for bit and the same verdict."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given

from moe_cts.conformance.engine import strategies
from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.must_pass import MUST_PASS_VERSION, must_pass_cases, must_pass_hash
from moe_cts.conformance.engine.runner import run_case
from moe_cts.conformance.impls.broken import BROKEN
from moe_cts.conformance.impls.registry import get_implementation


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    view = {4: torch.int32, 2: torch.int16}[a.element_size()]
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(view), b.view(view))


@given(case=strategies.cases())
def test_case_id_round_trips_exactly(case):
    again = Case.from_id(case.case_id)
    assert again == case and again.case_id == case.case_id and again.scenario == case.scenario


@given(case=strategies.cases(max_tokens=8, max_hidden=24, max_intermediate=24, max_experts=8))
def test_replayed_case_builds_the_same_input_bits(case):
    a, b = case.build_inputs(), Case.from_id(case.case_id).build_inputs()
    assert _same_bits(a.x, b.x)
    assert all(_same_bits(t, getattr(b.weights, n)) for n, t in a.weights.items())


@pytest.mark.parametrize("name", ["dropped-k-tile", "wrong-tie-break", "nan-duplicate-id"])
def test_replayed_failure_gives_the_same_verdict(name, device):
    impl = get_implementation(f"broken:{name}")
    first = run_case(impl, BROKEN[name].case, device)
    again = run_case(impl, Case.from_id(first.case_id), device)
    summary = [(s.stage, s.outcome, s.max_ratio) for s in first.stages]
    assert (again.outcome, again.failing_stage) == (first.outcome, first.failing_stage)
    assert [(s.stage, s.outcome, s.max_ratio) for s in again.stages] == summary


def test_must_pass_names_are_unique_and_hashed():
    names = [c.name for c in must_pass_cases()]
    assert len(names) == len(set(names)) and MUST_PASS_VERSION and len(must_pass_hash()) == 64


def test_bad_case_id_is_a_clear_error():
    with pytest.raises(ValueError, match="case_id"):
        Case.from_id("c1-not-a-case")
