"""Triton bodies of the fp8 w8a8 grouped GEMMs (launchers: kernels/fp8_gemm.py).

Same slot walk as _grouped_gemm_kernels.py (aligned expert tiles, pad sentinel, 64-bit row offsets). Operands:

    A   quantized activations (R, K): fp8 (GPU) or their fp32 values (interpreter), scales s_a (R, G) fp32
    W   weight codes (E, N, K): fp8 (GPU) or uint8 decoded in-kernel (interpreter), scales s_w (E, Nb, Kb) fp32

    BLOCKWISE (fp8_block): BLOCK_K divides the group width GROUP_K; per K tile kk, g = kk BLOCK_K // GROUP_K
        acc += tl.dot(a_q, w_q) * s_a[row, g] * s_w[e, n // BN_W, g]      (fp32 partials: DeepSeek's promotion)
    otherwise (per tensor / per token): acc += tl.dot(a_q, w_q) per K tile; acc *= s_a[row, 0] * s_w[e, n // BN_W, 0]

Every K tile's dot starts from zero and is added to the fp32 accumulator ("promotion" every BLOCK_K <= 128
products, DeepSeek-V3's interval): Hopper's fp8 MMA adds its products into the accumulator with about 13
significant bits. Measured on an H200 (triton 3.6, ci/gpu/fp8_diag.py, one 64 x 64 tile of positive
e4m3fn values): chained through the MMA (acc = tl.dot(a, w, acc)) the error reaches 1.8% of sum|a||b| at
K = 1024 and 11% at K = 7168; promoted per 128-tile it stays under 0.14% at every K.
    epilogue: dequant (above) -> + bias (fp32) -> [GEMM1: activation, optional fused requantization]
              -> [GEMM2: * router weight (fp32)] -> cast

On the GPU the dot is fp8 x fp8 with fp32 accumulation (weights streamed as fp8, B tile K-contiguous as fp8
wgmma / MFMA want it); under the interpreter both operands are fp32 and products are exact, so the sums
differ only by accumulation order.

Scale prefetch: the software pipeliner streams the a and w tiles through shared memory (cp.async, num_stages
deep) but issues the scale gathers in the iteration that uses them, so each K step waited for a global load
after its dot (Triton 3.6 TTGIR: plain tt.load in the loop). At decode sizes, where a launch has a few
programs per SM, that latency was the K step's time: the shared expert's GEMM1 at T = 1 (64 programs) moved
29 MB in 24.8 us on the H200, 1.2 TB/s. The loop loads group g + 1's scales before group g's dot (the last
group's are read again at the end), so the gather's latency hides behind the MMA. Same values, same bits.

Operand swap (W_DESC == W_BOX_A, GemmTile.swap_ab): the weight box read through the descriptor, (rows, BLOCK_K)
K-contiguous, is the dot's first operand and the activation tile's transpose its second, acc.T = W @ a.T, with
the same per-element scaling (s_w * s_a is s_a * s_w in fp32). At decode sizes BLOCK_M is 16, below wgmma's
64 rows: the unswapped dot is mma.sync, which has no fp8 on sm90, so Triton widens both tiles to fp16 (F2FP per
element) first. Swapped, the weights fill wgmma's 64 rows and the tokens its N = 16: fp8 wgmma straight from
shared memory (AOT, sm90, a 64-row tile per K step: 4 QGMMA, 118 instructions against 16 HMMA and 64 F2FP, 150).
GEMM1 takes it with scalar weight scales (SW_SCALAR), GEMM2 with either.

GEMM1's fused requantization (QUANT_OUT, fp8_block with BLOCK_N a multiple of the group width): the tile's
activation (BLOCK_M, BLOCK_N) is viewed as (BLOCK_M, BLOCK_N / G2, G2), amax per group, _act_scale,
_quantize_values (the rounding by _round_fp8, or by the store's cast under FP8_HW_ROUND), and the codes and scales
are stored for GEMM2. Columns past I are zeroed before the amax.
"""

from __future__ import annotations

import triton
import triton.language as tl

from moe_cts.kernels._common import INTERPRET, pdl_enter, trans_tile
from moe_cts.kernels._fp8_quant_kernels import _act_scale, _decode_fp8, _quantize_values, _store_round
from moe_cts.kernels._grouped_gemm_kernels import (
    _activate,
    _gate_up_bias,
    _live_expert,
    _pad_tail,
    _split_gate_up,
    _tile_coords,
    _tile_expert,
    _tile_rows,
    _w13_box,
    _w13_rows,
)

#: W_DESC: how the weight tiles are read. Pointers; descriptor boxes transposed into the dot's second
#: operand; descriptor boxes as its first operand (the operand swap, module docstring)
W_PTR = tl.constexpr(0)
W_BOX = tl.constexpr(1)
W_BOX_A = tl.constexpr(2)


@triton.jit
def _load_w(ptrs, mask, MBITS: tl.constexpr, EBITS: tl.constexpr, BIAS: tl.constexpr, NAN: tl.constexpr):
    """A weight tile: fp8 as stored (GPU), or uint8 codes decoded to fp32 (interpreter)."""
    if INTERPRET:
        return _decode_fp8(tl.load(ptrs, mask=mask, other=0), MBITS, EBITS, BIAS, NAN)
    else:
        return tl.load(ptrs, mask=mask, other=0.0)


@triton.jit
def _w_scale(sw_base, rows, g, BN_W, stride_sw_n, stride_sw_k):
    """(BLOCK_N,) fp32 weight scales of weight rows `rows` in K group g."""
    return tl.load(sw_base + (rows // BN_W) * stride_sw_n + g * stride_sw_k)


@triton.jit
def _outer(sa, sw, SW_SCALAR: tl.constexpr, SWAP: tl.constexpr = False):
    """(BLOCK_M, BLOCK_N) or (BLOCK_M, 1) factors s_a[row] * s_w[col] of a K tile's partial (s_w a scalar under
    SW_SCALAR): the same fp32 product per element either way. SWAP: the transposed factors, (BLOCK_N, BLOCK_M)
    or (1, BLOCK_M), of a swapped partial (W_BOX_A); fp32 products commute, so again the same per element."""
    if SW_SCALAR and SWAP:
        return (sa * sw)[None, :]
    elif SW_SCALAR:
        return (sa * sw)[:, None]
    elif SWAP:
        return sw[:, None] * sa[None, :]
    else:
        return sa[:, None] * sw[None, :]


@triton.jit
def _mma(a, w, SWAP: tl.constexpr):
    """A K tile's partial: a @ w, or under SWAP (W_BOX_A) w @ a.T, the weight box w as the first operand."""
    if SWAP:
        return tl.dot(w, trans_tile(a))
    else:
        return tl.dot(a, w)


@triton.jit
def _group_scales(sa_ptr, in_rows, stride_sa_t, stride_sa_g, row_ok, sw_base, w_rows, g, BN_W, stride_sw_n,
                  stride_sw_k):  # fmt: skip
    """(s_a (BLOCK_M,), s_w (BLOCK_N,)) fp32: K group g's scales of the tile's input rows and weight rows."""
    sa = tl.load(sa_ptr + in_rows * stride_sa_t + g * stride_sa_g, mask=row_ok, other=0.0)
    return sa, _w_scale(sw_base, w_rows, g, BN_W, stride_sw_n, stride_sw_k)


@triton.jit
def _fp8_b(w, MBITS: tl.constexpr, EBITS: tl.constexpr, BIAS: tl.constexpr, NAN: tl.constexpr):
    """The (BLOCK_K, ROWS) B operand of a (ROWS, BLOCK_K) weight box read through a tensor descriptor (W_DESC;
    zeros out of bounds): fp8 as stored (GPU), uint8 codes decoded (interpreter)."""
    if INTERPRET:
        w = _decode_fp8(w, MBITS, EBITS, BIAS, NAN)
    return trans_tile(w)


@triton.jit
def _fp8_gate_up_ptr_loop(
    a_ptr, sa_ptr, w_ptr, sw_ptr, tok, row_ok, offs_k, expert, pid_n, I, H, BN_W, GROUP_K,
    stride_a_t, stride_a_h, stride_sa_t, stride_sa_g, stride_w_e, stride_w_r, stride_w_h,
    stride_sw_e, stride_sw_n, stride_sw_k, GATED: tl.constexpr, INTERLEAVED: tl.constexpr, BLOCKWISE: tl.constexpr,
    FP8_MBITS: tl.constexpr, FP8_EBITS: tl.constexpr, FP8_BIAS: tl.constexpr, FP8_NAN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """fp8_gate_up_kernel's K loop with pointer loads of the weight tiles, dequantized; returns the (gate, up)
    fp32 accumulators."""
    # Gate rows then up rows as one (BLOCK_K, NB * BLOCK_N) B tile: one dot per K tile, as in gate_up_kernel
    # (_grouped_gemm_kernels.py says why); the scales are gathered per B column the same way.
    NB: tl.constexpr = 2 if GATED else 1
    cols = tl.arange(0, NB * BLOCK_N)
    rows = _w13_rows(pid_n * BLOCK_N + cols % BLOCK_N, cols >= BLOCK_N, I, INTERLEAVED)
    a_ptrs = a_ptr + tok[:, None] * stride_a_t + offs_k[None, :] * stride_a_h
    w_ptrs = (
        w_ptr + expert.to(tl.int64) * stride_w_e + rows[None, :] * stride_w_r + offs_k[:, None] * stride_w_h
    )
    sw_base = sw_ptr + expert.to(tl.int64) * stride_sw_e

    acc = tl.zeros((BLOCK_M, NB * BLOCK_N), dtype=tl.float32)
    if BLOCKWISE:  # group 0's scales; the loop fetches each next group's one step ahead (module docstring)
        last_g = (H - 1) // GROUP_K
        sa, sw = _group_scales(sa_ptr, tok, stride_sa_t, stride_sa_g, row_ok, sw_base, rows, 0, BN_W,
                               stride_sw_n, stride_sw_k)  # fmt: skip
    for kk in range(0, tl.cdiv(H, BLOCK_K)):
        k_ok = offs_k < H - kk * BLOCK_K
        a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w = _load_w(w_ptrs, k_ok[:, None], FP8_MBITS, FP8_EBITS, FP8_BIAS, FP8_NAN)
        if BLOCKWISE:  # fp32 partial per K tile, scaled by its group's scales
            g_next = tl.minimum(((kk + 1) * BLOCK_K) // GROUP_K, last_g)
            sa_next, sw_next = _group_scales(sa_ptr, tok, stride_sa_t, stride_sa_g, row_ok, sw_base, rows,
                                             g_next, BN_W, stride_sw_n, stride_sw_k)  # fmt: skip
            acc += tl.dot(a, w) * (sa[:, None] * sw[None, :])
            sa, sw = sa_next, sw_next
        else:  # promoted per K tile, as for blocks: fp8 MMAs accumulate in ~13 bits (module docstring)
            acc += tl.dot(a, w)
        a_ptrs += BLOCK_K * stride_a_h
        w_ptrs += BLOCK_K * stride_w_h
    if not BLOCKWISE:  # one scale per row of x and per weight row: dequantize once
        sa = tl.load(sa_ptr + tok * stride_sa_t, mask=row_ok, other=0.0)
        acc = acc * (sa[:, None] * _w_scale(sw_base, rows, 0, BN_W, stride_sw_n, stride_sw_k)[None, :])
    return _split_gate_up(acc, GATED, BLOCK_M, BLOCK_N)


@triton.jit
def _fp8_gate_up_desc_loop(
    a_ptrs, row_ok, tok, w_desc, sa_ptr, stride_sa_t, stride_sa_g, sw_base, stride_sw_n, stride_sw_k,
    expert, n0, I, H, stride_a_h, BN_W, GROUP_K,
    GATED: tl.constexpr, INTERLEAVED: tl.constexpr, BLOCKWISE: tl.constexpr,
    FP8_MBITS: tl.constexpr, FP8_EBITS: tl.constexpr, FP8_BIAS: tl.constexpr, FP8_NAN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """fp8_gate_up_kernel's K loop with the weight tiles read through a tensor descriptor (W_DESC: TMA on sm90+),
    dequantized; returns the (gate, up) fp32 accumulators. One box and one dot per K step, with the boxes and
    column order of _gate_up_desc_loop (_grouped_gemm_kernels.py): concat gate block then up block,
    interleaved gate / up pairs (split at the end), non-gated rows. The scales of each accumulator column are
    gathered at its weight row, wrapped modulo I as in the pointer loop (columns past I stay in bounds; the
    store masks them).

    SW_SCALAR (block scheme, concat or non-gated, BLOCK_N dividing the weight block and, gated, I a multiple of
    it: fp8_gemm.scalar_weight_scales): the gate rows of a tile lie in one weight block and so do its up rows,
    so each K group has one gate and one up scale. They are loaded as two scalars and the dot's halves are
    scaled apart, instead of a scale per column: the same products (s_a * s_w, then the dot times it), and
    the (2 BLOCK_N,) scale vector and its prefetched twin no longer hold registers. The kernel then takes
    _fp8_gate_up_desc_scalar instead of this loop."""
    NB: tl.constexpr = 2 if GATED else 1
    cols = tl.arange(0, NB * BLOCK_N)
    if GATED and INTERLEAVED:  # column c: gate (c even) or up (c odd) row of output n0 + c // 2
        rows = _w13_rows(n0 + cols // 2, cols % 2 == 1, I, True)
    else:  # the pointer loop's columns: gate rows, then up rows
        rows = _w13_rows(n0 + cols % BLOCK_N, cols >= BLOCK_N, I, False)
    acc = tl.zeros((BLOCK_M, NB * BLOCK_N), dtype=tl.float32)
    offs_k = tl.arange(0, BLOCK_K)
    if BLOCKWISE:  # group 0's scales; each next group's one step ahead (module docstring)
        last_g = (H - 1) // GROUP_K
        sa, sw = _group_scales(sa_ptr, tok, stride_sa_t, stride_sa_g, row_ok, sw_base, rows, 0, BN_W,
                               stride_sw_n, stride_sw_k)  # fmt: skip
    for kk in range(0, tl.cdiv(H, BLOCK_K)):
        k0 = kk * BLOCK_K
        a = tl.load(a_ptrs, mask=row_ok[:, None] & (offs_k < H - k0)[None, :], other=0.0)
        w = _fp8_b(_w13_box(w_desc, expert, n0, k0, GATED, INTERLEAVED, BLOCK_N, BLOCK_K), FP8_MBITS, FP8_EBITS,
                   FP8_BIAS, FP8_NAN)  # fmt: skip
        if BLOCKWISE:
            g_next = tl.minimum((k0 + BLOCK_K) // GROUP_K, last_g)
            sa_next, sw_next = _group_scales(sa_ptr, tok, stride_sa_t, stride_sa_g, row_ok, sw_base, rows, g_next,
                                             BN_W, stride_sw_n, stride_sw_k)  # fmt: skip
            acc += tl.dot(a, w) * (sa[:, None] * sw[None, :])
            sa, sw = sa_next, sw_next
        else:  # promoted per K tile (module docstring)
            acc += tl.dot(a, w)
        a_ptrs += BLOCK_K * stride_a_h
    if not BLOCKWISE:  # one scale per row of x and per weight row: dequantize once
        sa = tl.load(sa_ptr + tok * stride_sa_t, mask=row_ok, other=0.0)
        acc = acc * (sa[:, None] * _w_scale(sw_base, rows, 0, BN_W, stride_sw_n, stride_sw_k)[None, :])
    if GATED and INTERLEAVED:  # columns 2j, 2j + 1 = gate j, up j
        g, u = tl.split(tl.reshape(acc, (BLOCK_M, BLOCK_N, 2)))
    else:
        g, u = _split_gate_up(acc, GATED, BLOCK_M, BLOCK_N)
    return g, u


@triton.jit
def _fp8_gate_up_desc_scalar(
    a_ptrs, row_ok, tok, w_desc, sa_ptr, stride_sa_t, stride_sa_g, sw_base, stride_sw_n, stride_sw_k,
    expert, n0, I, H, stride_a_h, BN_W, GROUP_K, GATED: tl.constexpr,
    FP8_MBITS: tl.constexpr, FP8_EBITS: tl.constexpr, FP8_BIAS: tl.constexpr, FP8_NAN: tl.constexpr,
    SWAP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """_fp8_gate_up_desc_loop under SW_SCALAR (its docstring): block scheme, concat or non-gated rows, one gate
    and one up weight scale per K group; returns the (gate, up) fp32 accumulators (BLOCK_M, BLOCK_N).

    SWAP (W_BOX_A, module docstring): the (NB BLOCK_N, BLOCK_K) box of gate then up rows is the dot's first
    operand, acc.T (NB BLOCK_N, BLOCK_M) += (box @ a.T) * s_w[row half] * s_a, the same scale product per
    element; transposed once after the K loop."""
    NB: tl.constexpr = 2 if GATED else 1
    gate0 = n0 % I  # first gate row (the tile's rows share its weight block)
    up0 = gate0 + I  # first up row (GATED)
    if SWAP:
        is_up = tl.arange(0, NB * BLOCK_N) >= BLOCK_N  # the box's rows: gate, then up
        acc = tl.zeros((NB * BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_u = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    offs_k = tl.arange(0, BLOCK_K)
    last_g = (H - 1) // GROUP_K
    sa, sw_g = _group_scales(sa_ptr, tok, stride_sa_t, stride_sa_g, row_ok, sw_base, gate0, 0, BN_W, stride_sw_n,
                             stride_sw_k)  # fmt: skip
    sw_u = _w_scale(sw_base, up0, 0, BN_W, stride_sw_n, stride_sw_k)
    for kk in range(0, tl.cdiv(H, BLOCK_K)):
        k0 = kk * BLOCK_K
        a = tl.load(a_ptrs, mask=row_ok[:, None] & (offs_k < H - k0)[None, :], other=0.0)
        box = _w13_box(w_desc, expert, n0, k0, GATED, False, BLOCK_N, BLOCK_K)
        g_next = tl.minimum((k0 + BLOCK_K) // GROUP_K, last_g)
        sa_next, sw_g_next = _group_scales(sa_ptr, tok, stride_sa_t, stride_sa_g, row_ok, sw_base, gate0, g_next,
                                           BN_W, stride_sw_n, stride_sw_k)  # fmt: skip
        if SWAP:
            d = _mma(a, _fp8_box_a(box, FP8_MBITS, FP8_EBITS, FP8_BIAS, FP8_NAN), True)
            if GATED:
                sw_u_next = _w_scale(sw_base, up0, g_next, BN_W, stride_sw_n, stride_sw_k)
                acc += d * _outer(sa, tl.where(is_up, sw_u, sw_g), False, True)
                sw_u = sw_u_next
            else:
                acc += d * _outer(sa, sw_g, True, True)
        else:
            d = tl.dot(a, _fp8_b(box, FP8_MBITS, FP8_EBITS, FP8_BIAS, FP8_NAN))
            if GATED:
                sw_u_next = _w_scale(sw_base, up0, g_next, BN_W, stride_sw_n, stride_sw_k)
                d_g, d_u = _split_gate_up(d, True, BLOCK_M, BLOCK_N)
                acc_g += d_g * _outer(sa, sw_g, True)
                acc_u += d_u * _outer(sa, sw_u, True)
                sw_u = sw_u_next
            else:
                acc_g += d * _outer(sa, sw_g, True)
        sa, sw_g = sa_next, sw_g_next
        a_ptrs += BLOCK_K * stride_a_h
    if SWAP and GATED:
        g, u = tl.split(tl.permute(tl.reshape(acc, (2, BLOCK_N, BLOCK_M)), (1, 2, 0)))
        acc_g = tl.trans(g)
        acc_u = tl.trans(u)
    elif SWAP:
        acc_g = tl.trans(acc)
        acc_u = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    return acc_g, acc_u


@triton.jit
def _fp8_box_a(w, MBITS: tl.constexpr, EBITS: tl.constexpr, BIAS: tl.constexpr, NAN: tl.constexpr):
    """A weight box (rows, BLOCK_K) as the dot's first operand: fp8 as stored (GPU), uint8 codes decoded
    (interpreter)."""
    if INTERPRET:
        w = _decode_fp8(w, MBITS, EBITS, BIAS, NAN)
    return w


@triton.jit(do_not_specialize=["num_experts"])  # E = 1 (shared expert) keeps the routed binary
def fp8_gate_up_kernel(
    a_ptr, sa_ptr,  # (T, H) quantized x, (T, G1) scales
    w_ptr, sw_ptr,  # (E, R, H) codes, (E, Rb, Hb) scales; R = 2I gated / I
    w_desc,  # tensor descriptor of the codes (W_DESC: _fp8_gate_up_desc_loop), else None
    b_ptr,  # (E, R) fp32 bias or any pointer
    act_ptr,  # (T*k, I) out: activation (not QUANT_OUT) or its quantized values (QUANT_OUT)
    sq_ptr,  # (T*k, G2) out: scales of the quantized activation (QUANT_OUT), or any pointer
    sorted_ids_ptr, expert_of_block_ptr, num_padded_ptr,
    num_assignments, top_k, I, H, num_m_blocks, num_experts, BN_W, GROUP_K,
    stride_a_t, stride_a_h, stride_sa_t, stride_sa_g,
    stride_w_e, stride_w_r, stride_w_h, stride_sw_e, stride_sw_n, stride_sw_k,
    stride_b_e, stride_b_r, stride_act_a, stride_act_i, stride_sq_a, stride_sq_g,
    swiglu_alpha, swiglu_limit, amax_eps,
    GATED: tl.constexpr, INTERLEAVED: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
    BLOCKWISE: tl.constexpr, QUANT_OUT: tl.constexpr, HAS_EPS: tl.constexpr, SCALE_FMT: tl.constexpr,
    FP8_MBITS: tl.constexpr, FP8_EBITS: tl.constexpr, FP8_BIAS: tl.constexpr, FP8_NAN: tl.constexpr,
    FP8_EMIN: tl.constexpr, FP8_MAX: tl.constexpr, FP8_EMAX: tl.constexpr, FP8_HW_ROUND: tl.constexpr,
    W_DESC: tl.constexpr,
    SW_SCALAR: tl.constexpr, PERSISTENT: tl.constexpr, PAIRED: tl.constexpr, HALF_TAIL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, G2: tl.constexpr,
    PDL: tl.constexpr,
):  # fmt: skip
    """act[a] = activation(dequant(x_q[a // k] @ w13_q[e, gate].T) + b, dequant(... up ...) + b).
    PAIRED: each tile is 2 BLOCK_N columns wide, two column tiles in turn (_fp8_gate_up_tile).

    One tile per program, or PERSISTENT: a few programs per SM walk the used tiles (_grouped_gemm_kernels.py's
    module docstring)."""
    pdl_enter(PDL)
    TILE_N: tl.constexpr = (2 if PAIRED else 1) * BLOCK_N
    if PERSISTENT:
        used_m = tl.load(num_padded_ptr) // BLOCK_M
        for tile in tl.range(tl.program_id(0), used_m * tl.cdiv(I, TILE_N), tl.num_programs(0), flatten=True):
            pid_m, pid_n = _tile_coords(tile, used_m, I, TILE_N, GROUP_M)
            expert = _tile_expert(expert_of_block_ptr, pid_m, num_experts)
            _fp8_gate_up_tile(
                a_ptr, sa_ptr, w_ptr, sw_ptr, w_desc, b_ptr, act_ptr, sq_ptr, sorted_ids_ptr, expert,
                pid_m, pid_n, num_assignments, top_k, I, H, BN_W, GROUP_K, stride_a_t, stride_a_h, stride_sa_t,
                stride_sa_g, stride_w_e, stride_w_r, stride_w_h, stride_sw_e, stride_sw_n, stride_sw_k, stride_b_e,
                stride_b_r, stride_act_a, stride_act_i, stride_sq_a, stride_sq_g, swiglu_alpha, swiglu_limit,
                amax_eps, GATED, INTERLEAVED, HAS_BIAS, ACTIVATION, BLOCKWISE, QUANT_OUT, HAS_EPS, SCALE_FMT,
                FP8_MBITS, FP8_EBITS, FP8_BIAS, FP8_NAN, FP8_EMIN, FP8_MAX, FP8_EMAX, FP8_HW_ROUND, W_DESC, SW_SCALAR, True, PAIRED,
                BLOCK_M, BLOCK_N, BLOCK_K, G2,
            )  # fmt: skip
    else:
        pid_m, pid_n = _tile_coords(tl.program_id(0), num_m_blocks, I, TILE_N, GROUP_M)
        if pid_m * BLOCK_M >= tl.load(num_padded_ptr):
            return
        expert = _tile_expert(expert_of_block_ptr, pid_m, num_experts)
        if expert < 0:  # unused tile
            return
        half = False
        if HALF_TAIL:  # the tile's second half is pad only: its first half alone (module docstring)
            half = _pad_tail(sorted_ids_ptr, pid_m, num_assignments, BLOCK_M)
        if half:
            _fp8_gate_up_tile(
                a_ptr, sa_ptr, w_ptr, sw_ptr, w_desc, b_ptr, act_ptr, sq_ptr, sorted_ids_ptr, expert,
                2 * pid_m, pid_n, num_assignments, top_k, I, H, BN_W, GROUP_K, stride_a_t, stride_a_h, stride_sa_t,
                stride_sa_g, stride_w_e, stride_w_r, stride_w_h, stride_sw_e, stride_sw_n, stride_sw_k, stride_b_e,
                stride_b_r, stride_act_a, stride_act_i, stride_sq_a, stride_sq_g, swiglu_alpha, swiglu_limit,
                amax_eps, GATED, INTERLEAVED, HAS_BIAS, ACTIVATION, BLOCKWISE, QUANT_OUT, HAS_EPS, SCALE_FMT,
                FP8_MBITS, FP8_EBITS, FP8_BIAS, FP8_NAN, FP8_EMIN, FP8_MAX, FP8_EMAX, FP8_HW_ROUND, W_DESC, SW_SCALAR, False, PAIRED,
                BLOCK_M // 2, BLOCK_N, BLOCK_K, G2,
            )  # fmt: skip
        else:
            _fp8_gate_up_tile(
                a_ptr, sa_ptr, w_ptr, sw_ptr, w_desc, b_ptr, act_ptr, sq_ptr, sorted_ids_ptr, expert,
                pid_m, pid_n, num_assignments, top_k, I, H, BN_W, GROUP_K, stride_a_t, stride_a_h, stride_sa_t,
                stride_sa_g, stride_w_e, stride_w_r, stride_w_h, stride_sw_e, stride_sw_n, stride_sw_k, stride_b_e,
                stride_b_r, stride_act_a, stride_act_i, stride_sq_a, stride_sq_g, swiglu_alpha, swiglu_limit,
                amax_eps, GATED, INTERLEAVED, HAS_BIAS, ACTIVATION, BLOCKWISE, QUANT_OUT, HAS_EPS, SCALE_FMT,
                FP8_MBITS, FP8_EBITS, FP8_BIAS, FP8_NAN, FP8_EMIN, FP8_MAX, FP8_EMAX, FP8_HW_ROUND, W_DESC, SW_SCALAR, False, PAIRED,
                BLOCK_M, BLOCK_N, BLOCK_K, G2,
            )  # fmt: skip


@triton.jit
def _fp8_gate_up_act(
    a_ptr, a_ptrs, sa_ptr, w_ptr, sw_ptr, w_desc, b_ptr, tok, row_ok, offs_k, expert, sw_base, j, I, H, BN_W,
    GROUP_K, stride_a_t, stride_a_h, stride_sa_t, stride_sa_g, stride_w_e, stride_w_r, stride_w_h, stride_sw_e,
    stride_sw_n, stride_sw_k, stride_b_e, stride_b_r, swiglu_alpha, swiglu_limit,
    GATED: tl.constexpr, INTERLEAVED: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
    BLOCKWISE: tl.constexpr, FP8_MBITS: tl.constexpr, FP8_EBITS: tl.constexpr, FP8_BIAS: tl.constexpr,
    FP8_NAN: tl.constexpr, W_DESC: tl.constexpr, SW_SCALAR: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """The fp32 activation (BLOCK_M, BLOCK_N) of output columns j BLOCK_N .. (j + 1) BLOCK_N: K loop, dequant,
    bias, activation."""
    if W_DESC and SW_SCALAR:  # W_BOX_A: the launcher passes it to GEMM1 only with SW_SCALAR
        acc_g, acc_u = _fp8_gate_up_desc_scalar(
            a_ptrs, row_ok, tok, w_desc, sa_ptr, stride_sa_t, stride_sa_g, sw_base, stride_sw_n, stride_sw_k,
            expert, j * BLOCK_N, I, H, stride_a_h, BN_W, GROUP_K, GATED, FP8_MBITS, FP8_EBITS, FP8_BIAS, FP8_NAN,
            W_DESC == W_BOX_A, BLOCK_M, BLOCK_N, BLOCK_K,
        )  # fmt: skip
    elif W_DESC:
        acc_g, acc_u = _fp8_gate_up_desc_loop(
            a_ptrs, row_ok, tok, w_desc, sa_ptr, stride_sa_t, stride_sa_g, sw_base, stride_sw_n, stride_sw_k,
            expert, j * BLOCK_N, I, H, stride_a_h, BN_W, GROUP_K, GATED, INTERLEAVED, BLOCKWISE,
            FP8_MBITS, FP8_EBITS, FP8_BIAS, FP8_NAN, BLOCK_M, BLOCK_N, BLOCK_K,
        )  # fmt: skip
    else:
        acc_g, acc_u = _fp8_gate_up_ptr_loop(
            a_ptr, sa_ptr, w_ptr, sw_ptr, tok, row_ok, offs_k, expert, j, I, H, BN_W, GROUP_K,
            stride_a_t, stride_a_h, stride_sa_t, stride_sa_g, stride_w_e, stride_w_r, stride_w_h,
            stride_sw_e, stride_sw_n, stride_sw_k, GATED, INTERLEAVED, BLOCKWISE,
            FP8_MBITS, FP8_EBITS, FP8_BIAS, FP8_NAN, BLOCK_M, BLOCK_N, BLOCK_K,
        )  # fmt: skip
    if HAS_BIAS:  # after dequantization (docs/bugs.md#bug-03-bias-before-dequant)
        b_base = b_ptr + expert.to(tl.int64) * stride_b_e
        offs_n = j * BLOCK_N + tl.arange(0, BLOCK_N)
        acc_g, acc_u = _gate_up_bias(acc_g, acc_u, b_base, offs_n, I, stride_b_r, GATED, INTERLEAVED)
    return _activate(acc_g, acc_u, swiglu_alpha, swiglu_limit, GATED, ACTIVATION)


@triton.jit
def _fp8_gate_up_tile(
    a_ptr, sa_ptr, w_ptr, sw_ptr, w_desc, b_ptr, act_ptr, sq_ptr, sorted_ids_ptr, expert,
    pid_m, pid_n, num_assignments, top_k, I, H, BN_W, GROUP_K, stride_a_t, stride_a_h, stride_sa_t,
    stride_sa_g, stride_w_e, stride_w_r, stride_w_h, stride_sw_e, stride_sw_n, stride_sw_k, stride_b_e,
    stride_b_r, stride_act_a, stride_act_i, stride_sq_a, stride_sq_g, swiglu_alpha, swiglu_limit, amax_eps,
    GATED: tl.constexpr, INTERLEAVED: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
    BLOCKWISE: tl.constexpr, QUANT_OUT: tl.constexpr, HAS_EPS: tl.constexpr, SCALE_FMT: tl.constexpr,
    FP8_MBITS: tl.constexpr, FP8_EBITS: tl.constexpr, FP8_BIAS: tl.constexpr, FP8_NAN: tl.constexpr,
    FP8_EMIN: tl.constexpr, FP8_MAX: tl.constexpr, FP8_EMAX: tl.constexpr, FP8_HW_ROUND: tl.constexpr,
    W_DESC: tl.constexpr,
    SW_SCALAR: tl.constexpr, PERSISTENT: tl.constexpr, PAIRED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, G2: tl.constexpr,
):  # fmt: skip
    """fp8_gate_up_kernel's work on the live tile (pid_m, pid_n) of `expert`: K loop, dequant, bias, activation,
    store (quantized under QUANT_OUT). PAIRED: the tile is two column tiles of BLOCK_N, 2 pid_n and 2 pid_n + 1, one
    after the other (each its own K loop, as two programs would run them), joined into one (BLOCK_M, 2 BLOCK_N)
    activation, so that a 128-wide quantization group (G2 = 2 BLOCK_N) lies in one program and GEMM1's
    epilogue quantizes it: no fp32 act workspace and no quantize_rows launch for tiles of 64 columns."""
    NP: tl.constexpr = 2 if PAIRED else 1
    TILE_N: tl.constexpr = NP * BLOCK_N
    ids, row_ok, tok, offs_n, _, offs_k = _tile_rows(
        sorted_ids_ptr, pid_m, pid_n, num_assignments, top_k, I, True, BLOCK_M, TILE_N, BLOCK_K
    )
    expert, row_ok = _live_expert(expert, row_ok, PERSISTENT)
    a_ptrs = a_ptr + tok[:, None] * stride_a_t + offs_k[None, :] * stride_a_h
    sw_base = sw_ptr + expert.to(tl.int64) * stride_sw_e
    act = _fp8_gate_up_act(
        a_ptr, a_ptrs, sa_ptr, w_ptr, sw_ptr, w_desc, b_ptr, tok, row_ok, offs_k, expert, sw_base, NP * pid_n, I,
        H, BN_W, GROUP_K, stride_a_t, stride_a_h, stride_sa_t, stride_sa_g, stride_w_e, stride_w_r, stride_w_h,
        stride_sw_e, stride_sw_n, stride_sw_k, stride_b_e, stride_b_r, swiglu_alpha, swiglu_limit, GATED,
        INTERLEAVED, HAS_BIAS, ACTIVATION, BLOCKWISE, FP8_MBITS, FP8_EBITS, FP8_BIAS, FP8_NAN, W_DESC, SW_SCALAR,
        BLOCK_M, BLOCK_N, BLOCK_K,
    )  # fmt: skip
    if PAIRED:
        act1 = _fp8_gate_up_act(
            a_ptr, a_ptrs, sa_ptr, w_ptr, sw_ptr, w_desc, b_ptr, tok, row_ok, offs_k, expert, sw_base,
            2 * pid_n + 1, I, H, BN_W, GROUP_K, stride_a_t, stride_a_h, stride_sa_t, stride_sa_g, stride_w_e,
            stride_w_r, stride_w_h, stride_sw_e, stride_sw_n, stride_sw_k, stride_b_e, stride_b_r, swiglu_alpha,
            swiglu_limit, GATED, INTERLEAVED, HAS_BIAS, ACTIVATION, BLOCKWISE, FP8_MBITS, FP8_EBITS, FP8_BIAS,
            FP8_NAN, W_DESC, SW_SCALAR, BLOCK_M, BLOCK_N, BLOCK_K,
        )  # fmt: skip
        # columns 2 pid_n BLOCK_N .. in order: (BLOCK_M, BLOCK_N, 2) -> (BLOCK_M, 2, BLOCK_N) -> one row each
        act = tl.reshape(tl.permute(tl.join(act, act1), (0, 2, 1)), (BLOCK_M, TILE_N))
    col_ok = offs_n < I
    out_mask = row_ok[:, None] & col_ok[None, :]
    out_ptrs = act_ptr + ids.to(tl.int64)[:, None] * stride_act_a + offs_n[None, :] * stride_act_i
    if QUANT_OUT:
        act = tl.where(col_ok[None, :], act, 0.0)
        NG: tl.constexpr = TILE_N // G2
        act3 = tl.reshape(act, (BLOCK_M, NG, G2))
        s = _act_scale(tl.max(tl.abs(act3), axis=2), amax_eps, HAS_EPS, SCALE_FMT, FP8_MAX, FP8_EMAX)
        q3 = _quantize_values(
            act3, s[:, :, None] + tl.zeros_like(act3), FP8_MBITS, FP8_EMIN, FP8_MAX, FP8_HW_ROUND
        )
        q = tl.reshape(q3, (BLOCK_M, TILE_N))
        tl.store(out_ptrs, q.to(act_ptr.dtype.element_ty), mask=out_mask)
        offs_g = pid_n * NG + tl.arange(0, NG)
        sq_ptrs = sq_ptr + ids.to(tl.int64)[:, None] * stride_sq_a + offs_g[None, :] * stride_sq_g
        tl.store(sq_ptrs, s, mask=row_ok[:, None] & (offs_g[None, :] * G2 < I))
    else:
        act = _store_round(act, act_ptr.dtype.element_ty)
        tl.store(out_ptrs, act.to(act_ptr.dtype.element_ty), mask=out_mask)


@triton.jit(do_not_specialize=["num_experts"])  # E = 1 (shared expert) keeps the routed binary
def fp8_down_kernel(
    a_ptr, sa_ptr,  # (T*k, I) quantized act, (T*k, G2) scales
    w_ptr, sw_ptr,  # (E, H, I) codes, (E, Hb, Ib) scales
    w_desc,  # tensor descriptor of the codes in (1, BLOCK_N, BLOCK_K) boxes (W_DESC), else None
    b_ptr,  # (E, H) fp32 bias or any pointer
    out_ptr,  # (T*k, H)
    route_w_ptr,  # (T*k,) fp32 router weights (MUL_WEIGHT), or any pointer
    sorted_ids_ptr, expert_of_block_ptr, num_padded_ptr,
    num_assignments, H, I, num_m_blocks, num_experts, BN_W, GROUP_K,
    stride_a_a, stride_a_i, stride_sa_a, stride_sa_g,
    stride_w_e, stride_w_h, stride_w_i, stride_sw_e, stride_sw_n, stride_sw_k,
    stride_b_e, stride_b_h, stride_out_a, stride_out_h,
    HAS_BIAS: tl.constexpr, MUL_WEIGHT: tl.constexpr, BLOCKWISE: tl.constexpr,
    FP8_MBITS: tl.constexpr, FP8_EBITS: tl.constexpr, FP8_BIAS: tl.constexpr, FP8_NAN: tl.constexpr,
    W_DESC: tl.constexpr, SW_SCALAR: tl.constexpr, PERSISTENT: tl.constexpr, HALF_TAIL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    PDL: tl.constexpr,
):  # fmt: skip
    """out[a] = (dequant(act_q[a] @ w2_q[e].T) + b2[e]) * (route_w[a] if MUL_WEIGHT), all in fp32, one cast.

    One tile per program, or PERSISTENT (as fp8_gate_up_kernel)."""
    pdl_enter(PDL)
    if PERSISTENT:
        used_m = tl.load(num_padded_ptr) // BLOCK_M
        for tile in tl.range(
            tl.program_id(0), used_m * tl.cdiv(H, BLOCK_N), tl.num_programs(0), flatten=True
        ):
            pid_m, pid_n = _tile_coords(tile, used_m, H, BLOCK_N, GROUP_M)
            expert = _tile_expert(expert_of_block_ptr, pid_m, num_experts)
            _fp8_down_tile(
                a_ptr, sa_ptr, w_ptr, sw_ptr, w_desc, b_ptr, out_ptr, route_w_ptr, sorted_ids_ptr, expert,
                pid_m, pid_n, num_assignments, H, I, BN_W, GROUP_K, stride_a_a, stride_a_i, stride_sa_a, stride_sa_g,
                stride_w_e, stride_w_h, stride_w_i, stride_sw_e, stride_sw_n, stride_sw_k, stride_b_e, stride_b_h,
                stride_out_a, stride_out_h, HAS_BIAS, MUL_WEIGHT, BLOCKWISE, FP8_MBITS, FP8_EBITS, FP8_BIAS,
                FP8_NAN, W_DESC, SW_SCALAR, True, BLOCK_M, BLOCK_N, BLOCK_K,
            )  # fmt: skip
    else:
        pid_m, pid_n = _tile_coords(tl.program_id(0), num_m_blocks, H, BLOCK_N, GROUP_M)
        if pid_m * BLOCK_M >= tl.load(num_padded_ptr):
            return
        expert = _tile_expert(expert_of_block_ptr, pid_m, num_experts)
        if expert < 0:  # unused tile
            return
        half = False
        if HALF_TAIL:  # the tile's second half is pad only: its first half alone (module docstring)
            half = _pad_tail(sorted_ids_ptr, pid_m, num_assignments, BLOCK_M)
        if half:
            _fp8_down_tile(
                a_ptr, sa_ptr, w_ptr, sw_ptr, w_desc, b_ptr, out_ptr, route_w_ptr, sorted_ids_ptr, expert,
                2 * pid_m, pid_n, num_assignments, H, I, BN_W, GROUP_K, stride_a_a, stride_a_i, stride_sa_a, stride_sa_g,
                stride_w_e, stride_w_h, stride_w_i, stride_sw_e, stride_sw_n, stride_sw_k, stride_b_e, stride_b_h,
                stride_out_a, stride_out_h, HAS_BIAS, MUL_WEIGHT, BLOCKWISE, FP8_MBITS, FP8_EBITS, FP8_BIAS,
                FP8_NAN, W_DESC, SW_SCALAR, False, BLOCK_M // 2, BLOCK_N, BLOCK_K,
            )  # fmt: skip
        else:
            _fp8_down_tile(
                a_ptr, sa_ptr, w_ptr, sw_ptr, w_desc, b_ptr, out_ptr, route_w_ptr, sorted_ids_ptr, expert,
                pid_m, pid_n, num_assignments, H, I, BN_W, GROUP_K, stride_a_a, stride_a_i, stride_sa_a, stride_sa_g,
                stride_w_e, stride_w_h, stride_w_i, stride_sw_e, stride_sw_n, stride_sw_k, stride_b_e, stride_b_h,
                stride_out_a, stride_out_h, HAS_BIAS, MUL_WEIGHT, BLOCKWISE, FP8_MBITS, FP8_EBITS, FP8_BIAS,
                FP8_NAN, W_DESC, SW_SCALAR, False, BLOCK_M, BLOCK_N, BLOCK_K,
            )  # fmt: skip


@triton.jit
def _fp8_down_tile(
    a_ptr, sa_ptr, w_ptr, sw_ptr, w_desc, b_ptr, out_ptr, route_w_ptr, sorted_ids_ptr, expert,
    pid_m, pid_n, num_assignments, H, I, BN_W, GROUP_K, stride_a_a, stride_a_i, stride_sa_a, stride_sa_g,
    stride_w_e, stride_w_h, stride_w_i, stride_sw_e, stride_sw_n, stride_sw_k, stride_b_e, stride_b_h,
    stride_out_a, stride_out_h, HAS_BIAS: tl.constexpr, MUL_WEIGHT: tl.constexpr, BLOCKWISE: tl.constexpr,
    FP8_MBITS: tl.constexpr, FP8_EBITS: tl.constexpr, FP8_BIAS: tl.constexpr, FP8_NAN: tl.constexpr,
    W_DESC: tl.constexpr, SW_SCALAR: tl.constexpr, PERSISTENT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """fp8_down_kernel's work on the live tile (pid_m, pid_n) of `expert`: K loop, dequant, bias, router weight,
    store."""
    _, row_ok, rows, offs_n, offs_n_w, offs_k = _tile_rows(
        sorted_ids_ptr, pid_m, pid_n, num_assignments, 1, H, False, BLOCK_M, BLOCK_N, BLOCK_K
    )
    expert, row_ok = _live_expert(expert, row_ok, PERSISTENT)
    a_ptrs = a_ptr + rows[:, None] * stride_a_a + offs_k[None, :] * stride_a_i
    w_ptrs = (
        w_ptr
        + expert.to(tl.int64) * stride_w_e
        + offs_n_w[None, :] * stride_w_h
        + offs_k[:, None] * stride_w_i
    )
    sw_base = sw_ptr + expert.to(tl.int64) * stride_sw_e
    sa_rows = sa_ptr + rows * stride_sa_a
    # SW_SCALAR (BLOCK_N divides the weight block): the tile's rows share one weight scale per K group, a
    # scalar instead of a (BLOCK_N,) vector (_fp8_gate_up_desc_loop says why)
    w_rows = pid_n * BLOCK_N if SW_SCALAR else offs_n_w
    acc = _fp8_down_loop(
        a_ptrs, w_ptrs, row_ok, rows, w_desc, sa_ptr, stride_sa_a, stride_sa_g, sw_base, w_rows, stride_sw_n,
        stride_sw_k, expert, pid_n, I, stride_a_i, stride_w_i, BN_W, GROUP_K, BLOCKWISE, FP8_MBITS, FP8_EBITS,
        FP8_BIAS, FP8_NAN, W_DESC, SW_SCALAR, BLOCK_M, BLOCK_N, BLOCK_K,
    )  # fmt: skip
    if not BLOCKWISE:
        sa = tl.load(sa_rows, mask=row_ok, other=0.0)
        acc = acc * (sa[:, None] * _w_scale(sw_base, offs_n_w, 0, BN_W, stride_sw_n, stride_sw_k)[None, :])
    if HAS_BIAS:
        b2 = tl.load(b_ptr + expert.to(tl.int64) * stride_b_e + offs_n_w * stride_b_h).to(tl.float32)
        acc += b2[None, :]
    # fp32, after dequant and bias, before the cast (docs/bugs.md#bug-02-router-weight-after-cast)
    if MUL_WEIGHT:
        acc = acc * tl.load(route_w_ptr + rows, mask=row_ok, other=0.0)[:, None]
    out_ptrs = out_ptr + rows[:, None] * stride_out_a + offs_n[None, :] * stride_out_h
    acc = _store_round(acc, out_ptr.dtype.element_ty)
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & (offs_n[None, :] < H))


@triton.jit
def _fp8_down_loop(
    a_ptrs, w_ptrs, row_ok, rows, w_desc, sa_ptr, stride_sa_a, stride_sa_g, sw_base, w_rows, stride_sw_n,
    stride_sw_k, expert, pid_n, I, stride_a_i, stride_w_i, BN_W, GROUP_K, BLOCKWISE: tl.constexpr,
    FP8_MBITS: tl.constexpr, FP8_EBITS: tl.constexpr, FP8_BIAS: tl.constexpr, FP8_NAN: tl.constexpr,
    W_DESC: tl.constexpr, SW_SCALAR: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):  # fmt: skip
    """_fp8_down_tile's K loop: the (BLOCK_M, BLOCK_N) fp32 accumulator, dequantized per K tile under BLOCKWISE.
    W_DESC == W_BOX_A (module docstring): the descriptor's (BLOCK_N, BLOCK_K) box is the dot's first operand,
    acc.T (BLOCK_N, BLOCK_M) += (box @ a.T) * s_w * s_a, the same scale product per element, transposed once
    after the loop."""
    SWAP: tl.constexpr = W_DESC == W_BOX_A
    offs_k = tl.arange(0, BLOCK_K)
    if SWAP:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if BLOCKWISE:  # as in fp8_gate_up_kernel: each next group's scales one step ahead
        last_g = (I - 1) // GROUP_K
        sa, sw = _group_scales(sa_ptr, rows, stride_sa_a, stride_sa_g, row_ok, sw_base, w_rows, 0, BN_W,
                               stride_sw_n, stride_sw_k)  # fmt: skip
    for kk in range(0, tl.cdiv(I, BLOCK_K)):
        k_ok = offs_k < I - kk * BLOCK_K
        a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        if W_DESC:  # rows past H and columns past I read as zeros
            box = w_desc.load([expert, pid_n * BLOCK_N, kk * BLOCK_K]).reshape(BLOCK_N, BLOCK_K)
            if SWAP:
                w = _fp8_box_a(box, FP8_MBITS, FP8_EBITS, FP8_BIAS, FP8_NAN)
            else:
                w = _fp8_b(box, FP8_MBITS, FP8_EBITS, FP8_BIAS, FP8_NAN)
        else:
            w = _load_w(w_ptrs, k_ok[:, None], FP8_MBITS, FP8_EBITS, FP8_BIAS, FP8_NAN)
        if BLOCKWISE:
            g_next = tl.minimum(((kk + 1) * BLOCK_K) // GROUP_K, last_g)
            sa_next, sw_next = _group_scales(sa_ptr, rows, stride_sa_a, stride_sa_g, row_ok, sw_base, w_rows,
                                             g_next, BN_W, stride_sw_n, stride_sw_k)  # fmt: skip
            acc += _mma(a, w, SWAP) * _outer(sa, sw, SW_SCALAR, SWAP)
            sa, sw = sa_next, sw_next
        else:  # promoted per K tile (module docstring)
            acc += _mma(a, w, SWAP)
        a_ptrs += BLOCK_K * stride_a_i
        w_ptrs += BLOCK_K * stride_w_i
    if SWAP:
        acc = tl.trans(acc)
    return acc
