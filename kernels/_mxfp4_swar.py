"""MXFP4 decode two elements per 32-bit integer op (Mxfp4Config.decode == "swar", DECODE_SWAR), bf16 only.

The byte decode (_mxfp4_decode.py) spends its integer ops one element at a time, and 16-bit values cost the
compiler byte / half-word shuffles (PRMT) on NVIDIA. Here the packed codes are read as 32-bit words (8 e2m1
codes along K; the launcher checks 4-byte alignment) and each op works on two codes at once, one per 16-bit
half ("SIMD within a register"), the carry never crossing a half:

    B   = word i of column n          element 8i + q in bits 4q .. 4q+3, q < 8
    Y_q = (B >> 4q) & 0x000F000F      q < 4: element 8i + q in the low half, 8i + q + 4 in the high half
    t   = Y & 0x00070007              magnitude codes; sign bits 3 / 19 -> 15 / 31: (Y << 12) & 0x80008000
    v   = (t << 6) + 0x3F003F00       t >= 2: bf16 bits of 2^(e-1) (1 + m/2) (exponent e + 126, mantissa m)
    big = ((t + 0x00060006) & 0x00080008) * 0x1FFF     0xFFF8 in a half where t >= 2, else 0
    one = (t & 0x00010001) * 0x3F00                    0x3F00 (0.5) in a half where t is odd
    r   = (v & big) | (one & ~big) | sign              t = 0 -> 0, t = 1 -> 0.5 (v's low 3 bits are 0)

~12 integer ops per word of two elements. The halves become two bf16 tensors, are multiplied by the bf16 scale
of their 32-block (exact: _mxfp4_decode.py docstring) and meet x's columns of the same phase:

    x @ W.T = sum_{q < 8} x[:, q::8] @ W[:, q::8].T          8 dots of K = BLOCK_K / 8 per K step

so BLOCK_K >= 128 (a dot needs K >= 16). SCALE_ON_WEIGHTS only: a 32-block holds 4 elements per phase, too
few for a dot per block (SCALE_ON_ACC stays on the byte decode). Under the interpreter (INTERPRET) bits widen
to fp32 and the multiply is in fp32, as in the byte decode.
"""

from __future__ import annotations

import triton
import triton.language as tl

from moe_cts.kernels._common import INTERPRET
from moe_cts.kernels._mxfp4_decode import _scale_tile

WORDS_PER_BLOCK = tl.constexpr(4)  # 32-bit words of packed codes per 32-element E8M0 block
RENORM = tl.constexpr(2.0**126)  # e2m1 bits at bf16's exponent bits 7-8 read as e2m1 * 2^-126


@triton.jit
def _e2m1_pair_bits(B, q: tl.constexpr):
    """Codes q and q + 4 of words B (uint32) as bf16 bits of e2m1 * 2^-126 in the low / high halves:
    magnitude bits e e m at bf16 bits 8 7 6 (the exponent's low two bits and the mantissa's top bit), sign at
    bit 15. Two shifts and two masks per word, both halves at once."""
    if q <= 1:
        mag = B << (6 - 4 * q)
    else:
        mag = B >> (4 * q - 6)
    return (mag & 0x01C001C0) | ((B << (12 - 4 * q)) & 0x80008000)


@triton.jit
def _half_as_float(bits16):
    """e2m1 values from uint32 holding e2m1 * 2^-126 bf16 bits in the low 16 bits: the bits as bf16 times
    2^126 (fp32 under the interpreter). Exact: the product has 2 significant bits and lies in [0.5, 6]."""
    if INTERPRET:
        v = (bits16 << 16).to(tl.float32, bitcast=True) * RENORM
    else:
        v = bits16.to(tl.uint16).to(tl.bfloat16, bitcast=True) * tl.full([], RENORM, tl.bfloat16)
    return v


@triton.jit
def _load_words(w_rows, s_rows, stride_s_k, k0, K, NB: tl.constexpr, EVEN_K: tl.constexpr):
    """words (NB, 4, BLOCK_N) uint32 of elements [k0, k0 + 32 NB) and their scale codes (NB, 1, BLOCK_N).
    w_rows are uint32 pointers to 4-byte aligned, K-contiguous code rows. Blocks past K: code 0, scale 127."""
    jb = tl.arange(0, NB)[:, None, None]
    jw = tl.arange(0, WORDS_PER_BLOCK)[None, :, None]
    w_ptrs = w_rows[None, None, :] + (k0 // 8 + jb * WORDS_PER_BLOCK + jw)
    s_ptrs = s_rows[None, None, :] + (k0 // 32 + jb) * stride_s_k
    if EVEN_K:
        b = tl.load(w_ptrs)
        s = tl.load(s_ptrs)
    else:
        ok = (k0 + jb * 32) < K
        b = tl.load(w_ptrs, mask=ok, other=0)
        s = tl.load(s_ptrs, mask=ok, other=127)
    return b, s


@triton.jit
def _load_x_phase(x_rows, x_ok, stride_x_k, k0, K, q, NW: tl.constexpr, EVEN_K: tl.constexpr):
    """x[:, k0 + 8i + q], i < NW: (BLOCK_M, NW) in the activation dtype (fp32 under the interpreter)."""
    kel = k0 + 8 * tl.arange(0, NW) + q
    if EVEN_K:
        mask = x_ok[:, None]
    else:
        mask = x_ok[:, None] & (kel < K)[None, :]
    x = tl.load(x_rows[:, None] + kel[None, :] * stride_x_k, mask=mask, other=0.0)
    if INTERPRET:  # the interpreter computes bf16 on raw bit patterns (docs/bugs.md#facts-triton-interpreter)
        x = x.to(tl.float32)
    return x


@triton.jit
def mx_accumulate_swar(
    acc1, acc2, x_rows, x_ok, stride_x_k, w1_rows, s1_rows, w2_rows, s2_rows, stride_s_k, k0, K,
    TWO: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr,
):  # fmt: skip
    """(acc1 + x[:, k0:k0+BLOCK_K] @ W1.T, acc2 + ... @ W2.T if TWO) for one K step (module docstring);
    w*_rows uint32 pointers to the code rows, s*_rows uint8 pointers to the scale rows."""
    NB: tl.constexpr = BLOCK_K // 32
    NW: tl.constexpr = BLOCK_K // 8
    b1, s1 = _load_words(w1_rows, s1_rows, stride_s_k, k0, K, NB, EVEN_K)
    sc1 = _scale_tile(s1, "bf16")
    BLOCK_N: tl.constexpr = b1.shape[2]
    if TWO:
        b2, s2 = _load_words(w2_rows, s2_rows, stride_s_k, k0, K, NB, EVEN_K)
        sc2 = _scale_tile(s2, "bf16")
    for q in tl.static_range(4):
        x_lo = _load_x_phase(x_rows, x_ok, stride_x_k, k0, K, q, NW, EVEN_K)  # element 8i + q
        x_hi = _load_x_phase(x_rows, x_ok, stride_x_k, k0, K, q + 4, NW, EVEN_K)  # element 8i + q + 4
        r = _e2m1_pair_bits(b1, q)
        acc1 = tl.dot(x_lo, tl.reshape(_half_as_float(r & 0xFFFF) * sc1, (NW, BLOCK_N)), acc1)
        acc1 = tl.dot(x_hi, tl.reshape(_half_as_float(r >> 16) * sc1, (NW, BLOCK_N)), acc1)
        if TWO:  # the up tile reuses the x phases already in registers
            r = _e2m1_pair_bits(b2, q)
            acc2 = tl.dot(x_lo, tl.reshape(_half_as_float(r & 0xFFFF) * sc2, (NW, BLOCK_N)), acc2)
            acc2 = tl.dot(x_hi, tl.reshape(_half_as_float(r >> 16) * sc2, (NW, BLOCK_N)), acc2)
    return acc1, acc2
