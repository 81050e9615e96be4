"""The MoE layer with MXFP4 expert weights (gpt-oss): route -> align -> mx gate_up -> mx down -> combine.

    r    = route(spec, router weights, x)                   # the float router kernel, router cast to x.dtype
    meta = align(spec, r.topk_ids, BLOCK_M)
    act[a] = activation(x[a // k] @ W13[e].T + b13[e])      # W = e2m1(codes) * 2^(scale - 127), decoded in
    ws[a]  = w[a] * (act[a] @ W2[e].T + b2[e])              #   registers; dequant -> bias -> weight (fp32)
    y[t]   = shared(x)[t] + sum_j kept(t, j) ? ws[t*k+j] : 0   # -> cast once

    argument    type / shape                       note
    spec        MoESpec, spec.quant.method "mxfp4"  H, I multiples of 32
    qweights    QuantizedMoEWeights                 codes/scales as reference/qweights.py stores them; router
                                                    and biases from qweights.base (any float dtype)
    x           (T, H) bf16 | fp16                  -> y (T, H) in x.dtype

Codes, scales and biases not on x.device are copied there on every call: put them there once for speed.
No host synchronization otherwise (sizes come from T, k, E, BLOCK_M, as in kernels/moe.py).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import triton

from moe_cts.kernels import _grouped_gemm_kernels as GK
from moe_cts.kernels import config as cfgmod
from moe_cts.kernels._common import require_tensor
from moe_cts.kernels.capabilities import check_supported
from moe_cts.kernels.combine import launch_combine
from moe_cts.kernels.config import TileConfig
from moe_cts.kernels.grouped_gemm import align_all, dense_meta
from moe_cts.kernels.metadata import AlignMeta, Routing
from moe_cts.kernels.mxfp4_gemm import (
    Mxfp4Config,
    check_activations,
    check_dot_kind,
    check_mx_tensor,
    check_row_group,
    choose_config,
    launch_mx_down,
    launch_mx_gate_up,
)
from moe_cts.kernels.streams import beside
from moe_cts.reference.qweights import QuantizedMoEWeights, QuantTensor
from moe_cts.reference.spec import MoESpec, MoEWeights, SpecError

ConfigArg = Mxfp4Config | TileConfig | Mapping | None


# ----------------------------------------------------------------------------------------------- checks
def check_mx_spec(spec: MoESpec) -> None:
    """spec.quant is an MXFP4 scheme the kernels run (SpecError / NotSupportedError before any launch)."""
    q = spec.quant
    method = None if q is None else q.method
    if method != "mxfp4":
        raise SpecError("spec.quant.method", "'mxfp4'", method)
    check_supported(spec)
    for name in ("hidden_size", "intermediate_size", "shared_intermediate_size"):
        v = getattr(spec, name)
        if v % 32:
            raise SpecError(f"spec.{name}", "a multiple of 32 (whole 1 x 32 MX blocks)", v)


def check_qweights(spec: MoESpec, qw: QuantizedMoEWeights, device: torch.device) -> None:
    """Every QuantTensor the spec uses: format, block, scale dtype, packed shapes, all on `device`."""
    E, H, I, S = spec.num_experts, spec.hidden_size, spec.intermediate_size, spec.shared_width
    shapes = {"w13": (E, spec.w13_rows, H), "w2": (E, H, I)}
    if S:
        shapes.update(shared_w13=(2 * S if spec.gated else S, H), shared_w2=(H, S))
    for name, shape in shapes.items():
        check_mx_tensor(f"qweights.{name}", getattr(qw, name), shape, device)
    b = qw.base
    biases = {"b13": (E, spec.w13_rows), "b2": (E, H)} if spec.expert_bias else {}
    for name, shape in biases.items():
        require_tensor(f"qweights.base.{name}", getattr(b, name), shape=shape)


def _qt_on(qt: QuantTensor | None, device: torch.device) -> QuantTensor | None:
    if qt is None or qt.codes.device == device:
        return qt
    return QuantTensor(qt.codes.to(device), qt.scales.to(device), qt.fmt, qt.block, qt.scale_dtype)


def on_device(qw: QuantizedMoEWeights, device: torch.device) -> QuantizedMoEWeights:
    """Codes, scales and base tensors on `device` (no copy of what is there already)."""
    base = qw.base if qw.base.device == device else qw.base.to(device)
    moved = {n: _qt_on(getattr(qw, n), device) for n in ("w13", "w2", "shared_w13", "shared_w2")}
    return qw.replace(base=base, **moved)


def _prepare(spec: MoESpec, qweights: QuantizedMoEWeights, x: torch.Tensor) -> QuantizedMoEWeights:
    check_mx_spec(spec)
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise SpecError("x.shape", f"(T, {spec.hidden_size})", tuple(getattr(x, "shape", ())))
    check_activations("x", x, (x.shape[0], spec.hidden_size))
    if not isinstance(qweights, QuantizedMoEWeights):
        raise SpecError("qweights", "a QuantizedMoEWeights (reference/qweights.py)", type(qweights).__name__)
    check_qweights(spec, qweights, qweights.w13.codes.device)
    return on_device(qweights, x.device)


def _up_offsets(spec: MoESpec) -> tuple[int, ...]:
    """Rows from each gate row to its up row where they are concatenated: routed I, the shared expert's S."""
    if not spec.gated:
        return ()
    routed = () if spec.w13_layout == "interleaved" else (spec.intermediate_size,)
    return routed + ((spec.shared_width,) if spec.shared_width else ())


def _biases(spec: MoESpec, base: MoEWeights) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    return (base.b13, base.b2) if spec.expert_bias else (None, None)


# ----------------------------------------------------------------------------------------------- layer
def fused_moe_mxfp4(
    spec: MoESpec,
    qweights: QuantizedMoEWeights,
    x: torch.Tensor,
    *,
    routing: Routing | None = None,
    config: ConfigArg = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The MXFP4 MoE layer (module docstring). `routing` skips the router; `config` forces tiles (a
    Mxfp4Config, TileConfig or dict, with optional "scale_at": "weights" | "accumulator"); `out` (T, H) in
    x.dtype receives y. The config used is recorded (config.last_config())."""
    qw = _prepare(spec, qweights, x)
    T, H, I, k = x.shape[0], spec.hidden_size, spec.intermediate_size, spec.top_k
    if routing is not None:
        require_tensor("routing.topk_ids", routing.topk_ids, shape=(T, k), device=x.device)
    if out is not None:
        require_tensor("out", out, shape=(T, H), dtype=x.dtype, device=x.device)
    if T == 0:
        return out if out is not None else torch.empty((0, H), dtype=x.dtype, device=x.device)
    cfg = choose_config(spec, x.dtype, T, config)
    check_dot_kind(cfg, x.dtype)
    check_row_group(cfg, *_up_offsets(spec))
    cfgmod.record(cfg)

    if routing is None:
        from moe_cts.kernels.router import route, router_weights

        routing = route(spec, router_weights(qw.base, x), x)
    from moe_cts.kernels.align import align_or_slots

    work = (lambda: shared_forward_mxfp4(spec, qw, x, cfg)) if spec.shared_width else None
    # the shared expert beside the routed experts in a captured graph (kernels/streams.py)
    shared, branch = beside(x.device, work)
    meta = align_or_slots(spec, routing.topk_ids, cfg.BLOCK_M)
    b13, b2 = _biases(spec, qw.base)
    act = torch.empty((T * k, I), dtype=x.dtype, device=x.device)
    launch_mx_gate_up(x, qw.w13, b13, act, meta, cfg, spec=spec)
    # rows of dropped / non-local assignments are never written here, and never read by the combine
    ws = torch.empty((T * k, H), dtype=x.dtype, device=x.device)
    route_w = routing.topk_weights.reshape(T * k).to(torch.float32)
    launch_mx_down(act, qw.w2, b2, ws, meta, cfg, route_weights=route_w)
    branch.join()
    y = out if out is not None else torch.empty((T, H), dtype=x.dtype, device=x.device)
    slots, slot_end = meta.combine_slots()
    launch_combine(ws.view(T, k, H), slots, y, shared_out=shared, slot_end=slot_end)
    return y


def shared_forward_mxfp4(
    spec: MoESpec, qw: QuantizedMoEWeights, x: torch.Tensor, cfg: Mxfp4Config
) -> torch.Tensor:
    """The shared MLP through the same MXFP4 kernels (one expert, k = 1, concat rows); gate in fp32."""
    T, S, H = x.shape[0], spec.shared_width, spec.hidden_size
    meta = dense_meta(T, cfg.BLOCK_M, x.device)
    one = lambda qt: QuantTensor(
        qt.codes.unsqueeze(0), qt.scales.unsqueeze(0), qt.fmt, qt.block, qt.scale_dtype
    )
    act = torch.empty((T, S), dtype=x.dtype, device=x.device)
    launch_mx_gate_up(x, one(qw.shared_w13), None, act, meta, cfg, spec=spec, interleaved=False)
    gate = None
    if spec.shared_gate:
        gate = torch.empty((T,), dtype=torch.float32, device=x.device)
        g = qw.base.shared_gate
        GK.row_gate_kernel[(triton.cdiv(T, 16),)](
            x_ptr=x, g_ptr=g, out_ptr=gate,
            T=T, H=H, stride_x_t=x.stride(0), stride_x_h=x.stride(1), stride_g_h=g.stride(1),
            BLOCK_T=16, BLOCK_H=128,
        )  # fmt: skip
    out = torch.empty((T, H), dtype=x.dtype, device=x.device)
    launch_mx_down(act, one(qw.shared_w2), None, out, meta, cfg, route_weights=gate)
    return out


# ----------------------------------------------------------------------------------------------- stages
def _stage_meta(spec: MoESpec, topk_ids: torch.Tensor, cfg: Mxfp4Config, meta: AlignMeta | None) -> AlignMeta:
    meta = meta if meta is not None else align_all(spec, topk_ids, cfg.BLOCK_M)
    if meta.block_m != cfg.BLOCK_M:
        raise SpecError("meta.block_m", f"the config's BLOCK_M ({cfg.BLOCK_M})", meta.block_m)
    return meta


def gate_up_mxfp4(
    spec: MoESpec,
    qweights: QuantizedMoEWeights,
    x: torch.Tensor,
    topk_ids: torch.Tensor,
    *,
    config: ConfigArg = None,
    meta: AlignMeta | None = None,
) -> torch.Tensor:
    """GEMM1 + activation for every assignment: act (T, k, I) in x.dtype (torch_quant.gate_up's twin)."""
    qw = _prepare(spec, qweights, x)
    T, k, I = x.shape[0], spec.top_k, spec.intermediate_size
    require_tensor("topk_ids", topk_ids, shape=(T, k), dtype=torch.int32, device=x.device)
    act = torch.empty((T * k, I), dtype=x.dtype, device=x.device)
    if T == 0:
        return act.view(T, k, I)
    cfg = choose_config(spec, x.dtype, T, config)
    check_dot_kind(cfg, x.dtype)
    check_row_group(cfg, *_up_offsets(spec))
    cfgmod.record(cfg)
    launch_mx_gate_up(
        x, qw.w13, _biases(spec, qw.base)[0], act, _stage_meta(spec, topk_ids, cfg, meta), cfg, spec=spec
    )
    return act.view(T, k, I)


def down_mxfp4(
    spec: MoESpec,
    qweights: QuantizedMoEWeights,
    act: torch.Tensor,
    topk_ids: torch.Tensor,
    *,
    config: ConfigArg = None,
    meta: AlignMeta | None = None,
) -> torch.Tensor:
    """GEMM2 for every assignment, unweighted incl. b2: (T, k, H) in act.dtype (torch_quant.down's twin)."""
    T, k, H, I = topk_ids.shape[0], spec.top_k, spec.hidden_size, spec.intermediate_size
    check_activations("act", act, (T, k, I))
    qw = _prepare(spec, qweights, torch.empty((0, H), dtype=act.dtype, device=act.device))
    require_tensor("topk_ids", topk_ids, shape=(T, k), dtype=torch.int32, device=act.device)
    out = torch.empty((T * k, H), dtype=act.dtype, device=act.device)
    if T == 0:
        return out.view(T, k, H)
    cfg = choose_config(spec, act.dtype, T, config)
    check_dot_kind(cfg, act.dtype)
    cfgmod.record(cfg)
    meta = _stage_meta(spec, topk_ids, cfg, meta)
    launch_mx_down(act.reshape(T * k, I), qw.w2, _biases(spec, qw.base)[1], out, meta, cfg)
    return out.view(T, k, H)
