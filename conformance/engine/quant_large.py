"""Inputs of quantized cases too large for a float64 copy of every expert (DeepSeek-V3: 256 x 44 M parameters,
90 GB in float64): the same codes, scales and x as quant_cases.quantized_inputs, built a slice of experts at a
time, with no float64 base of the routed experts.

    case.draw_weights(g), case.draw_x(g)      float32 draws, as Case.build_inputs (same generator, same bits);
                                              the routed experts' codes are kept for the next case of the
                                              same spec, dtype and seed (_CACHE: the weights do not depend on T)
    for each slice of EXPERT_SLICE experts    (threads: numpy releases the GIL in its loops)
        adversarial_matrix(w[e0:e1], first=e0)    the block pattern of the experts' places in the whole
        quantize_tensor                            codes + scales, per expert (blocks never span experts)
        dequantize -> case dtype                   the values a reader of `weights` sees
    or, when the case device is CUDA (or torch_path=True), the same three steps in torch float64 on the
    device, one expert at a time (_quantize_torch): the same codes, scales and case-dtype values, bit for bit
    (tests/conformance/test_quant_large.py)
    shared experts, router, biases            whole, as quantized_inputs builds them (shared: the device
                                              path too, as one expert 0)

    field                    quantized_inputs                  lean_quantized_inputs
    qweights.w13 / w2        QuantTensor (E, N, K) codes       the same codes and scales
    qweights.base.w13 / w2   float64 exact dequantized         case dtype (rounded): never read by an oracle;
                                                               sampled_experts.py dequantizes the touched
                                                               experts' codes itself
    qweights.base (others)   float64 from the draws            the same
    weights                  base in the case dtype            the same values

Static activation scales need the activation of every (token, expert) pair: refused (SpecError).

Host cost at full size (DeepSeek-V3, bf16): float32 draws 45 GB, codes 11 GB, case-dtype experts 22.5 GB,
slices in flight <= WORK_BYTES: ~92 GB at the peak (w13's slices). quantize_tensor ran at 3.3 M values/s
per thread on a CI core (DeepSeek-V3: ~57 CPU-minutes; gpt-oss-120b MXFP4 at 1.8 M/s: ~29); how far the
threads scale on the GPU host is not measured yet. The device path holds one expert's float64 values and
row chunks of ROW_CHUNK values on the device (DeepSeek-V3's w13 expert: under 1 GB); the host holds the
same outputs as the numpy path.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from moe_cts.conformance.engine.cases import Case, CaseInputs
from moe_cts.conformance.engine.quant_cases import TINY_BLOCK, adversarial_matrix, adversarial_x
from moe_cts.reference import formats
from moe_cts.reference import numpy_quant as npq
from moe_cts.reference import torch_quant as tq
from moe_cts.reference.errors import SpecError
from moe_cts.reference.qweights import QUANT_FIELDS, QuantizedMoEWeights, QuantTensor, quantize_tensor
from moe_cts.reference.spec import MoEWeights

#: experts per slice (one task of the thread pool)
EXPERT_SLICE = 1
#: host bytes the slices in flight may hold: a slice holds ~SLICE_COPIES float64 copies of its values
#: (the adversarial copy, W / scale, the codes' float work, the dequantized values); DeepSeek-V3's w13
#: expert is 29 M values: 1.4 GB per thread, 16 threads in 24 GB
WORK_BYTES = 24 * 2**30
SLICE_COPIES = 6
#: values per row chunk of the device path's rounding (round_sat keeps ~6 float64 temporaries of its input)
ROW_CHUNK = 1 << 22
ROUTED = ("w13", "w2")
#: the last case's routed experts (routed_experts): a driver running T = 1 ... 4096 quantizes them once
_CACHE: dict = {}


def _quantize_slice(spec, w: torch.Tensor, e0: int, dtype: torch.dtype):
    """(QuantTensor, dequantized values in dtype) of experts e0.. of one routed matrix (float32 draws)."""
    qt = quantize_tensor(adversarial_matrix(w.double().numpy(), spec, first=e0), spec.quant)
    return qt, torch.from_numpy(qt.dequantize()).to(dtype)


def quantize_routed(
    spec,
    w: torch.Tensor,
    dtype: torch.dtype,
    workers: int | None = None,
    *,
    device=None,
    torch_path: bool | None = None,
):
    """(QuantTensor (E, N, K), dequantized (E, N, K) in dtype) of one routed matrix, slice by slice, each
    written into preallocated outputs (no second copy of the whole). On a CUDA `device` (or with
    torch_path=True, any device) the torch path computes the same outputs there (_quantize_torch)."""
    if _use_torch(device, torch_path):
        return _quantize_torch(spec, w, 0, dtype, torch.device("cpu" if device is None else device))
    E = w.shape[0]
    first, deq0 = _quantize_slice(spec, w[:EXPERT_SLICE], 0, dtype)
    n0 = first.codes.shape[0]
    codes = torch.empty((E, *first.codes.shape[1:]), dtype=first.codes.dtype)
    scales = torch.empty((E, *first.scales.shape[1:]), dtype=first.scales.dtype)
    deq = torch.empty((E, *deq0.shape[1:]), dtype=dtype)
    codes[:n0], scales[:n0], deq[:n0] = first.codes, first.scales, deq0

    def fill(e0: int) -> None:
        qt, d = _quantize_slice(spec, w[e0 : e0 + EXPERT_SLICE], e0, dtype)
        e1 = e0 + qt.codes.shape[0]
        codes[e0:e1], scales[e0:e1], deq[e0:e1] = qt.codes, qt.scales, d

    starts = list(range(EXPERT_SLICE, E, EXPERT_SLICE))
    per = EXPERT_SLICE * w[0].numel() * 8 * SLICE_COPIES
    workers = workers or max(1, min(len(starts), os.cpu_count() or 1, WORK_BYTES // per))
    pool = ThreadPoolExecutor(workers)
    try:
        list(pool.map(fill, starts))
    finally:  # a case timeout (SIGALRM in this thread) drops the slices not started
        pool.shutdown(wait=False, cancel_futures=True)
    return QuantTensor(codes, scales, first.fmt, first.block, first.scale_dtype), deq


# ------------------------------------------------------------------------------------ the device path
# The numpy path's steps in torch float64, on the device, one expert at a time. Bit for bit the same:
#   - powers of two are built from their bits (torch_quant.pow2), never by pow: a device's pow need not be exact;
#   - a tensor divided by a Python float is, on CUDA, a multiplication by the float's reciprocal (one
#     rounding more); _div divides by a device tensor instead, an IEEE division as numpy's;
#   - every other step is one IEEE operation per element (multiply, divide, max, compare), or exact
#     (the rounded values and their products with the scales have at most 4 + 24 significant bits).
# The E8M0 codes and fp32 scale values are made on the host from the device's float64 scales by the
# numpy functions themselves (the scales are 1/(bn bk) of the values).


def _use_torch(device, torch_path: bool | None) -> bool:
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


def _quantize_torch(spec, w: torch.Tensor, e0: int, dtype: torch.dtype, device: torch.device):
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
        qt, d = _quantize_torch(spec, stack, 0, torch.float64, dev)
        if w.dim() == 2:
            qt, d = QuantTensor(qt.codes[0], qt.scales[0], qt.fmt, qt.block, qt.scale_dtype), d[0]
        qts[n], deq[n] = qt, d
    return qts, deq


def routed_experts(case: Case, device=None, *, torch_path: bool | None = None):
    """(routed {name: (QuantTensor, dequantized in the case dtype)}, the other weight draws (float32), the
    generator state after the weights) of the case, from _CACHE when only T (or the scenario, which edits
    x and the router only) differs from the last case built. device / torch_path: quantize_routed's (the
    key leaves them out: both paths give the same outputs)."""
    key = (json.dumps(case.spec.to_dict(), sort_keys=True), case.dtype, case.seed)
    if key not in _CACHE:
        _CACHE.clear()  # one entry: DeepSeek-V3's codes and case-dtype experts are ~34 GB
        g = torch.Generator().manual_seed(case.seed)
        tensors = case.draw_weights(g)
        routed = {}
        for name in ROUTED:  # one matrix at a time: its float32 draws go as soon as it is quantized
            w = tensors.pop(name)
            routed[name] = quantize_routed(
                case.spec, w, case.torch_dtype, device=device, torch_path=torch_path
            )
        _CACHE[key] = (routed, tensors, g.get_state())
    return _CACHE[key]


def lean_quantized_inputs(case: Case, device, *, torch_path: bool | None = None) -> CaseInputs:
    """CaseInputs of a quantized case with the same codes, scales and x as Case.build_inputs, and no
    float64 copy of the routed experts (module docstring). torch_path: quantize_routed's (None: the device
    path on a CUDA device)."""
    spec, dt = case.spec, case.torch_dtype
    q = spec.quant
    if q is None or q.activation_scale == "static":
        raise SpecError("spec.quant", "a quantized scheme with dynamic or no activation scales", q)
    routed, drawn, state = routed_experts(case, device, torch_path=torch_path)
    g = torch.Generator()
    g.set_state(state)
    tensors = {n: t.clone() for n, t in drawn.items()}
    x = case.draw_x(g, tensors)  # the scenario edits x and the router tensors only
    f64 = {n: t.double() for n, t in tensors.items()}
    shared = {}
    for n in ("shared_w13", "shared_w2"):
        if n not in f64:
            continue
        if _use_torch(device, torch_path):  # a one-expert stack: expert 0's pattern, as adversarial_matrix's
            qt, d = _quantize_torch(spec, tensors[n][None], 0, torch.float64, torch.device(device))
            shared[n] = QuantTensor(qt.codes[0], qt.scales[0], qt.fmt, qt.block, qt.scale_dtype)
            f64[n] = d[0]
        else:
            shared[n] = quantize_tensor(adversarial_matrix(f64[n].numpy(), spec), q)
            f64[n] = torch.from_numpy(shared[n].dequantize())
    base = MoEWeights(**f64, **{n: deq for n, (_, deq) in routed.items()})
    qw = QuantizedMoEWeights(base=base, **{n: qt for n, (qt, _) in routed.items()}, **shared).validate(spec)
    adversarial_x(spec, x)
    xs = x.double().numpy()
    if "gemm1" in q.quantize_inputs and xs.shape[0]:
        xs = npq.quantize_act(spec, xs, qw.a13_scale)
    xt = torch.from_numpy(xs).to(dt).to(device)
    weights = base.map(lambda t: t.to(dt).to(device)).validate(spec)
    return CaseInputs(spec=spec, x=xt, weights=weights, qweights=qw)
