"""moe-cts reference: the MoE layer spec and its float64 oracles.

`reference.moe_forward` and the stage functions (`route`, `permute`, `gate_up`, `down`, `shared_expert`,
`combine`) are the NumPy float64 oracle; `reference.torch_oracle` holds the independent PyTorch twin.
`reference.presets` has the real models' full-size specs; `reference.hf` reads transformers configs and blocks.
"""

from reference import presets, torch_oracle
from reference.hf import spec_from_hf_config, weights_from_hf
from reference.numpy_oracle import (
    GateUp,
    MoEResult,
    Permutation,
    Routing,
    activate,
    combine,
    down,
    gate_up,
    moe_forward,
    permute,
    route,
    shared_expert,
)
from reference.spec import MoESpec, MoEWeights, SpecError, check_input, weight_shapes

__all__ = [
    "GateUp",
    "MoEResult",
    "MoESpec",
    "MoEWeights",
    "Permutation",
    "Routing",
    "SpecError",
    "activate",
    "check_input",
    "combine",
    "down",
    "gate_up",
    "moe_forward",
    "permute",
    "presets",
    "route",
    "shared_expert",
    "spec_from_hf_config",
    "torch_oracle",
    "weight_shapes",
    "weights_from_hf",
]
