"""The weighted combine of per-assignment expert outputs (stage twin of moe_cts.reference.combine).

y[t] = shared_out[t] + sum_{j = 0..k-1} (kept[t, j] ? topk_weights[t, j] * expert_out[t, j] : 0)

expert_out (T, k, H)   topk_weights (T, k) float32   kept (T, k) bool   shared_out (T, H) | None
y (T, H) in expert_out.dtype; fp32 sum in slot order, one cast at the end, no atomics.
"""

from __future__ import annotations

import torch
import triton

from moe_cts.kernels._combine_kernels import combine_kernel
from moe_cts.kernels._common import SUPPORTED_DTYPES, pdl_options, require_tensor
from moe_cts.kernels.capabilities import check_supported
from moe_cts.kernels.metadata import SLOT_END
from moe_cts.reference.spec import MoESpec

#: H block of one combine program; 1024 fp32 lanes keep 4 warps busy without spilling.
COMBINE_BLOCK_H = 1024


def launch_combine(
    expert_out: torch.Tensor,
    slot_of: torch.Tensor,
    y: torch.Tensor,
    *,
    topk_weights: torch.Tensor | None = None,
    shared_out: torch.Tensor | None = None,
    slot_end: int = SLOT_END,
    pdl: int = 0,
) -> None:
    """y = shared + sum of kept rows (weighted by topk_weights if given); expert_out (T, k, H). Row t*k+j is
    kept iff 0 <= slot_of[t*k+j] < slot_end (AlignMeta.combine_slots). pdl: launch in a programmatic-dependent
    chain (config.pdl of the forward's dtype class)."""
    T, k, H = expert_out.shape
    if T == 0:
        return
    block_h = min(COMBINE_BLOCK_H, triton.next_power_of_2(H))
    w = topk_weights if topk_weights is not None else slot_of.view(T, k)
    sh = shared_out if shared_out is not None else y
    combine_kernel[(T, triton.cdiv(H, block_h))](
        # inputs
        eo_ptr=expert_out, w_ptr=w, slot_ptr=slot_of, shared_ptr=sh,
        # outputs
        y_ptr=y,
        # sizes
        H=H,
        # strides
        stride_eo_t=expert_out.stride(0), stride_eo_j=expert_out.stride(1), stride_eo_h=expert_out.stride(2),
        stride_w_t=w.stride(0), stride_w_j=w.stride(1), stride_sh_t=sh.stride(0), stride_sh_h=sh.stride(1),
        stride_y_t=y.stride(0), stride_y_h=y.stride(1), slot_end=slot_end,
        # constexprs
        HAS_SHARED=shared_out is not None, WEIGHTED=topk_weights is not None, BLOCK_H=block_h, TOP_K=k, PDL=pdl,
        # launch options
        num_warps=4, **pdl_options(pdl),
    )  # fmt: skip


def combine(
    spec: MoESpec,
    expert_out: torch.Tensor,
    topk_weights: torch.Tensor,
    kept: torch.Tensor,
    shared_out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Stage twin of moe_cts.reference.combine (module docstring); the weights are applied here in fp32."""
    check_supported(spec)
    T, k, H = topk_weights.shape[0] if topk_weights.dim() == 2 else -1, spec.top_k, spec.hidden_size
    require_tensor("topk_weights", topk_weights, shape=(T, k), dtype=torch.float32, launch=True)
    dev = topk_weights.device
    require_tensor("expert_out", expert_out, shape=(T, k, H), dtype=SUPPORTED_DTYPES, device=dev)
    require_tensor("kept", kept, shape=(T, k), dtype=torch.bool, device=dev)
    if shared_out is not None:
        require_tensor("shared_out", shared_out, shape=(T, H), dtype=SUPPORTED_DTYPES, device=dev)
    y = torch.empty((T, H), dtype=expert_out.dtype, device=dev)
    slot_of = torch.where(kept.reshape(-1), 0, -1).to(torch.int32)
    launch_combine(expert_out, slot_of, y, topk_weights=topk_weights, shared_out=shared_out)
    return y
