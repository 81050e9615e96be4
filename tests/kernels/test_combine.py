"""moe_cts.kernels.combine against moe_cts.reference.combine: fp32 sum in slot order, dropped rows never read."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from _moe_testlib import DEVICE, U_FP32, assert_within, u_out

import moe_cts.kernels
import moe_cts.reference.numpy_oracle as ref
from moe_cts.kernels import _combine_kernels
from moe_cts.reference.spec import MoESpec, SpecError

# `moe_cts.kernels.combine` is the function (kernels/__init__.py); the launcher module is reached by name.
combine_mod = importlib.import_module("moe_cts.kernels.combine")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _inputs(T: int, k: int, H: int, dtype, *, shared: bool, seed: int = 0, drop: float = 0.3):
    gen = torch.Generator().manual_seed(seed)
    spec = MoESpec(hidden_size=H, intermediate_size=16, num_experts=max(k, 4), top_k=k)
    eo = torch.randn((T, k, H), generator=gen, dtype=torch.float64).to(dtype)
    tw = (torch.rand((T, k), generator=gen) + 0.1).to(torch.float32)
    kept = torch.rand((T, k), generator=gen) >= drop
    # A dropped row holds garbage (a stale or never-written workspace row): it must never be read.
    eo = torch.where(kept[..., None], eo, torch.tensor(float("nan"), dtype=dtype))
    tw = torch.where(kept, tw, torch.tensor(float("nan")))
    so = torch.randn((T, H), generator=gen, dtype=torch.float64).to(dtype) if shared else None
    return spec, eo, tw, kept, so


def _expected(spec, eo, tw, kept, so, dtype):
    eo64 = np.nan_to_num(eo.double().numpy())  # dropped rows contribute 0 in the oracle whatever they hold
    tw64 = np.nan_to_num(tw.double().numpy())
    so64 = None if so is None else so.double().numpy()
    want = ref.combine(spec, eo64, tw64, kept.numpy(), so64)
    mag = ref.combine(spec, np.abs(eo64), np.abs(tw64), kept.numpy(), None if so64 is None else np.abs(so64))
    bound = (spec.top_k + 1) * U_FP32 * mag + u_out(dtype) * np.abs(want)
    return want, bound


def _run(spec, eo, tw, kept, so):
    dev = lambda t: None if t is None else t.to(DEVICE)
    return moe_cts.kernels.combine(spec, dev(eo), dev(tw), dev(kept), dev(so))


GRID = [
    # (T, k, H, shared, note)
    (1, 1, 8, False, "one token, k = 1"),
    (5, 2, 72, True, "H not a power of two, with shared"),
    (4, 8, 1500, False, "H spans two blocks, k = 8"),
    (6, 4, 40, True, "shared expert"),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("T", "k", "H", "shared", "note"), GRID, ids=[g[-1] for g in GRID])
def test_combine_matches_the_oracle_and_never_reads_dropped_rows(T, k, H, shared, note, dtype) -> None:
    spec, eo, tw, kept, so = _inputs(T, k, H, dtype, shared=shared)
    got = _run(spec, eo, tw, kept, so)
    want, bound = _expected(spec, eo, tw, kept, so, dtype)
    assert got.dtype == dtype
    assert_within(got, want, bound, f"combine[{note}]")


def test_combine_reruns_are_bitwise_equal() -> None:
    spec, eo, tw, kept, so = _inputs(7, 4, 300, torch.bfloat16, shared=True, seed=3)
    a, b = _run(spec, eo, tw, kept, so), _run(spec, eo, tw, kept, so)
    assert torch.equal(a.view(torch.int16), b.view(torch.int16))


def test_every_slot_dropped_gives_the_shared_output_alone() -> None:
    spec, eo, tw, kept, so = _inputs(3, 2, 64, torch.float32, shared=True, drop=1.1)
    assert not kept.any()
    assert torch.equal(_run(spec, eo, tw, kept, so).cpu(), so)


def test_zero_tokens_launch_nothing(monkeypatch) -> None:
    class NoLaunch:
        def __getitem__(self, grid):
            raise AssertionError("combine launched for T = 0")

    monkeypatch.setattr(combine_mod, "combine_kernel", NoLaunch())
    spec, eo, tw, kept, so = _inputs(0, 2, 16, torch.float32, shared=False)
    assert _run(spec, eo, tw, kept, so).shape == (0, 16)
    assert not isinstance(_combine_kernels.combine_kernel, NoLaunch)  # only the launcher's name was patched


def test_wrong_weights_dtype_raises_before_launch() -> None:
    spec, eo, tw, kept, so = _inputs(2, 2, 16, torch.float32, shared=False)
    with pytest.raises(SpecError, match=r"topk_weights\.dtype"):
        _run(spec, eo, tw.half(), kept, so)


# ----------------------------------------------------------------------------------------------- the check can fail
@pytest.mark.parametrize("broken", ["all zero", "last slot dropped", "weights ignored"])
def test_comparison_catches_a_broken_combine(broken) -> None:
    spec, eo, tw, kept, so = _inputs(6, 4, 64, torch.bfloat16, shared=False, drop=0.0)
    want, bound = _expected(spec, eo, tw, kept, so, torch.bfloat16)
    if broken == "all zero":
        got = torch.zeros(want.shape)
    elif broken == "last slot dropped":
        got = _run(spec, eo, tw, kept & (torch.arange(4) < 3), so)
    else:
        got = _run(spec, eo, torch.ones_like(tw), kept, so)
    with pytest.raises(AssertionError, match="error/bound"):
        assert_within(got, want, bound, "combine")
