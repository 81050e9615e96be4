"""moe_cts.kernels.align / moe_cts.kernels.permute against moe_cts.reference.numpy_oracle.permute: counts, kept, order and
offsets exactly, then the AlignMeta invariants on their own (bijection, padding, tile experts)."""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import moe_cts.reference.numpy_oracle as ref
from moe_cts.kernels.align import align, permute
from moe_cts.kernels.capabilities import NotSupportedError
from moe_cts.kernels.metadata import AlignMeta, padded_capacity
from moe_cts.reference.spec import MoESpec, SpecError

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
KERNELS = (
    "align_one_chunk_kernel",
    "chunk_hist_kernel",
    "chunk_scan_kernel",
    "chunk_scatter_kernel",
    "pad_fill_kernel",
)


@dataclass(frozen=True)
class Case:
    name: str
    E: int
    k: int
    T: int
    block_m: int
    routing: str = "uniform"  # uniform | one_hot (expert 3 in every row) | zipf
    local: tuple[int, ...] | None = None
    strided: bool = False  # topk_ids stored transposed
    dtype: torch.dtype = torch.int32
    tiles: tuple[int, int, int] | None = None  # force (BLOCK_N, SUB, BLOCK_S)


GPU_TILES = (4096, 128, 1024)  # moe_cts.kernels.align._block_sizes(n) off the interpreter, n >= 512k
GPU_SMALL_TILES = (256, 128, 1024)  # the same for n <= 32k: ~128 chunks of 256 ids


def _cases() -> list[Case]:
    return [
        # -- real-model shapes, small T
        Case("mixtral_like", 8, 2, 37, 16),
        Case("qwen_like_several_chunks", 64, 8, 300, 16),  # 2400 ids: 5 interpreter chunks of 512
        Case("dsv3_like", 256, 8, 70, 64),
        # -- expert-count edges (docs/bugs.md#bug-10-alignment-expert-count-limits: 128+ and 1024+ experts)
        Case("single_expert", 1, 1, 5, 16),
        Case("prime_E_257", 257, 8, 100, 32),
        Case("E_1024", 1024, 8, 200, 16),
        Case("k_equals_E", 8, 8, 33, 4),
        Case("block_m_1", 16, 4, 20, 1),
        Case("block_m_larger_than_all_ids", 8, 2, 3, 128),
        # -- skewed routing: the padding must follow the counts, not a uniform guess
        Case("one_hot_expert", 64, 4, 200, 16, routing="one_hot"),
        Case("zipf", 128, 6, 400, 32, routing="zipf"),
        # -- expert parallelism: other experts' assignments dropped
        Case("local_experts", 64, 6, 150, 16, local=tuple(range(16, 40))),
        Case("local_experts_scattered", 257, 8, 60, 16, local=(0, 5, 100, 256)),
        # -- layouts
        Case("strided_ids", 32, 4, 50, 16, strided=True),
        Case("int64_ids", 32, 4, 50, 16, dtype=torch.int64),
        Case("many_chunks", 257, 8, 2100, 128),  # 16800 ids: 33 interpreter chunks
        # -- the GPU tiles: several SUB-id steps per chunk (running per-expert counts across steps)
        Case("gpu_tiles", 64, 8, 700, 16, tiles=GPU_TILES),  # 5600 ids: 2 chunks of 32 steps
        Case("gpu_tiles_local", 257, 6, 300, 32, local=tuple(range(0, 257, 3)), tiles=GPU_TILES),  # one chunk
        Case("gpu_tiles_one_token", 256, 8, 1, 64, tiles=GPU_TILES),  # decode: the one-launch path
        Case("gpu_small_chunks", 64, 8, 300, 16, tiles=GPU_SMALL_TILES),  # 2400 ids: 10 chunks, one scan step
        # BLOCK_E 1024 leaves 8 chunk rows per scan step: 10 chunks take two, the second one partial
        Case("gpu_small_chunks_scan_steps", 1024, 8, 300, 16, tiles=GPU_SMALL_TILES),
    ]


CASES = _cases()


def _ids(case: Case, seed: int = 0) -> torch.Tensor:
    """(T, k) distinct ids per row: a seeded permutation, pushed toward hot experts by the scenario."""
    gen = torch.Generator().manual_seed(seed)
    E, k, T = case.E, case.k, case.T
    if case.routing == "zipf":
        p = 1.0 / torch.arange(1, E + 1, dtype=torch.float64) ** 1.2
        ids = torch.stack([torch.multinomial(p, k, replacement=False, generator=gen) for _ in range(T)])
    else:
        ids = torch.stack([torch.randperm(E, generator=gen)[:k] for _ in range(T)])
        if case.routing == "one_hot":
            ids = torch.where(ids == 3, ids[:, :1], ids)  # keep rows distinct after the swap
            ids[:, 0] = 3
    ids = ids.to(case.dtype)
    if case.strided:
        ids = ids.t().contiguous().t()
    return ids.to(DEVICE)


def _spec(case: Case) -> MoESpec:
    return MoESpec(16, 8, case.E, case.k, local_experts=case.local)


# ----------------------------------------------------------------------------------------------- invariants
def assert_align_invariants(meta: AlignMeta, ids: torch.Tensor, spec: MoESpec) -> None:
    """Everything AlignMeta promises, read from the tensors alone (metadata.py's table)."""
    ids_np = ids.cpu().numpy().astype(np.int64).ravel()
    E, N, bm = spec.num_experts, ids_np.size, meta.block_m
    s, inv = meta.sorted_ids.cpu().numpy(), meta.inverse.cpu().numpy()
    eob, counts = meta.expert_of_block.cpu().numpy(), meta.expert_counts.cpu().numpy()
    num_padded = int(meta.num_padded.cpu()[0])
    assert s.size == padded_capacity(N, E, bm), "sorted_ids: not padded_capacity slots"

    local = np.ones(E, bool) if spec.local_experts is None else np.isin(np.arange(E), spec.local_experts)
    kept = local[ids_np]
    assert np.array_equal(counts, np.bincount(ids_np[kept], minlength=E)), "expert_counts"
    real = s != N
    # Bijection: the non-sentinel slots hold each kept flat id once, and inverse points back at them.
    assert np.array_equal(np.sort(s[real]), np.flatnonzero(kept)), "sorted_ids: not the kept assignments"
    assert np.array_equal(inv[~kept], np.full((~kept).sum(), -1)), "inverse: a dropped assignment has a slot"
    assert np.array_equal(s[inv[kept]], np.flatnonzero(kept)), "inverse: does not point back"

    padded = -(-counts // bm) * bm
    assert num_padded == padded.sum(), f"num_padded {num_padded}, want {padded.sum()}"
    assert (s[num_padded:] == N).all(), "a slot past num_padded is not the sentinel"
    start = np.concatenate([[0], np.cumsum(padded)])
    for e in np.flatnonzero(padded):  # each expert's run: its ids in ascending order, then sentinels
        run = s[start[e] : start[e + 1]]
        assert np.array_equal(run[: counts[e]], np.flatnonzero(kept & (ids_np == e))), f"expert {e}'s run"
        assert (run[counts[e] :] == N).all(), f"expert {e}: a pad slot is not the sentinel"
    used = num_padded // bm
    assert np.array_equal(eob[:used], np.repeat(np.arange(E), padded // bm)), "expert_of_block (used tiles)"
    assert (eob[used:] == -1).all(), "expert_of_block: a tile past num_padded is not -1"


# ----------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_permute_matches_the_oracle(case: Case):
    spec, ids = _spec(case), _ids(case)
    got, want = (
        permute(spec, ids, block_m=case.block_m, tiles=case.tiles),
        ref.permute(spec, ids.cpu().numpy()),
    )
    for field in ("expert_counts", "kept", "kept_counts", "order", "offsets"):
        g, w = getattr(got, field).cpu().numpy(), getattr(want, field)
        assert g.shape == w.shape and np.array_equal(g, w), f"{field}: got {g[:12]}..., want {w[:12]}..."


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_align_metadata_keeps_its_invariants(case: Case):
    spec, ids = _spec(case), _ids(case)
    assert_align_invariants(align(spec, ids, case.block_m, tiles=case.tiles), ids, spec)


def test_offsets_cover_every_assignment_without_a_local_mask():
    case = CASES[1]
    p = permute(_spec(case), _ids(case), block_m=case.block_m)
    assert int(p.offsets[-1]) == case.T * case.k and bool(p.kept.all())


def test_two_runs_are_bitwise_equal():
    case = CASES[1]
    a, b = align(_spec(case), _ids(case), 16), align(_spec(case), _ids(case), 16)
    for f in ("expert_counts", "sorted_ids", "expert_of_block", "num_padded", "inverse"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f


def test_zero_tokens_give_all_pad_metadata_without_a_launch(monkeypatch):
    align_mod = importlib.import_module("moe_cts.kernels.align")  # `moe_cts.kernels.align` is the function

    for name in KERNELS:
        monkeypatch.setattr(align_mod, name, None)  # any launch would raise TypeError
    spec = MoESpec(16, 8, 8, 2)
    meta = align(spec, torch.empty((0, 2), dtype=torch.int32, device=DEVICE), 16)
    assert_align_invariants(meta, torch.empty((0, 2), dtype=torch.int32), spec)
    assert meta.inverse.numel() == 0 and int(meta.num_padded.cpu()[0]) == 0


def test_out_of_range_ids_are_dropped_not_written():
    """Ids are trusted (checking them would sync with the host); a bad one must still not corrupt memory."""
    spec = MoESpec(16, 8, 8, 2)
    ids = torch.tensor([[0, 1], [8, 2], [-1, 1], [3, 100]], dtype=torch.int32, device=DEVICE)
    meta = align(spec, ids, 4)
    inv = meta.inverse.cpu().numpy()
    assert (inv[[2, 4, 7]] == -1).all() and (inv[[0, 1, 3, 5, 6]] >= 0).all()
    assert meta.expert_counts.cpu().tolist() == [1, 2, 1, 1, 0, 0, 0, 0]


# -- deliberately broken alignment: the exact comparison must catch it
def test_the_comparison_catches_an_unstable_order():
    """A permutation with each expert's assignments in descending flat id (an unstable sort)."""
    case = CASES[1]
    spec, ids = _spec(case), _ids(case)
    p = permute(spec, ids, block_m=16)
    o = p.offsets.cpu().numpy()
    broken = np.concatenate([p.order.cpu().numpy()[o[e] : o[e + 1]][::-1] for e in range(case.E)])
    assert not np.array_equal(broken, ref.permute(spec, ids.cpu().numpy()).order)


# -- bad input raises before any launch, naming the field
def _bad_inputs():
    ids = torch.zeros((4, 2), dtype=torch.int32, device=DEVICE)
    spec = MoESpec(16, 8, 8, 2)
    return [
        ("capacity_factor", spec.replace(capacity_factor=1.25), ids, 16, NotSupportedError),
        ("topk_ids.dtype", spec, ids.float(), 16, SpecError),
        ("topk_ids.shape", spec, ids[:, :1], 16, SpecError),
        ("topk_ids.shape", spec, ids.view(-1), 16, SpecError),
        ("block_m", spec, ids, 0, SpecError),
        ("block_m", spec, ids, 16.0, SpecError),
        ("num_experts", MoESpec(16, 8, 8192, 2), ids, 16, NotSupportedError),
    ]


BAD = _bad_inputs()


@pytest.mark.parametrize("field,spec,ids,block_m,error", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_is_rejected_before_launch(field, spec, ids, block_m, error, monkeypatch):
    align_mod = importlib.import_module("moe_cts.kernels.align")  # `moe_cts.kernels.align` is the function

    for name in KERNELS:
        monkeypatch.setattr(align_mod, name, None)  # any launch would raise TypeError
    with pytest.raises(error, match=f"^{re.escape(field)}"):
        align(spec, ids, block_m)


# -- the dense alignment of the shared expert: views of one per-device buffer, no launch
@pytest.mark.parametrize("T, block_m", [(1, 16), (5, 16), (64, 64), (100, 32)])
def test_dense_meta_holds_every_token_in_order(T, block_m):
    from moe_cts.kernels.grouped_gemm import dense_meta

    meta = dense_meta(T, block_m, torch.device(DEVICE))
    P = padded_capacity(T, 1, block_m)
    assert -(-T // block_m) * block_m == P, "one expert's tiles are exact"
    ids = meta.sorted_ids.cpu()
    assert ids.numel() == P and torch.equal(ids[:T], torch.arange(T, dtype=torch.int32))
    assert bool((ids[T:] >= T).all()), "pad slots must hold ids >= T (the kernels mask them)"
    assert meta.expert_of_block.numel() == P // block_m and not meta.expert_of_block.cpu().any()
    assert int(meta.num_padded.cpu()[0]) == P and meta.expert_counts.cpu().tolist() == [T]
    assert torch.equal(meta.inverse.cpu(), torch.arange(T, dtype=torch.int32))


def test_dense_meta_launches_nothing_and_outgrown_buffers_stay_valid(monkeypatch):
    import moe_cts.kernels.grouped_gemm as gg

    small = gg.dense_meta(3, 16, torch.device(DEVICE))
    capacity = gg._dense_slots(1, torch.device(DEVICE))[1].numel()
    big = gg.dense_meta(capacity + 5, 16, torch.device(DEVICE))  # the buffer grows; `small` keeps its views
    assert small.sorted_ids.cpu()[:3].tolist() == [0, 1, 2] and int(small.num_padded.cpu()[0]) == 16
    assert int(big.num_padded.cpu()[0]) == padded_capacity(capacity + 5, 1, 16)
    for name in ("arange", "zeros", "full", "clamp"):
        monkeypatch.setattr(torch, name, None)  # any tensor built now would raise TypeError
    again = gg.dense_meta(capacity, 32, torch.device(DEVICE))
    assert int(again.expert_counts.cpu()[0]) == capacity
