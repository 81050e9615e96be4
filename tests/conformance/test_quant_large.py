"""quant_large's device path (torch float64, one expert at a time) against its numpy path (adversarial_matrix,
quantize_tensor, dequantize): the same codes, scales and case-dtype values, bit for bit. Run here with the
torch path forced on the CPU; on a GPU host the same code runs on CUDA."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from moe_cts.conformance.engine import quant_device, quant_large
from moe_cts.conformance.engine.cases import Case
from moe_cts.reference import formats, presets
from moe_cts.reference.quant import QuantScheme

CPU = torch.device("cpu")
BASE = presets.scaled("deepseek-v3", hidden_size=64, intermediate_size=32, num_experts=32)
FP8 = (20, 40)  # N, K: partial edge blocks along both axes for the (8, 16) blocks
MX = (6, 80)  # K = 80: two 32-wide scale groups and a partial 16-wide one

SCHEMES = {
    "block-e4m3fn": (QuantScheme.fp8_block((8, 16)), FP8),
    "block-ue8m0-ceil": (QuantScheme.fp8_block((8, 16), scale_format="ue8m0"), FP8),
    "block-ue8m0-floor": (QuantScheme.fp8_block((8, 16), scale_format="ue8m0", scale_rounding="floor"), FP8),
    "block-ue8m0-1p75": (
        QuantScheme.fp8_block((8, 16), scale_format="ue8m0", scale_rounding="threshold_1p75"),
        FP8,
    ),
    "block-e4m3fnuz": (QuantScheme.fp8_block((8, 16), fp8_format="e4m3fnuz"), FP8),
    "block-e5m2": (QuantScheme.fp8_block((8, 16), fp8_format="e5m2"), FP8),
    "block-one-column": (QuantScheme.fp8_block((3, 1)), FP8),  # subnormal element in row 1
    "per-token": (QuantScheme.fp8_per_token(), FP8),
    "per-tensor": (QuantScheme.fp8_per_tensor(), FP8),
    "mxfp4-ceil": (QuantScheme.mxfp4(), MX),
    "mxfp4-floor": (QuantScheme.mxfp4(scale_rounding="floor"), MX),
    "mxfp4-1p75": (QuantScheme.mxfp4(scale_rounding="threshold_1p75"), MX),
}
BITS = {
    torch.bfloat16: torch.int16,
    torch.float16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}


def _draws(shape, experts: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn((experts, *shape), generator=torch.Generator().manual_seed(seed))


def _assert_same(a, da, b, db):
    """Codes, scales and dequantized values equal bit for bit (the sign of zeros included)."""
    assert (a.fmt, a.block, a.scale_dtype) == (b.fmt, b.block, b.scale_dtype)
    assert a.codes.dtype == b.codes.dtype and torch.equal(a.codes, b.codes)
    assert a.scales.dtype == b.scales.dtype and torch.equal(a.scales, b.scales)
    assert da.dtype == db.dtype and torch.equal(da.view(BITS[da.dtype]), db.view(BITS[db.dtype]))


@pytest.mark.parametrize("fmt", sorted(formats.FORMATS))
def test_torch_encode_gives_formats_encode_codes(fmt):
    """Every finite value, the midpoints between neighbours (ties to the even code), values past the
    largest one (saturation), zeros of both signs and values that round to zero."""
    f = formats.get(fmt)
    vals = formats.decode(f, np.arange(1 << f.bits))
    v = np.unique(vals[np.isfinite(vals)])
    x = np.concatenate([v, (v[1:] + v[:-1]) / 2, [f.max * 1.01, -f.max * 7, 0.0, -0.0, 1e-30, -1e-30]])
    got = quant_device._encode(f, torch.from_numpy(x))
    np.testing.assert_array_equal(got.numpy(), formats.encode(f, x))


@pytest.mark.parametrize(
    ("name", "dtype"),
    [(n, torch.bfloat16) for n in SCHEMES] + [("block-e4m3fn", torch.float16), ("mxfp4-ceil", torch.float32)],
)
def test_device_path_gives_the_numpy_codes_scales_and_values(name, dtype):
    q, shape = SCHEMES[name]
    spec, w = BASE.replace(quant=q), _draws(shape)
    a, da = quant_large.quantize_routed(spec, w, dtype, torch_path=False)
    b, db = quant_large.quantize_routed(spec, w, dtype, device=CPU, torch_path=True)
    _assert_same(a, da, b, db)
    # the pattern reached the cases it is made for: expert 0's zero block (scale 1, zero values) and its
    # tiny block (a scale ~1e-12 below the others)
    (bn, bk), (N, K) = a.block, shape
    nb, kb = -(-N // bn), -(-K // bk)
    s = b.scale_values()
    if nb * kb >= 3 and q.method != "fp8_per_tensor":
        assert s[0, nb - 1, 0] == 1.0 and not db[0, (nb - 1) * bn :, :bk].any()
        assert s[0, 0, kb - 1] < 1e-9 * s[0].max()


@pytest.mark.parametrize("name", ["block-e4m3fn", "block-ue8m0-ceil", "per-token", "mxfp4-ceil"])
def test_a_slice_gets_the_pattern_of_its_place(name):
    """Experts 2 and 3 alone: the numpy slice's outputs, and those of the whole matrix's experts 2 and 3."""
    q, shape = SCHEMES[name]
    spec, w = BASE.replace(quant=q), _draws(shape)
    a, da = quant_large._quantize_slice(spec, w[2:4], 2, torch.bfloat16)
    b, db = quant_device.quantize_experts(spec, w[2:4], 2, torch.bfloat16, CPU)
    _assert_same(a, da, b, db)
    whole, dw = quant_large.quantize_routed(spec, w, torch.bfloat16, device=CPU, torch_path=True)
    assert torch.equal(whole.codes[2:4], b.codes) and torch.equal(whole.scales[2:4], b.scales)
    assert torch.equal(dw[2:4], db)


def test_a_cuda_case_device_picks_the_device_path():
    assert quant_device.use_device_path(torch.device("cuda", 0), None) and quant_device.use_device_path(
        "cuda", None
    )
    assert not quant_device.use_device_path("cpu", None) and not quant_device.use_device_path(None, None)
    assert quant_device.use_device_path("cpu", True) and not quant_device.use_device_path("cuda", False)


DS = presets.scaled("deepseek-v3", hidden_size=256, intermediate_size=128, num_experts=32)
GPT = presets.scaled("gpt-oss-120b", hidden_size=64, intermediate_size=64, num_experts=32)


@pytest.mark.parametrize(
    "case",
    [Case(DS.replace(quant=QuantScheme.fp8_block()), 6, "bfloat16", seed=3),
     Case(DS.replace(quant=QuantScheme.fp8_block(scale_format="ue8m0")), 6, "float16", seed=5),
     Case(GPT.replace(quant=QuantScheme.mxfp4()), 6, "bfloat16", seed=4)],
    ids=["ds-fp8", "ds-ue8m0", "gpt-mxfp4"],
)  # fmt: skip
def test_lean_inputs_are_the_same_on_either_path(case):
    """Routed and shared experts (DeepSeek-V3 has one shared expert) of the whole lean build."""
    quant_large._CACHE.clear()
    want = quant_large.lean_quantized_inputs(case, "cpu")
    quant_large._CACHE.clear()
    got = quant_large.lean_quantized_inputs(case, "cpu", torch_path=True)
    quant_large._CACHE.clear()
    for f in dataclasses.fields(want.weights):
        a, b = getattr(want.weights, f.name), getattr(got.weights, f.name)
        assert (a is None) == (b is None), f.name
        if a is not None:
            assert torch.equal(a.view(BITS[a.dtype]), b.view(BITS[b.dtype])), f.name
    names = ["w13", "w2"] + (["shared_w13", "shared_w2"] if case.spec.shared_width else [])
    for n in names:
        a, b = getattr(want.qweights, n), getattr(got.qweights, n)
        _assert_same(a, getattr(want.qweights.base, n), b, getattr(got.qweights.base, n))
    assert torch.equal(want.x, got.x)


DEVICES = [CPU] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES, ids=str)
@pytest.mark.parametrize(
    "name,scheme",
    [
        ("deepseek-v3", QuantScheme.fp8_block()),
        ("deepseek-v3", QuantScheme.fp8_block(scale_format="ue8m0")),
        ("gpt-oss-120b", QuantScheme.mxfp4()),
    ],
    ids=["fp8-block", "fp8-block-ue8m0", "mxfp4"],
)
def test_quantized_inputs_device_fields_equal_the_host_quantization(name, scheme, device):
    """quant_cases.quantized_inputs quantizes on a CUDA device (quantize_fields_on_device): its codes, scales
    and float64 base equal QuantizedMoEWeights.quantize of the numpy adversarial weights, routed and shared
    experts alike. On a GPU host the cuda parameter runs the real device arithmetic."""
    from moe_cts.conformance.engine.quant_cases import adversarial_matrix
    from moe_cts.reference.qweights import QUANT_FIELDS, QuantizedMoEWeights
    from moe_cts.reference.spec import MoEWeights

    H, I = (256, 128) if scheme.method != "mxfp4" else (64, 96)
    spec = presets.scaled(name, hidden_size=H, intermediate_size=I, num_experts=16).replace(quant=scheme)
    if spec.shared_width:
        spec = spec.replace(shared_intermediate_size=I)
    case = Case(spec, 3, "bfloat16", seed=5)
    _, tensors = case.build_tensors()
    qts, deq = quant_device.quantize_fields_on_device(spec, tensors, device)
    f64 = {n: t.double() for n, t in tensors.items()}
    for n in QUANT_FIELDS:
        if n in f64:
            f64[n] = torch.from_numpy(adversarial_matrix(f64[n].numpy(), spec))
    host = QuantizedMoEWeights.quantize(spec, MoEWeights(**f64))
    assert set(qts) == {n for n in QUANT_FIELDS if getattr(host, n) is not None} and qts
    for n, qt in qts.items():
        _assert_same(qt, deq[n], getattr(host, n), getattr(host.base, n))
