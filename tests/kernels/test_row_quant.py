"""One-row tiles quantize their input in the K loop (the fp8 kernels' ROW_QUANT, kernels/fp8_gemm.row_quant).

At one token every used tile of the block-fp8 layer holds one live slot (align.slot_meta; the shared expert's
dense tile), so GEMM1 reads x and GEMM2 the fp32 activation unquantized and quantize that row per 128-group in
registers, instead of a quantize_rows launch before each. The codes and scales must be those quantize_rows
writes, so the output keeps the bits of MOE_CTS_ROW_QUANT=0 (the launches it replaces) in every scale format
and fp8 flavour, with a shared expert, with H and I that are no multiples of the group; the path must really
run (no quantize_rows call left), stay off where it does not apply, and pass the oracle's check. A kernel that
quantizes the wrong row must fail that check.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _moe_testlib import DEVICE

from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.results import Outcome
from moe_cts.conformance.engine.runner import run_case
from moe_cts.conformance.impls.registry import get_implementation
from moe_cts.kernels import Routing, fp8_gemm, fp8_moe, target_info
from moe_cts.kernels import config as cfgmod
from moe_cts.kernels.config import GemmTile, TileConfig
from moe_cts.kernels.moe import fused_moe
from moe_cts.reference.quant import QuantScheme
from moe_cts.reference.spec import MoESpec

SPEC = MoESpec(hidden_size=256, intermediate_size=256, num_experts=8, top_k=3, renormalize=True)
SHARED = SPEC.replace(n_shared_experts=1, shared_intermediate_size=128)
#: descriptor weights with BLOCK_N dividing the 128-row weight block: GEMM1's SW_SCALAR loop, where it runs
TILE = GemmTile(BLOCK_N=32, BLOCK_K=128, GROUP_M=1, num_warps=4, num_stages=1, tma=True)
CONFIG = TileConfig(BLOCK_M=16, gate_up=TILE, down=TILE)

CASES = [
    ("fp32 scales, shared expert", SHARED, QuantScheme.fp8_block(), "bfloat16"),
    ("ue8m0 scales", SPEC, QuantScheme.fp8_block(scale_format="ue8m0"), "float16"),
    ("e4m3fnuz, ue8m0 floor", SPEC,
     QuantScheme.fp8_block(fp8_format="e4m3fnuz", scale_format="ue8m0", scale_rounding="floor"), "bfloat16"),
    # H and I no multiples of 128: GEMM1 has no SW_SCALAR loop (I), so x is quantized up front; GEMM2's last
    # group is partial
    ("H 200, I 136", SPEC.replace(hidden_size=200, intermediate_size=136), QuantScheme.fp8_block(), "bfloat16"),
]  # fmt: skip


def _skip_unrunnable(q: QuantScheme) -> None:
    why = target_info.fp8_rejection(*target_info.device_target(DEVICE), q.fp8_format)
    if why is not None:
        pytest.skip(why)


class _QuantizeCalls:
    """Counts quantize_rows calls wherever the forward makes them (fp8_moe and the launchers in fp8_gemm)."""

    def __init__(self, monkeypatch) -> None:
        self.rows: list[int] = []
        real = fp8_gemm.quantize_rows

        def spy(spec, x, *a, **kw):
            self.rows.append(x.shape[0])
            return real(spec, x, *a, **kw)

        monkeypatch.setattr(fp8_gemm, "quantize_rows", spy)
        monkeypatch.setattr(fp8_moe, "quantize_rows", spy)


def _forward(spec, inp, on: bool, monkeypatch, T_ids=None) -> torch.Tensor:
    monkeypatch.setenv(fp8_gemm.ROW_QUANT_ENV, "1" if on else "0")
    with cfgmod.forced(CONFIG):
        return fused_moe(spec, inp.qweights, inp.x).clone()


@pytest.mark.parametrize(("name", "spec", "q", "dtype"), CASES, ids=[c[0] for c in CASES])
def test_one_token_keeps_the_bits_of_the_quantize_launches(name, spec, q, dtype, monkeypatch) -> None:
    _skip_unrunnable(q)
    spec = spec.replace(quant=q)
    inp = Case(spec, 1, dtype, seed=5).build_inputs(DEVICE)
    calls = _QuantizeCalls(monkeypatch)
    want = _forward(spec, inp, False, monkeypatch)
    assert len(calls.rows) >= 2, calls.rows  # x and the activation, at least
    calls.rows.clear()
    got = _forward(spec, inp, True, monkeypatch)
    assert torch.isfinite(want).all() and want.abs().max() > 0.1, name
    assert torch.equal(got, want), name
    # x goes up front only where GEMM1 cannot quantize it (I 136: no SW_SCALAR loop); activations never
    assert calls.rows == ([1] if spec.intermediate_size % 128 else []), calls.rows


def test_two_tokens_quantize_up_front(monkeypatch) -> None:
    """Tiles of align hold several rows: the quantize launches run as before."""
    spec = SPEC.replace(quant=QuantScheme.fp8_block())
    inp = Case(spec, 2, "bfloat16", seed=5).build_inputs(DEVICE)
    calls = _QuantizeCalls(monkeypatch)
    _forward(spec, inp, True, monkeypatch)
    assert calls.rows == [2, 6], calls.rows


def test_static_scales_and_other_schemes_never_take_it() -> None:
    meta = dataclasses.make_dataclass("M", [("single_row", bool)])(True)
    for q in (QuantScheme.fp8_per_token(), QuantScheme.fp8_per_tensor()):
        assert not fp8_gemm.row_quant(SPEC.replace(quant=q), meta, TILE, torch.empty(0), 256)
    assert not fp8_moe._unquantized_ok(SPEC.replace(quant=QuantScheme.fp8_block()), meta, 0.5)
    persistent = dataclasses.replace(TILE, persistent=1)
    block = SPEC.replace(quant=QuantScheme.fp8_block())
    codes = torch.empty(0, dtype=fp8_gemm.operand_dtype("e4m3fn"))
    assert fp8_gemm.row_quant(block, meta, TILE, codes, 256)
    assert not fp8_gemm.row_quant(block, meta, persistent, codes, 256)
    assert not fp8_gemm.row_quant(block, meta, dataclasses.replace(TILE, BLOCK_K=64), codes, 256)


def _judge(spec, monkeypatch):
    case = Case(spec, 1, "bfloat16", seed=9)
    device = __import__("moe_cts.conformance.engine.devices", fromlist=["x"]).select_device(
        "interpreter" if fp8_gemm.interpreting() else "cuda:0"
    )
    with cfgmod.forced(CONFIG):
        return run_case(get_implementation("triton"), case, device)


def test_one_token_passes_the_oracle_check(monkeypatch) -> None:
    monkeypatch.setenv(fp8_gemm.ROW_QUANT_ENV, "1")
    r = _judge(SHARED.replace(quant=QuantScheme.fp8_block()), monkeypatch)
    assert r.outcome == Outcome.PASS, f"{r.outcome.value} at {r.failing_stage}: {r.message}"


def test_a_kernel_that_quantizes_the_wrong_row_fails_the_check(monkeypatch) -> None:
    """GEMM2 handed the activation rows rolled by one (what a _first_row off by one slot reads): the end-to-end
    stage must fail."""
    monkeypatch.setenv(fp8_gemm.ROW_QUANT_ENV, "1")
    real = fp8_moe.launch_fp8_down

    def wrong_row(spec, aq, sa, *a, **kw):
        if sa is None:  # the unquantized activation of one-row tiles
            aq = aq.roll(1, 0)
        return real(spec, aq, sa, *a, **kw)

    monkeypatch.setattr(fp8_moe, "launch_fp8_down", wrong_row)
    r = _judge(SPEC.replace(quant=QuantScheme.fp8_block()), monkeypatch)
    assert r.outcome == Outcome.FAIL and r.failing_stage == "end_to_end", f"{r.outcome.value}: {r.message}"


def test_routing_given_at_one_token_takes_it(monkeypatch) -> None:
    spec = SPEC.replace(quant=QuantScheme.fp8_block())
    inp = Case(spec, 1, "bfloat16", seed=5).build_inputs(DEVICE)
    ids = torch.tensor([[6, 1, 3]], dtype=torch.int32, device=DEVICE)
    w = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float32, device=DEVICE)
    calls = _QuantizeCalls(monkeypatch)
    outs = []
    for on in (False, True):
        monkeypatch.setenv(fp8_gemm.ROW_QUANT_ENV, "1" if on else "0")
        with cfgmod.forced(CONFIG):
            outs.append(fused_moe(spec, inp.qweights, inp.x, routing=Routing(ids, w)).clone())
    assert torch.equal(outs[0], outs[1]) and calls.rows == [1, 3]
