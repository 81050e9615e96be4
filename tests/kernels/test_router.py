"""moe_cts.kernels.route against moe_cts.reference.numpy_oracle.route: ids exactly (tie-aware only for near ties within
fp32 rounding), weights / logits / scores under an error bound, NaN/inf rows, exact ties, bad input.

Error model: the kernel reads the same rounded inputs as the float64 oracle, so only fp32 work is left.
A logit is a dot of length H: |dz| <= (H + 2) u32 sum|x||w| (deterministic; loose, yet a dropped H tile
or a missing bias is O(0.1)). Scores move by at most 2 s max|dz| plus E + 8 roundings (softmax sum);
weights add the renormalizing sum (2E + 2k + 16 roundings, 4 max|dz|).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch

import moe_cts.reference.numpy_oracle as ref
from moe_cts.conformance.engine.compare import compare
from moe_cts.kernels.capabilities import NotSupportedError
from moe_cts.kernels.router import route
from moe_cts.reference.spec import MoESpec, MoEWeights, SpecError

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
U32 = 2.0**-24


# ----------------------------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    name: str
    spec: MoESpec
    T: int
    dtype: torch.dtype = torch.float32
    strided: bool = False  # x a column slice, router stored transposed (non-contiguous both)
    router_dtype: torch.dtype | None = None  # differs from x's: the kernel upcasts both to fp32
    block_t: int | None = None  # force the token tile: several programs, a partial last one
    allow_tf32: bool = False  # fp32 inputs rounded to tf32 inside the dot (GPU only; ieee elsewhere)


def _cases() -> list[Case]:
    mixtral = MoESpec(48, 8, 8, 2, renormalize=True)
    # softmax, no renormalize (Qwen2-MoE / OLMoE): docs/bugs.md#bug-08-no-renormalize-skips-softmax
    qwen = MoESpec(32, 8, 64, 8)
    dsv3 = MoESpec(
        40, 8, 64, 8, scoring="sigmoid", correction_bias=True, n_group=8, topk_group=4,
        renormalize=True, routed_scaling_factor=2.5,
    )  # fmt: skip
    gptoss = MoESpec(40, 8, 32, 4, router_bias=True, renormalize=True)
    one_per_group = MoESpec(24, 8, 8, 2, scoring="sigmoid", n_group=8, topk_group=3, group_score="max")
    return [
        # -- real-model routing variants
        Case("softmax_renormalize", mixtral, 37),
        Case("softmax_plain", qwen, 29),
        Case("dsv3_grouped_sigmoid_bias_scaling", dsv3, 33),
        Case("grouped_by_group_max", replace(dsv3, group_score="max", topk_group=2), 21),
        Case("grouped_one_expert_groups", one_per_group, 17),
        Case("gpt_oss_router_bias", gptoss, 25),
        Case(
            "sigmoid_without_renormalize",
            MoESpec(24, 8, 16, 3, scoring="sigmoid", routed_scaling_factor=1.5),
            19,
        ),
        # -- shape edges
        Case("k_equals_E", MoESpec(24, 8, 8, 8, renormalize=True), 9),
        Case("single_expert", MoESpec(24, 8, 1, 1), 7),
        Case(
            "prime_E_257", MoESpec(40, 8, 257, 8, renormalize=True), 6
        ),  # BLOCK_E 512, BLOCK_H 16: 3 H steps
        Case("prime_E_257_k_equals_E", MoESpec(16, 8, 257, 257), 2),
        Case("one_token", mixtral, 1),
        Case("H_not_a_block_multiple", replace(qwen, hidden_size=200), 11),  # BLOCK_H 128: 2 steps, masked
        Case("several_programs", dsv3, 37, block_t=16),
        # grouped selection off the (T, n_group, E / n_group) tiles: E = 48 is not BLOCK_E (64), so the
        # per-group loop runs (dsv3 above takes the tiled one); both must pick the oracle's groups
        Case("grouped_untiled_E48", replace(dsv3, num_experts=48, n_group=4, topk_group=2, top_k=6), 19),
        Case("grouped_three_groups", replace(dsv3, num_experts=48, n_group=3, topk_group=2, top_k=6), 19),
        Case("strided_inputs", dsv3, 23, strided=True),
        # -- dtypes
        Case("fp16", mixtral, 37, torch.float16),
        Case("bf16", mixtral, 37, torch.bfloat16),
        Case("bf16_grouped", dsv3, 33, torch.bfloat16),
        Case("fp16_gpt_oss", gptoss, 25, torch.float16),
        Case("bf16_x_fp32_router", dsv3, 17, torch.bfloat16, router_dtype=torch.float32),
        Case("bf16_strided", qwen, 15, torch.bfloat16, strided=True),
        Case("fp32_tf32_when_asked", dsv3, 21, allow_tf32=True),
    ]


CASES = _cases()


def _inputs(case: Case, seed: int = 0) -> tuple[MoEWeights, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    w = MoEWeights.random(case.spec, generator=gen, dtype=case.router_dtype or case.dtype)
    x = torch.randn((case.T, case.spec.hidden_size), generator=gen, dtype=torch.float64).to(case.dtype)
    if case.strided:
        x = torch.cat([x, x], dim=1)[:, ::2]  # stride (2H, 2)
        w = w.replace(router=w.router.t().contiguous().t())  # stride (1, E)
    return w.map(lambda t: t.to(DEVICE)), x.to(DEVICE)


# ----------------------------------------------------------------------------------------------- judging
def _bounds(spec: MoESpec, w: MoEWeights, x: torch.Tensor, o: ref.Routing, tf32: bool = False):
    """(logit bound (T, E), max |dz| per row (T, 1)) from the magnitudes sum|x||w| (+ |bias|); tf32
    rounds both dot inputs (2 u_tf32 per product, u_tf32 = 2^-11)."""
    mag = np.abs(ref._np(x)) @ np.abs(ref._np(w.router)).T
    if spec.router_bias:
        mag = mag + np.abs(ref._np(w.router_bias))
    dz = ((spec.hidden_size + 2) * U32 + (2 * 2.0**-11 if tf32 else 0.0)) * mag
    dz_row = np.max(np.where(np.isfinite(dz), dz, 0.0), axis=1, keepdims=True) if dz.size else dz
    return dz, dz_row


def _key_tol(o: ref.Routing, dz_row: np.ndarray, E: int) -> np.ndarray:
    """(T, 1) how far two keys may move relative to each other under fp32 rounding."""
    finite = np.where(np.isfinite(o.keys), np.abs(o.keys), 0.0)
    return 2 * dz_row + (E + 8) * U32 * (1.0 + finite.max(axis=1, keepdims=True))


def bad_id_rows(got: np.ndarray, o: ref.Routing, tol: np.ndarray | None) -> list[int]:
    """Rows whose ids break the oracle's rule. tol=None: ids must equal the oracle's exactly (exact ties,
    NaN rows). Otherwise a row may differ only by a swap of keys equal within tol (a near tie the fp32
    kernel and the float64 oracle can resolve differently); keys are compared slot by slot."""
    bad = []
    for t in range(got.shape[0]):
        if np.array_equal(got[t], o.topk_ids[t]):
            continue
        if tol is None:
            bad.append(t)
            continue
        gk, rk = o.keys[t, got[t]], o.keys[t, o.topk_ids[t]]
        same = (np.isnan(gk) & np.isnan(rk)) | (gk == rk) | (np.abs(gk - rk) <= tol[t, 0])
        if not same.all():
            bad.append(t)
    return bad


def _expected_weights(spec: MoESpec, o: ref.Routing, ids: np.ndarray) -> np.ndarray:
    """The oracle's weight formula on the kernel's ids (equal to o.topk_weights where the ids agree)."""
    w = np.take_along_axis(o.scores, ids, axis=1)
    if spec.renormalize:
        w = w / (w.sum(axis=1, keepdims=True) + 1e-20)
    return w * spec.routed_scaling_factor


def assert_routing_matches(spec, w, x, r, *, exact_ids: bool = False, tf32: bool = False) -> None:
    """The one check of this file: ids valid and by the oracle's rule, then logits, scores, weights."""
    o = ref.route(spec, w, x)
    ids = r.topk_ids.cpu().numpy().astype(np.int64)
    T, E, k = x.shape[0], spec.num_experts, spec.top_k
    assert ids.shape == (T, k) and r.topk_weights.shape == (T, k)
    assert ((ids >= 0) & (ids < E)).all(), "expert id out of [0, E)"
    assert all(len(set(row)) == k for row in ids), "duplicate expert id in a row"
    dz, dz_row = _bounds(spec, w, x, o, tf32)
    bad = bad_id_rows(ids, o, None if exact_ids else _key_tol(o, dz_row, E))
    assert not bad, (
        f"ids differ in rows {bad[:8]}: got {ids[bad[:3]].tolist()}, want {o.topk_ids[bad[:3]].tolist()}"
    )
    checks = [
        ("logits", r.logits, o.logits, dz),
        ("scores", r.scores, o.scores, np.abs(o.scores) * (2 * dz_row + (E + 8) * U32)),
    ]
    want_w = _expected_weights(spec, o, ids)
    checks.append(
        ("topk_weights", r.topk_weights, want_w, np.abs(want_w) * (4 * dz_row + (2 * E + 2 * k + 16) * U32))
    )
    for name, got, want, bound in checks:
        c = compare(got.cpu(), want, bound, floor=1e-37)
        assert c.within_bound, f"{name}: {c.summary()}; worst {list(c.worst[:3])}"


# ----------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_router_matches_the_oracle(case: Case):
    w, x = _inputs(case)
    r = route(case.spec, w, x, block_t=case.block_t, allow_tf32=case.allow_tf32)
    assert_routing_matches(case.spec, w, x, r, tf32=case.allow_tf32)


def test_without_scores_the_ids_and_weights_are_unchanged():
    case = CASES[2]
    w, x = _inputs(case)
    full, lean = route(case.spec, w, x), route(case.spec, w, x, keep_scores=False)
    assert lean.logits is None and lean.scores is None
    assert torch.equal(full.topk_ids, lean.topk_ids) and torch.equal(full.topk_weights, lean.topk_weights)


@pytest.mark.parametrize("case", [c for c in CASES if c.spec.grouped], ids=lambda c: c.name)
def test_grouped_routing_never_picks_a_masked_group(case: Case):
    w, x = _inputs(case)
    ids = route(case.spec, w, x).topk_ids.cpu().numpy()
    groups = ids // (case.spec.num_experts // case.spec.n_group)
    assert max(len(set(row)) for row in groups) <= case.spec.topk_group


# -- the select inside the logits launch (kernels/router.py FUSED_SELECT: the GPUs' path)
FUSED_NAMES = (
    "softmax_renormalize", "dsv3_grouped_sigmoid_bias_scaling", "grouped_one_expert_groups", "gpt_oss_router_bias",
    "sigmoid_without_renormalize", "prime_E_257", "single_expert", "one_token", "grouped_untiled_E48",
    "strided_inputs", "bf16_grouped",
)  # fmt: skip
FUSED = [c for c in CASES if c.block_t is None and c.name in FUSED_NAMES]


@pytest.mark.parametrize("case", FUSED, ids=lambda c: c.name)
def test_the_fused_select_gives_the_separate_selects_results(case: Case, monkeypatch):
    """The last program of each token tile selects its rows (an atomic counter per tile) and leaves the
    counters zero for the next call. Bit for bit on the interpreter; on a GPU the fused select reduces on
    the logits launch's warps, so weights may differ there in the last bit (ids and logits may not)."""
    import moe_cts.kernels.router as router_mod

    w, x = _inputs(case)
    monkeypatch.setattr(router_mod, "FUSED_SELECT", False)
    want = route(case.spec, w, x)
    monkeypatch.setattr(router_mod, "FUSED_SELECT", True)
    got = route(case.spec, w, x)
    assert torch.equal(got.topk_ids, want.topk_ids) and torch.equal(got.logits, want.logits)
    if DEVICE == "cpu":
        assert torch.equal(got.topk_weights, want.topk_weights) and torch.equal(got.scores, want.scores)
    else:
        # two summation orders of the k renormalized weights: |dw| / w <= 2 k u (u = 2^-24), measured up to
        # 2.8e-7 at k = 6 and 8 on an H200
        torch.testing.assert_close(
            got.topk_weights, want.topk_weights, rtol=2 * case.spec.top_k * 2**-24, atol=0
        )
    assert not router_mod._counter_pool(str(x.device)).buf.any(), "the kernel must leave its counters zero"
    assert_routing_matches(case.spec, w, x, got)


def test_a_forced_token_tile_runs_the_separate_select(monkeypatch):
    import moe_cts.kernels.router as router_mod

    monkeypatch.setattr(router_mod, "FUSED_SELECT", True)
    monkeypatch.setattr(router_mod, "router_select_kernel", None)  # the separate launch would raise
    w, x = _inputs(CASES[0])
    route(CASES[0].spec, w, x)  # fused: no separate launch
    with pytest.raises(TypeError):
        route(CASES[0].spec, w, x, block_t=16)


def test_zero_tokens_give_empty_outputs_without_a_launch(monkeypatch):
    import moe_cts.kernels.router as router_mod

    spec = MoESpec(16, 8, 8, 2)
    w, x = _inputs(Case("t0", spec, 0))
    monkeypatch.setattr(router_mod, "router_logits_kernel", None)  # any launch would raise TypeError
    monkeypatch.setattr(router_mod, "router_select_kernel", None)
    r = route(spec, w, x)
    assert r.topk_ids.shape == (0, 2) and r.topk_weights.shape == (0, 2)
    assert r.logits.shape == (0, 8) and r.scores.shape == (0, 8)


# -- exact ties: constructed so every logit is exact in fp32 and float64 (multiples of 1/4, small ints)
def _tie_inputs(spec: MoESpec, T: int, pattern: list[int], seed: int = 3):
    """Router rows repeat `pattern` (expert e gets base row pattern[e]), x holds small integers: equal
    rows give bit-equal logits, scores and keys in the kernel and in the oracle."""
    gen = torch.Generator().manual_seed(seed)
    H = spec.hidden_size
    base = torch.randint(-2, 3, (max(pattern) + 1, H), generator=gen).double() / 4
    router = base[pattern]
    w = MoEWeights.random(spec, generator=gen, dtype=torch.float32).replace(router=router.float())
    if spec.correction_bias:
        w = w.replace(correction_bias=torch.zeros(spec.num_experts))
    x = torch.randint(-2, 3, (T, H), generator=gen).float()
    return w.map(lambda t: t.to(DEVICE)), x.to(DEVICE)


TIE_CASES = [
    ("softmax", MoESpec(16, 8, 8, 3, renormalize=True), [0, 1, 0, 2, 1, 3, 0, 2]),
    ("sigmoid_grouped", MoESpec(16, 8, 16, 4, scoring="sigmoid", correction_bias=True, n_group=4, topk_group=2,
                                renormalize=True), [0, 1, 2, 3] * 4),  # every group ties: lower groups win
]  # fmt: skip


def _has_tie(o: ref.Routing, k: int) -> bool:
    """Some row has two equal finite keys among its k + 1 best (what makes a wrong tie-break visible:
    in the chosen set, or in the order of the chosen)."""
    srt = -np.sort(-np.where(np.isnan(o.keys), -np.inf, o.keys), axis=1)[:, : k + 1]
    return bool(((srt[:, 1:] == srt[:, :-1]) & np.isfinite(srt[:, 1:])).any())


@pytest.mark.parametrize("name,spec,pattern", TIE_CASES, ids=[c[0] for c in TIE_CASES])
def test_exact_ties_go_to_the_lower_expert_id(name, spec, pattern):
    w, x = _tie_inputs(spec, 24, pattern)
    assert _has_tie(ref.route(spec, w, x), spec.top_k), "test data lost its ties"
    assert_routing_matches(spec, w, x, route(spec, w, x), exact_ids=True)


# -- NaN / inf logits: NaN ranks below -inf; ids stay distinct and in range; other rows unaffected
NAN_SPECS = [
    ("softmax", MoESpec(16, 8, 8, 3, renormalize=True)),
    ("sigmoid_grouped", MoESpec(16, 8, 16, 6, scoring="sigmoid", correction_bias=True, n_group=4, topk_group=2,
                                renormalize=True, routed_scaling_factor=2.5)),
]  # fmt: skip


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the NaN rows, on purpose
@pytest.mark.parametrize("name,spec", NAN_SPECS, ids=[c[0] for c in NAN_SPECS])
def test_nan_and_inf_rows_follow_the_nan_rule(name, spec):
    w, x = _inputs(Case(name, spec, 12))
    router = w.router.clone()
    router[2, 0] = 0.0  # inf * 0 = NaN: row 5 gets one NaN logit among +-inf ones
    w = w.replace(router=router)
    x = x.clone()
    x[1] = float("nan")  # all logits NaN
    x[3, 4] = float("inf")  # logits +-inf
    x[5, 0] = float("-inf")
    x[7, 1] = float("-inf")
    x[7, 2] = float("inf")  # +inf - inf inside each dot: NaN logits
    assert_routing_matches(spec, w, x, route(spec, w, x), exact_ids=True)


# -- deliberately broken routers: the comparison must catch each
def _higher_id_wins_ties(spec, w, x):
    """The real kernel on the experts in reverse order: ties then go to the higher original id."""
    flip = lambda t: None if t is None else t.flip(0)
    r = route(spec, w.replace(router=flip(w.router), correction_bias=flip(w.correction_bias)), x)
    E = spec.num_experts
    return replace(
        r, topk_ids=(E - 1 - r.topk_ids).to(torch.int32), logits=r.logits.flip(1), scores=r.scores.flip(1)
    )


def _zero_weights(spec, w, x):
    r = route(spec, w, x)
    return replace(r, topk_weights=torch.zeros_like(r.topk_weights))


def _scaling_applied_twice(spec, w, x):  # docs/bugs.md#bug-05-routed-scaling-factor
    r = route(spec, w, x)
    return replace(r, topk_weights=r.topk_weights * spec.routed_scaling_factor)


BROKEN = [("higher_id_wins_ties", _higher_id_wins_ties), ("zero_weights", _zero_weights),
          ("scaling_twice", _scaling_applied_twice)]  # fmt: skip


@pytest.mark.parametrize("name,broken", BROKEN, ids=[b[0] for b in BROKEN])
def test_the_comparison_catches_a_broken_router(name, broken):
    spec = TIE_CASES[1][1].replace(routed_scaling_factor=2.5)
    w, x = _tie_inputs(spec, 24, TIE_CASES[1][2])
    with pytest.raises(AssertionError):
        assert_routing_matches(spec, w, x, broken(spec, w, x), exact_ids=True)


# -- bad input raises before any launch, naming the field
def _bad_inputs():
    spec = MoESpec(16, 8, 8, 2, correction_bias=True, scoring="sigmoid")
    big = MoESpec(16, 1, 2048, 2)  # one (BLOCK_T, BLOCK_E) tile of registers holds every expert: E <= 1024
    w, x = _inputs(Case("bad", spec, 4))
    return [
        ("x.dtype", spec, w, x.to(torch.float64), SpecError),
        ("x.shape", spec, w, x[:, :15], SpecError),
        ("router.shape", spec, w.replace(router=w.router[:7]), x, SpecError),
        ("router.device", spec, w.map(lambda t: t.to("meta")), x, SpecError),
        ("correction_bias", spec, w.replace(correction_bias=None), x, SpecError),
        ("router_bias", spec, w.replace(router_bias=w.correction_bias), x, SpecError),
        (
            "num_experts",
            big,
            MoEWeights.random(big).map(lambda t: t.float().to(DEVICE)),
            x,
            NotSupportedError,
        ),
    ]


BAD = _bad_inputs()


@pytest.mark.parametrize("field,spec,w,x,error", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_rejected_before_launch(field, spec, w, x, error, monkeypatch):
    import moe_cts.kernels.router as router_mod

    monkeypatch.setattr(router_mod, "router_logits_kernel", None)
    monkeypatch.setattr(router_mod, "router_select_kernel", None)
    with pytest.raises(error, match=f"^{re.escape(field)}"):
        route(spec, w, x)


def test_bad_token_tile_is_rejected():
    spec = MoESpec(16, 8, 8, 2)
    w, x = _inputs(Case("bt", spec, 4))
    with pytest.raises(SpecError, match="block_t"):
        route(spec, w, x, block_t=24)


def test_eager_calls_take_the_counter_slots_in_turn_and_growth_keeps_the_old_buffer():
    """Two launches in flight on different streams must not share a slot (kernels/router.py _counters)."""
    import moe_cts.kernels.router as router_mod

    dev = torch.device("cpu")
    pool = router_mod._counter_pool("cpu")
    first = router_mod._counters(dev, 3)
    second = router_mod._counters(dev, 3)
    assert first.data_ptr() != second.data_ptr() and first.numel() >= 3
    ptrs = {router_mod._counters(dev, 3).data_ptr() for _ in range(router_mod.EAGER_SLOTS)}
    assert len(ptrs) == router_mod.EAGER_SLOTS  # every eager slot once, none of the graph slots
    old = pool.buf
    router_mod._counters(dev, old.shape[1] + 1)
    assert pool.buf.shape[1] > old.shape[1] and any(t is old for t in pool.retired)
