"""MXFP4 decode two elements per 32-bit integer op (Mxfp4Config.decode == "swar", DECODE_SWAR), bf16 only.

The byte decode (_mxfp4_decode.py) spends its integer ops one element at a time, and sub-word values cost the
compiler byte / half-word shuffles (PRMT on NVIDIA). Here the packed codes are read as 32-bit words (8 e2m1
codes along K; the launcher checks 4-byte alignment) and each op works on two codes at once, one per 16-bit
half ("SIMD within a register"):

    B    = word i of column n                element 8i + q in bits 4q .. 4q+3, q < 8
    r_q  = ((B << (6 - 4q)) & 0x01C001C0)    q < 4: code q's bits e e m at bf16 bits 8 7 6 (low half) and
         | ((B << (12 - 4q)) & 0x80008000)          code q + 4's (high half); its sign bit at bit 15 / 31
    w    = bf16(half of r_q) * 2^126 * 2^(s - 127)       one packed bf16 multiply each (HMUL2 on sm90)

Bits e e m read as a bf16 are e2m1 * 2^-126 exactly: exponent field e, mantissa m / 2; e = 0 is bf16's
subnormal m * 2^-127, as e2m1's subnormal 0.5 is m * 2^-1. So 2 shifts and 2 masks per word (the sm90 loop
has 4 integer instructions per word) and 2 multiplies per element pair, no compare and no select. The
multiplies are exact (2 significant bits, results in bf16's range wherever the fp32 decode's are finite) and
rely on bf16 arithmetic keeping subnormal inputs, the default everywhere we compile for: PTX mul.bf16x2 /
fma.bf16x2 have no flush-to-zero, and Triton's ROCm backend compiles with denormal-fp-math-f32 "ieee" unless
allow_flush_denorm is set (tests/kernels/test_mxfp4_decode.py checks every code and scale on the device).

The eight (NB, 4, BLOCK_N) tiles go back to K order with tl.join (new axis last, in registers), one permute
and one reshape, and meet one contiguous x tile: one dot per K step and weight, as the float kernel; any
BLOCK_K >= 32. The code words and x go through the compiler's cp.async pipeline; the 1-byte scale codes are
read one K step ahead in registers (mx_gemm_swar). SCALE_ON_WEIGHTS only (SCALE_ON_ACC stays on the byte
decode). SASS in the sm90 K loop (gpt-oss-120b, T = 1, BLOCK_K 128): 5.0 / 5.6 instructions per weight
element in gate_up / down, everything included (the fp32 decode: 17.7 / 18.4).
Under the interpreter (INTERPRET) bits widen to fp32 and the multiplies are fp32, exact as well.
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
def _weights(b, sc, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    """(BLOCK_K, BLOCK_N) weights in K order (bf16; fp32 under the interpreter) from words b (NB, 4, BLOCK_N)
    uint32 and the scales sc (NB, 1, BLOCK_N) of their 32-blocks."""
    r0 = _e2m1_pair_bits(b, 0)
    r1 = _e2m1_pair_bits(b, 1)
    r2 = _e2m1_pair_bits(b, 2)
    r3 = _e2m1_pair_bits(b, 3)
    w0 = _half_as_float(r0 & 0xFFFF) * sc
    w1 = _half_as_float(r1 & 0xFFFF) * sc
    w2 = _half_as_float(r2 & 0xFFFF) * sc
    w3 = _half_as_float(r3 & 0xFFFF) * sc
    w4 = _half_as_float(r0 >> 16) * sc
    w5 = _half_as_float(r1 >> 16) * sc
    w6 = _half_as_float(r2 >> 16) * sc
    w7 = _half_as_float(r3 >> 16) * sc
    # q = 4a + 2b + c; tl.join appends its new axis last, so the outermost join (a) is the last axis:
    # (NB, 4, BN, c, b, a) -> (NB, 4, a, b, c, BN) -> K index 8 (4 nb + word) + q
    w = tl.join(tl.join(tl.join(w0, w1), tl.join(w2, w3)), tl.join(tl.join(w4, w5), tl.join(w6, w7)))
    w = tl.permute(w, (0, 1, 5, 4, 3, 2))
    return tl.reshape(w, (BLOCK_K, BLOCK_N))


@triton.jit
def _load_words(w_rows, k0, K, NB: tl.constexpr, EVEN_K: tl.constexpr):
    """words (NB, 4, BLOCK_N) uint32 of elements [k0, k0 + 32 NB): w_rows are uint32 pointers to 4-byte
    aligned, K-contiguous code rows. Blocks past K read code 0."""
    jb = tl.arange(0, NB)[:, None, None]
    jw = tl.arange(0, WORDS_PER_BLOCK)[None, :, None]
    w_ptrs = w_rows[None, None, :] + (k0 // 8 + jb * WORDS_PER_BLOCK + jw)
    if EVEN_K:
        b = tl.load(w_ptrs)
    else:
        b = tl.load(w_ptrs, mask=(k0 + jb * 32) < K, other=0)
    return b


@triton.jit
def _load_scales(s_rows, stride_s_k, k0, K, NB: tl.constexpr):
    """E8M0 codes (NB, 1, BLOCK_N) of the 32-blocks [k0, k0 + 32 NB); 127 (= 1.0) past K. Always masked: the
    loop reads the next step's codes ahead, past the last step too."""
    jb = tl.arange(0, NB)[:, None, None]
    return tl.load(s_rows[None, None, :] + (k0 // 32 + jb) * stride_s_k, mask=(k0 + jb * 32) < K, other=127)


@triton.jit
def load_x_tile(x_rows, x_ok, stride_x_k, k0, K, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr):
    """(BLOCK_M, BLOCK_K) activation columns [k0, k0 + BLOCK_K) of the live rows (0 past K and on dead rows), in
    their dtype on a GPU and in fp32 under the interpreter (it computes bf16 arithmetic on raw bit patterns:
    docs/bugs.md#facts-triton-interpreter). Shared by the swar and packed decodes."""
    kel = k0 + tl.arange(0, BLOCK_K)
    if EVEN_K:
        xm = x_ok[:, None]
    else:
        xm = x_ok[:, None] & (kel < K)[None, :]
    x = tl.load(x_rows[:, None] + kel[None, :] * stride_x_k, mask=xm, other=0.0)
    if INTERPRET:
        x = x.to(tl.float32)
    return x


@triton.jit
def _accumulate(acc, x, w_rows, s, k0, K, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr):
    """acc + x @ W[:, k0:k0+BLOCK_K].T for one weight: x (BLOCK_M, BLOCK_K), s its scale codes."""
    b = _load_words(w_rows, k0, K, BLOCK_K // 32, EVEN_K)
    BLOCK_N: tl.constexpr = b.shape[2]
    return tl.dot(x, _weights(b, _scale_tile(s, "bf16"), BLOCK_K, BLOCK_N), acc)


@triton.jit
def mx_gemm_swar(
    acc1, acc2, x_rows, x_ok, stride_x_k, w1_rows, s1_rows, w2_rows, s2_rows, stride_s_k, K,
    TWO: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr,
):  # fmt: skip
    """(acc1 + x @ W1.T, acc2 + x @ W2.T if TWO) over the whole K (module docstring); w*_rows byte pointers to
    the code rows (4-byte aligned: the launcher checks), s*_rows to the scale rows. The scale codes are 1-byte
    loads the compiler does not pipeline (cp.async moves 4 bytes or more): the loop loads the next step's in
    registers while this step computes, so their latency is not waited for once per step."""
    NB: tl.constexpr = BLOCK_K // 32
    w1_words = w1_rows.to(tl.pointer_type(tl.uint32))
    w2_words = w2_rows.to(tl.pointer_type(tl.uint32))
    s1 = _load_scales(s1_rows, stride_s_k, 0, K, NB)
    s2 = _load_scales(s2_rows, stride_s_k, 0, K, NB) if TWO else s1
    for kk in range(0, tl.cdiv(K, BLOCK_K)):
        k0 = kk * BLOCK_K
        s1_next = _load_scales(s1_rows, stride_s_k, k0 + BLOCK_K, K, NB)
        s2_next = _load_scales(s2_rows, stride_s_k, k0 + BLOCK_K, K, NB) if TWO else s1_next
        x = load_x_tile(x_rows, x_ok, stride_x_k, k0, K, BLOCK_K, EVEN_K)
        acc1 = _accumulate(acc1, x, w1_words, s1, k0, K, BLOCK_K, EVEN_K)
        if TWO:  # the up tile reuses the x tile already in registers
            acc2 = _accumulate(acc2, x, w2_words, s2, k0, K, BLOCK_K, EVEN_K)
        s1, s2 = s1_next, s2_next
    return acc1, acc2
