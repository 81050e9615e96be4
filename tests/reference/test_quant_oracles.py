"""The NumPy and PyTorch oracles agree on quantized layers (to 1e-12 of each tensor's scale, ids exactly):
generated specs and schemes of every method, inputs that sit exactly on fp8 rounding midpoints, zero
activation groups with and without the amax epsilon (NaN in the same places without it), and T = 0.
Their quantizers are written independently (numpy_quant.py, torch_quant.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from refcheck import assert_results_agree

from moe_cts.reference import (
    MoESpec,
    MoEWeights,
    QuantizedMoEWeights,
    QuantScheme,
    formats,
    layer,
    moe_forward,
)
from moe_cts.reference.spec import GATED_ACTIVATIONS, NONGATED_ACTIVATIONS

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


@st.composite
def schemes(draw, *, method: str | None = None) -> QuantScheme:
    """Any valid QuantScheme; small fp8 blocks so that a tiny layer has several, partial ones included.

    - method: one of quant.QUANT_METHODS, or None for any.
    Example: ``schemes(method="fp8_block").example()`` -> QuantScheme(method='fp8_block', weight_block=(3, 2), ...)"""
    m = method or draw(st.sampled_from(["fp8_per_tensor", "fp8_per_token", "fp8_block", "mxfp4"]))
    if m == "mxfp4":
        return QuantScheme.mxfp4(
            activation_dtype=draw(st.sampled_from(["bfloat16", "float16"])),
            scale_rounding=draw(st.sampled_from(formats.SCALE_ROUNDINGS)),
        )
    kw = dict(
        fp8_format=draw(st.sampled_from(formats.FP8_FORMATS)),
        amax_eps=draw(st.sampled_from([None, 1e-10, 1e-4])),
    )
    if m == "fp8_per_tensor":
        static = draw(st.booleans())
        if static:
            kw["amax_eps"] = 1e-10
        return QuantScheme.fp8_per_tensor(activation_scale="static" if static else "dynamic", **kw)
    if m == "fp8_per_token":
        return QuantScheme.fp8_per_token(**kw)
    block = draw(st.tuples(st.integers(1, 5), st.integers(1, 5)))
    ue8m0 = draw(st.booleans())
    if ue8m0:
        kw.update(scale_format="ue8m0", scale_rounding=draw(st.sampled_from(formats.SCALE_ROUNDINGS)))
    return QuantScheme.fp8_block(block, **kw)


@st.composite
def quant_specs(draw) -> MoESpec:
    """A small MoESpec with a drawn QuantScheme (H, I multiples of 32 for mxfp4)."""
    q = draw(schemes())
    mx = q.method == "mxfp4"
    H = draw(st.sampled_from([32, 64])) if mx else draw(st.integers(4, 12))
    I = draw(st.sampled_from([32, 64])) if mx else draw(st.integers(2, 8))
    E = draw(st.integers(1, 6))
    gated = draw(st.booleans())
    n_shared = draw(st.integers(0, 1))
    dyn_tensor = q.method == "fp8_per_tensor" and q.activation_scale == "dynamic"
    return MoESpec(
        hidden_size=H,
        intermediate_size=I,
        num_experts=E,
        top_k=draw(st.integers(1, E)),
        scoring=draw(st.sampled_from(["softmax", "sigmoid"])),
        renormalize=draw(st.booleans()),
        routed_scaling_factor=draw(st.sampled_from([1.0, 2.5])),
        activation=draw(st.sampled_from(GATED_ACTIVATIONS if gated else NONGATED_ACTIVATIONS)),
        gated=gated,
        expert_bias=draw(st.booleans()),
        w13_layout=draw(st.sampled_from(["concat", "interleaved"])) if gated else "concat",
        n_shared_experts=n_shared,
        shared_intermediate_size=(32 if mx else draw(st.integers(1, 5))) if n_shared else 0,
        shared_gate=bool(n_shared) and draw(st.booleans()),
        capacity_factor=None if dyn_tensor else draw(st.sampled_from([None, 1.0])),
        local_experts=None if dyn_tensor else draw(st.none() | st.just(tuple(range(0, E, 2)))),
        quant=q,
    )


def tie_input(spec: MoESpec, T: int, g: torch.Generator) -> torch.Tensor:
    """x whose every activation group holds +-max * 2^j (so the scale is exactly 2^j) and otherwise
    exact midpoints between neighbouring fp8 values times 2^j: every quantized element is a tie."""
    q = spec.quant
    fmt = q.fp8_format if q.quantizes_activations else "e4m3fn"
    vals = formats.decode(fmt, np.arange(128))
    vals = np.unique(vals[np.isfinite(vals)])
    mids = torch.from_numpy((vals[:-1] + vals[1:]) / 2)
    H = spec.hidden_size
    pick = torch.randint(0, mids.numel(), (T, H), generator=g)
    sign = torch.randint(0, 2, (T, H), generator=g).double() * 2 - 1
    x = mids[pick] * sign
    step = q.act_group or H
    x[:, ::step] = sign[:, ::step] * float(vals[-1])
    return x * 2.0**-6


def make_case(spec: MoESpec, T: int, mode: str, seed: int) -> tuple[QuantizedMoEWeights, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = MoEWeights.random(spec, generator=g)
    if mode == "zero_blocks":  # an all-zero expert matrix: every weight block of it is zero
        w = w.replace(w13=w.w13.clone().index_fill_(0, torch.tensor([0]), 0.0))
    static = spec.quant.activation_scale == "static"
    scales = (
        dict(a13_scale=float(np.float32(2.0 / 448)), a2_scale=float(np.float32(0.5 / 448))) if static else {}
    )
    qw = QuantizedMoEWeights.quantize(spec, w, **scales)
    if mode == "ties":
        return qw, tie_input(spec, T, g)
    x = torch.randn((T, spec.hidden_size), generator=g, dtype=torch.float64)
    if mode in ("zero_groups", "zero_blocks") and T:
        x[0] = 0.0  # a whole zero token: zero groups at GEMM1, 0/0 without an epsilon
        x[-1, : max(1, spec.hidden_size // 2)] = 0.0
    return qw, x


@pytest.mark.parametrize("mode", ["normal", "ties", "zero_groups", "zero_blocks"])
@given(spec=quant_specs(), T=st.integers(0, 6), seed=st.integers(0, 2**63 - 1))
def test_oracles_agree_on_generated_quantized_specs(mode, spec, T, seed):
    qw, x = make_case(spec, T, mode, seed)
    assert_results_agree(moe_forward(spec, qw, x), layer.torch_moe_forward(spec, qw, x))


def _spec(q: QuantScheme, H: int = 10, I: int = 6, **kw) -> MoESpec:
    return MoESpec(
        H, I, 4, 2, renormalize=True, n_shared_experts=1, shared_intermediate_size=I, quant=q, **kw
    )


# Curated: every method whatever hypothesis draws (the ci profile runs few examples).
CURATED = {
    "deepseek block 128 at unaligned H, I": _spec(QuantScheme.fp8_block(), H=200, I=136),
    "block 4x3, ue8m0 ceil, no epsilon": _spec(
        QuantScheme.fp8_block((4, 3), scale_format="ue8m0", amax_eps=None)
    ),
    "block 2x5 e4m3fnuz, DeepEP epsilon": _spec(
        QuantScheme.fp8_block((2, 5), fp8_format="e4m3fnuz", amax_eps=1e-4)
    ),
    "block weight-only bf16": _spec(
        QuantScheme.fp8_block(
            (4, 4), activation_dtype="bfloat16", activation_scale="none", quantize_inputs=()
        )
    ),
    "per-tensor dynamic e5m2": _spec(QuantScheme.fp8_per_tensor(fp8_format="e5m2")),
    "per-token": _spec(QuantScheme.fp8_per_token(), expert_bias=True),
    "mxfp4 gpt-oss style": MoESpec(
        64,
        32,
        4,
        2,
        router_bias=True,
        renormalize=True,
        activation="swiglu_oai",
        expert_bias=True,
        w13_layout="interleaved",
        quant=QuantScheme.mxfp4(),
    ),
    "mxfp4 floor rounding": _spec(QuantScheme.mxfp4(scale_rounding="floor"), H=32, I=64),
}


@pytest.mark.parametrize("mode", ["normal", "ties", "zero_groups"])
@pytest.mark.parametrize("case", list(CURATED))
def test_oracles_agree_on_curated_quantized_specs(case, mode):
    spec = CURATED[case]
    qw, x = make_case(spec, 7, mode, seed=11)
    assert_results_agree(moe_forward(spec, qw, x), layer.torch_moe_forward(spec, qw, x))


def test_static_scales_saturate_in_both_oracles():
    spec = _spec(QuantScheme.fp8_per_tensor(activation_scale="static"))
    w = MoEWeights.random(spec, seed=4)
    qw = QuantizedMoEWeights.quantize(spec, w, a13_scale=2.0**-9, a2_scale=2.0**-9)  # |x| > 0.875 saturates
    x = torch.randn(5, spec.hidden_size, dtype=torch.float64) * 4
    a, b = moe_forward(spec, qw, x), layer.torch_moe_forward(spec, qw, x)
    assert_results_agree(a, b)
    unsat = moe_forward(spec, QuantizedMoEWeights.quantize(spec, w, a13_scale=1.0, a2_scale=1.0), x)
    assert np.abs(a.y - unsat.y).max() > 1e-3 * np.abs(unsat.y).max(), "saturation changed nothing"


def test_no_epsilon_gives_nan_on_a_zero_token_and_an_epsilon_gives_zero_routed_output():
    x = torch.randn(3, 10, dtype=torch.float64)
    x[1] = 0.0
    for eps, nan in ((None, True), (1e-10, False)):
        spec = MoESpec(10, 6, 4, 2, quant=QuantScheme.fp8_block((4, 4), amax_eps=eps))
        r = moe_forward(spec, MoEWeights.random(spec, seed=1), x)
        assert np.isnan(r.y[1]).all() == nan and np.isfinite(r.y[[0, 2]]).all()
        if not nan:
            assert (r.expert_out[1] == 0).all()


def test_quantization_changes_the_output_and_dequantized_weights_are_used():
    """A check that can fail: the quantized oracle differs from the float one on the same float weights by
    the fp8 error (not 0, not 100%), and equals the float oracle run on dequantized weights and inputs."""
    spec = _spec(QuantScheme.fp8_block((4, 4)))
    w = MoEWeights.random(spec, seed=3)
    x = torch.randn(6, spec.hidden_size, dtype=torch.float64)
    qy = moe_forward(spec, w, x).y
    fy = moe_forward(spec.replace(quant=None), w, x).y
    rel = np.abs(qy - fy).max() / np.abs(fy).max()
    assert 1e-3 < rel < 0.3, rel
