"""Stage verdicts: numeric stages through compare(), routing tie-aware, permutation exactly.

Routing. ids must be distinct and in [0, E) in every row (NaN rows included). Where the implementation's
set of experts differs from the oracle's, it is accepted when some perturbation of the keys within their
error bound (tolerance.router_bounds) makes it the top-k: an exact tie (keys equal in float64) gives a
CompatibilityWarning, a near tie passes. Grouped top-k checks the group choice the same way first.
The order of ids within a row is free; weights are matched by id against the oracle's formula re-run on
the implementation's ids.
"""

from __future__ import annotations

import numpy as np

from moe_cts.conformance.engine.compare import Comparison, compare
from moe_cts.conformance.engine.results import FailKind, Outcome, StageVerdict
from moe_cts.reference.spec import MoESpec

ROW_SAME, ROW_EXACT_TIE, ROW_NEAR_TIE, ROW_WRONG, ROW_INVALID = (
    "same",
    "exact_tie",
    "near_tie",
    "wrong",
    "invalid",
)


def numeric_verdict(stage: str, c: Comparison, what: str = "") -> StageVerdict:
    """Pass inside the bound; QualityWarning inside it but RMS/bias off; Fail outside it."""
    if not c.within_bound:
        outcome, kind = Outcome.FAIL, FailKind.NUMERIC
        w = c.worst[0] if c.worst else {}
        msg = (
            f"{what or stage}: outside the error bound at {w.get('index')}: got {w.get('got')}, "
            f"want {w.get('want')}, bound {w.get('bound')}; {c.summary()}"
        )
    elif not c.quality_ok:
        outcome, kind = Outcome.QUALITY_WARNING, None
        why = "RMS error above the model" if not c.rms_ok else "signed bias"
        msg = f"{what or stage}: inside the bound, but {why}; {c.summary()}"
    else:
        outcome, kind, msg = Outcome.PASS, None, f"{what or stage}: {c.summary()}"
    return StageVerdict(
        stage=stage,
        outcome=outcome,
        max_ratio=_f(c.max_ratio),
        p99_ratio=_f(c.p99_ratio),
        rms_ratio=_f(c.rms_ratio),
        bias_z=_f(c.bias_z),
        fail_kind=kind,
        message=msg,
        worst=c.worst,
    )


def _f(v: float) -> float | None:
    return float(v) if np.isfinite(v) else float("inf")


# ----------------------------------------------------------------------------------------------- routing
def _group_scores(spec: MoESpec, keys: np.ndarray, tol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(G,) group scores of one row and their tolerances (sum of the top-2 tolerances or the max one)."""
    G = spec.n_group
    k = keys.reshape(G, -1)
    t = tol.reshape(G, -1)
    order = np.argsort(-k, axis=1, kind="stable")
    ks = np.take_along_axis(k, order, 1)
    ts = np.take_along_axis(t, order, 1)
    if spec.group_score == "max":
        return ks[:, 0], ts[:, 0]
    return ks[:, 0] + ks[:, 1], ts[:, 0] + ts[:, 1]


def _separates(keys: np.ndarray, tol: np.ndarray, chosen: np.ndarray, among: np.ndarray) -> bool:
    """Whether keys perturbed within tol can rank every `chosen` entry at or above every other of `among`."""
    rest = among & ~chosen
    if not rest.any() or not chosen.any():
        return True
    return bool(np.min(keys[chosen] + tol[chosen]) >= np.max(keys[rest] - tol[rest]))


def _group_choice(spec: MoESpec, gs: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(G,) bool: the groups `ids` use, filled up to topk_group with the best-scoring others."""
    gchosen = np.zeros(spec.n_group, bool)
    gchosen[np.unique(ids // (spec.num_experts // spec.n_group))] = True
    fill = [g for g in np.argsort(-gs, kind="stable") if not gchosen[g]][: spec.topk_group - gchosen.sum()]
    gchosen[fill] = True
    return gchosen


def _valid_choice(spec: MoESpec, keys: np.ndarray, tol: np.ndarray, ids: np.ndarray) -> bool:
    """Whether `ids` is a top-k of one row for some keys within keys +- tol (tie rule aside)."""
    E = spec.num_experts
    chosen = np.zeros(E, bool)
    chosen[ids] = True
    eligible = np.ones(E, bool)
    if spec.grouped:
        G, per = spec.n_group, E // spec.n_group
        gs, gt = _group_scores(spec, keys, tol)
        used = np.unique(ids // per)
        if used.size > spec.topk_group:
            return False
        gchosen = _group_choice(spec, gs, ids)
        if not _separates(gs, gt, gchosen, np.ones(G, bool)):
            return False
        eligible = np.repeat(gchosen, per)
    return _separates(keys, tol, chosen, eligible)


def classify_rows(
    spec: MoESpec,
    keys: np.ndarray,
    tol: np.ndarray,
    ref_ids: np.ndarray,
    got_ids: np.ndarray,
    bad_rows: np.ndarray,
) -> list[str]:
    """Per row: same | exact_tie | near_tie | wrong | invalid (duplicate or out-of-range ids)."""
    E = spec.num_experts
    out = []
    for t in range(got_ids.shape[0]):
        g = got_ids[t]
        if g.min(initial=0) < 0 or g.max(initial=0) >= E or np.unique(g).size != g.size:
            out.append(ROW_INVALID)
        elif bad_rows[t] or set(g.tolist()) == set(ref_ids[t].tolist()):
            out.append(ROW_SAME)
        elif _valid_choice(spec, keys[t], np.zeros(E), g):
            out.append(ROW_EXACT_TIE)
        elif _valid_choice(spec, keys[t], tol[t], g):
            out.append(ROW_NEAR_TIE)
        else:
            out.append(ROW_WRONG)
    return out


def ambiguous_rows(spec: MoESpec, keys: np.ndarray, tol: np.ndarray, ref_ids: np.ndarray) -> np.ndarray:
    """(T,) bool: rows where another choice of experts would also be accepted (a tie or a near tie)."""
    T, E = keys.shape
    amb = np.zeros(T, bool)
    for t in range(T):
        chosen = np.zeros(E, bool)
        chosen[ref_ids[t]] = True
        if not np.isfinite(keys[t]).all():
            continue
        eligible = np.ones(E, bool)
        if spec.grouped:  # a near tie between group scores changes the eligible experts themselves
            per = E // spec.n_group
            gs, gt = _group_scores(spec, keys[t], tol[t])
            gchosen = _group_choice(spec, gs, ref_ids[t])
            if (~gchosen).any() and np.min(gs[gchosen] - gt[gchosen]) <= np.max(gs[~gchosen] + gt[~gchosen]):
                amb[t] = True
                continue
            eligible = np.repeat(gchosen, per)
        rest = eligible & ~chosen
        if not rest.any():
            continue
        lo = np.min(keys[t][chosen] - tol[t][chosen])
        amb[t] = lo <= np.max(keys[t][rest] + tol[t][rest])
    return amb


def routing_verdict(
    spec: MoESpec,
    rows: list[str],
    got_ids: np.ndarray,
    ref_ids: np.ndarray,
    keys: np.ndarray,
    weights_cmp: Comparison | None,
) -> StageVerdict:
    """Combine the per-row id classification and the weights comparison into the router verdict."""
    bad = [t for t, r in enumerate(rows) if r in (ROW_INVALID, ROW_WRONG)]
    if bad:
        t = bad[0]
        kind = "duplicate or out-of-range ids" if rows[t] == ROW_INVALID else "ids not a top-k of the keys"
        msg = (
            f"router: {len(bad)} rows with {kind}; row {t}: got {got_ids[t].tolist()}, "
            f"want {ref_ids[t].tolist()} (keys {np.round(keys[t], 6).tolist()[:16]})"
        )
        return StageVerdict("router", Outcome.FAIL, fail_kind=FailKind.ROUTING, message=msg)
    if weights_cmp is not None and not weights_cmp.within_bound:
        return numeric_verdict("router", weights_cmp, "router weights")
    ties = [t for t, r in enumerate(rows) if r == ROW_EXACT_TIE]
    base = numeric_verdict("router", weights_cmp, "router weights") if weights_cmp is not None else None
    if ties:
        t = ties[0]
        msg = (
            f"router: exact ties broken differently from the lower-id rule in {len(ties)} rows; row {t}: "
            f"got {got_ids[t].tolist()}, oracle {ref_ids[t].tolist()}"
        )
        return StageVerdict(
            "router",
            Outcome.COMPATIBILITY_WARNING,
            max_ratio=base.max_ratio if base else None,
            p99_ratio=base.p99_ratio if base else None,
            message=msg,
        )
    if base is not None:
        return base
    return StageVerdict("router", Outcome.PASS, message="router: ids match")


def strict_tie_verdict(v: StageVerdict) -> StageVerdict:
    """Under --strict-ties a tie broken differently from the lower-id rule is a routing Fail (users who need
    one tie rule everywhere: batch invariance, RL rollouts); every other verdict is unchanged."""
    if v.outcome != Outcome.COMPATIBILITY_WARNING:
        return v
    return StageVerdict(
        v.stage,
        Outcome.FAIL,
        max_ratio=v.max_ratio,
        p99_ratio=v.p99_ratio,
        fail_kind=FailKind.ROUTING,
        message=f"strict ties: {v.message}",
    )


def weights_dtype_mismatch(got_w, declared: str, case_dtype: str) -> str | None:
    """Why route()'s topk_weights tensor is not in the declared dtype (Capabilities.router_weights_dtype:
    "float32", or "input" = the case dtype), or None. Only a 16-bit tensor that was not declared is flagged:
    wider weights are judged by value, and arrays without a dtype name too."""
    dtype = str(getattr(got_w, "dtype", "")).removeprefix("torch.")
    want = case_dtype if declared == "input" else "float32"
    if dtype in ("float16", "bfloat16") and dtype != want:
        return (
            f"router weights: dtype {dtype}, but router_weights_dtype={declared!r} declares {want} "
            f'(declare "input" for weights in the case dtype)'
        )
    return None


def compare_weights(
    got_w: np.ndarray,
    got_ids: np.ndarray,
    want_w: np.ndarray,
    want_ids: np.ndarray,
    bound: np.ndarray,
    mask: np.ndarray,
) -> Comparison:
    """Weights matched by expert id (the order within a row is free)."""
    order_got = np.argsort(got_ids, axis=1, kind="stable")
    order_want = np.argsort(want_ids, axis=1, kind="stable")
    g = np.take_along_axis(got_w, order_got, 1)
    w = np.take_along_axis(want_w, order_want, 1)
    b = np.take_along_axis(bound, order_want, 1)
    return compare(g, w, b, mask=mask[:, None])


# ----------------------------------------------------------------------------------------------- permutation
PERMUTATION_FIELDS = ("expert_counts", "kept", "kept_counts", "order", "offsets")


def permutation_verdict(ref, got) -> StageVerdict:
    """Every field the implementation returns must equal the oracle's exactly."""
    checked = []
    for name in PERMUTATION_FIELDS:
        g = getattr(got, name, None)
        if g is None:
            continue
        g = np.asarray(g.detach().cpu() if hasattr(g, "detach") else g)
        w = np.asarray(getattr(ref, name))
        checked.append(name)
        if g.shape != w.shape or not np.array_equal(g.astype(w.dtype), w):
            diff = _first_diff(g, w)
            return StageVerdict(
                "permutation",
                Outcome.FAIL,
                fail_kind=FailKind.ROUTING,
                message=f"permutation.{name}: got shape {g.shape}, want {w.shape}; {diff}",
            )
    if not checked:
        return StageVerdict("permutation", Outcome.NOT_SUPPORTED, message="no permutation fields returned")
    return StageVerdict("permutation", Outcome.PASS, message=f"permutation: {', '.join(checked)} exact")


def _first_diff(g: np.ndarray, w: np.ndarray) -> str:
    if g.shape != w.shape:
        return f"first values got {g.ravel()[:8].tolist()}, want {w.ravel()[:8].tolist()}"
    i = int(np.flatnonzero(g.ravel() != w.ravel())[0])
    return f"first difference at flat index {i}: got {g.ravel()[i]}, want {w.ravel()[i]}"
