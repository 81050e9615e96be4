"""The one value-comparison helper: error/bound ratios, RMS and signed-bias checks, worst elements.

    c = compare(got, want, bound, mask=judged)
    c.max_ratio, c.p99_ratio        max and 99th percentile of |got - want| / bound over judged elements
    c.rms_ratio                     RMS(err) / RMS(sigma), sigma = bound / SIGMAS_PER_BOUND (expected error)
    c.bias_z, c.bias_mean           z-score and mean of err * sign(want) / sigma (truncation, lost factors)
    c.nonfinite_mismatch            judged elements where NaN/inf do not sit in the same places
    c.worst                         the worst elements: index, got, want, bound, ratio
    c.within_bound / c.quality_ok   max_ratio <= 1 and no non-finite mismatch / RMS and bias checks pass

NaN and inf must appear in the same places with the same sign; a finite value where the oracle has a
non-finite one (or the reverse) counts as an infinite ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: the bound is about this many standard deviations of the expected error (c ~ 3; rounding terms are tighter:
#: RNE storage gives RMS(err) ~ 0.42 u|y|, i.e. ~1.3 sigma, so the RMS limit sits at 2.5 sigma)
SIGMAS_PER_BOUND = 3.0
#: RMS(err) above this many expected sigmas is a QualityWarning
RMS_LIMIT = 2.5
#: a signed bias is flagged when its z-score and its size (in sigmas) both exceed these
BIAS_Z_LIMIT = 6.0
BIAS_MEAN_LIMIT = 0.25
#: fewer judged elements than this: RMS and bias statistics are noise, not evidence
MIN_STATISTIC_ELEMENTS = 32
MIN_STATISTIC_ROWS = 8


@dataclass(frozen=True)
class Comparison:
    n: int  # judged elements
    max_ratio: float
    p99_ratio: float
    rms_ratio: float
    bias_z: float
    bias_mean: float
    max_rel_err: float  # max |err| / max(|want|) over finite judged elements
    rms_rel_err: float  # RMS(err) / RMS(want)
    nonfinite_mismatch: int
    worst: tuple[dict, ...]

    @property
    def within_bound(self) -> bool:
        return self.nonfinite_mismatch == 0 and self.max_ratio <= 1.0

    @property
    def rms_ok(self) -> bool:
        return self.n < MIN_STATISTIC_ELEMENTS or self.rms_ratio <= RMS_LIMIT

    @property
    def bias_ok(self) -> bool:
        flagged = abs(self.bias_z) > BIAS_Z_LIMIT and abs(self.bias_mean) > BIAS_MEAN_LIMIT
        return self.n < MIN_STATISTIC_ELEMENTS or not flagged

    @property
    def quality_ok(self) -> bool:
        return self.rms_ok and self.bias_ok

    def summary(self) -> str:
        return (
            f"max err/bound {self.max_ratio:.3g} (p99 {self.p99_ratio:.3g}), RMS {self.rms_ratio:.3g} sigma, "
            f"bias z {self.bias_z:.3g} ({self.bias_mean:+.3g} sigma), max rel err {self.max_rel_err:.3g}, "
            f"{self.nonfinite_mismatch} NaN/inf mismatches, {self.n} elements"
        )


def _as_np(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().to("cpu").double().numpy()
    return np.asarray(a, dtype=np.float64)


def _same_nonfinite(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """True where got and want are both NaN, or both the same infinity."""
    both_nan = np.isnan(got) & np.isnan(want)
    same_inf = np.isinf(got) & np.isinf(want) & (np.sign(got) == np.sign(want))
    return both_nan | same_inf


def compare(got, want, bound, *, mask=None, floor: float = 0.0, top: int = 5) -> Comparison:
    """Compare got against want element by element under `bound` (same shapes; mask True = judged)."""
    got, want, bound = _as_np(got), _as_np(want), _as_np(bound) + floor
    if got.shape != want.shape:
        raise ValueError(f"compare: shape {got.shape} against the oracle's {want.shape}")
    judged = (
        np.ones(want.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), want.shape)
    )
    finite_want = np.isfinite(want)
    fin = judged & finite_want & np.isfinite(got)
    mismatch = judged & ~fin & ~_same_nonfinite(got, want)
    err = np.where(fin, got - want, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(fin, np.abs(err) / bound, 0.0)
        ratio = np.where(fin & (err == 0), 0.0, ratio)
    ratio = np.where(mismatch, np.inf, ratio)
    n = int(judged.sum())
    vals = ratio[judged]
    max_ratio = float(vals.max()) if n else 0.0
    with np.errstate(invalid="ignore"):  # inf ratios (NaN mismatches) make the interpolation inf - inf
        p99 = float(np.quantile(vals, 0.99)) if n else 0.0
    rows = (
        np.broadcast_to(np.arange(want.shape[0]).reshape((-1,) + (1,) * (want.ndim - 1)), want.shape)
        if want.ndim
        else np.zeros((), int)
    )
    rms_ratio, bias_z, bias_mean = _statistics(err[fin], want[fin], bound[fin], rows[fin])
    wmax = float(np.abs(want[fin]).max()) if fin.any() else 0.0
    max_rel = float(np.abs(err[fin]).max() / wmax) if wmax > 0 else 0.0
    rms_want = float(np.sqrt(np.mean(want[fin] ** 2))) if fin.any() else 0.0
    rms_rel = float(np.sqrt(np.mean(err[fin] ** 2)) / rms_want) if rms_want > 0 else 0.0
    return Comparison(
        n=n,
        max_ratio=max_ratio,
        p99_ratio=p99,
        rms_ratio=rms_ratio,
        bias_z=bias_z,
        bias_mean=bias_mean,
        max_rel_err=max_rel,
        rms_rel_err=rms_rel,
        nonfinite_mismatch=int(mismatch.sum()),
        worst=_worst(got, want, bound, ratio, judged, top),
    )


def _statistics(
    err: np.ndarray, want: np.ndarray, bound: np.ndarray, rows: np.ndarray
) -> tuple[float, float, float]:
    """RMS ratio, and the bias z-score over token rows: errors within a row share the token's routing
    weight rounding, so rows (not elements) are the independent samples of the signed mean."""
    sigma = bound / SIGMAS_PER_BOUND
    ok = sigma > 0
    if not ok.any():
        return 0.0, 0.0, 0.0
    err, want, sigma, rows = err[ok], want[ok], sigma[ok], rows[ok]
    rms_ratio = float(np.sqrt(np.mean(err**2)) / np.sqrt(np.mean(sigma**2)))
    s = err * np.sign(want) / sigma  # > 0: away from zero, < 0: toward zero
    mean = float(s.mean())
    uniq, inv = np.unique(rows, return_inverse=True)
    if uniq.size < MIN_STATISTIC_ROWS:
        return rms_ratio, 0.0, mean
    per_row = np.bincount(inv, weights=s) / np.bincount(inv)
    sd = float(per_row.std(ddof=1))
    if sd <= 1e-9 * abs(float(per_row.mean())):  # identical rows (e.g. H = 1): one sample, no evidence
        return rms_ratio, 0.0, mean
    z = float(per_row.mean()) / (sd / math.sqrt(per_row.size))
    return rms_ratio, z, mean


def _worst(got, want, bound, ratio, judged, top: int) -> tuple[dict, ...]:
    r = np.where(judged, ratio, -1.0).ravel()
    if r.size == 0:
        return ()
    idx = np.argsort(-r, kind="stable")[:top]
    out = []
    for i in idx:
        if r[i] <= 0:
            break
        coord = tuple(int(c) for c in np.unravel_index(i, want.shape))
        out.append(
            {
                "index": list(coord),
                "got": _num(got.ravel()[i]),
                "want": _num(want.ravel()[i]),
                "bound": _num(bound.ravel()[i]),
                "ratio": _num(r[i]),
            }
        )
    return tuple(out)


def _num(v) -> float | str:
    """JSON-safe number: NaN/inf become strings."""
    v = float(v)
    return v if math.isfinite(v) else str(v)
