"""Triton bodies of the MXFP4 grouped GEMMs (launchers: kernels/mxfp4_gemm.py).

Weights are OCP MX: e2m1 codes two per byte along K (element 2i in the low nibble, 2i+1 in the high one)
and one E8M0 scale code per 1 x 32 block along K, W[n, k] = e2m1(q[n, k]) * 2^(s[n, k // 32] - 127).
Activations are bf16 / fp16, unquantized. How the weights are decoded in registers (DECODE, the config's
`decode`, recorded in it):

    "fp32"    (_mx_accumulate, the first version) per K step the packed bytes of a (BLOCK_K / 2, BLOCK_N)
              tile, both nibbles to fp32, one scale code gathered per byte; the activation tile split into
              its even and odd columns, so no interleave of the decoded weights is needed:
                  x @ W.T  =  x[:, 0::2] @ lo(W).T  +  x[:, 1::2] @ hi(W).T     lo / hi = low / high nibbles
    "native"  (_mxfp4_decode.py) the same split; nibbles straight to the dot dtype's 16-bit bits, one scale
              code per (32-block, column), the scale multiplied in the dot dtype
    "swar"    (_mxfp4_swar.py) bf16 with SCALE_ON_WEIGHTS: codes read as 32-bit words, two codes per integer
              op, decoded tiles back in K order in registers, one dot per K step
    "packed"  (_mxfp4_packed.py) swar's arithmetic on the codes in the packed layout (kernels/mxfp4_pack.py),
              decoded straight into the MMA operand layout: no shared-memory trip for the decoded tile; the
              default on CUDA for bf16 with SCALE_ON_WEIGHTS where BLOCK_K is 128. Its scales are a padded
              copy too (rows of whole 16-byte words: a thread's four codes in one load, no mask)
    "swapped" (_mxfp4_swapped.py) the packed decode's arithmetic with the weights as the MMA's first operand,
              out.T = W @ x.T (wgmma with the weights in registers on sm90), on codes packed in the "mma_a"
              order; opt-in until timed

Where the scale goes (SCALE_AT, chosen by the launcher and recorded in the config):

    SCALE_ON_WEIGHTS   w = e2m1 * 2^(s-127), in the dot dtype, one dot (pair) per BLOCK_K. Exact for bf16
                       (fp32's exponent range: every E8M0 code but the NaN code 255); what triton_kernels
                       does for bf16 x mxfp4 on Hopper. The fast path.
    SCALE_ON_ACC       one dot pair per 32-block on the bare e2m1 values (exact in fp16 and bf16), the fp32
                       partial times 2^(s-127) added to the accumulator. Needed for fp16 activations:
                       6 * 2^(s-127) leaves fp16's range (65504 .. 2^-24) for s outside ~[114, 140].

    SCALE_IN_MMA       tl.dot_scaled(x, None, "bf16" | "fp16", codes, scales, "e2m1"): the packed codes and
                       the E8M0 codes go to the dot as stored. Native scaled MMA on sm100 / gfx950; Triton
                       decomposes it (upcast, then a plain dot) elsewhere. Opt-in (config dot="dot_scaled"):
                       compiled for every target, checked on the interpreter, never timed on a GPU here.

Under the Triton interpreter (INTERPRET) the activations are upcast to fp32 right after their loads and the
decoded weights stay fp32: the interpreter computes bf16 arithmetic on raw bit patterns
(docs/bugs.md#facts-triton-interpreter). The decode itself is integer bit assembly, exact everywhere.
Slot walking, GROUP_M swizzle, activation and 64-bit row offsets are those of _grouped_gemm_kernels.py.
"""

from __future__ import annotations

import triton
import triton.language as tl

from moe_cts.kernels._common import INTERPRET
from moe_cts.kernels._grouped_gemm_kernels import _activate, _tile_coords, _tile_expert, _tile_rows
from moe_cts.kernels._mxfp4_decode import e8m0_f32, mx_accumulate_native
from moe_cts.kernels._mxfp4_packed import mx_gemm_packed
from moe_cts.kernels._mxfp4_swapped import mx_gemm_swapped
from moe_cts.kernels._mxfp4_swar import mx_gemm_swar

SCALE_ON_WEIGHTS = tl.constexpr(0)
SCALE_ON_ACC = tl.constexpr(1)
SCALE_IN_MMA = tl.constexpr(2)  # tl.dot_scaled: packed codes and scale codes straight into the dot
#: Mxfp4Config.scale_at -> the int passed as SCALE_AT=
SCALE_AT = {"weights": SCALE_ON_WEIGHTS.value, "accumulator": SCALE_ON_ACC.value, "mma": SCALE_IN_MMA.value}
#: Mxfp4Config.decode -> the int passed as DECODE=: "fp32" = _mx_accumulate below, "native" =
#: _mxfp4_decode.mx_accumulate_native (bits of the dot dtype, one scale per 32-block and column), "swar" =
#: _mxfp4_swar.mx_gemm_swar (32-bit words, two codes per integer op; bf16, SCALE_ON_WEIGHTS), "packed" =
#: _mxfp4_packed.mx_gemm_packed (swar's arithmetic on packed codes, into the MMA operand layout; BLOCK_K 128),
#: "swapped" = _mxfp4_swapped.mx_gemm_swapped (the same on the weights as the MMA's first operand)
DECODE = {"fp32": 0, "native": 1, "swar": 2, "packed": 3, "swapped": 5}
DECODE_NATIVE = tl.constexpr(1)
DECODE_SWAR = tl.constexpr(2)
DECODE_PACKED = tl.constexpr(3)
#: the packed decode on scales with no code 0 or 255 (mxfp4_pack.PackedScales.plain), picked by the launcher
#: from the data, never by a config
DECODE_PACKED_PLAIN = tl.constexpr(4)
DECODE_SWAPPED = tl.constexpr(5)
DECODE_SWAPPED_PLAIN = tl.constexpr(6)  # as DECODE_PACKED_PLAIN, for the swapped decode
MX_BLOCK = tl.constexpr(32)  # elements along K per E8M0 scale (OCP MX)


@triton.jit
def _e2m1_to_f32(nib):
    """fp32 value of 4-bit e2m1 codes (uint32 in [0, 16)), assembled from bit fields:
    sign s, exponent e (2 bits, bias 1), mantissa m (1 bit); e > 0: 2^(e-1) (1 + m/2), e = 0: m / 2."""
    mag = nib & 7
    e = mag >> 1
    m = mag & 1
    normal = ((e + 126) << 23) | (m << 22)  # fp32 exponent e - 1 + 127
    bits = tl.where(e > 0, normal, m * (126 << 23))  # 0.5 = 2^-1, or +0
    bits = bits | ((nib & 8) << 28)  # the sign bit
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _load_x_pair(x_rows, x_ok, stride_x_k, k0, K, HALF: tl.constexpr, EVEN_K: tl.constexpr):
    """(even, odd) columns k0 + 2j and k0 + 2j + 1, j < HALF, of the rows x_rows (BLOCK_M,) pointers:
    two (BLOCK_M, HALF) tiles in the activation dtype (fp32 under the interpreter)."""
    kel = k0 + 2 * tl.arange(0, HALF)
    if EVEN_K:
        mask = x_ok[:, None]
    else:
        mask = x_ok[:, None] & (kel < K)[None, :]
    xe = tl.load(x_rows[:, None] + kel[None, :] * stride_x_k, mask=mask, other=0.0)
    xo = tl.load(x_rows[:, None] + (kel + 1)[None, :] * stride_x_k, mask=mask, other=0.0)
    if INTERPRET:  # the interpreter computes bf16 on raw bit patterns (docs/bugs.md#facts-triton-interpreter)
        xe = xe.to(tl.float32)
        xo = xo.to(tl.float32)
    return xe, xo


@triton.jit
def _mx_accumulate(
    acc,
    xe,
    xo,
    w_rows,  # (BLOCK_N,) pointers to the packed code rows of the output columns
    s_rows,  # (BLOCK_N,) pointers to their E8M0 scale rows
    stride_w_k,
    stride_s_k,
    k0,  # first element (multiple of 32) of this sub-tile
    K,
    HALF: tl.constexpr,
    SCALE_AT: tl.constexpr,
    EVEN_K: tl.constexpr,
):
    """acc + x[:, k0:k0+2*HALF] @ W[:, k0:k0+2*HALF].T for one sub-tile (module docstring).
    SCALE_ON_ACC requires 2 * HALF == 32 (one scale per output column)."""
    j = tl.arange(0, HALF)
    if EVEN_K:
        b = tl.load(w_rows[None, :] + (k0 // 2 + j)[:, None] * stride_w_k)
    else:
        k_ok = (k0 + 2 * j) < K
        b = tl.load(w_rows[None, :] + (k0 // 2 + j)[:, None] * stride_w_k, mask=k_ok[:, None], other=0)
    b = b.to(tl.uint32)
    lo = _e2m1_to_f32(b & 15)  # element k0 + 2j
    hi = _e2m1_to_f32(b >> 4)  # element k0 + 2j + 1
    if SCALE_AT == SCALE_ON_WEIGHTS:
        blk = (k0 + 2 * j) // MX_BLOCK
        if EVEN_K:
            s = tl.load(s_rows[None, :] + blk[:, None] * stride_s_k)
        else:  # code 127 = 1.0 on masked rows: their codes are 0 already
            s = tl.load(s_rows[None, :] + blk[:, None] * stride_s_k, mask=k_ok[:, None], other=127)
        sc = e8m0_f32(s.to(tl.uint32))
        lo = lo * sc
        hi = hi * sc
    if not INTERPRET:  # exact: e2m1 (x 2^e in bf16's range) has 2 significant bits
        lo = lo.to(xe.dtype)
        hi = hi.to(xe.dtype)
    if SCALE_AT == SCALE_ON_WEIGHTS:
        acc = tl.dot(xe, lo, acc)
        acc = tl.dot(xo, hi, acc)
    else:
        part = tl.dot(xe, lo)
        part = tl.dot(xo, hi, part)
        blk = k0 // MX_BLOCK
        if not EVEN_K:  # a sub-tile past K has part == 0: any in-range scale leaves it 0 (K % 32 == 0)
            blk = tl.minimum(blk, K // MX_BLOCK - 1)
        s = tl.load(s_rows + blk * stride_s_k)
        acc += part * e8m0_f32(s.to(tl.uint32))[None, :]
    return acc


@triton.jit
def _mx_dot_scaled(
    acc, x_rows, x_ok, stride_x_k, w_rows, s_rows, stride_w_k, stride_s_k, k0, K,
    X_FMT: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr,
):  # fmt: skip
    """acc + x[:, k0:k0+BLOCK_K] @ W.T by tl.dot_scaled: x (BLOCK_M, BLOCK_K) as loaded (no interpreter
    upcast: the interpreter's dot_scaled decodes its operands itself), codes (BLOCK_K/2, BLOCK_N) packed
    along K, scales (BLOCK_N, BLOCK_K/32)."""
    kel = k0 + tl.arange(0, BLOCK_K)
    kb = k0 // 2 + tl.arange(0, BLOCK_K // 2)
    ks = k0 // MX_BLOCK + tl.arange(0, BLOCK_K // MX_BLOCK)
    if EVEN_K:
        x = tl.load(x_rows[:, None] + kel[None, :] * stride_x_k, mask=x_ok[:, None], other=0.0)
        w = tl.load(w_rows[None, :] + kb[:, None] * stride_w_k)
        s = tl.load(s_rows[:, None] + ks[None, :] * stride_s_k)
    else:
        x = tl.load(
            x_rows[:, None] + kel[None, :] * stride_x_k, mask=x_ok[:, None] & (kel < K)[None, :], other=0.0
        )
        w = tl.load(w_rows[None, :] + kb[:, None] * stride_w_k, mask=(2 * kb < K)[:, None], other=0)
        s = tl.load(s_rows[:, None] + ks[None, :] * stride_s_k, mask=(ks * MX_BLOCK < K)[None, :], other=127)
    return tl.dot_scaled(x, None, X_FMT, w, s, "e2m1", acc)


@triton.jit
def _mx_gemm(
    x_rows,  # (BLOCK_M,) pointers to the activation rows
    x_ok,  # (BLOCK_M,) live rows
    stride_x_k,
    w1_rows,  # (BLOCK_N,) pointers to packed code rows; w2_rows / s2_rows only read when TWO
    s1_rows,
    w2_rows,
    s2_rows,
    w2_step,  # w2_rows - w1_rows and s2_rows - s1_rows as scalars (TWO, the swapped decode)
    s2_step,
    stride_w_k,
    stride_s_k,
    K,
    TWO: tl.constexpr,  # a second weight (gate_up's up rows) on the same activation tiles
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SUB_K: tl.constexpr,
    SCALE_AT: tl.constexpr,
    EVEN_K: tl.constexpr,
    X_FMT: tl.constexpr,  # "bf16" | "fp16": the activation format (tl.dot_scaled, the native decode)
    DECODE: tl.constexpr,  # 0 = fp32 (_mx_accumulate), DECODE_NATIVE, _SWAR, _PACKED(_PLAIN), _SWAPPED(_PLAIN)
    W_GROUP: tl.constexpr,  # rows per group of the packed / swapped decodes' tile-major codes (1: row-major)
):
    """(x @ W1.T, x @ W2.T) in fp32 over the whole K (acc2 stays zero unless TWO)."""
    acc1 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # One if / elif / else and one return: the compiler generates code after a taken early return too, and
    # the native decode does not compile with SCALE_AT = SCALE_IN_MMA (a reshape of the wrong size).
    if SCALE_AT == SCALE_IN_MMA:
        for kk in range(0, tl.cdiv(K, BLOCK_K)):
            k0 = kk * BLOCK_K
            acc1 = _mx_dot_scaled(
                acc1, x_rows, x_ok, stride_x_k, w1_rows, s1_rows, stride_w_k, stride_s_k, k0, K,
                X_FMT, BLOCK_K, EVEN_K,
            )  # fmt: skip
            if TWO:
                acc2 = _mx_dot_scaled(
                    acc2, x_rows, x_ok, stride_x_k, w2_rows, s2_rows, stride_w_k, stride_s_k, k0, K,
                    X_FMT, BLOCK_K, EVEN_K,
                )  # fmt: skip
    elif DECODE == DECODE_SWAR:  # packed codes read as 32-bit words (the launcher checks 4-byte alignment)
        acc1, acc2 = mx_gemm_swar(
            acc1, acc2, x_rows, x_ok, stride_x_k, w1_rows, s1_rows, w2_rows, s2_rows, stride_s_k, K,
            TWO, BLOCK_K, EVEN_K,
        )  # fmt: skip
    elif DECODE >= DECODE_SWAPPED:  # w*_rows into the "mma_a" packed copy, s*_rows into the packed scales
        acc1, acc2 = mx_gemm_swapped(
            acc1, acc2, x_rows, x_ok, stride_x_k, w1_rows, s1_rows, w2_step, s2_step, K, TWO, BLOCK_K, EVEN_K,
            DECODE == DECODE_SWAPPED_PLAIN, W_GROUP,
        )  # fmt: skip
    elif DECODE >= DECODE_PACKED:  # w*_rows, s*_rows point into the packed copies (the launcher passes them)
        acc1, acc2 = mx_gemm_packed(
            acc1, acc2, x_rows, x_ok, stride_x_k, w1_rows, s1_rows, w2_rows, s2_rows, K, TWO, BLOCK_K, EVEN_K,
            DECODE == DECODE_PACKED_PLAIN, W_GROUP,
        )  # fmt: skip
    else:
        acc1, acc2 = _mx_portable(
            acc1, acc2, x_rows, x_ok, stride_x_k, w1_rows, s1_rows, w2_rows, s2_rows, stride_w_k, stride_s_k,
            K, TWO, BLOCK_K, SUB_K, SCALE_AT, EVEN_K, X_FMT, DECODE,
        )  # fmt: skip
    return acc1, acc2


@triton.jit
def _mx_portable(
    acc1, acc2, x_rows, x_ok, stride_x_k, w1_rows, s1_rows, w2_rows, s2_rows, stride_w_k, stride_s_k, K,
    TWO: tl.constexpr, BLOCK_K: tl.constexpr, SUB_K: tl.constexpr, SCALE_AT: tl.constexpr,
    EVEN_K: tl.constexpr, X_FMT: tl.constexpr, DECODE: tl.constexpr,
):  # fmt: skip
    """The portable decodes (fp32, native) over the whole K, SUB_K elements per step (even / odd columns)."""
    for kk in range(0, tl.cdiv(K, BLOCK_K)):
        for sub in tl.static_range(BLOCK_K // SUB_K):
            k0 = kk * BLOCK_K + sub * SUB_K
            xe, xo = _load_x_pair(x_rows, x_ok, stride_x_k, k0, K, SUB_K // 2, EVEN_K)
            if DECODE == DECODE_NATIVE:
                acc1 = mx_accumulate_native(
                    acc1, xe, xo, w1_rows, s1_rows, stride_w_k, stride_s_k, k0, K,
                    SUB_K // 2, SCALE_AT, EVEN_K, X_FMT,
                )  # fmt: skip
                if TWO:  # the up tile reuses the x tiles already in registers
                    acc2 = mx_accumulate_native(
                        acc2, xe, xo, w2_rows, s2_rows, stride_w_k, stride_s_k, k0, K,
                        SUB_K // 2, SCALE_AT, EVEN_K, X_FMT,
                    )  # fmt: skip
            else:
                acc1 = _mx_accumulate(
                    acc1, xe, xo, w1_rows, s1_rows, stride_w_k, stride_s_k, k0, K,
                    SUB_K // 2, SCALE_AT, EVEN_K,
                )  # fmt: skip
                if TWO:
                    acc2 = _mx_accumulate(
                        acc2, xe, xo, w2_rows, s2_rows, stride_w_k, stride_s_k, k0, K,
                        SUB_K // 2, SCALE_AT, EVEN_K,
                    )  # fmt: skip
    return acc1, acc2


@triton.jit
def _group_offset(rows, stride_group, W_GROUP: tl.constexpr, BLOCK_K: tl.constexpr):
    """Byte offset of each row's first step in codes stored tile-major (mxfp4_pack.pack_codes, group > 1):
    group rows // W_GROUP, then the row's BLOCK_K / 2 bytes inside the group's step."""
    return (rows // W_GROUP) * stride_group + (rows % W_GROUP) * (BLOCK_K // 2)


@triton.jit(do_not_specialize=["num_experts"])  # E = 1 (shared expert) keeps the routed binary
def mx_gate_up_kernel(
    x_ptr,  # (T, H) bf16 / fp16 input rows
    w13_ptr,  # (E, R, H / 2) uint8 packed e2m1, R = 2I gated (concat or interleaved rows) / I non-gated
    s13_ptr,  # (E, R, H / 32) uint8 E8M0 scale codes
    b13_ptr,  # (E, R) bias (any float dtype), or any pointer when not HAS_BIAS
    act_ptr,  # (T*k, I) output, row = flat assignment id
    sorted_ids_ptr,  # (P,) int32 flat id per slot, num_assignments = pad
    expert_of_block_ptr,  # (P // BLOCK_M,) int32, -1 = unused tile
    num_padded_ptr,  # (1,) int32 used slots
    num_assignments,  # T * k
    top_k,
    I,
    H,
    num_m_blocks,
    num_experts,  # E: a tile whose expert is outside [0, E) is unused (_tile_expert)
    stride_x_t,
    stride_x_h,
    stride_w13_e,
    stride_w13_r,
    stride_w13_hb,  # per packed byte along H
    stride_s13_e,
    stride_s13_r,
    stride_s13_hb,  # per 32-block along H
    stride_b13_e,
    stride_b13_r,
    stride_act_a,
    stride_act_i,
    swiglu_alpha,
    swiglu_limit,
    GATED: tl.constexpr,
    INTERLEAVED: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,
    SCALE_AT: tl.constexpr,
    EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SUB_K: tl.constexpr,  # elements per dot pair: BLOCK_K (SCALE_ON_WEIGHTS) or 32 (SCALE_ON_ACC)
    GROUP_M: tl.constexpr,
    X_FMT: tl.constexpr,  # "bf16" | "fp16" (read by SCALE_IN_MMA and the native decode)
    DECODE: tl.constexpr,  # Mxfp4Config.decode as DECODE[...]
    W_GROUP: tl.constexpr,  # Mxfp4Config.row_group: packed / swapped tile-major codes (1: row-major)
):
    """act[a] = activation(x[a // k] @ W13[e, gate rows].T (+b), x[a // k] @ W13[e, up rows].T (+b)),
    W13 the dequantized MXFP4 weight; dequant -> bias -> activation in fp32 -> cast."""
    pid_m, pid_n = _tile_coords(tl.program_id(0), num_m_blocks, I, BLOCK_N, GROUP_M)
    if pid_m * BLOCK_M >= tl.load(num_padded_ptr):  # past the used slots
        return
    expert = _tile_expert(expert_of_block_ptr, pid_m, num_experts)
    if expert < 0:  # unused tile
        return
    ids, row_ok, tok, offs_n, offs_n_w, _ = _tile_rows(
        sorted_ids_ptr, pid_m, pid_n, num_assignments, top_k, I, True, BLOCK_M, BLOCK_N, BLOCK_K
    )
    if INTERLEAVED:  # gate = rows 0::2, up = rows 1::2 (gpt-oss)
        gate_rows = offs_n_w * 2
        up_step = 1
    else:  # gate = rows [0, I), up = rows [I, 2I)
        gate_rows = offs_n_w
        up_step = I
    up_rows = gate_rows + up_step
    e64 = expert.to(tl.int64)
    x_rows = x_ptr + tok * stride_x_t
    if W_GROUP == 1:
        wg = w13_ptr + e64 * stride_w13_e + gate_rows * stride_w13_r
        wu = w13_ptr + e64 * stride_w13_e + up_rows * stride_w13_r
        w_up = up_step * stride_w13_r
    else:  # tile-major groups of W_GROUP rows (packed / swapped decodes): stride_w13_r is a group's stride
        wg = w13_ptr + e64 * stride_w13_e + _group_offset(gate_rows, stride_w13_r, W_GROUP, BLOCK_K)
        # interleaved: the up row follows its (even) gate row in the same group; concatenated: I / W_GROUP
        # groups on (the launcher checks that W_GROUP divides I)
        if INTERLEAVED:
            w_up = BLOCK_K // 2
        else:
            w_up = (I // W_GROUP) * stride_w13_r
        wu = wg + w_up
    sg = s13_ptr + e64 * stride_s13_e + gate_rows * stride_s13_r
    su = s13_ptr + e64 * stride_s13_e + up_rows * stride_s13_r

    acc_g, acc_u = _mx_gemm(
        x_rows, row_ok, stride_x_h, wg, sg, wu, su, w_up, up_step * stride_s13_r,
        stride_w13_hb, stride_s13_hb, H, GATED, BLOCK_M, BLOCK_N, BLOCK_K, SUB_K, SCALE_AT, EVEN_K, X_FMT, DECODE,
        W_GROUP,
    )  # fmt: skip

    if HAS_BIAS:  # after the dequantized product (docs/bugs.md#bug-03-bias-before-dequant)
        b_base = b13_ptr + e64 * stride_b13_e
        acc_g += tl.load(b_base + gate_rows * stride_b13_r).to(tl.float32)[None, :]
        if GATED:
            acc_u += tl.load(b_base + up_rows * stride_b13_r).to(tl.float32)[None, :]
    act = _activate(acc_g, acc_u, swiglu_alpha, swiglu_limit, GATED, ACTIVATION)
    out_ptrs = act_ptr + ids.to(tl.int64)[:, None] * stride_act_a + offs_n[None, :] * stride_act_i
    tl.store(out_ptrs, act.to(act_ptr.dtype.element_ty), mask=row_ok[:, None] & (offs_n[None, :] < I))


@triton.jit(do_not_specialize=["num_experts"])  # E = 1 (shared expert) keeps the routed binary
def mx_down_kernel(
    a_ptr,  # (T*k, I) activations, row = flat assignment id
    w2_ptr,  # (E, H, I / 2) uint8 packed e2m1
    s2_ptr,  # (E, H, I / 32) uint8 E8M0 scale codes
    b2_ptr,  # (E, H) bias, or any pointer when not HAS_BIAS
    out_ptr,  # (T*k, H) output, row = flat assignment id
    route_w_ptr,  # (T*k,) float32 router weights, or any pointer when not MUL_WEIGHT
    sorted_ids_ptr,  # (P,) int32
    expert_of_block_ptr,  # (P // BLOCK_M,) int32
    num_padded_ptr,  # (1,) int32
    num_assignments,
    H,
    I,
    num_m_blocks,
    num_experts,  # E: a tile whose expert is outside [0, E) is unused (_tile_expert)
    stride_a_a,
    stride_a_i,
    stride_w2_e,
    stride_w2_h,
    stride_w2_ib,  # per packed byte along I
    stride_s2_e,
    stride_s2_h,
    stride_s2_ib,  # per 32-block along I
    stride_b2_e,
    stride_b2_h,
    stride_out_a,
    stride_out_h,
    HAS_BIAS: tl.constexpr,
    MUL_WEIGHT: tl.constexpr,
    SCALE_AT: tl.constexpr,
    EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SUB_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    X_FMT: tl.constexpr,
    DECODE: tl.constexpr,
    W_GROUP: tl.constexpr,
):
    """out[a] = (act[a] @ W2[e].T + b2[e]) * (route_w[a] if MUL_WEIGHT): dequant -> bias -> weight in fp32."""
    pid_m, pid_n = _tile_coords(tl.program_id(0), num_m_blocks, H, BLOCK_N, GROUP_M)
    if pid_m * BLOCK_M >= tl.load(num_padded_ptr):  # past the used slots
        return
    expert = _tile_expert(expert_of_block_ptr, pid_m, num_experts)
    if expert < 0:  # unused tile
        return
    _, row_ok, rows, offs_n, offs_n_w, _ = _tile_rows(
        sorted_ids_ptr, pid_m, pid_n, num_assignments, 1, H, False, BLOCK_M, BLOCK_N, BLOCK_K
    )
    e64 = expert.to(tl.int64)
    a_rows = a_ptr + rows * stride_a_a
    if W_GROUP == 1:
        w = w2_ptr + e64 * stride_w2_e + offs_n_w * stride_w2_h
    else:  # tile-major groups of W_GROUP rows (packed / swapped decodes): stride_w2_h is a group's stride
        w = w2_ptr + e64 * stride_w2_e + _group_offset(offs_n_w, stride_w2_h, W_GROUP, BLOCK_K)
    s = s2_ptr + e64 * stride_s2_e + offs_n_w * stride_s2_h
    acc, _ = _mx_gemm(
        a_rows, row_ok, stride_a_i, w, s, w, s, 0, 0, stride_w2_ib, stride_s2_ib, I,
        False, BLOCK_M, BLOCK_N, BLOCK_K, SUB_K, SCALE_AT, EVEN_K, X_FMT, DECODE, W_GROUP,
    )  # fmt: skip

    if HAS_BIAS:
        acc += tl.load(b2_ptr + e64 * stride_b2_e + offs_n_w * stride_b2_h).to(tl.float32)[None, :]
    if MUL_WEIGHT:  # in fp32, before the cast (docs/bugs.md#bug-02-router-weight-after-cast)
        acc = acc * tl.load(route_w_ptr + rows, mask=row_ok, other=0.0)[:, None]
    out_ptrs = out_ptr + rows[:, None] * stride_out_a + offs_n[None, :] * stride_out_h
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & (offs_n[None, :] < H))
