"""Implementations under test and the contract they keep.

Built in: "triton" (our kernels), "torch-eager" (model-code style loop), and the deliberately broken ones of
broken.py (each reproduces one shipped bug, for the suite's own tests). Third parties write an adapter against
the names exported here (docs/implementing.md) and register it under the entry-point group
"moe_cts.implementations"; registry.py finds them all by name.
"""

from moe_cts.conformance.engine.protocol import (
    ENTRY_POINT_GROUP,
    FORWARD,
    STAGE_METHODS,
    Capabilities,
    Implementation,
)
from moe_cts.reference.errors import NotSupportedError

__all__ = [
    "ENTRY_POINT_GROUP",
    "FORWARD",
    "STAGE_METHODS",
    "Capabilities",
    "Implementation",
    "NotSupportedError",
]
