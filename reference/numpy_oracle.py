"""The float64 NumPy oracle of the MoE forward pass. Readable above all: one stage per function,
a loop over experts, no cleverness. docs/semantics.md states the same thing in formulas.

    stage          function        output (shapes)
    router         route           logits (T, E), scores (T, E), keys (T, E), topk_ids (T, k), topk_weights (T, k)
    permutation    permute         expert_counts (E,), kept (T, k), kept_counts (E,), order (N,), offsets (E+1,)
    GEMM1 + act    gate_up         gate_pre (T, k, I), up_pre (T, k, I) | None, act (T, k, I)
    GEMM2          down            expert_out (T, k, H)
    shared         shared_expert   shared_out (T, H)
    combine        combine         y (T, H)

Every function takes float64 NumPy arrays (or anything np.asarray accepts) and returns float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from moe_cts.reference.spec import RENORM_EPS, MoESpec, MoEWeights, SpecError, check_input

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _np(t) -> np.ndarray | None:
    """float64 NumPy copy of a torch tensor / array (None stays None)."""
    if t is None:
        return None
    if hasattr(t, "detach"):
        t = t.detach().to("cpu").double().numpy()
    return np.array(t, dtype=np.float64)


def _weight(t) -> np.ndarray | None:
    """float64 NumPy array of a weight, for reading only: the tensor's own memory where it already is a
    C-contiguous float64 CPU tensor or array (the judge's weight views are), else the same copy as _np.
    Same values and the same layout either way, so the same BLAS calls and bits; the copy of a whole
    expert tensor cost more than the GEMMs of a small batch on it (issue 15)."""
    if t is None:
        return None
    if hasattr(t, "detach"):
        t = t.detach().to("cpu").double().numpy()  # a view when already float64 on the CPU
    return np.ascontiguousarray(t, dtype=np.float64)  # no copy when already C-contiguous float64


# ----------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Routing:
    logits: np.ndarray  # (T, E) x @ router.T + router_bias
    scores: np.ndarray  # (T, E) softmax or sigmoid of logits
    keys: np.ndarray  # (T, E) selection keys: scores + correction_bias, masked groups = -inf
    topk_ids: np.ndarray  # (T, k) int64, distinct per row, in [0, E), by descending key, ties -> lower id
    topk_weights: np.ndarray  # (T, k) scores[ids], renormalized, times routed_scaling_factor


@dataclass(frozen=True)
class Permutation:
    expert_counts: np.ndarray  # (E,) int64: assignments routed to expert e (before capacity / local mask)
    kept: np.ndarray  # (T, k) bool: assignment contributes (within capacity and on a local expert)
    kept_counts: np.ndarray  # (E,) int64: kept assignments of expert e; sums to kept.sum()
    order: np.ndarray  # (N,) int64: flat ids t*k+j of kept assignments, stably sorted by expert
    offsets: np.ndarray  # (E+1,) int64: order[offsets[e]:offsets[e+1]] are expert e's assignments


@dataclass(frozen=True)
class GateUp:
    gate_pre: np.ndarray  # (T, k, I) gate pre-activation incl. bias (the only pre-activation if non-gated)
    up_pre: np.ndarray | None  # (T, k, I) up pre-activation incl. bias; None if non-gated
    act: np.ndarray  # (T, k, I) activation output fed to the down projection


@dataclass(frozen=True)
class MoEResult:
    """Everything the oracle computed for one forward pass."""

    routing: Routing
    permutation: Permutation
    gate_up: GateUp
    expert_out: np.ndarray  # (T, k, H) unweighted expert outputs (incl. b2), for every assignment
    shared_out: np.ndarray  # (T, H) shared-expert output incl. its gate; zeros if none
    y: np.ndarray  # (T, H)

    # convenience accessors for the common fields
    @property
    def topk_ids(self) -> np.ndarray:
        return self.routing.topk_ids

    @property
    def topk_weights(self) -> np.ndarray:
        return self.routing.topk_weights


# ----------------------------------------------------------------------------------------------- router
def softmax(z: np.ndarray) -> np.ndarray:
    """Row softmax, max-subtracted. A row with NaN or +inf gives NaN (inf - inf)."""
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.max(z, axis=-1, keepdims=True)
        e = np.exp(z - m)
        return e / np.sum(e, axis=-1, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


def rank_order(keys: np.ndarray, excluded: np.ndarray | None = None) -> np.ndarray:
    """Column order of each row by the tie rule: excluded last, then descending key, NaN below every
    number (-inf included), then lower index first. Returns (T, E) int64."""
    T, E = keys.shape
    nan = np.isnan(keys)
    filled = np.where(nan, -np.inf, keys)
    idx = np.broadcast_to(np.arange(E), (T, E))
    excl = np.zeros((T, E), bool) if excluded is None else excluded
    if T == 0:  # np.stack needs at least one row
        return np.zeros((0, E), np.int64)
    # np.lexsort: the last key is the primary one.
    return np.stack([np.lexsort((idx[t], nan[t], -filled[t], excl[t])) for t in range(T)]).reshape(T, E)


def select_groups(spec: MoESpec, keys: np.ndarray) -> np.ndarray:
    """(T, E) bool: experts outside the topk_group best groups (all False when not grouped)."""
    T, E = keys.shape
    if not spec.grouped:
        return np.zeros((T, E), bool)
    G = spec.n_group
    filled = np.where(np.isnan(keys), -np.inf, keys).reshape(T, G, E // G)
    desc = -np.sort(-filled, axis=-1)  # descending within each group
    gscore = desc[..., 0] if spec.group_score == "max" else desc[..., 0] + desc[..., 1]
    with np.errstate(invalid="ignore"):
        gscore = np.where(np.isnan(gscore), -np.inf, gscore)  # (-inf) + (+inf) cannot occur; guard anyway
    kept_groups = rank_order(gscore)[:, : spec.topk_group]  # ties between groups -> lower group index
    group_masked = np.ones((T, G), bool)
    np.put_along_axis(group_masked, kept_groups, False, axis=1)
    return np.repeat(group_masked, E // G, axis=1)


def route(spec: MoESpec, weights: MoEWeights, x) -> Routing:
    """Router: logits, scores, grouped/plain top-k by the tie rule, weights."""
    x = _np(x)
    check_input(spec, x)
    logits = x @ _weight(weights.router).T
    if spec.router_bias:
        logits = logits + _weight(weights.router_bias)
    scores = softmax(logits) if spec.scoring == "softmax" else sigmoid(logits)
    keys = scores + _weight(weights.correction_bias) if spec.correction_bias else scores.copy()
    masked = select_groups(spec, keys)
    ids = rank_order(keys, masked)[:, : spec.top_k].astype(np.int64)
    keys = np.where(masked, -np.inf, keys)
    w = np.take_along_axis(scores, ids, axis=1)
    if spec.renormalize:
        w = w / (w.sum(axis=1, keepdims=True) + RENORM_EPS)
    w = w * spec.routed_scaling_factor
    return Routing(logits=logits, scores=scores, keys=keys, topk_ids=ids, topk_weights=w)


# ----------------------------------------------------------------------------------------------- permutation
def permute(spec: MoESpec, topk_ids) -> Permutation:
    """Counts, capacity dropping (slot-major, then token order), local-expert mask, sorted assignments."""
    ids = np.asarray(topk_ids, dtype=np.int64)
    T, k = ids.shape
    E = spec.num_experts
    if k != spec.top_k:
        raise SpecError("topk_ids.shape", f"(T, {spec.top_k})", ids.shape)
    if ids.size and (ids.min() < 0 or ids.max() >= E):
        raise SpecError("topk_ids", f"ids in [0, {E})", (int(ids.min()), int(ids.max())))
    counts = np.bincount(ids.ravel(), minlength=E).astype(np.int64)
    kept = np.ones((T, k), bool)
    cap = spec.capacity(T)
    if cap is not None:
        fill = np.zeros(E, np.int64)
        for j in range(k):  # slot-major: every token's first choice before any second choice
            for t in range(T):
                e = ids[t, j]
                kept[t, j] = fill[e] < cap
                fill[e] += kept[t, j]
    if spec.local_experts is not None:
        local = np.zeros(E, bool)
        local[list(spec.local_experts)] = True
        kept &= local[ids]
    kept_counts = np.bincount(ids[kept], minlength=E).astype(np.int64)
    flat = np.flatnonzero(kept.ravel())
    order = flat[np.argsort(ids.ravel()[flat], kind="stable")].astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(kept_counts)]).astype(np.int64)
    return Permutation(counts, kept, kept_counts, order, offsets)


# ----------------------------------------------------------------------------------------------- experts
def activate(spec: MoESpec, gate: np.ndarray, up: np.ndarray | None) -> np.ndarray:
    """The expert activation: GLU act(gate) * up, swiglu_oai, or act(h) when non-gated."""
    with np.errstate(over="ignore"):
        if spec.activation == "swiglu_oai":
            g = np.minimum(gate, spec.swiglu_limit)
            u = np.clip(up, -spec.swiglu_limit, spec.swiglu_limit)
            return (u + 1.0) * g * sigmoid(spec.swiglu_alpha * g)
        if spec.activation == "silu":
            a = gate * sigmoid(gate)
        elif spec.activation == "gelu":
            a = 0.5 * gate * (1.0 + _erf(gate / math.sqrt(2.0)))
        elif spec.activation == "gelu_tanh":
            a = 0.5 * gate * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (gate + 0.044715 * gate**3)))
        else:  # relu
            a = np.maximum(gate, 0.0)
    return a * up if spec.gated else a


def split_gate_up(spec: MoESpec, h: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Split GEMM1 output (..., 2I) into gate and up by the w13 layout; non-gated: (h, None)."""
    if not spec.gated:
        return h, None
    if spec.w13_layout == "interleaved":
        return h[..., 0::2], h[..., 1::2]
    I = spec.intermediate_size
    return h[..., :I], h[..., I:]


def gate_up(spec: MoESpec, weights: MoEWeights, x, topk_ids) -> GateUp:
    """GEMM1 + activation for every assignment (t, j), expert by expert."""
    x, ids = _np(x), np.asarray(topk_ids, dtype=np.int64)
    T, k = ids.shape
    w13, b13 = _weight(weights.w13), _weight(weights.b13)
    h = np.zeros((T, k, spec.w13_rows))
    for e in range(spec.num_experts):
        t_idx, j_idx = np.nonzero(ids == e)
        if t_idx.size == 0:
            continue
        he = x[t_idx] @ w13[e].T
        if spec.expert_bias:
            he = he + b13[e]
        h[t_idx, j_idx] = he
    gate, up = split_gate_up(spec, h)
    return GateUp(
        gate_pre=gate.copy(), up_pre=None if up is None else up.copy(), act=activate(spec, gate, up)
    )


def down(spec: MoESpec, weights: MoEWeights, act, topk_ids) -> np.ndarray:
    """GEMM2: expert_out[t, j] = act[t, j] @ w2[e].T + b2[e] with e = topk_ids[t, j]."""
    act, ids = _np(act), np.asarray(topk_ids, dtype=np.int64)
    T, k = ids.shape
    w2, b2 = _weight(weights.w2), _weight(weights.b2)
    out = np.zeros((T, k, spec.hidden_size))
    for e in range(spec.num_experts):
        t_idx, j_idx = np.nonzero(ids == e)
        if t_idx.size == 0:
            continue
        oe = act[t_idx, j_idx] @ w2[e].T
        if spec.expert_bias:
            oe = oe + b2[e]
        out[t_idx, j_idx] = oe
    return out


def shared_expert(spec: MoESpec, weights: MoEWeights, x) -> np.ndarray:
    """Shared (always-on) experts as one MLP of width S, times sigmoid(x @ shared_gate.T) if gated."""
    x = _np(x)
    if spec.shared_width == 0:
        return np.zeros((x.shape[0], spec.hidden_size))
    h = x @ _weight(weights.shared_w13).T
    if spec.gated:
        S = spec.shared_width
        out = activate(spec.replace(w13_layout="concat"), h[:, :S], h[:, S:]) @ _weight(weights.shared_w2).T
    else:
        out = activate(spec, h, None) @ _weight(weights.shared_w2).T
    if spec.shared_gate:
        out = sigmoid(x @ _weight(weights.shared_gate).T) * out
    return out


def combine(spec: MoESpec, expert_out, topk_weights, kept, shared_out=None) -> np.ndarray:
    """y[t] = sum_j (kept[t, j] ? w[t, j] * expert_out[t, j] : 0) + shared_out[t], j in slot order.

    A dropped assignment contributes exactly zero, even if its expert output is NaN."""
    expert_out, w = _np(expert_out), _np(topk_weights)
    kept = np.asarray(kept, bool)
    T = w.shape[0]
    y = np.zeros((T, spec.hidden_size)) if shared_out is None else _np(shared_out).copy()
    for j in range(spec.top_k):
        contrib = w[:, j, None] * expert_out[:, j]
        y = y + np.where(kept[:, j, None], contrib, 0.0)
    return y


# ----------------------------------------------------------------------------------------------- forward
def moe_forward(spec: MoESpec, weights: MoEWeights, x) -> MoEResult:
    """The whole layer: route -> permute -> gate_up -> down -> combine (+ shared)."""
    if spec.quant is not None:  # numpy_quant.py builds on this module; layer.py chooses between the two
        raise SpecError(
            "quant", "None here: quantized layers go through moe_cts.reference.moe_forward", spec.quant.method
        )
    x = _np(x)
    check_input(spec, x)
    weights.validate(spec)
    r = route(spec, weights, x)
    p = permute(spec, r.topk_ids)
    gu = gate_up(spec, weights, x, r.topk_ids)
    eo = down(spec, weights, gu.act, r.topk_ids)
    so = shared_expert(spec, weights, x)
    y = combine(spec, eo, r.topk_weights, p.kept, so)
    return MoEResult(routing=r, permutation=p, gate_up=gu, expert_out=eo, shared_out=so, y=y)
