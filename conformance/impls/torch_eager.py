"""The "torch-eager" implementation: a per-expert loop in the input dtype, the way model code does it
(transformers' Mixtral/Qwen MoE blocks): logits in the input dtype, softmax/sigmoid in fp32, routing
weights cast to the input dtype before they scale the expert output, index_add in the input dtype.

    stage     output
    route     EagerRouting(topk_ids (T, k) int32, topk_weights (T, k) fp32)
    permute   EagerPermutation(expert_counts, kept, kept_counts, order, offsets)
    gate_up   act (T, k, I) input dtype (every assignment)
    down      expert_out (T, k, H) input dtype
    combine   y (T, H) input dtype
    forward   y (T, H), written into `out` when given

Quantized specs (spec.quant) run eager_quant.py for GEMM1, GEMM2 and the forward.
It runs on any torch device; the deliberately broken implementations (broken.py) subclass it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from moe_cts.conformance.engine.protocol import FORWARD, STAGE_METHODS, Capabilities
from moe_cts.conformance.impls.eager_quant import QuantEagerMixin
from moe_cts.reference.errors import NotSupportedError
from moe_cts.reference.quant import QUANT_METHODS
from moe_cts.reference.spec import RENORM_EPS, MoESpec, MoEWeights


@dataclass(frozen=True)
class EagerRouting:
    topk_ids: torch.Tensor  # (T, k) int32, by descending key, ties -> lower id
    topk_weights: torch.Tensor  # (T, k) float32


@dataclass(frozen=True)
class EagerPermutation:
    expert_counts: torch.Tensor  # (E,) int64 before capacity / local mask
    kept: torch.Tensor  # (T, k) bool
    kept_counts: torch.Tensor  # (E,) int64
    order: torch.Tensor  # (N,) int64 flat ids, stably sorted by expert
    offsets: torch.Tensor  # (E+1,) int64


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class TorchEagerImplementation(QuantEagerMixin):
    name = "torch-eager"

    def capabilities(self) -> Capabilities:
        return Capabilities(
            stages=frozenset({FORWARD, *STAGE_METHODS}),
            capacity_dropping=True,
            local_mask=True,
            deterministic=True,
            accepts_out=True,
            quant_schemes=frozenset(QUANT_METHODS),  # eager_quant.py: fp8 GEMMs emulated in fp32
        )

    def kernel_config(self) -> dict[str, Any]:
        return {"kind": "eager", "note": "per-expert torch loop in the input dtype"}

    def run(self, inputs, stage: str, device=None, *, out: torch.Tensor | None = None) -> Any:
        caps = self.capabilities()
        why = caps.unsupported(inputs.spec, _dtype_name(inputs.x.dtype))
        if why is None and stage not in caps.stages:
            why = f"stage: {stage} not exposed"
        if why is not None:
            raise NotSupportedError(why)
        spec, w = inputs.spec, inputs.weights
        if spec.quant is not None and stage in (FORWARD, "gate_up", "down"):
            y = self.run_quant(inputs, stage)
            return self.write_out(y, out) if stage == FORWARD else y
        if stage == FORWARD:
            return self.write_out(self.forward(spec, w, inputs.x), out)
        if stage == "route":
            return self.route(spec, w, inputs.x)
        if stage == "permute":
            return self.permute(spec, inputs.topk_ids)
        if stage == "gate_up":
            return self.gate_up(spec, w, inputs.x, inputs.topk_ids)
        if stage == "down":
            return self.down(spec, w, inputs.act, inputs.topk_ids)
        if stage == "combine":
            return self.combine(spec, inputs.expert_out, inputs.topk_weights, inputs.kept, inputs.shared_out)
        raise ValueError(f"stage: expected 'forward' or one of {STAGE_METHODS}, got {stage!r}")

    def write_out(self, y: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        if out is None:
            return y
        out.copy_(y)
        return out

    # -- router
    def logits(self, spec: MoESpec, w: MoEWeights, x: torch.Tensor) -> torch.Tensor:
        z = x @ w.router.T
        if spec.router_bias:
            z = z + w.router_bias
        return z.float()

    def select(self, spec: MoESpec, keys: torch.Tensor) -> torch.Tensor:
        """(T, k) ids: grouped mask, then stable descending sort (ties -> lower id, NaN last)."""
        keys = torch.nan_to_num(keys, nan=float("-inf"))
        T, E = keys.shape
        if spec.grouped:
            G = spec.n_group
            per = keys.view(T, G, E // G).sort(dim=-1, descending=True).values
            gscore = per[..., 0] if spec.group_score == "max" else per[..., 0] + per[..., 1]
            gscore = torch.nan_to_num(gscore, nan=float("-inf"))
            keep = gscore.sort(dim=-1, descending=True, stable=True).indices[:, : spec.topk_group]
            gmask = torch.ones(T, G, dtype=torch.bool, device=keys.device).scatter(1, keep, False)
            keys = keys.masked_fill(gmask.repeat_interleave(E // G, dim=1), float("-inf"))
        return keys.sort(dim=-1, descending=True, stable=True).indices[:, : spec.top_k]

    def route(self, spec: MoESpec, w: MoEWeights, x: torch.Tensor) -> EagerRouting:
        z = self.logits(spec, w, x)
        scores = torch.softmax(z, dim=-1) if spec.scoring == "softmax" else torch.sigmoid(z)
        keys = scores + w.correction_bias.float() if spec.correction_bias else scores
        ids = self.select(spec, keys)
        tw = scores.gather(1, ids)
        return EagerRouting(ids.to(torch.int32), self.finish_weights(spec, tw, keys, ids))

    def finish_weights(self, spec: MoESpec, tw: torch.Tensor, keys: torch.Tensor, ids: torch.Tensor):
        if spec.renormalize:
            tw = tw / (tw.sum(dim=-1, keepdim=True) + RENORM_EPS)
        return (tw * spec.routed_scaling_factor).float()

    # -- permutation
    def kept_mask(self, spec: MoESpec, ids: torch.Tensor) -> torch.Tensor:
        T, k = ids.shape
        E = spec.num_experts
        kept = torch.ones((T, k), dtype=torch.bool, device=ids.device)
        cap = spec.capacity(T)
        if cap is not None:
            # slot-major: every token's first choice is served before any second choice
            slot_major = ids.T.reshape(-1).long()
            onehot = F.one_hot(slot_major, E)
            rank = (onehot.cumsum(0) * onehot).sum(-1) - 1  # position of each assignment in its expert
            kept = (rank < cap).view(k, T).T.contiguous()
        if spec.local_experts is not None:
            local = torch.zeros(E, dtype=torch.bool, device=ids.device)
            local[list(spec.local_experts)] = True
            kept = kept & local[ids.long()]
        return kept

    def permute(self, spec: MoESpec, topk_ids: torch.Tensor) -> EagerPermutation:
        ids = topk_ids.long()
        E = spec.num_experts
        kept = self.kept_mask(spec, ids)
        counts = torch.bincount(ids.reshape(-1), minlength=E)
        kept_counts = torch.bincount(ids[kept], minlength=E)
        flat = torch.nonzero(kept.reshape(-1)).reshape(-1)
        order = flat[torch.sort(ids.reshape(-1)[flat], stable=True).indices]
        offsets = torch.cat([kept_counts.new_zeros(1), kept_counts.cumsum(0)])
        return EagerPermutation(counts, kept, kept_counts, order, offsets)

    # -- experts
    def activate(self, spec: MoESpec, gate: torch.Tensor, up: torch.Tensor | None) -> torch.Tensor:
        if spec.activation == "swiglu_oai":
            g = gate.clamp(max=spec.swiglu_limit)
            u = up.clamp(-spec.swiglu_limit, spec.swiglu_limit)
            return (u + 1) * (g * torch.sigmoid(spec.swiglu_alpha * g))
        a = {
            "silu": F.silu,
            "gelu": F.gelu,
            "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"),
            "relu": F.relu,
        }[spec.activation](gate)
        return a * up if spec.gated else a

    def split(self, spec: MoESpec, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not spec.gated:
            return h, None
        if spec.w13_layout == "interleaved":
            return h[..., 0::2], h[..., 1::2]
        return h.chunk(2, dim=-1)

    def expert_h(self, spec: MoESpec, w: MoEWeights, e: int, xe: torch.Tensor) -> torch.Tensor:
        h = xe @ w.w13[e].T
        return h + w.b13[e] if spec.expert_bias else h

    def expert_down(self, spec: MoESpec, w: MoEWeights, e: int, ae: torch.Tensor) -> torch.Tensor:
        o = ae @ w.w2[e].T
        return o + w.b2[e] if spec.expert_bias else o

    def gate_up(self, spec: MoESpec, w: MoEWeights, x: torch.Tensor, topk_ids: torch.Tensor) -> torch.Tensor:
        return _per_expert(
            spec, topk_ids, spec.intermediate_size, x,
            lambda e, t, j: self.activate(spec, *self.split(spec, self.expert_h(spec, w, e, x[t]))),
        )  # fmt: skip

    def down(self, spec: MoESpec, w: MoEWeights, act: torch.Tensor, topk_ids: torch.Tensor) -> torch.Tensor:
        return _per_expert(
            spec, topk_ids, spec.hidden_size, act, lambda e, t, j: self.expert_down(spec, w, e, act[t, j])
        )

    def shared(self, spec: MoESpec, w: MoEWeights, x: torch.Tensor) -> torch.Tensor | None:
        if not spec.shared_width:
            return None
        h = x @ w.shared_w13.T
        if spec.gated:
            S = spec.shared_width
            act = self.activate(spec, h[:, :S], h[:, S:])
        else:
            act = self.activate(spec, h, None)
        out = act @ w.shared_w2.T
        if spec.shared_gate:
            out = torch.sigmoid(x @ w.shared_gate.T) * out
        return out

    def combine(self, spec, expert_out, topk_weights, kept, shared_out=None) -> torch.Tensor:
        """y = shared + sum_j kept * (w.to(dtype) * expert_out), summed in the input dtype."""
        T, k, H = expert_out.shape
        y = torch.zeros((T, H), dtype=expert_out.dtype, device=expert_out.device)
        if shared_out is not None:
            y = y + shared_out
        wd = self.cast_weights(topk_weights, expert_out.dtype)
        for j in range(k):
            contrib = wd[:, j, None] * expert_out[:, j]
            y = y + torch.where(kept[:, j, None], contrib, torch.zeros_like(contrib))
        return y

    def cast_weights(self, topk_weights: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return topk_weights.to(dtype)

    def forward(self, spec: MoESpec, w: MoEWeights, x: torch.Tensor) -> torch.Tensor:
        r = self.route(spec, w, x)
        kept = self.kept_mask(spec, r.topk_ids.long())
        act = self.gate_up(spec, w, x, r.topk_ids)
        eo = self.down(spec, w, act, r.topk_ids)
        return self.combine(spec, eo, r.topk_weights, kept, self.shared(spec, w, x))


def _per_expert(spec: MoESpec, topk_ids: torch.Tensor, width: int, like: torch.Tensor, rows) -> torch.Tensor:
    """(T, k, width) in like's dtype: out[t, j] = rows(e, t_idx, j_idx) for each expert's assignments, as model
    code loops over experts; assignments of no expert stay zero."""
    T, k = topk_ids.shape
    out = torch.zeros((T, k, width), dtype=like.dtype, device=like.device)
    for e in range(spec.num_experts):
        t_idx, j_idx = torch.nonzero(topk_ids == e, as_tuple=True)
        if t_idx.numel():
            out[t_idx, j_idx] = rows(e, t_idx, j_idx)
    return out
