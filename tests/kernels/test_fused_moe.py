"""moe_cts.kernels.fused_moe against moe_cts.reference.moe_forward: real-model variants, edge cases, determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from _moe_testlib import DEVICE, Inputs, assert_within, forward_expected, make_inputs

import moe_cts.kernels
import moe_cts.kernels.config as cfgmod
import moe_cts.reference.numpy_oracle as ref
from moe_cts.conformance.engine.cases import Case
from moe_cts.kernels import (
    _align_kernels,
    _combine_kernels,
    _common,
    _fp8_gemm_kernels,
    _fp8_quant_kernels,
    _grouped_gemm_kernels,
    _mxfp4_gemm_kernels,
    _router_kernels,
    moe,
)
from moe_cts.kernels.metadata import Routing
from moe_cts.reference import presets
from moe_cts.reference.quant import QuantScheme
from moe_cts.reference.spec import MoESpec, SpecError

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


def _with_oracle_routing(inp: Inputs) -> Inputs:
    """The oracle's ids and weights (fp32) on the rounded inputs: the router is judged elsewhere."""
    r = ref.route(inp.spec, inp.weights64, inp.x64)
    return dataclasses.replace(
        inp,
        topk_ids=torch.from_numpy(r.topk_ids).to(torch.int32).to(DEVICE),
        topk_weights=torch.from_numpy(r.topk_weights).to(torch.float32).to(DEVICE),
    )


def _run(inp: Inputs, **kw) -> torch.Tensor:
    routing = Routing(inp.topk_ids, inp.topk_weights)
    return moe_cts.kernels.fused_moe(inp.spec, inp.weights, inp.x, routing=routing, **kw)


def _kept(inp: Inputs) -> np.ndarray:
    ids = inp.topk_ids.cpu().numpy()
    if inp.spec.local_experts is None:
        return np.ones(ids.shape, bool)
    return np.isin(ids, inp.spec.local_experts)


def _check(inp: Inputs, y: torch.Tensor, what: str) -> None:
    want, bound = forward_expected(inp, _kept(inp))
    assert y.dtype == inp.dtype and y.shape == want.shape
    assert_within(y, want, bound, what)


# ----------------------------------------------------------------------------------------------- real models
PRESET_CASES = [(name, dtype) for name in presets.names() for dtype in (F32, BF16)] + [
    ("mixtral-8x7b", F16),
    ("qwen2-57b-a14b", F16),
]


@pytest.mark.parametrize(("name", "dtype"), PRESET_CASES, ids=[f"{n}-{str(d)[6:]}" for n, d in PRESET_CASES])
def test_scaled_real_model_layer_matches_the_oracle(name, dtype) -> None:
    spec = presets.scaled(name, hidden_size=40, intermediate_size=24)
    inp = _with_oracle_routing(make_inputs(spec, dtype, 9, seed=11))
    _check(inp, _run(inp), f"fused_moe[{name}]")


@pytest.mark.parametrize("name", ["deepseek-v3", "gpt-oss-20b", "qwen2-57b-a14b"])
def test_whole_forward_with_the_router_kernel_matches_the_oracle(name) -> None:
    spec = presets.scaled(name, hidden_size=40, intermediate_size=24)
    inp = make_inputs(spec, F32, 6, seed=5)
    y = moe_cts.kernels.fused_moe(spec, inp.weights, inp.x)
    r = moe_cts.kernels.route(
        spec, inp.weights, inp.x
    )  # the ids and weights the forward used (deterministic)
    _check(dataclasses.replace(inp, topk_ids=r.topk_ids, topk_weights=r.topk_weights), y, name)


# ----------------------------------------------------------------------------------------------- edges
EDGE = {
    "one token": (dict(), 1, False),
    "k == E": (dict(num_experts=3, top_k=3), 5, False),
    "E == 1": (dict(num_experts=1, top_k=1), 4, False),
    "H, I not multiples of 16, strided weights": (dict(hidden_size=50, intermediate_size=20), 5, True),
    "many tokens on one of two experts": (dict(num_experts=2, top_k=1), 40, False),
    "gpt-oss style biases, interleaved": (
        dict(w13_layout="interleaved", activation="swiglu_oai", expert_bias=True), 5, True),
    "non-gated gelu with biases and shared expert": (
        dict(gated=False, activation="gelu", expert_bias=True, n_shared_experts=1, shared_intermediate_size=24), 5, False),
}  # fmt: skip


@pytest.mark.parametrize("dtype", [F32, BF16], ids=str)
@pytest.mark.parametrize("note", list(EDGE))
def test_edge_case_matches_the_oracle(note, dtype) -> None:
    fields, T, strided = EDGE[note]
    spec = MoESpec(**{**dict(hidden_size=40, intermediate_size=24, num_experts=4, top_k=2), **fields})
    inp = _with_oracle_routing(make_inputs(spec, dtype, T, seed=7, strided=strided))
    _check(inp, _run(inp), f"fused_moe[{note}]")


def test_non_local_experts_are_never_read() -> None:
    spec = MoESpec(hidden_size=40, intermediate_size=24, num_experts=6, top_k=2, local_experts=(1, 2, 4))
    inp = _with_oracle_routing(make_inputs(spec, F32, 8, seed=3))
    nan = float("nan")
    w13, w2 = inp.weights.w13.clone(), inp.weights.w2.clone()
    for e in (0, 3, 5):  # expert parallelism: another rank owns them; their weights must not matter
        w13[e], w2[e] = nan, nan
    y = _run(dataclasses.replace(inp, weights=inp.weights.replace(w13=w13, w2=w2)))
    assert 0 < _kept(inp).sum() < _kept(inp).size
    _check(inp, y, "fused_moe[local experts]")


class NoLaunch:
    """Stands in for a kernel (kernel[grid](...)) or a stage function: any use fails the test."""

    def __getitem__(self, grid):
        raise AssertionError("a kernel was launched")

    def __call__(self, *a, **k):
        raise AssertionError("a stage ran")


def test_zero_tokens_give_an_empty_output_without_any_launch(monkeypatch) -> None:
    for mod, name in [(_grouped_gemm_kernels, "gate_up_kernel"), (_grouped_gemm_kernels, "down_kernel"),
                      (_combine_kernels, "combine_kernel"), (moe, "_route"), (moe, "_align")]:  # fmt: skip
        monkeypatch.setattr(mod, name, NoLaunch())
    spec = presets.scaled("qwen2-57b-a14b", hidden_size=40, intermediate_size=24)
    inp = make_inputs(spec, BF16, 0)
    y = moe_cts.kernels.fused_moe(spec, inp.weights, inp.x)
    assert y.shape == (0, 40) and y.dtype == BF16


def test_two_runs_are_bitwise_equal() -> None:
    spec = presets.scaled("deepseek-v3", hidden_size=40, intermediate_size=24)
    inp = _with_oracle_routing(make_inputs(spec, BF16, 12, seed=1))
    assert torch.equal(_run(inp).view(torch.int16), _run(inp).view(torch.int16))


def test_batch_invariant_mode_gives_each_row_the_same_bits_in_any_batch() -> None:
    spec = MoESpec(hidden_size=40, intermediate_size=24, num_experts=2, top_k=1)
    # 80 tokens on 2 experts: m = 40 crosses a bucket boundary of every backend's table (8 interpreter, 32 cuda)
    big = _with_oracle_routing(make_inputs(spec, F32, 80, seed=2))
    small = dataclasses.replace(big, x=big.x[:2], x64=big.x64[:2], topk_ids=big.topk_ids[:2],
                                topk_weights=big.topk_weights[:2])  # fmt: skip
    y_small, y_big = _run(small, batch_invariant=True), _run(big, batch_invariant=True)
    assert torch.equal(y_small, y_big[:2])
    # the default heuristic does pick a different tile for these two batches: the test has teeth
    _run(small)
    cfg_small = cfgmod.last_config()
    _run(big)
    assert cfgmod.last_config() != cfg_small


def test_a_forced_config_is_used_and_recorded() -> None:
    spec = MoESpec(hidden_size=40, intermediate_size=24, num_experts=4, top_k=2)
    inp = _with_oracle_routing(make_inputs(spec, F32, 5, seed=4))
    tile = cfgmod.GemmTile(BLOCK_N=16, BLOCK_K=16, GROUP_M=2, num_warps=4, num_stages=1)
    cfg = cfgmod.TileConfig(BLOCK_M=32, gate_up=tile, down=tile)
    _check(inp, _run(inp, config=cfg), "fused_moe[forced config]")
    assert cfgmod.last_config() == cfg
    with cfgmod.forced(cfg.to_dict()):
        _run(inp)
    assert cfgmod.last_config() == cfg


def test_capacity_factor_raises_not_supported_before_any_launch() -> None:
    spec = MoESpec(hidden_size=40, intermediate_size=24, num_experts=4, top_k=2, capacity_factor=1.0)
    inp = make_inputs(spec, F32, 3)
    with pytest.raises(moe_cts.kernels.NotSupportedError, match="capacity_factor") as err:
        moe_cts.kernels.fused_moe(spec, inp.weights, inp.x)
    assert err.value.field == "capacity_factor"


def test_wrong_x_width_raises_before_any_launch() -> None:
    spec = MoESpec(hidden_size=40, intermediate_size=24, num_experts=4, top_k=2)
    inp = make_inputs(spec, F32, 3)
    with pytest.raises(SpecError, match=r"x\.shape"):
        moe_cts.kernels.fused_moe(spec, inp.weights, inp.x[:, :32])


HOST_QUANT = {"16-bit": None, "block fp8": QuantScheme.fp8_block(), "mxfp4": QuantScheme.mxfp4()}


@pytest.mark.parametrize("quant", list(HOST_QUANT))
def test_host_tensors_outside_the_interpreter_are_refused_naming_the_field(quant, monkeypatch) -> None:
    """On a GPU build Triton itself refuses a cpu pointer, at the launch, after the forward's earlier launches
    ran; the launchers name the field first (kernels/_common.HOST_TENSORS_LAUNCH, set only under the
    interpreter)."""
    spec = presets.scaled("gpt-oss-20b", hidden_size=64, intermediate_size=96).replace(
        quant=HOST_QUANT[quant]
    )
    inp = Case(spec, 3, "bfloat16", seed=1).build_inputs("cpu")
    weights = inp.weights if quant == "16-bit" else inp.qweights
    monkeypatch.setattr(_common, "HOST_TENSORS_LAUNCH", False)
    kernels = (_align_kernels, _combine_kernels, _fp8_gemm_kernels, _fp8_quant_kernels, _grouped_gemm_kernels,
               _mxfp4_gemm_kernels, _router_kernels)  # fmt: skip
    for mod in kernels:  # launches through module attributes fail
        for name in [n for n in vars(mod) if n.endswith("_kernel")]:
            monkeypatch.setattr(mod, name, NoLaunch())
    with pytest.raises(SpecError, match=r"^x\.device: expected a GPU device .*TRITON_INTERPRET=1.*got 'cpu'"):
        moe_cts.kernels.fused_moe(spec, weights, inp.x)
    ids = torch.zeros((3, spec.top_k), dtype=torch.int32)
    with pytest.raises(SpecError, match=r"^topk_ids\.device"):
        moe_cts.kernels.align(spec, ids, 16)


# ----------------------------------------------------------------------------------------------- the check can fail
@pytest.mark.parametrize("broken", ["all zero", "dropped last K tile", "gate and up swapped"])
def test_comparison_catches_a_broken_forward(broken) -> None:
    spec = MoESpec(hidden_size=100, intermediate_size=24, num_experts=4, top_k=2)
    inp = _with_oracle_routing(make_inputs(spec, BF16, 6, seed=9))
    if broken == "all zero":
        y = torch.zeros((6, 100), dtype=BF16)
    elif broken == "dropped last K tile":
        x = inp.x.clone()
        x[:, 64:] = 0
        y = _run(dataclasses.replace(inp, x=x))
    else:
        w13 = inp.weights.w13
        y = _run(
            dataclasses.replace(
                inp, weights=inp.weights.replace(w13=torch.cat([w13[:, 24:], w13[:, :24]], 1))
            )
        )
    with pytest.raises(AssertionError, match="error/bound"):
        _check(inp, y, "fused_moe")


# ----------------------------------------------------------------------------------------------- GPU only
@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a GPU: T*k*H passes 2^31 (docs/bugs.md#bug-01-int32-address-overflow)",
)
def test_fifty_thousand_tokens_at_deepseek_width_need_64_bit_offsets() -> None:
    spec = MoESpec(hidden_size=7168, intermediate_size=64, num_experts=8, top_k=8)
    T = 50_000
    inp = make_inputs(spec, BF16, T, seed=0)
    y = moe_cts.kernels.fused_moe(spec, inp.weights, inp.x)
    torch.cuda.synchronize()
    assert T * spec.top_k * spec.hidden_size > 2**31
    assert torch.isfinite(y).all()
    tail = slice(T - 4, T)  # the rows whose offsets pass 2^31
    sub = dataclasses.replace(inp, x=inp.x[tail], x64=inp.x64[tail])
    r = moe_cts.kernels.route(spec, sub.weights, sub.x)
    _check(dataclasses.replace(sub, topk_ids=r.topk_ids, topk_weights=r.topk_weights), y[tail], "T=50k tail")


def test_out_argument_is_written_in_full_and_nothing_around_it_is_touched() -> None:
    spec = presets.scaled("mixtral-8x7b", hidden_size=40, intermediate_size=24)
    inp = make_inputs(spec, F32, 7, seed=3)
    # a poisoned buffer with a canary row above and below and a canary column beside: out is a strided view
    buf = torch.full((9, 41), float("nan"), dtype=F32, device=inp.x.device)
    buf[0], buf[-1], buf[:, -1] = 7.0, 7.0, 7.0
    out = buf[1:-1, :40]
    y = moe_cts.kernels.fused_moe(spec, inp.weights, inp.x, out=out)
    assert y.data_ptr() == out.data_ptr() and torch.isfinite(out).all()
    assert torch.equal(y, moe_cts.kernels.fused_moe(spec, inp.weights, inp.x))
    assert (buf[0] == 7).all() and (buf[-1] == 7).all() and (buf[:, -1] == 7).all()


def test_out_argument_of_the_wrong_shape_is_refused_before_launch() -> None:
    spec = presets.scaled("mixtral-8x7b", hidden_size=40, intermediate_size=24)
    inp = make_inputs(spec, F32, 3, seed=3)
    with pytest.raises(SpecError, match=r"out\.shape"):
        moe_cts.kernels.fused_moe(spec, inp.weights, inp.x, out=torch.empty(3, 41, device=inp.x.device))
