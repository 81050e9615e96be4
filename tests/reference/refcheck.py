"""Comparison helpers for the oracle tests: exact for ids, masks and counts; scale-relative for floats,
with non-finite values required in the same places. Failures name the field and the worst element."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

INT_FIELDS = ("topk_ids", "expert_counts", "kept", "kept_counts", "order", "offsets")


def as_np(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def assert_same_ints(a, b, what: str) -> None:
    a, b = as_np(a), as_np(b)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    bad = np.argwhere(a != b)
    assert bad.size == 0, (
        f"{what}: {len(bad)} differ, first at {tuple(bad[0])}: {a[tuple(bad[0])]} != {b[tuple(bad[0])]}"
    )


def assert_close(a, b, what: str, *, rtol: float = 1e-12, rows: np.ndarray | None = None) -> None:
    """|a - b| <= rtol * max|a| over the compared elements; NaN and +-inf in the same places.
    `rows` (bool over axis 0) restricts the check to those rows."""
    a, b = as_np(a).astype(np.float64), as_np(b).astype(np.float64)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    if rows is not None:
        a, b = a[rows], b[rows]
    same_nan = np.isnan(a) == np.isnan(b)
    assert same_nan.all(), f"{what}: NaN at different places, first {tuple(np.argwhere(~same_nan)[0])}"
    inf_a, inf_b = np.where(np.isinf(a), a, 0), np.where(np.isinf(b), b, 0)
    assert (inf_a == inf_b).all(), f"{what}: inf at different places"
    fin = np.isfinite(a)
    if not fin.any():
        return
    scale = max(np.abs(a[fin]).max(), np.finfo(np.float64).tiny)
    err = np.where(fin, np.abs(a - np.where(fin, b, 0)), 0)
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert err[worst] <= rtol * scale, (
        f"{what}: max error {err[worst]:.3e} > {rtol:.0e} * scale {scale:.3e} at {worst}: "
        f"{a[worst]!r} vs {b[worst]!r}"
    )


def _fields(result, prefix: str = ""):
    """(name, value) of every leaf of an oracle result (nested dataclasses flattened)."""
    for f in dataclasses.fields(result):
        v = getattr(result, f.name)
        if dataclasses.is_dataclass(v):
            yield from _fields(v, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", v


def assert_results_agree(a, b, *, rtol: float = 1e-12, clean_rows: np.ndarray | None = None) -> None:
    """Every field of two oracle results: ints exactly, floats to rtol (on clean_rows only, when given:
    rows of non-finite tokens may differ in how NaN and inf mix)."""
    fa, fb = dict(_fields(a)), dict(_fields(b))
    assert fa.keys() == fb.keys(), f"fields differ: {sorted(fa.keys() ^ fb.keys())}"
    for name, va in fa.items():
        vb = fb[name]
        assert (va is None) == (vb is None), f"{name}: one result has None"
        if va is None:
            continue
        if name.rsplit(".", 1)[-1] in INT_FIELDS:
            assert_same_ints(va, vb, name)
        else:
            assert_close(va, vb, name, rtol=rtol, rows=clean_rows)
