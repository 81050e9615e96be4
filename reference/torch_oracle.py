"""The second float64 oracle: PyTorch, written independently of moe_cts.reference.numpy_oracle.

Same stage names and result fields; a different formulation, so that one bug cannot hide in both:

    stage        numpy_oracle                         this module
    selection    lexsort per row                      pairwise "ranks before" counts (no topk, no sort)
    group score  sort within the group                max, plus max of the rest after masking one max
    capacity     Python loop, slot-major              one-hot, cumsum over the slot-major flattening
    order        stable argsort of kept ids           nonzero of the (E, T*k) kept one-hot matrix
    experts      loop over experts                    gather each assignment's expert weights (chunked)
    combine      loop over slots                      masked sum over the slot axis

Runs on any torch device; weights may be in any dtype (each gathered chunk is upcast to float64 on its
own, so full-size presets on a GPU never hold a float64 copy of every expert). Temporaries are bounded
by CHUNK_ELEMS elements: no (T, E, 2I) tensor is ever built.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from moe_cts.reference.spec import RENORM_EPS, MoESpec, MoEWeights, SpecError, check_input

F64 = torch.float64
#: Largest temporary, in elements (float64: 256 MiB). Bounds the pairwise rank cube and weight gathers.
CHUNK_ELEMS = 1 << 25


def _f64(a, device: torch.device) -> torch.Tensor | None:
    """float64 tensor on `device` from a tensor or array (None stays None)."""
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        a = torch.from_numpy(a)
    return torch.as_tensor(a).to(device=device, dtype=F64)


def _ids(a, device: torch.device) -> torch.Tensor:
    if isinstance(a, np.ndarray):
        a = torch.from_numpy(np.ascontiguousarray(a))
    return torch.as_tensor(a).to(device=device, dtype=torch.int64)


# ----------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Routing:
    logits: torch.Tensor  # (T, E) float64
    scores: torch.Tensor  # (T, E) softmax or sigmoid of logits
    keys: torch.Tensor  # (T, E) scores + correction_bias; experts of dropped groups = -inf
    topk_ids: torch.Tensor  # (T, k) int64, distinct, in [0, E), best key first, ties -> lower id
    topk_weights: torch.Tensor  # (T, k) scores at ids, renormalized, times routed_scaling_factor


@dataclass(frozen=True)
class Permutation:
    expert_counts: torch.Tensor  # (E,) int64 assignments per expert before capacity / local mask
    kept: torch.Tensor  # (T, k) bool: assignment contributes
    kept_counts: torch.Tensor  # (E,) int64 kept assignments per expert
    order: torch.Tensor  # (N,) int64 flat ids t*k+j of kept assignments, grouped by expert, t*k+j ascending
    offsets: torch.Tensor  # (E+1,) int64 segment bounds of `order`


@dataclass(frozen=True)
class GateUp:
    gate_pre: torch.Tensor  # (T, k, I) incl. bias (the only pre-activation when non-gated)
    up_pre: torch.Tensor | None  # (T, k, I) incl. bias; None when non-gated
    act: torch.Tensor  # (T, k, I)


@dataclass(frozen=True)
class MoEResult:
    routing: Routing
    permutation: Permutation
    gate_up: GateUp
    expert_out: torch.Tensor  # (T, k, H) unweighted, every assignment
    shared_out: torch.Tensor  # (T, H), zeros without shared experts
    y: torch.Tensor  # (T, H)

    @property
    def topk_ids(self) -> torch.Tensor:
        return self.routing.topk_ids

    @property
    def topk_weights(self) -> torch.Tensor:
        return self.routing.topk_weights


# ----------------------------------------------------------------------------------------------- router
def _rank(keys: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """(T, E) int64: position of each column in its row under the tie rule.

    Column a ranks before column b when (class_a, -v_a, a) < (class_b, -v_b, b) lexicographically, with
    class = 2*excluded + isnan and v = key (NaN read as -inf). The order is total, so the counts of
    columns ranking before each column form a permutation of 0..E-1."""
    T, E = keys.shape
    nan = torch.isnan(keys)
    v = keys.masked_fill(nan, float("-inf"))
    cls = excluded.long() * 2 + nan.long()
    col = torch.arange(E, device=keys.device)
    lower_col = col[:, None] < col[None, :]  # (a, b): a is the lower index
    rank = torch.empty((T, E), dtype=torch.int64, device=keys.device)
    step = max(1, CHUNK_ELEMS // max(E * E, 1))
    for s in range(0, T, step):
        c, w = cls[s : s + step], v[s : s + step]
        ca, cb, va, vb = c[:, :, None], c[:, None, :], w[:, :, None], w[:, None, :]
        before = (ca < cb) | ((ca == cb) & ((va > vb) | ((va == vb) & lower_col)))
        rank[s : s + step] = before.sum(dim=1)
    return rank


def _order_from_rank(rank: torch.Tensor) -> torch.Tensor:
    """Invert the per-row rank permutation: column ids in rank order, (T, E) int64."""
    col = torch.arange(rank.shape[1], device=rank.device).expand_as(rank)
    return torch.empty_like(rank).scatter_(1, rank, col)


def _group_excluded(spec: MoESpec, keys: torch.Tensor) -> torch.Tensor:
    """(T, E) bool: experts whose group is not among the topk_group best groups."""
    T, E = keys.shape
    if not spec.grouped:
        return torch.zeros((T, E), dtype=torch.bool, device=keys.device)
    G = spec.n_group
    v = keys.masked_fill(torch.isnan(keys), float("-inf")).view(T, G, E // G)
    first = v.amax(dim=-1)
    if spec.group_score == "max":
        gscore = first
    else:  # top-2 sum: remove one occurrence of the max, take the max of what is left
        drop = F.one_hot(v.argmax(dim=-1), E // G).bool()
        gscore = first + v.masked_fill(drop, float("-inf")).amax(dim=-1)
        gscore = gscore.masked_fill(torch.isnan(gscore), float("-inf"))  # +inf + -inf
    no_excl = torch.zeros_like(gscore, dtype=torch.bool)
    dropped = _rank(gscore, no_excl) >= spec.topk_group
    return dropped.repeat_interleave(E // G, dim=1)


def route(spec: MoESpec, weights: MoEWeights, x) -> Routing:
    """Router. logits = x @ router.T (+ b); scores = softmax|sigmoid; ids by the tie rule; weights."""
    dev = weights.device
    x = _f64(x, dev)
    check_input(spec, x)
    logits = torch.einsum("th,eh->te", x, _f64(weights.router, dev))
    if spec.router_bias:
        logits = logits + _f64(weights.router_bias, dev)
    scores = torch.softmax(logits, dim=-1) if spec.scoring == "softmax" else torch.sigmoid(logits)
    keys = scores + _f64(weights.correction_bias, dev) if spec.correction_bias else scores
    excluded = _group_excluded(spec, keys)
    ids = _order_from_rank(_rank(keys, excluded))[:, : spec.top_k]
    w = scores.gather(1, ids)
    if spec.renormalize:
        w = w / (w.sum(dim=-1, keepdim=True) + RENORM_EPS)
    w = w * spec.routed_scaling_factor
    keys = keys.masked_fill(excluded, float("-inf"))
    return Routing(logits=logits, scores=scores, keys=keys, topk_ids=ids, topk_weights=w)


# ----------------------------------------------------------------------------------------------- permutation
def permute(spec: MoESpec, topk_ids) -> Permutation:
    """Counts, capacity (slot-major cumsum), local mask, expert-grouped order and offsets."""
    E = spec.num_experts
    ids = _ids(topk_ids, torch.device("cpu") if isinstance(topk_ids, np.ndarray) else topk_ids.device)
    if ids.dim() != 2 or ids.shape[1] != spec.top_k:
        raise SpecError("topk_ids.shape", f"(T, {spec.top_k})", tuple(ids.shape))
    if ids.numel() and not bool(((ids >= 0) & (ids < E)).all()):
        raise SpecError("topk_ids", f"ids in [0, {E})", (int(ids.min()), int(ids.max())))
    T, k = ids.shape
    onehot = F.one_hot(ids, E)  # (T, k, E) int64
    kept = torch.ones((T, k), dtype=torch.bool, device=ids.device)
    cap = spec.capacity(T)
    if cap is not None:
        slot_major = onehot.transpose(0, 1).reshape(k * T, E)
        # 0-based arrival position of each assignment at its expert, slot 0 of every token first
        pos = (slot_major.cumsum(dim=0) * slot_major).sum(dim=-1) - 1
        kept = (pos < cap).view(k, T).transpose(0, 1)
    if spec.local_experts is not None:
        local = torch.zeros(E, dtype=torch.bool, device=ids.device)
        local[list(spec.local_experts)] = True
        kept = kept & local[ids]
    kept_onehot = (onehot * kept[..., None]).reshape(T * k, E)
    kept_counts = kept_onehot.sum(dim=0)
    order = torch.nonzero(kept_onehot.transpose(0, 1))[:, 1]  # row-major: by expert, then flat id
    offsets = torch.cat([kept_counts.new_zeros(1), kept_counts.cumsum(dim=0)])
    return Permutation(onehot.sum(dim=(0, 1)), kept, kept_counts, order, offsets)


# ----------------------------------------------------------------------------------------------- experts
def activate(spec: MoESpec, gate: torch.Tensor, up: torch.Tensor | None) -> torch.Tensor:
    """act(gate) * up (GLU), the gpt-oss clamped SwiGLU, or act(h) when non-gated."""
    if spec.activation == "swiglu_oai":
        g = gate.clamp(max=spec.swiglu_limit)
        return (up.clamp(-spec.swiglu_limit, spec.swiglu_limit) + 1) * (
            g * torch.sigmoid(spec.swiglu_alpha * g)
        )
    a = {
        "silu": F.silu,
        "gelu": F.gelu,
        "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
        "relu": F.relu,
    }[spec.activation](gate)
    return a * up if spec.gated else a


def _per_assignment(
    w: torch.Tensor, b: torch.Tensor | None, inp: torch.Tensor, rows: torch.Tensor, ids: torch.Tensor
) -> torch.Tensor:
    """out[n] = w[ids[n]] @ inp[rows[n]] (+ b[ids[n]]) for flat assignments n, gathering expert weights
    in chunks of at most CHUNK_ELEMS elements, upcast chunk by chunk. w (E, R, K), inp (M, K) -> (N, R)."""
    N, R, K = ids.shape[0], w.shape[1], w.shape[2]
    out = torch.empty((N, R), dtype=F64, device=inp.device)
    step = max(1, CHUNK_ELEMS // max(R * K, 1))
    for s in range(0, N, step):
        e = ids[s : s + step]
        out[s : s + step] = torch.einsum("nk,nrk->nr", inp[rows[s : s + step]], w[e].to(F64))
        if b is not None:
            out[s : s + step] += b[e].to(F64)
    return out


def gate_up(spec: MoESpec, weights: MoEWeights, x, topk_ids) -> GateUp:
    """h[t, j] = w13[ids[t, j]] @ x[t] + b13[ids[t, j]]; split by layout; activation."""
    dev = weights.device
    x, ids = _f64(x, dev), _ids(topk_ids, dev)
    T, k = ids.shape
    I = spec.intermediate_size
    tokens = torch.arange(T, device=dev).repeat_interleave(k)
    h = _per_assignment(weights.w13, weights.b13, x, tokens, ids.reshape(-1)).view(T, k, spec.w13_rows)
    if not spec.gated:
        return GateUp(gate_pre=h, up_pre=None, act=activate(spec, h, None))
    # concat: rows [gate(I) | up(I)]; interleaved: rows (gate_0, up_0, gate_1, up_1, ...)
    pairs = h.view(T, k, 2, I).transpose(-1, -2) if spec.w13_layout == "concat" else h.view(T, k, I, 2)
    gate, up = pairs[..., 0].contiguous(), pairs[..., 1].contiguous()
    return GateUp(gate_pre=gate, up_pre=up, act=activate(spec, gate, up))


def down(spec: MoESpec, weights: MoEWeights, act, topk_ids) -> torch.Tensor:
    """expert_out[t, j] = w2[ids[t, j]] @ act[t, j] + b2[ids[t, j]], (T, k, H)."""
    dev = weights.device
    act, ids = _f64(act, dev), _ids(topk_ids, dev)
    T, k = ids.shape
    flat = torch.arange(T * k, device=dev)
    out = _per_assignment(
        weights.w2, weights.b2, act.reshape(T * k, spec.intermediate_size), flat, ids.reshape(-1)
    )
    return out.view(T, k, spec.hidden_size)


def shared_expert(spec: MoESpec, weights: MoEWeights, x) -> torch.Tensor:
    """One MLP of width S = n_shared * shared_I (concat layout), times sigmoid(x @ shared_gate.T)."""
    dev = weights.device
    x = _f64(x, dev)
    if spec.shared_width == 0:
        return x.new_zeros((x.shape[0], spec.hidden_size))
    h = torch.einsum("th,sh->ts", x, _f64(weights.shared_w13, dev))
    if spec.gated:
        gate, up = h.view(x.shape[0], 2, spec.shared_width).unbind(dim=1)
        a = activate(spec, gate, up)
    else:
        a = activate(spec, h, None)
    out = torch.einsum("ts,hs->th", a, _f64(weights.shared_w2, dev))
    if spec.shared_gate:
        out = torch.sigmoid(torch.einsum("th,oh->to", x, _f64(weights.shared_gate, dev))) * out
    return out


def combine(spec: MoESpec, expert_out, topk_weights, kept, shared_out=None) -> torch.Tensor:
    """y[t] = shared_out[t] + sum over kept j of w[t, j] * expert_out[t, j]; dropped slots add exactly 0."""
    w = torch.as_tensor(topk_weights)
    dev = w.device
    eo, w = _f64(expert_out, dev), _f64(w, dev)
    kept = torch.as_tensor(kept).to(device=dev, dtype=torch.bool)
    routed = torch.where(kept[..., None], w[..., None] * eo, torch.zeros((), dtype=F64, device=dev)).sum(
        dim=1
    )
    return routed if shared_out is None else routed + _f64(shared_out, dev)


# ----------------------------------------------------------------------------------------------- forward
def moe_forward(spec: MoESpec, weights: MoEWeights, x) -> MoEResult:
    """The whole layer: route -> permute -> gate_up -> down -> combine (+ shared), on weights.device."""
    if spec.quant is not None:  # torch_quant.py builds on this module; layer.py chooses between the two
        raise SpecError(
            "quant",
            "None here: quantized layers go through reference.layer.torch_moe_forward",
            spec.quant.method,
        )
    x = _f64(x, weights.device)
    check_input(spec, x)
    weights.validate(spec)
    r = route(spec, weights, x)
    p = permute(spec, r.topk_ids)
    gu = gate_up(spec, weights, x, r.topk_ids)
    eo = down(spec, weights, gu.act, r.topk_ids)
    so = shared_expert(spec, weights, x)
    y = combine(spec, eo, r.topk_weights, p.kept, so)
    return MoEResult(routing=r, permutation=p, gate_up=gu, expert_out=eo, shared_out=so, y=y)
