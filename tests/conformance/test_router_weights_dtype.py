"""The router-dtype convention: Capabilities.router_weights_dtype says whether route() returns fp32 weights or
weights in the case dtype. bf16 weights that are declared pass the router stage; under an fp32 declaration a
bf16 tensor fails on its dtype, and bf16-rounded values in an fp32 tensor fail the fp32 bound of an fp32 case.
(On a bf16 case the weight bound already allows logits stored in bf16, u_store |z|, which is larger than one
bf16 rounding of w: there the values alone cannot tell the two apart.)"""

from __future__ import annotations

import pytest
from router_dtype_impls import Bf16DeclaresFloat32, Bf16DeclaresInput, Bf16TensorDeclaresFloat32

from moe_cts.conformance.engine.must_pass import must_pass_for
from moe_cts.conformance.engine.protocol import Capabilities
from moe_cts.conformance.engine.results import Outcome
from moe_cts.conformance.engine.runner import run_case

#: smoke must-pass cases with tokens and k >= 2, so there are weights and they are not exact in bf16
CASES = {c.name: c for c in must_pass_for("smoke", "interpreter") if c.spec.top_k >= 2 and c.num_tokens > 0}
BF16 = sorted(n for n, c in CASES.items() if c.dtype == "bfloat16")
FP32 = sorted(n for n, c in CASES.items() if c.dtype == "float32")


def _router(impl, name, device):
    r = run_case(impl, CASES[name], device)
    return r, next(s for s in r.stages if s.stage == "router")


@pytest.mark.parametrize("name", BF16)
def test_bf16_router_weights_that_are_declared_pass_the_router_stage(name, device):
    r, router = _router(Bf16DeclaresInput(), name, device)
    assert router.outcome == Outcome.PASS, router.message
    assert r.outcome.conformant, r.message


@pytest.mark.parametrize("name", FP32)
def test_bf16_rounded_weights_under_an_fp32_declaration_fail_the_fp32_bound(name, device):
    _, router = _router(Bf16DeclaresFloat32(), name, device)
    assert router.outcome == Outcome.FAIL, router.message
    assert router.message.startswith("router weights: outside the error bound"), router.message


@pytest.mark.parametrize("name", BF16)
def test_a_bf16_weights_tensor_under_an_fp32_declaration_fails_on_its_dtype(name, device):
    _, router = _router(Bf16TensorDeclaresFloat32(), name, device)
    assert router.outcome == Outcome.FAIL
    assert "dtype bfloat16, but router_weights_dtype='float32' declares float32" in router.message


def test_an_unknown_router_weights_dtype_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="router_weights_dtype: expected one of"):
        Capabilities(router_weights_dtype="bfloat16")
