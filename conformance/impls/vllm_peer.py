"""vLLM's Triton fused-MoE path ("vllm-peer"; entry point of this package), loaded from a standalone copy.

vLLM's `fused_experts` is the MoE kernel most people run. vLLM itself needs its compiled CUDA ops, so this
adapter runs the path from a standalone file that carries it without them: the project's speed peer
(`../shared/peer/vllm_peer.py`, vLLM 0.33.0), named by MOE_CTS_VLLM_PEER (the file, or the folder holding it).
Nothing of it is copied into moe-cts; without the variable every case is NotSupported and says why.

What a verdict here judges (the file's own PROVENANCE docstring):

    vLLM's, verbatim     fused_moe_kernel (the GEMM: tiles, GROUP_SIZE_M order, masks, bias, the router
                         weight in GEMM2's fp32 epilogue), its launch code, fused_experts_impl's buffers and
                         the config choice (get_default_config; on a GPU the tuned table for the device)
    the file's stand-ins moe_align_block_size, silu_and_mul / swigluoai_and_mul and moe_sum (vLLM's are CUDA
                         ops; the stand-ins keep their arithmetic: silu rounds twice, moe_sum adds in the
                         output dtype): a Fail there is the stand-in's until a GPU run with vLLM says otherwise
    moe-cts glue         the router: a transformers-style fp32 softmax top-k (third_party_glue.softmax_topk),
                         as vLLM's fused_topk computes it

    ids, w = softmax_topk(x, router)                                    (T, k), fp32
    y      = vllm_forward(x, w13', w2, ids, w, tuned=on a GPU, b13=b13', b2=b2, activation)
             silu:        w13' = gate rows then up rows (concat; interleaved rows re-indexed, exact)
             swiglu_oai:  w13' = gate, up alternating (gpt-oss; concat rows re-indexed), alpha 1.702, limit 7

Claims: forward only; fp32 (tl.dot without input_precision: tf32 on NVIDIA), fp16, bf16; silu and swiglu_oai
gated experts with optional biases; softmax routing, renormalize optional; the router weight applied before
the cast (MUL_ROUTED_WEIGHT in fp32). No shared experts, no quantized weights (the file keeps only the
unquantized path), no expert-parallel masks. On the interpreter bf16 tl.dot is computed on raw bits (triton
issue 11584): the device matrix waives those Fails (known issue interpreter-vllm-bf16-dot).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any

import torch

from moe_cts.conformance.engine.protocol import FORWARD, Capabilities
from moe_cts.conformance.impls import third_party_glue as glue
from moe_cts.reference.errors import NotSupportedError

PEER_ENV = "MOE_CTS_VLLM_PEER"
PEER_FILE = "vllm_peer.py"
#: the activation names of vLLM's MoEActivation for ours, and the w13 row order vLLM reads for each
ACTIVATIONS = {"silu": ("silu", "concat"), "swiglu_oai": ("swigluoai", "interleaved")}
#: vLLM's swigluoai constants (alpha, limit): a spec with others is not what it computes
SWIGLUOAI = (1.702, 7.0)


def peer_path() -> Path | None:
    """The file MOE_CTS_VLLM_PEER names (a folder means its vllm_peer.py); None when unset."""
    value = os.environ.get(PEER_ENV)
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    return path / PEER_FILE if path.is_dir() else path


@functools.cache
def _load(path: str) -> Any:
    """The peer module from its file, once per path (a private module name: it is nobody's package)."""
    spec = importlib.util.spec_from_file_location("_moe_cts_vllm_peer", path)
    if spec is None or spec.loader is None:
        raise NotSupportedError(f"{PEER_ENV}: expected a Python file exposing vllm_forward, got {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and enums inside it look their module up by name
    spec.loader.exec_module(module)
    if not callable(getattr(module, "vllm_forward", None)):
        raise NotSupportedError(f"{PEER_ENV}: expected a file exposing vllm_forward(...), got {path}")
    return module


@functools.cache  # capabilities() runs for every case: the file is read once per path
def _version(path: Path) -> str:
    """VLLM_VERSION as the file writes it, read without importing it: the file imports Triton, which must not happen
    before the device sets TRITON_INTERPRET (capabilities() runs in processes that never launch a kernel)."""
    m = re.search(r'^VLLM_VERSION = "([^"]+)"', path.read_text(), re.M)
    return m.group(1) if m else "?"


def peer() -> Any:
    path = peer_path()
    if path is None:
        raise NotSupportedError(f"{PEER_ENV} is not set: name the file that carries vLLM's fused-MoE path "
                                f"(the project's speed peer, ../shared/peer/{PEER_FILE})")  # fmt: skip
    if not path.is_file():
        raise NotSupportedError(f"{PEER_ENV}: expected an existing file, got {path}")
    return _load(str(path))


class VllmPeer:
    """vLLM's Triton fused_experts behind a softmax top-k router (module docstring)."""

    name = "vllm-peer"

    def __init__(self) -> None:
        self._last: dict[str, Any] = {}

    def capabilities(self) -> Capabilities:
        path = peer_path()
        if path is None or not path.is_file():
            why = f"{PEER_ENV} is not set" if path is None else f"{PEER_ENV}: no file at {path}"
            return Capabilities(stages=frozenset(), notes={"vllm-peer": f"{why}; every case is NotSupported"})
        return Capabilities(
            stages=frozenset({FORWARD}),
            dtypes=frozenset({"float32", "float16", "bfloat16"}),
            layouts=frozenset({"concat", "interleaved"}),
            gated_activations=frozenset(ACTIVATIONS),
            nongated_activations=frozenset(),
            scorings=frozenset({"softmax"}),
            routing=frozenset({"renormalize", "router_bias"}),
            expert_bias=True,
            shared_experts=False,
            shared_gate=False,
            fp32_dot="tf32",
            weight_before_cast=True,
            notes={
                "source": f"{path} (vLLM {_version(path)})",
                "router": "moe-cts glue (fp32 softmax top-k, as vLLM's fused_topk); vLLM's op takes ids and weights",
                "stand-ins": "moe_align_block_size, the activation and moe_sum are the file's Triton stand-ins "
                "for vLLM's CUDA ops",
                "fp32_dot": "vLLM's tl.dot sets no input_precision: tf32 for fp32 operands on NVIDIA",
            },
        )

    def kernel_config(self) -> dict[str, Any]:
        return dict(self._last)

    def run(self, inputs, stage: str, device=None, *, out=None) -> Any:
        spec = inputs.spec
        limit = None
        if spec.activation == "swiglu_oai" and (spec.swiglu_alpha, spec.swiglu_limit) != SWIGLUOAI:
            limit = f"swiglu_alpha, swiglu_limit: vLLM's swigluoai computes {SWIGLUOAI}"
        glue.refuse_unless_forward(self.capabilities(), inputs, stage, device, limit=limit,
                                   one_forward="fused_experts is one forward", who="vLLM's fused MoE")  # fmt: skip
        mod = peer()
        w = inputs.weights
        act, layout = ACTIVATIONS[spec.activation]
        order = glue.rows_concat if layout == "concat" else glue.rows_interleaved
        w13 = order(w.w13, spec, axis=1).contiguous()
        # the biases as the layer holds them (HAS_BIAS adds them to the fp32 accumulator)
        b13 = order(w.b13, spec, axis=1).contiguous() if spec.expert_bias else None
        b2 = w.b2.contiguous() if spec.expert_bias else None
        ids, topk_w = glue.softmax_topk(inputs.x, w, spec)
        # vLLM's own choice on a GPU (its table for the device, else its default); the default on the interpreter,
        # which has no device name to look a table up by
        tuned = getattr(device, "is_gpu", False)
        cfg, source = mod.pick_config(inputs.x, w13, w.w2, spec.top_k, tuned=tuned)
        self._last = {"kind": "vllm-peer", "vllm": getattr(mod, "VLLM_VERSION", "?"), "config": cfg,
                      "config_source": source}  # fmt: skip
        with torch.no_grad():
            y = mod.vllm_forward(inputs.x.contiguous(), w13, w.w2.contiguous(), ids.to(torch.int32), topk_w,
                                 config=cfg, b13=b13, b2=b2, activation=act)  # fmt: skip
        return y
