"""Triton bodies of the grouped GEMMs (launchers: kernels/grouped_gemm.py).

Both kernels walk the aligned slot list of moe_cts.kernels.metadata.AlignMeta: M tile `pid_m` covers slots
[pid_m * BLOCK_M, (pid_m + 1) * BLOCK_M), all of one expert (`expert_of_block[pid_m]`). A slot holds a
flat assignment id a = t * k + j, or the pad sentinel T * k, which is masked on every load and store.
Rows are addressed with 64-bit offsets: a * stride passes 2^31 at T = 50k, k = 8, H = 7168
(docs/bugs.md#bug-01-int32-address-overflow).

PERSISTENT (GemmTile.persistent > 0): the grid holds a few programs per SM instead of one per tile, and each
walks tiles pid, pid + grid, ... below num_padded (the used tiles only, in the GROUP_M order the one-tile grid
has):

    for tile in tl.range(pid, used_m_tiles * n_tiles, num_programs, flatten=True):
        pid_m, pid_n = _tile_coords(tile, used_m_tiles, N, BLOCK_N, GROUP_M)
        the one-tile kernel's body on (pid_m, pid_n)        # same loads, same dots: same bits per tile

flatten=True asks Triton to fuse the tile loop and the K loop into one loop and pipeline it, so the next
tile's first operand loads are in flight during this tile's epilogue (stores, activation, router weight):
the gain of persistent GEMMs where K loops are short (GEMM2's K = I). The tile body holds no branch around
its K loop (_live_expert says why).

HALF_TAIL (GemmTile.half_tail, one tile per program): the last M tile of an expert's slot run is padded to
BLOCK_M, and where its second half holds pad slots only it runs as a tile of BLOCK_M / 2 rows:

    if _pad_tail(pid_m):  tile body on (2 pid_m, pid_n) with BLOCK_M / 2    # slots pid_m BLOCK_M .. + BLOCK_M / 2
    else:                 tile body on (pid_m, pid_n) with BLOCK_M

Half the MMA work for such a tile; the same K order per output element. Why: at m = T k / E near BLOCK_M about
half the experts end in a tile of a few rows (DeepSeek-V3 at T = 4096 with BLOCK_M 128: counts ~ 128 +- 11), and
a compute-bound GEMM spends a full tile's MMAs on them. Both bodies are compiled into the kernel (registers and
shared memory: the larger one's).

MERGE_TAIL (GemmTile.merge_tail, with HALF_TAIL and descriptor weights): such a half tail is run by the program
of its expert's previous tile, in the same K loop, so the expert's weights stream once:

    if _merge_tail(pid_m) absorbed:  return                  # the previous program runs this half tail
    if merge:  one K loop, each weight box feeding two dots: slots pid_m BLOCK_M .. + BLOCK_M (acc) and
               the next tile's first BLOCK_M / 2 slots (acc2)

Why: in DeepSeek-V3's bf16 GEMM1 at T = 4096 both tiles of such an expert read its weights, and the second
read missed L2 when the two programs drifted apart: 18.9 GB from DRAM for 15.0 GB of weights, L2 at 98% of its
throughput (Nsight Compute on the H200, docs/measured/h200-session20/). The two dots are the ones the two
programs would run (same shapes, same K order): the same bits.
"""

from __future__ import annotations

import triton
import triton.language as tl

from moe_cts.kernels._common import INTERPRET, dot_acc, pdl_enter, trans_tile

# The ACTIVATION constexpr: named codes, read by _activate below and (through ACTIVATIONS) by the launcher.
# Ints, not strings: they keep AOT signatures and compile keys simple. Module globals read inside a
# @triton.jit body must be tl.constexpr.
ACT_SILU = tl.constexpr(0)
ACT_GELU = tl.constexpr(1)
ACT_GELU_TANH = tl.constexpr(2)
ACT_SWIGLU_OAI = tl.constexpr(3)
ACT_RELU = tl.constexpr(4)
#: MoESpec.activation -> the int passed as ACTIVATION=.
ACTIVATIONS = {
    "silu": ACT_SILU.value,
    "gelu": ACT_GELU.value,
    "gelu_tanh": ACT_GELU_TANH.value,
    "swiglu_oai": ACT_SWIGLU_OAI.value,
    "relu": ACT_RELU.value,
}


@triton.jit
def _tile_coords(pid, num_m_blocks, N, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """GROUP_M swizzle: GROUP_M consecutive M tiles share each N tile while it is hot in L2."""
    num_n_blocks = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * num_n_blocks
    group = pid // per_group
    first_m = group * GROUP_M
    group_size = tl.minimum(num_m_blocks - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_size
    pid_n = (pid % per_group) // group_size
    return pid_m, pid_n


@triton.jit
def _tile_rows(
    sorted_ids_ptr,
    pid_m,
    pid_n,
    num_assignments,
    top_k,
    N,
    BY_TOKEN: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Rows and column offsets of a live M tile (the kernels exit before calling it on a dead one: the exits
    stay in the kernels, a helper cannot end the program, and folding them into a helper as a returned
    flag measured 3-4 extra scalar instructions per program on gfx942):

        ids      (BLOCK_M,) flat assignment ids a of the tile's slots; row_ok = not the pad sentinel
        in_rows  (BLOCK_M,) int64 input row of each slot: the token a // top_k (BY_TOKEN, gate_up reads x)
                 or a itself (down reads the per-assignment activations; top_k is not read)
        offs_n   (BLOCK_N,) output columns; offs_n_w = offs_n % N: weight rows wrap so their loads need
                 no mask (the store masks offs_n >= N)
        offs_k   (BLOCK_K,) reduction offsets of the first K step"""
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    ids = tl.load(sorted_ids_ptr + offs_m)
    row_ok = ids < num_assignments
    if BY_TOKEN:
        in_rows = (ids // top_k).to(tl.int64)
    else:
        in_rows = ids.to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_n_w = offs_n % N
    offs_k = tl.arange(0, BLOCK_K)
    return ids, row_ok, in_rows, offs_n, offs_n_w, offs_k


@triton.jit
def _pad_tail(sorted_ids_ptr, pid_m, num_assignments, BLOCK_M: tl.constexpr):
    """True when the second half of M tile pid_m, slots [BLOCK_M / 2, BLOCK_M), holds pad slots only: the tail
    of an expert's slot run (HALF_TAIL). One (BLOCK_M / 2,) load of the slot ids and a min, whatever the
    metadata's layout: any live id there (dropped or non-local slots included) keeps the whole tile."""
    HALF: tl.constexpr = BLOCK_M // 2
    ids = tl.load(sorted_ids_ptr + pid_m * BLOCK_M + HALF + tl.arange(0, HALF))
    return tl.min(ids, axis=0) >= num_assignments


@triton.jit
def _tile_expert(expert_of_block_ptr, pid_m, num_experts):
    """The expert of M tile pid_m, -1 for an unused tile or an id outside [0, E): align writes only ids in
    range, but align.slot_meta's tiles are the caller's ids, unchecked (reading them on the host would sync),
    so the range test lives here, where every GEMM reads the id, and a bad id is one more unused tile."""
    expert = tl.load(expert_of_block_ptr + pid_m)
    return tl.where((expert >= 0) & (expert < num_experts), expert, -1)


@triton.jit
def _live_expert(expert, row_ok, PERSISTENT: tl.constexpr):
    """(expert, row_ok) of a tile whose expert_of_block entry the kernel has read. One tile per program: the
    kernel has returned on an unused tile (expert -1). PERSISTENT: the walk covers the used tiles only (tiles
    below num_padded, whose expert align sets); an expert read as -1 anyway (metadata built elsewhere) masks
    every row and reads expert 0's weights in bounds, so the tile computes zeros it never stores. The
    persistent walk cannot skip a tile with a branch: an `if` around the K loop keeps Triton from flattening
    the tile loop and the K loop into one pipelined loop (FuseNestedLoops does not look inside scf.if)."""
    if PERSISTENT:
        # broadcast before the compare: the interpreter's bool scalar & bool block is no valid mask dtype
        row_ok = row_ok & (tl.zeros_like(row_ok.to(tl.int32)) + expert >= 0)
        expert = tl.maximum(expert, 0)
    return expert, row_ok


@triton.jit
def _w13_rows(n, is_up, I, INTERLEAVED: tl.constexpr):
    """Weight row of output column n (wrapped modulo I: its loads need no mask, the store masks it) in the
    gate (is_up False) or up (is_up True) projection of a gated w13::

        concat       gate = n,   up = n + I       (rows [0, I) then [I, 2I))
        interleaved  gate = 2n,  up = 2n + 1      (rows 0::2 and 1::2)"""
    n = n % I
    up = is_up.to(tl.int32)
    if INTERLEAVED:
        return 2 * n + up
    else:
        return n + up * I


@triton.jit
def _split_gate_up(acc, GATED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """(BLOCK_M, 2 * BLOCK_N) -> the gate and up halves (GATED); a non-gated tile is the gate (up unused)."""
    if GATED:
        g, u = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N)), (0, 2, 1)))
        return g, u
    else:
        return acc, acc


@triton.jit
def _activate(gate, up, alpha, limit, GATED: tl.constexpr, ACTIVATION: tl.constexpr):
    """The expert activation in fp32 registers (moe_cts.reference.numpy_oracle.activate)."""
    if ACTIVATION == ACT_SWIGLU_OAI:  # (clamp(up, -l, l) + 1) * g * sigmoid(alpha * g), g = min(gate, l)
        g = tl.minimum(gate, limit)
        u = tl.minimum(tl.maximum(up, -limit), limit)
        a = (u + 1.0) * g * tl.sigmoid(alpha * g)
    else:
        if ACTIVATION == ACT_SILU:
            a = gate * tl.sigmoid(gate)
        elif ACTIVATION == ACT_GELU:  # exact, via erf
            a = 0.5 * gate * (1.0 + tl.math.erf(gate * 0.7071067811865476))
        elif ACTIVATION == ACT_GELU_TANH:  # tanh(z) = 2 * sigmoid(2z) - 1: portable, no libdevice tanh
            z = 0.7978845608028654 * (gate + 0.044715 * gate * gate * gate)
            a = 0.5 * gate * (1.0 + (2.0 * tl.sigmoid(2.0 * z) - 1.0))
        else:  # ACT_RELU
            a = tl.maximum(gate, 0.0)
        if GATED:
            a = a * up
    return a


@triton.jit
def _gate_up_bias(
    acc_g, acc_u, b_base, offs_n, I, stride_b_r, GATED: tl.constexpr, INTERLEAVED: tl.constexpr
):
    """acc_g + b13[gate row of each column], acc_u + b13[its up row] (GATED), in fp32 (rows as _w13_rows)."""
    n = offs_n % I
    if INTERLEAVED:
        gate_rows = 2 * n
    else:
        gate_rows = n
    acc_g += tl.load(b_base + gate_rows * stride_b_r).to(tl.float32)[None, :]
    if GATED:
        if INTERLEAVED:
            up_rows = gate_rows + 1
        else:
            up_rows = gate_rows + I
        acc_u += tl.load(b_base + up_rows * stride_b_r).to(tl.float32)[None, :]
    return acc_g, acc_u


@triton.jit
def _gate_up_ptr_loop(
    x_ptrs, row_ok, w13_ptr, expert, pid_n, I, H, stride_x_h, stride_w13_e, stride_w13_r, stride_w13_h,
    GATED: tl.constexpr, INTERLEAVED: tl.constexpr, DOT_PRECISION: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """gate_up_kernel's K loop with pointer loads of the weight tiles; returns the (gate, up) accumulators."""
    offs_k = tl.arange(0, BLOCK_K)
    w_base = w13_ptr + expert.to(tl.int64) * stride_w13_e
    # The B tile: gate rows then up rows (GATED), one (BLOCK_K, NB * BLOCK_N) tile and one dot per K step.
    # One dot of twice the width, not two dots, halves the MMA issues that re-read the x tile from shared
    # memory; each output still sums its own K products in K order (same bits as two dots: the MMA's
    # accumulation order for an element does not depend on the tile's width).
    NB: tl.constexpr = 2 if GATED else 1
    cols = tl.arange(0, NB * BLOCK_N)
    rows = _w13_rows(pid_n * BLOCK_N + cols % BLOCK_N, cols >= BLOCK_N, I, INTERLEAVED)
    w_ptrs = w_base + rows[None, :] * stride_w13_r + offs_k[:, None] * stride_w13_h

    acc = tl.zeros((BLOCK_M, NB * BLOCK_N), dtype=tl.float32)
    for kk in range(0, tl.cdiv(H, BLOCK_K)):
        if EVEN_K:
            x = tl.load(x_ptrs, mask=row_ok[:, None], other=0.0)
            w = tl.load(w_ptrs)
        else:
            k_ok = offs_k < H - kk * BLOCK_K
            x = tl.load(x_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            w = tl.load(w_ptrs, mask=k_ok[:, None], other=0.0)
        if (
            INTERPRET
        ):  # the interpreter computes bf16 on raw bit patterns (docs/bugs.md#facts-triton-interpreter)
            x = x.to(tl.float32)
            w = w.to(tl.float32)
        acc = dot_acc(x, w, acc, DOT_PRECISION)
        x_ptrs += BLOCK_K * stride_x_h
        w_ptrs += BLOCK_K * stride_w13_h
    return _split_gate_up(acc, GATED, BLOCK_M, BLOCK_N)


@triton.jit
def _w13_box(w_desc, expert, n0, k0, GATED: tl.constexpr, INTERLEAVED: tl.constexpr, BLOCK_N: tl.constexpr,
             BLOCK_K: tl.constexpr):  # fmt: skip
    """The (NB BLOCK_N, BLOCK_K) weight rows of output columns n0 .. n0 + BLOCK_N at K offset k0, one box of
    grouped_gemm.w13_desc's descriptor (NB = 2 gated, 1 not; rows in the order _gate_up_desc_loop describes):
    concat halves (E, 2, I, H) at [e, 0, n0, k0], else rows NB n0 .. of (E, R, H)."""
    NB: tl.constexpr = 2 if GATED else 1
    if GATED and not INTERLEAVED:
        return w_desc.load([expert, 0, n0, k0]).reshape(2 * BLOCK_N, BLOCK_K)
    else:
        return w_desc.load([expert, NB * n0, k0]).reshape(NB * BLOCK_N, BLOCK_K)


@triton.jit
def _gate_up_desc_loop(
    x_ptrs, row_ok, w_desc, expert, n0, I, H, stride_x_h,
    GATED: tl.constexpr, INTERLEAVED: tl.constexpr, DOT_PRECISION: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """gate_up_kernel's K loop with the weight tiles read through a tensor descriptor (W_DESC: TMA on sm90+,
    pointer loads where the target has none); returns the (gate, up) fp32 accumulators. One box and one dot
    per K step, NB BLOCK_N weight rows wide (NB = 2 gated, 1 not), as the pointer loop's B tile:

        layout        w_desc views w13 as        box                     box rows (= acc columns)
        concat        (E, 2, I, H)               (1, 2, BLOCK_N, BLOCK_K)  gate n0 .., then up I + n0 ..
        interleaved   (E, 2I, H)                 (1, 2 BLOCK_N, BLOCK_K)   2 n0, 2 n0 + 1, ...: gate and up
                                                                           alternate (split in pairs)
        non-gated     (E, I, H)                  (1, BLOCK_N, BLOCK_K)     n0 ..
        for each K step: x tile (BLOCK_M, BLOCK_K) gathered as in the pointer loop; acc += x @ box.T

    Rows past a half's (or the weight's) end and columns past H read as zeros (the descriptor's bounds); they
    reach only output columns >= I, which the store masks, or add zero products."""
    NB: tl.constexpr = 2 if GATED else 1
    acc = tl.zeros((BLOCK_M, NB * BLOCK_N), dtype=tl.float32)
    offs_k = tl.arange(0, BLOCK_K)
    for kk in range(0, tl.cdiv(H, BLOCK_K)):
        k0 = kk * BLOCK_K
        if EVEN_K:
            x = tl.load(x_ptrs, mask=row_ok[:, None], other=0.0)
        else:
            x = tl.load(x_ptrs, mask=row_ok[:, None] & (offs_k < H - k0)[None, :], other=0.0)
        w = _w13_box(w_desc, expert, n0, k0, GATED, INTERLEAVED, BLOCK_N, BLOCK_K)
        if INTERPRET:  # as in gate_up_kernel's pointer loop
            x = x.to(tl.float32)
            w = w.to(tl.float32)
        acc = dot_acc(x, trans_tile(w), acc, DOT_PRECISION)
        x_ptrs += BLOCK_K * stride_x_h
    if GATED and INTERLEAVED:  # columns 2j, 2j + 1 = gate j, up j
        g, u = tl.split(tl.reshape(acc, (BLOCK_M, BLOCK_N, 2)))
    else:  # the gate block, then the up block (as the pointer loop's)
        g, u = _split_gate_up(acc, GATED, BLOCK_M, BLOCK_N)
    return g, u


@triton.jit
def _gate_up_desc_loop2(
    x_ptrs, row_ok, x2_ptrs, row2_ok, w_desc, expert, n0, I, H, stride_x_h,
    GATED: tl.constexpr, INTERLEAVED: tl.constexpr, DOT_PRECISION: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """_gate_up_desc_loop on BLOCK_M rows (x_ptrs) and BLOCK_M / 2 more (x2_ptrs, MERGE_TAIL) of one expert: each
    K step's weight box feeds both dots. Returns (gate, up) of the first rows, then of the second."""
    NB: tl.constexpr = 2 if GATED else 1
    HALF: tl.constexpr = BLOCK_M // 2
    acc1 = tl.zeros((BLOCK_M, NB * BLOCK_N), dtype=tl.float32)
    acc2 = tl.zeros((HALF, NB * BLOCK_N), dtype=tl.float32)
    offs_k = tl.arange(0, BLOCK_K)
    for k_step in range(0, tl.cdiv(H, BLOCK_K)):  # the names differ from _gate_up_desc_loop's: the recall
        k0 = k_step * BLOCK_K  # catalog's mutations of that loop match one line each (conformance/recall)
        if EVEN_K:
            x = tl.load(x_ptrs, mask=row_ok[:, None], other=0.0)
            x2 = tl.load(x2_ptrs, mask=row2_ok[:, None], other=0.0)
        else:
            k_ok = (offs_k < H - k0)[None, :]
            x = tl.load(x_ptrs, mask=row_ok[:, None] & k_ok, other=0.0)
            x2 = tl.load(x2_ptrs, mask=row2_ok[:, None] & k_ok, other=0.0)
        w = _w13_box(w_desc, expert, n0, k0, GATED, INTERLEAVED, BLOCK_N, BLOCK_K)
        if INTERPRET:  # as in gate_up_kernel's pointer loop
            x = x.to(tl.float32)
            x2 = x2.to(tl.float32)
            w = w.to(tl.float32)
        wt = trans_tile(w)
        acc1 = dot_acc(x, wt, acc1, DOT_PRECISION)
        acc2 = dot_acc(x2, wt, acc2, DOT_PRECISION)
        x_ptrs += BLOCK_K * stride_x_h
        x2_ptrs += BLOCK_K * stride_x_h
    if GATED and INTERLEAVED:  # columns 2j, 2j + 1 = gate j, up j
        g, u = tl.split(tl.reshape(acc1, (BLOCK_M, BLOCK_N, 2)))
        g2, u2 = tl.split(tl.reshape(acc2, (HALF, BLOCK_N, 2)))
    else:
        g, u = _split_gate_up(acc1, GATED, BLOCK_M, BLOCK_N)
        g2, u2 = _split_gate_up(acc2, GATED, HALF, BLOCK_N)
    return g, u, g2, u2


@triton.jit(do_not_specialize=["num_experts"])  # E = 1 (shared expert) keeps the routed binary
def gate_up_kernel(
    x_ptr,  # (T, H) input rows
    w13_ptr,  # (E, R, H), R = 2I gated (concat or interleaved rows) / I non-gated
    w13_desc,  # tensor descriptor of w13 (W_DESC: _gate_up_desc_loop), else None
    b13_ptr,  # (E, R) bias, or any pointer when not HAS_BIAS
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
    stride_w13_h,
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
    DOT_PRECISION: tl.constexpr,
    EVEN_K: tl.constexpr,
    W_DESC: tl.constexpr,
    PERSISTENT: tl.constexpr,
    HALF_TAIL: tl.constexpr,
    MERGE_TAIL: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    PDL: tl.constexpr,
):
    """act[a] = activation(x[a // k] @ w13[e, gate rows].T (+b), x[a // k] @ w13[e, up rows].T (+b)).

    One tile per program, or PERSISTENT: a grid of a few programs per SM walks the used tiles (module docstring)."""
    pdl_enter(PDL)
    if PERSISTENT:
        used_m = tl.load(num_padded_ptr) // BLOCK_M
        for tile in tl.range(
            tl.program_id(0), used_m * tl.cdiv(I, BLOCK_N), tl.num_programs(0), flatten=True
        ):
            pid_m, pid_n = _tile_coords(tile, used_m, I, BLOCK_N, GROUP_M)
            expert = _tile_expert(expert_of_block_ptr, pid_m, num_experts)
            _gate_up_tile(
                x_ptr, w13_ptr, w13_desc, b13_ptr, act_ptr, sorted_ids_ptr, expert, pid_m, pid_n,
                num_assignments, top_k, I, H, stride_x_t, stride_x_h, stride_w13_e, stride_w13_r, stride_w13_h,
                stride_b13_e, stride_b13_r, stride_act_a, stride_act_i, swiglu_alpha, swiglu_limit, GATED,
                INTERLEAVED, HAS_BIAS, ACTIVATION, DOT_PRECISION, EVEN_K, W_DESC, True, BLOCK_M, BLOCK_N, BLOCK_K,
            )  # fmt: skip
    else:
        pid_m, pid_n = _tile_coords(tl.program_id(0), num_m_blocks, I, BLOCK_N, GROUP_M)
        if pid_m * BLOCK_M >= tl.load(num_padded_ptr):  # past the used slots
            return
        expert = _tile_expert(expert_of_block_ptr, pid_m, num_experts)
        if expert < 0:  # unused tile
            return
        half = False
        if HALF_TAIL:  # the tile's second half is pad only: its first half alone (module docstring)
            half = _pad_tail(sorted_ids_ptr, pid_m, num_assignments, BLOCK_M)
        if MERGE_TAIL:  # a half tail runs in its expert's previous tile's program (module docstring)
            # every call of the merged body sits in this constexpr branch: a flag set here and tested outside it
            # was a tensor to Triton's code generator even with MERGE_TAIL off (triton 3.6 and 3.9), and the
            # merged body's descriptor loads would then compile on pointer weights
            merge, absorbed = _merge_tail(sorted_ids_ptr, expert_of_block_ptr, num_padded_ptr, pid_m, expert, half,
                                          num_assignments, BLOCK_M)  # fmt: skip
            if absorbed:
                return
            if merge:
                _gate_up_tile2(
                    x_ptr, w13_desc, b13_ptr, act_ptr, sorted_ids_ptr, expert, pid_m, pid_n, num_assignments, top_k,
                    I, H, stride_x_t, stride_x_h, stride_b13_e, stride_b13_r, stride_act_a, stride_act_i, swiglu_alpha,
                    swiglu_limit, GATED, INTERLEAVED, HAS_BIAS, ACTIVATION, DOT_PRECISION, EVEN_K, BLOCK_M, BLOCK_N,
                    BLOCK_K,
                )  # fmt: skip
            else:
                _gate_up_half_or_full(
                    half, x_ptr, w13_ptr, w13_desc, b13_ptr, act_ptr, sorted_ids_ptr, expert, pid_m, pid_n, num_assignments,
                    top_k, I, H, stride_x_t, stride_x_h, stride_w13_e, stride_w13_r, stride_w13_h, stride_b13_e, stride_b13_r,
                    stride_act_a, stride_act_i, swiglu_alpha, swiglu_limit, GATED, INTERLEAVED, HAS_BIAS, ACTIVATION,
                    DOT_PRECISION, EVEN_K, W_DESC, BLOCK_M, BLOCK_N, BLOCK_K,
                )  # fmt: skip
        else:
            _gate_up_half_or_full(
                half, x_ptr, w13_ptr, w13_desc, b13_ptr, act_ptr, sorted_ids_ptr, expert, pid_m, pid_n, num_assignments,
                top_k, I, H, stride_x_t, stride_x_h, stride_w13_e, stride_w13_r, stride_w13_h, stride_b13_e, stride_b13_r,
                stride_act_a, stride_act_i, swiglu_alpha, swiglu_limit, GATED, INTERLEAVED, HAS_BIAS, ACTIVATION,
                DOT_PRECISION, EVEN_K, W_DESC, BLOCK_M, BLOCK_N, BLOCK_K,
            )  # fmt: skip


@triton.jit
def _gate_up_half_or_full(
    half, x_ptr, w13_ptr, w13_desc, b13_ptr, act_ptr, sorted_ids_ptr, expert, pid_m, pid_n, num_assignments, top_k,
    I, H, stride_x_t, stride_x_h, stride_w13_e, stride_w13_r, stride_w13_h, stride_b13_e, stride_b13_r, stride_act_a,
    stride_act_i, swiglu_alpha, swiglu_limit, GATED: tl.constexpr, INTERLEAVED: tl.constexpr, HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr, DOT_PRECISION: tl.constexpr, EVEN_K: tl.constexpr, W_DESC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """gate_up_kernel's one-program tile pid_m: its first half alone where `half` (HALF_TAIL), else whole."""
    if half:
        _gate_up_tile(
            x_ptr, w13_ptr, w13_desc, b13_ptr, act_ptr, sorted_ids_ptr, expert, 2 * pid_m, pid_n,
            num_assignments, top_k, I, H, stride_x_t, stride_x_h, stride_w13_e, stride_w13_r, stride_w13_h,
            stride_b13_e, stride_b13_r, stride_act_a, stride_act_i, swiglu_alpha, swiglu_limit, GATED,
            INTERLEAVED, HAS_BIAS, ACTIVATION, DOT_PRECISION, EVEN_K, W_DESC, False, BLOCK_M // 2, BLOCK_N, BLOCK_K,
        )  # fmt: skip
    else:
        _gate_up_tile(
            x_ptr, w13_ptr, w13_desc, b13_ptr, act_ptr, sorted_ids_ptr, expert, pid_m, pid_n,
            num_assignments, top_k, I, H, stride_x_t, stride_x_h, stride_w13_e, stride_w13_r, stride_w13_h,
            stride_b13_e, stride_b13_r, stride_act_a, stride_act_i, swiglu_alpha, swiglu_limit, GATED,
            INTERLEAVED, HAS_BIAS, ACTIVATION, DOT_PRECISION, EVEN_K, W_DESC, False, BLOCK_M, BLOCK_N, BLOCK_K,
        )  # fmt: skip


@triton.jit
def _gate_up_tile(
    x_ptr, w13_ptr, w13_desc, b13_ptr, act_ptr, sorted_ids_ptr, expert, pid_m, pid_n,
    num_assignments, top_k, I, H, stride_x_t, stride_x_h, stride_w13_e, stride_w13_r, stride_w13_h,
    stride_b13_e, stride_b13_r, stride_act_a, stride_act_i, swiglu_alpha, swiglu_limit,
    GATED: tl.constexpr, INTERLEAVED: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
    DOT_PRECISION: tl.constexpr, EVEN_K: tl.constexpr, W_DESC: tl.constexpr, PERSISTENT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """gate_up_kernel's work on the live tile (pid_m, pid_n) of `expert`: K loop, bias, activation, store."""
    ids, row_ok, tok, offs_n, _, offs_k = _tile_rows(
        sorted_ids_ptr, pid_m, pid_n, num_assignments, top_k, I, True, BLOCK_M, BLOCK_N, BLOCK_K
    )
    expert, row_ok = _live_expert(expert, row_ok, PERSISTENT)

    x_ptrs = x_ptr + tok[:, None] * stride_x_t + offs_k[None, :] * stride_x_h
    if W_DESC:
        acc_g, acc_u = _gate_up_desc_loop(
            x_ptrs, row_ok, w13_desc, expert, pid_n * BLOCK_N, I, H, stride_x_h,
            GATED, INTERLEAVED, DOT_PRECISION, EVEN_K, BLOCK_M, BLOCK_N, BLOCK_K,
        )  # fmt: skip
    else:
        acc_g, acc_u = _gate_up_ptr_loop(
            x_ptrs, row_ok, w13_ptr, expert, pid_n, I, H, stride_x_h, stride_w13_e, stride_w13_r, stride_w13_h,
            GATED, INTERLEAVED, DOT_PRECISION, EVEN_K, BLOCK_M, BLOCK_N, BLOCK_K,
        )  # fmt: skip
    _gate_up_store(acc_g, acc_u, ids, row_ok, offs_n, expert, b13_ptr, act_ptr, I, stride_b13_e, stride_b13_r,
                   stride_act_a, stride_act_i, swiglu_alpha, swiglu_limit, GATED, INTERLEAVED, HAS_BIAS,
                   ACTIVATION)  # fmt: skip


@triton.jit
def _gate_up_store(
    acc_g, acc_u, ids, row_ok, offs_n, expert, b13_ptr, act_ptr, I, stride_b13_e, stride_b13_r, stride_act_a,
    stride_act_i, swiglu_alpha, swiglu_limit, GATED: tl.constexpr, INTERLEAVED: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
):  # fmt: skip
    """GEMM1's epilogue on a tile's (gate, up) accumulators: bias, activation, store of its live rows."""
    if HAS_BIAS:
        b_base = b13_ptr + expert.to(tl.int64) * stride_b13_e
        acc_g, acc_u = _gate_up_bias(acc_g, acc_u, b_base, offs_n, I, stride_b13_r, GATED, INTERLEAVED)
    act = _activate(acc_g, acc_u, swiglu_alpha, swiglu_limit, GATED, ACTIVATION)

    out_ptrs = act_ptr + ids.to(tl.int64)[:, None] * stride_act_a + offs_n[None, :] * stride_act_i
    tl.store(out_ptrs, act.to(act_ptr.dtype.element_ty), mask=row_ok[:, None] & (offs_n[None, :] < I))


@triton.jit
def _merge_tail(sorted_ids_ptr, expert_of_block_ptr, num_padded_ptr, pid_m, expert, half, num_assignments,
                BLOCK_M: tl.constexpr):  # fmt: skip
    """MERGE_TAIL's (merge, absorbed) for the live M tile pid_m of `expert` (half: _pad_tail of it):

        merge     this tile is full and the next one is the same expert's half tail: run both in one K loop
        absorbed  this tile is such a half tail after a full tile of its expert: that tile's program runs it

    Both programs test the same pair of tiles, so exactly one of them runs the half tail. Under align's layout
    an expert's half tail is its last tile, after full ones only."""
    # indices clamped instead of masked loads: every load stays in bounds and the interpreter takes no scalar mask
    nxt_live = (pid_m + 1) * BLOCK_M < tl.load(num_padded_ptr)
    nxt = tl.where(nxt_live, pid_m + 1, pid_m)
    nxt_half = _pad_tail(sorted_ids_ptr, nxt, num_assignments, BLOCK_M)
    prev = tl.maximum(pid_m - 1, 0)
    prev_half = _pad_tail(sorted_ids_ptr, prev, num_assignments, BLOCK_M)
    merge = (half == 0) & nxt_live & (tl.load(expert_of_block_ptr + nxt) == expert) & nxt_half
    absorbed = (half != 0) & (pid_m > 0) & (tl.load(expert_of_block_ptr + prev) == expert) & (prev_half == 0)
    return merge, absorbed


@triton.jit
def _gate_up_tile2(
    x_ptr, w13_desc, b13_ptr, act_ptr, sorted_ids_ptr, expert, pid_m, pid_n, num_assignments, top_k, I, H,
    stride_x_t, stride_x_h, stride_b13_e, stride_b13_r, stride_act_a, stride_act_i, swiglu_alpha, swiglu_limit,
    GATED: tl.constexpr, INTERLEAVED: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
    DOT_PRECISION: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """gate_up_kernel under MERGE_TAIL on a full tile pid_m and the next tile's first BLOCK_M / 2 slots (its
    expert's half tail): one K loop whose weight boxes feed both, then each its epilogue."""
    HALF: tl.constexpr = BLOCK_M // 2
    ids, row_ok, tok, offs_n, _, offs_k = _tile_rows(
        sorted_ids_ptr, pid_m, pid_n, num_assignments, top_k, I, True, BLOCK_M, BLOCK_N, BLOCK_K
    )
    ids2, row2_ok, tok2, _, _, _ = _tile_rows(
        sorted_ids_ptr, 2 * pid_m + 2, pid_n, num_assignments, top_k, I, True, HALF, BLOCK_N, BLOCK_K
    )
    x_ptrs = x_ptr + tok[:, None] * stride_x_t + offs_k[None, :] * stride_x_h
    x2_ptrs = x_ptr + tok2[:, None] * stride_x_t + offs_k[None, :] * stride_x_h
    g, u, g2, u2 = _gate_up_desc_loop2(
        x_ptrs, row_ok, x2_ptrs, row2_ok, w13_desc, expert, pid_n * BLOCK_N, I, H, stride_x_h,
        GATED, INTERLEAVED, DOT_PRECISION, EVEN_K, BLOCK_M, BLOCK_N, BLOCK_K,
    )  # fmt: skip
    _gate_up_store(g, u, ids, row_ok, offs_n, expert, b13_ptr, act_ptr, I, stride_b13_e, stride_b13_r,
                   stride_act_a, stride_act_i, swiglu_alpha, swiglu_limit, GATED, INTERLEAVED, HAS_BIAS,
                   ACTIVATION)  # fmt: skip
    _gate_up_store(g2, u2, ids2, row2_ok, offs_n, expert, b13_ptr, act_ptr, I, stride_b13_e, stride_b13_r,
                   stride_act_a, stride_act_i, swiglu_alpha, swiglu_limit, GATED, INTERLEAVED, HAS_BIAS,
                   ACTIVATION)  # fmt: skip


@triton.jit(do_not_specialize=["num_experts"])  # E = 1 (shared expert) keeps the routed binary
def down_kernel(
    a_ptr,  # (T*k, I) activations, row = flat assignment id
    w2_ptr,  # (E, H, I)
    w2_desc,  # tensor descriptor of w2 in (1, BLOCK_N, BLOCK_K) boxes (W_DESC), else None
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
    stride_w2_i,
    stride_b2_e,
    stride_b2_h,
    stride_out_a,
    stride_out_h,
    HAS_BIAS: tl.constexpr,
    MUL_WEIGHT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    EVEN_K: tl.constexpr,
    W_DESC: tl.constexpr,
    PERSISTENT: tl.constexpr,
    HALF_TAIL: tl.constexpr,
    MERGE_TAIL: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    PDL: tl.constexpr,
):
    """out[a] = (act[a] @ w2[e].T + b2[e]) * (route_w[a] if MUL_WEIGHT), weight applied in fp32.

    W_DESC: each K step's weight tile is the box w2[e, n0 : n0 + BLOCK_N, k0 : k0 + BLOCK_K] of w2_desc (TMA on
    sm90+), rows past H and columns past I read as zeros; else pointer loads of w2[e, n % H, k].
    One tile per program, or PERSISTENT: a grid of a few programs per SM walks the used tiles (module docstring)."""
    pdl_enter(PDL)
    if PERSISTENT:
        used_m = tl.load(num_padded_ptr) // BLOCK_M
        for tile in tl.range(
            tl.program_id(0), used_m * tl.cdiv(H, BLOCK_N), tl.num_programs(0), flatten=True
        ):
            pid_m, pid_n = _tile_coords(tile, used_m, H, BLOCK_N, GROUP_M)
            expert = _tile_expert(expert_of_block_ptr, pid_m, num_experts)
            _down_tile(
                a_ptr, w2_ptr, w2_desc, b2_ptr, out_ptr, route_w_ptr, sorted_ids_ptr, expert, pid_m,
                pid_n, num_assignments, H, I, stride_a_a, stride_a_i, stride_w2_e, stride_w2_h, stride_w2_i,
                stride_b2_e, stride_b2_h, stride_out_a, stride_out_h, HAS_BIAS, MUL_WEIGHT, DOT_PRECISION, EVEN_K,
                W_DESC, True, BLOCK_M, BLOCK_N, BLOCK_K,
            )  # fmt: skip
    else:
        pid_m, pid_n = _tile_coords(tl.program_id(0), num_m_blocks, H, BLOCK_N, GROUP_M)
        if pid_m * BLOCK_M >= tl.load(num_padded_ptr):  # past the used slots
            return
        expert = _tile_expert(expert_of_block_ptr, pid_m, num_experts)
        if expert < 0:  # unused tile
            return
        half = False
        if HALF_TAIL:  # the tile's second half is pad only: its first half alone (module docstring)
            half = _pad_tail(sorted_ids_ptr, pid_m, num_assignments, BLOCK_M)
        if MERGE_TAIL:  # a half tail runs in its expert's previous tile's program (module docstring)
            # every call of the merged body sits in this constexpr branch: a flag set here and tested outside it
            # was a tensor to Triton's code generator even with MERGE_TAIL off (triton 3.6 and 3.9), and the
            # merged body's descriptor loads would then compile on pointer weights
            merge, absorbed = _merge_tail(sorted_ids_ptr, expert_of_block_ptr, num_padded_ptr, pid_m, expert, half,
                                          num_assignments, BLOCK_M)  # fmt: skip
            if absorbed:
                return
            if merge:
                _down_tile2(
                    a_ptr, w2_desc, b2_ptr, out_ptr, route_w_ptr, sorted_ids_ptr, expert, pid_m, pid_n, num_assignments,
                    H, I, stride_a_a, stride_a_i, stride_b2_e, stride_b2_h, stride_out_a, stride_out_h, HAS_BIAS,
                    MUL_WEIGHT, DOT_PRECISION, EVEN_K, BLOCK_M, BLOCK_N, BLOCK_K,
                )  # fmt: skip
            else:
                _down_half_or_full(
                    half, a_ptr, w2_ptr, w2_desc, b2_ptr, out_ptr, route_w_ptr, sorted_ids_ptr, expert, pid_m, pid_n,
                    num_assignments, H, I, stride_a_a, stride_a_i, stride_w2_e, stride_w2_h, stride_w2_i, stride_b2_e,
                    stride_b2_h, stride_out_a, stride_out_h, HAS_BIAS, MUL_WEIGHT, DOT_PRECISION, EVEN_K, W_DESC, BLOCK_M,
                    BLOCK_N, BLOCK_K,
                )  # fmt: skip
        else:
            _down_half_or_full(
                half, a_ptr, w2_ptr, w2_desc, b2_ptr, out_ptr, route_w_ptr, sorted_ids_ptr, expert, pid_m, pid_n,
                num_assignments, H, I, stride_a_a, stride_a_i, stride_w2_e, stride_w2_h, stride_w2_i, stride_b2_e,
                stride_b2_h, stride_out_a, stride_out_h, HAS_BIAS, MUL_WEIGHT, DOT_PRECISION, EVEN_K, W_DESC, BLOCK_M,
                BLOCK_N, BLOCK_K,
            )  # fmt: skip


@triton.jit
def _down_half_or_full(
    half, a_ptr, w2_ptr, w2_desc, b2_ptr, out_ptr, route_w_ptr, sorted_ids_ptr, expert, pid_m, pid_n,
    num_assignments, H, I, stride_a_a, stride_a_i, stride_w2_e, stride_w2_h, stride_w2_i, stride_b2_e, stride_b2_h,
    stride_out_a, stride_out_h, HAS_BIAS: tl.constexpr, MUL_WEIGHT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    EVEN_K: tl.constexpr, W_DESC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """down_kernel's one-program tile pid_m: its first half alone where `half` (HALF_TAIL), else whole."""
    if half:
        _down_tile(
            a_ptr, w2_ptr, w2_desc, b2_ptr, out_ptr, route_w_ptr, sorted_ids_ptr, expert, 2 * pid_m,
            pid_n, num_assignments, H, I, stride_a_a, stride_a_i, stride_w2_e, stride_w2_h, stride_w2_i,
            stride_b2_e, stride_b2_h, stride_out_a, stride_out_h, HAS_BIAS, MUL_WEIGHT, DOT_PRECISION, EVEN_K,
            W_DESC, False, BLOCK_M // 2, BLOCK_N, BLOCK_K,
        )  # fmt: skip
    else:
        _down_tile(
            a_ptr, w2_ptr, w2_desc, b2_ptr, out_ptr, route_w_ptr, sorted_ids_ptr, expert, pid_m,
            pid_n, num_assignments, H, I, stride_a_a, stride_a_i, stride_w2_e, stride_w2_h, stride_w2_i,
            stride_b2_e, stride_b2_h, stride_out_a, stride_out_h, HAS_BIAS, MUL_WEIGHT, DOT_PRECISION, EVEN_K,
            W_DESC, False, BLOCK_M, BLOCK_N, BLOCK_K,
        )  # fmt: skip


@triton.jit
def _down_tile(
    a_ptr, w2_ptr, w2_desc, b2_ptr, out_ptr, route_w_ptr, sorted_ids_ptr, expert, pid_m, pid_n,
    num_assignments, H, I, stride_a_a, stride_a_i, stride_w2_e, stride_w2_h, stride_w2_i, stride_b2_e,
    stride_b2_h, stride_out_a, stride_out_h, HAS_BIAS: tl.constexpr, MUL_WEIGHT: tl.constexpr,
    DOT_PRECISION: tl.constexpr, EVEN_K: tl.constexpr, W_DESC: tl.constexpr, PERSISTENT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """down_kernel's work on the live tile (pid_m, pid_n) of `expert`: K loop, bias, router weight, store."""
    _, row_ok, rows, offs_n, offs_n_w, offs_k = _tile_rows(
        sorted_ids_ptr, pid_m, pid_n, num_assignments, 1, H, False, BLOCK_M, BLOCK_N, BLOCK_K
    )
    expert, row_ok = _live_expert(expert, row_ok, PERSISTENT)

    a_ptrs = a_ptr + rows[:, None] * stride_a_a + offs_k[None, :] * stride_a_i
    w_ptrs = (
        w2_ptr
        + expert.to(tl.int64) * stride_w2_e
        + offs_n_w[None, :] * stride_w2_h
        + offs_k[:, None] * stride_w2_i
    )
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kk in range(0, tl.cdiv(I, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_ptrs, mask=row_ok[:, None], other=0.0)
        else:
            k_ok = offs_k < I - kk * BLOCK_K
            a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        if W_DESC:
            w = trans_tile(w2_desc.load([expert, pid_n * BLOCK_N, kk * BLOCK_K]).reshape(BLOCK_N, BLOCK_K))
        elif EVEN_K:
            w = tl.load(w_ptrs)
        else:
            w = tl.load(w_ptrs, mask=k_ok[:, None], other=0.0)
        if INTERPRET:
            a = a.to(tl.float32)
            w = w.to(tl.float32)
        acc = dot_acc(a, w, acc, DOT_PRECISION)
        a_ptrs += BLOCK_K * stride_a_i
        w_ptrs += BLOCK_K * stride_w2_i

    _down_store(acc, rows, row_ok, offs_n, offs_n_w, expert, b2_ptr, out_ptr, route_w_ptr, H, stride_b2_e,
                stride_b2_h, stride_out_a, stride_out_h, HAS_BIAS, MUL_WEIGHT)  # fmt: skip


@triton.jit
def _down_store(
    acc, rows, row_ok, offs_n, offs_n_w, expert, b2_ptr, out_ptr, route_w_ptr, H, stride_b2_e, stride_b2_h,
    stride_out_a, stride_out_h, HAS_BIAS: tl.constexpr, MUL_WEIGHT: tl.constexpr,
):  # fmt: skip
    """GEMM2's epilogue on a tile's accumulator: bias, router weight (fp32), store of its live rows."""
    if HAS_BIAS:
        acc += tl.load(b2_ptr + expert.to(tl.int64) * stride_b2_e + offs_n_w * stride_b2_h).to(tl.float32)[
            None, :
        ]
    if (
        MUL_WEIGHT
    ):  # in fp32, before the cast to the output dtype (docs/bugs.md#bug-02-router-weight-after-cast)
        acc = acc * tl.load(route_w_ptr + rows, mask=row_ok, other=0.0)[:, None]
    out_ptrs = out_ptr + rows[:, None] * stride_out_a + offs_n[None, :] * stride_out_h
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & (offs_n[None, :] < H))


@triton.jit
def _down_tile2(
    a_ptr, w2_desc, b2_ptr, out_ptr, route_w_ptr, sorted_ids_ptr, expert, pid_m, pid_n, num_assignments, H, I,
    stride_a_a, stride_a_i, stride_b2_e, stride_b2_h, stride_out_a, stride_out_h, HAS_BIAS: tl.constexpr,
    MUL_WEIGHT: tl.constexpr, DOT_PRECISION: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """down_kernel under MERGE_TAIL (descriptor weights) on a full tile pid_m and the next tile's first
    BLOCK_M / 2 slots (its expert's half tail): one K loop whose weight boxes feed both, then each its
    epilogue."""
    HALF: tl.constexpr = BLOCK_M // 2
    _, row_ok, rows, offs_n, offs_n_w, offs_k = _tile_rows(
        sorted_ids_ptr, pid_m, pid_n, num_assignments, 1, H, False, BLOCK_M, BLOCK_N, BLOCK_K
    )
    _, row2_ok, rows2, _, _, _ = _tile_rows(
        sorted_ids_ptr, 2 * pid_m + 2, pid_n, num_assignments, 1, H, False, HALF, BLOCK_N, BLOCK_K
    )
    a_ptrs = a_ptr + rows[:, None] * stride_a_a + offs_k[None, :] * stride_a_i
    a2_ptrs = a_ptr + rows2[:, None] * stride_a_a + offs_k[None, :] * stride_a_i
    acc1 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc2 = tl.zeros((HALF, BLOCK_N), dtype=tl.float32)
    for k_step in range(0, tl.cdiv(I, BLOCK_K)):  # names apart from _down_tile's (recall mutations)
        if EVEN_K:
            a = tl.load(a_ptrs, mask=row_ok[:, None], other=0.0)
            a2 = tl.load(a2_ptrs, mask=row2_ok[:, None], other=0.0)
        else:
            k_ok = (offs_k < I - k_step * BLOCK_K)[None, :]
            a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok, other=0.0)
            a2 = tl.load(a2_ptrs, mask=row2_ok[:, None] & k_ok, other=0.0)
        w = trans_tile(w2_desc.load([expert, pid_n * BLOCK_N, k_step * BLOCK_K]).reshape(BLOCK_N, BLOCK_K))
        if INTERPRET:
            a = a.to(tl.float32)
            a2 = a2.to(tl.float32)
            w = w.to(tl.float32)
        acc1 = dot_acc(a, w, acc1, DOT_PRECISION)
        acc2 = dot_acc(a2, w, acc2, DOT_PRECISION)
        a_ptrs += BLOCK_K * stride_a_i
        a2_ptrs += BLOCK_K * stride_a_i
    _down_store(acc1, rows, row_ok, offs_n, offs_n_w, expert, b2_ptr, out_ptr, route_w_ptr, H, stride_b2_e,
                stride_b2_h, stride_out_a, stride_out_h, HAS_BIAS, MUL_WEIGHT)  # fmt: skip
    _down_store(acc2, rows2, row2_ok, offs_n, offs_n_w, expert, b2_ptr, out_ptr, route_w_ptr, H, stride_b2_e,
                stride_b2_h, stride_out_a, stride_out_h, HAS_BIAS, MUL_WEIGHT)  # fmt: skip


@triton.jit
def row_gate_kernel(
    x_ptr,  # (T, H)
    g_ptr,  # (H,) gate vector (shared_gate[0])
    out_ptr,  # (T,) float32: sigmoid(x @ g)
    T,
    H,
    stride_x_t,
    stride_x_h,
    stride_g_h,
    BLOCK_T: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """out[t] = sigmoid(sum_h x[t, h] * g[h]) in fp32 (the Qwen2-MoE shared-expert gate)."""
    offs_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    t_ok = offs_t < T
    acc = tl.zeros((BLOCK_T,), dtype=tl.float32)
    for h0 in range(0, H, BLOCK_H):
        offs_h = h0 + tl.arange(0, BLOCK_H)
        h_ok = offs_h < H
        x = tl.load(
            x_ptr + offs_t.to(tl.int64)[:, None] * stride_x_t + offs_h[None, :] * stride_x_h,
            mask=t_ok[:, None] & h_ok[None, :],
            other=0.0,
        ).to(tl.float32)
        g = tl.load(g_ptr + offs_h * stride_g_h, mask=h_ok, other=0.0).to(tl.float32)
        acc += tl.sum(x * g[None, :], axis=1)
    tl.store(out_ptr + offs_t, tl.sigmoid(acc), mask=t_ok)
