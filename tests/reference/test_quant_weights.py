"""Quantized weights: the producer's codes and scales have the declared layout, representable weights
survive quantization exactly, and weights that do not fit the spec are refused naming the field."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moe_cts.reference import MoESpec, MoEWeights, QuantizedMoEWeights, QuantScheme, SpecError
from moe_cts.reference.qweights import quantize_tensor


def test_block_scales_have_ceil_shapes_at_unaligned_sizes():
    qt = quantize_tensor(torch.randn(3, 200, 136, dtype=torch.float64), QuantScheme.fp8_block())
    assert tuple(qt.codes.shape) == (3, 200, 136) and tuple(qt.scales.shape) == (3, 2, 2)
    assert qt.scales.dtype == torch.float32 and qt.block == (128, 128)


def test_mxfp4_packs_two_codes_per_byte_with_one_e8m0_scale_per_32():
    qt = quantize_tensor(torch.randn(2, 8, 64, dtype=torch.float64), QuantScheme.mxfp4())
    assert tuple(qt.codes.shape) == (2, 8, 32) and tuple(qt.scales.shape) == (2, 8, 2)
    assert qt.scales.dtype == torch.uint8 and qt.shape == (2, 8, 64)


def test_block_scale_rule_and_exact_values():
    """One 2 x 2 block with amax 7: scale 7/448 = 1/64; 1.1 rounds to 72/64; a zero block gets scale 1."""
    w = torch.tensor([[[7.0, 1.1, 0.0], [0.5, -3.0, 0.0]]], dtype=torch.float64)
    qt = quantize_tensor(w, QuantScheme.fp8_block((2, 2)))
    np.testing.assert_array_equal(qt.scales.numpy(), [[[1 / 64, 1.0]]])
    np.testing.assert_array_equal(qt.dequantize(), [[[7.0, 1.125, 0.0], [0.5, -3.0, 0.0]]])


@pytest.mark.parametrize("rounding", ["ceil", "floor", "threshold_1p75"])
def test_mxfp4_scale_rounding_modes_pick_the_e8m0_code(rounding):
    """amax 7 over 32 elements: ceil -> 2^ceil(log2(7/6)) = 2 (code 128); floor -> 2^(2-2) = 1 (code 127,
    7 clips to 6); threshold_1p75 -> 7 = 1.75 * 4 rounds up -> 2 (code 128)."""
    w = torch.zeros(1, 1, 32, dtype=torch.float64)
    w[0, 0, 0] = 7.0
    qt = quantize_tensor(w, QuantScheme.mxfp4(scale_rounding=rounding))
    code = {"ceil": 128, "floor": 127, "threshold_1p75": 128}[rounding]
    assert int(qt.scales[0, 0, 0]) == code
    assert qt.dequantize()[0, 0, 0] == {"ceil": 8.0, "floor": 6.0, "threshold_1p75": 8.0}[rounding]


def test_representable_weights_survive_quantization_exactly():
    spec = MoESpec(8, 4, 3, 2, quant=QuantScheme.fp8_block((4, 4)))
    w = MoEWeights.random(spec, seed=0)
    once = QuantizedMoEWeights.quantize(spec, w)
    twice = QuantizedMoEWeights.quantize(spec, once.base)
    np.testing.assert_array_equal(twice.w13.dequantize(), once.w13.dequantize())
    np.testing.assert_array_equal(twice.w2.dequantize(), once.w2.dequantize())


def test_static_schemes_need_their_activation_scales():
    spec = MoESpec(8, 4, 3, 2, quant=QuantScheme.fp8_per_tensor(activation_scale="static"))
    with pytest.raises(SpecError) as err:
        QuantizedMoEWeights.quantize(spec, MoEWeights.random(spec, seed=0))
    assert err.value.field == "a13_scale"


def test_weights_quantized_under_another_scheme_are_refused():
    spec = MoESpec(8, 4, 3, 2, quant=QuantScheme.fp8_block((4, 4)))
    other = spec.replace(quant=QuantScheme.fp8_block((2, 4)))
    qw = QuantizedMoEWeights.quantize(other, MoEWeights.random(spec, seed=0))
    with pytest.raises(SpecError) as err:
        qw.validate(spec)
    assert err.value.field == "w13.block"


def test_quantizing_needs_finite_weights():
    spec = MoESpec(8, 4, 3, 2, quant=QuantScheme.fp8_per_token())
    w = MoEWeights.random(spec, seed=0)
    w = w.replace(w2=w.w2.clone().fill_(float("nan")))
    with pytest.raises(SpecError, match="weights"):
        QuantizedMoEWeights.quantize(spec, w)
