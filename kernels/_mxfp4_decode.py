"""MXFP4 weight decode straight into the dot dtype (Mxfp4Config.decode == "native", DECODE_NATIVE).

One K sub-tile of the portable MXFP4 GEMM (_mxfp4_gemm_kernels._mx_accumulate is the "fp32" twin kept for
comparison; _mxfp4_swar.py the faster bf16 decode). The fp32 decode spends per weight element a gather of
the E8M0 code (the same address 16 times per column and block), ~11 integer ops to build fp32 bits, 5 to
decode the scale, an fp32 multiply and a cast. Here:

    codes  (NB, 16, BLOCK_N) uint8         one 3-D load: block b, byte i of the block, column n
    scales (NB, 1, BLOCK_N)  uint8         one code per (32-block, column), broadcast over the 16 bytes
    t      = nibble & 7                     magnitude code; sign = nibble's bit 3 -> bit 15
    bits   = t < 2 ? t * HALF : (t << MSH) + HALF       16-bit float bits of e2m1(t), sign or-ed in
    w      = bits (as the dot dtype) * 2^(s-127)        SCALE_ON_WEIGHTS: one multiply in the dot dtype
    lo, hi = reshape(w, (BLOCK_K / 2, BLOCK_N))         for x[:, 0::2] and x[:, 1::2]

    dot dtype   MSH   HALF (bits of 0.5)   2^(s-127) bits                 e2m1(t), t >= 2 = 2^(e-1) (1 + m/2)
    bf16        6     0x3F00               s << 7; 0 -> 0x0040; 255 -> NaN  exponent e + 126, mantissa m
    fp16        9     0x3800               (never: SCALE_ON_ACC)            exponent e + 14, mantissa m

t << MSH puts e (t's bits 1-2) at the exponent's low bits and m (bit 0) at the mantissa's top bit; adding the
bits of 0.5 rebiases the exponent. t = 1 (0.5, e2m1's subnormal) and t = 0 take the select. ~7 integer ops per
element (mask, shift-add, compare, multiply, select, sign mask-shift-or) plus the multiply, on 32-bit ints
(uint16 ops cost the NVIDIA compiler extra half-word shuffles), truncated to 16 bits at the end. SASS
instructions per weight element in the sm90 K loop (gpt-oss-120b, T = 1): 14.4 / 15.2 (gate_up / down)
against the fp32 decode's 17.7 / 18.4.

Exactness: e2m1 has 2 significant bits, so e2m1 * 2^(s-127) is exact in bf16 wherever it is finite, subnormals
included (s = 0: the scale is bf16's subnormal 2^-127, as fp32's in the fp32 decode); 6 * 2^(s-127) overflows
for s >= 253 exactly as the fp32 decode does (fp32 and bf16 share the exponent range). Code 255 is NaN. fp16
never sees a scaled weight (SCALE_ON_ACC: fp32 partial * 2^(s-127)). Under the interpreter (INTERPRET) the bits
are widened to fp32 and the multiply is done in fp32 (the interpreter computes bf16 arithmetic on raw bit
patterns: docs/bugs.md#facts-triton-interpreter); the values are the same.
"""

from __future__ import annotations

import triton
import triton.language as tl

from moe_cts.kernels._common import INTERPRET

SCALE_ON_WEIGHTS = tl.constexpr(0)  # the SCALE_AT codes of _mxfp4_gemm_kernels.py
BYTES_PER_BLOCK = tl.constexpr(16)  # packed bytes per 32-element E8M0 block


@triton.jit
def _e2m1_bits(t, sign, MSH: tl.constexpr, HALF: tl.constexpr):
    """16-bit float bits (uint16) of e2m1 magnitude codes t (uint16 in [0, 8)) with `sign` (0 or 0x8000)
    or-ed in. MSH = mantissa bits - 1 of the target, HALF = its bits of 0.5 (module docstring table)."""
    v = (t << MSH) + HALF  # t >= 2: exponent e - 1 + bias, mantissa m
    v = tl.where(t < 2, t * HALF, v)  # 0 -> +0, 1 -> 0.5 (the product wraps only where it is not taken)
    return v | sign


@triton.jit
def _e8m0_bf16_bits(s):
    """bf16 bits (uint16) of 2^(s - 127) for E8M0 codes s (uint16): the exponent field is s; s = 0 is bf16's
    subnormal 2^-127 (mantissa bit 6), s = 255 is NaN (formats.e8m0_decode)."""
    bits = tl.where(s == 0, 0x0040, s << 7)
    return tl.where(s == 255, 0x7FC0, bits)


@triton.jit
def e8m0_f32(s):
    """2^(s - 127) as fp32 for E8M0 codes s (uint32): the exponent field is s itself; s = 0 is the fp32
    subnormal 2^-127 (bit 22), s = 255 is NaN (formats.e8m0_decode)."""
    bits = tl.where(s == 0, 1 << 22, s << 23)
    bits = tl.where(s == 255, 0x7FC00000, bits)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _decode_pair(b, X_FMT: tl.constexpr):
    """(lo, hi): the dot dtype's bits (uint16) of the low / high nibbles of packed bytes b (uint16)."""
    if X_FMT == "bf16":
        MSH: tl.constexpr = 6
        HALF: tl.constexpr = 0x3F00
    else:
        MSH: tl.constexpr = 9
        HALF: tl.constexpr = 0x3800
    lo = _e2m1_bits(b & 7, (b & 0x08) << 12, MSH, HALF)  # element 2j
    hi = _e2m1_bits((b >> 4) & 7, (b & 0x80) << 8, MSH, HALF)  # element 2j + 1
    return lo.to(tl.uint16), hi.to(tl.uint16)


@triton.jit
def _as_float(bits, X_FMT: tl.constexpr):
    """bits (uint16) as the dot dtype, or as fp32 under the interpreter (exact widening). One return: the
    compiler types every return of a function, taken or not."""
    if X_FMT == "bf16":
        if INTERPRET:
            v = (bits.to(tl.uint32) << 16).to(tl.float32, bitcast=True)
        else:
            v = bits.to(tl.bfloat16, bitcast=True)
    else:
        v = bits.to(tl.float16, bitcast=True)
        if INTERPRET:
            v = v.to(tl.float32)
    return v


@triton.jit
def _scale_tile(s, X_FMT: tl.constexpr, PLAIN: tl.constexpr = False):
    """2^(s - 127) in the dot dtype (fp32 under the interpreter) for E8M0 codes s (uint8). PLAIN: the caller
    knows every code is in [1, 254] (mxfp4_pack.PackedScales.plain), so the exponent field is the code
    itself and the two selects for codes 0 and 255 go (4 of the packed decode's ALU operations per code)."""
    s = s.to(tl.uint16)
    if INTERPRET:
        if PLAIN:
            sc = (s.to(tl.uint32) << 23).to(tl.float32, bitcast=True)
        else:
            sc = e8m0_f32(s.to(tl.uint32))
    else:
        if PLAIN:
            sc = (s << 7).to(tl.bfloat16, bitcast=True)
        else:
            sc = _e8m0_bf16_bits(s).to(tl.bfloat16, bitcast=True)
    return sc


@triton.jit
def _load_codes(w_rows, s_rows, stride_w_k, stride_s_k, k0, K, NB: tl.constexpr, EVEN_K: tl.constexpr):
    """codes (NB, 16, BLOCK_N) uint8 and their scale codes (NB, 1, BLOCK_N) uint8 of elements
    [k0, k0 + 32 NB). Blocks past K (K % 32 == 0) read code 0 and scale 127 (= 1.0): their products are 0."""
    jb = tl.arange(0, NB)[:, None, None]
    ji = tl.arange(0, BYTES_PER_BLOCK)[None, :, None]
    w_ptrs = w_rows[None, None, :] + (k0 // 2 + jb * BYTES_PER_BLOCK + ji) * stride_w_k
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
def mx_accumulate_native(
    acc, xe, xo, w_rows, s_rows, stride_w_k, stride_s_k, k0, K,
    HALF_K: tl.constexpr, SCALE_AT: tl.constexpr, EVEN_K: tl.constexpr, X_FMT: tl.constexpr,
):  # fmt: skip
    """acc + x[:, k0:k0+2*HALF_K] @ W[:, k0:k0+2*HALF_K].T for one sub-tile; xe / xo the even / odd columns
    of x (BLOCK_M, HALF_K) as _mxfp4_gemm_kernels._load_x_pair returns them. SCALE_ON_ACC (any SCALE_AT but
    SCALE_ON_WEIGHTS) requires 2 * HALF_K == 32: one scale per output column, applied to the fp32 partial."""
    NB: tl.constexpr = HALF_K // BYTES_PER_BLOCK
    b, s = _load_codes(w_rows, s_rows, stride_w_k, stride_s_k, k0, K, NB, EVEN_K)
    lo_bits, hi_bits = _decode_pair(b.to(tl.uint32), X_FMT)
    lo = _as_float(lo_bits, X_FMT)
    hi = _as_float(hi_bits, X_FMT)
    BLOCK_N: tl.constexpr = lo.shape[2]
    if SCALE_AT == SCALE_ON_WEIGHTS:  # exact in bf16 (module docstring); fp16 never takes this branch
        sc = _scale_tile(s, X_FMT)
        acc = tl.dot(xe, tl.reshape(lo * sc, (HALF_K, BLOCK_N)), acc)
        acc = tl.dot(xo, tl.reshape(hi * sc, (HALF_K, BLOCK_N)), acc)
    else:  # one return for both branches: the compiler types every return, taken or not
        part = tl.dot(xe, tl.reshape(lo, (HALF_K, BLOCK_N)))
        part = tl.dot(xo, tl.reshape(hi, (HALF_K, BLOCK_N)), part)
        acc += part * e8m0_f32(tl.reshape(s, (BLOCK_N,)).to(tl.uint32))[None, :]  # NB == 1
    return acc
