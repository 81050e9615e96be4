"""MoEWeights conversion and validation, spec dict round trips, the real-model presets and the
config.json readers."""

from __future__ import annotations

import json

import pytest
import torch

from moe_cts.reference import MoESpec, MoEWeights, moe_forward, presets, spec_from_hf_config, weight_shapes

FULL = MoESpec(
    hidden_size=8,
    intermediate_size=4,
    num_experts=8,
    top_k=4,
    scoring="sigmoid",
    router_bias=True,
    correction_bias=True,
    n_group=4,
    topk_group=2,
    renormalize=True,
    routed_scaling_factor=2.5,
    expert_bias=True,
    w13_layout="interleaved",
    n_shared_experts=2,
    shared_intermediate_size=3,
    shared_gate=True,
    capacity_factor=1.25,
    local_experts=(0, 3, 5),
    name="every option",
)


def test_random_weights_have_every_tensor_the_spec_needs():
    w = MoEWeights.random(FULL, seed=0).validate(FULL)
    assert {name: tuple(t.shape) for name, t in w.items()} == weight_shapes(FULL)


def test_to_returns_a_converted_copy_and_leaves_the_original():
    w = MoEWeights.random(FULL, seed=0)
    w32 = w.to(dtype=torch.float32)
    assert w32.dtype == torch.float32 and all(t.dtype == torch.float32 for _, t in w32.items())
    assert w.dtype == torch.float64
    w32.w13.zero_()
    assert w.w13.abs().sum() > 0  # a copy, not a view
    assert w.to(device="cpu").dtype == torch.float64  # dtype=None keeps dtypes


def test_random_weights_give_outputs_of_order_one():
    spec = presets.scaled("mixtral-8x7b")
    x = torch.randn(64, spec.hidden_size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rms = float((moe_forward(spec, MoEWeights.random(spec, seed=1), x).y ** 2).mean() ** 0.5)
    assert 0.05 < rms < 20


@pytest.mark.parametrize("spec", [FULL, MoESpec(8, 4, 2, 1)], ids=["every option", "defaults"])
def test_spec_survives_a_json_round_trip(spec):
    back = MoESpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back == spec and back.name == spec.name and back.local_experts == spec.local_experts


# Numbers from the public model cards (docs/bugs.md#facts-model-shapes):
# (H, I, E, k, shared width S, scoring, renormalize)
MODEL_CARD_TABLE = {
    "mixtral-8x7b": (4096, 14336, 8, 2, 0, "softmax", True),
    "mixtral-8x22b": (6144, 16384, 8, 2, 0, "softmax", True),
    "qwen2-57b-a14b": (3584, 2560, 64, 8, 20480, "softmax", False),
    "qwen3-30b-a3b": (2048, 768, 128, 8, 0, "softmax", True),
    "olmoe-1b-7b": (2048, 1024, 64, 8, 0, "softmax", False),
    "deepseek-v2-lite": (2048, 1408, 64, 6, 2 * 1408, "softmax", False),
    "deepseek-v3": (7168, 2048, 256, 8, 2048, "sigmoid", True),
    "gpt-oss-20b": (2880, 2880, 32, 4, 0, "softmax", True),
    "gpt-oss-120b": (2880, 2880, 128, 4, 0, "softmax", True),
}


def test_presets_cover_every_model_in_facts():
    assert set(presets.names()) == set(MODEL_CARD_TABLE)


@pytest.mark.parametrize("name", sorted(MODEL_CARD_TABLE))
def test_preset_has_the_published_shape_and_routing(name):
    s = presets.get(name)
    got = (
        s.hidden_size,
        s.intermediate_size,
        s.num_experts,
        s.top_k,
        s.shared_width,
        s.scoring,
        s.renormalize,
    )
    assert got == MODEL_CARD_TABLE[name]
    assert s.name == name


def test_deepseek_v3_preset_has_grouped_biased_scaled_routing():
    s = presets.get("deepseek-v3")
    assert (s.correction_bias, s.n_group, s.topk_group, s.group_score, s.routed_scaling_factor) == (
        True,
        8,
        4,
        "top2_sum",
        2.5,
    )


def test_gpt_oss_preset_has_biases_and_interleaved_clamped_swiglu():
    s = presets.get("gpt-oss-120b")
    assert (s.router_bias, s.expert_bias, s.activation, s.w13_layout, s.swiglu_alpha, s.swiglu_limit) == (
        True,
        True,
        "swiglu_oai",
        "interleaved",
        1.702,
        7.0,
    )


@pytest.mark.parametrize("name", sorted(MODEL_CARD_TABLE))
def test_scaled_preset_keeps_the_routing_semantics(name):
    full, small = presets.get(name), presets.scaled(name)
    keep = (
        "scoring",
        "router_bias",
        "correction_bias",
        "n_group",
        "topk_group",
        "group_score",
        "renormalize",
        "routed_scaling_factor",
        "activation",
        "gated",
        "expert_bias",
        "w13_layout",
        "n_shared_experts",
        "shared_gate",
        "top_k",
    )
    assert {f: getattr(small, f) for f in keep} == {f: getattr(full, f) for f in keep}
    assert (
        small.hidden_size == 32 and small.num_experts <= full.num_experts and small.top_k < small.num_experts
    )


# config.json fields of the released checkpoints (routing-relevant part)
CONFIG_JSON = {
    "mixtral-8x7b": {
        "model_type": "mixtral",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "hidden_act": "silu",
    },
    "mixtral-8x22b": {
        "model_type": "mixtral",
        "hidden_size": 6144,
        "intermediate_size": 16384,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "hidden_act": "silu",
    },
    "qwen2-57b-a14b": {
        "model_type": "qwen2_moe",
        "hidden_size": 3584,
        "moe_intermediate_size": 2560,
        "shared_expert_intermediate_size": 20480,
        "num_experts": 64,
        "num_experts_per_tok": 8,
        "norm_topk_prob": False,
        "hidden_act": "silu",
    },
    "qwen3-30b-a3b": {
        "model_type": "qwen3_moe",
        "hidden_size": 2048,
        "moe_intermediate_size": 768,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "norm_topk_prob": True,
        "hidden_act": "silu",
    },
    "olmoe-1b-7b": {
        "model_type": "olmoe",
        "hidden_size": 2048,
        "intermediate_size": 1024,
        "num_experts": 64,
        "num_experts_per_tok": 8,
        "norm_topk_prob": False,
        "hidden_act": "silu",
    },
    "deepseek-v2-lite": {
        "model_type": "deepseek_v2",
        "hidden_size": 2048,
        "moe_intermediate_size": 1408,
        "n_routed_experts": 64,
        "num_experts_per_tok": 6,
        "n_shared_experts": 2,
        "topk_method": "greedy",
        "n_group": 1,
        "topk_group": 1,
        "norm_topk_prob": False,
        "routed_scaling_factor": 1.0,
        "scoring_func": "softmax",
        "hidden_act": "silu",
    },
    "deepseek-v3": {
        "model_type": "deepseek_v3",
        "hidden_size": 7168,
        "moe_intermediate_size": 2048,
        "n_routed_experts": 256,
        "num_experts_per_tok": 8,
        "n_shared_experts": 1,
        "n_group": 8,
        "topk_group": 4,
        "norm_topk_prob": True,
        "routed_scaling_factor": 2.5,
        "scoring_func": "sigmoid",
        "topk_method": "noaux_tc",
        "hidden_act": "silu",
    },
    "gpt-oss-20b": {
        "model_type": "gpt_oss",
        "hidden_size": 2880,
        "intermediate_size": 2880,
        "num_local_experts": 32,
        "num_experts_per_tok": 4,
        "swiglu_limit": 7.0,
    },
    "gpt-oss-120b": {
        "model_type": "gpt_oss",
        "hidden_size": 2880,
        "intermediate_size": 2880,
        "num_local_experts": 128,
        "num_experts_per_tok": 4,
        "swiglu_limit": 7.0,
    },
}


@pytest.mark.parametrize("name", sorted(CONFIG_JSON))
def test_spec_from_config_json_equals_the_preset(name):
    assert spec_from_hf_config(CONFIG_JSON[name]) == presets.get(name)


def test_from_hf_config_classmethod_reads_a_dict():
    assert MoESpec.from_hf_config(CONFIG_JSON["deepseek-v3"]) == presets.get("deepseek-v3")
