"""Reproducer: triton_kernels' routing cannot take a top_k that is not a power of two (DeepSeek-V2/V4 top-6,
any top-3). Uses triton_kernels' own API only; moe-cts is not imported.

    python tests/impls/repro_triton_kernels_nonpow2_topk.py

On a GPU it calls `triton_kernels.routing.routing(logits, k)` for k = 4 and k = 6: k = 4 routes, k = 6 raises
triton's CompilationError "arange's range must be a power of 2" at the first call. Without a GPU it compiles
the same kernel ahead of time for sm90 (triton.compile needs no GPU), which fails the same way.

Cause: `_topk_forward` (triton_kernels/topk_details/_topk_forward.py) builds `offs_y_n = tl.arange(0,
N_EXPTS_ACT)` with N_EXPTS_ACT = k, and `_routing_compute_indx` builds `tl.arange(0, N_EXPTS_ACT * BLOCK_M)`;
tl.arange needs a power-of-two length. vLLM works around the second one by monkey-patching a padded copy of
the kernel (`_patch_legacy_routing_for_nonpow2_topk` in vllm 0.33.0 gpt_oss_triton_kernels_moe.py, "fails to
compile when top_k is not a power of 2 (6 * 32 = 192)").
"""

from __future__ import annotations

import os

import torch
import triton


def route_on_gpu(k: int, n_tokens: int = 16, n_expts: int = 32) -> str:
    from triton_kernels.routing import routing

    logits = torch.randn(n_tokens, n_expts, device="cuda")
    try:
        rd, _, _ = routing(logits, k)
        torch.cuda.synchronize()
        return f"k={k}: routed, expert histogram sums to {int(rd.expt_hist.sum())} (want {n_tokens * k})"
    except Exception as err:  # the defect: a compile error at the first call
        return f"k={k}: {type(err).__name__}: {str(err).splitlines()[-1]}"


def compile_topk_for_sm90(k: int, n_expts: int = 32) -> None:
    """triton.compile of triton_kernels' top-k kernel with the constexprs routing() passes for (k, n_expts)."""
    from triton.backends.compiler import GPUTarget
    from triton_kernels.topk_details._topk_forward import _topk_forward

    signature = {"X": "*fp32", "stride_xm": "i32", "Yv": "*fp32", "Yi": "*i16", "stride_ym": "i32",
                 "USE_PROVIDED_INDX": "constexpr", "Bits": "*u32", "stride_rm": "constexpr",
                 "stride_rn": "constexpr", "n_rows": "i32", "n_expts_tot": "i32", "S": "*i32",
                 "BLOCK_S": "constexpr", "s_blocks": "i32", "APPLY_SOFTMAX": "constexpr", "BLOCK_M": "constexpr",
                 "N_EXPTS_PAD": "constexpr", "N_EXPTS_ACT": "constexpr", "BLOCK_N": "constexpr"}  # fmt: skip
    # the values topk_forward() passes: BLOCK_M = BLOCK_N = 32, BLOCK_S = 128, N_EXPTS_PAD = E rounded up to 32
    constexprs = {"USE_PROVIDED_INDX": False, "stride_rm": 1, "stride_rn": 32, "BLOCK_S": 128,
                  "APPLY_SOFTMAX": True, "BLOCK_M": 32, "N_EXPTS_PAD": triton.cdiv(n_expts, 32) * 32,
                  "N_EXPTS_ACT": k, "BLOCK_N": 32}  # fmt: skip
    names = list(signature)
    src = triton.compiler.ASTSource(
        fn=_topk_forward,
        signature=signature,
        constexprs={(names.index(n),): v for n, v in constexprs.items()},
    )
    triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})


def compile_on_cpu(k: int) -> str:
    try:
        compile_topk_for_sm90(k)
        return f"k={k}: compiles for sm90"
    except Exception as err:
        return f"k={k}: {type(err).__name__}: {str(err).splitlines()[-1]}"


if __name__ == "__main__":
    gpu = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
    for k in (4, 6):
        print(route_on_gpu(k) if gpu else compile_on_cpu(k))
