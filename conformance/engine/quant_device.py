"""The device twin of quant_cases' weight path (adversarial pattern, quantize_tensor, dequantize) in torch
float64, one expert at a time: the same codes, scales and values as the numpy path, bit for bit
(tests/conformance/test_quant_large.py, on the CPU and, on a GPU host, on CUDA), in seconds on a GPU where the
host takes minutes (DeepSeek-V3's 256 experts: ~57 CPU-minutes; the certify run's DeepSeek-V3-width case: ~2).

    quantize_experts(spec, w (E, N, K) float32 draws, e0, dtype, device)
        -> (QuantTensor (E, N, K) on the host, dequantized (E, N, K) in dtype on the host)
    quantize_fields_on_device(spec, tensors, device)
        -> ({QUANT_FIELDS: QuantTensor}, {QUANT_FIELDS: exact dequantized float64}) of a case's draws
    device_quantized_inputs(spec, x, tensors, dtype, device)
        -> quant_cases.quantized_inputs's (x, weights, qweights) for dynamic activation scales

Used by quant_large (full-size cases) and by Case.build_inputs on a CUDA device (ROCm's too).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from moe_cts.conformance.engine.quant_cases import TINY_BLOCK, dynamic_x
from moe_cts.reference import formats
from moe_cts.reference import torch_quant as tq
from moe_cts.reference.errors import SpecError
from moe_cts.reference.qweights import QUANT_FIELDS, QuantizedMoEWeights, QuantTensor
from moe_cts.reference.spec import MoEWeights

#: values per row chunk of the rounding (round_sat keeps ~6 float64 temporaries of its input)
ROW_CHUNK = 1 << 22

# The numpy path's steps in torch float64, on the device, one expert at a time. Bit for bit the same:
#   - powers of two are built from their bits (torch_quant.pow2), never by pow: a device's pow need not be exact;
#   - a tensor divided by a Python float is, on CUDA, a multiplication by the float's reciprocal (one
#     rounding more); _div divides by a device tensor instead, an IEEE division as numpy's;
#   - every other step is one IEEE operation per element (multiply, divide, max, compare), or exact
#     (the rounded values and their products with the scales have at most 4 + 24 significant bits).
# The E8M0 codes and fp32 scale values are made on the host from the device's float64 scales by the
# numpy functions themselves (the scales are 1/(bn bk) of the values).


def use_device_path(device, torch_path: bool | None) -> bool:
    """The device path when forced (torch_path), else when the case device is CUDA (ROCm's too)."""
    if torch_path is not None:
        return torch_path
    return device is not None and torch.device(device).type == "cuda"


def _div(a: torch.Tensor, v: float) -> torch.Tensor:
    """a / v, a true division on every device (module comment above)."""
    return a / torch.tensor(v, dtype=torch.float64, device=a.device)


def _row_chunks(N: int, K: int) -> list[tuple[int, int]]:
    """Row ranges of an (N, K) matrix of about ROW_CHUNK values each."""
    step = max(1, ROW_CHUNK // max(K, 1))
    return [(r, min(r + step, N)) for r in range(0, N, step)]


def _expand(b: torch.Tensor, bn: int, bk: int, r0: int, r1: int, K: int) -> torch.Tensor:
    """Rows r0:r1 (r1 - r0, K) of the matrix whose (bn, bk) blocks hold the values of b (nb, kb)."""
    rows = torch.arange(r0, r1, device=b.device) // bn
    cols = torch.arange(K, device=b.device) // bk
    return b.index_select(0, rows).index_select(1, cols)


def _block_amax_t(w: torch.Tensor, bn: int, bk: int) -> torch.Tensor:
    """(nb, kb) max |w| per (bn, bk) block of w (N, K); the zero padding never wins (qweights._block_amax)."""
    N, K = w.shape
    nb, kb = -(-N // bn), -(-K // bk)
    a = w.abs()
    if (nb * bn, kb * bk) != (N, K):  # partial edge blocks only: the pad is one more copy of the expert
        a = torch.nn.functional.pad(a, (0, kb * bk - K, 0, nb * bn - N))
    return a.view(nb, bn, kb, bk).amax(dim=(1, 3))


def _adversarial_expert(w: torch.Tensor, q, elem: formats.Format, e: int) -> None:
    """In place: w (N, K) float64, expert e of a routed matrix, reshaped as quant_cases.adversarial_matrix
    reshapes it (its block exponents, subnormal elements, and expert 0's tiny and zero blocks)."""
    N, K = w.shape
    bn, bk = q.block_for(N, K)
    nb, kb = -(-N // bn), -(-K // bk)
    i, j = torch.meshgrid(torch.arange(nb, device=w.device), torch.arange(kb, device=w.device), indexing="ij")
    p = tq.pow2((3 * i + j + 2 * e) % 7 - 3)  # quant_cases._block_exponents
    for r0, r1 in _row_chunks(N, K):
        w[r0:r1] *= _expand(p, bn, bk, r0, r1, K)
    # quant_cases._subnormal_elements: all blocks at once, each from its own amax before the change
    amax = _block_amax_t(w, bn, bk)
    top, left = i * bn, j * bk
    height, width = (N - top).clamp(max=bn), (K - left).clamp(max=bk)
    wide = width >= 2
    r, c = torch.where(wide, top, top + 1), torch.where(wide, left + 1, left)
    ok = height * width > 1
    r, c, amax = r[ok], c[ok], amax[ok]
    w[r, c] = torch.copysign(_div(amax, elem.max) * math.ldexp(0.5, elem.emin), w[r, c])
    if e == 0 and not (nb == 1 and kb == 1) and nb * kb >= 3:
        w[:bn, (kb - 1) * bk :] *= TINY_BLOCK
        w[(nb - 1) * bn :, :bk] = 0.0


def _encode(elem: formats.Format, x: torch.Tensor) -> torch.Tensor:
    """uint8 codes (one per element) of finite float64 x: formats.encode's codes (RTNE, saturating)."""
    r = tq.round_sat(elem.name, x)
    if elem.neg_zero:  # round_sat returns +0; formats.encode keeps the sign of a negative rounded to zero
        r = torch.copysign(r, x)
    if elem.name == "e2m1":  # codes 0-7: the magnitudes in increasing order; 8-15: their negatives
        mags = torch.tensor(tq._E2M1[:8], dtype=torch.float64, device=x.device)
        return (torch.searchsorted(mags, r.abs()) + 8 * torch.signbit(r)).to(torch.uint8)
    return r.float().to(tq._FP8[elem.name]).view(torch.uint8)  # exact: r is a value of the format


def _quantize_expert(w: torch.Tensor, q, elem: formats.Format, dtype: torch.dtype):
    """quantize_tensor + dequantize of one expert's float64 weights w (N, K) on the device: (codes (N, K)
    uint8 one per element, float64 scales (nb, kb), dequantized (N, K) in dtype), all on the device."""
    N, K = w.shape
    bn, bk = q.block_for(N, K)
    amax = _block_amax_t(w, bn, bk)
    if q.scale_format == "ue8m0":
        s = tq._ue8m0(amax, elem.max, elem.emax, q.scale_rounding)
    else:
        s = _div(amax, elem.max).float().double()
    s = torch.where(amax == 0, 1.0, s)  # an all-zero block: scale 1 (quantize_tensor)
    codes = torch.empty((N, K), dtype=torch.uint8, device=w.device)
    deq = torch.empty((N, K), dtype=dtype, device=w.device)
    for r0, r1 in _row_chunks(N, K):
        full = _expand(s, bn, bk, r0, r1, K)
        c = _encode(elem, w[r0:r1] / full)
        codes[r0:r1] = c
        deq[r0:r1] = (tq.decode(elem.name, c) * full).to(dtype)  # QuantTensor.dequantize, then the cast
    return codes, s, deq


def quantize_experts(spec, w: torch.Tensor, e0: int, dtype: torch.dtype, device: torch.device):
    """_quantize_slice's (QuantTensor (E, N, K), dequantized (E, N, K) in dtype) of experts e0 .. e0 + E - 1
    from their float32 draws w (E, N, K) on the host, computed on `device` one expert at a time; the
    outputs are host tensors."""
    q = spec.quant
    elem = formats.get(q.weight_format)
    E, N, K = w.shape
    bn, bk = q.block_for(N, K)
    packed = elem.name == "e2m1"
    if packed and K % 2:
        raise SpecError("weights.shape", "an even K for e2m1 packing", tuple(w.shape))
    codes = torch.empty((E, N, K // 2 if packed else K), dtype=torch.uint8)
    scales = torch.empty((E, -(-N // bn), -(-K // bk)), dtype=torch.uint8 if packed else torch.float32)
    deq = torch.empty((E, N, K), dtype=dtype)
    for i in range(E):
        x = w[i].to(device).double()  # a copy: the draws stay as they are
        if not bool(torch.isfinite(x).all()):
            raise SpecError("weights", "finite values to quantize", "NaN or inf")
        _adversarial_expert(x, q, elem, e0 + i)
        c, s, d = _quantize_expert(x, q, elem, dtype)
        del x
        codes[i] = (c[:, 0::2] | (c[:, 1::2] << 4)) if packed else c  # formats.pack_e2m1
        deq[i] = d
        s = s.cpu().numpy()
        # e8m0_encode raises unless every scale is a power of two in E8M0's range: it checks _ue8m0's
        # log2 and pow on the device too (fp8 ue8m0 scales are stored as float32 values)
        e8 = formats.e8m0_encode(s) if q.scale_format == "ue8m0" else None
        scales[i] = torch.from_numpy(e8 if packed else s.astype(np.float32))
    return QuantTensor(codes, scales, elem.name, (bn, bk), "e8m0" if packed else "float32"), deq


def quantize_fields_on_device(spec, tensors: dict[str, torch.Tensor], device):
    """({field: QuantTensor}, {field: exact dequantized float64 (host)}) of the QUANT_FIELDS among a case's
    float32 draws, quantized on `device` expert by expert: quant_cases.quantized_inputs's weights, the same
    bits as its numpy path (tests/conformance/test_quant_large.py), without the host minutes (the
    DeepSeek-V3-width must-pass case spent ~2 of its ~2 minutes there: the certify run's longest case)."""
    dev = torch.device(device)
    qts, deq = {}, {}
    for n in QUANT_FIELDS:
        w = tensors.get(n)
        if w is None:
            continue
        stack = w if w.dim() == 3 else w[None]  # a shared expert: a one-expert stack, expert 0's pattern
        qt, d = quantize_experts(spec, stack, 0, torch.float64, dev)
        if w.dim() == 2:
            qt, d = QuantTensor(qt.codes[0], qt.scales[0], qt.fmt, qt.block, qt.scale_dtype), d[0]
        qts[n], deq[n] = qt, d
    return qts, deq


def device_quantized_inputs(spec, x: torch.Tensor, tensors: dict[str, torch.Tensor], dtype, device):
    """quant_cases.quantized_inputs for dynamic activation scales with the weights quantized on `device`
    (same outputs; static scales need the host path's activation amax and stay there)."""
    if spec.quant is None or spec.quant.activation_scale == "static":
        raise SpecError("spec.quant", "a quantized scheme with dynamic or no activation scales", spec.quant)
    qts, deq = quantize_fields_on_device(spec, tensors, device)
    f64 = {n: t.double() for n, t in tensors.items() if n not in deq}
    qw = QuantizedMoEWeights(base=MoEWeights(**f64, **deq).validate(spec), **qts).validate(spec)
    xt = dynamic_x(spec, x, qw.a13_scale, dtype, device)
    return xt, qw.base.map(lambda t: t.to(dtype).to(device)).validate(spec), qw
