"""Every invalid spec, weight set or input raises SpecError naming the field (and the expected value)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import moe_cts.reference.numpy_oracle as numpy_oracle
from moe_cts.reference import (
    MoESpec,
    MoEWeights,
    SpecError,
    check_input,
    presets,
    spec_from_hf_config,
    torch_oracle,
)

BASE = dict(hidden_size=8, intermediate_size=4, num_experts=8, top_k=2)

# (what is wrong, field the message must name, changes to BASE)
BAD_SPECS = [
    ("top_k of zero", "top_k", dict(top_k=0)),
    ("top_k above E", "top_k", dict(top_k=9)),
    ("zero hidden size", "hidden_size", dict(hidden_size=0)),
    ("fractional intermediate size", "intermediate_size", dict(intermediate_size=2.5)),
    ("bool expert count", "num_experts", dict(num_experts=True)),
    ("unknown scoring", "scoring", dict(scoring="relu")),
    ("n_group not dividing E", "n_group", dict(n_group=3)),
    ("topk_group above n_group", "topk_group", dict(n_group=2, topk_group=3)),
    ("k above the experts the kept groups hold", "top_k", dict(n_group=4, topk_group=1, top_k=3)),
    ("unknown group score", "group_score", dict(n_group=2, group_score="mean")),
    ("top-2 sum of one-expert groups", "group_score", dict(n_group=8, topk_group=4, group_score="top2_sum")),
    ("infinite routed scaling", "routed_scaling_factor", dict(routed_scaling_factor=math.inf)),
    ("NaN routed scaling", "routed_scaling_factor", dict(routed_scaling_factor=math.nan)),
    ("zero routed scaling", "routed_scaling_factor", dict(routed_scaling_factor=0.0)),
    ("non-bool renormalize", "renormalize", dict(renormalize="yes")),
    ("unknown activation", "activation", dict(activation="tanh")),
    ("swiglu_oai without gate", "activation", dict(gated=False, activation="swiglu_oai")),
    (
        "interleaved non-gated expert",
        "w13_layout",
        dict(gated=False, activation="relu", w13_layout="interleaved"),
    ),
    ("unknown layout", "w13_layout", dict(w13_layout="blocked")),
    ("zero swiglu limit", "swiglu_limit", dict(swiglu_limit=0.0)),
    ("shared experts without width", "shared_intermediate_size", dict(n_shared_experts=1)),
    ("negative shared expert count", "n_shared_experts", dict(n_shared_experts=-1)),
    ("shared gate without shared expert", "shared_gate", dict(shared_gate=True)),
    ("negative capacity factor", "capacity_factor", dict(capacity_factor=-1.0)),
    ("NaN capacity factor", "capacity_factor", dict(capacity_factor=math.nan)),
    ("local expert out of range", "local_experts", dict(local_experts=(0, 8))),
    ("unsorted local experts", "local_experts", dict(local_experts=(2, 1))),
    ("local experts as a list", "local_experts", dict(local_experts=[0, 1])),
]


@pytest.mark.parametrize(("field", "changes"), [c[1:] for c in BAD_SPECS], ids=[c[0] for c in BAD_SPECS])
def test_invalid_spec_raises_naming_the_field(field, changes):
    with pytest.raises(SpecError) as err:
        MoESpec(**{**BASE, **changes})
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: expected ")


def test_unknown_field_in_a_spec_dict_is_named():
    with pytest.raises(SpecError, match=r"^spec: expected only fields .*'num_expert'"):
        MoESpec.from_dict({**BASE, "num_expert": 8})


SPEC = MoESpec(**BASE, router_bias=True)
GOOD = MoEWeights.random(SPEC, seed=0)

# (what is wrong, field the message must name, weights)
BAD_WEIGHTS = [
    ("w13 of the wrong shape", "w13.shape", lambda: GOOD.replace(w13=torch.zeros(8, 4, 8))),
    ("w2 transposed", "w2.shape", lambda: GOOD.replace(w2=GOOD.w2.transpose(1, 2))),
    ("missing router bias", "router_bias", lambda: GOOD.replace(router_bias=None)),
    ("unused expert bias", "b13", lambda: GOOD.replace(b13=torch.zeros(8, 8))),
    ("integer weights", "w2.dtype", lambda: GOOD.replace(w2=torch.zeros(8, 8, 4, dtype=torch.int32))),
    ("a numpy array", "router", lambda: GOOD.replace(router=np.zeros((8, 8)))),
    ("tensors on two devices", "weights.device", lambda: GOOD.replace(b2=torch.zeros(8, 8, device="meta"))),
]


@pytest.mark.parametrize(("field", "make"), [c[1:] for c in BAD_WEIGHTS], ids=[c[0] for c in BAD_WEIGHTS])
def test_invalid_weights_raise_naming_the_field(field, make):
    with pytest.raises(SpecError) as err:
        make().validate(SPEC)
    assert err.value.field == field


@pytest.mark.parametrize("oracle", [numpy_oracle, torch_oracle], ids=["numpy", "torch"])
def test_input_of_the_wrong_width_is_refused_before_any_work(oracle):
    with pytest.raises(SpecError, match=r"^x.shape: expected \(T, 8\)"):
        oracle.moe_forward(SPEC, GOOD, torch.zeros(3, 7, dtype=torch.float64))


def test_one_dimensional_input_is_refused():
    with pytest.raises(SpecError, match=r"^x.shape"):
        check_input(SPEC, torch.zeros(8))


@pytest.mark.parametrize("oracle", [numpy_oracle, torch_oracle], ids=["numpy", "torch"])
@pytest.mark.parametrize(
    ("field", "ids"), [("topk_ids", [[0, 8]]), ("topk_ids", [[-1, 0]]), ("topk_ids.shape", [[0]])]
)
def test_permute_refuses_ids_out_of_range_or_of_the_wrong_k(oracle, field, ids):
    with pytest.raises(SpecError) as err:
        oracle.permute(SPEC, np.array(ids))
    assert err.value.field == field


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(SpecError, match=r"^preset: expected one of \[.*'deepseek-v3'"):
        presets.get("deepseek-v4")


@pytest.mark.parametrize(
    ("field", "config"),
    [
        ("config.model_type", {"model_type": "llama", "hidden_size": 8}),
        (
            "config.num_local_experts",
            {"model_type": "mixtral", "hidden_size": 8, "intermediate_size": 4, "num_experts_per_tok": 2},
        ),
        (
            "config.hidden_act",
            {
                "model_type": "olmoe",
                "hidden_size": 8,
                "intermediate_size": 4,
                "num_experts": 8,
                "num_experts_per_tok": 2,
                "hidden_act": "mish",
            },
        ),
        (
            "config.topk_method",
            {
                "model_type": "deepseek_v2",
                "hidden_size": 8,
                "moe_intermediate_size": 4,
                "n_routed_experts": 8,
                "num_experts_per_tok": 2,
                "topk_method": "sinkhorn",
            },
        ),
    ],
)
def test_unusable_hf_config_names_the_field(field, config):
    with pytest.raises(SpecError) as err:
        spec_from_hf_config(config)
    assert err.value.field == field
