"""The NumPy and the PyTorch float64 oracles agree (to 1e-12 of each tensor's scale, ids exactly) on
generated specs covering every option, on exact ties, on non-finite tokens and on T = 0."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from refcheck import assert_results_agree

from moe_cts.reference import MoESpec, MoEWeights, moe_forward, presets, torch_oracle
from moe_cts.reference.spec import GATED_ACTIVATIONS, GROUP_SCORES, NONGATED_ACTIVATIONS

# NaN / inf tokens are in the spec; NumPy warns about them, the oracles handle them.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

H, I = 8, 4  # small: a case costs a few ms in each oracle


@st.composite
def specs(draw, *, max_experts: int = 12) -> MoESpec:
    """Any valid MoESpec at H=8, I=4: every router, expert, shared and dispatch option.

    - max_experts: upper bound on E (k, groups and local experts follow from E).
    Example: ``specs().example()`` -> MoESpec(hidden_size=8, intermediate_size=4, num_experts=6, ...)."""
    E = draw(st.integers(1, max_experts))
    n_group = draw(st.sampled_from([g for g in range(1, E + 1) if E % g == 0]))
    topk_group = draw(st.integers(1, n_group))
    reachable = topk_group * (E // n_group) if n_group > 1 else E
    gated = draw(st.booleans())
    n_shared = draw(st.integers(0, 2))
    return MoESpec(
        hidden_size=H,
        intermediate_size=I,
        num_experts=E,
        top_k=draw(st.integers(1, reachable)),
        scoring=draw(st.sampled_from(["softmax", "sigmoid"])),
        router_bias=draw(st.booleans()),
        correction_bias=draw(st.booleans()),
        n_group=n_group,
        topk_group=topk_group,
        group_score=draw(st.sampled_from(GROUP_SCORES)) if E // n_group >= 2 else "max",
        renormalize=draw(st.booleans()),
        routed_scaling_factor=draw(st.sampled_from([1.0, 2.5])),
        activation=draw(st.sampled_from(GATED_ACTIVATIONS if gated else NONGATED_ACTIVATIONS)),
        gated=gated,
        expert_bias=draw(st.booleans()),
        w13_layout=draw(st.sampled_from(["concat", "interleaved"])) if gated else "concat",
        n_shared_experts=n_shared,
        shared_intermediate_size=draw(st.integers(1, 4)) if n_shared else 0,
        shared_gate=bool(n_shared) and draw(st.booleans()),
        capacity_factor=draw(st.sampled_from([None, 0.5, 1.0, 1.5])),
        local_experts=draw(st.none() | st.sets(st.integers(0, E - 1)).map(lambda s: tuple(sorted(s)))),
    )


def tie_weights(spec: MoESpec, seed: int) -> MoEWeights:
    """Router, biases and inputs on {0, 1} with duplicated router rows: equal logits give bitwise equal
    scores, keys and group scores in each oracle. Logits stay non-negative integers and the correction
    bias is one constant, because ties that hold only in exact arithmetic (sigmoid(z) + sigmoid(-z) == 1,
    s_a - 0.25 + s_b == s_a + 0.25 + s_b - 0.5) become 1-ulp near-ties that two oracles may round apart."""
    g = torch.Generator().manual_seed(seed)
    w = MoEWeights.random(spec, generator=g)
    E = spec.num_experts
    router = torch.randint(0, 2, (E, H), generator=g).double()
    router[torch.randint(0, E, (E // 2,), generator=g)] = router[torch.randint(0, E, (E // 2,), generator=g)]
    changes = {"router": router}
    if spec.router_bias:
        changes["router_bias"] = torch.randint(0, 2, (E,), generator=g).double()
    if spec.correction_bias:
        changes["correction_bias"] = torch.full((E,), 0.25, dtype=torch.float64)
    return w.replace(**changes)


def make_case(spec: MoESpec, T: int, mode: str, seed: int) -> tuple[MoEWeights, torch.Tensor, np.ndarray]:
    """Weights, input and the rows holding only finite inputs, for one generated case."""
    g = torch.Generator().manual_seed(seed)
    if mode == "ties":
        return tie_weights(spec, seed), torch.randint(0, 2, (T, H), generator=g).double(), np.ones(T, bool)
    w = MoEWeights.random(spec, generator=g)
    x = torch.randn((T, H), generator=g, dtype=torch.float64)
    clean = np.ones(T, bool)
    if mode == "nonfinite" and T:
        t = int(torch.randint(0, T, (1,), generator=g))
        poison = [math.nan, math.inf, -math.inf][int(torch.randint(0, 3, (1,), generator=g))]
        x[t, int(torch.randint(0, H, (1,), generator=g))] = poison
        clean[t] = False
    return w, x, clean


@pytest.mark.parametrize("mode", ["normal", "ties", "nonfinite"])
@given(spec=specs(), T=st.integers(0, 9), seed=st.integers(0, 2**63 - 1))
def test_oracles_agree_on_generated_specs(mode, spec, T, seed):
    w, x, clean = make_case(spec, T, mode, seed)
    assert_results_agree(moe_forward(spec, w, x), torch_oracle.moe_forward(spec, w, x), clean_rows=clean)


# Curated specs so that every option is exercised whatever hypothesis draws (the ci profile runs few).
CURATED = {
    "zero tokens, grouped sigmoid": (
        MoESpec(H, I, 8, 3, scoring="sigmoid", correction_bias=True, n_group=4, topk_group=2),
        0,
    ),
    "k == E": (MoESpec(H, I, 5, 5, renormalize=True), 7),
    "one expert": (MoESpec(H, I, 1, 1, n_shared_experts=1, shared_intermediate_size=3, shared_gate=True), 4),
    "group max, one expert per group": (
        MoESpec(H, I, 6, 2, n_group=6, topk_group=3, group_score="max", routed_scaling_factor=2.5),
        9,
    ),
    "gpt-oss style": (
        MoESpec(
            H,
            I,
            8,
            4,
            router_bias=True,
            renormalize=True,
            activation="swiglu_oai",
            expert_bias=True,
            w13_layout="interleaved",
        ),
        9,
    ),
    "non-gated book FFN with capacity": (
        MoESpec(H, I, 4, 2, gated=False, activation="gelu", expert_bias=True, capacity_factor=0.5),
        9,
    ),
    "gelu_tanh GeGLU, local experts": (MoESpec(H, I, 6, 2, activation="gelu_tanh", local_experts=(1, 4)), 8),
    "relu, no local experts at all": (
        MoESpec(H, I, 4, 1, gated=False, activation="relu", local_experts=()),
        5,
    ),
}


@pytest.mark.parametrize("mode", ["normal", "ties", "nonfinite"])
@pytest.mark.parametrize("case", list(CURATED))
def test_oracles_agree_on_curated_specs(case, mode):
    spec, T = CURATED[case]
    w, x, clean = make_case(spec, T, mode, seed=7)
    assert_results_agree(moe_forward(spec, w, x), torch_oracle.moe_forward(spec, w, x), clean_rows=clean)


@pytest.mark.parametrize("name", presets.names())
def test_oracles_agree_on_scaled_presets(name):
    spec = presets.scaled(name, hidden_size=H)
    w, x, clean = make_case(spec, 16, "normal", seed=3)
    assert_results_agree(moe_forward(spec, w, x), torch_oracle.moe_forward(spec, w, x), clean_rows=clean)


def test_torch_oracle_bounds_its_temporaries(monkeypatch):
    """Chunking (rank cube, weight gathers) changes no bit of the result: run with tiny chunks."""
    spec = MoESpec(
        H, I, 8, 3, scoring="sigmoid", correction_bias=True, n_group=4, topk_group=2, expert_bias=True
    )
    w, x, _ = make_case(spec, 9, "ties", seed=5)
    whole = torch_oracle.moe_forward(spec, w, x)
    monkeypatch.setattr(torch_oracle, "CHUNK_ELEMS", 1)
    assert_results_agree(whole, torch_oracle.moe_forward(spec, w, x), rtol=0.0)


def test_torch_oracle_upcasts_low_precision_weights_itself():
    """bf16 weights give the float64 result of the bf16 values (the oracle of already-rounded inputs)."""
    spec = presets.scaled("qwen2-57b-a14b")
    w = MoEWeights.random(spec, seed=2, dtype=torch.bfloat16)
    x = torch.randn(6, spec.hidden_size, dtype=torch.float64)
    assert_results_agree(
        torch_oracle.moe_forward(spec, w, x), torch_oracle.moe_forward(spec, w.to(dtype=torch.float64), x)
    )
