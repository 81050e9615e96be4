"""MXFP4 decode with the weights as the MMA's first operand (Mxfp4Config.decode == "swapped",
DECODE_SWAPPED(_PLAIN)), bf16 only.

The packed decode (_mxfp4_packed.py) feeds the decoded weights to the MMA as its second operand:
out = x @ W.T. At decode sizes the activation tile is then the first operand, and on sm90 that is mma.sync
(BLOCK_M 16 is below wgmma's 64 rows): every warp reads the whole (16, 128) activation tile from shared memory
at every K step (ldmatrix), 15 of its 16 rows zeros at one token, and permutes its K order with byte
shuffles (docs/mxfp4.md, "Not done": session 23's profile of one token has L1/TEX at 70.7% against DRAM 25.5%).
This decode computes the transposed product, out.T = W @ x.T:

    A = the decoded weight rows (R, 128) per step     R = 2 BLOCK_N (gate and up rows together) or BLOCK_N
    B = x.T (128, BLOCK_M)                            the activation rows as loaded, read by the MMA unit
    acc (R, BLOCK_M) fp32 -> transposed once after the K loop

On sm90 with 4 warps and R >= 64 Triton emits wgmma with A in registers and B from shared memory: the
activation tile is read once per warpgroup by the tensor cores, in K order, and the MMAs run asynchronously
beside the next decode. On other targets the same code is mma.sync / MFMA with A in registers.

The wgmma A operand (16-bit, Triton's kWidth 2) gives a thread, per 32-block b of a row, the elements
2c, 2c + 1, 2c + 8, 2c + 9, 2c + 16, 2c + 17, 2c + 24, 2c + 25 (c = lane % 4): 8 elements, one code word.
mxfp4_pack's "mma_a" order stores exactly those in word (b, c) (word element q + 4p = block element
8q + 2c + p), so _pair_bits(B, q) is the MMA register holding elements (8q + 2c, 8q + 2c + 1) as decoded:
no K permutation of either operand. Words are word-major per step (4c + b), the scales as in the packed
decode: word_bits, word_eightfold, scaled_weights and _scale_tile are shared with it.

    per step kk:   B (R, 16) uint32 = words 4c + b of the R rows       one 16-byte load per thread and row
                   s (R, 16) uint8  = their blocks' E8M0 codes          one 4-byte load per thread and row
                   A = bits of _pair_bits(B, q), q < 4, to K order; * 2^126 * 2^(s - 127)   (bf16, exact)
                   acc = A @ x[:, 128 kk : 128 kk + 128].T + acc

The first step is peeled off the loop (its dot starts the accumulator): with the loop's zero-trip path
setting the accumulator to zeros, ptxas serializes every wgmma of the loop ("non wgmma instructions defining
accumulator registers of a wgmma between start and end of the pipeline stage", C7515). Peeled, the loop's
wgmmas overlap (AOT, triton 3.6 and 3.9, sm90). K >= 1, so the peeled step always exists.
"""

from __future__ import annotations

import triton
import triton.language as tl

from moe_cts.kernels._mxfp4_decode import _scale_tile
from moe_cts.kernels._mxfp4_packed import BLOCKS, STEP, scaled_weights, word_bits, word_eightfold
from moe_cts.kernels._mxfp4_swar import load_x_tile


@triton.jit
def _a_order(t, R: tl.constexpr):
    """(R, 16, 2, 2, 2) indexed (row, 4c + b, p, q0, q1) -> (R, 128) in K order 32b + 8q + 2c + p,
    q = 2 q1 + q0 (module docstring)."""
    t = tl.reshape(t, (R, BLOCKS, BLOCKS, 2, 2, 2))  # (row, c, b, p, q0, q1)
    return tl.reshape(tl.permute(t, (0, 2, 5, 4, 1, 3)), (R, STEP))  # (row, b, q1, q0, c, p)


@triton.jit
def _weights(B, s, PLAIN: tl.constexpr):
    """(R, 128) weights in K order (bf16; fp32 under the interpreter) from the words B (R, 16) uint32 in the
    "mma_a" order and the scale codes s (R, 16) uint8 of their blocks; PLAIN: every code is in [1, 254]."""
    R: tl.constexpr = B.shape[0]
    return scaled_weights(
        _a_order(word_bits(B), R), _a_order(word_eightfold(_scale_tile(s, "bf16", PLAIN)), R)
    )


@triton.jit
def _rows_step(words, s_rows, kk, PLAIN: tl.constexpr, W_GROUP: tl.constexpr):
    """A (R, 128) of K step kk: the decoded rows of words (G, BLOCK_N) uint32 pointers, s_rows (G, BLOCK_N)
    uint8 to their packed scale rows, R = G BLOCK_N (row g BLOCK_N + n = words[g, n]). The rows stay a 2-D
    tile of pointers up to the loads. A row's steps are W_GROUP rows' steps apart (mxfp4_pack's tile-major
    groups; 1: the row-major packed copy)."""
    G: tl.constexpr = words.shape[0]
    BLOCK_N: tl.constexpr = words.shape[1]
    j = tl.arange(0, BLOCKS * BLOCKS)[None, None, :]  # 4c + b
    B = tl.load(words[:, :, None] + (kk * (BLOCKS * BLOCKS * W_GROUP) + j))
    # uint8 on purpose, as in the packed decode: the narrowest load sets the operand's kWidth
    s = tl.load(s_rows[:, :, None] + (kk * BLOCKS + j % BLOCKS))
    R: tl.constexpr = G * BLOCK_N
    return _weights(tl.reshape(B, (R, BLOCKS * BLOCKS)), tl.reshape(s, (R, BLOCKS * BLOCKS)), PLAIN)


@triton.jit
def mx_gemm_swapped(
    acc1, acc2, x_rows, x_ok, stride_x_k, w1_rows, s1_rows, w2_step, s2_step, K,
    TWO: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr, PLAIN: tl.constexpr, W_GROUP: tl.constexpr,
):  # fmt: skip
    """(x @ W1.T, x @ W2.T if TWO) over the whole K, computed as (W1; W2) @ x.T; w1_rows byte pointers to the
    code rows in the "mma_a" packed order (kernels/mxfp4_pack.py), s1_rows to the packed scale rows (uint8);
    W2's rows are w1_rows + w2_step, its scale rows s1_rows + s2_step (scalars: the pointer tile keeps its
    alignment, so its loads stay vector copies; joined or selected row pointers lost it in the AOT compile and
    the scale codes became byte loads outside the pipeline).
    acc1 / acc2 come in as zeros (_mx_gemm starts them so) and are replaced; acc2 is returned as it came
    unless TWO."""
    tl.static_assert(BLOCK_K == STEP, "the swapped decode's BLOCK_K is its packing step, 128")
    BLOCK_N: tl.constexpr = w1_rows.shape[0]
    if TWO:  # gate and up rows in one operand: rows [0, BLOCK_N) of W1, then BLOCK_N of W2
        g = tl.arange(0, 2)[:, None]
        w_rows = w1_rows[None, :] + g * w2_step
        s_rows = s1_rows[None, :] + g * s2_step
    else:
        w_rows = w1_rows[None, :]
        s_rows = s1_rows[None, :]
    words = w_rows.to(tl.pointer_type(tl.uint32))
    xt = tl.trans(load_x_tile(x_rows, x_ok, stride_x_k, 0, K, STEP, EVEN_K))
    acc = tl.dot(_rows_step(words, s_rows, 0, PLAIN, W_GROUP), xt)  # the peeled first step (module docstring)
    for kk in range(1, tl.cdiv(K, STEP)):
        xt = tl.trans(load_x_tile(x_rows, x_ok, stride_x_k, kk * STEP, K, STEP, EVEN_K))
        acc = tl.dot(_rows_step(words, s_rows, kk, PLAIN, W_GROUP), xt, acc)
    if TWO:
        gate, up = tl.split(tl.permute(tl.reshape(acc, (2, BLOCK_N, acc.shape[1])), (1, 2, 0)))
        acc1 = tl.trans(gate)
        acc2 = tl.trans(up)
    else:
        acc1 = tl.trans(acc)
    return acc1, acc2
