"""One rounding of the weighted expert output: the exact check behind Capabilities.weight_before_cast
(docs/bugs.md#bug-02-router-weight-after-cast).

A claimant multiplies each expert's fp32 output eo by its fp32 router weight w and casts once. With top_k = 1
and no shared expert that one store is the layer output:

    claimed    y = rnd(w * eo)              one rounding to the 16-bit output dtype
    after-cast y = rnd(w * rnd(eo))         the expert output stored first (model code; the fault)

No error bound tells them apart on random data: the oracle knows eo only to within the rounding of the stored
activation, about half a 16-bit step. On integer experts (scenario integer_experts: x, w13 and w2 small
integers, router entries in {-1, 0, 1} / 8, relu) every logit, product and sum is a multiple of 2^-8 below
2^16 or an integer below 2^24: exact in fp32 in any order, and exact in 16 bits wherever an implementation
stores the logits or the activation. So eo is known exactly, and w (an fp32 softmax of exact logits) to a
few fp32 ulps, e_w (weight_error):

    v = w * eo,  m = |eo| e_w + 2 u_fp32 |v| + tiny          (the fp32 product rounds once more)
    determined where rnd(v - m) == rnd(v + m)                (rounding is monotone: every value within the
                                                              bound stores that one number)
    a claimant's output must equal rnd(v) on every determined element, bit for bit

rnd is the device's cast: round to nearest even, or toward zero where the accumulator profile says bf16 casts
truncate (the Triton interpreter, data/device_matrix.json bf16_cast). Measured on the must-pass case
weight-single-rounding (fp16, T=16, H=32, I=16, E=8, interpreter): 509 of 512 elements determined; the
unmutated Triton kernels match all, the weight applied after a cast misses 101, torch-eager (which does not
claim the order, so is not held to it) would miss 172 (docs/recall.md).

    forward_check(session, y, mask) -> None (does not apply) | (ok, message)
    applies(caps, case)             -> None when the structure allows the check, else why not
    exact_experts(spec, wv, x, ids) -> (eo (T, k, H), why_not): eo exact, or None and the reason
    round_to(v, dtype, mode)        float64 -> the dtype's value, "rne" or "truncate" (toward zero)
"""

from __future__ import annotations

import numpy as np

import moe_cts.reference.numpy_oracle as npo
from moe_cts.conformance.engine.devices import accumulator_profile

#: explicit mantissa bits and smallest normal exponent of the 16-bit output dtypes
MANTISSA = {"bfloat16": 7, "float16": 10}
EMIN = {"bfloat16": -126, "float16": -14}
MAX_FINITE = {"bfloat16": 3.3895313892515355e38, "float16": 65504.0}
ROUNDINGS = ("rne", "truncate")
#: below this every fp32 sum of integers is exact, in any order
EXACT_FP32 = 2.0**24


def round_to(v: np.ndarray, dtype: str, mode: str) -> np.ndarray:
    """float64 values rounded to `dtype` (bfloat16 | float16): to nearest even ("rne") or toward zero
    ("truncate", what a cast that drops the low bits gives). Subnormals keep the smallest normal step;
    overflow is not handled (callers judge only finite, in-range values)."""
    if mode not in ROUNDINGS:
        raise ValueError(f"mode: expected one of {ROUNDINGS}, got {mode!r}")
    v = np.asarray(v, dtype=np.float64)
    _, ex = np.frexp(v)  # v = f 2^ex with 0.5 <= |f| < 1: floor(log2 |v|) = ex - 1, exact (log2 is not)
    step = np.exp2(np.maximum(ex - 1, EMIN[dtype]) - MANTISSA[dtype])
    q = v / step  # exact: a power-of-two scale
    q = np.round(q) if mode == "rne" else np.trunc(q)  # np.round rounds halves to even
    return np.where(v == 0, v, q * step)


def cast_mode(profile: dict, dtype: str) -> str:
    """How the device casts fp32 to `dtype`: bf16 per the accumulator profile, fp16 to nearest even."""
    return "truncate" if dtype == "bfloat16" and profile.get("bf16_cast") == "truncate" else "rne"


def applies(caps, case) -> str | None:
    """None when the claim and the case's structure make the output one rounding of w * eo."""
    spec = case.spec
    checks = [
        (caps.weight_before_cast, "weight_before_cast not claimed"),
        (case.dtype in MANTISSA, f"dtype {case.dtype}: the cast of an fp32 output rounds nothing"),
        (spec.top_k == 1, f"top_k {spec.top_k}: a sum of k terms rounds again"),
        (not spec.shared_width, "shared experts: the shared output joins the sum"),
        (not spec.expert_bias, "expert biases"),
        (spec.quant is None, "quantized experts"),
        (not spec.gated and spec.activation == "relu", "activation: only relu is exact in every format"),
        (spec.capacity_factor is None and spec.local_experts is None, "dropped or non-local assignments"),
        (not (spec.router_bias or spec.correction_bias), "router biases"),
    ]
    return next((why for ok, why in checks if not ok), None)


def _integral(a: np.ndarray, scale: float = 1.0) -> bool:
    a = np.asarray(a, dtype=np.float64) * scale
    return bool(np.isfinite(a).all() and (a == np.round(a)).all())


def _exact_16bit(a: np.ndarray) -> bool:
    """Every value representable in bf16 and fp16 alike: stored in either, it stays itself."""
    return all(np.array_equal(round_to(a, d, m), a) for d in MANTISSA for m in ROUNDINGS)


def exact_experts(spec, wv, x: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The expert outputs (T, k, H) when every implementation computes them and the router logits exactly,
    else (None, why not). Exact: integer x, w13, w2 and router entries in multiples of 2^-8, every dot below
    2^24 (in those units), the activations and logits representable in 16 bits."""
    router = npo._np(wv.val.router)
    if not (_integral(x) and _integral(npo._np(wv.val.w13)) and _integral(npo._np(wv.val.w2))):
        return None, "x, w13 and w2 are not all integers"
    if (
        not _integral(router, 2.0**8)
        or (np.abs(x) @ np.abs(router).T).max(initial=0.0) * 2.0**8 >= EXACT_FP32
    ):
        return None, "router logits not exact in fp32"
    if not _exact_16bit(x @ router.T):
        return None, "router logits not exact in 16 bits"
    gu, mag = npo.gate_up(spec, wv.val, x, ids), npo.gate_up(spec, wv.abs, np.abs(x), ids)
    if mag.gate_pre.max(initial=0.0) >= EXACT_FP32 or not _exact_16bit(gu.act):
        return None, "activations not exact in 16 bits"
    if npo.down(spec, wv.abs, np.abs(gu.act), ids).max(initial=0.0) >= EXACT_FP32:
        return None, "expert outputs reach 2^24"
    return npo.down(spec, wv.val, gu.act, ids), ""


def weight_error(model, spec, w: np.ndarray) -> np.ndarray:
    """Bound of fp32 router weights computed from exact logits: exp (fn_ulps), a sum of E terms, a division,
    the renormalization and the scaling factor, each within one fp32 ulp, times the model's c."""
    ulps = model.fn_ulps + spec.num_experts + 4 + (spec.top_k + 1 if spec.renormalize else 0)
    return model.c * ulps * model.u_fp32 * np.abs(w) + float(np.finfo(np.float32).tiny)


def forward_check(session, y: np.ndarray, mask: np.ndarray) -> tuple[bool, str] | None:
    """(ok, message) of the single-rounding check on the forward output y (T, H), mask (T, H or 1) judged;
    None where it does not apply (not claimed, or the case cannot tell one rounding from two)."""
    case, model = session.case, session.model
    if applies(session.caps, case) is not None:
        return None
    eo, _ = exact_experts(session.spec, session.wv, session.x, session.ids)
    if eo is None:
        return None
    w = session.tw[:, 0:1]
    e_w = weight_error(model, session.spec, w)
    eo = eo[:, 0, :]
    v = w * eo
    m = np.abs(eo) * e_w + 2 * model.u_fp32 * np.abs(v) + model.tiny
    mode = cast_mode(accumulator_profile(session.device), case.dtype)
    want = round_to(v, case.dtype, mode)
    judged = np.broadcast_to(mask, v.shape) & np.isfinite(v) & (np.abs(v) + m < MAX_FINITE[case.dtype])
    det = judged & (round_to(v - m, case.dtype, mode) == round_to(v + m, case.dtype, mode))
    y = np.asarray(y, dtype=np.float64)
    bad = det & (y != want)
    n_det, n_bad = int(det.sum()), int(bad.sum())
    head = (
        f"weight_before_cast: {n_det} of {int(judged.sum())} elements have one determined rounding ({mode})"
    )
    if not n_bad:
        return True, f"{head}, all equal to rnd(w * expert_out)"
    t, h = (int(i) for i in np.argwhere(bad)[0])
    twice = round_to(w[t, 0] * round_to(eo[t, h], case.dtype, mode), case.dtype, mode)
    return False, (
        f"{head}; {n_bad} differ from that one rounding, as if the router weight came after a cast. "
        f"First at [{t}, {h}]: got {float(y[t, h])!r}, want rnd(w * eo) = {float(want[t, h])!r} "
        f"(w = {w[t, 0]:.9g}, eo = {eo[t, h]:.9g} exact; rnd(w * rnd(eo)) = {float(twice)!r})"
    )
