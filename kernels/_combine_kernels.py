"""Triton body of the combine (launcher: kernels/combine.py).

One program per (token, H block). The k contributions are summed in slot order j = 0..k-1 in fp32,
after the shared-expert row, with no atomics: two runs give bitwise-equal output. TOP_K is a constexpr so
the loop unrolls: the k slot and row loads are independent and issue together, where a runtime loop waited
for two memory round trips per j (4.9 us for one token at k = 8, H = 7168 on the H200).
"""

from __future__ import annotations

import triton
import triton.language as tl

from moe_cts.kernels._common import pdl_enter


@triton.jit
def combine_kernel(
    eo_ptr,  # (T, k, H) expert outputs (flat assignment rows), weighted already unless WEIGHTED
    w_ptr,  # (T, k) float32 router weights, or any pointer when not WEIGHTED
    slot_ptr,  # (T*k,) int32: kept iff 0 <= slot_ptr[t*k+j] < slot_end (a dropped row was never written)
    shared_ptr,  # (T, H) shared-expert output, or any pointer when not HAS_SHARED
    y_ptr,  # (T, H) output
    H,
    stride_eo_t,
    stride_eo_j,
    stride_eo_h,
    stride_w_t,
    stride_w_j,
    stride_sh_t,
    stride_sh_h,
    stride_y_t,
    stride_y_h,
    slot_end,
    HAS_SHARED: tl.constexpr,
    WEIGHTED: tl.constexpr,
    BLOCK_H: tl.constexpr,
    TOP_K: tl.constexpr,
    PDL: tl.constexpr,
):
    """y[t] = shared[t] + sum_j (kept ? w[t, j] * eo[t, j] : 0), in fp32, one cast at the end."""
    pdl_enter(PDL)
    t = tl.program_id(0).to(tl.int64)
    offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    h_ok = offs_h < H
    if HAS_SHARED:
        acc = tl.load(shared_ptr + t * stride_sh_t + offs_h * stride_sh_h, mask=h_ok, other=0.0).to(
            tl.float32
        )
    else:
        acc = tl.zeros((BLOCK_H,), dtype=tl.float32)
    for j in tl.static_range(TOP_K):
        slot = tl.load(slot_ptr + t * TOP_K + j)
        slot = tl.full((BLOCK_H,), 0, tl.int32) + slot  # as a vector: a scalar mask breaks the interpreter
        kept = (slot >= 0) & (slot < slot_end)
        # A dropped row is never read (masked load): it may hold stale data from another call
        # (docs/bugs.md#bug-09-stale-workspace-rows).
        v = tl.load(
            eo_ptr + t * stride_eo_t + j * stride_eo_j + offs_h * stride_eo_h, mask=h_ok & kept, other=0.0
        ).to(tl.float32)
        if WEIGHTED:
            v = v * tl.load(w_ptr + t * stride_w_t + j * stride_w_j)
        acc += tl.where(kept, v, 0.0)  # a NaN weight of a dropped assignment contributes exactly zero
    tl.store(y_ptr + t * stride_y_t + offs_h * stride_y_h, acc.to(y_ptr.dtype.element_ty), mask=h_ok)
