"""Liger-Kernel's fused MoE ("liger"; entry point of this package; pip extra `liger`: liger-kernel >= 0.8).

Liger's op is the experts half of a MoE layer: `LigerFusedMoEFunction.apply(x, gate_up_proj, down_proj,
top_k_index, top_k_weights)` (liger_kernel/ops/fused_moe.py), which `LigerExperts` puts in place of the
transformers 5.x experts of Mixtral / Qwen3-MoE. It takes the router's ids and weights; it does not route.
This adapter runs the router those models run (third_party_glue.softmax_topk) and then Liger's op:

    ids, w = softmax_topk(x, router)                    (T, k) int32, (T, k) fp32   moe-cts glue
    y      = LigerFusedMoEFunction.apply(x, w13, w2, ids, w)                        Liger's 4 kernels:
             routing metadata (histogram, prefix sum, sort/scatter), gather + GEMM + SwiGLU,
             down GEMM, weighted gather-sum over k (fp32 accumulation)

    weight          ours                          Liger
    gate_up_proj    w13 (E, 2I, H), concat        the same tensor (gate rows then up rows)
                    w13 interleaved               rows re-indexed to concat (exact)
    down_proj       w2 (E, H, I)                  the same tensor

What Liger computes and therefore what is claimed: SiLU-gated experts (`hidden_act` silu only), no expert
biases, no shared expert, any float dtype (tl.dot operands in the input dtype, fp32 accumulator; fp32
operands use tl.dot's default precision, tf32 on NVIDIA), experts < 2^16 (the sort packs the expert id in
16 bits with 0xFFFF as padding). The router claim is the glue's: softmax, renormalize optional.

On the Triton interpreter Liger's autotuned kernels need a GPU driver to benchmark; Liger's documented
escape hatch LIGER_FUSED_MOE_AUTOTUNE=0 (read when liger_kernel is first imported) pins one config, and the
adapter sets it there. bf16 under the interpreter is wrong by construction (bf16 tl.dot on raw bits,
device_matrix interpreter-bf16-arithmetic): certify bf16 on a GPU.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import torch

from moe_cts.conformance.engine.protocol import FORWARD, Capabilities
from moe_cts.conformance.impls import third_party_glue as glue

INSTALL = "pip install 'moe-cts[liger]' (liger-kernel >= 0.8)"
AUTOTUNE_KNOB = "LIGER_FUSED_MOE_AUTOTUNE"
#: the expert id is packed in the top 16 bits of the sort key, 0xFFFF marks padding (fused_moe_kernels.py K3)
MAX_EXPERTS = 0xFFFF


def _liger_op():
    glue.optional_import("liger_kernel", INSTALL)
    return glue.optional_import("liger_kernel.ops.fused_moe", INSTALL).LigerFusedMoEFunction


def _autotune() -> str:
    """What Liger read from LIGER_FUSED_MOE_AUTOTUNE at its first import: "on" (its config sweep) or "off"."""
    kernels = sys.modules.get("liger_kernel.ops.fused_moe_kernels")
    return "off" if getattr(kernels, "_AUTOTUNE_DISABLED", False) else "on"


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("liger-kernel")
    except metadata.PackageNotFoundError:
        return "?"


class LigerFusedMoE:
    """Liger-Kernel's fused MoE behind a transformers-style softmax router (module docstring)."""

    name = "liger"

    def __init__(self) -> None:
        self._last: dict[str, Any] = {}

    def capabilities(self) -> Capabilities:
        # find_spec, not import: Liger reads its autotune knob when its kernels module is first imported,
        # and run() sets the knob on the interpreter before that
        if importlib.util.find_spec("liger_kernel") is None:
            return Capabilities(
                stages=frozenset(), notes={"liger": f"liger_kernel: not installed; {INSTALL}"}
            )
        return Capabilities(
            stages=frozenset({FORWARD}),
            dtypes=frozenset({"float32", "float16", "bfloat16"}),
            layouts=frozenset({"concat", "interleaved"}),
            gated_activations=frozenset({"silu"}),
            nongated_activations=frozenset(),
            scorings=frozenset({"softmax"}),
            routing=frozenset({"renormalize"}),
            expert_bias=False,
            shared_experts=False,
            shared_gate=False,
            fp32_dot="tf32",
            max_experts=MAX_EXPERTS,
            notes={
                "router": "moe-cts glue (transformers-style fp32 softmax top-k); Liger takes ids and weights",
                "layouts": "interleaved w13 rows are re-indexed to Liger's concat gate_up_proj (exact)",
                "fp32_dot": "Liger's tl.dot has no input_precision: tf32 for fp32 operands on NVIDIA",
            },
        )

    def kernel_config(self) -> dict[str, Any]:
        return dict(self._last)

    def run(self, inputs, stage: str, device=None, *, out=None) -> Any:
        spec = inputs.spec
        glue.refuse_unless_forward(self.capabilities(), inputs, stage, device,
                                   one_forward="LigerFusedMoEFunction is one forward", who="Liger's fused MoE")  # fmt: skip
        glue.interpreter_env(device, AUTOTUNE_KNOB, "0")
        op = _liger_op()
        self._last = {"kind": "liger", "liger_kernel": _version(), "autotune": _autotune()}
        w = inputs.weights
        ids, topk_w = glue.softmax_topk(inputs.x, w, spec)
        gate_up_proj = glue.rows_concat(w.w13, spec, axis=1).contiguous()
        with torch.no_grad():
            y = op.apply(inputs.x.contiguous(), gate_up_proj, w.w2.contiguous(), ids.to(torch.int32), topk_w)
        return y


__all__ = ["LigerFusedMoE"]
