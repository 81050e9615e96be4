"""Routing scenarios: built by constructing router weights and inputs, so the router always runs for real.

Most scenarios steer routing through one *control column* c = 0 of x: router[:, c] holds a per-expert
logit offset o (E,) and x[t, c] a per-row switch, so logits[t] = (random part) + x[t, c] * o.

    scenario            construction                                              edge it aims at
    uniform             nothing                                                   the common case
    zipf(s)             o_e = -s * log(rank_e + 1), x[:, c] = 1                   skewed expert load
    one_hot_expert      o_hot = +4                                                one expert takes most tokens
    all_to_one          o_hot = +12                                               every token's first choice is one expert
    empty_experts(f)    o_e = -30 for a fraction f of experts (>= k stay live)    experts with zero tokens
    exact_ties          softmax: two equal router rows at the k-th place;         tie rule (lower id wins),
                        sigmoid: k+1 experts saturated (o = +60 -> score 1.0)     bug-17-topk-ties
    near_ties           two router rows one ulp (of the dtype) apart              gap within score rounding
    nan_rows(f)         x[t, c] = NaN on a fraction f of rows                     bug-06-nan-router-logits
    inf_rows(f)         x[t, c] = +inf on a fraction f of rows (logits +-inf)     softmax NaN / sigmoid 0-1 ties
    sigmoid_underflow(f) x[t, c] = 1, o = -200 on a fraction f of rows            bug-07-renormalize-zero-by-zero
    large_logits(s)     router *= s: logits of std ~s (softmax must subtract       exp overflow, one-hot scores
                        the row max; exp(88) already overflows fp32)
    beyond_clamp(s)     w13, b13 *= s: gate/up pre-activations of std ~s, past     bug-11-gate-up-layout (the
                        gpt-oss's swiglu_limit 7 for ~1 in 12 at s = 4;           clamp must act)
                        w2 /= s keeps the output's magnitude
    overflow_before_weight(s) one expert's w2 scaled to max |w2| = s, its logit   weight before the cast
                        -(log factor + 2) (k = E keeps it chosen): its output    (Capabilities.weight_before_cast)
                        passes fp16's max, its weighted term is small             bug-15-fp16-overflow-and-tiny-scales
    integer_experts(s)  x, w13, b13 in {-2..2}, w2, b2 in {-s..s}, router in         one rounding of w * expert
                        {-1, 0, 1} / 8: with relu the expert output is an exact     output (single_rounding.py,
                        integer wider than 16-bit floats hold (curated only)        bug-02-router-weight-after-cast)

bug-NN-... names are anchors of docs/bugs.md (e.g. docs/bugs.md#bug-17-topk-ties).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from moe_cts.reference.spec import MoESpec

CONTROL_COL = 0


@dataclass(frozen=True)
class Scenario:
    name: str  # one of SCENARIOS
    params: tuple[tuple[str, Any], ...] = ()  # sorted (key, value) pairs; values are JSON scalars

    def __post_init__(self) -> None:
        if self.name not in SCENARIOS:
            raise ValueError(f"scenario: expected one of {sorted(SCENARIOS)}, got {self.name!r}")
        params = tuple(sorted(dict(self.params).items()))
        allowed = SCENARIOS[self.name][1]
        unknown = sorted(set(dict(params)) - set(allowed))
        if unknown:
            raise ValueError(f"scenario {self.name}: expected params among {sorted(allowed)}, got {unknown}")
        object.__setattr__(self, "params", params)

    @classmethod
    def make(cls, name: str, **params: Any) -> Scenario:
        return cls(name, tuple(params.items()))

    def param(self, key: str) -> Any:
        return dict(self.params).get(key, SCENARIOS[self.name][1][key])

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}(" + ",".join(f"{k}={v}" for k, v in self.params) + ")"

    def to_json(self) -> list[Any]:
        return [self.name, dict(self.params)] if self.params else [self.name]

    @classmethod
    def from_json(cls, v: Any) -> Scenario:
        if isinstance(v, str):
            return cls(v)
        if isinstance(v, Mapping):
            return cls(v["name"], tuple(v.get("params", {}).items()))
        return cls(v[0], tuple((v[1] if len(v) > 1 else {}).items()))

    def apply(
        self,
        spec: MoESpec,
        tensors: dict[str, torch.Tensor],
        x: torch.Tensor,
        g: torch.Generator,
        dtype: torch.dtype,
    ) -> None:
        """Edit the float32 router tensors and x in place (before the cast to `dtype`)."""
        SCENARIOS[self.name][0](self, spec, tensors, x, g, dtype)


# ----------------------------------------------------------------------------------------------- helpers
def _perm(n: int, g: torch.Generator) -> list[int]:
    return torch.randperm(n, generator=g).tolist()


def _rows(x: torch.Tensor, fraction: float, g: torch.Generator) -> list[int]:
    """A fraction of the rows (at least one when there are rows), chosen by the generator."""
    T = x.shape[0]
    n = min(T, max(1, round(fraction * T))) if T else 0
    return sorted(_perm(T, g)[:n])


def _steer(tensors: dict[str, torch.Tensor], x: torch.Tensor, offsets: torch.Tensor, rows=None) -> None:
    """logits[t] += offsets for the given rows (all rows when None); other rows get x[t, c] = 0."""
    tensors["router"][:, CONTROL_COL] = offsets
    x[:, CONTROL_COL] = 0.0 if rows is not None else 1.0
    if rows is not None and rows:
        x[rows, CONTROL_COL] = 1.0


def _equalize(tensors: dict[str, torch.Tensor], experts: list[int]) -> None:
    """Make the router rows (and router/correction biases) of `experts` equal to the first one's."""
    a = experts[0]
    for name in ("router", "router_bias", "correction_bias"):
        t = tensors.get(name)
        if t is not None:
            t[experts] = t[a].clone()


# ----------------------------------------------------------------------------------------------- scenarios
def _uniform(sc, spec, tensors, x, g, dtype) -> None:
    del sc, spec, tensors, x, g, dtype


def _zipf(sc, spec, tensors, x, g, dtype) -> None:
    ranks = torch.tensor(_perm(spec.num_experts, g), dtype=torch.float32)
    _steer(tensors, x, -float(sc.param("s")) * torch.log(ranks + 1.0))


def _hot(boost: float):
    def build(sc, spec, tensors, x, g, dtype) -> None:
        o = torch.zeros(spec.num_experts)
        o[_perm(spec.num_experts, g)[0]] = boost
        _steer(tensors, x, o)

    return build


def _empty(sc, spec, tensors, x, g, dtype) -> None:
    E, k = spec.num_experts, spec.top_k
    n_empty = min(math.floor(float(sc.param("fraction")) * E), E - k)
    o = torch.zeros(E)
    o[_perm(E, g)[:n_empty]] = -30.0
    _steer(tensors, x, o)


def _exact_ties(sc, spec, tensors, x, g, dtype) -> None:
    E, k = spec.num_experts, spec.top_k
    order = _perm(E, g)
    o = torch.zeros(E)
    if spec.scoring == "sigmoid":
        # sigmoid(60) == 1.0 in float32 and float64 alike: k+1 experts tie for k places
        tied = order[: min(E, k + 1)]
        o[tied] = 60.0
        if spec.correction_bias:  # keys = score + bias: the biases must tie too
            tensors["correction_bias"][tied] = tensors["correction_bias"][tied[0]].clone()
    else:
        # k-1 clear winners, then two experts with equal router rows contest the k-th place
        winners, tied = order[: k - 1], order[k - 1 : k + 1]
        o[winners] = 6.0
        o[tied] = 3.0
        if len(tied) == 2:
            _equalize(tensors, tied)
    _steer(tensors, x, o)


def _ulp(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    eps = torch.finfo(dtype).eps
    return eps * torch.exp2(torch.floor(torch.log2(v.abs().clamp_min(torch.finfo(dtype).tiny))))


def _near_ties(sc, spec, tensors, x, g, dtype) -> None:
    E, k = spec.num_experts, spec.top_k
    order = _perm(E, g)
    o = torch.zeros(E)
    winners, pair = order[: k - 1], order[k - 1 : k + 1]
    o[winners] = 6.0
    o[pair] = 3.0
    if len(pair) == 2:
        a, b = pair
        r = tensors["router"]
        r[a] = r[a].to(dtype).float()
        r[b] = r[a]
        j = _perm(spec.hidden_size, g)[0] if spec.hidden_size > 1 else 0
        if j == CONTROL_COL:
            j = spec.hidden_size - 1
        r[b, j] = r[a, j] + _ulp(r[a, j], dtype)
        for name in ("router_bias", "correction_bias"):
            if tensors.get(name) is not None:
                tensors[name][b] = tensors[name][a]
    _steer(tensors, x, o)


def _nan_rows(sc, spec, tensors, x, g, dtype) -> None:
    x[_rows(x, float(sc.param("fraction")), g), CONTROL_COL] = float("nan")


def _inf_rows(sc, spec, tensors, x, g, dtype) -> None:
    # router[:, c] has random signs, so the rows' logits are a mix of +inf and -inf
    x[_rows(x, float(sc.param("fraction")), g), CONTROL_COL] = float("inf")


def _sigmoid_underflow(sc, spec, tensors, x, g, dtype) -> None:
    # logits near -200: sigmoid underflows to 0 in float32 for every expert of the row
    _steer(tensors, x, torch.full((spec.num_experts,), -200.0), rows=_rows(x, float(sc.param("fraction")), g))


def _large_logits(sc, spec, tensors, x, g, dtype) -> None:
    # a uniform scale keeps the ranking of the random logits: ties stay as rare as in `uniform`
    tensors["router"] *= float(sc.param("s"))


def _beyond_clamp(sc, spec, tensors, x, g, dtype) -> None:
    # scaling w13 (and its bias) scales gate and up; the clamp (swiglu_limit) must then cut the gate
    # from above and up on both sides. Dividing w2 keeps the expert output, so 16-bit outputs stay in range.
    s = float(sc.param("s"))
    tensors["w13"] *= s
    if tensors.get("b13") is not None:
        tensors["b13"] *= s
    tensors["w2"] /= s


def _overflow_before_weight(sc, spec, tensors, x, g, dtype) -> None:
    # One expert's down projection grows by a factor f and its router logit drops by log(f) + 2: with k = E it
    # is still chosen, its output passes fp16's 65504, and its router weight (~1 / (e^2 f E)) brings the
    # weighted term back below one. Only a kernel that weights in fp32 before the cast keeps it finite.
    # The weights themselves stay finite in 16 bits: the largest of the expert's w2 becomes s (< 65504), so the
    # factor is s / max|w2| and outputs of order one grow past fp16's max.
    hot = _perm(spec.num_experts, g)[0]
    f = float(sc.param("s")) / max(float(tensors["w2"][hot].abs().max()), 1e-30)
    tensors["w2"][hot] *= f
    if tensors.get("b2") is not None:
        tensors["b2"][hot] *= f
    o = torch.zeros(spec.num_experts)
    o[hot] = -(math.log(f) + 2.0)
    _steer(tensors, x, o)


def _integer_experts(sc, spec, tensors, x, g, dtype) -> None:
    # Small integers make every expert product exact in fp32 and every relu activation exact in 16 bits
    # (|x @ w13.T| <= 4 H <= 256 for H <= 64), wherever an implementation stores it: the expert output eo is
    # then an integer known exactly, of more bits than the output dtype holds (s = 256, I = 16: |eo| ~ 5e3,
    # 13 bits), so one rounding of w * eo and two (rnd(w * rnd(eo))) differ and no error bound blurs which is
    # which. Router entries in {-1, 0, 1} / 8 make the logits multiples of 1/8 below 8, exact in 16 bits too:
    # the weights are then fp32 softmax values (not powers of two) known to a few fp32 ulps.
    s = int(sc.param("s"))
    x.copy_(torch.randint(-2, 3, x.shape, generator=g).float())
    tensors["router"].copy_(torch.randint(-1, 2, tensors["router"].shape, generator=g).float() / 8)
    for name, lim in (("w13", 2), ("b13", 2), ("w2", s), ("b2", s)):
        t = tensors.get(name)
        if t is not None:
            t.copy_(torch.randint(-lim, lim + 1, t.shape, generator=g).float())


_Builder = Callable[..., None]
#: name -> (builder, parameter defaults)
SCENARIOS: dict[str, tuple[_Builder, dict[str, Any]]] = {
    "uniform": (_uniform, {}),
    "zipf": (_zipf, {"s": 1.2}),
    "one_hot_expert": (_hot(4.0), {}),
    "all_to_one": (_hot(12.0), {}),
    "empty_experts": (_empty, {"fraction": 0.5}),
    "exact_ties": (_exact_ties, {}),
    "near_ties": (_near_ties, {}),
    "nan_rows": (_nan_rows, {"fraction": 0.25}),
    "inf_rows": (_inf_rows, {"fraction": 0.25}),
    "sigmoid_underflow": (_sigmoid_underflow, {"fraction": 0.25}),
    "large_logits": (_large_logits, {"s": 50.0}),
    "beyond_clamp": (_beyond_clamp, {"s": 4.0}),
    "overflow_before_weight": (_overflow_before_weight, {"s": 5.0e4}),
    "integer_experts": (_integer_experts, {"s": 256}),
}
#: scenarios built for one curated check (must_pass.json), left out of generation: integer_experts only makes
#: exact experts for small H and relu, and adds nothing to the random draws elsewhere
CURATED_ONLY = ("integer_experts",)
