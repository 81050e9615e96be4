"""The single-rounding check of Capabilities.weight_before_cast (engine/single_rounding.py): on integer experts a
claimant must store rnd(w * expert_out) bit for bit; the weight applied after a cast fails it, and an
implementation that does not claim the order is judged by the ordinary bound only
(docs/bugs.md#bug-02-router-weight-after-cast)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import moe_cts.reference.numpy_oracle as npo
from moe_cts.conformance.engine import single_rounding as sr
from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.devices import select_device
from moe_cts.conformance.engine.must_pass import must_pass_cases
from moe_cts.conformance.engine.protocol import FORWARD
from moe_cts.conformance.engine.results import Outcome
from moe_cts.conformance.engine.runner import run_case
from moe_cts.conformance.engine.tolerance import WeightViews
from moe_cts.conformance.impls.torch_eager import TorchEagerImplementation


def _case() -> Case:
    return next(c for c in must_pass_cases() if c.name == "weight-single-rounding")


class _OracleRounded(TorchEagerImplementation):
    """Forward only: the oracle's y (top_k = 1) rounded once, rnd(w * eo), or twice, rnd(w * rnd(eo))."""

    name = "oracle-rounded"

    def __init__(self, twice: bool, claims: bool):
        super().__init__()
        self.twice, self.claims = twice, claims

    def capabilities(self):
        caps = super().capabilities()
        return dataclasses.replace(caps, stages=frozenset({FORWARD}), weight_before_cast=self.claims)

    def run(self, inputs, stage, device=None, *, out=None):
        spec, wv = inputs.spec, inputs.weights.to("cpu", torch.float64)
        x = inputs.x.double().numpy()
        r = npo.route(spec, wv, x)
        eo = npo.down(spec, wv, npo.gate_up(spec, wv, x, r.topk_ids).act, r.topk_ids)[:, 0, :]
        dtype = str(inputs.x.dtype).removeprefix("torch.")
        if self.twice:
            eo = sr.round_to(eo, dtype, "rne")
        y = sr.round_to(r.topk_weights[:, :1] * eo, dtype, "rne")
        y = torch.from_numpy(y).to(inputs.x.dtype)
        return y if out is None else out.copy_(y)


def _end_to_end(impl) -> tuple[Outcome, str]:
    res = run_case(impl, _case(), select_device("cpu"))
    v = next(v for v in res.stages if v.stage == "end_to_end")
    assert "512 elements" in v.message, v.message  # every element judged: none left unwritten or tied
    return v.outcome, v.message


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_round_to_nearest_even_matches_torch_casts(dtype):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(4096, generator=g) * torch.exp2(torch.randint(-20, 12, (4096,), generator=g).float())
    ties = torch.tensor([1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11])
    v = torch.cat([v, ties, -ties])
    want = v.to(getattr(torch, dtype)).double().numpy()
    np.testing.assert_array_equal(sr.round_to(v.double().numpy(), dtype, "rne"), want)


def test_truncation_drops_the_low_bits_of_an_fp32_value():
    v = torch.randn(4096, generator=torch.Generator().manual_seed(1)) * 1000
    dropped = (v.view(torch.int32) & ~0xFFFF).view(torch.float32).double().numpy()
    np.testing.assert_array_equal(sr.round_to(v.double().numpy(), "bfloat16", "truncate"), dropped)


def test_the_integer_experts_case_has_exact_expert_outputs_and_uniform_data_has_not():
    inputs = _case().build_inputs()
    spec, x = inputs.spec, inputs.x.double().numpy()
    ids = npo.route(spec, inputs.weights.to("cpu", torch.float64), x).topk_ids
    eo, why = sr.exact_experts(spec, WeightViews.of(inputs.weights), x, ids)
    assert eo is not None, why
    assert np.abs(eo).max() > 2.0**11, "expert outputs fit fp16's 11 bits: one rounding and two would agree"
    uniform = dataclasses.replace(_case(), scenario=dataclasses.replace(_case().scenario, name="uniform"))
    u_inputs = uniform.build_inputs()
    assert (
        sr.exact_experts(spec, WeightViews.of(u_inputs.weights), u_inputs.x.double().numpy(), ids)[0] is None
    )


def test_one_rounding_passes_a_claimant():
    outcome, msg = _end_to_end(_OracleRounded(twice=False, claims=True))
    assert outcome == Outcome.PASS, msg
    assert "all equal to rnd(w * expert_out)" in msg


def test_the_weight_after_a_cast_fails_a_claimant_at_end_to_end():
    outcome, msg = _end_to_end(_OracleRounded(twice=True, claims=True))
    assert outcome == Outcome.FAIL, msg
    assert "weight_before_cast" in msg and "as if the router weight came after a cast" in msg


def test_an_implementation_without_the_claim_is_judged_by_the_bound_only():
    outcome, msg = _end_to_end(_OracleRounded(twice=True, claims=False))
    assert outcome == Outcome.PASS, msg
    assert "weight_before_cast" not in msg


def test_two_experts_per_token_or_no_claim_leave_the_check_out():
    caps = _OracleRounded(twice=False, claims=True).capabilities()
    case = _case()
    assert sr.applies(caps, case) is None
    two = dataclasses.replace(case, spec=case.spec.replace(top_k=2))
    assert "top_k 2" in sr.applies(caps, two)
    assert "not claimed" in sr.applies(dataclasses.replace(caps, weight_before_cast=False), case)
