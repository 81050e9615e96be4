"""Batch invariance is checked on single tokens, the reversed batch and its first half; a T-dependent tile
choice fails it; the report counts the cases each determinism claim was judged on
(docs/bugs.md#bug-14-batch-variance)."""

from __future__ import annotations

from moe_cts.conformance.engine.devices import select_device
from moe_cts.conformance.engine.invariance import batch_variants
from moe_cts.conformance.engine.results import Outcome
from moe_cts.conformance.engine.runner import run_case
from moe_cts.conformance.impls.broken import BROKEN
from moe_cts.conformance.impls.torch_eager import TorchEagerImplementation
from moe_cts.conformance.report.schema import claims_section


def test_batch_variants_cover_positions_and_sizes():
    labels = dict(batch_variants(5))
    assert labels["token 0 alone"].tolist() == [0] and labels["the last token alone"].tolist() == [4]
    assert labels["the batch reversed"].tolist() == [4, 3, 2, 1, 0]
    assert labels["the first half"].tolist() == [0, 1, 2]
    assert batch_variants(1) == []


class _BatchDependent(TorchEagerImplementation):
    """Claims batch invariance, but rounds differently once the batch is larger than 4 tokens."""

    name = "batch-dependent"

    def capabilities(self):
        import dataclasses

        return dataclasses.replace(super().capabilities(), batch_invariant=True)

    def forward(self, spec, w, x):
        y = super().forward(spec, w, x)
        return y if x.shape[0] <= 4 else (y.double() * (1 + 2**-20)).to(y.dtype)


def test_a_batch_size_dependent_forward_fails_the_claim_on_single_tokens_and_the_first_half():
    case = BROKEN["zero-output"].case
    result = run_case(_BatchDependent(), case, select_device("cpu"))
    det = next(v for v in result.stages if v.stage == "determinism")
    assert det.outcome == Outcome.FAIL, det.message
    assert "token 0 alone" in det.message and "the first half" in det.message, det.message


def test_eager_keeps_its_determinism_claim():
    result = run_case(TorchEagerImplementation(), BROKEN["zero-output"].case, select_device("cpu"))
    det = next(v for v in result.stages if v.stage == "determinism")
    assert det.outcome == Outcome.PASS, det.message


def test_claims_section_counts_the_judged_cases():
    stage = lambda o: {"stage": "determinism", "outcome": o}
    devices = [{"cases": [{"stages": [stage("pass")]}, {"stages": [stage("fail")]},
                          {"stages": [stage("not_supported")]}]}]  # fmt: skip
    claims = claims_section(devices, {"deterministic": True, "batch_invariant": False})
    assert claims["deterministic"] == {"claimed": True, "cases_checked": 2, "failed": 1}
    assert claims["batch_invariant"] == {"claimed": False, "cases_checked": 0, "failed": 0}
