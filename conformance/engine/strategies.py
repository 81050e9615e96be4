"""hypothesis strategies for conformance cases, biased to the edges kernels get wrong.

    shapes()    -> Shape(T, H, I, E, k)   T in {0, 1, tile-1, tile, tile+1}, primes, H/I not multiples of 16, k = E
    specs()     -> MoESpec                 every routing and expert variant of the oracle
    scenarios() -> Scenario                routing scenarios (moe_cts.conformance.engine.scenarios)
    cases()     -> Case                    spec, T, dtype, scenario, value distribution, 64-bit seed

Every argument is keyword-only, takes a value or a strategy, and is validated first (InvalidArgument).
Tensors are never drawn element by element: a case draws a 64-bit seed and builds them with a
torch.Generator (moe_cts.conformance.engine.cases).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.strategies import SearchStrategy

from moe_cts.conformance.engine.cases import DISTRIBUTIONS, DTYPES, Case
from moe_cts.conformance.engine.protocol import NEEDS_WEIGHT_BEFORE_CAST, Capabilities
from moe_cts.conformance.engine.scenarios import CURATED_ONLY, SCENARIOS, Scenario
from moe_cts.reference.spec import GATED_ACTIVATIONS, NONGATED_ACTIVATIONS, MoESpec

PRIMES = (2, 3, 5, 7, 11, 13, 17, 31, 61, 127, 257)
#: H and I that are not multiples of 16 (masked K/N tails) next to the aligned ones
ODD_WIDTHS = (8, 17, 24, 40, 48, 72)
DEFAULT_TILE = 16
_EITHER = st.booleans()


@dataclass(frozen=True)
class Shape:
    num_tokens: int  # T
    hidden_size: int  # H
    intermediate_size: int  # I
    num_experts: int  # E
    top_k: int  # k <= E


def _strategy(value: Any) -> SearchStrategy:
    return value if isinstance(value, SearchStrategy) else st.just(value)


def _choices(name: str, value: Any, allowed: Sequence[Any]) -> SearchStrategy:
    """A strategy, a single allowed value, or a non-empty sequence of allowed values."""
    if isinstance(value, SearchStrategy):
        return value
    values = [value] if isinstance(value, str) or not isinstance(value, Sequence) else list(value)
    bad = [v for v in values if v not in allowed]
    if not values or bad:
        raise InvalidArgument(f"{name}: expected a non-empty choice of {list(allowed)}, got {value!r}")
    return st.sampled_from(values)


def _positive(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, SearchStrategy):
        return
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise InvalidArgument(f"{name}: expected an int >= {minimum}, got {value!r}")


def _edge_int(lo: int, hi: int, edges: Sequence[int]) -> SearchStrategy[int]:
    """An int in [lo, hi], half the time one of the edges inside that range."""
    inside = sorted({e for e in edges if lo <= e <= hi})
    uniform = st.integers(lo, hi)
    return st.one_of(st.sampled_from(inside), uniform) if inside else uniform


@st.composite
def _shapes(draw, max_tokens, max_hidden, max_intermediate, max_experts, tile) -> Shape:
    mt, mh, mi, me, tl = (
        draw(_strategy(v)) for v in (max_tokens, max_hidden, max_intermediate, max_experts, tile)
    )
    T = draw(_edge_int(0, mt, (0, 1, tl - 1, tl, tl + 1)))
    H = draw(_edge_int(1, mh, (*ODD_WIDTHS, 16, 32, 64)))
    I = draw(_edge_int(1, mi, (*ODD_WIDTHS, 16, 32, 64)))
    E = draw(_edge_int(1, me, (*PRIMES, 8, 16, 64, 128, 256)))
    k = draw(st.one_of(st.just(E), st.integers(1, min(E, 8)), st.just(1)))
    return Shape(T, H, I, E, k)


def shapes(
    *,
    max_tokens: int | SearchStrategy[int] = 40,
    max_hidden: int | SearchStrategy[int] = 64,
    max_intermediate: int | SearchStrategy[int] = 64,
    max_experts: int | SearchStrategy[int] = 16,
    tile: int | SearchStrategy[int] = DEFAULT_TILE,
) -> SearchStrategy[Shape]:
    """Shapes biased to the edges.

    - max_tokens: largest T (T = 0, 1, tile-1, tile, tile+1 drawn often). Default 40.
    - max_hidden / max_intermediate: largest H / I (widths that are not multiples of 16 drawn often). Default 64.
    - max_experts: largest E (primes drawn often; k = E and k = 1 drawn often). Default 16.
    - tile: the BLOCK_M the T edges sit around. Default 16.

    Example: ``shapes(max_tokens=17, max_experts=8).example()`` -> ``Shape(16, 40, 24, 7, 7)``.
    """
    _positive("max_tokens", max_tokens, 0)
    for name, v in (
        ("max_hidden", max_hidden),
        ("max_intermediate", max_intermediate),
        ("max_experts", max_experts),
        ("tile", tile),
    ):
        _positive(name, v)
    return _shapes(max_tokens, max_hidden, max_intermediate, max_experts, tile)


_shapes_strategy = shapes  # the public names are shadowed by keyword arguments below


def _flag(caps: Capabilities | None, name: str, claimed: bool) -> SearchStrategy[bool]:
    """A feature's draw under the claims: always when required, never when not claimed, else either."""
    if caps is None:
        return st.booleans()
    if name in caps.required:
        return st.just(True)
    return st.booleans() if claimed else st.just(False)


def _acts(caps: Capabilities | None, gated: bool) -> tuple[str, ...]:
    acts = GATED_ACTIVATIONS if gated else NONGATED_ACTIVATIONS
    if caps is not None:
        acts = tuple(a for a in acts if a in (caps.gated_activations if gated else caps.nongated_activations))
    return acts


@st.composite
def _specs(draw, shape_st, scorings, gated, grouped, shared, capacity, local, caps=None) -> MoESpec:
    shape: Shape = draw(shape_st)
    H, I, E, k = shape.hidden_size, shape.intermediate_size, shape.num_experts, shape.top_k
    if caps is not None and caps.bundles:  # a whole family first, then features inside it
        caps = draw(st.sampled_from(caps.bundles)).features
    if caps is not None:
        assume(caps.min_group_size <= E)  # rare (E = 1): hypothesis draws again
    is_gated = draw(_strategy(gated))
    if caps is not None and not _acts(caps, is_gated):  # only one kind of expert is claimed
        is_gated = not is_gated
    routing = caps.routing if caps is not None else frozenset()
    factors = (1.0, 1.0, 2.5, 16.0)  # half the time unscaled, as without claims
    if caps is not None and "scaling" in caps.required:
        factors = (2.5, 16.0)
    elif caps is not None and "scaling" not in routing:
        factors = (1.0,)
    fields: dict[str, Any] = {
        "hidden_size": H, "intermediate_size": I, "num_experts": E, "top_k": k,
        "scoring": draw(scorings if caps is None else scorings.filter(lambda v: v in caps.scorings)),
        "gated": is_gated,
        "activation": draw(st.sampled_from(_acts(caps, is_gated))),
        "renormalize": draw(_flag(caps, "renormalize", "renormalize" in routing)),
        "routed_scaling_factor": draw(st.sampled_from(factors)),
        "router_bias": draw(_flag(caps, "router_bias", "router_bias" in routing)),
        "correction_bias": draw(_flag(caps, "correction_bias", "correction_bias" in routing)),
        "expert_bias": draw(_flag(caps, "expert_bias", caps is None or caps.expert_bias)),
    }  # fmt: skip
    if is_gated:
        layouts = ("concat", "interleaved")
        fields["w13_layout"] = draw(
            st.sampled_from([v for v in layouts if caps is None or v in caps.layouts])
        )
    may_group = caps is None or "grouped" in routing
    if may_group and (draw(_strategy(grouped)) or (caps is not None and "grouped" in caps.required)):
        divisors = [g for g in range(2, E + 1) if E % g == 0 and E // g >= 2]
        if divisors:
            G = draw(st.sampled_from(divisors))
            per = E // G
            topk_group = draw(st.integers(max(1, -(-k // per)), G))
            fields.update(
                n_group=G,
                topk_group=topk_group,
                group_score=draw(st.sampled_from(sorted(caps.group_scores) if caps else ("top2_sum", "max"))),
            )
    want_shared = draw(_strategy(shared)) or (caps is not None and "shared_experts" in caps.required)
    if want_shared and draw(_flag(caps, "shared_experts", caps is None or caps.shared_experts)):
        gate = _flag(caps, "shared_gate", caps is None or caps.shared_gate)
        fields.update(
            n_shared_experts=draw(st.integers(1, 2)),
            shared_intermediate_size=I
            if caps is not None and caps.shared_size == "intermediate"
            else draw(st.integers(1, I)),
            shared_gate=draw(gate),
        )
    if draw(_strategy(capacity)) and draw(st.booleans()):
        fields["capacity_factor"] = draw(st.sampled_from((0.5, 1.0, 1.25)))
    if draw(_strategy(local)) and draw(st.booleans()):
        fields["local_experts"] = tuple(sorted(draw(st.sets(st.integers(0, E - 1), min_size=1, max_size=E))))
    return MoESpec(**fields)


def specs(
    *,
    shapes: SearchStrategy[Shape] | None = None,
    scorings: Any = ("softmax", "sigmoid"),
    gated: bool | SearchStrategy[bool] = _EITHER,
    grouped: bool | SearchStrategy[bool] = _EITHER,
    shared: bool | SearchStrategy[bool] = True,
    capacity: bool | SearchStrategy[bool] = False,
    local: bool | SearchStrategy[bool] = False,
    capabilities: Capabilities | None = None,
) -> SearchStrategy[MoESpec]:
    """Valid MoE specs over every routing and expert variant of the oracle.

    - shapes: a strategy of Shape. Default ``shapes()``.
    - scorings: "softmax" and/or "sigmoid" (value, list or strategy). Default both.
    - gated: GLU experts or plain Linear-act-Linear. Default either.
    - grouped: allow grouped top-k (n_group > 1). Default either.
    - shared: allow shared experts (drawn half the time). Default True.
    - capacity: allow a capacity factor (Switch dropping). Default False (few kernels claim it).
    - local: allow an expert-parallel local mask. Default False.
    - capabilities: draw only what they claim (scorings, activations, layouts, routing variants, expert bias,
      shared experts and gate; capacity and local only when claimed); a feature in ``required`` is always on.
      Default None: everything.

    Example: ``specs(scorings="sigmoid", grouped=True).example()``.
    """
    if shapes is not None and not isinstance(shapes, SearchStrategy):
        raise InvalidArgument(f"shapes: expected a strategy of Shape, got {shapes!r}")
    for name, v in (
        ("gated", gated),
        ("grouped", grouped),
        ("shared", shared),
        ("capacity", capacity),
        ("local", local),
    ):
        if not isinstance(v, (bool, SearchStrategy)):
            raise InvalidArgument(f"{name}: expected a bool or a strategy, got {v!r}")
    if capabilities is not None and not isinstance(capabilities, Capabilities):
        raise InvalidArgument(f"capabilities: expected a Capabilities, got {capabilities!r}")
    sc = _choices("scorings", scorings, ("softmax", "sigmoid"))
    if capabilities is not None:
        if not capabilities.bundles:  # with bundles, each bundle's own scorings filter inside _specs
            sc = sc.filter(lambda v: v in capabilities.scorings)
        capacity = capacity if capabilities.capacity_dropping else False
        local = local if capabilities.local_mask else False
    return _specs(
        shapes if shapes is not None else _shapes_strategy(),
        sc,
        gated,
        grouped,
        shared,
        capacity,
        local,
        capabilities,
    )


_specs_strategy = specs


@st.composite
def _scenarios(draw, names) -> Scenario:
    name = draw(names)
    defaults = SCENARIOS[name][1]
    params: dict[str, Any] = {}
    if "s" in defaults:
        params["s"] = draw(st.sampled_from((0.8, 1.2, 2.0)))
    if "fraction" in defaults:
        params["fraction"] = draw(st.sampled_from((0.1, 0.25, 0.5)))
    return Scenario.make(name, **params)


#: scenarios generation draws by default: all but those that need a claim (protocol.NEEDS_WEIGHT_BEFORE_CAST,
#: run as must-pass cases for the implementations that make it) and those built for one curated check
GENERATED_SCENARIOS = tuple(n for n in SCENARIOS if n not in NEEDS_WEIGHT_BEFORE_CAST + CURATED_ONLY)


def scenarios(*, names: Any = GENERATED_SCENARIOS) -> SearchStrategy[Scenario]:
    """Routing scenarios with their parameters.

    - names: scenario names (value, list or strategy). Default GENERATED_SCENARIOS (every scenario of
      moe_cts.conformance.engine.scenarios.SCENARIOS that needs no claim and is not CURATED_ONLY),
      uniform included.

    Example: ``scenarios(names=["exact_ties", "nan_rows"]).example()`` -> ``Scenario('nan_rows', (('fraction', 0.25),))``.
    """
    return _scenarios(_choices("names", names, tuple(SCENARIOS)))


_scenarios_strategy = scenarios


@st.composite
def _cases(draw, spec_st, tokens, dtypes, scenario_st, distributions) -> Case:
    spec = draw(spec_st)
    T = draw(_edge_int(0, draw(_strategy(tokens)), (0, 1, 15, 16, 17)))
    return Case(
        spec=spec,
        num_tokens=T,
        dtype=draw(dtypes),
        scenario=draw(scenario_st),
        distribution=draw(distributions),
        seed=draw(st.integers(0, 2**64 - 1)),
    )


def cases(
    *,
    specs: SearchStrategy[MoESpec] | None = None,
    dtypes: Any = tuple(DTYPES),
    max_tokens: int | SearchStrategy[int] = 40,
    max_hidden: int | SearchStrategy[int] = 64,
    max_intermediate: int | SearchStrategy[int] = 64,
    max_experts: int | SearchStrategy[int] = 16,
    scenarios: SearchStrategy[Scenario] | None = None,
    distributions: Any = DISTRIBUTIONS,
    capabilities: Capabilities | None = None,
) -> SearchStrategy[Case]:
    """Conformance cases: a spec, T, dtype, routing scenario, value distribution and a 64-bit seed.

    - specs: a strategy of MoESpec. Default ``specs(shapes=shapes(max_hidden=..., ...))``.
    - dtypes: "float32" / "float16" / "bfloat16" (value, list or strategy). Default all three.
    - max_tokens: largest T (0, 1, 15, 16, 17 drawn often). Default 40.
    - max_hidden / max_intermediate / max_experts: bounds of the default specs. Default 64 / 64 / 16.
    - scenarios: a strategy of Scenario. Default ``scenarios()``.
    - distributions: "normal" / "uniform" / "outliers". Default all.
    - capabilities: an implementation's Capabilities: only claimed dtypes, at most its max_experts, and the
      default specs draw only claimed features (``specs(capabilities=...)``). Default None: everything.

    Example: ``cases(dtypes="bfloat16", max_tokens=17).example().case_id`` -> ``"c1-eNp..."``.
    """
    _positive("max_tokens", max_tokens, 0)
    for name, v in (
        ("max_hidden", max_hidden),
        ("max_intermediate", max_intermediate),
        ("max_experts", max_experts),
    ):
        _positive(name, v)
    if specs is not None and not isinstance(specs, SearchStrategy):
        raise InvalidArgument(f"specs: expected a strategy of MoESpec, got {specs!r}")
    if scenarios is not None and not isinstance(scenarios, SearchStrategy):
        raise InvalidArgument(f"scenarios: expected a strategy of Scenario, got {scenarios!r}")
    if (
        capabilities is not None
        and capabilities.max_experts is not None
        and not isinstance(max_experts, SearchStrategy)
    ):
        max_experts = max(1, min(max_experts, capabilities.max_experts))
    spec_st = (
        specs
        if specs is not None
        else _specs_strategy(
            shapes=shapes(
                max_tokens=0,
                max_hidden=max_hidden,
                max_intermediate=max_intermediate,
                max_experts=max_experts,
            ),
            capabilities=capabilities,
        )
    )
    dt = _choices("dtypes", dtypes, tuple(DTYPES))
    if capabilities is not None:
        claimed = [
            d
            for d in DTYPES
            if d in capabilities.dtypes
            and not isinstance(dtypes, SearchStrategy)
            and d in ([dtypes] if isinstance(dtypes, str) else list(dtypes))
        ]
        if not claimed and not isinstance(dtypes, SearchStrategy):
            raise InvalidArgument(
                f"capabilities: claims dtypes {sorted(capabilities.dtypes)}, none of {dtypes!r}"
            )
        dt = st.sampled_from(claimed) if claimed else dt.filter(lambda v: v in capabilities.dtypes)
    dist = _choices("distributions", distributions, DISTRIBUTIONS)
    sc = scenarios if scenarios is not None else _scenarios_strategy()
    return _cases(spec_st, max_tokens, dt, sc, dist)
