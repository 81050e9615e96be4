"""The whole MoE layer on the device: route -> align -> gate_up -> down -> combine (+ shared).

r    = route(spec, weights, x)                        # topk_ids (T, k) int32, topk_weights (T, k) fp32
meta = align(spec, r.topk_ids, BLOCK_M)               # slots grouped by expert, padded per expert (one token:
                                                      #   align.slot_meta, one tile per slot, no launch)
act[a] = activation(x[a // k] @ w13[e].T + b13)       # (T*k, I) workspace, rows by flat id a
ws[a]  = w[a] * (act[a] @ w2[e].T + b2)               # (T*k, H), weight applied in fp32 before the cast
y[t]   = shared(x)[t] + sum_j kept(t, j) ? ws[t*k+j] : 0   # fp32, slot order, one cast

Quantized specs (spec.quant set, weights a QuantizedMoEWeights) delegate: fp8 methods to
kernels/fp8_moe.fused_moe_fp8, mxfp4 to kernels/mxfp4_moe.fused_moe_mxfp4 (NotSupportedError while absent).

x (T, H) -> y (T, H) in x.dtype. No host synchronization: every size is known on the host from
T, k, E and BLOCK_M; tiles past the used ones exit on the device. Capturable in a CUDA graph.
"""

from __future__ import annotations

import torch

from moe_cts.kernels import config as cfgmod
from moe_cts.kernels._common import require_tensor
from moe_cts.kernels.combine import launch_combine
from moe_cts.kernels.config import TileConfig
from moe_cts.kernels.grouped_gemm import (
    check_weights,
    launch_down,
    launch_gate_up,
    shared_config,
    shared_forward,
    stage_config,
)
from moe_cts.kernels.metadata import AlignMeta, Routing
from moe_cts.kernels.streams import beside
from moe_cts.reference.errors import NotSupportedError
from moe_cts.reference.spec import MoESpec, MoEWeights, SpecError

FP8_METHODS = ("fp8_per_tensor", "fp8_per_token", "fp8_block")


def quantized_entry(method: str):
    """The fused MoE of a quantized method: fp8 -> fused_moe_fp8; mxfp4 -> fused_moe_mxfp4 (imported lazily:
    NotSupportedError naming quant.method while that module does not exist)."""
    if method in FP8_METHODS:
        from moe_cts.kernels.fp8_moe import fused_moe_fp8

        return fused_moe_fp8
    try:
        from moe_cts.kernels.mxfp4_moe import fused_moe_mxfp4
    except ImportError as err:
        raise NotSupportedError(
            f"quant.method: {method!r} has no Triton kernel here (expected one of {FP8_METHODS}"
            f" or 'mxfp4' with kernels/mxfp4_moe.py): {err}"
        ) from err
    return fused_moe_mxfp4


def _route(spec: MoESpec, weights: MoEWeights, x: torch.Tensor) -> Routing:
    from moe_cts.kernels.router import route

    return route(spec, weights, x)


def _align(spec: MoESpec, topk_ids: torch.Tensor, block_m: int, pdl: int = 0) -> AlignMeta:
    from moe_cts.kernels.align import align_or_slots

    return align_or_slots(spec, topk_ids, block_m, pdl=pdl)


def _check_routing(spec: MoESpec, routing: Routing, x: torch.Tensor) -> None:
    want = (x.shape[0], spec.top_k)
    if tuple(routing.topk_ids.shape) != want:
        raise SpecError("routing.topk_ids.shape", str(want), tuple(routing.topk_ids.shape))
    if routing.topk_ids.device != x.device:
        raise SpecError("routing.device", str(x.device), str(routing.topk_ids.device))


def fused_moe(
    spec: MoESpec,
    weights: MoEWeights,
    x: torch.Tensor,
    *,
    config: TileConfig | dict | None = None,
    batch_invariant: bool = False,
    routing: Routing | None = None,
    allow_tf32: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The MoE layer (module docstring). `routing` skips the router (precomputed ids and weights);
    `config` forces a tile config; `batch_invariant` picks one independent of T; `allow_tf32` lets
    fp32 dots use tf32 (pinned to ieee otherwise); `out` (T, H) in x.dtype, any strides, receives y
    (the conformance harness passes a poisoned view with canaries around it). A quantized spec takes
    QuantizedMoEWeights and runs quantized_entry(spec.quant.method) (allow_tf32 does not apply)."""
    if spec.quant is not None:
        fn = quantized_entry(spec.quant.method)
        extra = {"batch_invariant": batch_invariant} if spec.quant.method in FP8_METHODS else {}
        return fn(spec, weights, x, routing=routing, config=config, out=out, **extra)
    check_weights(spec, weights, x)
    if routing is not None:
        _check_routing(spec, routing, x)
    T, H, I, k = x.shape[0], spec.hidden_size, spec.intermediate_size, spec.top_k
    if out is not None:
        require_tensor("out", out, shape=(T, H), dtype=x.dtype, device=x.device)
    if T == 0:
        return out if out is not None else torch.empty((0, H), dtype=x.dtype, device=x.device)
    cfg = stage_config(spec, x.dtype, T, config, batch_invariant)
    cfgmod.record(cfg)

    r = routing if routing is not None else _route(spec, weights, x)
    work = None
    if spec.shared_width:
        scfg = shared_config(spec, x.dtype, T, config, batch_invariant)
        work = lambda: shared_forward(spec, weights, x, scfg, allow_tf32=allow_tf32)
    # the shared expert beside the routed experts in a captured graph (kernels/streams.py)
    shared, branch = beside(x.device, work)
    pdl = cfgmod.pdl(cfgmod.dtype_class(x.dtype))  # the GEMM launchers read it too
    meta = _align(spec, r.topk_ids, cfg.BLOCK_M, pdl)
    act = torch.empty((T * k, I), dtype=x.dtype, device=x.device)
    launch_gate_up(
        x, weights.w13, weights.b13, act, meta,
        gated=spec.gated, interleaved=spec.w13_layout == "interleaved", activation=spec.activation,
        tile=cfg.gate_up, swiglu_alpha=spec.swiglu_alpha, swiglu_limit=spec.swiglu_limit, allow_tf32=allow_tf32,
    )  # fmt: skip
    # Rows of dropped / non-local assignments are never written here, and never read by the combine.
    ws = torch.empty((T * k, H), dtype=x.dtype, device=x.device)
    route_w = r.topk_weights.reshape(T * k).to(torch.float32)
    launch_down(
        act, weights.w2, weights.b2, ws, meta, tile=cfg.down, route_weights=route_w, allow_tf32=allow_tf32
    )
    branch.join()
    y = out if out is not None else torch.empty((T, H), dtype=x.dtype, device=x.device)
    slots, slot_end = meta.combine_slots()
    launch_combine(ws.view(T, k, H), slots, y, shared_out=shared, slot_end=slot_end, pdl=pdl)
    return y
