"""moe_cts.kernels.gate_up / moe_cts.kernels.down / moe_cts.kernels.shared_expert against their float64 oracle twins."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from _moe_testlib import (
    Inputs,
    assert_within,
    down_expected,
    gate_up_expected,
    make_inputs,
    shared_expected,
)

import moe_cts.kernels
import moe_cts.reference.numpy_oracle as ref
from moe_cts.kernels import _grouped_gemm_kernels
from moe_cts.reference.spec import MoESpec, SpecError

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


@dataclass(frozen=True)
class Case:
    note: str
    spec: dict = field(default_factory=dict)
    dtype: torch.dtype = F32
    T: int = 5
    strided: bool = False

    @property
    def id(self) -> str:
        return f"{self.note}-{str(self.dtype).removeprefix('torch.')}"

    def build(self) -> tuple[MoESpec, Inputs]:
        base = dict(hidden_size=72, intermediate_size=40, num_experts=4, top_k=2)
        spec = MoESpec(**{**base, **self.spec})
        return spec, make_inputs(spec, self.dtype, self.T, seed=hash(self.note) % 2**31, strided=self.strided)


def _cases() -> list[Case]:
    return [
        # -- token counts
        Case("one token", T=1),
        Case("T < BLOCK_M, several experts", T=3),
        Case("several M tiles per expert", spec=dict(num_experts=2, top_k=1), T=40),
        # -- expert counts
        Case("k == E", spec=dict(num_experts=3, top_k=3)),
        Case("E == 1", spec=dict(num_experts=1, top_k=1)),
        # -- shapes no block divides
        Case("H, I not multiples of 16", spec=dict(hidden_size=50, intermediate_size=20)),
        Case("H multiple of BLOCK_K (no K mask)", spec=dict(hidden_size=64, intermediate_size=64)),
        Case("strided weights", strided=True),
        # -- layouts and activations
        Case("concat silu", dtype=F16),
        Case("concat silu", dtype=BF16),
        Case(
            "interleaved swiglu_oai with biases (gpt-oss)",
            spec=dict(w13_layout="interleaved", activation="swiglu_oai", expert_bias=True),
        ),
        Case(
            "interleaved swiglu_oai with biases (gpt-oss)",
            dtype=BF16,
            spec=dict(w13_layout="interleaved", activation="swiglu_oai", expert_bias=True),
        ),
        Case("gated gelu", spec=dict(activation="gelu")),
        Case("gated gelu_tanh strided", spec=dict(activation="gelu_tanh"), dtype=F16, strided=True),
        Case("non-gated gelu with biases", spec=dict(gated=False, activation="gelu", expert_bias=True)),
        Case("non-gated relu", spec=dict(gated=False, activation="relu"), dtype=BF16),
        Case("non-gated gelu_tanh", spec=dict(gated=False, activation="gelu_tanh")),
        Case("non-gated silu", spec=dict(gated=False, activation="silu"), dtype=F16),
    ]


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_gate_up_matches_the_oracle(case: Case) -> None:
    spec, inp = case.build()
    act = moe_cts.kernels.gate_up(spec, inp.weights, inp.x, inp.topk_ids)
    want, bound = gate_up_expected(inp)
    assert act.dtype == inp.dtype
    assert_within(act, want, bound, f"gate_up[{case.id}]")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_down_matches_the_oracle(case: Case) -> None:
    spec, inp = case.build()
    act64 = ref.gate_up(spec, inp.weights64, inp.x64, inp.topk_ids.cpu().numpy()).act
    act = torch.from_numpy(act64).to(inp.dtype)  # the oracle's act, rounded to the kernel dtype
    out = moe_cts.kernels.down(spec, inp.weights, act.to(inp.x.device), inp.topk_ids)
    want, bound = down_expected(inp, act.double().numpy())
    assert_within(out, want, bound, f"down[{case.id}]")


SHARED = [
    Case(
        "shared gated expert with sigmoid gate (Qwen2)",
        spec=dict(n_shared_experts=1, shared_intermediate_size=48, shared_gate=True),
    ),
    Case(
        "two shared experts, no gate (DeepSeek)",
        dtype=BF16,
        spec=dict(n_shared_experts=2, shared_intermediate_size=20),
    ),
    Case(
        "non-gated shared expert",
        dtype=F16,
        spec=dict(
            gated=False, activation="gelu", n_shared_experts=1, shared_intermediate_size=24, shared_gate=True
        ),
    ),
]


@pytest.mark.parametrize("case", SHARED, ids=[c.id for c in SHARED])
def test_shared_expert_matches_the_oracle(case: Case) -> None:
    spec, inp = case.build()
    got = moe_cts.kernels.shared_expert(spec, inp.weights, inp.x)
    want, bound = shared_expected(inp)
    assert_within(got, want, bound, f"shared_expert[{case.id}]")


# ----------------------------------------------------------------------------------------------- edges
def test_zero_tokens_give_empty_stage_outputs_without_a_launch(monkeypatch) -> None:
    spec, inp = Case("zero tokens", T=0).build()

    class NoLaunch:
        def __getitem__(self, grid):
            raise AssertionError("a kernel was launched for T = 0")

    monkeypatch.setattr(_grouped_gemm_kernels, "gate_up_kernel", NoLaunch())
    monkeypatch.setattr(_grouped_gemm_kernels, "down_kernel", NoLaunch())
    act = moe_cts.kernels.gate_up(spec, inp.weights, inp.x, inp.topk_ids)
    out = moe_cts.kernels.down(spec, inp.weights, act, inp.topk_ids)
    assert act.shape == (0, 2, 40) and out.shape == (0, 2, 72)


def test_wrong_weight_dtype_raises_before_launch() -> None:
    spec, inp = Case("bad dtype").build()
    bad = inp.weights.replace(w13=inp.weights.w13.to(torch.float16))
    with pytest.raises(SpecError, match=r"w13\.dtype"):
        moe_cts.kernels.gate_up(spec, bad, inp.x, inp.topk_ids)


def test_wrong_ids_shape_raises_before_launch() -> None:
    spec, inp = Case("bad ids").build()
    with pytest.raises(SpecError, match=r"topk_ids\.shape"):
        moe_cts.kernels.gate_up(spec, inp.weights, inp.x, inp.topk_ids[:, :1])


# ----------------------------------------------------------------------------------------------- the check can fail
def _drop_last_k_tile(t: torch.Tensor, block_k: int) -> torch.Tensor:
    """What a kernel that skips the last K tile computes: the last (partial) tile's columns zeroed."""
    cut = (t.shape[-1] - 1) // block_k * block_k
    out = t.clone()
    out[..., cut:] = 0
    return out


BROKEN_DTYPES = [F32, BF16]


@pytest.mark.parametrize("dtype", BROKEN_DTYPES, ids=str)
def test_comparison_catches_a_dropped_last_k_tile_in_gate_up(dtype) -> None:
    spec, inp = Case("broken", spec=dict(hidden_size=100), dtype=dtype).build()
    act = moe_cts.kernels.gate_up(spec, inp.weights, _drop_last_k_tile(inp.x, 64), inp.topk_ids)
    want, bound = gate_up_expected(inp)
    with pytest.raises(AssertionError, match="error/bound"):
        assert_within(act, want, bound, "gate_up")


@pytest.mark.parametrize("dtype", BROKEN_DTYPES, ids=str)
def test_comparison_catches_a_dropped_last_k_tile_in_down(dtype) -> None:
    spec, inp = Case("broken", spec=dict(intermediate_size=80), dtype=dtype).build()
    act64 = ref.gate_up(spec, inp.weights64, inp.x64, inp.topk_ids.cpu().numpy()).act
    act = torch.from_numpy(act64).to(dtype)
    out = moe_cts.kernels.down(spec, inp.weights, _drop_last_k_tile(act, 64).to(inp.x.device), inp.topk_ids)
    want, bound = down_expected(inp, act.double().numpy())
    with pytest.raises(AssertionError, match="error/bound"):
        assert_within(out, want, bound, "down")


@pytest.mark.parametrize("layout", ["concat", "interleaved"])
def test_comparison_catches_swapped_gate_and_up(layout) -> None:
    spec, inp = Case("broken", spec=dict(w13_layout=layout), dtype=BF16).build()
    w13 = inp.weights.w13
    I = spec.intermediate_size
    swapped = torch.cat([w13[:, I:], w13[:, :I]], 1) if layout == "concat" else w13.view(4, I, 2, -1).flip(2)
    bad = inp.weights.replace(w13=swapped.reshape(w13.shape).contiguous())
    act = moe_cts.kernels.gate_up(spec, bad, inp.x, inp.topk_ids)
    want, bound = gate_up_expected(inp)
    with pytest.raises(AssertionError, match="error/bound"):
        assert_within(act, want, bound, "gate_up")


def test_comparison_catches_an_all_zero_output() -> None:
    _, inp = Case("broken", dtype=BF16).build()
    want, bound = gate_up_expected(inp)
    with pytest.raises(AssertionError, match="error/bound"):
        assert_within(torch.zeros(want.shape, dtype=BF16), want, bound, "gate_up")
    assert np.abs(want).mean() > 0.05  # the inputs give outputs of order 1, not ~1e-6
