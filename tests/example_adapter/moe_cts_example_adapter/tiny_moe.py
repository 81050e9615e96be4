"""A small Mixtral-style MoE layer in plain PyTorch: the "third-party implementation" of the example.

    scores = softmax(x @ router.T)                     (T, E) fp32
    ids    = top-k of scores                           (T, k)
    w      = scores[ids] / sum (if renormalize)        (T, k) fp32
    y[t]   = sum_j w[t, j] * (silu(x w_gate.T) * (x w_up.T)) @ w2[e].T     (T, H), fp32 sum, cast once

    tensor   shape        layout
    x        (T, H)       any float dtype
    router   (E, H)
    w13      (E, 2I, H)   gate rows, then up rows
    w2       (E, H, I)

It knows nothing of moe-cts: the adapter maps a case onto these functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Routing:
    topk_ids: torch.Tensor  # (T, k) int64, by descending score
    topk_weights: torch.Tensor  # (T, k) float32


def route(x: torch.Tensor, router: torch.Tensor, top_k: int, renormalize: bool) -> Routing:
    scores = torch.softmax((x @ router.T).float(), dim=-1)
    weights, ids = torch.topk(scores, top_k, dim=-1)
    if renormalize:
        # +1e-20 keeps an all-underflow row finite (a sum of zeros)
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return Routing(ids, weights)


def experts(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, r: Routing) -> torch.Tensor:
    """(T, H) in x's dtype: each expert's tokens through its MLP, weighted and summed in fp32."""
    T, H = x.shape
    I = w2.shape[2]
    y = torch.zeros((T, H), dtype=torch.float32, device=x.device)
    for e in range(w13.shape[0]):
        t_idx, j_idx = torch.nonzero(r.topk_ids == e, as_tuple=True)
        if t_idx.numel() == 0:
            continue
        h = x[t_idx] @ w13[e].T  # (n, 2I)
        act = F.silu(h[:, :I]) * h[:, I:]
        out = (act @ w2[e].T).float()  # (n, H)
        y.index_add_(0, t_idx, out * r.topk_weights[t_idx, j_idx, None])
    return y.to(x.dtype)


def forward(x: torch.Tensor, router: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, top_k: int,
            renormalize: bool) -> torch.Tensor:  # fmt: skip
    return experts(x, w13, w2, route(x, router, top_k, renormalize))
