"""transformers 5.x MoE blocks, one per experts implementation: "transformers-eager", "transformers-batched_mm",
"transformers-grouped_mm" (entry points of this package; transformers is an optional dependency).

transformers 5.x fuses each model's experts into one module decorated with `@use_experts_implementation`; its
forward dispatches on `config._experts_implementation` ("eager" = the model file's per-expert loop, or
"batched_mm" / "grouped_mm" from transformers.integrations.moe). This adapter builds the real block of the
model family that computes the case's spec, copies the case's weights into it, and runs it:

    spec                                                    family        block
    sigmoid scores (grouped or not, correction bias, scale)  deepseek_v3   DeepseekV3MoE (shared: S == I * n)
    router_bias + expert_bias + swiglu_oai + interleaved     gpt_oss       GptOssMLP
    softmax + shared expert with a sigmoid gate               qwen2_moe     Qwen2MoeSparseMoeBlock
    softmax, renormalize                                      mixtral       MixtralSparseMoeBlock
    softmax, no renormalize                                   olmoe         OlmoeSparseMoeBlock

    forward   x (T, H) -> block(x.view(1, T, H)) -> y (T, H) in the case dtype

Anything no family computes (non-gated experts, capacity dropping, expert parallelism, grouped softmax,
routed scaling without sigmoid, quantized weights, a shared expert without a gate on softmax) is
NotSupported, with the reason naming the field. The weight mapping is reference/hf.py's, run backwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from moe_cts.conformance.engine.bundles import BUNDLES
from moe_cts.conformance.engine.protocol import FORWARD, Capabilities
from moe_cts.conformance.impls.checkout_path import unshadow_checkout
from moe_cts.reference.errors import NotSupportedError
from moe_cts.reference.spec import MoESpec, MoEWeights

#: the families family_for() builds, as Capabilities bundles (generation draws a family, then its features)
FAMILY_BUNDLES = tuple(BUNDLES[f] for f in ("deepseek_v3", "gpt_oss", "qwen2_moe", "mixtral", "olmoe"))
#: MoESpec.activation -> transformers `hidden_act` (the inverse of reference/hf.py HF_ACTIVATIONS)
HIDDEN_ACT = {"silu": "silu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}


def _transformers():
    # transformers >= 5.25 imports Hugging Face's `kernels`; from a checkout's root our kernels/ would answer
    unshadow_checkout()
    try:
        import transformers
    except ImportError as err:
        raise NotSupportedError(
            f"transformers: not installed ({err}); pip install 'transformers>=5'"
        ) from err
    major = int(transformers.__version__.split(".")[0])
    if major < 5:
        raise NotSupportedError(
            f"transformers: expected >= 5 (fused experts), got {transformers.__version__}"
        )
    return transformers


# ----------------------------------------------------------------------------------------------- family choice
def family_for(spec: MoESpec) -> str:
    """The transformers model family whose block computes `spec`; NotSupportedError naming the field if none."""
    checks = [
        (spec.quant is None, "quant: quantized weights are not built into transformers blocks here"),
        (spec.gated, "gated: every transformers MoE family has gated experts"),
        (spec.capacity_factor is None, "capacity_factor: no transformers MoE block drops tokens"),
        (spec.local_experts is None, "local_experts: expert parallelism is not modelled by a single block"),
    ]
    why = next((w for ok, w in checks if not ok), None)
    if why:
        raise NotSupportedError(why)
    oai = (
        spec.router_bias,
        spec.expert_bias,
        spec.activation == "swiglu_oai",
        spec.w13_layout == "interleaved",
    )
    if any(oai):
        if not all(oai):
            raise NotSupportedError("router_bias/expert_bias/swiglu_oai/interleaved: only gpt-oss has them, "
                                    "and it has all four together")  # fmt: skip
        _require(
            spec.scoring == "softmax" and spec.renormalize,
            "scoring/renormalize: gpt-oss is softmax over top-k",
        )
        _require(not spec.grouped and not spec.correction_bias, "grouped/correction_bias: not in gpt-oss")
        _require(spec.routed_scaling_factor == 1.0, "routed_scaling_factor: not in gpt-oss")
        _require(not spec.shared_width, "n_shared_experts: gpt-oss has no shared expert")
        return "gpt_oss"
    _require(
        spec.activation in HIDDEN_ACT, f"activation: {spec.activation} is no transformers hidden_act here"
    )
    if spec.scoring == "sigmoid":
        _require(
            not spec.grouped or spec.group_score == "top2_sum",
            "group_score: DeepSeek-V3 scores groups by top-2 sum",
        )
        _require(
            spec.num_experts // spec.n_group >= 2, "n_group: DeepSeek-V3 needs >= 2 experts per group (top-2)"
        )
        _require(not spec.shared_gate, "shared_gate: DeepSeek-V3's shared experts have no gate")
        _require(not spec.shared_width or spec.shared_intermediate_size == spec.intermediate_size,
                 "shared_intermediate_size: DeepSeek-V3's shared experts are moe_intermediate_size wide")  # fmt: skip
        return "deepseek_v3"
    _require(not spec.grouped, "n_group: grouped softmax top-k (DeepSeek-V2) is not built here")
    _require(not spec.correction_bias, "correction_bias: only DeepSeek-V3 (sigmoid) has one")
    _require(spec.routed_scaling_factor == 1.0, "routed_scaling_factor: no softmax family here scales")
    if spec.shared_width:
        _require(
            spec.shared_gate,
            "shared_gate: a softmax shared expert without a gate (DeepSeek-V2) is not built here",
        )
        return "qwen2_moe"
    _require(not spec.shared_gate, "shared_gate: a gate without a shared expert")
    return "mixtral" if spec.renormalize else "olmoe"


def _require(ok: bool, why: str) -> None:
    if not ok:
        raise NotSupportedError(why)


# ----------------------------------------------------------------------------------------------- configs
def _config(family: str, spec: MoESpec):
    """A transformers config of `family` with the spec's layer fields (attention fields kept tiny: unused)."""
    tf = _transformers()
    H, I, E, k = spec.hidden_size, spec.intermediate_size, spec.num_experts, spec.top_k
    small = {"num_attention_heads": 1, "num_key_value_heads": 1, "num_hidden_layers": 1}
    act = HIDDEN_ACT.get(spec.activation, "silu")
    if family == "mixtral":
        return tf.MixtralConfig(hidden_size=H, intermediate_size=I, num_local_experts=E, num_experts_per_tok=k,
                                hidden_act=act, **small)  # fmt: skip
    if family == "olmoe":
        return tf.OlmoeConfig(hidden_size=H, intermediate_size=I, num_experts=E, num_experts_per_tok=k,
                              norm_topk_prob=spec.renormalize, hidden_act=act, **small)  # fmt: skip
    if family == "qwen2_moe":
        return tf.Qwen2MoeConfig(hidden_size=H, moe_intermediate_size=I, num_experts=E, num_experts_per_tok=k,
                                 norm_topk_prob=spec.renormalize, shared_expert_intermediate_size=spec.shared_width,
                                 hidden_act=act, **small)  # fmt: skip
    if family == "deepseek_v3":
        n_shared = spec.n_shared_experts if spec.shared_width else 0
        return tf.DeepseekV3Config(hidden_size=H, moe_intermediate_size=I, n_routed_experts=E, num_experts_per_tok=k,
                                   n_group=spec.n_group, topk_group=spec.topk_group, norm_topk_prob=spec.renormalize,
                                   routed_scaling_factor=spec.routed_scaling_factor, n_shared_experts=n_shared,
                                   hidden_act=act, **small)  # fmt: skip
    return tf.GptOssConfig(hidden_size=H, intermediate_size=I, num_local_experts=E, num_experts_per_tok=k,
                           swiglu_alpha=spec.swiglu_alpha, swiglu_limit=spec.swiglu_limit, **small)  # fmt: skip


def _block_class(family: str):
    tf = _transformers()
    return {
        "mixtral": lambda: tf.models.mixtral.modeling_mixtral.MixtralSparseMoeBlock,
        "olmoe": lambda: tf.models.olmoe.modeling_olmoe.OlmoeSparseMoeBlock,
        "qwen2_moe": lambda: tf.models.qwen2_moe.modeling_qwen2_moe.Qwen2MoeSparseMoeBlock,
        "deepseek_v3": lambda: tf.models.deepseek_v3.modeling_deepseek_v3.DeepseekV3MoE,
        "gpt_oss": lambda: tf.models.gpt_oss.modeling_gpt_oss.GptOssMLP,
    }[family]()


# ----------------------------------------------------------------------------------------------- weights
def _set(module: torch.nn.Module, name: str, value: torch.Tensor) -> None:
    """Replace a parameter or buffer by `value` (shape checked: a mismatch is a mapping bug, said loudly)."""
    old = getattr(module, name)
    if tuple(old.shape) != tuple(value.shape):
        raise ValueError(
            f"{type(module).__name__}.{name}: expected shape {tuple(old.shape)}, got {tuple(value.shape)}"
        )
    if isinstance(old, torch.nn.Parameter):
        setattr(module, name, torch.nn.Parameter(value.detach().clone(), requires_grad=False))
    else:
        setattr(module, name, value.detach().clone())


def _load_mlp(mlp: torch.nn.Module, w13: torch.Tensor, w2: torch.Tensor) -> None:
    S = w2.shape[1]
    _set(mlp.gate_proj, "weight", w13[:S])
    _set(mlp.up_proj, "weight", w13[S:])
    _set(mlp.down_proj, "weight", w2)


def load_weights(family: str, block: torch.nn.Module, spec: MoESpec, w: MoEWeights) -> None:
    """The case's canonical weights into the block's own layout (reference/hf.py weight_fields, inverted)."""
    ex = block.experts
    if family == "gpt_oss":
        _set(block.router, "weight", w.router)
        _set(block.router, "bias", w.router_bias)
        _set(ex, "gate_up_proj", w.w13.transpose(1, 2))  # (E, H, 2I), gate/up interleaved along the last axis
        _set(ex, "gate_up_proj_bias", w.b13)
        _set(ex, "down_proj", w.w2.transpose(1, 2))  # (E, I, H)
        _set(ex, "down_proj_bias", w.b2)
        return
    _set(ex, "gate_up_proj", w.w13)
    _set(ex, "down_proj", w.w2)
    if family == "deepseek_v3":
        # the router of DeepSeek-V3 is float32 in transformers; widening the case's weights is exact
        _set(block.gate, "weight", w.router.float())
        bias = w.correction_bias.float() if spec.correction_bias else torch.zeros(spec.num_experts)
        _set(block.gate, "e_score_correction_bias", bias.to(w.router.device))
        if spec.shared_width:
            _load_mlp(block.shared_experts, w.shared_w13, w.shared_w2)
        return
    _set(block.gate, "weight", w.router)
    if family == "qwen2_moe":
        _load_mlp(block.shared_expert, w.shared_w13, w.shared_w2)
        _set(block.shared_expert_gate, "weight", w.shared_gate)


def build_block(spec: MoESpec, w: MoEWeights, experts_implementation: str) -> tuple[str, torch.nn.Module]:
    """(family, block) on the weights' device and dtype, running `experts_implementation`, in eval mode."""
    family = family_for(spec)
    config = _config(family, spec)
    config._experts_implementation = experts_implementation
    with torch.device("meta"):  # shapes only: every tensor is replaced by the case's weights
        block = _block_class(family)(config)
    block = block.to_empty(device=w.w13.device).to(w.w13.dtype)
    load_weights(family, block, spec, w)
    if family == "deepseek_v3" and spec.shared_width == 0:
        block.shared_experts = _Zero()  # n_shared_experts = 0 still builds a zero-width MLP: drop it
    return family, block.eval()


class _Zero(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


# ----------------------------------------------------------------------------------------------- adapter
class TransformersExperts:
    """A transformers MoE block running one experts implementation (module docstring)."""

    experts_implementation = "eager"

    def __init__(self) -> None:
        self.name = f"transformers-{self.experts_implementation}"
        self._last: dict[str, Any] = {}

    def capabilities(self) -> Capabilities:
        """The union of what the five families compute; combinations none computes are refused in run()."""
        try:
            _transformers()
        except NotSupportedError as err:
            return Capabilities(stages=frozenset(), notes={"transformers": str(err)})
        return Capabilities(
            stages=frozenset({FORWARD}),
            gated_activations=frozenset({"silu", "gelu", "gelu_tanh", "swiglu_oai"}),
            nongated_activations=frozenset(),
            group_scores=frozenset({"top2_sum"}),
            bundles=FAMILY_BUNDLES,
            notes={"bundles": "one per transformers model family (family_for picks the block)"},
        )

    def kernel_config(self) -> dict[str, Any]:
        return dict(self._last)

    def run(self, inputs, stage: str, device=None, *, out=None) -> Any:
        tf = _transformers()
        why = self.capabilities().unsupported(inputs.spec, str(inputs.x.dtype).removeprefix("torch."))
        if why is None and stage != FORWARD:
            why = f"stage: {stage} not exposed (a transformers block is one forward)"
        if why:
            raise NotSupportedError(why)
        _check_registered(self.experts_implementation)
        family, block = build_block(inputs.spec, inputs.weights, self.experts_implementation)
        self._last = {"kind": "transformers", "family": family, "transformers": tf.__version__,
                      "experts_implementation": self.experts_implementation}  # fmt: skip
        T, H = inputs.x.shape
        with torch.no_grad():
            y = block(inputs.x.reshape(1, T, H))
        y = y[0] if isinstance(y, tuple) else y  # GptOssMLP returns (hidden, router_scores)
        return y.reshape(T, H)


def _check_registered(name: str) -> None:
    if name == "eager":
        return
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    if name not in ALL_EXPERTS_FUNCTIONS:
        raise NotSupportedError(f"experts_implementation: {name} is not registered in this transformers")


def _variant(impl: str) -> Callable[[], TransformersExperts]:
    return type(f"Transformers_{impl}", (TransformersExperts,), {"experts_implementation": impl})


TransformersEager = _variant("eager")
TransformersBatchedMM = _variant("batched_mm")
TransformersGroupedMM = _variant("grouped_mm")

__all__ = ["TransformersBatchedMM", "TransformersEager", "TransformersExperts", "TransformersGroupedMM",
           "build_block", "family_for", "load_weights"]  # fmt: skip
