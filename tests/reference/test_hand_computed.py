"""Tiny cases whose answers are worked out by hand and written here literally; both oracles must give
them. The router is the identity (H = E), so the input row *is* the logit row."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from refcheck import as_np

import moe_cts.reference.numpy_oracle as numpy_oracle
from moe_cts.reference import MoESpec, MoEWeights, torch_oracle

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

ORACLES = {"numpy": numpy_oracle, "torch": torch_oracle}
NAN, INF = math.nan, math.inf


def sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def identity_weights(spec: MoESpec, **extra) -> MoEWeights:
    """router = I (logits = x); non-gated relu experts with w13[e] = (e+1) * I, w2[e] = I, so expert e
    returns (e+1) * relu(x)."""
    E = spec.num_experts
    eye = torch.eye(E, dtype=torch.float64)
    w = MoEWeights(
        router=eye, w13=torch.stack([(e + 1) * eye for e in range(E)]), w2=eye.expand(E, E, E).clone()
    )
    return w.replace(**{k: torch.tensor(v, dtype=torch.float64) for k, v in extra.items()})


def spec_of(E: int, k: int, **kw) -> MoESpec:
    return MoESpec(
        hidden_size=E, intermediate_size=E, num_experts=E, top_k=k, gated=False, activation="relu", **kw
    )


def route(oracle: str, spec: MoESpec, logits, **extra):
    r = ORACLES[oracle].route(
        spec, identity_weights(spec, **extra), torch.tensor(logits, dtype=torch.float64)
    )
    return as_np(r.topk_ids).tolist(), as_np(r.topk_weights), as_np(r.keys)


@pytest.fixture(params=list(ORACLES))
def oracle(request):
    return request.param


# ----------------------------------------------------------------------------------------------- tie rule
def test_exact_ties_go_to_the_lower_expert_index(oracle):
    ids, w, _ = route(oracle, spec_of(4, 2), [[1.0, 3.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    assert ids == [[1, 2], [0, 1]]
    z = math.exp(1) + 2 * math.exp(3) + math.exp(2)
    np.testing.assert_allclose(w, [[math.exp(3) / z, math.exp(3) / z], [0.25, 0.25]], rtol=1e-15)


def test_saturated_sigmoid_ties_go_to_the_lower_expert_index(oracle):
    # sigmoid(40) == sigmoid(50) == 1.0 exactly in float64 (docs/bugs.md#bug-17-topk-ties)
    ids, w, _ = route(oracle, spec_of(4, 2, scoring="sigmoid"), [[40.0, 50.0, -3.0, 60.0]])
    assert ids == [[0, 1]]
    np.testing.assert_array_equal(w, [[1.0, 1.0]])


# ----------------------------------------------------------------------------------------------- grouped top-k
GROUP_LOGITS = [[4.0, -4.0, 1.0, 1.0, 2.0, 0.0, -1.0, -1.0]]  # groups {0,1} {2,3} {4,5} {6,7}


def test_grouped_topk_keeps_the_groups_with_the_best_top2_sums(oracle):
    # top-2 sums: g0 = s(4)+s(-4) = 1.0, g1 = 2 s(1) = 1.462, g2 = s(2)+s(0) = 1.381, g3 = 2 s(-1) = 0.538
    # keep g1, g2 -> experts 2..5; best keys s(2) (expert 4), then the tie s(1) = s(1) -> expert 2
    spec = spec_of(8, 2, scoring="sigmoid", n_group=4, topk_group=2, group_score="top2_sum")
    ids, w, keys = route(oracle, spec, GROUP_LOGITS)
    assert ids == [[4, 2]]
    np.testing.assert_allclose(w, [[sig(2), sig(1)]], rtol=1e-15)
    assert np.isneginf(
        keys[0, [0, 1, 6, 7]]
    ).all()  # dropped groups are -inf, not 0 (docs/bugs.md#bug-04-grouped-topk)


def test_grouped_topk_by_group_max_keeps_other_groups(oracle):
    # group max: g0 = s(4), g1 = s(1), g2 = s(2), g3 = s(-1) -> keep g0, g2 -> best: expert 0, then 4
    spec = spec_of(8, 2, scoring="sigmoid", n_group=4, topk_group=2, group_score="max")
    assert route(oracle, spec, GROUP_LOGITS)[0] == [[0, 4]]


def test_ungrouped_topk_ignores_groups(oracle):
    assert route(oracle, spec_of(8, 2, scoring="sigmoid"), GROUP_LOGITS)[0] == [[0, 4]]


# ----------------------------------------------------------------------------------------------- correction bias
def test_correction_bias_changes_the_choice_but_not_the_weights(oracle):
    # keys = s(z) + b = [1.5, 0.731, 0.881, -0.047]: experts 0 and 2; weights s(0), s(2) unbiased
    spec = spec_of(4, 2, scoring="sigmoid", correction_bias=True)
    ids, w, keys = route(oracle, spec, [[0.0, 1.0, 2.0, 3.0]], correction_bias=[1.0, 0.0, 0.0, -1.0])
    assert ids == [[0, 2]]
    np.testing.assert_allclose(w, [[0.5, sig(2)]], rtol=1e-15)
    np.testing.assert_allclose(keys, [[1.5, sig(1), sig(2), sig(3) - 1.0]], rtol=1e-15)


# ----------------------------------------------------------------------------------------------- renormalize, scaling
PROBS_LOGITS = [[math.log(1.0), math.log(2.0), math.log(3.0), math.log(4.0)]]  # softmax = 0.1, 0.2, 0.3, 0.4


@pytest.mark.parametrize(
    ("renormalize", "scale", "expected"),
    [
        (False, 1.0, [0.4, 0.3]),
        (True, 1.0, [4 / 7, 3 / 7]),
        (False, 2.5, [1.0, 0.75]),
        (
            True,
            2.5,
            [10 / 7, 7.5 / 7],
        ),  # scaled once, after renormalizing (docs/bugs.md#bug-05-routed-scaling-factor)
    ],
)
def test_weights_renormalize_then_scale(oracle, renormalize, scale, expected):
    spec = spec_of(4, 2, renormalize=renormalize, routed_scaling_factor=scale)
    ids, w, _ = route(oracle, spec, PROBS_LOGITS)
    assert ids == [[3, 2]]
    np.testing.assert_allclose(w, [expected], rtol=1e-14)


def test_renormalize_of_underflowed_weights_is_zero_not_nan(oracle):
    # sigmoid(-800) == 0.0: 0 / (0 + 1e-20) = 0 (docs/bugs.md#bug-07-renormalize-zero-by-zero)
    spec = spec_of(4, 2, scoring="sigmoid", renormalize=True)
    np.testing.assert_array_equal(route(oracle, spec, [[-800.0] * 4])[1], [[0.0, 0.0]])


# ----------------------------------------------------------------------------------------------- capacity, local mask
def test_capacity_keeps_every_first_choice_before_any_second_choice(oracle):
    # cap = ceil(0.5 * 3 tokens * 2 / 3 experts) = 1 slot per expert.
    # slot 0: t0 -> e0 kept, t1 -> e1 kept, t2 -> e0 dropped; slot 1: t0 -> e1 dropped, t1 -> e0 dropped,
    # t2 -> e2 kept. (Token-major order would keep t0's second choice instead of t1's first.)
    spec = MoESpec(hidden_size=3, intermediate_size=3, num_experts=3, top_k=2, capacity_factor=0.5)
    p = ORACLES[oracle].permute(spec, np.array([[0, 1], [1, 0], [0, 2]]))
    assert as_np(p.kept).tolist() == [[True, False], [True, False], [False, True]]
    assert as_np(p.expert_counts).tolist() == [3, 2, 1]
    assert as_np(p.kept_counts).tolist() == [1, 1, 1]
    assert as_np(p.order).tolist() == [0, 2, 5]  # flat ids t*k+j, grouped by expert
    assert as_np(p.offsets).tolist() == [0, 1, 2, 3]


def test_capacity_drops_later_tokens_in_token_order(oracle):
    spec = MoESpec(hidden_size=2, intermediate_size=2, num_experts=2, top_k=1, capacity_factor=1.0)
    p = ORACLES[oracle].permute(spec, np.array([[0], [0], [0], [1]]))  # cap = ceil(4 / 2) = 2
    assert as_np(p.kept)[:, 0].tolist() == [True, True, False, True]
    assert as_np(p.order).tolist() == [0, 1, 3]


def test_non_local_experts_contribute_exactly_zero(oracle):
    # softmax([1, 2, 3, 4]) -> experts 3, 2; only expert 3 is local: y = p3 * (3 + 1) * x
    spec = spec_of(4, 2, local_experts=(1, 3))
    x = [[1.0, 2.0, 3.0, 4.0]]
    res = ORACLES[oracle].moe_forward(spec, identity_weights(spec), torch.tensor(x, dtype=torch.float64))
    p3 = math.exp(4) / (math.exp(1) + math.exp(2) + math.exp(3) + math.exp(4))
    assert as_np(res.permutation.kept).tolist() == [[True, False]]
    np.testing.assert_allclose(as_np(res.y), [[4 * p3 * v for v in x[0]]], rtol=1e-14)


def test_expert_outputs_are_weighted_and_summed(oracle):
    # the same token with every expert local: y = (4 p3 + 3 p2) * x
    spec = spec_of(4, 2)
    x = [[1.0, 2.0, 3.0, 4.0]]
    res = ORACLES[oracle].moe_forward(spec, identity_weights(spec), torch.tensor(x, dtype=torch.float64))
    z = math.exp(1) + math.exp(2) + math.exp(3) + math.exp(4)
    np.testing.assert_allclose(
        as_np(res.y), [[(4 * math.exp(4) + 3 * math.exp(3)) / z * v for v in x[0]]], rtol=1e-14
    )


# ----------------------------------------------------------------------------------------------- NaN / inf
# Non-finite logits come in through the router bias (x = 0): a NaN in x would make the whole row NaN.
def route_bias(oracle: str, spec: MoESpec, logits, **extra):
    return route(
        oracle, spec.replace(router_bias=True), [[0.0] * spec.num_experts], router_bias=logits, **extra
    )


def test_nan_keys_rank_below_every_number(oracle):
    # sigmoid keys [nan, s(1), nan, s(0)] -> experts 1, 3, then the NaNs by index: 0
    ids, w, _ = route_bias(oracle, spec_of(4, 3, scoring="sigmoid"), [NAN, 1.0, NAN, 0.0])
    assert ids == [[1, 3, 0]]
    np.testing.assert_allclose(w[0, :2], [sig(1), 0.5], rtol=1e-15)
    assert math.isnan(w[0, 2])


def test_nan_ranks_below_minus_infinity(oracle):
    # correction bias -inf makes expert 3's key -inf; experts 0..2 are NaN: expert 3 still comes first
    spec = spec_of(4, 2, scoring="sigmoid", correction_bias=True)
    ids, _, keys = route_bias(oracle, spec, [NAN, NAN, NAN, 0.0], correction_bias=[0.0, 0.0, 0.0, -INF])
    assert np.isnan(keys[0, :3]).all() and keys[0, 3] == -INF
    assert ids == [[3, 0]]


@pytest.mark.parametrize("bad", [NAN, INF])
def test_softmax_row_with_nan_or_inf_is_all_nan_and_picks_the_first_k(oracle, bad):
    ids, w, keys = route_bias(oracle, spec_of(4, 2), [2.0, bad, 1.0, 3.0])
    assert ids == [[0, 1]]
    assert np.isnan(keys).all() and np.isnan(w).all()


def test_sigmoid_of_infinite_logits_is_an_exact_tie(oracle):
    # s(+inf) = 1 and s(-inf) = 0 exactly: experts 1 and 3 tie at 1.0 with expert 1 first
    ids, w, _ = route_bias(oracle, spec_of(4, 2, scoring="sigmoid"), [-INF, INF, 0.0, INF])
    assert ids == [[1, 3]]
    np.testing.assert_array_equal(w, [[1.0, 1.0]])


def test_a_nan_token_leaves_the_other_tokens_unchanged(oracle):
    spec = spec_of(4, 2, renormalize=True)
    w = identity_weights(spec)
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [NAN, 0.0, 0.0, 0.0], [0.5, -1.0, 2.0, 0.0]], dtype=torch.float64)
    y = as_np(ORACLES[oracle].moe_forward(spec, w, x).y)
    y_clean = as_np(ORACLES[oracle].moe_forward(spec, w, x[[0, 2]]).y)
    assert np.isnan(y[1]).all()
    np.testing.assert_allclose(y[[0, 2]], y_clean, rtol=1e-15)
    assert np.isfinite(y_clean).all()
