"""One token without an alignment launch (kernels/align.slot_meta): tile j holds assignment j alone.

At T = 1 a token's k experts are distinct, so align's grouping is one slot per expert too; slot_meta lays the
same tiles out in assignment order from views and per-device constants. The layer's output must keep align's
bits in every path (16-bit with a shared expert, block fp8, MXFP4), ids outside [0, E) must be dropped as
align drops them (the GEMMs skip such a tile, the combine tests the id), and every other input goes to align.
"""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch
from _moe_testlib import DEVICE, make_inputs

from moe_cts.conformance.engine.cases import Case
from moe_cts.kernels import Routing
from moe_cts.kernels.moe import fused_moe
from moe_cts.reference.quant import QuantScheme
from moe_cts.reference.spec import MoESpec

#: the module (moe_cts.kernels.align is the stage function: kernels/__init__.py)
ALIGN = importlib.import_module("moe_cts.kernels.align")

SPEC = MoESpec(hidden_size=96, intermediate_size=64, num_experts=8, top_k=3, renormalize=True)
SHARED = SPEC.replace(n_shared_experts=1, shared_intermediate_size=64)


def _quantized(spec: MoESpec, dtype: str = "bfloat16"):
    inp = Case(spec, 1, dtype, seed=3).build_inputs(DEVICE)
    return inp.qweights, inp.x


def _layers():
    """(name, spec, weights, x) of one token in each kernel path."""
    inp = make_inputs(SHARED, torch.bfloat16, 1, seed=2)
    yield "bf16 shared", SHARED, inp.weights, inp.x
    fp8 = SPEC.replace(quant=QuantScheme.fp8_block())
    yield ("fp8 block", fp8, *_quantized(fp8))
    mx = SPEC.replace(hidden_size=64, quant=QuantScheme.mxfp4(activation_dtype="bfloat16"))
    yield ("mxfp4", mx, *_quantized(mx))


LAYERS = list(_layers())


def _forward(spec, weights, x, ids, *, slots: bool, monkeypatch) -> torch.Tensor:
    monkeypatch.setattr(ALIGN, "SLOT_META_MAX_TOKENS", 1 if slots else 0)
    # distinct weights: a tile matched to the wrong assignment changes the sum (equal ones would not)
    w = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float32, device=ids.device)
    return fused_moe(spec, weights, x, routing=Routing(ids, w)).clone()


def test_slot_meta_lays_one_tile_per_assignment() -> None:
    ids = torch.tensor([[5, 0, 2]], dtype=torch.int32, device=DEVICE)
    meta = ALIGN.slot_meta(SPEC, ids, 16)
    assert meta is not None and meta.num_blocks == 3 and meta.expert_counts is None
    want = torch.full((3, 16), 3, dtype=torch.int32)
    want[:, 0] = torch.arange(3)
    assert torch.equal(meta.sorted_ids.cpu(), want.reshape(-1))
    assert meta.expert_of_block.cpu().tolist() == [5, 0, 2]
    assert meta.inverse.cpu().tolist() == [0, 16, 32] and int(meta.num_padded.cpu()[0]) == 48
    slots, end = meta.combine_slots()
    assert slots.cpu().tolist() == [5, 0, 2] and end == SPEC.num_experts


@pytest.mark.parametrize(
    ("why", "spec", "ids"),
    [
        ("two tokens", SPEC, torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)),
        ("no token", SPEC, torch.empty((0, 3), dtype=torch.int32)),
        (
            "local experts",
            SPEC.replace(local_experts=(0, 1, 2, 3)),
            torch.tensor([[0, 1, 5]], dtype=torch.int32),
        ),
        ("int64 ids", SPEC, torch.tensor([[0, 1, 2]], dtype=torch.int64)),
        ("strided ids", SPEC, torch.tensor([[0, 9, 1, 9, 2, 9]], dtype=torch.int32)),
    ],
)
def test_everything_else_goes_to_align(why, spec, ids) -> None:
    ids = ids.to(DEVICE)
    if why == "strided ids":  # sliced on the device: a copy to a GPU makes a gapped view contiguous
        ids = ids[:, ::2]
    assert ALIGN.slot_meta(spec, ids, 16) is None, why


@pytest.mark.parametrize(("name", "spec", "weights", "x"), LAYERS, ids=[layer[0] for layer in LAYERS])
def test_one_token_keeps_aligns_bits(name, spec, weights, x, monkeypatch) -> None:
    ids = torch.tensor([[6, 1, 3]], dtype=torch.int32, device=DEVICE)
    want = _forward(spec, weights, x, ids, slots=False, monkeypatch=monkeypatch)
    got = _forward(spec, weights, x, ids, slots=True, monkeypatch=monkeypatch)
    assert torch.isfinite(want).all() and want.abs().max() > 0.1, name
    assert torch.equal(got, want), name


@pytest.mark.parametrize(("name", "spec", "weights", "x"), LAYERS, ids=[layer[0] for layer in LAYERS])
def test_out_of_range_ids_are_dropped_as_align_drops_them(name, spec, weights, x, monkeypatch) -> None:
    """Ids are trusted (checking them would sync with the host); a bad one must not be read or written."""
    ids = torch.tensor([[2, spec.num_experts, -1]], dtype=torch.int32, device=DEVICE)
    want = _forward(spec, weights, x, ids, slots=False, monkeypatch=monkeypatch)
    got = _forward(spec, weights, x, ids, slots=True, monkeypatch=monkeypatch)
    assert torch.isfinite(got).all() and torch.equal(got, want), name


def test_the_comparison_catches_tiles_matched_to_the_wrong_experts(monkeypatch) -> None:
    """A slot layout whose experts are rolled by one tile: the bitwise check above must fail on it."""
    _, spec, weights, x = LAYERS[0]
    ids = torch.tensor([[6, 1, 3]], dtype=torch.int32, device=DEVICE)
    want = _forward(spec, weights, x, ids, slots=False, monkeypatch=monkeypatch)
    real = ALIGN.slot_meta

    def rolled(*a, **kw):
        meta = real(*a, **kw)
        return dataclasses.replace(meta, expert_of_block=meta.expert_of_block.roll(1))

    monkeypatch.setattr(ALIGN, "slot_meta", rolled)
    got = _forward(spec, weights, x, ids, slots=True, monkeypatch=monkeypatch)
    assert not torch.equal(got, want)


class _PoisonedTorch:
    """The torch module as kernels/moe.py sees it, with every float workspace from torch.empty NaN-filled: a row
    no kernel writes then shows in the output (fresh host memory is often zeros, which would hide it)."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def empty(*args, **kwargs):
        t = torch.empty(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t


def test_the_comparison_catches_a_combine_that_keeps_out_of_range_ids(monkeypatch) -> None:
    """A combine that tests align's kept rule (slot >= 0) on slot_meta's tiles reads the unwritten rows of the
    skipped out-of-range ids: the out-of-range check above must fail on it."""
    moe_mod = importlib.import_module("moe_cts.kernels.moe")
    meta_mod = importlib.import_module("moe_cts.kernels.metadata")
    _, spec, weights, x = LAYERS[0]
    ids = torch.tensor([[2, spec.num_experts, -1]], dtype=torch.int32, device=DEVICE)
    want = _forward(spec, weights, x, ids, slots=False, monkeypatch=monkeypatch)
    monkeypatch.setattr(moe_mod, "torch", _PoisonedTorch())
    assert torch.equal(
        _forward(spec, weights, x, ids, slots=True, monkeypatch=monkeypatch), want
    )  # as shipped
    monkeypatch.setattr(meta_mod.AlignMeta, "combine_slots", lambda m: (m.inverse, meta_mod.SLOT_END))
    got = _forward(spec, weights, x, ids, slots=True, monkeypatch=monkeypatch)
    assert not torch.equal(got, want)
