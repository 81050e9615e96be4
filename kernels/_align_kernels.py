"""Triton bodies of the alignment stage: a blocked counting sort of the T*k assignments by expert.

Four launches, no atomics, no host synchronization; every result is a pure function of topk_ids:

    1. chunk_hist     grid (C,)  hist[c, e] = assignments of chunk c (BLOCK_N flat ids) routed to e
    2. chunk_scan     grid (1,)  kept counts, padded expert runs (pend), and per (chunk, expert) the
                                 slot where the chunk's first assignment of e goes (base)
    3. chunk_scatter  grid (C,)  stable in-chunk rank (running counts + all-pairs within SUB ids);
                                 sorted_ids[slot] = flat id, inverse[flat id] = slot or -1
    4. pad_fill       grid (P / BLOCK_S,)  the expert of every slot by binary search on pend;
                                 pad slots = sentinel, expert_of_block per tile, -1 past num_padded

Scatter and pad_fill write disjoint slots, so together they write each of the P slots exactly once.
Nothing holds all T*k ids at once: 400k assignments are 98 chunks of 4096.
"""

from __future__ import annotations

import triton
import triton.language as tl

from moe_cts.kernels._common import pdl_enter


@triton.jit
def _load_ids(ids_ptr, flat, N, K, stride_ids_t, stride_ids_k):
    """Expert id of flat assignments t*K+j of a strided (T, K) tensor; -1 past N."""
    t = (flat // K).to(tl.int64)
    j = flat % K
    return tl.load(ids_ptr + t * stride_ids_t + j * stride_ids_k, mask=flat < N, other=-1).to(tl.int32)


@triton.jit
def _kept(e, E, local_ptr, HAS_LOCAL: tl.constexpr):
    """Assignment is kept: a valid id (out-of-range ids are dropped, never written) on a local expert."""
    ok = (e >= 0) & (e < E)
    if HAS_LOCAL:
        ok = ok & (tl.load(local_ptr + e, mask=ok, other=0) != 0)
    return ok


@triton.jit
def _expert_lanes(local_ptr, E, HAS_LOCAL: tl.constexpr, BLOCK_E: tl.constexpr):
    """Per-expert lanes of a one-program kernel: offs_e (BLOCK_E,), in_e = offs_e < E, and local = the
    lane is a local expert (every real expert when not HAS_LOCAL); padding lanes are never local."""
    offs_e = tl.arange(0, BLOCK_E)
    in_e = offs_e < E
    if HAS_LOCAL:
        local = tl.load(local_ptr + offs_e, mask=in_e, other=0) != 0
    else:
        local = in_e
    return offs_e, in_e, local


@triton.jit(do_not_specialize=["N"])
def chunk_hist_kernel(
    ids_ptr,  # (T, K) int32 | int64 expert ids, any strides
    hist_ptr,  # (C, E) int32 out
    N,  # T * K
    K,
    E,
    stride_ids_t,
    stride_ids_k,
    BLOCK_N: tl.constexpr,
    BLOCK_E: tl.constexpr,
):
    c = tl.program_id(0)
    flat = c * BLOCK_N + tl.arange(0, BLOCK_N)
    e = _load_ids(ids_ptr, flat, N, K, stride_ids_t, stride_ids_k)
    # All routed assignments are counted (permute reports them); the local mask is applied in the scan.
    h = tl.histogram(e, BLOCK_E, mask=(e >= 0) & (e < E))
    offs_e = tl.arange(0, BLOCK_E)
    tl.store(hist_ptr + c * E + offs_e, h, mask=offs_e < E)


@triton.jit
def chunk_scan_kernel(
    hist_ptr,  # (C, E) int32 per-chunk counts
    local_ptr,  # (E,) int8, nonzero = local expert (HAS_LOCAL)
    base_ptr,  # (C, E) int32 out: slot of chunk c's first kept assignment of expert e
    routed_ptr,  # (E,) int32 out: all assignments of e
    counts_ptr,  # (E,) int32 out: kept assignments of e
    pend_ptr,  # (E,) int32 out: end slot of e's padded run (inclusive cumsum of padded counts)
    num_padded_ptr,  # (1,) int32 out
    C,
    E,
    block_m,
    HAS_LOCAL: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Both passes read BLOCK_C chunks' rows per step, a (BLOCK_C, BLOCK_E) tile: ceil(C / BLOCK_C) dependent
    steps instead of C (the per-step latency, not the bytes, is this kernel's cost)."""
    offs_e, in_e, local = _expert_lanes(local_ptr, E, HAS_LOCAL, BLOCK_E)
    offs_c = tl.arange(0, BLOCK_C)
    total = tl.zeros((BLOCK_E,), tl.int32)
    for c0 in range(0, C, BLOCK_C):
        rows = c0 + offs_c
        ok = (rows < C)[:, None] & in_e[None, :]
        h = tl.load(hist_ptr + rows[:, None] * E + offs_e[None, :], mask=ok, other=0)
        total += tl.sum(h, axis=0)
    kept = tl.where(local, total, 0)
    padded = (kept + block_m - 1) // block_m * block_m
    pend = tl.cumsum(padded, axis=0)
    tl.store(routed_ptr + offs_e, total, mask=in_e)
    tl.store(counts_ptr + offs_e, kept, mask=in_e)
    tl.store(pend_ptr + offs_e, pend, mask=in_e)
    tl.store(num_padded_ptr, tl.sum(padded, axis=0))

    # Second pass: chunk c's run of expert e starts after the earlier chunks' assignments of e: an exclusive
    # cumsum down each tile's chunk axis on top of the running start.
    running = pend - padded  # start slot of each expert's run
    for c0 in range(0, C, BLOCK_C):
        rows = c0 + offs_c
        ok = (rows < C)[:, None] & in_e[None, :]
        h = tl.load(hist_ptr + rows[:, None] * E + offs_e[None, :], mask=ok, other=0)
        h = tl.where(local[None, :], h, 0)
        inclusive = tl.cumsum(h, axis=0)
        tl.store(base_ptr + rows[:, None] * E + offs_e[None, :], running[None, :] + inclusive - h, mask=ok)
        running += tl.sum(h, axis=0)


@triton.jit(do_not_specialize=["N"])
def chunk_scatter_kernel(
    ids_ptr,  # (T, K) expert ids, any strides
    local_ptr,  # (E,) int8 local mask (HAS_LOCAL)
    base_ptr,  # (C, E) int32 from chunk_scan
    sorted_ids_ptr,  # (P,) int32 out: kept slots only
    inverse_ptr,  # (N,) int32 out: every flat id
    N,
    K,
    E,
    stride_ids_t,
    stride_ids_k,
    HAS_LOCAL: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_E: tl.constexpr,
    SUB: tl.constexpr,
):
    """Stable in-chunk rank, SUB ids at a time: earlier sub-blocks through per-expert running counts
    (registers), earlier ids of this sub-block by an all-pairs (SUB, SUB) comparison. tl.sort would
    do it too, but the interpreter runs its bitonic network element by element (14 s per 1024 ids)."""
    c = tl.program_id(0)
    i = tl.arange(0, SUB)
    earlier = i[None, :] < i[:, None]  # [row, col]: col comes before row
    seen = tl.zeros((BLOCK_E,), tl.int32)  # kept ids of each expert in earlier sub-blocks of the chunk
    for s0 in range(0, BLOCK_N, SUB):
        flat = c * BLOCK_N + s0 + i
        e = _load_ids(ids_ptr, flat, N, K, stride_ids_t, stride_ids_k)
        kept = _kept(e, E, local_ptr, HAS_LOCAL) & (flat < N)
        e = tl.where(kept, e, 0)  # in-range index for the gathers below
        same = (e[:, None] == e[None, :]) & kept[None, :] & earlier
        rank = tl.sum(same.to(tl.int32), axis=1) + tl.gather(seen, e, 0)
        slot = tl.load(base_ptr + c * E + e, mask=kept, other=0) + rank
        tl.store(sorted_ids_ptr + slot, flat, mask=kept)
        tl.store(inverse_ptr + flat, tl.where(kept, slot, -1), mask=flat < N)
        seen += tl.histogram(e, BLOCK_E, mask=kept)


@triton.jit(do_not_specialize=["N"])
def pad_fill_kernel(
    pend_ptr,  # (E,) int32 end slot of each expert's padded run
    counts_ptr,  # (E,) int32 kept assignments per expert
    sorted_ids_ptr,  # (P,) int32 out: pad slots only
    expert_of_block_ptr,  # (P // block_m,) int32 out
    N,  # T * K, the pad sentinel
    E,
    P,
    block_m,
    search_steps,  # bit length of E: binary-search iterations
    BLOCK_S: tl.constexpr,
):
    s = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)
    in_p = s < P
    # e = number of experts whose padded run ends at or before s: E (unused) when s >= num_padded.
    lo = tl.zeros((BLOCK_S,), tl.int32)
    hi = tl.full((BLOCK_S,), E, tl.int32)
    for _ in range(search_steps):
        active = lo < hi
        mid = (lo + hi) // 2
        v = tl.load(pend_ptr + mid, mask=active, other=0)
        right = active & (v <= s)
        lo = tl.where(right, mid + 1, lo)
        hi = tl.where(active & ~right, mid, hi)
    e = lo
    used = e < E
    end = tl.load(pend_ptr + e, mask=used, other=0)
    cnt = tl.load(counts_ptr + e, mask=used, other=0)
    padded = (cnt + block_m - 1) // block_m * block_m
    pos = s - (end - padded)  # position inside the expert's run
    is_pad = ~used | (pos >= cnt)
    tl.store(sorted_ids_ptr + s, tl.full((BLOCK_S,), 0, tl.int32) + N, mask=in_p & is_pad)
    first = in_p & (s % block_m == 0)
    tl.store(expert_of_block_ptr + s // block_m, tl.where(used, e, -1), mask=first)


@triton.jit(do_not_specialize=["N"])
def align_one_chunk_kernel(
    ids_ptr,  # (T, K) expert ids, any strides; T*K ids in one chunk (the launcher's choice)
    local_ptr,  # (E,) int8 local mask (HAS_LOCAL)
    routed_ptr,  # (E,) int32 out
    counts_ptr,  # (E,) int32 out
    num_padded_ptr,  # (1,) int32 out
    sorted_ids_ptr,  # (P,) int32 out
    inverse_ptr,  # (N,) int32 out
    expert_of_block_ptr,  # (P // block_m,) int32 out
    N,
    K,
    E,
    P,
    block_m,
    stride_ids_t,
    stride_ids_k,
    search_steps,
    HAS_LOCAL: tl.constexpr,
    BLOCK_E: tl.constexpr,
    SUB: tl.constexpr,
    BLOCK_S: tl.constexpr,
    PDL: tl.constexpr,
):
    """The four kernels above in one program when all ids fit one chunk (decode-sized T): one launch
    instead of four, which is most of the alignment's cost there. Per-expert values stay in registers
    and are read back with tl.gather, so no write-then-read of global memory needs a barrier."""
    pdl_enter(PDL)
    offs_e, in_e, local = _expert_lanes(local_ptr, E, HAS_LOCAL, BLOCK_E)
    i = tl.arange(0, SUB)
    routed = tl.zeros((BLOCK_E,), tl.int32)
    for s0 in range(0, N, SUB):  # runtime bound: T = 1 runs one step, not BLOCK_N / SUB
        e = _load_ids(ids_ptr, s0 + i, N, K, stride_ids_t, stride_ids_k)
        routed += tl.histogram(e, BLOCK_E, mask=(e >= 0) & (e < E))
    kept_counts = tl.where(local, routed, 0)
    padded = (kept_counts + block_m - 1) // block_m * block_m
    pend = tl.cumsum(padded, axis=0)
    start = pend - padded
    tl.store(routed_ptr + offs_e, routed, mask=in_e)
    tl.store(counts_ptr + offs_e, kept_counts, mask=in_e)
    tl.store(num_padded_ptr, tl.sum(padded, axis=0))

    # Stable ranks, SUB ids at a time (as chunk_scatter_kernel, with base = start[e]).
    earlier = i[None, :] < i[:, None]
    seen = tl.zeros((BLOCK_E,), tl.int32)
    for s0 in range(0, N, SUB):
        f = s0 + i
        e = _load_ids(ids_ptr, f, N, K, stride_ids_t, stride_ids_k)
        kept = _kept(e, E, local_ptr, HAS_LOCAL) & (f < N)
        e = tl.where(kept, e, 0)
        same = (e[:, None] == e[None, :]) & kept[None, :] & earlier
        slot = tl.gather(start, e, 0) + tl.gather(seen, e, 0) + tl.sum(same.to(tl.int32), axis=1)
        tl.store(sorted_ids_ptr + slot, f, mask=kept)
        tl.store(inverse_ptr + f, tl.where(kept, slot, -1), mask=f < N)
        seen += tl.histogram(e, BLOCK_E, mask=kept)

    # Pad slots and tile experts (as pad_fill_kernel, searching pend in registers).
    for s0 in range(0, P, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        lo = tl.zeros((BLOCK_S,), tl.int32)
        hi = tl.full((BLOCK_S,), E, tl.int32)
        for _ in range(search_steps):
            active = lo < hi
            mid = (lo + hi) // 2
            right = active & (tl.gather(pend, tl.where(active, mid, 0), 0) <= s)
            lo = tl.where(right, mid + 1, lo)
            hi = tl.where(active & ~right, mid, hi)
        used = lo < E
        e = tl.where(used, lo, 0)
        pos = s - tl.gather(start, e, 0)
        is_pad = ~used | (pos >= tl.gather(kept_counts, e, 0))
        tl.store(sorted_ids_ptr + s, tl.full((BLOCK_S,), 0, tl.int32) + N, mask=(s < P) & is_pad)
        first = (s < P) & (s % block_m == 0)
        tl.store(expert_of_block_ptr + s // block_m, tl.where(used, lo, -1), mask=first)
