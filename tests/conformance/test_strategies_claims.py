"""Generation draws only what an implementation claims: every generated case of a restricted implementation is
inside its Capabilities, and a required (mandatory) feature is always on."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import InvalidArgument

from moe_cts.conformance.engine.bundles import BUNDLES
from moe_cts.conformance.engine.must_pass import must_pass_cases
from moe_cts.conformance.engine.protocol import Capabilities
from moe_cts.conformance.engine.strategies import cases
from moe_cts.reference.spec import MoESpec

RESTRICTED = Capabilities(
    dtypes=frozenset({"bfloat16"}),
    layouts=frozenset({"concat"}),
    gated_activations=frozenset({"silu"}),
    nongated_activations=frozenset(),
    scorings=frozenset({"sigmoid"}),
    routing=frozenset({"renormalize", "correction_bias"}),
    required=frozenset({"renormalize"}),
    expert_bias=False,
    shared_experts=False,
    shared_gate=False,
    max_experts=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(capabilities=RESTRICTED))
def test_a_restricted_implementations_generated_cases_are_all_within_its_claims(case):
    assert RESTRICTED.unsupported(case.spec, case.dtype) is None, case.params()
    assert case.spec.renormalize and not case.spec.router_bias and case.spec.n_group in (None, 1)


@settings(max_examples=60, deadline=None)
@given(cases(capabilities=Capabilities(required=frozenset({"scaling", "shared_experts"}))))
def test_a_required_feature_is_in_every_generated_case(case):
    assert case.spec.routed_scaling_factor != 1.0 and case.spec.shared_width > 0


def test_a_required_name_that_is_no_feature_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="required: \\['renormalise'\\] are not features"):
        Capabilities(required=frozenset({"renormalise"}))


def test_dtypes_outside_the_claims_are_refused():
    with pytest.raises(InvalidArgument, match="capabilities: claims dtypes"):
        cases(dtypes="float16", capabilities=RESTRICTED)


# ---------------------------------------------------------------------------------------------------- bundles
TWO_FAMILIES = Capabilities(
    group_scores=frozenset({"top2_sum"}),
    bundles=(BUNDLES["gpt_oss"], BUNDLES["deepseek_v3"]),
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(cases(capabilities=TWO_FAMILIES))
def test_with_bundles_every_generated_case_sits_whole_inside_one_bundle(case):
    assert TWO_FAMILIES.unsupported(case.spec, case.dtype) is None, case.params()
    bundle = TWO_FAMILIES.bundle_of(case.spec, case.dtype)
    if bundle == "gpt_oss":  # all four together, never one alone
        assert case.spec.router_bias and case.spec.expert_bias and case.spec.activation == "swiglu_oai"
        assert case.spec.w13_layout == "interleaved" and case.spec.renormalize
    else:
        assert bundle == "deepseek_v3" and case.spec.scoring == "sigmoid" and not case.spec.expert_bias


def test_a_mix_of_two_bundles_is_refused_naming_each_bundles_objection():
    spec = MoESpec(
        hidden_size=8, intermediate_size=8, num_experts=4, top_k=2, scoring="sigmoid", router_bias=True
    )
    why = TWO_FAMILIES.unsupported(spec, "float32")
    assert why.startswith("no claimed bundle computes this case")
    assert "gpt_oss: w13_layout: concat not claimed" in why and "deepseek_v3: router_bias: not claimed" in why


def test_bundles_round_trip_through_json_as_a_certificate_records_them():
    assert Capabilities.from_json(TWO_FAMILIES.to_json()) == TWO_FAMILIES


def test_a_bundle_must_be_a_bundle():
    with pytest.raises(ValueError, match="bundles: expected Bundle"):
        Capabilities(bundles=({"name": "gpt_oss"},))


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_every_bundle_has_an_unaligned_must_pass_case_per_dtype_in_quick(bundle, dtype):
    caps = Capabilities(group_scores=frozenset({"max", "top2_sum"}), bundles=(BUNDLES[bundle],))
    inside = [
        c for c in must_pass_cases("quick") if c.dtype == dtype and caps.unsupported(c.spec, dtype) is None
    ]
    assert any(c.spec.hidden_size % 16 and c.spec.intermediate_size % 16 for c in inside), [
        c.name for c in inside
    ]
