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
    device, one expert at a time (quant_device.quantize_experts): the same codes, scales and case-dtype
    values, bit for bit (tests/conformance/test_quant_large.py)
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
threads scale on the GPU host is not measured. The device path (H200, session 7: DeepSeek-V3 T = 1 in
145 s with the whole build) holds one expert's float64 values and row chunks of quant_device.ROW_CHUNK
values on the device (DeepSeek-V3's w13 expert: under 1 GB); the host holds the same outputs as the numpy
path.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import torch

from moe_cts.conformance.engine import quant_device as qd
from moe_cts.conformance.engine.cases import Case, CaseInputs
from moe_cts.conformance.engine.quant_cases import adversarial_matrix, dynamic_x
from moe_cts.reference.errors import SpecError
from moe_cts.reference.qweights import QuantizedMoEWeights, QuantTensor, quantize_tensor
from moe_cts.reference.spec import MoEWeights

#: experts per slice (one task of the thread pool)
EXPERT_SLICE = 1
#: host bytes the slices in flight may hold: a slice holds ~SLICE_COPIES float64 copies of its values
#: (the adversarial copy, W / scale, the codes' float work, the dequantized values); DeepSeek-V3's w13
#: expert is 29 M values: 1.4 GB per thread, 16 threads in 24 GB
WORK_BYTES = 24 * 2**30
SLICE_COPIES = 6
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
    torch_path=True, any device) the torch path computes the same outputs there (quant_device.quantize_experts)."""
    if qd.use_device_path(device, torch_path):
        return qd.quantize_experts(spec, w, 0, dtype, torch.device("cpu" if device is None else device))
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
    shared_names = [n for n in ("shared_w13", "shared_w2") if n in f64]
    if qd.use_device_path(device, torch_path):  # each shared matrix as expert 0, as adversarial_matrix's
        shared, deq = qd.quantize_fields_on_device(spec, {n: tensors[n] for n in shared_names}, device)
        f64.update(deq)
    else:
        shared = {n: quantize_tensor(adversarial_matrix(f64[n].numpy(), spec), q) for n in shared_names}
        f64.update({n: torch.from_numpy(qt.dequantize()) for n, qt in shared.items()})
    base = MoEWeights(**f64, **{n: deq for n, (_, deq) in routed.items()})
    qw = QuantizedMoEWeights(base=base, **{n: qt for n, (qt, _) in routed.items()}, **shared).validate(spec)
    xt = dynamic_x(spec, x, qw.a13_scale, dt, device)
    weights = base.map(lambda t: t.to(dt).to(device)).validate(spec)
    return CaseInputs(spec=spec, x=xt, weights=weights, qweights=qw)
