"""MXFP4 with the weights as the MMA's first operand (Mxfp4Config.decode == "swap", DECODE_SWAP), bf16 only.

The swar decode (_mxfp4_swar.py) feeds the decoded weights to tl.dot as the second operand, (BLOCK_K,
BLOCK_N). Neither MMA family takes a second operand from registers in the layout the decode leaves it in, so
the compiler stores every decoded tile to shared memory and reads it back (TTGIR: local_alloc + local_load of
a (BLOCK_K, BLOCK_N) bf16 tile per weight per K step), 4 bytes of shared traffic per weight element on top of
the half byte that came from HBM. Here the product is computed transposed, so the weights are the first
operand; the first operand of mma.sync and of wgmma can live in registers (TTGIR: the convert to the dot
operand layout hoisted to the code load):

    out.T (BLOCK_N, BLOCK_M) = W (BLOCK_N, K) @ x.T (K, BLOCK_M)        out = (out.T).T once, after the K loop

The decode is swar's, two codes per 32-bit op, without swar's join / permute / reshape back to K order (a
reshape of a register tile cannot stay in the dot operand layout): the eight codes of word w are elements
8w + q, q < 8, and the product is summed by phase q instead,

    W @ x.T  =  sum_q  W[:, q::8] @ x[:, q::8].T          W[:, q::8] = decode of code q of every word

    words  (BLOCK_N, BLOCK_K / 8)  uint32   word w of row n holds elements k0 + 8w .. k0 + 8w + 7
    scales (BLOCK_N, BLOCK_K / 8)  uint8    the E8M0 code of word w's 32-block (4 words share one)
    x      (BLOCK_M, BLOCK_K / 8, 2, 2, 2)   the activation tile split by tl.split into its 8 phases
    dots   8 per K step and weight, (BLOCK_N, BLOCK_K / 8) @ (BLOCK_K / 8, BLOCK_M)

BLOCK_K >= 128 (each phase dot needs K >= 16). Exact as swar (the same decode and multiplies); the fp32 sums
run phase by phase instead of in K order, so bits differ from swar's where the sums round. Under the
interpreter (INTERPRET) the decode widens to fp32 as in swar.
"""

from __future__ import annotations

import triton
import triton.language as tl

from moe_cts.kernels._common import INTERPRET

RENORM = tl.constexpr(2.0**126)  # e e m at bf16 bits 8-6 read as a bf16 is e2m1 * 2^-126 (_mxfp4_swar.py)


@triton.jit
def _phases(x):
    """The 4 phase tiles (BLOCK_M, NH) of x (BLOCK_M, 4 NH): phase q = 2a + b holds columns 4h + q.
    tl.split halves the last axis, so the inner bit b goes first."""
    BM: tl.constexpr = x.shape[0]
    NH: tl.constexpr = x.shape[1] // 4
    x = tl.reshape(x, (BM, NH, 2, 2))
    xb0, xb1 = tl.split(x)  # b = 0 / 1: (BM, NH, 2 (a))
    p0, p2 = tl.split(xb0)
    p1, p3 = tl.split(xb1)
    return p0, p1, p2, p3


@triton.jit
def _scale_bits(s):
    """bf16 bits (uint16) of 2^(s - 127) for E8M0 codes s (uint16), with integer arithmetic only (a select
    stops the compiler from keeping the tile in the dot operand layout): the exponent field is s; s = 0 is
    bf16's subnormal 2^-127 (0x0040, the maximum picks it), s = 255 is NaN ((s + 1) >> 8 sets the quiet bit)."""
    return tl.maximum(s << 7, tl.full([], 0x0040, tl.uint16)) | (((s + 1) >> 8) << 6)


@triton.jit
def _code_bits(h, q: tl.constexpr):
    """bf16 bits (uint16) of e2m1 * 2^-126 for code q < 4 of halfwords h (uint16, code q in bits 4q .. 4q+3):
    magnitude bits e e m to bf16 bits 8 7 6, the sign bit to bit 15."""
    if q == 0:
        mag = h << 6
    elif q == 1:
        mag = h << 2
    else:
        mag = h >> (4 * q - 6)
    return (mag & 0x01C0) | ((h << (12 - 4 * q)) & 0x8000)


@triton.jit
def _as_bf16(bits):
    """uint16 bf16 bits as bf16 (fp32 under the interpreter: exact widening)."""
    if INTERPRET:
        v = (bits.to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    else:
        v = bits.to(tl.bfloat16, bitcast=True)
    return v


@triton.jit
def _load_halves(w_rows, s_rows, stride_s_k, kk, K, NH: tl.constexpr, EVEN_K: tl.constexpr):
    """halfwords (BLOCK_N, NH) uint16 of K step kk, elements [k0, k0 + 4 NH) with k0 = 4 NH kk (w_rows
    uint16 pointers to K-contiguous rows), and each halfword's E8M0 code (BLOCK_N, NH), widened to uint16;
    past K: code 0, scale 127. The offset is kk * NH, not k0 // 4: the compiler's alignment analysis loses
    the divisibility across a division, and a load it cannot prove 4-byte aligned is not pipelined (cp.async
    moves 4, 8 or 16 bytes)."""
    jh = kk * NH + tl.arange(0, NH)[None, :]
    w_ptrs = w_rows[:, None] + jh
    s_ptrs = s_rows[:, None] + (jh // 8) * stride_s_k
    if EVEN_K:
        h = tl.load(w_ptrs)
        s = tl.load(s_ptrs)
    else:  # halfword h is inside K iff h < K / 4 (K % 32 == 0); 4 * jh < K would hide the mask's runs of
        # equal values from the alignment analysis, and the load would not be pipelined
        ok = jh < K // 4
        h = tl.load(w_ptrs, mask=ok, other=0)
        s = tl.load(s_ptrs, mask=ok, other=127)
    return h, s.to(tl.uint16)


@triton.jit
def _accumulate_t(acc_t, p0, p1, p2, p3, w_rows, s_rows, stride_s_k, kk, K,
                  NH: tl.constexpr, EVEN_K: tl.constexpr):  # fmt: skip
    """acc_t + W[:, k0:k0+4 NH] @ x[:, k0:k0+4 NH].T for K step kk (k0 = 4 NH kk), x given as its 4 phase
    tiles (module docstring)."""
    h, s = _load_halves(w_rows, s_rows, stride_s_k, kk, K, NH, EVEN_K)
    sc = _as_bf16(_scale_bits(s))
    if INTERPRET:
        renorm = RENORM
    else:
        renorm = tl.full([], RENORM, tl.bfloat16)
    acc_t = tl.dot(_as_bf16(_code_bits(h, 0)) * renorm * sc, tl.trans(p0), acc_t)
    acc_t = tl.dot(_as_bf16(_code_bits(h, 1)) * renorm * sc, tl.trans(p1), acc_t)
    acc_t = tl.dot(_as_bf16(_code_bits(h, 2)) * renorm * sc, tl.trans(p2), acc_t)
    acc_t = tl.dot(_as_bf16(_code_bits(h, 3)) * renorm * sc, tl.trans(p3), acc_t)
    return acc_t


@triton.jit
def mx_gemm_swap(
    acc1, acc2, x_rows, x_ok, stride_x_k, w1_rows, s1_rows, w2_rows, s2_rows, stride_s_k, K,
    TWO: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr,
):  # fmt: skip
    """(acc1 + x @ W1.T, acc2 + x @ W2.T if TWO) over the whole K, computed transposed (module docstring);
    w*_rows byte pointers to 2-byte aligned code rows (the launcher checks), s*_rows to the scale rows."""
    NH: tl.constexpr = BLOCK_K // 4
    w1_h = w1_rows.to(tl.pointer_type(tl.uint16))
    w2_h = w2_rows.to(tl.pointer_type(tl.uint16))
    acc1_t = tl.trans(acc1)
    acc2_t = tl.trans(acc2)
    for kk in range(0, tl.cdiv(K, BLOCK_K)):
        k0 = kk * BLOCK_K
        kel = k0 + tl.arange(0, BLOCK_K)
        if EVEN_K:
            xm = x_ok[:, None]
        else:
            xm = x_ok[:, None] & (kel < K)[None, :]
        x = tl.load(x_rows[:, None] + kel[None, :] * stride_x_k, mask=xm, other=0.0)
        if INTERPRET:  # bf16 arithmetic on raw bit patterns there (docs/bugs.md#facts-triton-interpreter)
            x = x.to(tl.float32)
        p0, p1, p2, p3 = _phases(x)
        acc1_t = _accumulate_t(acc1_t, p0, p1, p2, p3, w1_h, s1_rows, stride_s_k, kk, K, NH, EVEN_K)
        if TWO:  # the up rows reuse the phase tiles already in registers
            acc2_t = _accumulate_t(acc2_t, p0, p1, p2, p3, w2_h, s2_rows, stride_s_k, kk, K, NH, EVEN_K)
    return tl.trans(acc1_t), tl.trans(acc2_t)
