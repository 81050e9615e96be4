"""Routing and permutation metadata passed between the kernel stages (all tensors on the device).

    tensor             shape / dtype          invariant
    topk_ids           (T, k) int32           distinct per row, in [0, E)
    topk_weights       (T, k) float32         router weights, renormalized and scaled
    expert_counts      (E,) int32             kept assignments of expert e (local experts only)
    sorted_ids         (P,) int32             flat assignment id t*k+j per padded slot; pad slots = T*k
    expert_of_block    (P // block_m,) int32  expert of each M tile; -1 for tiles past the used ones
    num_padded         (1,) int32             used slots: sum over e of ceil(count_e / block_m) * block_m
    inverse            (T*k,) int32           slot of assignment t*k+j in sorted_ids; -1 if not kept
    routed_counts      (E,) int32             all assignments of expert e, before the local mask (optional)
    expert_ids         (T*k,) int32           topk_ids flattened, where no kernel marked dropped ids
                                              (align.slot_meta; optional)

expert_counts is None where the tiles were laid out without counting (align.slot_meta).

P = padded_capacity(T*k, E, block_m) is a host-side upper bound known without reading the counts, so
no host synchronization is needed: tiles past num_padded exit at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: the combine's slot_end for align's inverse, whose dropped entries are -1: every slot >= 0 is kept
SLOT_END = 2**31 - 1


def padded_capacity(num_assignments: int, num_experts: int, block_m: int) -> int:
    """Upper bound of used padded slots: every expert wastes at most block_m - 1 slots.

    Rounded up to a multiple of block_m so the tile count is exact. One expert (the shared expert's dense
    alignment) wastes only its last tile's tail: ceil(n / block_m) tiles, exactly."""
    if num_experts == 1:
        return max(1, -(-num_assignments // block_m)) * block_m
    worst = num_assignments + min(num_experts, max(num_assignments, 1)) * (block_m - 1)
    return -(-worst // block_m) * block_m


@dataclass(frozen=True)
class Routing:
    topk_ids: torch.Tensor  # (T, k) int32, distinct per row, in [0, E), descending key, ties -> lower id
    topk_weights: torch.Tensor  # (T, k) float32
    logits: torch.Tensor | None = None  # (T, E) float32, when the router kernel ran
    scores: torch.Tensor | None = None  # (T, E) float32, when the router kernel ran

    def __post_init__(self) -> None:
        if self.topk_ids.dtype != torch.int32 or self.topk_ids.dim() != 2:
            raise ValueError(
                f"topk_ids: expected (T, k) int32, got {tuple(self.topk_ids.shape)} {self.topk_ids.dtype}"
            )
        if self.topk_weights.shape != self.topk_ids.shape or self.topk_weights.dtype != torch.float32:
            raise ValueError(
                f"topk_weights: expected {tuple(self.topk_ids.shape)} float32, "
                f"got {tuple(self.topk_weights.shape)} {self.topk_weights.dtype}"
            )


@dataclass(frozen=True)
class AlignMeta:
    block_m: int  # M tile of the grouped GEMMs; every expert's slot run is padded to a multiple of it
    num_tokens: int  # T
    top_k: int  # k
    expert_counts: torch.Tensor | None  # (E,) int32: kept assignments per expert; None from slot_meta
    sorted_ids: torch.Tensor  # (P,) int32: flat assignment id per slot, T*k = pad sentinel
    expert_of_block: torch.Tensor  # (P // block_m,) int32: expert of each tile, -1 = unused tile
    num_padded: torch.Tensor  # (1,) int32: used slots (device scalar, never read on the host)
    inverse: torch.Tensor  # (T*k,) int32: slot of each assignment, -1 if dropped
    routed_counts: torch.Tensor | None = None  # (E,) int32: all assignments per expert, before the local mask
    # slot_meta's tiles: the (T*k,) expert ids and E, so the combine drops ids outside [0, E) itself
    expert_ids: torch.Tensor | None = None
    num_experts: int = 0

    def __post_init__(self) -> None:
        P = self.sorted_ids.numel()
        checks = [
            (self.block_m >= 1, "block_m", ">= 1", self.block_m),
            (P % self.block_m == 0, "sorted_ids", f"a multiple of block_m ({self.block_m}) slots", P),
            (self.sorted_ids.dtype == torch.int32, "sorted_ids.dtype", "int32", self.sorted_ids.dtype),
            (
                self.expert_of_block.numel() == P // self.block_m,
                "expert_of_block",
                f"{P // self.block_m} tiles",
                self.expert_of_block.numel(),
            ),
            (
                self.inverse.numel() == self.num_tokens * self.top_k,
                "inverse",
                f"{self.num_tokens * self.top_k} entries",
                self.inverse.numel(),
            ),
        ]
        for ok, name, want, got in checks:
            if not ok:
                raise ValueError(f"AlignMeta.{name}: expected {want}, got {got}")

    @property
    def sentinel(self) -> int:
        """The flat id that marks a padding slot (one past the last assignment)."""
        return self.num_tokens * self.top_k

    @property
    def num_blocks(self) -> int:
        return self.expert_of_block.numel()

    def combine_slots(self) -> tuple[torch.Tensor, int]:
        """(slots, end) of the combine's kept test 0 <= slots[t*k+j] < end (combine.launch_combine): align's
        inverse, -1 where it dropped an assignment; or, for slot_meta's tiles (no kernel looked at the ids),
        the expert ids themselves against E, so an out-of-range id is dropped as align would drop it."""
        if self.expert_ids is not None:
            return self.expert_ids, self.num_experts
        return self.inverse, SLOT_END
