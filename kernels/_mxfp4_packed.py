"""MXFP4 decode straight into the MMA operand layout (Mxfp4Config.decode == "packed", DECODE_PACKED(_PLAIN)), bf16
only.

The swar decode (_mxfp4_swar.py) decodes in the layout its code words were loaded in, then joins the tiles
back to K order; that tile's layout is not the dot's, so every decoded weight goes through shared memory
before the MMA (a store and a load of 2 bytes per weight; on the H200 the shared-memory pipe was the decode
sizes' limit, docs/mxfp4.md). This decode reads the codes in the packed layout (kernels/mxfp4_pack.py: per
128-element step, word c of 32-block b at 4c + b), so a (16 words, BLOCK_N) tile of them is naturally laid
out with b in a thread's registers, c on lanes 0-1 and the column on lanes 2-4: for Triton's mma.sync B operand
with kWidth 8 (8 consecutive K per thread, lanes 0-1 over the four 8-element groups of 32, columns on lanes
2-4) the decoded tile then needs no data movement between threads. TTGIR on sm90, triton 3.6 and 3.9: no
local_alloc for the weights; the decoded tile feeds tt.dot from registers.

    B    = word c of block b (uint32)            its 8 codes at mxfp4_pack.NIBBLE_PLACES
    r_q  = _pair_bits(B, q), q < 4               bf16 bits of e2m1 * 2^-126 of elements 8c + q (low half)
                                                 and 8c + q + 4 (high): 1-2 shifts and 1-2 masks (the table
                                                 in mxfp4_pack's docstring)
    s_b  = the E8M0 code of block b              a thread's 4 codes: one 32-bit load (mxfp4_pack.pack_scales)
    w    = bf16(r_q) * 2^126 * 2^(s_b - 127)     as in swar: exact, one packed multiply (HMUL2) each;
                                                 2^(s_b - 127) as s_b << 7 where every code is in [1, 254]
                                                 (PLAIN, DECODE_PACKED_PLAIN), else with the selects for 0, 255

A register r_q holds elements q and q + 4 of the word's 8, not the pair (k, k + 1) an MMA register holds. So
the K order inside each 8-element group is permuted, k' = 2q + p <- k = q + 4p, in the weights and in the
activation tile alike (a permutation of the dot's K axis: the same products, another order of the fp32 sums).
Each r_q is then one B register as decoded.

Where the K step's instructions go (sm90 SASS per thread, BLOCK_M 16, BLOCK_N 64, AOT; triton 3.6 / 3.9 give
the same counts within 1%):

    kernel    session 23 (reference nibble order, selects)   session 24 (NIBBLE_PLACES, PLAIN)
    gate_up   616: LOP3 128, ISETP 40, SEL 38, SHF 32, ...   488: LOP3 96, SHF 24-26, ISETP 3-8, SEL 5-6, ...
    down      356                                            285-290

Half the issue rate goes to the integer ALU pipe (LOP3, SHF, ISETP, SEL, PRMT) on sm90, and at decode sizes
these kernels issue mostly ALU work: session 23's ALU count (~290 per gate_up step) was about half its issue
slots. The placed nibbles and the plain scales take ~90 ALU operations off each gate_up step; the H200 gave
1.60x -> 1.74x of bf16 at T = 16 for it (docs/mxfp4.md, session 24).

The 2^126 cannot be folded into the scale in general: 2^(s - 1) leaves bf16's range for codes above 128.
Folding it where every code allows (one multiply per pair) measured no faster on the H200 (session 23,
docs/mxfp4.md): LLVM packed only part of those multiplies into bf16x2 ones and the compiler swapped register
halves around the rest (session 24, on the placed nibbles: 176 PRMT per gate_up step, 553 instructions).

BLOCK_K is the packing step, 128. Past K (K % 128 != 0) the packed rows hold code 0, the activation loads 0 and
the packed scales hold code 127; no load but the activation's is masked. Under the interpreter (INTERPRET) the
bits widen to fp32 and the multiplies are fp32, exact as well (the interpreter computes bf16 arithmetic on raw
bit patterns: docs/bugs.md#facts-triton-interpreter).
"""

from __future__ import annotations

import triton
import triton.language as tl

from moe_cts.kernels._common import INTERPRET
from moe_cts.kernels._mxfp4_decode import _scale_tile
from moe_cts.kernels._mxfp4_swar import RENORM, load_x_tile

STEP = tl.constexpr(128)  # elements per packed step (kernels/mxfp4_pack.PACK_K)
BLOCKS = tl.constexpr(4)  # 32-blocks per step, and 32-bit words per block


MAG = tl.constexpr(0x01C001C0)  # bf16 bits 6-8 of both halves: e2m1's magnitude (m, e0, e1)
SIGN = tl.constexpr(0x80008000)  # bit 15 of both halves


@triton.jit
def _pair_bits(B, q: tl.constexpr):
    """Register q of packed words B (uint32, codes at mxfp4_pack.NIBBLE_PLACES): bf16 bits of e2m1 * 2^-126 of
    elements 8c + q (low half) and 8c + q + 4 (high half). q = 0, 1: one shift and one mask; q = 2: two masks
    and a shift; q = 3: two shifts and two masks."""
    if q == 0:
        r = (B << 6) & (MAG | SIGN)
    elif q == 1:
        r = (B << 3) & (MAG | SIGN)
    elif q == 2:
        r = (B & MAG) | ((B << 5) & SIGN)
    else:
        r = ((B >> 7) & MAG) | ((B << 4) & SIGN)
    return r


@triton.jit
def _halves(r):
    """(..., 2) uint16: the low and high 16 bits of r (uint32): elements q and q + 4 of a decoded word."""
    return tl.join(r.to(tl.uint16), (r >> 16).to(tl.uint16))


@triton.jit
def _step_order(t, BLOCK_N: tl.constexpr):
    """(16, BLOCK_N, 2, 2, 2) indexed (4c + b, n, p, q0, q1) -> (128, BLOCK_N) in K order 32b + 8c + 2q + p,
    q = 2 q1 + q0 (module docstring)."""
    t = tl.reshape(t, (BLOCKS, BLOCKS, BLOCK_N, 2, 2, 2))  # (c, b, n, p, q0, q1)
    return tl.reshape(tl.permute(t, (1, 0, 5, 4, 3, 2)), (STEP, BLOCK_N))  # (b, c, q1, q0, p, n)


@triton.jit
def word_bits(B):
    """(..., 2, 2, 2) uint16 indexed (..., p, q0, q1): half p of register q = 2 q1 + q0 of each word of B,
    the bf16 bits of e2m1 * 2^-126 of its element q + 4p (_pair_bits). Shared with the swapped decode."""
    return tl.join(tl.join(_halves(_pair_bits(B, 0)), _halves(_pair_bits(B, 1))),
                   tl.join(_halves(_pair_bits(B, 2)), _halves(_pair_bits(B, 3))))  # fmt: skip


@triton.jit
def word_eightfold(t):
    """t (...) -> (..., 2, 2, 2): a word's value for each of its 8 elements, in word_bits' order."""
    t = tl.join(t, t)
    return tl.join(tl.join(t, t), tl.join(t, t))


@triton.jit
def _as_float(bits16):
    """uint32 / uint16 holding bf16 bits in the low 16 -> bf16 (fp32 under the interpreter, the same value)."""
    if INTERPRET:
        v = (bits16.to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    else:
        v = bits16.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    return v


@triton.jit
def scaled_weights(bits, scale):
    """bf16(bits) * 2^126 * scale: the weights from word_bits and the 2^(s - 127) of word_eightfold(_scale_tile)
    in the same order (bf16, exact; fp32 under the interpreter). Shared with the swapped decode."""
    w = _as_float(bits)
    w = w * (RENORM if INTERPRET else tl.full([], RENORM, tl.bfloat16))
    return w * scale


@triton.jit
def _weights(B, s, BLOCK_N: tl.constexpr, PLAIN: tl.constexpr):
    """(128, BLOCK_N) weights in K' order (bf16; fp32 under the interpreter) from the packed words B
    (16, BLOCK_N) uint32, rows 4c + b, and the scale codes s (16, BLOCK_N) uint8 of their blocks b; PLAIN:
    every code is in [1, 254] (_scale_tile)."""
    return scaled_weights(
        _step_order(word_bits(B), BLOCK_N),
        _step_order(word_eightfold(_scale_tile(s, "bf16", PLAIN)), BLOCK_N),
    )


@triton.jit
def _step_order_x(x, BLOCK_M: tl.constexpr):
    """The activation tile (BLOCK_M, 128) in the weights' K' order: k' = 2q + p <- k = q + 4p per 8 columns."""
    x = tl.reshape(x, (BLOCK_M, STEP // 8, 2, 4))  # (m, group, p, q)
    return tl.reshape(tl.permute(x, (0, 1, 3, 2)), (BLOCK_M, STEP))


@triton.jit
def _accumulate(acc, x, w_words, s_rows, kk, PLAIN: tl.constexpr, W_GROUP: tl.constexpr):
    """acc + x @ W[:, 128 kk : 128 kk + 128].T for one weight: w_words (BLOCK_N,) uint32 pointers to its packed
    code rows, s_rows (uint8) to its packed scale rows. The padded rows hold whole steps: no mask. A row's steps
    are W_GROUP rows' steps apart (mxfp4_pack's tile-major groups; 1: row-major)."""
    BLOCK_N: tl.constexpr = w_words.shape[0]
    j = tl.arange(0, BLOCKS * BLOCKS)[:, None]  # 4c + b
    B = tl.load(w_words[None, :] + (kk * (BLOCKS * BLOCKS * W_GROUP) + j))
    # A thread's four codes (b = 0..3) are 4 consecutive bytes: one 32-bit load where the rows are 16-byte
    # aligned (pack_scales pads them so). Loaded as uint8 on purpose: Triton sizes the dot operand's kWidth
    # from the narrowest load that feeds it, and 8 bits give kWidth 8, a whole code word per thread (a uint32
    # load of the four codes gave a smaller kWidth and warp shuffles of the decoded tile;
    # tests/aot/test_mxfp4_packed_layout.py holds the layout).
    s = tl.load(s_rows[None, :] + (kk * BLOCKS + j % BLOCKS))
    return tl.dot(x, _weights(B, s, BLOCK_N, PLAIN), acc)


@triton.jit
def mx_gemm_packed(
    acc1, acc2, x_rows, x_ok, stride_x_k, w1_rows, s1_rows, w2_rows, s2_rows, K,
    TWO: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr, PLAIN: tl.constexpr, W_GROUP: tl.constexpr,
):  # fmt: skip
    """(acc1 + x @ W1.T, acc2 + x @ W2.T if TWO) over the whole K; w*_rows byte pointers to the packed code
    rows (kernels/mxfp4_pack.py: 4-byte aligned, whole steps), s*_rows to the packed scale rows (uint8)."""
    tl.static_assert(BLOCK_K == STEP, "the packed decode's BLOCK_K is its packing step, 128")
    BLOCK_M: tl.constexpr = x_rows.shape[0]
    w1_words = w1_rows.to(tl.pointer_type(tl.uint32))
    w2_words = w2_rows.to(tl.pointer_type(tl.uint32))
    for kk in range(0, tl.cdiv(K, STEP)):
        x = _step_order_x(load_x_tile(x_rows, x_ok, stride_x_k, kk * STEP, K, STEP, EVEN_K), BLOCK_M)
        acc1 = _accumulate(acc1, x, w1_words, s1_rows, kk, PLAIN, W_GROUP)
        if TWO:  # the up tile reuses the x tile already in registers
            acc2 = _accumulate(acc2, x, w2_words, s2_rows, kk, PLAIN, W_GROUP)
    return acc1, acc2
