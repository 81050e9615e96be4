"""Alignment stage: per-expert counts, padded per-expert tiles and the sorted assignment list.

`align` is what the grouped GEMMs consume (metadata.AlignMeta); `permute` is the twin of
`moe_cts.reference.numpy_oracle.permute` built from align's output, for judging the stage against the oracle.
Kernel bodies: `_align_kernels.py` (a blocked counting sort, deterministic, no atomics).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton

from moe_cts.kernels._align_kernels import (
    align_one_chunk_kernel,
    chunk_hist_kernel,
    chunk_scan_kernel,
    chunk_scatter_kernel,
    pad_fill_kernel,
)
from moe_cts.kernels._common import INTERPRET, pdl_options, require_tensor
from moe_cts.kernels.metadata import AlignMeta, padded_capacity
from moe_cts.reference.spec import MoESpec, SpecError

#: The scatter kernel keeps a (BLOCK_E,) running count per expert in registers.
MAX_EXPERTS = 4096
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Permutation:
    """Torch twin of moe_cts.reference.numpy_oracle.Permutation (same fields and meanings, int64 / bool)."""

    expert_counts: torch.Tensor  # (E,) assignments routed to expert e (before the local mask)
    kept: torch.Tensor  # (T, k) bool: assignment on a local expert
    kept_counts: torch.Tensor  # (E,) kept assignments of e
    order: torch.Tensor  # (N,) flat ids t*k+j of kept assignments, stably sorted by expert
    offsets: torch.Tensor  # (E+1,) order[offsets[e]:offsets[e+1]] are expert e's assignments


#: GPU chunking of the multi-launch path: ~CHUNKS_TARGET chunks, each at least MIN_CHUNK ids. The scatter runs
#: one program per chunk and ranks a chunk's ids serially, SUB at a time; one program per 4096 ids (the old
#: fixed chunk) left most of the GPU idle: on an H200 the one-program kernel took 265 us for T*k = 4096
#: (Qwen2-57B, T = 512) and the scatter 308 us for 16384 (DeepSeek-V3, T = 2048), next to GEMMs of ~1 and
#: ~6.4 ms (ci/gpu/perf_probe.py, session 7).
CHUNKS_TARGET = 128
MIN_CHUNK, MAX_CHUNK = 256, 4096
#: elements of the scan kernel's (BLOCK_C, BLOCK_E) tile
SCAN_TILE = 8192


def _block_sizes(n: int) -> tuple[int, int, int]:
    """(BLOCK_N assignments per chunk, SUB ids ranked at once, BLOCK_S slots per pad-fill program) for n ids.

    GPU: BLOCK_N = next_pow2(n / CHUNKS_TARGET) within [MIN_CHUNK, MAX_CHUNK]: n <= 256 is one chunk (one
    launch, decode), up to 32k ids ~128 chunks of 256 (two SUB steps each), 400k ids 98 chunks of 4096 (the
    scan's step count stays bounded). The interpreter pays per operation, not per element, so it ranks a
    whole 512-id chunk in one all-pairs step."""
    if INTERPRET:
        return (512, 512, 16384)
    block_n = min(MAX_CHUNK, max(MIN_CHUNK, triton.next_power_of_2(-(-n // CHUNKS_TARGET))))
    return (block_n, 128, 1024)


def _one_chunk_tiles(n: int, p: int, tiles: tuple[int, int, int]) -> tuple[int, int, int]:
    """(SUB, BLOCK_S, num_warps) of the one-program kernel for n ids and p padded slots on a GPU.

    Tiles no wider than the data: at T = 1 (n = k, p <= k * block_m) the fixed (128, 1024) tiles made the
    decode's only alignment launch rank 128 lanes and binary-search 1024 slots for 8 ids (11 us on an
    H200, ci/gpu/perf_probe.py, session 7); the lanes past n and p are masked work on the critical path."""
    _, sub, block_s = tiles
    if INTERPRET:
        return sub, block_s, 8
    sub = min(sub, max(16, triton.next_power_of_2(n)))
    block_s = min(block_s, max(16, triton.next_power_of_2(p)))
    return sub, block_s, ONE_CHUNK_WARPS if block_s <= 256 else 8


#: warps of the one-program kernel at decode sizes (BLOCK_S <= 256)
ONE_CHUNK_WARPS = 4


@functools.lru_cache(maxsize=64)
def _local_mask(local_experts: tuple[int, ...], E: int, device: str) -> torch.Tensor:
    """(E,) int8 mask of local experts, built once per spec and device: a host-to-device copy
    inside a captured CUDA graph would fail, so the first (warm-up) call makes it."""
    mask = torch.zeros(E, dtype=torch.int8)
    mask[list(local_experts)] = 1
    return mask.to(device)


def _check(spec: MoESpec, topk_ids: torch.Tensor, block_m: int, tiles: tuple[int, int, int] | None) -> None:
    """Raise SpecError / NotSupportedError naming the field before any launch.

    Ids are trusted to lie in [0, E) (route guarantees it; checking would need a host sync); an
    out-of-range id is dropped (inverse -1), never written out of bounds."""
    from moe_cts.kernels.capabilities import NotSupportedError

    if spec.capacity_factor is not None:
        raise NotSupportedError(
            f"capacity_factor: the align kernels do not drop overflow tokens; expected None, got {spec.capacity_factor}"
        )
    require_tensor("topk_ids", topk_ids, dtype=(torch.int32, torch.int64), launch=True)
    if topk_ids.dim() != 2 or topk_ids.shape[1] != spec.top_k:
        raise SpecError("topk_ids.shape", f"(T, {spec.top_k})", tuple(topk_ids.shape))
    if not isinstance(block_m, int) or isinstance(block_m, bool) or block_m < 1:
        raise SpecError("block_m", "an int >= 1", block_m)
    if tiles is not None:
        pow2 = all(isinstance(v, int) and v >= 16 and v & (v - 1) == 0 for v in tiles)
        if len(tiles) != 3 or not pow2 or tiles[1] > tiles[0]:
            raise SpecError("tiles", "(BLOCK_N, SUB, BLOCK_S), powers of two >= 16, SUB <= BLOCK_N", tiles)
    if spec.num_experts > MAX_EXPERTS:
        raise NotSupportedError(f"num_experts: align supports E <= {MAX_EXPERTS}, got {spec.num_experts}")
    P = padded_capacity(topk_ids.numel(), spec.num_experts, block_m)
    if P > _INT32_MAX:
        raise NotSupportedError(f"topk_ids: {P} padded slots do not fit the int32 sorted_ids")


def _empty(spec: MoESpec, topk_ids: torch.Tensor, block_m: int) -> AlignMeta:
    """T = 0: every slot is a pad, no launch."""
    dev, E = topk_ids.device, spec.num_experts
    P = padded_capacity(0, E, block_m)
    zeros = torch.zeros(E, dtype=torch.int32, device=dev)
    return AlignMeta(
        block_m=block_m,
        num_tokens=0,
        top_k=spec.top_k,
        expert_counts=zeros,
        sorted_ids=torch.zeros(P, dtype=torch.int32, device=dev),  # sentinel T*k = 0
        expert_of_block=torch.full((P // block_m,), -1, dtype=torch.int32, device=dev),
        num_padded=torch.zeros(1, dtype=torch.int32, device=dev),
        inverse=torch.empty(0, dtype=torch.int32, device=dev),
        routed_counts=zeros.clone(),
    )


def align(
    spec: MoESpec,
    topk_ids: torch.Tensor,
    block_m: int,
    *,
    tiles: tuple[int, int, int] | None = None,
    pdl: int = 0,
) -> AlignMeta:
    """Group the T*k assignments by expert into runs padded to multiples of block_m::

        kept[t, j]   = topk_ids[t, j] is a local expert (every expert when spec.local_experts is None)
        sorted_ids   = kept flat ids t*k+j by expert, ascending within an expert; each run padded with T*k
        expert_of_block[b] = expert of slots [b*block_m, (b+1)*block_m), -1 past num_padded
        inverse[t*k+j]     = slot of the assignment, -1 if not kept

        topk_ids (T, k) int32|int64 -> expert_counts (E,), sorted_ids (P,), expert_of_block (P/block_m,),
                                       num_padded (1,), inverse (T*k,), routed_counts (E,)  all int32

    P = metadata.padded_capacity(T*k, E, block_m), known on the host; no host synchronization.
    `tiles` forces (BLOCK_N, SUB, BLOCK_S) (tests: the GPU tiles on the interpreter)."""
    _check(spec, topk_ids, block_m, tiles)
    T, k = topk_ids.shape
    N, E, dev = T * k, spec.num_experts, topk_ids.device
    if N == 0:
        return _empty(spec, topk_ids, block_m)
    BLOCK_N, SUB, BLOCK_S = tiles or _block_sizes(N)
    BLOCK_E = max(16, triton.next_power_of_2(E))
    C = triton.cdiv(N, BLOCK_N)
    P = padded_capacity(N, E, block_m)
    has_local = spec.local_experts is not None
    local = _local_mask(spec.local_experts, E, str(dev)) if has_local else topk_ids  # unread if not local

    i32 = dict(dtype=torch.int32, device=dev)
    routed, counts = torch.empty(E, **i32), torch.empty(E, **i32)
    num_padded = torch.empty(1, **i32)
    sorted_ids, inverse = torch.empty(P, **i32), torch.empty(N, **i32)
    expert_of_block = torch.empty(P // block_m, **i32)
    s_t, s_k = topk_ids.stride()

    if C == 1:  # decode-sized T: one launch instead of four
        SUB, BLOCK_S, warps = (
            _one_chunk_tiles(N, P, (BLOCK_N, SUB, BLOCK_S)) if tiles is None else (SUB, BLOCK_S, 8)
        )
        align_one_chunk_kernel[(1,)](
            # inputs
            ids_ptr=topk_ids, local_ptr=local,
            # outputs
            routed_ptr=routed, counts_ptr=counts, num_padded_ptr=num_padded,
            sorted_ids_ptr=sorted_ids, inverse_ptr=inverse, expert_of_block_ptr=expert_of_block,
            # sizes and strides
            N=N, K=k, E=E, P=P, block_m=block_m, stride_ids_t=s_t, stride_ids_k=s_k, search_steps=E.bit_length(),
            # constexprs
            HAS_LOCAL=has_local, BLOCK_E=BLOCK_E, SUB=SUB, BLOCK_S=BLOCK_S, PDL=pdl,
            # launch options
            num_warps=warps, **pdl_options(pdl),
        )  # fmt: skip
    else:
        hist, base, pend = torch.empty((C, E), **i32), torch.empty((C, E), **i32), torch.empty(E, **i32)
        chunk_hist_kernel[(C,)](
            # inputs
            ids_ptr=topk_ids,
            # outputs
            hist_ptr=hist,
            # sizes and strides
            N=N, K=k, E=E, stride_ids_t=s_t, stride_ids_k=s_k,
            # constexprs
            BLOCK_N=BLOCK_N, BLOCK_E=BLOCK_E,
        )  # fmt: skip
        chunk_scan_kernel[(1,)](
            # inputs
            hist_ptr=hist, local_ptr=local,
            # outputs
            base_ptr=base, routed_ptr=routed, counts_ptr=counts, pend_ptr=pend, num_padded_ptr=num_padded,
            # sizes
            C=C, E=E, block_m=block_m,
            # constexprs
            HAS_LOCAL=has_local, BLOCK_E=BLOCK_E, BLOCK_C=max(1, SCAN_TILE // BLOCK_E),
            # launch options
            num_warps=8 if BLOCK_E >= 1024 else 4,
        )  # fmt: skip
        chunk_scatter_kernel[(C,)](
            # inputs
            ids_ptr=topk_ids, local_ptr=local, base_ptr=base,
            # outputs
            sorted_ids_ptr=sorted_ids, inverse_ptr=inverse,
            # sizes and strides
            N=N, K=k, E=E, stride_ids_t=s_t, stride_ids_k=s_k,
            # constexprs
            HAS_LOCAL=has_local, BLOCK_N=BLOCK_N, BLOCK_E=BLOCK_E, SUB=SUB,
            # launch options
            num_warps=8,
        )  # fmt: skip
        pad_fill_kernel[(triton.cdiv(P, BLOCK_S),)](
            # inputs
            pend_ptr=pend, counts_ptr=counts,
            # outputs
            sorted_ids_ptr=sorted_ids, expert_of_block_ptr=expert_of_block,
            # sizes
            N=N, E=E, P=P, block_m=block_m, search_steps=E.bit_length(),
            # constexprs
            BLOCK_S=BLOCK_S,
        )  # fmt: skip
    return AlignMeta(
        block_m=block_m,
        num_tokens=T,
        top_k=k,
        expert_counts=counts,
        sorted_ids=sorted_ids,
        expert_of_block=expert_of_block,
        num_padded=num_padded,
        inverse=inverse,
        routed_counts=routed,
    )


#: slot_meta's per-device constants, keyed by (device, T*k, block_m): built by the first eager call
_SLOT_TILES: dict[tuple[str, int | None, int, int], torch.Tensor] = {}
#: T up to which slot_meta lays one tile per assignment (a token's k experts are distinct, so no expert's
#: weights are read twice); past one token two tokens may share an expert and align's grouping wins
SLOT_META_MAX_TOKENS = 1


def _slot_tiles(n: int, block_m: int, device: torch.device) -> torch.Tensor | None:
    """[sorted_ids (n * block_m) | num_padded (1) | inverse (n)] int32 on device for one tile per assignment;
    None while a CUDA graph is being captured and the buffer does not exist yet (a buffer filled inside a
    capture holds its values only after a replay; grouped_gemm._dense_slots has the same rule)."""
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    key = (device.type, device.index, n, block_m)
    have = _SLOT_TILES.get(key)
    if have is not None:
        return have
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return None
    P = n * block_m
    sorted_ids = torch.full((n, block_m), n, dtype=torch.int32)  # pad slots hold the sentinel n
    sorted_ids[:, 0] = torch.arange(n, dtype=torch.int32)
    inverse = torch.arange(n, dtype=torch.int32) * block_m
    buf = torch.cat([sorted_ids.reshape(P), torch.tensor([P], dtype=torch.int32), inverse]).to(device)
    _SLOT_TILES[key] = buf
    return buf


def slot_meta(spec: MoESpec, topk_ids: torch.Tensor, block_m: int) -> AlignMeta | None:
    """One M tile per assignment, without a launch, where that is align's own grouping (one token: its k
    experts are distinct, one slot each)::

        tile j = assignment j alone: sorted_ids[j * block_m] = j, the other block_m - 1 slots the sentinel T*k
        expert_of_block = topk_ids.view(-1)          inverse[j] = j * block_m          num_padded = T*k*block_m

    The tiles hold what align's hold (each expert's one slot first in its tile), in assignment order instead
    of expert order, so every GEMM output has the same bits. The ids are not looked at: the GEMMs skip a tile
    whose expert is outside [0, E), and the combine drops it (AlignMeta.combine_slots), as align's -1 would.

    None (use align) past SLOT_META_MAX_TOKENS tokens, with local experts or a capacity factor (align drops
    assignments there), for ids that are not a contiguous int32 tensor, or inside a CUDA graph capture that
    would have to build the constants."""
    T = topk_ids.shape[0] if topk_ids.dim() == 2 else 0
    if (
        not (1 <= T <= SLOT_META_MAX_TOKENS)
        or spec.local_experts is not None
        or spec.capacity_factor is not None
    ):
        return None
    if topk_ids.dtype != torch.int32 or not topk_ids.is_contiguous() or topk_ids.shape[1] != spec.top_k:
        return None
    n = topk_ids.numel()
    buf = _slot_tiles(n, block_m, topk_ids.device)
    if buf is None:
        return None
    P = n * block_m
    ids = topk_ids.view(n)
    return AlignMeta(
        block_m=block_m,
        num_tokens=T,
        top_k=spec.top_k,
        expert_counts=None,
        sorted_ids=buf[:P],
        expert_of_block=ids,
        num_padded=buf[P : P + 1],
        inverse=buf[P + 1 :],
        expert_ids=ids,
        num_experts=spec.num_experts,
    )


def align_or_slots(spec: MoESpec, topk_ids: torch.Tensor, block_m: int, *, pdl: int = 0) -> AlignMeta:
    """The forward's alignment: slot_meta where it applies (no launch), else align."""
    return slot_meta(spec, topk_ids, block_m) or align(spec, topk_ids, block_m, pdl=pdl)


def permute(
    spec: MoESpec, topk_ids: torch.Tensor, *, block_m: int = 16, tiles: tuple[int, int, int] | None = None
) -> Permutation:
    """The oracle's permutation from align's output (a judging twin, not part of the forward pass)::

        kept = inverse >= 0;  order = sorted_ids without pad slots;  offsets = [0, cumsum(kept_counts)]

        topk_ids (T, k) -> expert_counts (E,), kept (T, k) bool, kept_counts (E,), order (N,), offsets (E+1,)

    order's length is data-dependent, so this one synchronizes with the host (align does not)."""
    meta = align(spec, topk_ids, block_m, tiles=tiles)
    T, k = topk_ids.shape
    kept_counts = meta.expert_counts.long()
    order = meta.sorted_ids[meta.sorted_ids != meta.sentinel].long()
    zero = torch.zeros(1, dtype=torch.int64, device=topk_ids.device)
    return Permutation(
        expert_counts=meta.routed_counts.long(),
        kept=(meta.inverse >= 0).view(T, k),
        kept_counts=kept_counts,
        order=order,
        offsets=torch.cat([zero, torch.cumsum(kept_counts, 0)]),
    )
