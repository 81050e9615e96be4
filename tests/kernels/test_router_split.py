"""The split logits GEMM of moe_cts.kernels.router: batch invariance, forced splits, the tile heuristic.

route(x)[rows]  ==  route(x[rows])  bit for bit        (tiles and split never depend on T)
split H (partials summed s = 0, 1, ...)  ~  one split  (within the oracle test's logit bound)
E not a multiple of BLOCK_E, H not a multiple of H_CHUNK or BLOCK_H, grouped DeepSeek-V3-like routing
logits_tile_for: fits AMD's 64 KiB LDS, 128 threads per program, no empty split, many decode programs
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_router import DEVICE, _bounds, assert_routing_matches

import moe_cts.reference.numpy_oracle as ref
from moe_cts.kernels import config as kconfig
from moe_cts.kernels import router as router_mod
from moe_cts.kernels.router import MIN_DECODE_PROGRAMS, LogitsTile, logits_tile_for, route
from moe_cts.reference import presets
from moe_cts.reference.spec import MoESpec, MoEWeights, SpecError

#: H 300: 19 steps of BLOCK_H 16 (the last one masked), 5 splits of 64 columns (the last one 44)
H = 300
SPLIT = LogitsTile(BLOCK_T=16, BLOCK_E=16, BLOCK_H=16, H_CHUNK=64, SPLIT_H=5)
ONE = LogitsTile(BLOCK_T=16, BLOCK_E=16, BLOCK_H=16, H_CHUNK=304, SPLIT_H=1)
#: DeepSeek-V3's routing scaled: E 40 is not a multiple of BLOCK_E 16 (3 E tiles, the last 8 wide)
DSV3 = MoESpec(
    H, 8, 40, 8, scoring="sigmoid", correction_bias=True, n_group=8, topk_group=4,
    renormalize=True, routed_scaling_factor=2.5,
)  # fmt: skip
SOFTMAX = MoESpec(H, 8, 24, 3, renormalize=True, router_bias=True)


def _inputs(spec: MoESpec, T: int, dtype=torch.float32, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    w = MoEWeights.random(spec, generator=gen, dtype=dtype)
    x = torch.randn((T, spec.hidden_size), generator=gen, dtype=torch.float64).to(dtype)
    return w.map(lambda t: t.to(DEVICE)), x.to(DEVICE)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype == torch.float32:
        return torch.equal(a.view(torch.int32), b.view(torch.int32))
    return torch.equal(a, b)


ROWS = (0, 5, 10, 15, 16, 20, 36)  # first, middle and last rows of a token tile; rows of the second and third


@pytest.mark.parametrize("tile", [None, SPLIT], ids=["default_tile", "split5"])
@pytest.mark.parametrize("spec", [DSV3, SOFTMAX], ids=["dsv3_grouped", "softmax_bias"])
def test_a_tokens_routing_is_the_same_bits_at_any_batch_size(spec, tile):
    """Each row of a T = 37 call equals the same row routed alone (T = 1) and inside a T = 3 slice."""
    w, x = _inputs(spec, 37)
    full = route(spec, w, x, logits_tile=tile)
    for t in ROWS:
        for lo, hi in ((t, t + 1), (max(0, t - 1), min(37, t + 2))):
            part = route(spec, w, x[lo:hi].contiguous(), logits_tile=tile)
            i = t - lo
            for name in ("logits", "scores", "topk_ids", "topk_weights"):
                a, b = getattr(full, name)[t], getattr(part, name)[i]
                assert _same_bits(a, b), f"row {t} as row {i} of T = {hi - lo}: {name} differs"


def test_the_bitwise_check_sees_a_changed_summation_order():
    """The invariance check can fail: the same rows with another H split differ in some logit bits."""
    w, x = _inputs(DSV3, 37)
    a = route(DSV3, w, x, logits_tile=SPLIT).logits
    b = route(DSV3, w, x, logits_tile=ONE).logits
    assert not _same_bits(a, b), "a 5-way H split gave the same bits as one split: was the tile used?"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("spec", [DSV3, SOFTMAX], ids=["dsv3_grouped", "softmax_bias"])
def test_split_h_matches_one_split_and_the_oracle(spec, dtype):
    w, x = _inputs(spec, 37, dtype)
    split, one = route(spec, w, x, logits_tile=SPLIT), route(spec, w, x, logits_tile=ONE)
    assert_routing_matches(spec, w, x, split)
    assert_routing_matches(spec, w, x, one)
    dz, _ = _bounds(spec, w, x, ref.route(spec, w, x))
    diff = (split.logits - one.logits).abs().double().cpu().numpy()
    assert (diff <= 2 * dz).all(), f"split vs one split: max |dlogit| {diff.max():.3e}"


def test_grouped_split_routing_never_picks_a_masked_group():
    w, x = _inputs(DSV3, 37)
    ids = route(DSV3, w, x, logits_tile=SPLIT).topk_ids.cpu().numpy()
    groups = ids // (DSV3.num_experts // DSV3.n_group)
    assert max(len(set(row)) for row in groups) <= DSV3.topk_group


def test_keep_scores_off_gives_the_same_ids_and_weights_with_a_split():
    w, x = _inputs(DSV3, 21)
    full, lean = route(DSV3, w, x, logits_tile=SPLIT), route(DSV3, w, x, logits_tile=SPLIT, keep_scores=False)
    assert lean.logits is None and torch.equal(full.topk_ids, lean.topk_ids)
    assert _same_bits(full.topk_weights, lean.topk_weights)


# -- the heuristic
PRESET_SHAPES = [  # (name, E, H): the four benchmark models, plus the smallest and largest E the router takes
    ("deepseek-v3", 256, 7168), ("qwen3-235b", 128, 4096), ("mixtral", 8, 4096), ("gpt-oss-120b", 128, 2880),
    ("E1", 1, 64), ("E1024", 1024, 7168),
]  # fmt: skip
DTYPE_PAIRS = [
    (torch.bfloat16, torch.bfloat16),
    (torch.float32, torch.float32),
    (torch.bfloat16, torch.float32),
]


@pytest.mark.parametrize("backend", ["cuda", "hip"])
@pytest.mark.parametrize("name,E,H", PRESET_SHAPES, ids=[p[0] for p in PRESET_SHAPES])
def test_the_heuristic_fits_lds_threads_and_has_no_empty_split(monkeypatch, backend, name, E, H):
    monkeypatch.setattr(kconfig, "backend", lambda: backend)
    warp = 64 if backend == "hip" else 32
    for xd, wd in DTYPE_PAIRS:
        lt = logits_tile_for(E, H, xd, wd).validate(H)
        stage = lt.BLOCK_T * lt.BLOCK_H * xd.itemsize + lt.BLOCK_E * lt.BLOCK_H * wd.itemsize
        assert lt.num_stages * stage <= 48 * 1024, f"{xd}/{wd}: {lt} needs {lt.num_stages * stage} B of LDS"
        assert lt.num_warps * warp == 128
        assert (lt.SPLIT_H - 1) * lt.H_CHUNK < H, f"{lt}: the last split is empty"
        # the cap on partial-logit traffic: at most x's own bytes per token; only gpt-oss-120b's H leaves the
        # capped split under MIN_DECODE_PROGRAMS, where it yields (test_gpt_oss_decode_takes_one_dot_step_per_split)
        if lt.SPLIT_H > 1 and name != "gpt-oss-120b":
            assert H * xd.itemsize >= lt.SPLIT_H * E * 4, f"{xd}: {lt} breaks the traffic cap"
        programs = -(-E // lt.BLOCK_E) * lt.SPLIT_H
        assert programs >= min(MIN_DECODE_PROGRAMS, -(-E // lt.BLOCK_E) * -(-H // lt.BLOCK_H)), lt


def test_gpt_oss_decode_takes_one_dot_step_per_split():
    """The traffic cap left gpt-oss-120b (E 128, H 2880) 16 decode programs of 3 steps; it yields below
    MIN_DECODE_PROGRAMS: 23 splits of one step, 46 programs, partials about twice x's bytes."""
    lt = logits_tile_for(128, 2880, torch.bfloat16, torch.bfloat16)
    assert (lt.BLOCK_E, lt.BLOCK_H, lt.H_CHUNK, lt.SPLIT_H) == (64, 128, 128, 23)
    assert 2 * lt.SPLIT_H >= MIN_DECODE_PROGRAMS and lt.SPLIT_H * 128 * 4 <= 3 * 2880 * 2


def test_deepseek_v3_decode_runs_many_logits_programs():
    spec = presets.get("deepseek-v3")
    lt = logits_tile_for(spec.num_experts, spec.hidden_size, torch.bfloat16, torch.bfloat16)
    programs = -(-spec.num_experts // lt.BLOCK_E) * lt.SPLIT_H
    assert (lt.BLOCK_E, lt.BLOCK_H, lt.SPLIT_H) == (64, 128, 14) and programs == 56


def test_the_heuristic_takes_no_token_count():
    """Batch invariance by construction: nothing T-shaped reaches the decomposition."""
    import inspect

    assert list(inspect.signature(logits_tile_for).parameters) == ["E", "H", "x_dtype", "w_dtype"]


# -- bad tiles raise before any launch, naming the field
BAD_TILES = [
    ("logits_tile.BLOCK_E", replace(SPLIT, BLOCK_E=24)),
    ("logits_tile.BLOCK_H", replace(SPLIT, BLOCK_H=8)),
    ("logits_tile.H_CHUNK", replace(SPLIT, H_CHUNK=72)),
    ("logits_tile.SPLIT_H", replace(SPLIT, SPLIT_H=4)),
    ("logits_tile.num_warps", replace(SPLIT, num_warps=0)),
    ("logits_tile", {"BLOCK_T": 16}),
]


@pytest.mark.parametrize("field,tile", BAD_TILES, ids=[b[0] for b in BAD_TILES])
def test_a_bad_logits_tile_is_rejected_before_launch(field, tile, monkeypatch):
    monkeypatch.setattr(router_mod, "router_logits_kernel", None)
    monkeypatch.setattr(router_mod, "router_select_kernel", None)
    w, x = _inputs(DSV3, 4)
    with pytest.raises(SpecError, match=f"^{re.escape(field)}\\b"):
        route(DSV3, w, x, logits_tile=tile)


def test_zero_tokens_launch_nothing_with_a_split(monkeypatch):
    monkeypatch.setattr(router_mod, "router_logits_kernel", None)
    monkeypatch.setattr(router_mod, "router_select_kernel", None)
    w, x = _inputs(DSV3, 0)
    r = route(DSV3, w, x, logits_tile=SPLIT)
    assert r.topk_ids.shape == (0, 8) and r.logits.shape == (0, 40)
    assert np.asarray(r.scores.shape).tolist() == [0, 40]
