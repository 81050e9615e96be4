"""Persistent grouped GEMMs (GemmTile.persistent: a few programs per SM walk the tiles) against one program per
tile.

A persistent walk changes which program computes a tile and the order tiles run in, never a tile's loads or
dots, so every output must keep its bits: 16-bit and block fp8, pointer and descriptor weights, tails in N and
K, several tiles per expert, a shared expert, and grids smaller than the tile count (PERSISTENT_PROGRAMS on the
interpreter, the SM count on a GPU). Runs on the interpreter (CI) and on a GPU (ci/gpu).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from _moe_testlib import assert_within, down_expected, forward_expected, gate_up_expected
from test_grouped_gemm import Case

import moe_cts.kernels
from moe_cts.kernels import Routing, fp8_gemm
from moe_cts.kernels import config as cfgmod
from moe_cts.kernels.config import GemmTile, TileConfig
from moe_cts.reference.spec import SpecError

F16, BF16 = torch.float16, torch.bfloat16


@pytest.fixture(scope="module")
def device():
    from moe_cts.conformance.engine.devices import select_device

    return select_device("interpreter" if fp8_gemm.interpreting() else "cuda:0")


def _config(
    persistent: int, *, tma: bool = False, block_n: int = 32, block_k: int = 32, paired: bool = False
) -> TileConfig:
    tile = GemmTile(BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=2, num_warps=4, num_stages=2, tma=tma,
                    persistent=persistent, paired=paired)  # fmt: skip
    return TileConfig(BLOCK_M=16, gate_up=tile, down=tile)


CASES = [
    Case("several M tiles per expert", spec=dict(num_experts=2, top_k=1), T=40, dtype=F16),
    Case("H, I tails", spec=dict(hidden_size=50, intermediate_size=20), T=9, dtype=BF16),
    Case(
        "interleaved swiglu_oai with biases",
        spec=dict(w13_layout="interleaved", activation="swiglu_oai", expert_bias=True, intermediate_size=48),
        T=12,
        dtype=BF16,
    ),
]


@pytest.mark.parametrize("tma", [False, True], ids=["pointers", "descriptors"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_persistent_walk_gives_one_program_per_tile_bits(case: Case, tma: bool) -> None:
    spec, inp = case.build()
    acts, outs = [], []
    for p in (0, 1):
        cfg = _config(p, tma=tma)
        acts.append(moe_cts.kernels.gate_up(spec, inp.weights, inp.x, inp.topk_ids, config=cfg))
        outs.append(moe_cts.kernels.down(spec, inp.weights, acts[0], inp.topk_ids, config=cfg))
    assert torch.equal(acts[0], acts[1]), "gate_up: persistent and one-tile grids differ"
    assert torch.equal(outs[0], outs[1]), "down: persistent and one-tile grids differ"
    want, bound = gate_up_expected(inp)
    assert_within(acts[1], want, bound, f"gate_up[{case.id}] persistent")
    want, bound = down_expected(inp, acts[1].cpu().double().numpy())
    assert_within(outs[1], want, bound, f"down[{case.id}] persistent")


def test_the_persistent_grid_is_smaller_than_the_tiles_and_the_forward_keeps_its_bits() -> None:
    """The whole forward (ids given, shared expert, combine) with a grid of PERSISTENT_PROGRAMS programs (the
    interpreter has no SM count): each walks several tiles; same bits, and within the oracle's bound."""
    case = Case(
        "forward",
        spec=dict(n_shared_experts=1, shared_intermediate_size=48, shared_gate=True),
        T=24,
        dtype=BF16,
    )
    spec, inp = case.build()
    assert _config(1).gate_up.grid(40) == (min(40, cfgmod._sm_count() or cfgmod.PERSISTENT_PROGRAMS),)
    assert _config(0).gate_up.grid(40) == (40,)
    routing = Routing(inp.topk_ids, inp.topk_weights)
    got = [
        moe_cts.kernels.fused_moe(spec, inp.weights, inp.x, routing=routing, config=_config(p))
        for p in (0, 2)
    ]
    assert torch.equal(got[0], got[1])
    want, bound = forward_expected(inp, np.ones(tuple(inp.topk_ids.shape), bool))
    assert_within(got[1], want, bound, "forward persistent")


def test_block_fp8_persistent_gives_the_one_tile_bits(device, monkeypatch) -> None:
    """fp8_gate_up_kernel / fp8_down_kernel walk tiles under PERSISTENT: GEMM1's act codes and scales (quantized
    in its epilogue) and GEMM2's outputs keep their bits (test_fp8_moe.Fp8Launches), with descriptors and scalar
    weight scales (I 256) and with pointers; the case passes against the oracle."""
    from test_fp8_moe import Fp8Launches, _case, _judge, forward

    from moe_cts.conformance.engine.results import Outcome
    from moe_cts.reference.quant import QuantScheme

    case = _case(QuantScheme.fp8_block(), hidden_size=192, intermediate_size=256)
    assert fp8_gemm.scalar_weight_scales(case.spec, 128, 128, 256)
    launches = Fp8Launches(monkeypatch)
    for tma in (False, True):
        for p in (0, 1):
            launches.under((tma, p))
            with cfgmod.forced(_config(p, tma=tma, block_n=128, block_k=128)):
                forward(case, device)
        one_tile, walked = launches.got[(tma, 0)], launches.got[(tma, 1)]
        assert len(one_tile) == len(walked) >= 3
        for i, (a, b) in enumerate(zip(one_tile, walked)):
            assert torch.equal(a, b), f"tma={tma} launch {i}: persistent and one-tile grids differ"
    launches.under("judged")
    with cfgmod.forced(_config(1, tma=True, block_n=128, block_k=128)):  # and against the oracle, every stage
        r, _ = _judge(case, device)
    assert r.outcome == Outcome.PASS, f"persistent: {r.outcome.value} at {r.failing_stage}: {r.message}"


def test_a_bad_persistent_key_is_refused_naming_the_field() -> None:
    for bad in (-1, True, 1.5):
        tile = dataclasses.replace(_config(0).gate_up, persistent=bad)
        with pytest.raises(SpecError, match=r"config\.down\.persistent"):
            TileConfig(BLOCK_M=16, gate_up=_config(0).gate_up, down=tile).validate()
    assert cfgmod.as_config(_config(2).to_dict()).down.persistent == 2


@pytest.mark.parametrize("tma", [False, True], ids=["pointers", "descriptors"])
def test_paired_gemm1_tiles_quantize_in_the_epilogue_with_the_unfused_bits(device, tma, monkeypatch) -> None:
    """Block fp8 with GEMM1 tiles of 64 columns (half the 128 group): PAIRED runs two of them per program and
    quantizes the activation in GEMM1's epilogue. Same act codes, scales and outputs as the unfused path (fp32
    act + quantize_rows), with one program per tile and persistent; the case passes."""
    from test_fp8_moe import Fp8Launches, _case, _judge, forward

    from moe_cts.conformance.engine.results import Outcome
    from moe_cts.reference.quant import QuantScheme

    case = _case(QuantScheme.fp8_block(), hidden_size=192, intermediate_size=320)  # I: 2.5 groups, a tail
    assert fp8_gemm.fused_requant(case.spec, _config(0, block_n=64, paired=True).gate_up)
    assert not fp8_gemm.fused_requant(case.spec, _config(0, block_n=64).gate_up)
    launches = Fp8Launches(monkeypatch)
    got = launches.got
    for key, paired, p in (("unfused", False, 0), ("paired", True, 0), ("paired persistent", True, 1)):
        launches.under(key)
        with cfgmod.forced(_config(p, tma=tma, block_n=64, block_k=128, paired=paired)):
            forward(case, device)
    launches.under("judged")  # the persistent paired config also against the oracle, every stage
    with cfgmod.forced(_config(1, tma=tma, block_n=64, block_k=128, paired=True)):
        r, _ = _judge(case, device)
    assert r.outcome == Outcome.PASS, f"{r.outcome.value} at {r.failing_stage}: {r.message}"
    assert len(got["unfused"]) >= 3
    for key in ("paired", "paired persistent"):
        assert len(got[key]) == len(got["unfused"])
        for i, (a, b) in enumerate(zip(got["unfused"], got[key])):
            assert torch.equal(a, b), f"{key} launch {i}: differs from the unfused path"


def test_a_gemm1_tile_neither_a_multiple_nor_half_of_the_group_is_not_fused() -> None:
    from test_fp8_moe import _case

    from moe_cts.reference.quant import QuantScheme

    spec = _case(QuantScheme.fp8_block()).spec
    for bn, fused in ((32, False), (64, True), (128, True), (256, True)):
        assert fp8_gemm.fused_requant(spec, _config(0, block_n=bn, paired=True).gate_up) is fused, bn
        assert fp8_gemm.fused_requant(spec, _config(0, block_n=bn).gate_up) is (fused and bn != 64), bn
    bad = dataclasses.replace(_config(0).gate_up, paired=1)
    with pytest.raises(SpecError, match=r"config\.gate_up\.paired"):
        TileConfig(BLOCK_M=16, gate_up=bad, down=bad).validate()
