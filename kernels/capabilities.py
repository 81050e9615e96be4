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
    # the down epilogue multiplies by the router weight in fp32 before its one cast (kernels/moe.py)
    "weight_before_cast": True,
    "host_sync_free": True,
    # quantized experts (spec.quant): fp8 w8a8 in kernels/fp8_moe.py; the fp8 flavours a target refuses are
    # data in kernels/target_info.FP8_REJECTED (NotSupportedError before any launch)
    "quant_schemes": ("fp8_per_tensor", "fp8_per_token", "fp8_block"),
    "fp8_formats": ("e4m3fn", "e4m3fnuz", "e5m2"),
    "quant_scale_formats": ("fp32", "ue8m0"),
    "quant_activations": ("fp8",),  # w8a8 only: weight-only fp8 (bf16 activations) is NotSupported
}


def quant_schemes() -> tuple[str, ...]:
    """The claimed quant methods: the fp8 ones, plus mxfp4 once kernels/mxfp4_moe.py exists."""
    import importlib.util

    mx = importlib.util.find_spec("moe_cts.kernels.mxfp4_moe") is not None
    return CAPABILITIES["quant_schemes"] + (("mxfp4",) if mx else ())


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
