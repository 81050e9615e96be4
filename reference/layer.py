"""The whole layer in float64, whatever the spec: the quantized oracles build on the float ones, so the choice
between them sits here, above both (no module imports its own caller).

    moe_forward(spec, weights, x)        NumPy oracle: numpy_oracle, or numpy_quant when spec.quant is set
    torch_moe_forward(spec, weights, x)  the independent PyTorch twin: torch_oracle, or torch_quant
"""

from __future__ import annotations

from moe_cts.reference import numpy_oracle, numpy_quant, torch_oracle, torch_quant
from moe_cts.reference.numpy_oracle import MoEResult
from moe_cts.reference.spec import MoESpec


def moe_forward(spec: MoESpec, weights, x) -> MoEResult:
    """route -> permute -> gate_up -> down -> combine (+ shared) in float64 NumPy; quantized experts when
    spec.quant says so (weights: MoEWeights, quantized under the spec, or QuantizedMoEWeights)."""
    return (numpy_quant if spec.quant is not None else numpy_oracle).moe_forward(spec, weights, x)


def torch_moe_forward(spec: MoESpec, weights, x):
    """The same layer through the PyTorch float64 oracle (an independent formulation)."""
    return (torch_quant if spec.quant is not None else torch_oracle).moe_forward(spec, weights, x)
