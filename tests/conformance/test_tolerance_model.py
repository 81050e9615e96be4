"""The error-bound model (docs/bugs.md#facts-tolerance-model) can fail: a dropped K tile at a DeepSeek-like
reduction length (K = 7168 scaled down to 2048, tile 64) is outside the bound, and honest fp32 / bf16 results
are inside it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moe_cts.conformance.engine import tolerance
from moe_cts.conformance.engine.compare import compare
from moe_cts.conformance.engine.devices import accumulator_profile
from moe_cts.reference.spec import MoESpec, MoEWeights

K, N, T, TILE = 2048, 64, 16, 64
SPEC = MoESpec(hidden_size=N, intermediate_size=K, num_experts=1, top_k=1)


def _problem(dtype: torch.dtype):
    g = torch.Generator().manual_seed(11)
    act = torch.randn(T, 1, K, generator=g).to(dtype)
    w2 = (torch.randn(1, N, K, generator=g) / K**0.5).to(dtype)
    w = MoEWeights(router=torch.zeros(1, N), w13=torch.zeros(1, 2 * K, N), w2=w2.float())
    return act, w2, w


def _bounds(device, dtype_name: str, act, w):
    model = tolerance.ErrorModel.for_case(accumulator_profile(device), dtype_name)
    wv = tolerance.WeightViews.of(w)
    ids = np.zeros((T, 1), np.int64)
    return tolerance.down_bounds(model, SPEC, wv, act.double().numpy(), ids)


def _gemm(act, w2, dtype, *, drop_last_tile=False):
    a = act.float().clone()
    if drop_last_tile:
        a[..., K - TILE :] = 0
    return (a[:, 0] @ w2[0].float().T).to(dtype)[:, None]  # fp32 accumulation, one rounding


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_honest_gemm_is_inside_the_bound(device, dtype):
    act, w2, w = _problem(dtype)
    want, bound = _bounds(device, str(dtype).removeprefix("torch."), act, w)
    c = compare(_gemm(act, w2, dtype), want, bound)
    assert c.within_bound and c.quality_ok, c.summary()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dropped_k_tile_is_outside_the_bound(device, dtype):
    act, w2, w = _problem(dtype)
    want, bound = _bounds(device, str(dtype).removeprefix("torch."), act, w)
    c = compare(_gemm(act, w2, dtype, drop_last_tile=True), want, bound)
    assert c.max_ratio > 1.0, c.summary()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_all_zero_output_is_outside_the_bound(device, dtype):
    act, _, w = _problem(dtype)
    want, bound = _bounds(device, str(dtype).removeprefix("torch."), act, w)
    c = compare(np.zeros_like(want), want, bound)
    assert c.max_ratio > 1.0, c.summary()


def test_truncating_casts_are_inside_the_bound_but_flagged_as_bias(device):
    act, w2, w = _problem(torch.bfloat16)
    want, bound = _bounds(device, "bfloat16", act, w)
    exact = (act.float()[:, 0] @ w2[0].float().T)[:, None]
    truncated = (exact.view(torch.int32) & ~0xFFFF).view(torch.float32)  # fp32 -> bf16 by truncation
    c = compare(truncated, want, bound)
    assert c.within_bound and not c.bias_ok, c.summary()


def test_nan_must_sit_where_the_oracle_has_nan():
    want = np.array([[1.0, np.nan], [2.0, 3.0]])
    got = np.array([[1.0, 2.0], [np.nan, 3.0]])
    c = compare(got, want, np.full_like(want, 1e-3))
    assert c.nonfinite_mismatch == 2 and not c.within_bound
