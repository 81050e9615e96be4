"""triton_kernels ("triton-kernels"; entry point of this package): the Triton team's `routing` + `matmul_ogs`
MoE (triton-lang/triton python/triton_kernels), as vLLM runs it for gpt-oss (vllm 0.33.0
model_executor/layers/fused_moe/experts/gpt_oss_triton_kernels_moe.py, `triton_kernel_moe_forward`).

    logits          = x.float() @ router.float().T (+ router_bias)            (T, E) fp32, moe-cts glue
    rd, gather, sc  = routing(logits, k, sm_first=not renormalize)           their top-k + sort kernels
    h               = matmul_ogs(x, w1, b1, rd, gather_indx=gather,          (T*k, I) case dtype
                                 fused_activation=swiglu(alpha, limit))
    y               = matmul_ogs(h, w2, b2, rd, scatter_indx=sc,             (T, H) case dtype, weighted by
                                 gammas=rd.gate_scal)                         the routing weights, summed over k

    weight   ours                               triton_kernels
    w1       w13 (E, 2I, H)                     (E, H, 2I): transposed, gate/up interleaved on the last axis
                                                (their swiglu reads gate = even, up = odd columns)
    b1       b13 (E, 2I)                        (E, 2I) fp32, interleaved the same way
    w2       w2 (E, H, I)                       (E, I, H): transposed
    b2       b2 (E, H)                          (E, H) fp32

What is claimed: the gpt-oss expert (swiglu_oai with the case's alpha and limit; their only fused
activation), either w13 layout (re-indexed exactly), expert biases optional (None when absent), softmax
routing with renormalize optional (`sm_first=False` is top-k on logits then softmax over k, which equals
softmax-top-k-renormalize; `sm_first=True` is softmax then top-k), router_bias (added to the logits by the
glue), no shared expert. fp32 operands: PrecisionConfig's default allow_tf32=True, as vLLM runs it.

Which copy is imported: the top-level `triton_kernels` (the triton repository's python/triton_kernels, or the
wheel docs/third-party.md builds from vllm's vendored copy), else `vllm.third_party.triton_kernels` aliased to
`triton_kernels` as vllm's import_triton_kernels() does (the vendored code imports itself by that name). Only
the routing + matmul_ogs API (triton_kernels as of triton 3.5) is adapted: a newer copy without
`triton_kernels.routing.routing` is NotSupported, naming what is missing.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import torch

from moe_cts.conformance.engine.protocol import FORWARD, Capabilities
from moe_cts.conformance.impls import third_party_glue as glue
from moe_cts.reference.errors import NotSupportedError

INSTALL = ("pip install a triton_kernels wheel (docs/third-party.md: built from vllm's vendored copy, or "
           "'triton_kernels @ git+https://github.com/triton-lang/triton@v3.5.1#subdirectory=python/triton_kernels')")  # fmt: skip


#: topk_forward keeps expert ids in int16 and asserts E < 32768 (triton_kernels/topk.py)
MAX_EXPERTS = 32767


def _find_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a parent package that is missing
        return False


def import_triton_kernels():
    """The triton_kernels package (module docstring); NotSupportedError when neither copy is there."""
    if not _find_module("triton_kernels") and _find_module("vllm.third_party.triton_kernels"):
        sys.modules["triton_kernels"] = importlib.import_module("vllm.third_party.triton_kernels")
    tk = glue.optional_import("triton_kernels", INSTALL)
    try:
        routing = importlib.import_module("triton_kernels.routing").routing
        matmul_ogs = importlib.import_module("triton_kernels.matmul_ogs")
        swiglu = importlib.import_module("triton_kernels.swiglu")
    except (ImportError, AttributeError) as err:
        raise NotSupportedError(
            f"triton_kernels: expected the routing + matmul_ogs API (triton 3.5) at {tk.__file__}; {err}"
        ) from err
    return routing, matmul_ogs, swiglu


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("triton_kernels")
    except metadata.PackageNotFoundError:
        return "vllm.third_party" if "vllm.third_party.triton_kernels" in sys.modules else "?"


def their_weights(spec, w) -> dict[str, torch.Tensor | None]:
    """The case's weights in triton_kernels' layout (module docstring table); biases fp32 as vLLM passes them."""
    w1 = glue.rows_interleaved(w.w13, spec, axis=1).transpose(1, 2).contiguous()
    b1 = glue.rows_interleaved(w.b13, spec, axis=1).float().contiguous() if spec.expert_bias else None
    b2 = w.b2.float().contiguous() if spec.expert_bias else None
    return {"w1": w1, "b1": b1, "w2": w.w2.transpose(1, 2).contiguous(), "b2": b2}


class TritonKernelsMoE:
    """triton_kernels' routing + matmul_ogs, run as vLLM runs it for gpt-oss (module docstring)."""

    name = "triton-kernels"

    def __init__(self) -> None:
        self._last: dict[str, Any] = {}

    def capabilities(self) -> Capabilities:
        try:
            import_triton_kernels()
        except NotSupportedError as err:
            return Capabilities(stages=frozenset(), notes={"triton_kernels": str(err)})
        return Capabilities(
            stages=frozenset({FORWARD}),
            dtypes=frozenset({"float32", "float16", "bfloat16"}),
            layouts=frozenset({"concat", "interleaved"}),
            gated_activations=frozenset({"swiglu_oai"}),
            nongated_activations=frozenset(),
            scorings=frozenset({"softmax"}),
            routing=frozenset({"renormalize", "router_bias"}),
            expert_bias=True,
            shared_experts=False,
            shared_gate=False,
            fp32_dot="tf32",
            max_experts=MAX_EXPERTS,
            notes={
                "router": "logits by moe-cts glue (fp32); top-k, softmax and token sort by triton_kernels.routing",
                "activation": "their fused swiglu (gpt-oss) is the only activation matmul_ogs fuses",
                "fp32_dot": "PrecisionConfig default allow_tf32=True, as vLLM runs it",
            },
        )

    def kernel_config(self) -> dict[str, Any]:
        return dict(self._last)

    def run(self, inputs, stage: str, device=None, *, out=None) -> Any:
        spec, x = inputs.spec, inputs.x
        glue.refuse_unless_forward(self.capabilities(), inputs, stage, device,
                                   one_forward="routing + two matmul_ogs calls are one forward", who="triton_kernels")  # fmt: skip
        routing, mo, swiglu = import_triton_kernels()
        self._last = {"kind": "triton_kernels", "triton_kernels": _version()}
        T, H = x.shape
        k, I = spec.top_k, spec.intermediate_size
        ww = their_weights(spec, inputs.weights)
        logits = x.float() @ inputs.weights.router.float().T
        if spec.router_bias:
            logits = logits + inputs.weights.router_bias.float()
        act = mo.FusedActivation(mo.FnSpecs("swiglu", swiglu.swiglu_fn, ("alpha", "limit")),
                                 (spec.swiglu_alpha, spec.swiglu_limit), 2)  # fmt: skip
        # buffers shaped as vLLM's triton_kernel_fused_experts passes them (matmul_ogs writes 3-D outputs)
        h = torch.empty((1, T * k, I), dtype=x.dtype, device=x.device)
        y = torch.empty((1, T, H), dtype=x.dtype, device=x.device)
        with torch.no_grad():
            rd, gather, scatter = routing(logits, k, sm_first=not spec.renormalize)
            mo.matmul_ogs(x, ww["w1"], ww["b1"], rd, gather_indx=gather, fused_activation=act, y=h)
            mo.matmul_ogs(h.view(T * k, I), ww["w2"], ww["b2"], rd, scatter_indx=scatter,
                          gammas=rd.gate_scal, y=y)  # fmt: skip
        return y.view(T, H)


__all__ = ["TritonKernelsMoE", "import_triton_kernels", "their_weights"]
