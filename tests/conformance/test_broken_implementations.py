"""Acceptance 2: every deliberately broken implementation is caught at the right stage with the right result,
and the honest torch-eager implementation is conformant on the same case (so the catch is the bug's)."""

from __future__ import annotations

import pytest

from moe_cts.conformance.engine.results import Outcome
from moe_cts.conformance.engine.runner import run_case
from moe_cts.conformance.impls.broken import BROKEN
from moe_cts.conformance.impls.registry import get_implementation


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_implementation_is_caught_at_its_stage(name, device):
    b = BROKEN[name]
    r = run_case(get_implementation(f"broken:{name}"), b.case, device)
    assert (r.failing_stage, r.outcome) == (b.stage, b.outcome), (
        f"{name}: {r.outcome.value} at {r.failing_stage}: {r.message}"
    )


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_honest_eager_passes_the_case_that_exposes_each_bug(name, device, eager):
    r = run_case(eager, BROKEN[name].case, device)
    assert r.outcome in (Outcome.PASS, Outcome.COMPATIBILITY_WARNING), (
        f"{r.outcome.value} at {r.failing_stage}: {r.message}"
    )
