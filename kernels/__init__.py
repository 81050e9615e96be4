"""moe-cts production Triton MoE kernels: the layer and its stages, twins of `reference`'s.

    fused_moe(spec, weights, x, *, config=None, batch_invariant=False) -> y (T, H)
    route(spec, weights, x) -> Routing            align(spec, topk_ids, block_m) -> AlignMeta
    permute(spec, topk_ids)                       gate_up(spec, weights, x, topk_ids) -> act (T, k, I)
    down(spec, weights, act, topk_ids) -> (T, k, H)   shared_expert(spec, weights, x) -> (T, H)
    combine(spec, expert_out, topk_weights, kept, shared_out) -> (T, H)

`CAPABILITIES` / `NotSupportedError` (moe_cts.kernels.capabilities) say what is implemented.
"""

from __future__ import annotations

# `from moe_cts.kernels.align import align` rebinds the package attribute `align` from the submodule to the
# function (same for combine): `moe_cts.kernels.align(...)` is the stage, the module is moe_cts.kernels.align via importlib.
from moe_cts.kernels.align import align, permute
from moe_cts.kernels.capabilities import CAPABILITIES, NotSupportedError
from moe_cts.kernels.combine import combine
from moe_cts.kernels.grouped_gemm import down, gate_up, shared_expert
from moe_cts.kernels.metadata import AlignMeta, Routing
from moe_cts.kernels.moe import fused_moe
from moe_cts.kernels.router import route

__all__ = [
    "CAPABILITIES",
    "AlignMeta",
    "NotSupportedError",
    "Routing",
    "align",
    "combine",
    "down",
    "fused_moe",
    "gate_up",
    "permute",
    "route",
    "shared_expert",
]
