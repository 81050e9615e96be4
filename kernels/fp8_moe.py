"""The fp8 w8a8 MoE layer on the device, and its staged twins (reference/numpy_quant.py):

    r        = route(spec, weights, x)                              # float router (unquantized)
    meta     = align(spec, r.topk_ids, BLOCK_M)
    xq, sx   = quantize_rows(spec, x)                               # stage 1: x -> fp8 + scales, once per token
    act[a]   = activation(dequant(xq[a // k] @ w13_q[e].T) + b13)   # GEMM1, fp32 epilogue
    aq, sa   = act quantized: in GEMM1's epilogue (fp8_block with BLOCK_N % group == 0, the usual case), else
               quantize_rows on the fp32 act workspace (per token / per tensor: the amax spans the whole row
               or tensor, more than one tile)
    ws[a]    = w[a] * (dequant(aq[a] @ w2_q[e].T) + b2)             # GEMM2: dequant, bias, router weight (fp32), cast
    y[t]     = shared(x)[t] + sum_j kept(t, j) ? ws[t*k+j] : 0      # combine (float kernel), one cast

    x (T, H) bf16 | fp16 | fp32     qweights QuantizedMoEWeights (codes uint8 + fp32 scales)     y (T, H) x.dtype

Before any launch: the scheme must be fp8 w8a8 (fp8_per_tensor | fp8_per_token | fp8_block with fp8
activations), and the device's target must compile the fp8 flavour (kernels/target_info.fp8_rejection):
NotSupportedError naming the field otherwise.
"""

from __future__ import annotations

import torch

from moe_cts.kernels import config as cfgmod
from moe_cts.kernels import target_info
from moe_cts.kernels._common import SUPPORTED_DTYPES, require_tensor
from moe_cts.kernels.combine import launch_combine
from moe_cts.kernels.config import TileConfig
from moe_cts.kernels.fp8_gemm import (
    FP8_METHODS,
    fused_requant,
    launch_fp8_down,
    launch_fp8_gate_up,
    operand_dtype,
    quantize_rows,
    weight_operands,
)
from moe_cts.kernels.grouped_gemm import align_all, check_ids, dense_meta
from moe_cts.kernels.metadata import AlignMeta, Routing
from moe_cts.kernels.streams import beside
from moe_cts.reference.errors import NotSupportedError
from moe_cts.reference.qweights import QuantizedMoEWeights
from moe_cts.reference.spec import MoESpec, SpecError

F32 = torch.float32


def check_fp8(spec: MoESpec, qweights, device) -> None:
    """Raise NotSupportedError / SpecError naming the field before any launch (module docstring)."""
    from moe_cts.kernels.capabilities import check_supported

    q = spec.quant
    if q is None or q.method not in FP8_METHODS:
        raise NotSupportedError(
            f"quant.method: expected one of {FP8_METHODS}, got {None if q is None else q.method}"
        )
    if not q.quantizes_activations:
        raise NotSupportedError(
            f"quant.activation_dtype: the fp8 kernels are w8a8 (expected 'fp8'), got {q.activation_dtype!r}"
        )
    why = target_info.fp8_rejection(*target_info.device_target(device), q.fp8_format)
    if why is not None:
        raise NotSupportedError(why)
    check_supported(spec)
    if not isinstance(qweights, QuantizedMoEWeights):
        raise SpecError("qweights", "QuantizedMoEWeights", type(qweights).__name__)
    qweights.validate(spec)


def _bias(t: torch.Tensor | None, device) -> torch.Tensor | None:
    return None if t is None else t.to(device=device, dtype=F32)


def fp8_config(
    spec: MoESpec, T: int, config, batch_invariant: bool = False, *, shared: bool = False
) -> TileConfig:
    """The backend table's fp8 row (kernels/config.py: the 16bit rows where a backend has no fp8 table)."""
    if config is not None:
        return cfgmod.as_config(config)
    routed = dict(top_k=spec.top_k, num_experts=spec.num_experts, intermediate_size=spec.intermediate_size)
    shared_mlp = dict(top_k=1, num_experts=1, intermediate_size=spec.shared_width)
    return cfgmod.choose(
        dtype=torch.float8_e4m3fn, num_tokens=T, hidden_size=spec.hidden_size, batch_invariant=batch_invariant,
        **(shared_mlp if shared else routed),
    )  # fmt: skip


def _gemm1(
    spec, qw_w13, b13, xq, sx, meta: AlignMeta, tile, rows: int, I: int, device, a2_scale, *, interleaved=None
):
    """(aq, sa): GEMM1 + activation + the activation's quantization for GEMM2 (fused when possible;
    a2_scale: the static scale of GEMM2's input, or None)."""
    fmt = spec.quant.fp8_format
    w = weight_operands(qw_w13, device)
    if fused_requant(spec, tile):
        aq = torch.empty((rows, I), dtype=operand_dtype(fmt), device=device)
        sa = torch.empty((rows, -(-I // spec.quant.act_group)), dtype=F32, device=device)
        launch_fp8_gate_up(spec, xq, sx, w, b13, aq, meta, tile, sq=sa, interleaved=interleaved)
        return aq, sa
    act = torch.empty((rows, I), dtype=F32, device=device)
    launch_fp8_gate_up(spec, xq, sx, w, b13, act, meta, tile, interleaved=interleaved)
    # dynamic per tensor reads every row: never with a local mask or capacity (reference/quant.check_spec)
    return quantize_rows(spec, act, a2_scale)


def _shared(spec: MoESpec, qw: QuantizedMoEWeights, x, xq, sx, cfg: TileConfig) -> torch.Tensor:
    """The quantized shared MLP through the same kernels (one expert, k = 1); sigmoid gate in GEMM2."""
    from moe_cts.kernels import _grouped_gemm_kernels as GK

    T, S, H = x.shape[0], spec.shared_width, spec.hidden_size
    meta = dense_meta(T, cfg.BLOCK_M, x.device)
    fit = cfgmod.fit_to_shape(cfg, H, S)
    sspec = spec.replace(expert_bias=False)
    aq, sa = _gemm1(
        sspec, qw.shared_w13, None, xq, sx, meta, fit.gate_up, T, S, x.device, qw.a2_scale, interleaved=False
    )
    gate = None
    if spec.shared_gate:
        gate = torch.empty((T,), dtype=F32, device=x.device)
        g = qw.base.shared_gate.to(device=x.device, dtype=F32)
        GK.row_gate_kernel[(-(-T // 16),)](
            x_ptr=x, g_ptr=g, out_ptr=gate, T=T, H=H, stride_x_t=x.stride(0), stride_x_h=x.stride(1),
            stride_g_h=g.stride(1), BLOCK_T=16, BLOCK_H=128,
        )  # fmt: skip
    out = torch.empty((T, H), dtype=x.dtype, device=x.device)
    w2 = weight_operands(qw.shared_w2, x.device)
    launch_fp8_down(sspec, aq, sa, w2, None, out, meta, fit.down, route_weights=gate)
    return out


def fused_moe_fp8(
    spec: MoESpec,
    qweights: QuantizedMoEWeights,
    x: torch.Tensor,
    *,
    routing: Routing | None = None,
    config: TileConfig | dict | None = None,
    out: torch.Tensor | None = None,
    batch_invariant: bool = False,
) -> torch.Tensor:
    """The fp8 MoE layer (module docstring). `routing` skips the router; `config` forces a tile config;
    `out` (T, H) in x.dtype receives y."""
    from moe_cts.kernels.align import align_or_slots

    check_fp8(spec, qweights, x.device)
    require_tensor(
        "x",
        x,
        shape=(x.shape[0], spec.hidden_size) if x.dim() == 2 else None,
        dtype=SUPPORTED_DTYPES,
        launch=True,
    )
    T, H, I, k = x.shape[0], spec.hidden_size, spec.intermediate_size, spec.top_k
    if out is not None:
        require_tensor("out", out, shape=(T, H), dtype=x.dtype, device=x.device)
    if T == 0:
        return out if out is not None else torch.empty((0, H), dtype=x.dtype, device=x.device)
    cfg = fp8_config(spec, T, config, batch_invariant)
    cfgmod.record(cfg)
    if routing is None:
        from moe_cts.kernels.router import route, router_weights

        routing = route(spec, router_weights(qweights.base, x), x)
    check_ids(spec, routing.topk_ids, T, x.device)
    qw = qweights
    pdl = cfgmod.pdl("fp8")  # the chain's other kernels (quantize, GEMMs) read it in their launchers
    meta = align_or_slots(spec, routing.topk_ids, cfg.BLOCK_M, pdl=pdl)
    xq, sx = quantize_rows(spec, x, qw.a13_scale)
    work = None
    if spec.shared_width:
        scfg = fp8_config(spec, T, config, batch_invariant, shared=True)
        work = lambda: _shared(spec, qw, x, xq, sx, scfg)
    # the shared expert beside the routed experts in a captured graph (kernels/streams.py)
    shared, branch = beside(x.device, work)
    b13 = _bias(qw.base.b13, x.device)
    aq, sa = _gemm1(spec, qw.w13, b13, xq, sx, meta, cfg.gate_up, T * k, I, x.device, qw.a2_scale)
    ws = torch.empty((T * k, H), dtype=x.dtype, device=x.device)
    route_w = routing.topk_weights.reshape(T * k).to(F32)
    launch_fp8_down(spec, aq, sa, weight_operands(qw.w2, x.device), _bias(qw.base.b2, x.device), ws, meta,
                    cfg.down, route_weights=route_w)  # fmt: skip
    branch.join()
    y = out if out is not None else torch.empty((T, H), dtype=x.dtype, device=x.device)
    slots, slot_end = meta.combine_slots()
    launch_combine(ws.view(T, k, H), slots, y, shared_out=shared, slot_end=slot_end, pdl=pdl)
    return y


# ----------------------------------------------------------------------------------------------- stages
def gate_up_fp8(
    spec: MoESpec, qweights: QuantizedMoEWeights, x: torch.Tensor, topk_ids: torch.Tensor, *, config=None
) -> torch.Tensor:
    """GEMM1 on the quantized x for every assignment: act (T, k, I) in x.dtype, before its requantization
    (the staged twin of numpy_quant.gate_up; conformance stage gemm1)."""
    check_fp8(spec, qweights, x.device)
    require_tensor("x", x, shape=(x.shape[0], spec.hidden_size), dtype=SUPPORTED_DTYPES, launch=True)
    T, k, I = x.shape[0], spec.top_k, spec.intermediate_size
    check_ids(spec, topk_ids, T, x.device)
    act = torch.empty((T * k, I), dtype=x.dtype, device=x.device)
    if T == 0:
        return act.view(T, k, I)
    cfg = fp8_config(spec, T, config)
    cfgmod.record(cfg)
    meta = align_all(spec, topk_ids, cfg.BLOCK_M)
    xq, sx = quantize_rows(spec, x, qweights.a13_scale)
    w = weight_operands(qweights.w13, x.device)
    launch_fp8_gate_up(spec, xq, sx, w, _bias(qweights.base.b13, x.device), act, meta, cfg.gate_up)
    return act.view(T, k, I)


def down_fp8(
    spec: MoESpec, qweights: QuantizedMoEWeights, act: torch.Tensor, topk_ids: torch.Tensor, *, config=None
) -> torch.Tensor:
    """GEMM2 on the requantized act (T, k, I) for every assignment, unweighted with b2: (T, k, H) in act.dtype
    (the staged twin of numpy_quant.down; conformance stage gemm2)."""
    check_fp8(spec, qweights, act.device)
    T, k, H, I = topk_ids.shape[0], spec.top_k, spec.hidden_size, spec.intermediate_size
    require_tensor("act", act, shape=(T, k, I), dtype=SUPPORTED_DTYPES, launch=True)
    check_ids(spec, topk_ids, T, act.device)
    out = torch.empty((T * k, H), dtype=act.dtype, device=act.device)
    if T == 0:
        return out.view(T, k, H)
    cfg = fp8_config(spec, T, config)
    cfgmod.record(cfg)
    meta = align_all(spec, topk_ids, cfg.BLOCK_M)
    aq, sa = quantize_rows(spec, act.reshape(T * k, I), qweights.a2_scale)
    w = weight_operands(qweights.w2, act.device)
    launch_fp8_down(spec, aq, sa, w, _bias(qweights.base.b2, act.device), out, meta, cfg.down)
    return out.view(T, k, H)
