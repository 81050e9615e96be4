"""Router stage: logits, scores, grouped / plain top-k and weights in one Triton launch.

The twin of `moe_cts.reference.numpy_oracle.route`; the kernel body is `_router_kernels.router_kernel`.
"""

from __future__ import annotations

import torch
import triton

from moe_cts.kernels import config as _config
from moe_cts.kernels import target_info
from moe_cts.kernels._common import INTERPRET, SUPPORTED_DTYPES, require_tensor
from moe_cts.kernels._router_kernels import router_kernel
from moe_cts.kernels.metadata import Routing
from moe_cts.reference.spec import MoESpec, MoEWeights, SpecError, check_input

#: Largest E one program can hold: the (BLOCK_T, BLOCK_E) fp32 tiles live in registers.
MAX_EXPERTS = 1024


def _warp_size() -> int:
    """Threads per warp: 64 on AMD CDNA, 32 on NVIDIA (kernels/target_info.py; the backend is read through
    moe_cts.kernels.config.backend, which the AOT capture in kernels/registry.py overrides per target)."""
    return target_info.backend_warp_size(_config.backend())


def _block_sizes(E: int, block_t: int | None) -> tuple[int, int, int, int, int]:
    """(BLOCK_T, BLOCK_E, BLOCK_H, num_warps, num_stages), bucketed so shapes share compiled kernels.

    BLOCK_E is E's next power of two (>= 16, tl.dot's minimum). BLOCK_H keeps one router tile at
    8192 elements (16 KiB bf16 at E = 256): two pipeline stages then fit AMD's 64 KiB LDS.
    Threads per program, not warps, are fixed: AOT for gfx942 measured 131072 B of LDS at E = 1024
    with 8 warps of 64 (512 threads) and 65536 B with 4 (256 threads, as 8 warps of 32 on NVIDIA)."""
    BLOCK_E = max(16, triton.next_power_of_2(E))
    BLOCK_H = max(16, min(128, 8192 // BLOCK_E))
    if block_t is not None:
        BLOCK_T = block_t
    elif INTERPRET:
        BLOCK_T = (
            64  # the interpreter pays per program, not per element (docs/bugs.md#facts-triton-interpreter)
        )
    else:
        BLOCK_T = 16 if BLOCK_E >= 256 else 32
    threads = 128 if BLOCK_T * BLOCK_E <= 4096 else 256
    num_warps = max(1, threads // _warp_size())
    num_stages = 1 if BLOCK_E >= 1024 else 2
    return BLOCK_T, BLOCK_E, BLOCK_H, num_warps, num_stages


def _check(spec: MoESpec, weights: MoEWeights, x: torch.Tensor, block_t: int | None) -> None:
    """Raise SpecError / NotSupportedError naming the field before any launch."""
    from moe_cts.kernels.capabilities import NotSupportedError

    check_input(spec, x)
    E, H = spec.num_experts, spec.hidden_size
    require_tensor("x", x, dtype=SUPPORTED_DTYPES)
    require_tensor("router", weights.router, shape=(E, H), dtype=SUPPORTED_DTYPES, device=x.device)
    for name, used in (("router_bias", spec.router_bias), ("correction_bias", spec.correction_bias)):
        t = getattr(weights, name)
        if used:
            require_tensor(name, t, shape=(E,), dtype=SUPPORTED_DTYPES, device=x.device)
        elif t is not None:
            raise SpecError(name, f"None (spec.{name} is False)", "a tensor")
    if E > MAX_EXPERTS:
        raise NotSupportedError(f"num_experts: the router kernel supports E <= {MAX_EXPERTS}, got {E}")
    if block_t is not None and (block_t < 16 or block_t & (block_t - 1)):
        raise SpecError("block_t", "a power of two >= 16 (tl.dot's minimum)", block_t)


def router_weights(weights: MoEWeights, x: torch.Tensor) -> MoEWeights:
    """What route() reads (router, router_bias, correction_bias) on x's device in x.dtype, as the float path
    stores them. w13 / w2 are placeholders route() never reads: a quantized layer's base holds float64
    dequantized experts, and converting or moving them to route would be wasted work."""
    cast = lambda t: None if t is None else t.to(device=x.device, dtype=x.dtype)
    r = cast(weights.router)
    return MoEWeights(
        router=r, w13=r, w2=r,
        router_bias=cast(weights.router_bias), correction_bias=cast(weights.correction_bias),
    )  # fmt: skip


def route(
    spec: MoESpec,
    weights: MoEWeights,
    x: torch.Tensor,
    *,
    block_t: int | None = None,
    allow_tf32: bool = False,
    keep_scores: bool = True,
) -> Routing:
    """Route each token to its top-k experts (the oracle's `route`, in fp32 on the device)::

        logits = x @ router.T + router_bias                 # fp32 accumulation, ieee unless allow_tf32
        scores = softmax(logits) | sigmoid(logits)
        ids    = topk(scores + correction_bias, k, groups)   # descending, NaN lowest, ties -> lower id
        w      = scores[ids]; w /= sum(w) + 1e-20 if renormalize; w *= routed_scaling_factor

        x (T, H) fp32|fp16|bf16 -> topk_ids (T, k) int32, topk_weights (T, k) fp32,
                                   logits (T, E) fp32, scores (T, E) fp32 (None if not keep_scores)

    No host synchronization; T = 0 launches nothing. `block_t` forces the token tile (tests)."""
    _check(spec, weights, x, block_t)
    T, E, H, k = x.shape[0], spec.num_experts, spec.hidden_size, spec.top_k
    dev = x.device
    ids = torch.empty((T, k), dtype=torch.int32, device=dev)
    topw = torch.empty((T, k), dtype=torch.float32, device=dev)
    logits = scores = None
    if keep_scores:
        logits = torch.empty((T, E), dtype=torch.float32, device=dev)
        scores = torch.empty((T, E), dtype=torch.float32, device=dev)
    if T == 0:
        return Routing(topk_ids=ids, topk_weights=topw, logits=logits, scores=scores)

    BLOCK_T, BLOCK_E, BLOCK_H, num_warps, num_stages = _block_sizes(E, block_t)
    rb = weights.router_bias if spec.router_bias else weights.router
    cb = weights.correction_bias if spec.correction_bias else weights.router
    router_kernel[(triton.cdiv(T, BLOCK_T),)](
        # inputs
        x_ptr=x, w_ptr=weights.router, rbias_ptr=rb, cbias_ptr=cb,
        # outputs
        ids_ptr=ids, topw_ptr=topw,
        logits_ptr=logits if keep_scores else topw, scores_ptr=scores if keep_scores else topw,
        # sizes and scalars
        T=T, E=E, H=H, K=k,
        group_size=E // spec.n_group, n_group=spec.n_group, topk_group=spec.topk_group,
        scaling=float(spec.routed_scaling_factor),
        # strides
        stride_x_t=x.stride(0), stride_x_h=x.stride(1),
        stride_w_e=weights.router.stride(0), stride_w_h=weights.router.stride(1),
        stride_rbias=rb.stride(0), stride_cbias=cb.stride(0),
        # constexprs
        SIGMOID=spec.scoring == "sigmoid",
        HAS_RBIAS=spec.router_bias,
        HAS_CBIAS=spec.correction_bias,
        GROUPED=spec.grouped,
        GROUP_TOP2=spec.group_score == "top2_sum",
        RENORMALIZE=spec.renormalize,
        STORE_SCORES=keep_scores,
        UPCAST=x.dtype != weights.router.dtype,
        INPUT_PRECISION="tf32" if allow_tf32 else "ieee",
        BLOCK_T=BLOCK_T, BLOCK_E=BLOCK_E, BLOCK_H=BLOCK_H,
        # launch options
        num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
    return Routing(topk_ids=ids, topk_weights=topw, logits=logits, scores=scores)
