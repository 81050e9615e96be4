"""The MoE layer specification: what one layer computes, independent of any implementation.

`MoESpec` is a frozen, validated description of one MoE layer; `MoEWeights` holds its tensors.
Both raise `SpecError` (one error type) naming the field and the expected value.

Canonical weight layout (transformers 5.x / vLLM):

    tensor            shape                 meaning
    router            (E, H)                logits = x @ router.T (+ router_bias)
    router_bias       (E,)                  only if spec.router_bias (gpt-oss)
    correction_bias   (E,)                  only if spec.correction_bias; selection only (DeepSeek-V3)
    w13               (E, 2I, H) gated      gate rows then up rows ("concat") or alternating ("interleaved")
                      (E, I, H)  non-gated
    b13               (E, 2I) / (E, I)      only if spec.expert_bias, same row layout as w13
    w2                (E, H, I)             down projection
    b2                (E, H)                only if spec.expert_bias
    shared_w13        (2*S, H) / (S, H)     S = n_shared_experts * shared_intermediate_size, concat layout
    shared_w2         (H, S)
    shared_gate       (1, H)                only if spec.shared_gate (Qwen2-MoE)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import torch

from moe_cts.reference import hf, quant
from moe_cts.reference.errors import SpecError

Scoring = Literal["softmax", "sigmoid"]
GroupScore = Literal["max", "top2_sum"]
Activation = Literal["silu", "gelu", "gelu_tanh", "swiglu_oai", "relu"]
Layout = Literal["concat", "interleaved"]

SCORINGS = ("softmax", "sigmoid")
GROUP_SCORES = ("max", "top2_sum")
GATED_ACTIVATIONS = ("silu", "gelu", "gelu_tanh", "swiglu_oai")
NONGATED_ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu")
LAYOUTS = ("concat", "interleaved")

#: Added to the renormalization denominator, as DeepSeek-V3 does; keeps 0/0 away
#: (docs/bugs.md#bug-07-renormalize-zero-by-zero).
RENORM_EPS = 1e-20


def _require(cond: bool, field_name: str, expected: str, got: Any) -> None:
    if not cond:
        raise SpecError(field_name, expected, got)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class MoESpec:
    """One MoE layer. Pseudo-code of what it computes (docs/semantics.md has the formulas)::

    logits = x @ router.T + router_bias                      # (T, E)
    scores = softmax(logits) | sigmoid(logits)               # (T, E)
    ids    = topk(scores + correction_bias, k, groups, ties -> lower index)
    w      = scores[ids]; w /= sum(w) + 1e-20 if renormalize; w *= routed_scaling_factor
    y[t]   = sum_j w[t, j] * kept[t, j] * FFN_{ids[t, j]}(x[t]) + shared(x[t])
    """

    # -- shape
    hidden_size: int  # H, model width
    intermediate_size: int  # I, per routed expert
    num_experts: int  # E, routed experts (global)
    top_k: int  # k, experts per token, 1 <= k <= E
    # -- router
    scoring: Scoring = "softmax"  # softmax over E, or elementwise sigmoid
    router_bias: bool = False  # logits get a bias [E] (gpt-oss)
    correction_bias: bool = False  # bias [E] added to scores for selection only (DeepSeek-V3)
    n_group: int = 1  # expert groups for grouped top-k; 1 = plain top-k
    topk_group: int = 1  # groups kept per token; == n_group means no group limit
    group_score: GroupScore = "top2_sum"  # how a group is scored: its max, or sum of its top-2 keys
    renormalize: bool = False  # divide chosen weights by their sum (+1e-20)
    routed_scaling_factor: float = 1.0  # applied once, after renormalize
    # -- experts
    activation: Activation = "silu"
    gated: bool = True  # GLU expert (gate, up) or plain Linear -> act -> Linear
    expert_bias: bool = False  # b13 [E, 2I|I] and b2 [E, H]
    w13_layout: Layout = "concat"  # gate rows then up rows, or gate/up alternating
    swiglu_alpha: float = 1.702  # swiglu_oai only
    swiglu_limit: float = 7.0  # swiglu_oai only
    # -- shared experts
    n_shared_experts: int = 0  # always-on experts, summed into one MLP of width n * shared_intermediate_size
    shared_intermediate_size: int = 0  # per shared expert
    shared_gate: bool = False  # sigmoid(x @ shared_gate.T) scales the shared output (Qwen2-MoE)
    # -- dispatch
    capacity_factor: float | None = None  # Switch/GShard: capacity = ceil(cf*T*k/E); overflow dropped
    local_experts: tuple[int, ...] | None = None  # expert parallelism: others contribute zero
    # -- quantization (reference/quant.py); None = unquantized, serialized as before (no "quant" key)
    quant: quant.QuantScheme | None = None
    # -- provenance (not semantics)
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for f in ("hidden_size", "intermediate_size", "num_experts", "top_k"):
            v = getattr(self, f)
            _require(_is_int(v) and v >= 1, f, "an int >= 1", v)
        E, k = self.num_experts, self.top_k
        _require(k <= E, "top_k", f"1 <= top_k <= num_experts ({E})", k)
        _require(self.scoring in SCORINGS, "scoring", f"one of {SCORINGS}", self.scoring)
        _require(_is_int(self.n_group) and self.n_group >= 1, "n_group", "an int >= 1", self.n_group)
        _require(E % self.n_group == 0, "n_group", f"a divisor of num_experts ({E})", self.n_group)
        _require(
            _is_int(self.topk_group) and 1 <= self.topk_group <= self.n_group,
            "topk_group",
            f"1 <= topk_group <= n_group ({self.n_group})",
            self.topk_group,
        )
        if self.n_group > 1:
            reachable = self.topk_group * (E // self.n_group)
            _require(
                k <= reachable,
                "top_k",
                f"<= topk_group * experts per group ({reachable}) when grouped",
                k,
            )
            if self.group_score == "top2_sum":
                _require(
                    E // self.n_group >= 2,
                    "group_score",
                    "'max' when a group has one expert ('top2_sum' needs two)",
                    self.group_score,
                )
        _require(self.group_score in GROUP_SCORES, "group_score", f"one of {GROUP_SCORES}", self.group_score)
        for f in ("router_bias", "correction_bias", "renormalize", "gated", "expert_bias", "shared_gate"):
            _require(isinstance(getattr(self, f), bool), f, "a bool", getattr(self, f))
        r = self.routed_scaling_factor
        _require(
            isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) and r > 0,
            "routed_scaling_factor",
            "a finite float > 0",
            r,
        )
        allowed = GATED_ACTIVATIONS if self.gated else NONGATED_ACTIVATIONS
        _require(
            self.activation in allowed,
            "activation",
            f"one of {allowed} for a {'gated' if self.gated else 'non-gated'} expert",
            self.activation,
        )
        _require(self.w13_layout in LAYOUTS, "w13_layout", f"one of {LAYOUTS}", self.w13_layout)
        _require(
            self.gated or self.w13_layout == "concat",
            "w13_layout",
            "'concat' for a non-gated expert (nothing to interleave)",
            self.w13_layout,
        )
        for f in ("swiglu_alpha", "swiglu_limit"):
            v = getattr(self, f)
            _require(isinstance(v, (int, float)) and math.isfinite(v) and v > 0, f, "a finite float > 0", v)
        ns, si = self.n_shared_experts, self.shared_intermediate_size
        _require(_is_int(ns) and ns >= 0, "n_shared_experts", "an int >= 0", ns)
        _require(_is_int(si) and si >= 0, "shared_intermediate_size", "an int >= 0", si)
        _require(
            (ns == 0) == (si == 0),
            "shared_intermediate_size",
            "> 0 exactly when n_shared_experts > 0",
            si,
        )
        _require(not self.shared_gate or ns > 0, "shared_gate", "False when there is no shared expert", True)
        cf = self.capacity_factor
        if cf is not None:
            _require(
                isinstance(cf, (int, float)) and not isinstance(cf, bool) and math.isfinite(cf) and cf > 0,
                "capacity_factor",
                "None or a finite float > 0",
                cf,
            )
        le = self.local_experts
        if le is not None:
            _require(isinstance(le, tuple), "local_experts", "None or a tuple of expert ids", le)
            _require(
                all(_is_int(e) and 0 <= e < E for e in le),
                "local_experts",
                f"expert ids in [0, {E})",
                le,
            )
            _require(list(le) == sorted(set(le)), "local_experts", "sorted, distinct ids", le)
        if self.quant is not None:
            quant.check_spec(self)  # turns a dict into a QuantScheme; refuses bad combinations

    # -- derived
    @property
    def w13_rows(self) -> int:
        """Rows of one expert's w13: 2I when gated, I otherwise."""
        return 2 * self.intermediate_size if self.gated else self.intermediate_size

    @property
    def shared_width(self) -> int:
        """S: intermediate width of the fused shared MLP (0 when there is none)."""
        return self.n_shared_experts * self.shared_intermediate_size

    @property
    def grouped(self) -> bool:
        return self.n_group > 1 and self.topk_group < self.n_group

    def capacity(self, num_tokens: int) -> int | None:
        """Per-expert slot count, ceil(cf * T * k / E), or None without a capacity factor."""
        if self.capacity_factor is None:
            return None
        return math.ceil(self.capacity_factor * num_tokens * self.top_k / self.num_experts)

    def replace(self, **changes: Any) -> MoESpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if d["local_experts"] is not None:
            d["local_experts"] = list(d["local_experts"])
        if d["quant"] is None:
            del d["quant"]  # an unquantized spec serializes exactly as before the field existed
        else:
            d["quant"] = d["quant"].to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MoESpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        _require(not unknown, "spec", f"only fields {sorted(known)}", unknown)
        d = dict(d)
        if d.get("local_experts") is not None:
            d["local_experts"] = tuple(d["local_experts"])
        return cls(**d)

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any] | Any) -> MoESpec:
        """Build the spec of one MoE layer from a transformers config (dict or config object); its
        `quantization_config`, when present, becomes `quant` (QuantScheme.from_hf)."""
        qc = (
            config.get("quantization_config")
            if isinstance(config, Mapping)
            else getattr(config, "quantization_config", None)
        )
        return cls(**hf.spec_fields(config), quant=None if qc is None else quant.QuantScheme.from_hf(qc))


def weight_shapes(spec: MoESpec) -> dict[str, tuple[int, ...]]:
    """Expected shape of every weight tensor the spec needs (absent keys: tensor must be None)."""
    E, H, I = spec.num_experts, spec.hidden_size, spec.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "router": (E, H),
        "w13": (E, spec.w13_rows, H),
        "w2": (E, H, I),
    }
    if spec.router_bias:
        shapes["router_bias"] = (E,)
    if spec.correction_bias:
        shapes["correction_bias"] = (E,)
    if spec.expert_bias:
        shapes["b13"] = (E, spec.w13_rows)
        shapes["b2"] = (E, H)
    if spec.shared_width:
        S = spec.shared_width
        shapes["shared_w13"] = (2 * S if spec.gated else S, H)
        shapes["shared_w2"] = (H, S)
    if spec.shared_gate:
        shapes["shared_gate"] = (1, H)
    return shapes


WEIGHT_FIELDS = (
    "router",
    "router_bias",
    "correction_bias",
    "w13",
    "b13",
    "w2",
    "b2",
    "shared_w13",
    "shared_w2",
    "shared_gate",
)


@dataclass(frozen=True)
class MoEWeights:
    """The tensors of one MoE layer, in the canonical layout (module docstring). Any dtype and device,
    but all on one device; `validate(spec)` checks shapes against a spec."""

    router: torch.Tensor
    w13: torch.Tensor
    w2: torch.Tensor
    router_bias: torch.Tensor | None = None
    correction_bias: torch.Tensor | None = None
    b13: torch.Tensor | None = None
    b2: torch.Tensor | None = None
    shared_w13: torch.Tensor | None = None
    shared_w2: torch.Tensor | None = None
    shared_gate: torch.Tensor | None = None

    def __post_init__(self) -> None:
        devices = set()
        for name in WEIGHT_FIELDS:
            t = getattr(self, name)
            if t is None:
                continue
            _require(isinstance(t, torch.Tensor), name, "a torch.Tensor or None", type(t).__name__)
            _require(t.is_floating_point(), f"{name}.dtype", "a floating-point dtype", t.dtype)
            devices.add(t.device)
        _require(len(devices) <= 1, "weights.device", "all tensors on one device", sorted(map(str, devices)))

    def items(self):
        for name in WEIGHT_FIELDS:
            t = getattr(self, name)
            if t is not None:
                yield name, t

    @property
    def device(self) -> torch.device:
        return self.router.device

    @property
    def dtype(self) -> torch.dtype:
        return self.w13.dtype

    def validate(self, spec: MoESpec) -> MoEWeights:
        """Raise SpecError unless every tensor the spec needs is present with its shape and no other is."""
        shapes = weight_shapes(spec)
        for name in WEIGHT_FIELDS:
            t = getattr(self, name)
            want = shapes.get(name)
            if want is None:
                _require(t is None, name, f"None for this spec (it does not use {name})", "a tensor")
            else:
                _require(t is not None, name, f"a tensor of shape {want}", None)
                _require(tuple(t.shape) == want, f"{name}.shape", str(want), tuple(t.shape))
        return self

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> MoEWeights:
        """A converted copy. Biases and the router follow `dtype` too; pass dtype=None to keep dtypes."""
        return MoEWeights(**{name: t.to(device=device, dtype=dtype, copy=True) for name, t in self.items()})

    def map(self, fn) -> MoEWeights:
        """A copy with fn applied to every tensor present."""
        return MoEWeights(**{name: fn(t) for name, t in self.items()})

    def replace(self, **changes: Any) -> MoEWeights:
        return dataclasses.replace(self, **changes)

    @classmethod
    def random(
        cls,
        spec: MoESpec,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> MoEWeights:
        """Random weights scaled so that a layer output is of order 1 for x ~ N(0, 1).

        Each linear map gets N(0, 1/fan_in) entries, so pre-activations are O(1). Router logits get
        N(0, 1) entries scaled by 1/sqrt(H) too, which keeps routing non-degenerate.
        """
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else seed)
        H, I, E = spec.hidden_size, spec.intermediate_size, spec.num_experts
        out: dict[str, torch.Tensor] = {}
        for name, shape in weight_shapes(spec).items():
            fan_in = {
                "router": H,
                "w13": H,
                "w2": I,
                "shared_w13": H,
                "shared_w2": max(spec.shared_width, 1),
                "shared_gate": H,
            }.get(name, 1)
            t = torch.randn(shape, generator=generator, dtype=torch.float64) / math.sqrt(fan_in)
            if name == "correction_bias":
                t = t * 0.1
            elif name in ("router_bias", "b13", "b2"):
                t = t * 0.5
            out[name] = t.to(device=device, dtype=dtype)
        del E
        return cls(**out)

    @classmethod
    def from_hf(cls, block: Any, spec: MoESpec | None = None) -> MoEWeights:
        """Read a transformers 5.x MoE block's parameters into the canonical layout and validate them against
        `spec` (built from block.config when the block has one)."""
        if spec is None:
            config = getattr(block, "config", None)
            if config is None:
                raise SpecError("spec", "a MoESpec (this block carries no config)", None)
            spec = MoESpec.from_hf_config(config)
        return cls(**hf.weight_fields(block, spec)).validate(spec)


def check_input(spec: MoESpec, x: Any, *, name: str = "x") -> None:
    """Raise SpecError unless x is a floating (T, H) tensor or array."""
    shape = tuple(getattr(x, "shape", ()))
    _require(len(shape) == 2, f"{name}.shape", f"(T, {spec.hidden_size})", shape)
    _require(shape[1] == spec.hidden_size, f"{name}.shape", f"(T, {spec.hidden_size})", shape)
