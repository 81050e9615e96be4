"""MXFP4 x bf16 / fp16 for a few rows per expert, without a matrix instruction (Mxfp4Config.dot == "fma").

At decode sizes an expert's tile holds one or two live rows. tl.dot wants 16 rows (mma.sync) or 64 (wgmma)
and the decoded weights in its operand layout, so the swar path stores every decoded weight tile to shared
memory and reads it back for the MMA, and 15 of its 16 rows are padding: 25% of the weight-streaming floor at
gpt-oss-120b T = 16 (docs/mxfp4.md). Here the products are fp32 FMAs on the registers where the codes were
decoded: no shared-memory round trip of the weights, no MMA and no barrier; per weight element the decode and
one FMA per row:

    B      (NB, W, BLOCK_N) uint32 words (W = 4, C = 8 codes each) or bytes (W = 16, C = 2) of column n,
           code q of word jw of block jb = element k0 + 32 jb + C jw + q
    x_q    (BLOCK_M, NB, W) fp32: the activations of those elements, q < C
    w_q    = e2m1(code q of B)                 fp32, exact (below)
    part   = sum_q x_q[:, :, :, None] * w_q[None]             (BLOCK_M, NB, W, BLOCK_N): one FMA per row
    acc3  += sum_jw(part) * 2^(s[jb, n] - 127)                (BLOCK_M, NB, BLOCK_N): the block's scale once
    out    = acc3 summed over jb after the K loop             (BLOCK_M, BLOCK_N) fp32

The decode of code q, 3 integer ops and a multiply: t = B << (28 - 4q) as int32 puts the code's sign at bit 31
and its magnitude bits e e m at 30-28; an arithmetic shift right by 6 moves e e m to fp32 bits 24-22 (the
exponent's low two bits, the mantissa's top bit) and copies the sign over bits 31-25; the mask 0x81C00000
keeps bit 31 and 24-22. Read as fp32 that is e2m1 * 2^-126 exactly (e = 0 is fp32's subnormal m * 2^-127,
as e2m1's subnormal 0.5 is m * 2^-1), and * 2^126 is exact. The scale 2^(s-127) multiplies each block's fp32
partial (exact: a power of two, unless the partial leaves fp32's range, where the scaled weights would too).
The sums run in another order than the dot paths' (per code phase, then per block, then across blocks): same
tolerance, other bits. Needs no bf16 arithmetic, so the interpreter computes it as the GPU does.
"""

from __future__ import annotations

import triton
import triton.language as tl

from moe_cts.kernels._mxfp4_decode import e8m0_f32
from moe_cts.kernels._mxfp4_swar import _load_words

RENORM = tl.constexpr(2.0**126)  # e2m1 bits at fp32 bits 31, 24-22 read as e2m1 * 2^-126


@triton.jit
def _e2m1_f32(B, q: tl.constexpr):
    """Code q of the words B (uint32; code q in bits 4q .. 4q + 3) as fp32 e2m1 values (module docstring)."""
    t = (B << (28 - 4 * q)).to(tl.int32, bitcast=True)
    bits = (t >> 6).to(tl.uint32, bitcast=True) & 0x81C00000
    return bits.to(tl.float32, bitcast=True) * RENORM


@triton.jit
def _load_codes(w_rows, stride_w_k, k0, K, NB: tl.constexpr, WORDS: tl.constexpr, EVEN_K: tl.constexpr):
    """(NB, W, BLOCK_N) uint32 code words of elements [k0, k0 + 32 NB): WORDS reads 4-byte words as the swar
    decode does (rows 4-byte aligned and K-contiguous: the launcher checks), else single bytes with the byte
    stride. Blocks past K (K % 32 == 0) read code 0."""
    if WORDS:
        b = _load_words(w_rows.to(tl.pointer_type(tl.uint32)), k0, K, NB, EVEN_K)
    else:
        jb = tl.arange(0, NB)[:, None, None]
        jw = tl.arange(0, 16)[None, :, None]
        ptrs = w_rows[None, None, :] + (k0 // 2 + jb * 16 + jw) * stride_w_k
        if EVEN_K:
            b = tl.load(ptrs)
        else:
            b = tl.load(ptrs, mask=(k0 + jb * 32) < K, other=0)
    return b.to(tl.uint32)


@triton.jit
def _row(x_rows, x_ok, K, m: tl.constexpr):
    """(pointer, end) of row m of the tile: scalars picked out of the (BLOCK_M,) tensors, so that each row's
    activation tiles load straight into the weight tile's layout (a (BLOCK_M, ...) product would put the rows
    in a 4-D layout of its own and move every decoded weight tile through shared memory to meet it). end is
    K for a live row and 0 for a pad row: one compare masks both the K tail and the row."""
    pick = tl.arange(0, x_rows.shape[0]) == m
    addr = tl.sum(tl.where(pick, x_rows.to(tl.int64), 0))
    end = tl.sum(tl.where(pick & x_ok, K, 0))
    return addr.to(x_rows.dtype), end


@triton.jit
def _load_x(x_row, end, stride_x_k, k0, q: tl.constexpr, NB: tl.constexpr, W: tl.constexpr):
    """(NB, W, 1) fp32: x[k0 + 32 jb + (32 / W) jw + q] of one row (x_row a scalar pointer; elements at or
    past `end` read 0)."""
    jb = tl.arange(0, NB)[:, None]
    jw = tl.arange(0, W)[None, :]
    kel = k0 + jb * 32 + jw * (32 // W) + q
    return tl.load(x_row + kel * stride_x_k, mask=kel < end, other=0.0).to(tl.float32)[:, :, None]


@triton.jit
def _block_scales(s_rows, stride_s_k, k0, K, NB: tl.constexpr):
    """(NB, BLOCK_N) fp32 2^(s - 127) of the 32-blocks [k0, k0 + 32 NB); 1.0 past K. Two-dimensional, unlike
    the swar decode's (NB, 1, BLOCK_N) _load_scales: with that shape the partials kept a unit axis and the
    4-row sm90 tiles went from 96 / 79 to 218 / 211 registers (AOT, triton 3.9)."""
    jb = tl.arange(0, NB)[:, None]
    s = tl.load(s_rows[None, :] + (k0 // 32 + jb) * stride_s_k, mask=(k0 + jb * 32) < K, other=127)
    return e8m0_f32(s.to(tl.uint32))


@triton.jit
def _stack_rows(r0, r1, r2, r3, BLOCK_M: tl.constexpr):
    """(BLOCK_M, BLOCK_N) from the rows' (BLOCK_N,) sums; r1 .. r3 are read only where BLOCK_M covers them."""
    if BLOCK_M == 1:
        out = r0[None, :]
    elif BLOCK_M == 2:
        out = tl.permute(tl.join(r0, r1), (1, 0))
    else:  # join appends its axis last: [n, i, j] = row 2 j + i
        out = tl.reshape(tl.permute(tl.join(tl.join(r0, r1), tl.join(r2, r3)), (2, 1, 0)), (4, r0.shape[0]))
    return out


@triton.jit
def _phase(p0, p1, p2, p3, w, x_rows, x_ok, stride_x_k, k0, K, q: tl.constexpr, NB: tl.constexpr,
           W: tl.constexpr, BLOCK_M: tl.constexpr):  # fmt: skip
    """Each row's partial p_m + x_m[code phase q] * w for the decoded phase-q weights w (NB, W, BLOCK_N)."""
    x, end = _row(x_rows, x_ok, K, 0)
    p0 += _load_x(x, end, stride_x_k, k0, q, NB, W) * w
    if BLOCK_M >= 2:
        x, end = _row(x_rows, x_ok, K, 1)
        p1 += _load_x(x, end, stride_x_k, k0, q, NB, W) * w
    if BLOCK_M >= 4:
        x, end = _row(x_rows, x_ok, K, 2)
        p2 += _load_x(x, end, stride_x_k, k0, q, NB, W) * w
        x, end = _row(x_rows, x_ok, K, 3)
        p3 += _load_x(x, end, stride_x_k, k0, q, NB, W) * w
    return p0, p1, p2, p3


@triton.jit
def _gemv(acc, x_rows, x_ok, stride_x_k, w_rows, s_rows, stride_w_k, stride_s_k, K,
          BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr, WORDS: tl.constexpr):  # fmt: skip
    """acc + x @ W.T for one weight over the whole K, BLOCK_M in {1, 2, 4} rows (module docstring)."""
    NB: tl.constexpr = BLOCK_K // 32
    W: tl.constexpr = 4 if WORDS else 16
    C: tl.constexpr = 32 // W
    BLOCK_M: tl.constexpr = acc.shape[0]
    BLOCK_N: tl.constexpr = acc.shape[1]
    a0 = tl.zeros((NB, BLOCK_N), dtype=tl.float32)
    a1 = tl.zeros((NB, BLOCK_N), dtype=tl.float32)
    a2 = tl.zeros((NB, BLOCK_N), dtype=tl.float32)
    a3 = tl.zeros((NB, BLOCK_N), dtype=tl.float32)
    for kk in range(0, tl.cdiv(K, BLOCK_K)):
        k0 = kk * BLOCK_K
        b = _load_codes(w_rows, stride_w_k, k0, K, NB, WORDS, EVEN_K)
        p0 = tl.zeros((NB, W, BLOCK_N), dtype=tl.float32)
        p1 = tl.zeros((NB, W, BLOCK_N), dtype=tl.float32)
        p2 = tl.zeros((NB, W, BLOCK_N), dtype=tl.float32)
        p3 = tl.zeros((NB, W, BLOCK_N), dtype=tl.float32)
        for q in tl.static_range(C):
            p0, p1, p2, p3 = _phase(
                p0, p1, p2, p3, _e2m1_f32(b, q), x_rows, x_ok, stride_x_k, k0, K, q, NB, W, BLOCK_M
            )
        # the words of a block sit in one thread (one 16-byte load): the sums over W need no shuffle
        sc = _block_scales(s_rows, stride_s_k, k0, K, NB)
        a0 += tl.sum(p0, axis=1) * sc
        if BLOCK_M >= 2:
            a1 += tl.sum(p1, axis=1) * sc
        if BLOCK_M >= 4:
            a2 += tl.sum(p2, axis=1) * sc
            a3 += tl.sum(p3, axis=1) * sc
    rows = _stack_rows(
        tl.sum(a0, axis=0), tl.sum(a1, axis=0), tl.sum(a2, axis=0), tl.sum(a3, axis=0), BLOCK_M
    )
    return acc + rows


@triton.jit
def mx_gemm_fma(
    acc1, acc2, x_rows, x_ok, stride_x_k, w1_rows, s1_rows, w2_rows, s2_rows, stride_w_k, stride_s_k, K,
    TWO: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr, WORDS: tl.constexpr,
):  # fmt: skip
    """(acc1 + x @ W1.T, acc2 + x @ W2.T if TWO) over the whole K by fp32 FMAs (module docstring); w*_rows
    byte pointers to the code rows, s*_rows to the scale rows. The gate and up weights run one after the
    other: each K loop holds one weight's partials (registers), and x, re-read, comes from L1."""
    acc1 = _gemv(acc1, x_rows, x_ok, stride_x_k, w1_rows, s1_rows, stride_w_k, stride_s_k, K, BLOCK_K, EVEN_K,
                 WORDS)  # fmt: skip
    if TWO:
        acc2 = _gemv(acc2, x_rows, x_ok, stride_x_k, w2_rows, s2_rows, stride_w_k, stride_s_k, K, BLOCK_K,
                     EVEN_K, WORDS)  # fmt: skip
    return acc1, acc2
