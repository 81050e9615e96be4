"""Error bounds of quantized cases (spec.quant set): tolerance.py's model plus the activation quantization step.

The oracle dequantizes exactly (QuantTensor.dequantize, float64), so what an implementation may differ by is

    accumulation     tolerance.ErrorModel.dot on the dequantized GEMM (|x'| |W|), plus 2 u_fp32 |x'||W| for
                     forming x' = q s and W = q s in fp32, plus ErrorModel.fp8_dot where both operands are fp8
                     (the GPU's fp8 MMA keeps ~13 bits per step; device_matrix.json fp8_mma_u_step)
    requantization   x' = RTNE_sat(x / s) s may land on another code when x or s differ by a rounding:
                     an fp32 amax / scale off by one rounding, or (end to end) the implementation's own GEMM1
                     output feeding GEMM2. Per element, with e_x the error of x and rel_s that of the scale,

                         e_x'[r, k] = max over c in {s (1 - rel_s), s, s (1 + rel_s)} (ue8m0: the power of two
                                      of amax (1 -+ rel)), sign in {-, +}:
                                      | RTNE_sat((x +- e_x) (1 +- 2 u_fp32) / c) c - x'[r, k] |

                     0 where the code cannot change (snapped inputs, no tie), one format step where a flip is
                     possible, more only where the inputs are that uncertain. The GEMM adds sum_k e_x'[k] |W[n, k]|.
    epilogue         the float model's terms (bias rounding, activation corners, storage rounding)

A dropped scale, a transposed scale layout or a scale from the neighbouring block moves whole blocks by a
power of two (quant_cases.py's exponent pattern): far outside these bounds. `code_steps` measures an
implementation's requantized values in format steps, for adapters that expose them.
"""

from __future__ import annotations

import numpy as np

import moe_cts.reference.numpy_oracle as npo
from moe_cts.conformance.engine import tolerance as tol
from moe_cts.reference import formats
from moe_cts.reference import numpy_quant as npq
from moe_cts.reference.qweights import QuantizedMoEWeights
from moe_cts.reference.spec import MoESpec

_f = tol._finite
#: largest flip budget of `code_steps`: steps per element, and the fraction of elements that may flip
MAX_STEPS, MAX_FLIP_FRACTION = 1, 0.02


def _group_max(spec: MoESpec, v: np.ndarray) -> np.ndarray:
    """(R, G) max of v (R, K) >= 0 over each activation group (the whole tensor for per-tensor)."""
    q = spec.quant
    R, K = v.shape
    g = q.act_group if q.method == "fp8_block" else max(K, 1)
    G = max(1, -(-K // g))
    pad = np.zeros((R, G * g))
    pad[:, :K] = v
    m = pad.reshape(R, G, g).max(axis=2)
    return np.full_like(m, m.max(initial=0.0)) if q.method == "fp8_per_tensor" else m


def _scale_candidates(
    spec: MoESpec, a: np.ndarray, s: np.ndarray, e_a: np.ndarray, static
) -> list[np.ndarray]:
    """Scales (R, G) an implementation may compute: the oracle's, and those of amax moved by its error and
    by one fp32 rounding (ue8m0: the neighbouring power of two only where amax sits that close to its
    boundary)."""
    q = spec.quant
    if static is not None:
        return [s]
    f = formats.get(q.fp8_format)
    u = tol.UNIT_ROUNDOFF["float32"]
    amax, e_amax = _group_max(spec, np.abs(_f(a))), _group_max(spec, e_a)
    out = [s]
    for sign in (-1.0, 1.0):
        m = np.maximum(amax + sign * e_amax, 0.0) * (1.0 + sign * 2 * u)
        if q.amax_eps is not None:
            m = np.maximum(m, q.amax_eps)
        if q.scale_format == "ue8m0":
            c = formats.ue8m0_scale(m, f, q.scale_rounding)
        else:
            c = m / f.max * (1.0 + sign * 2 * u)
        out.append(np.where(np.isfinite(s), c, s))
    return out


def requant_error(spec: MoESpec, a: np.ndarray, static, e_a: np.ndarray | None, point: str):
    """(a' (R, K), e_a' (R, K)): the oracle's requantized rows and how far an implementation's may be."""
    if point not in spec.quant.quantize_inputs or a.shape[0] == 0:
        return a, np.zeros_like(a) if e_a is None else _f(e_a)
    aq = npq.quantize_act(spec, a, static)
    s = npq.act_scales(spec, a, static)
    s = np.broadcast_to(s, (a.shape[0], s.shape[1]))
    R, K = a.shape
    e_a = np.zeros_like(a) if e_a is None else _f(e_a)
    u = tol.UNIT_ROUNDOFF["float32"]
    fmt = spec.quant.fp8_format
    worst = np.zeros_like(a)
    for c in _scale_candidates(spec, a, s, e_a, static):
        width = K if c.shape[1] == 1 else spec.quant.act_group
        full = np.broadcast_to(np.repeat(c, width, axis=1)[:, :K], (R, K))
        for sign in (-1.0, 1.0):
            with np.errstate(divide="ignore", invalid="ignore"):
                v = (a + sign * e_a) * (1.0 + sign * 2 * u) / full
                got = formats.round_to(fmt, v) * full
            worst = np.maximum(worst, _f(np.abs(got - aq)))
    return aq, worst


def _mma(model: tol.ErrorModel, spec: MoESpec, point: str, K: int, mag: np.ndarray):
    """The fp8 MMA's accumulation term (ErrorModel.fp8_dot) where both operands of the dot are fp8 codes:
    an fp8 scheme that quantizes the activation at this point; 0 for MXFP4 (bf16 / fp16 dots)."""
    q = spec.quant
    return model.fp8_dot(K, mag) if q.method != "mxfp4" and point in q.quantize_inputs else 0.0


def _absw(w) -> np.ndarray:
    return np.abs(tol._f64(w))


def gate_up_bounds(
    model: tol.ErrorModel,
    spec: MoESpec,
    qw: QuantizedMoEWeights,
    qv: tol.WeightViews,
    x: np.ndarray,
    ids: np.ndarray,
    e_x: np.ndarray | None = None,
):
    """(reference GateUp, e_act (T, k, I)) of the quantized GEMM1 + activation."""
    xq, e_xq = requant_error(spec, x, qw.a13_scale, e_x, "gemm1")
    ref = npo.gate_up(spec, qv.val, xq, ids)
    mag = npo.gate_up(spec, qv.abs, np.abs(_f(xq)), ids)
    sq = npo.gate_up(spec, qv.sq, _f(xq) ** 2, ids)
    flip = npo.gate_up(spec, qv.abs_nobias, e_xq, ids)
    store = npo.gate_up(spec, qv.nobias, xq, ids) if spec.expert_bias else ref
    u, u32 = model.u_store, model.u_fp32

    def e_pre(m, s2, fl, pre, dot_part):
        e = model.dot(spec.hidden_size, m, s2) + _mma(model, spec, "gemm1", spec.hidden_size, m)
        e = e + 2 * u32 * m + fl
        e = e + (u * (np.abs(dot_part) + e) if spec.expert_bias else 0.0)
        return _f(tol.stored(model, pre, e))

    e_g = e_pre(mag.gate_pre, sq.gate_pre, flip.gate_pre, ref.gate_pre, store.gate_pre)
    e_u = None if ref.up_pre is None else e_pre(mag.up_pre, sq.up_pre, flip.up_pre, ref.up_pre, store.up_pre)
    gate, up = _f(ref.gate_pre), None if ref.up_pre is None else _f(ref.up_pre)
    e_act = tol._corners(spec, gate, up, e_g, e_u) + tol._evaluation(model, spec, gate, up, ref.act)
    return ref, e_act


def down_bounds(
    model: tol.ErrorModel,
    spec: MoESpec,
    qw: QuantizedMoEWeights,
    qv: tol.WeightViews,
    act: np.ndarray,
    ids: np.ndarray,
    e_act: np.ndarray | None = None,
):
    """(reference expert_out (T, k, H), e_eo) of the quantized GEMM2 on the requantized act."""
    T, k = ids.shape
    I = spec.intermediate_size
    flat_e = None if e_act is None else e_act.reshape(T * k, I)
    aq, e_aq = requant_error(spec, act.reshape(T * k, I), qw.a2_scale, flat_e, "gemm2")
    aq, e_aq = aq.reshape(T, k, I), e_aq.reshape(T, k, I)
    ref = npo.down(spec, qv.val, aq, ids)
    fa = _f(aq)
    mag = npo.down(spec, qv.abs, np.abs(fa), ids)
    e = model.dot(I, mag, npo.down(spec, qv.sq, fa * fa, ids)) + 2 * model.u_fp32 * mag
    e = e + _mma(model, spec, "gemm2", I, mag)
    e = e + npo.down(spec, qv.abs_nobias, e_aq, ids)
    if spec.expert_bias:  # the product may be rounded before b2 is added
        e = e + model.u_store * (np.abs(npo.down(spec, qv.nobias, aq, ids)) + e)
    return ref, _f(tol.stored(model, ref, e))


def _qgemm(model: tol.ErrorModel, spec: MoESpec, point: str, a: np.ndarray, e_a: np.ndarray, w: np.ndarray):
    """(a @ w.T, its error) for one dense quantized GEMM (the shared MLP)."""
    fa, aw = _f(a), np.abs(w)
    mag = np.abs(fa) @ aw.T
    y = a @ w.T
    e = model.dot(w.shape[1], mag, (fa * fa) @ (w * w).T) + 2 * model.u_fp32 * mag + e_a @ aw.T
    e = e + _mma(model, spec, point, w.shape[1], mag)
    return y, tol.stored(model, y, e)


def shared_bounds(model: tol.ErrorModel, spec: MoESpec, qw: QuantizedMoEWeights, x: np.ndarray):
    """(reference shared_out (T, H), e_shared) of the quantized shared MLP and its sigmoid gate."""
    ref = npq.shared_expert(spec, qw, x)
    if not spec.shared_width:
        return ref, np.zeros_like(ref)
    S = spec.shared_width
    xq, e_xq = requant_error(spec, x, qw.a13_scale, None, "gemm1")
    h, e_h = _qgemm(model, spec, "gemm1", xq, e_xq, qw.shared_w13.dequantize())
    cspec = spec.replace(w13_layout="concat")
    gate, up, e_g, e_u = (h[:, :S], h[:, S:], e_h[:, :S], e_h[:, S:]) if spec.gated else (h, None, e_h, None)
    act = npo.activate(cspec, gate, up)
    e_act = tol._corners(
        cspec, _f(gate), None if up is None else _f(up), _f(e_g), None if e_u is None else _f(e_u)
    )
    e_act = e_act + tol._evaluation(model, cspec, gate, up, act)
    aq, e_aq = requant_error(spec, act, qw.a2_scale, e_act, "gemm2")
    mlp, e_mlp = _qgemm(model, spec, "gemm2", aq, e_aq, qw.shared_w2.dequantize())
    if spec.shared_gate:
        g = tol._f64(qw.base.shared_gate)
        fx = _f(x)
        zg = fx @ g.T
        e_zg = model.dot(
            spec.hidden_size, np.abs(fx) @ np.abs(g).T, (fx * fx) @ (g * g).T
        ) + model.u_store * np.abs(zg)
        sg = npo.sigmoid(zg)
        e_mlp = tol.stored(model, sg * mlp, sg * e_mlp + np.abs(mlp) * sg * (1 - sg) * e_zg)
    return ref, _f(tol.stored(model, ref, _f(e_mlp)))


def end_to_end(
    model: tol.ErrorModel,
    spec: MoESpec,
    qw: QuantizedMoEWeights,
    qv: tol.WeightViews,
    x: np.ndarray,
    ids: np.ndarray,
    tw: np.ndarray,
    kept: np.ndarray,
    e_w: np.ndarray,
    gate_up: tuple | None = None,
) -> dict:
    """The runner's end-to-end reference of a quantized case: eo, so, y and e_y (runner._Session).
    gate_up: gate_up_bounds(model, spec, qw, qv, x, ids) when the caller has it already."""
    gu, e_act = gate_up or gate_up_bounds(model, spec, qw, qv, x, ids)
    eo, e_eo = down_bounds(model, spec, qw, qv, gu.act, ids, e_act)
    so, e_so = shared_bounds(model, spec, qw, x)
    y, e_y = tol.combine_bounds(model, spec, eo, tw, kept, so if spec.shared_width else None, e_eo, e_w, e_so)
    return {"eo": eo, "so": so, "y": y, "e_y": e_y}


def code_steps(fmt: str, got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Distance in format steps between two arrays of (scaled) element values on the same grid: |index
    difference| in the sorted finite values of fmt; NaN where either is not a value of the format."""
    vals = np.unique(formats.decode(fmt, np.arange(16 if fmt == "e2m1" else 256)))
    vals = vals[np.isfinite(vals)]
    gi, wi = np.searchsorted(vals, got), np.searchsorted(vals, want)
    on_grid = lambda a, i: (i < vals.size) & (vals[np.minimum(i, vals.size - 1)] == a)
    return np.where(on_grid(got, gi) & on_grid(want, wi), np.abs(gi - wi), np.nan)


def within_flip_budget(steps: np.ndarray) -> bool:
    """At most MAX_STEPS steps per element and at most MAX_FLIP_FRACTION of the elements moved; an element
    off the format's grid (NaN steps) is outside any budget."""
    if not np.isfinite(steps).all():
        return False
    if steps.size == 0:
        return True
    return bool(steps.max() <= MAX_STEPS and (steps > 0).mean() <= MAX_FLIP_FRACTION)
