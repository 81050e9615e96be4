"""Triton bodies of the router (kernels/router.py chooses the tiles and the path):

    router_logits_kernel   grid (E tiles x H splits x T tiles,) flattened, E tile fastest
        part[s, t, e] = sum_{h in split s} x[t, h] * router[e, h]     fp32, (SPLIT_H, T, E)
        FUSE_SELECT (GPUs): the last program of each token tile runs _select_rows on the tile's rows
    router_select_kernel   grid (cdiv(T, SEL_BLOCK_T),): _select_rows in a launch of its own
                           (forced token tiles, the interpreter)
    _select_rows
        logits = ((part[0] + part[1]) + ...) + router_bias           fixed order s = 0, 1, ...
        scores, grouped / plain top-k, weights                        as the oracle's route

The GEMM is spread over many programs so that a decode-size call (T <= 16: one token tile) still reads the
router matrix with many SMs / CUs; every tile size and the split depend on (E, H, dtypes, backend) only, never
on T, so a token's logits are the same bits whatever batch it is in (kernels/router.py says why).

One select step owns SEL_BLOCK_T tokens and every expert (BLOCK_E lanes, E padded to a power of two), so
the softmax, the group scores and the k iterated argmaxes all run on one register tile without a second pass.

Selection runs on int32 "rank keys": the fp32 key's bits mapped to an int whose order is the float order,
with NaN placed below -inf and masked / taken / padding lanes below NaN. An int argmax with
tie_break_left then gives the oracle's rule exactly (descending key, NaN below every number, ties ->
lower expert id) and never returns a lane twice or a padding lane.
"""

from __future__ import annotations

import triton
import triton.language as tl

from moe_cts.kernels._common import INTERPRET, dot_acc

# Rank keys below every float's key (-inf maps to -2139095041): taken < masked group < NaN.
KEY_TAKEN = tl.constexpr(-2147483648)
KEY_MASKED = tl.constexpr(-2147483647)
KEY_NAN = tl.constexpr(-2147483646)


@triton.jit
def _rank_key(v):
    """Monotone fp32 -> int32 map (-0.0 and +0.0 equal, NaN just below -inf)."""
    v = tl.where(v == 0.0, 0.0, v)  # -0.0 would map below +0.0; the oracle treats them as equal
    b = v.to(tl.int32, bitcast=True)
    k = b ^ ((b >> 31) & 0x7FFFFFFF)
    return tl.where(v != v, KEY_NAN, k)


@triton.jit(do_not_specialize=["T"])
def router_logits_kernel(
    x_ptr,  # (T, H) fp32 | fp16 | bf16, any strides
    w_ptr,  # (E, H) router weight, any strides
    part_ptr,  # (SPLIT_H, T, E) fp32 out, contiguous: partial logits of each H split
    T,
    E,
    H,
    h_chunk,  # H columns per split, a multiple of BLOCK_H (the last split may be shorter)
    stride_x_t,
    stride_x_h,
    stride_w_e,
    stride_w_h,
    # FUSE_SELECT: the select's arguments (router_select_kernel's), and one int32 counter per token tile
    counter_ptr,  # (cdiv(T, BLOCK_T),) int32, zero on entry; left zero on exit
    rbias_ptr, cbias_ptr, ids_ptr, topw_ptr, logits_ptr, scores_ptr,
    K, stride_rbias, stride_cbias, group_size, n_group, topk_group, scaling,
    SIGMOID: tl.constexpr, HAS_RBIAS: tl.constexpr, HAS_CBIAS: tl.constexpr, GROUPED: tl.constexpr,
    GROUP_TOP2: tl.constexpr, RENORMALIZE: tl.constexpr, STORE_SCORES: tl.constexpr, N_SPLIT: tl.constexpr,
    GROUP_TILED: tl.constexpr, N_GROUP: tl.constexpr, SEL_BLOCK_T: tl.constexpr, SEL_BLOCK_E: tl.constexpr,
    FUSE_SELECT: tl.constexpr,
    UPCAST: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_H: tl.constexpr,
):  # fmt: skip
    """One (BLOCK_T, BLOCK_E) tile of one split's partial logits, accumulated in fp32 over the split's
    columns in BLOCK_H steps; with FUSE_SELECT the last program of each token tile also runs the select:

        pid -> (e tile, split s, t tile), e fastest: programs running together share the x chunk (L2)
        acc = 0; for h0 in [s * h_chunk, min(H, (s + 1) * h_chunk)) step BLOCK_H: acc = dot(x, w.T, acc)
        part[s, t, e] = acc                                  (rows t < T, lanes e < E)
        FUSE_SELECT: if atomic_add(counter[t tile], 1) == E tiles * splits - 1:   (acq_rel: the last one
                         counter[t tile] = 0                                       sees every partial)
                         select rows [t0, min(T, t0 + BLOCK_T)) SEL_BLOCK_T at a time (_select_rows)

    One launch instead of two: at decode the select's own launch and its wait on the GEMM were a tenth of
    a DeepSeek-V3 / gpt-oss-120b forward (H200, graph replays, session 8). The select reads the partials in
    split order whichever program runs it, so the bits do not depend on which program finished last.
    """
    n_e = tl.cdiv(E, BLOCK_E)
    n_s = tl.cdiv(H, h_chunk)
    pid = tl.program_id(0)
    pid_e = pid % n_e
    pid_s = (pid // n_e) % n_s
    pid_t = pid // (n_e * n_s)
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_h = tl.arange(0, BLOCK_H)
    # 64-bit row offsets: T * stride_x_t passes 2^31 at T = 50k, H = 7168 (docs/bugs.md#bug-01-int32-address-overflow).
    x_rows = x_ptr + offs_t.to(tl.int64)[:, None] * stride_x_t
    w_rows = w_ptr + offs_e.to(tl.int64)[:, None] * stride_w_e
    h_begin = pid_s * h_chunk
    h_end = tl.minimum(h_begin + h_chunk, H)
    acc = tl.zeros((BLOCK_T, BLOCK_E), dtype=tl.float32)
    for h0 in range(h_begin, h_end, BLOCK_H):
        hh = h0 + offs_h
        a = tl.load(
            x_rows + hh[None, :] * stride_x_h, mask=(offs_t[:, None] < T) & (hh[None, :] < H), other=0.0
        )
        b = tl.load(
            w_rows + hh[None, :] * stride_w_h, mask=(offs_e[:, None] < E) & (hh[None, :] < H), other=0.0
        )
        if UPCAST:  # x and router of different dtypes: both to fp32 (exact), dot pinned to ieee
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        if (
            INTERPRET
        ):  # the interpreter computes bf16 on raw bit patterns (docs/bugs.md#facts-triton-interpreter)
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        # _common.dot_acc: each row's bits depend on that row only, on the interpreter too (its tl.dot is
        # numpy's matmul, whose rows depend on their tile position); tests/kernels/test_router_split.py
        acc = dot_acc(a, tl.trans(b), acc, INPUT_PRECISION)
    out = (pid_s * T + offs_t).to(tl.int64)[:, None] * E + offs_e[None, :]
    tl.store(part_ptr + out, acc, mask=(offs_t < T)[:, None] & (offs_e < E)[None, :])
    if FUSE_SELECT:
        # Every thread's stores come before the release of the counter (a CTA barrier, then the atomic's
        # acq_rel fence, which is cumulative over what the barrier ordered); the last program's acquire
        # orders its loads (through L2: cache ".cg") after every other program's release.
        tl.debug_barrier()
        done = tl.atomic_add(counter_ptr + pid_t, 1, sem="acq_rel")
        if done == n_e * n_s - 1:
            tl.store(counter_ptr + pid_t, 0)
            # only the row groups that hold tokens: at T = 1 one of the tile's BLOCK_T / SEL_BLOCK_T
            rows = tl.minimum(T - pid_t * BLOCK_T, BLOCK_T)
            for sub in range(0, rows, SEL_BLOCK_T):
                _select_rows(
                    part_ptr, rbias_ptr, cbias_ptr, ids_ptr, topw_ptr, logits_ptr, scores_ptr,
                    pid_t * BLOCK_T + sub + tl.arange(0, SEL_BLOCK_T),
                    T, E, K, stride_rbias, stride_cbias, group_size, n_group, topk_group, scaling,
                    SIGMOID, HAS_RBIAS, HAS_CBIAS, GROUPED, GROUP_TOP2, RENORMALIZE, STORE_SCORES, N_SPLIT,
                    GROUP_TILED, N_GROUP, SEL_BLOCK_T, SEL_BLOCK_E, ".cg",
                )  # fmt: skip


@triton.jit
def _softmax(logits, valid):
    """Row softmax over the valid lanes; a row holding NaN or +inf, or only -inf, is NaN (as the oracle)."""
    is_nan = (logits != logits) & valid
    z = tl.where(valid & ~is_nan, logits, float("-inf"))
    m = tl.max(z, axis=1)
    bad = (tl.max(is_nan.to(tl.int32), axis=1) > 0) | (m == float("inf")) | (m == float("-inf"))
    e = tl.where(valid & ~bad[:, None], tl.exp(z - tl.where(bad, 0.0, m)[:, None]), 0.0)
    s = e / tl.where(bad, 1.0, tl.sum(e, axis=1))[:, None]  # bad rows: no 0/0, NaN set below
    return tl.where(bad[:, None], float("nan"), s)


@triton.jit
def _group_keep(keys, valid, offs_e, group_size, n_group, topk_group, GROUP_TOP2: tl.constexpr):
    """(BLOCK_T, BLOCK_E) bool: experts of the topk_group best groups (NaN keys count as -inf;
    group ties -> lower group index)."""
    filled = tl.where(valid & (keys == keys), keys, float("-inf"))
    group = offs_e // group_size
    gscore = tl.full(keys.shape, float("-inf"), tl.float32)
    for g in range(n_group):
        in_g = (group == g)[None, :] & valid
        vals = tl.where(in_g, filled, float("-inf"))
        m1 = tl.max(vals, axis=1)
        score = m1
        if GROUP_TOP2:
            # Remove exactly one lane holding the maximum, then take the maximum again.
            a1 = tl.argmax(vals, axis=1, tie_break_left=True)
            m2 = tl.max(tl.where(offs_e[None, :] == a1[:, None], float("-inf"), vals), axis=1)
            score = m1 + m2
        score = tl.where(score == score, score, float("-inf"))  # (+inf) + (-inf): the oracle's -inf
        gscore = tl.where(in_g, score[:, None], gscore)
    gkey = tl.where(valid, _rank_key(gscore), KEY_TAKEN)
    keep = tl.zeros(keys.shape, dtype=tl.int1)
    for _ in range(topk_group):
        best = tl.argmax(gkey, axis=1, tie_break_left=True)  # lowest lane = lowest group on ties
        chosen = group[None, :] == (best // group_size)[:, None]
        keep = keep | chosen
        gkey = tl.where(chosen, KEY_TAKEN, gkey)
    return keep


@triton.jit
def _group_keep_tiled(
    keys, valid, topk_group, BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr, N_GROUP: tl.constexpr,
    GROUP_TOP2: tl.constexpr,
):  # fmt: skip
    """_group_keep for E == BLOCK_E (every lane real) and a power-of-two group count: the lanes viewed as
    (BLOCK_T, N_GROUP, BLOCK_E / N_GROUP), so the group scores take 2-3 reductions instead of 2-3 per group
    (DeepSeek-V3: 3 instead of 24, each a dependent shuffle chain at decode). Same scores, same keys, same
    tie rule (lowest group, the lowest lane of the original), so the same bits."""
    GS: tl.constexpr = BLOCK_E // N_GROUP
    filled = tl.where(valid & (keys == keys), keys, float("-inf"))
    v3 = tl.reshape(filled, (BLOCK_T, N_GROUP, GS))
    m1 = tl.max(v3, axis=2)
    score = m1
    if GROUP_TOP2:  # remove exactly one lane holding the maximum, then take the maximum again
        a1 = tl.argmax(v3, axis=2, tie_break_left=True)
        lane = tl.arange(0, GS)
        m2 = tl.max(tl.where(lane[None, None, :] == a1[:, :, None], float("-inf"), v3), axis=2)
        score = m1 + m2
    score = tl.where(score == score, score, float("-inf"))  # (+inf) + (-inf): the oracle's -inf
    gkey = _rank_key(score)
    g = tl.arange(0, N_GROUP)
    keep_g = tl.zeros((BLOCK_T, N_GROUP), dtype=tl.int1)
    for _ in range(topk_group):
        best = tl.argmax(gkey, axis=1, tie_break_left=True)
        chosen = g[None, :] == best[:, None]
        keep_g = keep_g | chosen
        gkey = tl.where(chosen, KEY_TAKEN, gkey)
    keep3 = tl.broadcast_to(keep_g[:, :, None], (BLOCK_T, N_GROUP, GS))
    return tl.reshape(keep3, (BLOCK_T, BLOCK_E))


@triton.jit
def _select_rows(
    part_ptr, rbias_ptr, cbias_ptr, ids_ptr, topw_ptr, logits_ptr, scores_ptr, offs_t,
    T, E, K, stride_rbias, stride_cbias, group_size, n_group, topk_group, scaling,
    SIGMOID: tl.constexpr, HAS_RBIAS: tl.constexpr, HAS_CBIAS: tl.constexpr, GROUPED: tl.constexpr,
    GROUP_TOP2: tl.constexpr, RENORMALIZE: tl.constexpr, STORE_SCORES: tl.constexpr, N_SPLIT: tl.constexpr,
    GROUP_TILED: tl.constexpr, N_GROUP: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr,
    CACHE: tl.constexpr,
):  # fmt: skip
    """Rows offs_t (BLOCK_T,): sum the partial logits in split order, then score, select and weight (module
    docstring). CACHE: the partials' load cache modifier, ".cg" (L2, not the SM's L1) when other programs of
    the same launch wrote them (router_logits_kernel's FUSE_SELECT)."""
    offs_e = tl.arange(0, BLOCK_E)
    row_ok = offs_t < T
    valid = (offs_e < E)[None, :] & (offs_t >= 0)[:, None]  # (BLOCK_T, BLOCK_E): real expert lanes
    te = offs_t.to(tl.int64)[:, None] * E + offs_e[None, :]
    m = valid & row_ok[:, None]
    # Always s = 0, 1, ..., n_split - 1 in this order: fp32 addition is not associative, and a fixed order is
    # what keeps a token's logits independent of T and of how the programs were scheduled. The loop is
    # unrolled (N_SPLIT constexpr) so the N_SPLIT loads need not wait for each other's adds: a runtime loop
    # made 14 dependent global round trips of DeepSeek-V3's decode select (most of its 24 us on an H200).
    logits = tl.load(part_ptr + te, mask=m, other=0.0, cache_modifier=CACHE)
    for s in tl.static_range(1, N_SPLIT):
        logits += tl.load(part_ptr + (s * T).to(tl.int64) * E + te, mask=m, other=0.0, cache_modifier=CACHE)
    if HAS_RBIAS:
        rb = tl.load(rbias_ptr + offs_e * stride_rbias, mask=offs_e < E, other=0.0).to(tl.float32)
        logits = logits + rb[None, :]
    if SIGMOID:
        scores = 1.0 / (1.0 + tl.exp(-logits))
    else:
        scores = _softmax(logits, valid)
    keys = scores
    if HAS_CBIAS:
        cb = tl.load(cbias_ptr + offs_e * stride_cbias, mask=offs_e < E, other=0.0).to(tl.float32)
        keys = keys + cb[None, :]

    rank_key = tl.where(valid, _rank_key(keys), KEY_TAKEN)
    if GROUPED:
        if GROUP_TILED:
            keep = _group_keep_tiled(keys, valid, topk_group, BLOCK_T, BLOCK_E, N_GROUP, GROUP_TOP2)
        else:
            keep = _group_keep(keys, valid, offs_e, group_size, n_group, topk_group, GROUP_TOP2)
        rank_key = tl.where(keep | ~valid, rank_key, KEY_MASKED)

    # Iterated argmax: slot j takes the best remaining lane; rank[t, e] = j, or -1 if not chosen.
    rank = tl.full((BLOCK_T, BLOCK_E), -1, tl.int32)
    for j in range(K):
        best = tl.argmax(rank_key, axis=1, tie_break_left=True)
        hit = offs_e[None, :] == best[:, None]
        rank = tl.where(hit, j, rank)
        rank_key = tl.where(hit, KEY_TAKEN, rank_key)

    chosen = rank >= 0
    w = tl.where(chosen, scores, 0.0)  # unbiased scores; NaN stays NaN as in the oracle
    if RENORMALIZE:
        w = w / (tl.sum(w, axis=1) + 1e-20)[:, None]
    w = w * scaling

    # Scatter each chosen lane to its slot: one store per output instead of k.
    out = offs_t.to(tl.int64)[:, None] * K + rank
    store_mask = chosen & row_ok[:, None]
    tl.store(ids_ptr + out, (offs_e[None, :] + rank * 0).to(tl.int32), mask=store_mask)
    tl.store(topw_ptr + out, w, mask=store_mask)
    if STORE_SCORES:
        tl.store(logits_ptr + te, logits, mask=m)
        tl.store(scores_ptr + te, scores, mask=m)


@triton.jit(do_not_specialize=["T"])
def router_select_kernel(
    part_ptr,  # (n_split, T, E) fp32 partial logits (router_logits_kernel)
    rbias_ptr,  # (E,) router bias (HAS_RBIAS)
    cbias_ptr,  # (E,) correction bias, selection only (HAS_CBIAS)
    ids_ptr,  # (T, k) int32 out, contiguous
    topw_ptr,  # (T, k) fp32 out, contiguous
    logits_ptr,  # (T, E) fp32 out, contiguous (STORE_SCORES)
    scores_ptr,  # (T, E) fp32 out, contiguous (STORE_SCORES)
    T,
    E,
    K,
    stride_rbias,
    stride_cbias,
    group_size,  # E // n_group
    n_group,
    topk_group,
    scaling,  # routed_scaling_factor
    SIGMOID: tl.constexpr,
    HAS_RBIAS: tl.constexpr,
    HAS_CBIAS: tl.constexpr,
    GROUPED: tl.constexpr,
    GROUP_TOP2: tl.constexpr,
    RENORMALIZE: tl.constexpr,
    STORE_SCORES: tl.constexpr,
    N_SPLIT: tl.constexpr,  # SPLIT_H
    GROUP_TILED: tl.constexpr,  # E == BLOCK_E and a power-of-two group count: _group_keep_tiled
    N_GROUP: tl.constexpr,  # n_group when GROUP_TILED (else 1)
    BLOCK_T: tl.constexpr,
    BLOCK_E: tl.constexpr,
):
    """The select as its own launch, one program per BLOCK_T token rows (forced token tiles, the interpreter)."""
    offs_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    _select_rows(
        part_ptr, rbias_ptr, cbias_ptr, ids_ptr, topw_ptr, logits_ptr, scores_ptr, offs_t,
        T, E, K, stride_rbias, stride_cbias, group_size, n_group, topk_group, scaling,
        SIGMOID, HAS_RBIAS, HAS_CBIAS, GROUPED, GROUP_TOP2, RENORMALIZE, STORE_SCORES, N_SPLIT,
        GROUP_TILED, N_GROUP, BLOCK_T, BLOCK_E, "",
    )  # fmt: skip
