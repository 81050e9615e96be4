"""moe-cts reference: the MoE layer spec and its float64 oracles.

`moe_cts.reference.moe_forward` (any spec, quantized ones too: reference/layer.py) and the stage functions
(`route`, `permute`, `gate_up`, `down`, `shared_expert`, `combine`) are the NumPy float64 oracle;
`moe_cts.reference.torch_oracle` holds the independent PyTorch twin (`layer.torch_moe_forward` for any spec).
`moe_cts.reference.formats` has the fp8/fp4/E8M0 codecs, `moe_cts.reference.quant` the quantization
schemes (`MoESpec.quant`), `moe_cts.reference.qweights` quantized weights. `moe_cts.reference.presets` has the real models' full-size specs; `moe_cts.reference.hf` reads transformers configs and blocks.
"""

from moe_cts.reference import formats, layer, presets, quant, torch_oracle
from moe_cts.reference.errors import NotSupportedError, SpecError
from moe_cts.reference.layer import moe_forward
from moe_cts.reference.numpy_oracle import (
    GateUp,
    MoEResult,
    Permutation,
    Routing,
    activate,
    combine,
    down,
    gate_up,
    permute,
    route,
    shared_expert,
)
from moe_cts.reference.quant import QuantScheme
from moe_cts.reference.qweights import QuantizedMoEWeights, QuantTensor
from moe_cts.reference.spec import MoESpec, MoEWeights, check_input, weight_shapes

#: the transformers readers under their functional names
spec_from_hf_config = MoESpec.from_hf_config
weights_from_hf = MoEWeights.from_hf

__all__ = [
    "GateUp",
    "MoEResult",
    "MoESpec",
    "MoEWeights",
    "NotSupportedError",
    "Permutation",
    "QuantScheme",
    "QuantTensor",
    "QuantizedMoEWeights",
    "Routing",
    "SpecError",
    "activate",
    "check_input",
    "combine",
    "down",
    "formats",
    "gate_up",
    "layer",
    "moe_forward",
    "permute",
    "presets",
    "quant",
    "route",
    "shared_expert",
    "spec_from_hf_config",
    "torch_oracle",
    "weight_shapes",
    "weights_from_hf",
]
