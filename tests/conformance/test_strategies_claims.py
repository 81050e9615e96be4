"""Generation draws only what an implementation claims: every generated case of a restricted implementation is
inside its Capabilities, and a required (mandatory) feature is always on."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import InvalidArgument

from moe_cts.conformance.engine.protocol import Capabilities
from moe_cts.conformance.engine.strategies import cases

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
