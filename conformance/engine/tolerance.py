"""The error-bound model: per-element bounds from unit roundoffs and magnitude tensors
(docs/bugs.md#facts-tolerance-model).

The float64 oracle runs on the same already-rounded inputs as the implementation, so only the
implementation's own arithmetic is bounded. For a dot product y = sum_i a_i b_i of length K:

    accumulation   c * sqrt(K) * u_acc * sum_i |a_i||b_i|          (probabilistic, Higham & Mary 2019)
    product inputs c * u_prod * sqrt(sum_i (a_i b_i)^2)            (tf32 rounding of fp32 operands)
    propagated     sqrt(sum_i (e_a_i b_i)^2)                       (independent errors e_a of an input)
    storage        u_store * (|y| + e_y)                            (rounding of a stored intermediate: of the value
                                                                     held, which may be e_y from the oracle's)

and through the stages:

    stage     bound of one element
    router    e_logit = dot terms (K=H) + u_store |logit|;  softmax e_s = s (e_logit + sum_j s_j e_logit_j)
              sigmoid e_s = s (1 - s) e_logit;  e_w = |w| (rel_i + max_j rel_j if renormalize) + floor
    gemm1     e_h = dot terms (K=H) + u_store |h|;  e_act = max over the corners of (gate +- e_g, up +- e_u)
              of |act(corner) - act| + n_ops * u_store |act|
    gemm2     e_eo = dot terms (K=I) + propagated e_act + u_store |eo|
    combine   e_y = c sqrt(k+1) u_store sum_j |w_j eo_j| + sum_j (|w_j| e_eo_j + |eo_j| e_w_j) + e_shared + u_store |y|

u_store is the case dtype's unit roundoff, doubled for bf16 where the backend's cast truncates (the
Triton interpreter). A dropped K tile of 64 at K = 7168 is ~10% of |y| while the bf16 bound is ~1-2%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import moe_cts.reference.numpy_oracle as npo
from moe_cts.reference.spec import MoESpec, MoEWeights

UNIT_ROUNDOFF = {"float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8, "tf32": 2.0**-11}
TINY = {"float32": float(np.finfo(np.float32).tiny), "float16": 6.0e-8, "bfloat16": 1.2e-38}
#: roundings in one activation evaluated in the storage dtype (eager: act(gate), * up, store)
ACT_OPS = {"swiglu_oai": 5, "gated": 3, "nongated": 2}


#: products per promoted fp8 MMA run the model allows: DeepSeek-V3's promotion interval (arXiv 2412.19437,
#: section 3.3.2), which the fp8 kernels keep (BLOCK_K <= 128). An implementation that chains a longer K
#: through the MMA accumulator is outside the bound at large K, as its error is.
FP8_PROMOTION = 128


@dataclass(frozen=True)
class ErrorModel:
    dtype: str  # case dtype: inputs, stored intermediates, output
    c: float  # lambda of the probabilistic bounds
    u_acc: float  # accumulator unit roundoff (fp32)
    u_prod: float  # rounding of fp32 operands before the product (tf32: 2^-11), else 0
    u_store: float  # rounding of a value stored in the case dtype (doubled when casts truncate)
    u_fp32: float = UNIT_ROUNDOFF["float32"]
    fn_ulps: float = 0.0  # fp32 ulps of evaluating exp/sigmoid/erf in registers (backend math library, data)
    u_mma_fp8: float = 0.0  # fp8 x fp8 MMA: relative error per 32-product step into its accumulator (data)

    @classmethod
    def for_case(cls, profile: dict[str, Any], dtype: str, fp32_dot: str = "ieee") -> ErrorModel:
        u = UNIT_ROUNDOFF[dtype]
        truncates = dtype == "bfloat16" and profile.get("bf16_cast") == "truncate"
        u_prod = 2 * UNIT_ROUNDOFF["tf32"] if (dtype == "float32" and fp32_dot == "tf32") else 0.0
        return cls(
            dtype,
            float(profile["c"]),
            float(profile["u_acc"]),
            u_prod,
            u * (2.0 if truncates else 1.0),
            fn_ulps=float(profile.get("fn_ulps", 0.0)),
            u_mma_fp8=float(profile.get("fp8_mma_u_step", 0.0)),
        )

    @property
    def tiny(self) -> float:
        return TINY[self.dtype]

    def dot(self, K: int, mag: np.ndarray, sq: np.ndarray) -> np.ndarray:
        """Accumulation and product-input terms of dots of length K (mag = sum |a||b|, sq = sum (ab)^2)."""
        return self.c * (self.u_acc * math.sqrt(max(K, 1)) * mag + self.u_prod * np.sqrt(sq))

    def fp8_dot(self, K: int, mag: np.ndarray) -> np.ndarray:
        """Extra error of an fp8 x fp8 MMA dot of length K promoted to fp32 every FP8_PROMOTION products:
        u_mma_fp8 per 32-product step of one promoted run, linear (the MMA's additions truncate, so they do
        not cancel), times sum |a||b|. 0 where fp8 products are exact in fp32 (interpreter, CPU)."""
        steps = math.ceil(min(max(K, 1), FP8_PROMOTION) / 32)
        return self.u_mma_fp8 * steps * mag


# ----------------------------------------------------------------------------------------------- oracle views
_BIASES = ("b13", "b2", "router_bias")  # zeroed in WeightViews.nobias and .sq


@dataclass(frozen=True)
class WeightViews:
    """float64 CPU copies of the case weights: values, absolute values, squares (biases zeroed)."""

    val: MoEWeights
    abs: MoEWeights
    sq: MoEWeights
    nobias: MoEWeights  # values with expert biases zeroed: the bare products

    @classmethod
    def of(cls, weights: MoEWeights) -> WeightViews:
        val = weights.to("cpu", torch.float64)
        sq = val.map(torch.square)
        biases = {n: torch.zeros_like(getattr(sq, n)) for n in _BIASES if getattr(sq, n) is not None}
        return cls(val, val.map(torch.abs), sq.replace(**biases), val.replace(**biases))

    @property
    def abs_nobias(self) -> MoEWeights:
        """|nobias|: abs's tensors with nobias's zero biases (|0| = +0 = the zeros), the same values as
        nobias.map(abs) without a pass over every expert weight."""
        zeros = {n: getattr(self.nobias, n) for n in _BIASES if getattr(self.nobias, n) is not None}
        return self.abs.replace(**zeros)


def _f64(t) -> np.ndarray:
    """float64 array of a weight view, read only (no copy of a float64 CPU tensor: npo._weight)."""
    return npo._weight(t)


def _finite(a: np.ndarray) -> np.ndarray:
    """NaN/inf -> 0, for bounds of rows that are not judged anyway."""
    return np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)


def stored(model: ErrorModel, ref: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Error of a value within e of ref once rounded to the case dtype: e + u_store (|ref| + e). The rounding
    scales with the value stored, which may be |ref| + e, not with |ref|: where an fp8 requantization flip
    moves a small output by a whole format step, u_store |ref| alone left the bf16 rounding of the moved value
    uncovered (an H200 gemm2 at 1.003x its bound, quant-deepseek-v3-fp8-block)."""
    return e + model.u_store * (np.abs(_finite(ref)) + e)


# ----------------------------------------------------------------------------------------------- router
def router_bounds(model: ErrorModel, spec: MoESpec, wv: WeightViews, x: np.ndarray, routing: npo.Routing):
    """(e_scores (T, E), e_keys (T, E)) for the oracle routing of x."""
    ax, wa = np.abs(x), _f64(wv.abs.router)
    mag = ax @ wa.T
    if spec.router_bias:
        mag = mag + _f64(wv.abs.router_bias)
    sq = (x * x) @ (_f64(wv.sq.router)).T
    z = routing.logits
    e_z = model.dot(spec.hidden_size, mag, sq) + (model.u_store + model.u_fp32) * np.abs(z)
    if spec.router_bias:  # x @ router.T may be rounded before the bias is added (model code in fp16/bf16)
        e_z = e_z + model.u_store * np.abs(z - _f64(wv.val.router_bias))
    e_z = _finite(e_z)
    s = _finite(routing.scores)
    if spec.scoring == "softmax":
        e_s = s * (e_z + np.sum(s * e_z, axis=1, keepdims=True))
    else:
        e_s = s * (1.0 - s) * e_z
    # exp/sum/division in fp32; below the fp32 normal range scores flush to zero (GPUs flush subnormals)
    e_s = e_s + 4 * model.c * model.u_fp32 * s + TINY["float32"]
    e_keys = e_s + (model.u_fp32 * np.abs(_f64(wv.val.correction_bias)) if spec.correction_bias else 0.0)
    return e_s, e_keys


def routing_weights(spec: MoESpec, scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The oracle's weight formula on given ids: scores[ids], renormalized (+1e-20), scaled once."""
    w = np.take_along_axis(scores, ids, axis=1)
    if spec.renormalize:
        w = w / (w.sum(axis=1, keepdims=True) + 1e-20)
    return w * spec.routed_scaling_factor


def weight_bounds(model: ErrorModel, spec: MoESpec, scores, e_scores, ids, w: np.ndarray) -> np.ndarray:
    s = np.take_along_axis(_finite(scores), ids, axis=1)
    es = np.take_along_axis(e_scores, ids, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(s > 0, es / s, 0.0)
    if spec.renormalize:
        rel = rel + rel.max(axis=1, keepdims=True, initial=0.0)
    return np.abs(_finite(w)) * (rel + 4 * model.c * model.u_fp32) + TINY["float32"]


def stored_weight_bounds(model: ErrorModel, w: np.ndarray, e_w: np.ndarray) -> np.ndarray:
    """Bound of router weights stored in the case dtype against the oracle's weights rounded to it
    (Capabilities.router_weights_dtype == "input"): round-to-nearest is monotone, so two values a and w
    rounded to the same grid differ by at most |a - w| plus one grid step, 2 u_store |w| (u_store is half a
    step; doubled already where the backend's cast truncates)."""
    return e_w + 2 * model.u_store * np.abs(_finite(w))


# ----------------------------------------------------------------------------------------------- experts
def _corners(spec: MoESpec, gate, up, e_g, e_u) -> np.ndarray:
    """max |act(gate +- e_g, up +- e_u) - act(gate, up)| over the corners of the box."""
    act = npo.activate(spec, gate, up)
    worst = np.zeros_like(act)
    for sg in (-1.0, 1.0):
        for su in (-1.0, 1.0) if up is not None else (0.0,):
            a = npo.activate(spec, gate + sg * e_g, None if up is None else up + su * e_u)
            worst = np.maximum(worst, np.abs(a - act))
    return worst


def gate_up_bounds(model: ErrorModel, spec: MoESpec, wv: WeightViews, x: np.ndarray, ids: np.ndarray):
    """(reference GateUp, e_act (T, k, I)) for GEMM1 + activation on exact x."""
    ref = npo.gate_up(spec, wv.val, x, ids)
    mag = npo.gate_up(spec, wv.abs, np.abs(x), ids)
    sq = npo.gate_up(spec, wv.sq, x * x, ids)
    # the product may be rounded before its bias is added: one more rounding, of |x @ w13.T|
    store = npo.gate_up(spec, wv.nobias, x, ids) if spec.expert_bias else ref
    u = model.u_store

    def e_pre(m_pre, s_pre, pre, dot_part):
        return _finite(
            model.dot(spec.hidden_size, m_pre, s_pre)
            + u * (np.abs(pre) + (np.abs(dot_part) if spec.expert_bias else 0.0))
        )

    e_g = e_pre(mag.gate_pre, sq.gate_pre, ref.gate_pre, store.gate_pre)
    e_u = None if ref.up_pre is None else e_pre(mag.up_pre, sq.up_pre, ref.up_pre, store.up_pre)
    gate, up = _finite(ref.gate_pre), None if ref.up_pre is None else _finite(ref.up_pre)
    e_act = _corners(spec, gate, up, e_g, e_u) + _evaluation(model, spec, gate, up, ref.act)
    return ref, e_act


def _evaluation(model: ErrorModel, spec: MoESpec, gate, up, act) -> np.ndarray:
    """Error of evaluating the activation itself: one rounding per operation in the storage dtype, and
    for GELU the cancellation in 1 + erf(g / sqrt 2) for negative g (absolute, ~16 fp32 ulps measured
    with torch's CPU erf: 2e-4 relative at g = -3.1)."""
    ops = ACT_OPS[
        "swiglu_oai" if spec.activation == "swiglu_oai" else ("gated" if spec.gated else "nongated")
    ]
    # The special functions themselves are evaluated in fp32 with the backend's math library: at the SiLU
    # minimum (g = -1.278) the propagated input error vanishes and this term is all that is left.
    e = (ops * model.u_store + model.fn_ulps * model.u_fp32) * np.abs(_finite(act))
    # A sigmoid (or exp) evaluated in the storage dtype underflows to 0 below its smallest subnormal: the
    # product act = g * sigmoid(alpha g) [* (up + 1)] then loses up to |g (up + 1)| * tiny. Measured: fp16
    # eager swiglu_oai at g = -14 (scenario beyond_clamp) gives 0 where the oracle has 1.4e-6.
    e = e + model.tiny * np.abs(_finite(gate)) * (1.0 if up is None else np.abs(_finite(up)) + 1.0)
    if spec.activation in ("gelu", "gelu_tanh"):
        e = e + 16 * max(model.u_store, model.u_fp32) * 0.5 * np.abs(gate) * (
            1.0 if up is None else np.abs(up)
        )
    return e


def down_bounds(
    model: ErrorModel,
    spec: MoESpec,
    wv: WeightViews,
    act: np.ndarray,
    ids: np.ndarray,
    e_act: np.ndarray | None = None,
):
    """(reference expert_out (T, k, H), e_eo) for GEMM2; e_act: errors of act to propagate."""
    ref = npo.down(spec, wv.val, act, ids)
    fa = _finite(act)
    e = model.dot(
        spec.intermediate_size, npo.down(spec, wv.abs, np.abs(fa), ids), npo.down(spec, wv.sq, fa * fa, ids)
    )
    if e_act is not None:
        e = e + np.sqrt(npo.down(spec, wv.sq, e_act * e_act, ids))
    e = stored(model, ref, e)
    if spec.expert_bias:  # the product may be rounded before b2 is added: one more rounding, of |act @ w2.T|
        e = e + model.u_store * np.abs(npo.down(spec, wv.nobias, act, ids))
    return ref, _finite(e)


def shared_bounds(model: ErrorModel, spec: MoESpec, wv: WeightViews, x: np.ndarray):
    """(reference shared_out (T, H), e_shared) for the shared MLP and its sigmoid gate."""
    ref = npo.shared_expert(spec, wv.val, x)
    if not spec.shared_width:
        return ref, np.zeros_like(ref)
    S, H, u = spec.shared_width, spec.hidden_size, model.u_store
    fx = _finite(x)
    w13, a13, s13 = (_f64(v.shared_w13) for v in (wv.val, wv.abs, wv.sq))
    h = fx @ w13.T
    e_h = model.dot(H, np.abs(fx) @ a13.T, (fx * fx) @ s13.T) + u * np.abs(h)
    cspec = spec.replace(w13_layout="concat")
    if spec.gated:
        gate, up, e_g, e_u = h[:, :S], h[:, S:], e_h[:, :S], e_h[:, S:]
    else:
        gate, up, e_g, e_u = h, None, e_h, None
    act = npo.activate(cspec, gate, up)
    e_act = _corners(cspec, gate, up, e_g, e_u) + _evaluation(model, cspec, gate, up, act)
    w2, a2, s2 = (_f64(v.shared_w2) for v in (wv.val, wv.abs, wv.sq))
    mlp = act @ w2.T
    e_mlp = (
        model.dot(S, np.abs(act) @ a2.T, (act * act) @ s2.T)
        + np.sqrt((e_act * e_act) @ s2.T)
        + u * np.abs(mlp)
    )
    if spec.shared_gate:
        g = _f64(wv.val.shared_gate)
        zg = fx @ g.T
        e_zg = model.dot(H, np.abs(fx) @ np.abs(g).T, (fx * fx) @ (g * g).T) + u * np.abs(zg)
        sg = npo.sigmoid(zg)
        e_mlp = sg * e_mlp + np.abs(mlp) * sg * (1 - sg) * e_zg + u * np.abs(sg * mlp)
    return ref, _finite(e_mlp) + u * np.abs(_finite(ref))


def combine_bounds(model: ErrorModel, spec: MoESpec, eo, tw, kept, so, e_eo=None, e_w=None, e_so=None):
    """(reference y (T, H), e_y) for the weighted sum over the k slots plus the shared output."""
    ref = npo.combine(spec, eo, tw, kept, so)
    feo, ftw = _finite(eo), _finite(tw)
    fso = None if so is None else np.abs(_finite(so))
    mag = npo.combine(spec, np.abs(feo), np.abs(ftw), kept, fso)
    e = model.c * math.sqrt(spec.top_k + 1) * model.u_store * mag
    if e_eo is not None:
        e = e + npo.combine(spec, e_eo, np.abs(ftw), kept, e_so)
    if e_w is not None:
        e = e + npo.combine(spec, np.abs(feo), e_w, kept, None)
    return ref, _finite(stored(model, ref, e)) + model.tiny
