"""transformers 5.x configs and MoE blocks -> the fields of MoESpec / MoEWeights. transformers is never imported
here: configs are read by field name (dict or config object), blocks by parameter name. This module returns
keyword dicts and `spec.py` builds the objects (`MoESpec.from_hf_config`, `MoEWeights.from_hf`), so the
dependency runs one way: spec -> hf.

    model_type     block class                  routing read from the config
    mixtral        MixtralSparseMoeBlock        softmax, top-k, renormalize
    qwen2_moe      Qwen2MoeSparseMoeBlock       softmax, top-k, norm_topk_prob; shared expert + sigmoid gate
    qwen3_moe      Qwen3MoeSparseMoeBlock       softmax, top-k, norm_topk_prob
    olmoe          OlmoeSparseMoeBlock          softmax, top-k, norm_topk_prob
    deepseek_v2    DeepseekV2Moe                softmax, greedy | group_limited_greedy (group max); shared
    deepseek_v3    DeepseekV3MoE                sigmoid + e_score_correction_bias, groups by top-2 sum; shared
    gpt_oss        GptOssMLP                    router bias, top-k on logits + softmax; swiglu_oai, biases
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from moe_cts.reference.errors import SpecError

#: transformers `hidden_act` names -> MoESpec.activation
HF_ACTIVATIONS = {
    "silu": "silu",
    "swish": "silu",
    "gelu": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "relu": "relu",
}

SUPPORTED_MODEL_TYPES = (
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
    "olmoe",
    "deepseek_v2",
    "deepseek_v3",
    "gpt_oss",
)


class _Fields:
    """Read config fields from a dict or a config object, with a SpecError naming the missing field."""

    def __init__(self, config: Mapping[str, Any] | Any):
        self.config = config

    def get(self, name: str, default: Any = ...) -> Any:
        c = self.config
        v = c.get(name, None) if isinstance(c, Mapping) else getattr(c, name, None)
        if v is None:
            if default is ...:
                raise SpecError(f"config.{name}", "present (needed by this model type)", None)
            return default
        return v


def _activation(f: _Fields) -> str:
    act = f.get("hidden_act", "silu")
    if act not in HF_ACTIVATIONS:
        raise SpecError("config.hidden_act", f"one of {sorted(HF_ACTIVATIONS)}", act)
    return HF_ACTIVATIONS[act]


def spec_fields(config: Mapping[str, Any] | Any) -> dict[str, Any]:
    """MoESpec fields of one MoE layer of a transformers config (a dict such as config.json, or an object).

    Only the routed layers are described: first_k_dense_replace / mlp_only_layers are not read."""
    f = _Fields(config)
    mt = f.get("model_type")
    if mt not in SUPPORTED_MODEL_TYPES:
        raise SpecError("config.model_type", f"one of {SUPPORTED_MODEL_TYPES}", mt)
    H, k = f.get("hidden_size"), f.get("num_experts_per_tok")
    common: dict[str, Any] = {"hidden_size": H, "top_k": k, "name": f.get("_name_or_path", "") or mt}
    if mt == "mixtral":
        return dict(
            intermediate_size=f.get("intermediate_size"),
            num_experts=f.get("num_local_experts"),
            renormalize=True,
            activation=_activation(f),
            **common,
        )
    if mt in ("qwen2_moe", "qwen3_moe", "olmoe"):
        shared: dict[str, Any] = {}
        if mt == "qwen2_moe" and f.get("shared_expert_intermediate_size", 0) > 0:
            shared = {
                "n_shared_experts": 1,
                "shared_intermediate_size": f.get("shared_expert_intermediate_size"),
                "shared_gate": True,
            }
        return dict(
            intermediate_size=f.get("intermediate_size" if mt == "olmoe" else "moe_intermediate_size"),
            num_experts=f.get("num_experts"),
            renormalize=bool(f.get("norm_topk_prob", False)),
            activation=_activation(f),
            **shared,
            **common,
        )
    if mt in ("deepseek_v2", "deepseek_v3"):
        return _deepseek(f, mt, common)
    # gpt_oss: top-k on logits then softmax over the k == softmax over E, top-k, renormalize (exactly)
    return dict(
        intermediate_size=f.get("intermediate_size"),
        num_experts=f.get("num_local_experts"),
        router_bias=True,
        renormalize=True,
        activation="swiglu_oai",
        expert_bias=True,
        w13_layout="interleaved",
        swiglu_alpha=float(f.get("swiglu_alpha", 1.702)),
        swiglu_limit=float(f.get("swiglu_limit", 7.0)),
        **common,
    )


def _deepseek(f: _Fields, mt: str, common: dict[str, Any]) -> dict[str, Any]:
    I = f.get("moe_intermediate_size")
    n_shared = f.get("n_shared_experts", 0)
    routing: dict[str, Any] = {
        "routed_scaling_factor": float(f.get("routed_scaling_factor", 1.0)),
        # transformers' DeepseekV2 router never renormalizes; the original code does when
        # norm_topk_prob is set. Every released V2 config has it False, where both agree.
        "renormalize": bool(f.get("norm_topk_prob", False)),
    }
    if mt == "deepseek_v3":
        routing.update(
            scoring="sigmoid",
            correction_bias=True,
            n_group=f.get("n_group", 1),
            topk_group=f.get("topk_group", 1),
            group_score="top2_sum",
        )
    elif f.get("topk_method", "greedy") == "group_limited_greedy":
        routing.update(n_group=f.get("n_group"), topk_group=f.get("topk_group"), group_score="max")
    elif f.get("topk_method", "greedy") != "greedy":
        raise SpecError("config.topk_method", "'greedy' or 'group_limited_greedy'", f.get("topk_method"))
    return dict(
        intermediate_size=I,
        num_experts=f.get("n_routed_experts"),
        activation=_activation(f),
        n_shared_experts=n_shared,
        shared_intermediate_size=I if n_shared else 0,
        **routing,
        **common,
    )


# ----------------------------------------------------------------------------------------------- weights
def _param(module: Any, name: str, where: str) -> torch.Tensor:
    t = getattr(module, name, None)
    if not isinstance(t, torch.Tensor):
        raise SpecError(f"{where}.{name}", "a tensor on the transformers block", type(t).__name__)
    return t.detach()


def _mlp_w13_w2(mlp: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A gate_proj/up_proj/down_proj MLP as (w13 = [gate; up] (2S, H), w2 (H, S))."""
    gate = _param(mlp.gate_proj, "weight", f"{where}.gate_proj")
    up = _param(mlp.up_proj, "weight", f"{where}.up_proj")
    return torch.cat([gate, up], dim=0), _param(mlp.down_proj, "weight", f"{where}.down_proj")


def weight_fields(block: Any, spec: Any) -> dict[str, torch.Tensor]:
    """A transformers 5.x MoE block's parameters in the canonical layout (spec.py's docstring), one dtype."""
    experts = getattr(block, "experts", None)
    if experts is None or isinstance(experts, torch.nn.ModuleList):
        raise SpecError(
            "block.experts", "a transformers 5.x fused experts module (gate_up_proj)", type(experts).__name__
        )
    out: dict[str, torch.Tensor | None] = {}
    if hasattr(block, "router"):  # gpt-oss: x @ W layout, gate/up interleaved along the last axis
        out["router"] = _param(block.router, "weight", "block.router")
        out["router_bias"] = _param(block.router, "bias", "block.router")
        out["w13"] = _param(experts, "gate_up_proj", "block.experts").transpose(1, 2)
        out["b13"] = _param(experts, "gate_up_proj_bias", "block.experts")
        out["w2"] = _param(experts, "down_proj", "block.experts").transpose(1, 2)
        out["b2"] = _param(experts, "down_proj_bias", "block.experts")
    else:
        out["router"] = _param(block.gate, "weight", "block.gate")
        out["w13"] = _param(experts, "gate_up_proj", "block.experts")
        out["w2"] = _param(experts, "down_proj", "block.experts")
        if spec.correction_bias:
            out["correction_bias"] = _param(block.gate, "e_score_correction_bias", "block.gate")
    shared = getattr(block, "shared_experts", None)  # DeepSeek: n_shared MLPs fused into one
    if shared is None:
        shared = getattr(block, "shared_expert", None)  # Qwen2-MoE
    if shared is not None and spec.shared_width:
        out["shared_w13"], out["shared_w2"] = _mlp_w13_w2(shared, "block.shared_expert")
    if spec.shared_gate:
        out["shared_gate"] = _param(block.shared_expert_gate, "weight", "block.shared_expert_gate")
    # one dtype (the experts'): DeepSeek keeps its router in float32 even in a float64 model
    dtype = out["w13"].dtype
    return {k: v.to(dtype).contiguous() for k, v in out.items()}
