"""Inputs of quantized cases (case.spec.quant set): adversarial weights, their codes and scales, snapped x.

    tensors (float32, cases.Case.build_tensors)
      -> adversarial_weights: per scale block, x 2^e with e = (3 nb + kb + 2 e_idx) % 7 - 3, so neighbouring
         blocks (along K and along N) and the transposed block have different scales: a scale read from the
         wrong block is off by a power of two, never by chance right (random weights repeat exponents).
         Per matrix also: one tiny block (x 1e-12), one all-zero block, one subnormal element per block.
      -> QuantizedMoEWeights.quantize (reference/qweights.py): codes + scales; the base expert matrices
         are the exact dequantized values (float64)
    x (float32)
      -> adversarial_x: token 0's last activation group all zeros (the epsilon policy), token 1's last
         group tiny (1e-12); only when a row has >= 2 groups (a zero row would make the router tie)
      -> snap (dynamic scales): x' = quantize_act(x) (the oracle's own activation quantization), so GEMM1's
         requantization is idempotent; static per-tensor scales are set at half the amax and x is left as
         drawn, so its largest values saturate

    field of CaseInputs   quantized case
    weights               MoEWeights in the case dtype: router and biases as drawn, expert matrices the
                          dequantized values rounded to the case dtype (for readers that ignore `qweights`)
    qweights              QuantizedMoEWeights: codes (uint8, CPU) + scales, base in float64

Block patterns apply to the blocks of QuantScheme.block_for; per-tensor schemes get one exponent per
expert instead (their only block), and no tiny or zero block (it would zero the whole expert).
"""

from __future__ import annotations

import numpy as np
import torch

from moe_cts.reference import formats
from moe_cts.reference import numpy_quant as npq
from moe_cts.reference.qweights import QUANT_FIELDS, QuantizedMoEWeights
from moe_cts.reference.spec import MoESpec, MoEWeights

TINY_BLOCK = 1e-12  # scale of the tiny block / group: scales far below fp32's 1 but still normal
STATIC_FRACTION = 0.5  # static activation scale = STATIC_FRACTION * amax / fmt.max: the top values saturate


def _block_exponents(nb: int, kb: int, e: int) -> np.ndarray:
    """(nb, kb) exponents in [-3, 3]; neighbours along either axis and transposed blocks differ."""
    i, j = np.meshgrid(np.arange(nb), np.arange(kb), indexing="ij")
    return (3 * i + j + 2 * e) % 7 - 3


def adversarial_matrix(w: np.ndarray, spec: MoESpec, first: int = 0) -> np.ndarray:
    """(..., N, K) float64 weights reshaped block by block (module docstring); leading dims are experts,
    the first of them expert `first` (a slice of the experts gets the pattern of its place in the whole)."""
    # torch twin, one expert on the device: quant_device._adversarial_expert (test_quant_large.py holds
    # the two equal bit for bit): a change here goes there too
    q = spec.quant
    *lead, N, K = w.shape
    bn, bk = q.block_for(N, K)
    nb, kb = -(-N // bn), -(-K // bk)
    w = w.reshape(-1, N, K).copy()
    elem = formats.get(q.weight_format)
    for e in range(w.shape[0]):
        ex = _block_exponents(nb, kb, first + e)
        full = np.repeat(np.repeat(ex, bn, 0), bk, 1)[:N, :K]
        w[e] *= np.ldexp(1.0, full)
        per_tensor = nb == 1 and kb == 1
        _subnormal_elements(w[e], bn, bk, elem)
        if first + e == 0 and not per_tensor and nb * kb >= 3:
            w[e, :bn, (kb - 1) * bk :] *= TINY_BLOCK  # the last K block of the first row block: tiny
            w[e, (nb - 1) * bn :, :bk] = 0.0  # the first K block of the last row block: all zero
    return w.reshape(*lead, N, K)


def _subnormal_elements(w: np.ndarray, bn: int, bk: int, elem: formats.Format) -> None:
    """In place, per (bn, bk) block of w (N, K) with >= 2 elements: its element flat[1] (row 0, column 1; row
    1, column 0 in a one-column block) becomes amax / elem.max * 2^(emin - 1) with that element's sign, one
    element deep in the subnormal range of the element format. All blocks at once (blocks are disjoint, so
    each amax is the one the block had before its own change, as block by block)."""
    N, K = w.shape
    nb, kb = -(-N // bn), -(-K // bk)
    pad = np.zeros((nb * bn, kb * bk))
    pad[:N, :K] = np.abs(w)
    amax = pad.reshape(nb, bn, kb, bk).max(axis=(1, 3))  # zero padding never wins over |w| >= 0
    r0, c0 = np.meshgrid(np.arange(nb) * bn, np.arange(kb) * bk, indexing="ij")
    height, width = np.minimum(N - r0, bn), np.minimum(K - c0, bk)
    r, c = np.where(width >= 2, r0, r0 + 1), np.where(width >= 2, c0 + 1, c0)
    ok = height * width > 1
    r, c, amax = r[ok], c[ok], amax[ok]
    w[r, c] = np.copysign(amax / elem.max * np.ldexp(0.5, elem.emin), w[r, c])


def adversarial_x(spec: MoESpec, x: torch.Tensor) -> None:
    """In place: a zero and a tiny last activation group (tokens 0 and 1) when a row has >= 2 groups."""
    q = spec.quant
    if q.method != "fp8_block" or not q.quantizes_activations:
        return
    g, H = q.act_group, spec.hidden_size
    if -(-H // g) < 2:
        return
    start = (-(-H // g) - 1) * g
    if x.shape[0] >= 1:
        x[0, start:] = 0.0
    if x.shape[0] >= 2:
        x[1, start:] *= TINY_BLOCK


def _fp32(v: float) -> float:
    return float(np.float32(v))


def _static_scales(spec: MoESpec, qw: QuantizedMoEWeights, x: np.ndarray) -> tuple[float, float]:
    """(a13, a2): half of the amax of x and of the activation over every (token, expert) pair."""
    fmax = formats.get(spec.quant.fp8_format).max
    T, E = x.shape[0], spec.num_experts
    a13 = _fp32(STATIC_FRACTION * max(float(np.abs(x).max(initial=0.0)), 1e-3) / fmax)
    ids = np.tile(np.arange(E), (max(T, 1), 1))
    xs = x if T else np.zeros((1, spec.hidden_size))
    act = npq.gate_up(spec.replace(top_k=E, n_group=1, topk_group=1), qw.replace(a13_scale=a13), xs, ids).act
    a2 = _fp32(STATIC_FRACTION * max(float(np.nanmax(np.abs(act), initial=0.0)), 1e-3) / fmax)
    return a13, a2


def dynamic_x(
    spec: MoESpec, x: torch.Tensor, a13_scale: float | None, dtype: torch.dtype, device
) -> torch.Tensor:
    """x of a dynamic-scale quantized case on the device: adversarial_x, then snapped to the oracle's own
    activation quantization when GEMM1 quantizes its input (module docstring)."""
    adversarial_x(spec, x)
    xs = x.double().numpy()
    if "gemm1" in spec.quant.quantize_inputs and xs.shape[0]:
        xs = npq.quantize_act(spec, xs, a13_scale)
    return torch.from_numpy(xs).to(dtype).to(device)


def quantized_inputs(
    spec: MoESpec, x: torch.Tensor, tensors: dict[str, torch.Tensor], dtype: torch.dtype, device
) -> tuple[torch.Tensor, MoEWeights, QuantizedMoEWeights]:
    """(x, weights, qweights) of a quantized case from its float32 draws (module docstring). On a CUDA device
    Case.build_inputs takes quant_device.device_quantized_inputs instead (the same outputs)."""
    f64 = {n: t.double() for n, t in tensors.items()}
    for n in QUANT_FIELDS:
        if n in f64:
            f64[n] = torch.from_numpy(adversarial_matrix(f64[n].numpy(), spec))
    base = MoEWeights(**f64).validate(spec)
    adversarial_x(spec, x)
    static = spec.quant.activation_scale == "static"
    qw = QuantizedMoEWeights.quantize(
        spec, base, a13_scale=1.0 if static else None, a2_scale=1.0 if static else None
    )
    xs = x.double().numpy()
    if static:  # provisional 1.0 above, now half the amax of x and of the activation
        a13, a2 = _static_scales(spec, qw, xs)
        qw = qw.replace(a13_scale=a13, a2_scale=a2).validate(spec)
    if "gemm1" in spec.quant.quantize_inputs and xs.shape[0] and not static:  # static: keep x past max
        xs = npq.quantize_act(spec, xs, qw.a13_scale)
    xt = torch.from_numpy(xs).to(dtype).to(device)
    weights = qw.base.map(lambda t: t.to(dtype).to(device)).validate(spec)
    return xt, weights, qw
