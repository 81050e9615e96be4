"""Named feature bundles of real MoE model families, for Capabilities.bundles.

A bundle is what comes together in one model: an implementation that computes gpt-oss computes router bias,
expert biases, the interleaved layout and swiglu_oai at once, and nothing else of them. Declaring bundles makes
generation draw whole families and keeps the NotSupported share of a run near zero.

    bundle       scoring   routing (required | optional)                 experts                     shared
    mixtral      softmax   renormalize | -                              concat, silu/gelu            -
    olmoe        softmax   - | - (renormalize forbidden)                concat, silu/gelu            -
    qwen2_moe    softmax   - | renormalize                              concat, silu/gelu            gated, any width
    deepseek_v3  sigmoid   - | renormalize, correction bias, grouped    concat, silu/gelu            ungated, width I
                           (top2_sum groups), routed scaling
    gpt_oss      softmax   renormalize, router bias | -                 interleaved swiglu_oai,      -
                                                                        expert biases (required)

Sources: the transformers 5.x model files (MixtralSparseMoeBlock, OlmoeSparseMoeBlock, Qwen2MoeSparseMoeBlock,
DeepseekV3MoE, GptOssMLP) and the models' config.json files (docs/semantics.md names them).
"""

from __future__ import annotations

from moe_cts.conformance.engine.protocol import Bundle, Capabilities

#: activations of the HF families with a plain hidden_act (gpt-oss has its own)
HF_ACTS = frozenset({"silu", "gelu", "gelu_tanh"})

#: what every family here has unless it says otherwise: softmax scores, a plain gated expert in the concat
#: layout, no expert biases, no shared experts, no routing variant
_HF_FAMILY = dict(
    scorings=frozenset({"softmax"}),
    routing=frozenset(),
    gated_activations=HF_ACTS,
    nongated_activations=frozenset(),
    layouts=frozenset({"concat"}),
    expert_bias=False,
    shared_experts=False,
    shared_gate=False,
)


def _family(name: str, **differences) -> Bundle:
    return Bundle(name, Capabilities(**{**_HF_FAMILY, **differences}))


MIXTRAL = _family("mixtral", routing=frozenset({"renormalize"}), required=frozenset({"renormalize"}))
OLMOE = _family("olmoe")
QWEN2_MOE = _family(
    "qwen2_moe",
    routing=frozenset({"renormalize"}),
    required=frozenset({"shared_experts", "shared_gate"}),
    shared_experts=True,
    shared_gate=True,
)
DEEPSEEK_V3 = _family(
    "deepseek_v3",
    scorings=frozenset({"sigmoid"}),
    routing=frozenset({"renormalize", "correction_bias", "grouped", "scaling"}),
    group_scores=frozenset({"top2_sum"}),
    shared_experts=True,
    shared_size="intermediate",
    min_group_size=2,
)
GPT_OSS = _family(
    "gpt_oss",
    routing=frozenset({"renormalize", "router_bias"}),
    required=frozenset({"renormalize", "router_bias", "expert_bias"}),
    gated_activations=frozenset({"swiglu_oai"}),
    layouts=frozenset({"interleaved"}),
    expert_bias=True,
)

#: every bundle above, by name
BUNDLES: dict[str, Bundle] = {b.name: b for b in (MIXTRAL, OLMOE, QWEN2_MOE, DEEPSEEK_V3, GPT_OSS)}
