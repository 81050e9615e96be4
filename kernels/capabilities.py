"""What the Triton kernels support, as data the conformance harness reads (never a silent difference).

`CAPABILITIES` lists the stages and the spec features they implement; `check_supported(spec)` raises
`NotSupportedError` naming the field for anything outside it, before any launch.
"""

from __future__ import annotations

from typing import Any

import torch

from moe_cts.reference.errors import NotSupportedError
from moe_cts.reference.spec import GATED_ACTIVATIONS, LAYOUTS, NONGATED_ACTIVATIONS, MoESpec

CAPABILITIES: dict[str, Any] = {
    "stages": ("route", "permute", "align", "gate_up", "down", "shared_expert", "combine", "fused_moe"),
    "dtypes": ("float32", "float16", "bfloat16"),
    "accumulation": "float32",
    "fp32_dot_precision": ("ieee", "tf32"),  # ieee unless the caller passes allow_tf32=True
    "layouts": LAYOUTS,
    "gated_activations": GATED_ACTIVATIONS,
    "nongated_activations": NONGATED_ACTIVATIONS,
    "expert_bias": True,
    "strided_weights": True,
    "scoring": ("softmax", "sigmoid"),
    "router_bias": True,
    "correction_bias": True,
    "grouped_topk": True,
    "group_scores": ("max", "top2_sum"),
    "renormalize": True,
    "routed_scaling_factor": True,
    "shared_experts": True,
    "shared_gate": True,
    "capacity_dropping": False,
    "local_expert_mask": True,
    "deterministic": True,
    "batch_invariant": True,
    "host_sync_free": True,
}

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_supported(spec: MoESpec) -> None:
    """Raise NotSupportedError for a spec feature outside CAPABILITIES."""
    if spec.capacity_factor is not None and not CAPABILITIES["capacity_dropping"]:
        raise NotSupportedError(
            f"capacity_factor: capacity dropping is not implemented by the Triton kernels; "
            f"expected None, got {spec.capacity_factor}"
        )


def check_dtype(name: str, dtype: torch.dtype) -> None:
    if dtype not in DTYPES:
        raise NotSupportedError(f"{name}.dtype: expected one of {CAPABILITIES['dtypes']}, got {dtype}")
