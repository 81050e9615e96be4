"""Half tail tiles (GemmTile.half_tail): an M tile whose second half holds pad slots only runs as a tile of
BLOCK_M / 2 rows.

The half tile computes the same rows with the same K order, so the outputs must pass the oracle's bound with and
without it, at every boundary of the rule: a tail of fewer than half the rows, exactly half (half path), one
more than half (full path), and experts of several tiles. 16-bit and block fp8, pointer and descriptor weights.
The recall catalog's `gemm-half-tail-last-slot-only` checks that a wrong rule (the last slot read for the whole
half) is caught at gemm1. Runs on the interpreter (CI) and on a GPU (ci/gpu).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from _moe_testlib import assert_within, down_expected, forward_expected, gate_up_expected, make_inputs

import moe_cts.kernels
from moe_cts.kernels import Routing, fp8_gemm
from moe_cts.kernels import config as cfgmod
from moe_cts.kernels.config import GemmTile, TileConfig
from moe_cts.reference.spec import MoESpec, SpecError

BF16, F16 = torch.bfloat16, torch.float16
BLOCK_M = 32
#: tokens per expert (k = 1): tails of 5 and 8 rows (< half: half tiles), 16 (exactly half: half tile) and 17
#: (one more than half: the full tile); expert 1 has a full tile before its tail
COUNTS = (5, 40, 16, 17)


@pytest.fixture(scope="module")
def device():
    from moe_cts.conformance.engine.devices import select_device

    return select_device("interpreter" if fp8_gemm.interpreting() else "cuda:0")


def _config(half_tail: bool, *, tma: bool = False, block_n: int = 32, block_k: int = 32) -> TileConfig:
    tile = GemmTile(BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=2, num_warps=4, num_stages=2, tma=tma,
                    half_tail=half_tail)  # fmt: skip
    return TileConfig(BLOCK_M=BLOCK_M, gate_up=tile, down=tile).validate()


def tail_inputs(dtype: torch.dtype, counts, *, seed: int, order_seed: int, **spec):
    """(spec, inputs) of a k = 1 layer whose expert e holds counts[e] tokens, in shuffled order (also the merged
    tails' tests, test_merge_tail.py)."""
    spec = MoESpec(**{**dict(hidden_size=72, intermediate_size=40, num_experts=len(counts), top_k=1), **spec})
    inp = make_inputs(spec, dtype, sum(counts), seed=seed)
    ids = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(order_seed).shuffle(ids)  # tokens of one expert are not adjacent
    topk = torch.as_tensor(ids[:, None], dtype=torch.int32, device=inp.topk_ids.device)
    return spec, dataclasses.replace(inp, topk_ids=topk)


def _inputs(dtype: torch.dtype, **spec):
    return tail_inputs(dtype, COUNTS, seed=11, order_seed=0, **spec)


def gemms_within_the_oracle(spec, inp, cfg: TileConfig, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(act, out) of gate_up and down under cfg, each asserted within the oracle's bound."""
    act = moe_cts.kernels.gate_up(spec, inp.weights, inp.x, inp.topk_ids, config=cfg)
    want, bound = gate_up_expected(inp)
    assert_within(act, want, bound, f"gate_up {what}")
    out = moe_cts.kernels.down(spec, inp.weights, act, inp.topk_ids, config=cfg)
    want, bound = down_expected(inp, act.cpu().double().numpy())
    assert_within(out, want, bound, f"down {what}")
    return act, out


def test_the_case_has_tails_on_both_sides_of_half() -> None:
    tails = [c % BLOCK_M or BLOCK_M for c in COUNTS]
    assert sorted(t <= BLOCK_M // 2 for t in tails) == [False, True, True, True]
    assert BLOCK_M // 2 in tails and BLOCK_M // 2 + 1 in tails and max(COUNTS) > BLOCK_M


@pytest.mark.parametrize("tma", [False, True], ids=["pointers", "descriptors"])
@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bf16", "f16"])
def test_half_tail_tiles_pass_the_oracle_like_full_tiles(dtype, tma) -> None:
    spec, inp = _inputs(dtype, w13_layout="interleaved", activation="swiglu_oai", expert_bias=True)
    got = {
        half: gemms_within_the_oracle(spec, inp, _config(half, tma=tma), f"half_tail={half}")
        for half in (False, True)
    }
    # and bit for bit: tiles of 32 and 16 rows use one kind of product (per-row sums on the interpreter,
    # mma.sync on sm90, where wgmma needs 64 rows), in the same K order
    for what, a, b in zip(("gate_up", "down"), got[False], got[True]):
        assert torch.equal(a, b), f"{what}: half tails changed the bits"


def test_the_forward_with_half_tails_and_a_shared_expert_passes() -> None:
    spec, inp = _inputs(BF16, n_shared_experts=1, shared_intermediate_size=48, shared_gate=True)
    routing = Routing(inp.topk_ids, inp.topk_weights)
    got = moe_cts.kernels.fused_moe(spec, inp.weights, inp.x, routing=routing, config=_config(True))
    want, bound = forward_expected(inp, np.ones(tuple(inp.topk_ids.shape), bool))
    assert_within(got, want, bound, "forward half_tail")


def test_block_fp8_half_tails_pass_and_quantize_the_same_groups(device, monkeypatch) -> None:
    """Block fp8 (GEMM1 tiles of 128 columns: the activation quantized in the epilogue, on the half tile too),
    descriptor weights: the case passes with half tails, and its act codes, scales and outputs are those of
    full tiles, bit for bit. (The pointer path runs half tails in every interpreter fp8 case past 8 tokens per
    expert: the interpreter table's BLOCK_M 32 rows set half_tail.)"""
    tma = True
    from test_fp8_moe import Fp8Launches, _case, _judge

    from moe_cts.conformance.engine.results import Outcome
    from moe_cts.reference.quant import QuantScheme

    case = _case(QuantScheme.fp8_block(), hidden_size=192, intermediate_size=256)
    launches = Fp8Launches(monkeypatch)
    got = launches.got
    for half in (False, True):
        launches.under(half)
        with cfgmod.forced(_config(half, tma=tma, block_n=128, block_k=128)):
            r, _ = _judge(case, device)
        assert r.outcome == Outcome.PASS, (
            f"half_tail={half}: {r.outcome.value} at {r.failing_stage}: {r.message}"
        )
    assert len(got[True]) == len(got[False]) >= 3
    for i, (a, b) in enumerate(zip(got[False], got[True])):
        # bitwise: a row's K order is the same, and tiles of 32 and 16 rows use one kind of product (the
        # interpreter's per-row sum, _common.dot_acc; mma.sync on sm90, where fp8 wgmma needs 64 rows)
        assert torch.equal(a, b), f"launch {i}: half tails differ from full tiles"


def test_a_bad_half_tail_key_is_refused_naming_the_field() -> None:
    tile = _config(True).gate_up
    with pytest.raises(SpecError, match=r"config\.down\.half_tail"):
        TileConfig(BLOCK_M=32, gate_up=tile, down=dataclasses.replace(tile, persistent=1)).validate()
    with pytest.raises(SpecError, match=r"config\.gate_up\.half_tail"):
        TileConfig(BLOCK_M=16, gate_up=tile, down=tile).validate()
    with pytest.raises(SpecError, match=r"config\.gate_up\.half_tail"):
        TileConfig(BLOCK_M=32, gate_up=dataclasses.replace(tile, half_tail=1), down=tile).validate()
    assert cfgmod.as_config(_config(True).to_dict()).down.half_tail is True
