"""The NumPy oracle's quantized forward (spec.quant set), float64 on the exact dequantized values.

    stage     what changes against the float oracle (numpy_oracle.py)
    router    nothing: the router runs on its float weights
    GEMM1     x' = quantize_act(x) when "gemm1" in quant.quantize_inputs; h = x' @ W13[e].T + b13[e]
    GEMM2     a' = quantize_act(act) when "gemm2" in quant.quantize_inputs; out = a' @ W2[e].T + b2[e]
    shared    the same two quantized GEMMs on the shared MLP
    combine   unchanged (router weight after dequant and bias: the EPILOGUE order)

W are QuantTensor.dequantize() values. quantize_act is written here for this oracle only; the PyTorch oracle
has its own (torch_quant.py), so the two stay independent.
"""

from __future__ import annotations

import numpy as np

from moe_cts.reference import formats
from moe_cts.reference import numpy_oracle as base
from moe_cts.reference.qweights import QuantizedMoEWeights, as_quantized
from moe_cts.reference.spec import MoESpec, check_input


def act_scales(spec: MoESpec, x: np.ndarray, static: float | None) -> np.ndarray:
    """Activation scales of rows x (R, K): (1, 1) per tensor, (R, 1) per token, (R, ceil(K/g)) per group.

    amax  = max |x| over the group, floored at amax_eps (when set)
    scale = fp32(amax / fp8.max)                        scale_format "fp32"
          = formats.ue8m0_scale(amax, fp8, rounding)    scale_format "ue8m0"
    """
    q = spec.quant
    f = formats.get(q.fp8_format)
    if static is not None:
        return np.full((1, 1), static)
    R, K = x.shape
    a = np.abs(x)
    if q.method == "fp8_per_tensor":
        amax = a.max(keepdims=True)
    elif q.method == "fp8_per_token":
        amax = a.max(axis=1, keepdims=True)
    else:
        g = q.act_group
        G = -(-K // g)
        pad = np.zeros((R, G * g))
        pad[:, :K] = a
        amax = pad.reshape(R, G, g).max(axis=2)  # a NaN element makes its group's amax NaN
    if q.amax_eps is not None:
        amax = np.where(np.isnan(amax), amax, np.maximum(amax, q.amax_eps))
    if q.scale_format == "ue8m0":
        return formats.ue8m0_scale(amax, f, q.scale_rounding)
    return (amax / f.max).astype(np.float32).astype(np.float64)


def quantize_act(spec: MoESpec, x: np.ndarray, static: float | None) -> np.ndarray:
    """Rows x (R, K) -> their fp8-quantized values q * s (float64). A zero group without amax_eps
    gives 0 / 0 = NaN, as DeepSeek's kernel does."""
    R, K = x.shape
    if R == 0:
        return x.copy()
    s = act_scales(spec, x, static)
    full = np.repeat(s, K if s.shape[1] == 1 else spec.quant.act_group, axis=1)[:, :K]
    full = np.broadcast_to(full, (R, K))
    with np.errstate(invalid="ignore", divide="ignore"):
        return formats.round_to(spec.quant.fp8_format, x / full) * full


def _maybe_quant(spec: MoESpec, x: np.ndarray, point: str, static: float | None) -> np.ndarray:
    return quantize_act(spec, x, static) if point in spec.quant.quantize_inputs else x


def gate_up(spec: MoESpec, qw: QuantizedMoEWeights, x, topk_ids) -> base.GateUp:
    """GEMM1 on the quantized input and the dequantized w13, then the activation."""
    x, ids = base._np(x), np.asarray(topk_ids, dtype=np.int64)
    T, k = ids.shape
    xq = _maybe_quant(spec, x, "gemm1", qw.a13_scale)
    w13, b13 = qw.w13.dequantize(), base._np(qw.base.b13)
    h = np.zeros((T, k, spec.w13_rows))
    for e in range(spec.num_experts):
        t_idx, j_idx = np.nonzero(ids == e)
        if t_idx.size:
            h[t_idx, j_idx] = xq[t_idx] @ w13[e].T + (b13[e] if spec.expert_bias else 0.0)
    gate, up = base.split_gate_up(spec, h)
    return base.GateUp(gate.copy(), None if up is None else up.copy(), base.activate(spec, gate, up))


def down(spec: MoESpec, qw: QuantizedMoEWeights, act, topk_ids) -> np.ndarray:
    """GEMM2 on the requantized activation (every assignment's row) and the dequantized w2."""
    act, ids = base._np(act), np.asarray(topk_ids, dtype=np.int64)
    T, k = ids.shape
    aq = _maybe_quant(spec, act.reshape(T * k, spec.intermediate_size), "gemm2", qw.a2_scale).reshape(
        act.shape
    )
    w2, b2 = qw.w2.dequantize(), base._np(qw.base.b2)
    out = np.zeros((T, k, spec.hidden_size))
    for e in range(spec.num_experts):
        t_idx, j_idx = np.nonzero(ids == e)
        if t_idx.size:
            out[t_idx, j_idx] = aq[t_idx, j_idx] @ w2[e].T + (b2[e] if spec.expert_bias else 0.0)
    return out


def shared_expert(spec: MoESpec, qw: QuantizedMoEWeights, x) -> np.ndarray:
    """The shared MLP with both GEMMs quantized like the routed ones."""
    x = base._np(x)
    if spec.shared_width == 0:
        return np.zeros((x.shape[0], spec.hidden_size))
    h = _maybe_quant(spec, x, "gemm1", qw.a13_scale) @ qw.shared_w13.dequantize().T
    S = spec.shared_width
    a = (
        base.activate(spec.replace(w13_layout="concat"), h[:, :S], h[:, S:])
        if spec.gated
        else base.activate(spec, h, None)
    )
    out = _maybe_quant(spec, a, "gemm2", qw.a2_scale) @ qw.shared_w2.dequantize().T
    if spec.shared_gate:
        out = base.sigmoid(x @ base._np(qw.base.shared_gate).T) * out
    return out


def moe_forward(spec: MoESpec, weights, x) -> base.MoEResult:
    """route -> permute -> quantized gate_up -> quantized down -> combine (+ quantized shared)."""
    x = base._np(x)
    check_input(spec, x)
    qw = as_quantized(spec, weights)
    r = base.route(spec, qw.base, x)
    p = base.permute(spec, r.topk_ids)
    gu = gate_up(spec, qw, x, r.topk_ids)
    eo = down(spec, qw, gu.act, r.topk_ids)
    so = shared_expert(spec, qw, x)
    y = base.combine(spec, eo, r.topk_weights, p.kept, so)
    return base.MoEResult(routing=r, permutation=p, gate_up=gu, expert_out=eo, shared_out=so, y=y)
