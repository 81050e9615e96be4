"""Merged half tails (GemmTile.merge_tail): an expert's half tail runs in the program of its previous tile, one K
loop feeding both row sets from each weight box.

The merged program computes the rows the two programs would (the same dots, the same K order), so the outputs
must pass the oracle's bound and equal the unmerged ones bit for bit, at every boundary of the rule: a half tail
after one full tile and after two (merged), a half tail alone (its expert's only tile: not merged), a tail of
exactly half the rows (merged), one of more than half (a full tile: nothing to merge), and neighbours of other
experts. Runs on the interpreter (CI) and on a GPU (ci/gpu).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from _moe_testlib import assert_within, forward_expected
from test_half_tail import gemms_within_the_oracle, tail_inputs

import moe_cts.kernels
from moe_cts.kernels import Routing
from moe_cts.kernels import config as cfgmod
from moe_cts.kernels.align import align
from moe_cts.kernels.config import GemmTile, TileConfig
from moe_cts.kernels.grouped_gemm import merge_tail, w13_desc
from moe_cts.reference.spec import SpecError

BF16, F16 = torch.bfloat16, torch.float16
BLOCK_M = 32
#: tokens per expert (k = 1), tails at BLOCK_M 32: 40 = full + 8 (merged), 5 alone (half, not merged), 48 = full +
#: exactly half (merged), 17 (more than half: one full tile), 70 = two full + 6 (merged into the second), 33 =
#: full + 1 (merged)
COUNTS = (40, 5, 48, 17, 70, 33)


def _config(merge: bool) -> TileConfig:
    tile = GemmTile(BLOCK_N=32, BLOCK_K=32, GROUP_M=2, num_warps=4, num_stages=2, tma=True, half_tail=True,
                    merge_tail=merge)  # fmt: skip
    return TileConfig(BLOCK_M=BLOCK_M, gate_up=tile, down=tile).validate()


def _inputs(dtype: torch.dtype, **spec):
    return tail_inputs(dtype, COUNTS, seed=5, order_seed=1, **spec)


def test_the_case_covers_every_side_of_the_rule() -> None:
    tails = [c % BLOCK_M or BLOCK_M for c in COUNTS]
    merged = [c > BLOCK_M and t <= BLOCK_M // 2 for c, t in zip(COUNTS, tails)]
    assert merged == [True, False, True, False, True, True]
    assert BLOCK_M // 2 in tails and any(c > 2 * BLOCK_M for c in COUNTS) and min(COUNTS) <= BLOCK_M // 2


def test_the_merged_path_is_the_one_launched() -> None:
    """The launcher passes MERGE_TAIL for this config and weights (descriptor weights, half tails on), so the
    bitwise test below compares two different kernels, not one kernel with itself."""
    spec, inp = _inputs(BF16)
    meta = align(spec, inp.topk_ids, BLOCK_M)
    tile = _config(True).gate_up
    desc = w13_desc(inp.weights.w13, tile.BLOCK_N, tile.BLOCK_K, True, False)
    assert desc is not None and merge_tail(tile, meta, desc)
    assert not merge_tail(_config(False).gate_up, meta, desc) and not merge_tail(tile, meta, None)


@pytest.mark.parametrize(
    "layout",
    [dict(), dict(w13_layout="interleaved", activation="swiglu_oai", expert_bias=True)],
    ids=["concat", "interleaved-bias"],
)
@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bf16", "f16"])
def test_merged_half_tails_pass_the_oracle_and_keep_the_bits(dtype, layout) -> None:
    spec, inp = _inputs(dtype, **layout)
    got = {
        merge: gemms_within_the_oracle(spec, inp, _config(merge), f"merge_tail={merge}")
        for merge in (False, True)
    }
    for what, a, b in zip(("gate_up", "down"), got[False], got[True]):
        assert torch.equal(a, b), f"{what}: merged half tails changed the bits"


def test_the_forward_with_merged_half_tails_and_a_shared_expert_passes() -> None:
    spec, inp = _inputs(BF16, n_shared_experts=1, shared_intermediate_size=48, shared_gate=True)
    routing = Routing(inp.topk_ids, inp.topk_weights)
    got = moe_cts.kernels.fused_moe(spec, inp.weights, inp.x, routing=routing, config=_config(True))
    want, bound = forward_expected(inp, np.ones(tuple(inp.topk_ids.shape), bool))
    assert_within(got, want, bound, "forward merge_tail")
    base = moe_cts.kernels.fused_moe(spec, inp.weights, inp.x, routing=routing, config=_config(False))
    assert torch.equal(got, base)


def test_merge_tail_without_half_tails_is_refused_naming_the_field() -> None:
    tile = _config(True).gate_up
    with pytest.raises(SpecError, match=r"config\.gate_up\.merge_tail"):
        TileConfig(BLOCK_M=32, gate_up=dataclasses.replace(tile, half_tail=False), down=tile).validate()
    with pytest.raises(SpecError, match=r"config\.down\.merge_tail"):
        TileConfig(BLOCK_M=32, gate_up=tile, down=dataclasses.replace(tile, merge_tail=1)).validate()
    assert cfgmod.as_config(_config(True).to_dict()).gate_up.merge_tail is True


def test_the_merged_tile_counts_its_second_a_tile_in_shared_memory() -> None:
    tile = _config(True).down
    plain = dataclasses.replace(tile, merge_tail=False)
    extra = tile.smem_bytes(BLOCK_M, 2, 1) - plain.smem_bytes(BLOCK_M, 2, 1)
    assert extra == tile.num_stages * (BLOCK_M // 2) * tile.BLOCK_K * 2
