"""Implementations under test: the protocol, capabilities, and discovery.

    impl = get_implementation("triton")          # built-in, "torch-eager", "broken:<name>", or an entry point
    impl.capabilities()                          -> Capabilities (what it claims; the rest is NotSupported)
    impl.run(inputs, "forward", device, out=y)   -> y (T, H)   end to end; `out` is a poisoned view when given
    impl.run(inputs, "route", device)            -> object with topk_ids (T, k), topk_weights (T, k)
    impl.run(inputs, "permute", device)          -> object with expert_counts, kept, kept_counts, order, offsets
    impl.run(inputs, "gate_up", device)          -> act (T, k, I)      fed inputs.topk_ids
    impl.run(inputs, "down", device)             -> expert_out (T, k, H)  fed inputs.act, inputs.topk_ids
    impl.run(inputs, "combine", device)          -> y (T, H)  fed expert_out, topk_weights, kept, shared_out
    impl.kernel_config()                         -> dict: the tile config of the last run (for reports);
                                                    its optional "table" names the target the tuned table
                                                    was made for, checked against the device (provenance.py)

A third party registers a factory under the entry-point group "moe_cts.implementations":

    [project.entry-points."moe_cts.implementations"]
    my-moe = "my_pkg.moe_cts_adapter:MyImplementation"
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

from moe_cts.reference.spec import GATED_ACTIVATIONS, GROUP_SCORES, LAYOUTS, NONGATED_ACTIVATIONS, MoESpec

ENTRY_POINT_GROUP = "moe_cts.implementations"
FORWARD = "forward"
#: Capabilities.router_weights_dtype: route() returns fp32 weights, or weights in the case (input) dtype
ROUTER_WEIGHTS_DTYPES = ("float32", "input")
#: scenarios whose expert outputs overflow the storage dtype until the router weight shrinks them
NEEDS_WEIGHT_BEFORE_CAST = ("overflow_before_weight",)
#: Capabilities.shared_size
SHARED_SIZES = ("any", "intermediate")
STAGE_METHODS = ("route", "permute", "gate_up", "down", "combine")
#: implementation stage -> verdict stage (moe_cts.conformance.engine.results.STAGES)
VERDICT_STAGE = {
    "route": "router",
    "permute": "permutation",
    "gate_up": "gemm1",
    "down": "gemm2",
    "combine": "combine",
    FORWARD: "end_to_end",
}


@dataclass(frozen=True)
class Capabilities:
    """What an implementation claims. A case outside it is NotSupported; inside it, any difference fails."""

    stages: frozenset[str] = frozenset({FORWARD})  # "forward" plus any of STAGE_METHODS
    dtypes: frozenset[str] = frozenset({"float32", "float16", "bfloat16"})
    layouts: frozenset[str] = frozenset(LAYOUTS)
    gated_activations: frozenset[str] = frozenset(GATED_ACTIVATIONS)
    nongated_activations: frozenset[str] = frozenset(NONGATED_ACTIVATIONS)
    scorings: frozenset[str] = frozenset({"softmax", "sigmoid"})
    routing: frozenset[str] = frozenset(  # routing variants claimed
        {"renormalize", "router_bias", "correction_bias", "grouped", "scaling"}
    )
    expert_bias: bool = True
    shared_experts: bool = True
    shared_gate: bool = True
    capacity_dropping: bool = False
    local_mask: bool = False
    deterministic: bool = False  # two runs give the same bits
    batch_invariant: bool = False  # a token's output does not depend on the rest of the batch
    accepts_out: bool = False  # forward(..., out=) writes into a caller's buffer (memory checks)
    fp32_dot: str = "ieee"  # "ieee" or "tf32": how fp32 products are formed (tf32 loosens the fp32 bound)
    max_experts: int | None = None
    # The dtype of route()'s topk_weights: "float32" (the oracle's fp32 weights, fp32 bound) or "input" (the
    # case dtype: the oracle's weights are rounded to it and the bound grows by that rounding).
    router_weights_dtype: str = "float32"
    # Features the implementation always applies (mandatory): a case without one is NotSupported. A feature is
    # forbidden when it is not claimed above, optional when claimed and not required. Names: the routing
    # variants, "expert_bias", "shared_experts", "shared_gate".
    required: frozenset[str] = frozenset()
    quant_schemes: frozenset[str] = (
        frozenset()
    )  # QuantScheme methods claimed (reference/quant.py QUANT_METHODS)
    group_scores: frozenset[str] = frozenset(GROUP_SCORES)  # how groups are scored in grouped top-k
    # "any": shared experts of any width; "intermediate": shared_intermediate_size == intermediate_size
    # (DeepSeek-V3 builds its shared MLP from moe_intermediate_size)
    shared_size: str = "any"
    # experts per group (num_experts // n_group; the whole E when ungrouped) at least this: DeepSeek-V3
    # scores every group by its top-2 keys, so it needs 2
    min_group_size: int = 1
    # The router weight multiplies each expert's output in fp32 before that output is cast to the storage
    # dtype (the oracle's epilogue order). Cases whose expert outputs overflow fp16 before the weight brings
    # them back into range (NEEDS_WEIGHT_BEFORE_CAST scenarios) run only for implementations that claim it:
    # model code stores the unweighted output first and gets inf there by design. Claimants are also held to
    # one rounding, rnd(w * expert_out), on exact integer experts (engine/single_rounding.py).
    weight_before_cast: bool = False
    # Feature combinations that come together (a model family): when any are named, a case is supported
    # only when one bundle claims it whole, and generation draws a bundle first, then features inside it.
    # The fields above stay the union (what `moe-cts list` prints) and keep dtypes, stages and max_experts.
    bundles: tuple[Bundle, ...] = ()
    notes: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.required) - set(REQUIRABLE))
        if unknown:
            raise ValueError(f"required: {unknown} are not features; expected names from {list(REQUIRABLE)}")
        if self.shared_size not in SHARED_SIZES:
            raise ValueError(f"shared_size: expected one of {SHARED_SIZES}, got {self.shared_size!r}")
        if isinstance(self.bundles, list):  # JSON gives lists
            object.__setattr__(self, "bundles", tuple(self.bundles))
        bad = [b for b in self.bundles if not isinstance(b, Bundle)]
        if bad:
            raise ValueError(f"bundles: expected Bundle(name, features) items, got {bad[0]!r}")
        if self.router_weights_dtype not in ROUTER_WEIGHTS_DTYPES:
            raise ValueError(
                f"router_weights_dtype: expected one of {ROUTER_WEIGHTS_DTYPES}, "
                f"got {self.router_weights_dtype!r}"
            )

    def unsupported(self, spec: MoESpec, dtype: str) -> str | None:
        """Why this implementation cannot run a case of (spec, dtype), or None when it claims it.

        With bundles: the union's checks first (dtype, max_experts, ...), then the case must sit whole
        inside one bundle; the reason names each bundle's first objection."""
        why = self._reason(spec, dtype)
        if why is not None or not self.bundles:
            return why
        objections = []
        for b in self.bundles:
            bwhy = b.features._reason(spec, dtype, features_only=True)
            if bwhy is None:
                return None
            objections.append(f"{b.name}: {bwhy}")
        return "no claimed bundle computes this case (" + "; ".join(objections) + ")"

    def unsupported_case(self, case: Any) -> str | None:
        """unsupported(spec, dtype) of a Case, plus the claims its scenario needs (weight_before_cast)."""
        why = self.unsupported(case.spec, case.dtype)
        if why is None and case.scenario.name in NEEDS_WEIGHT_BEFORE_CAST and not self.weight_before_cast:
            why = (
                f"weight_before_cast: scenario {case.scenario.name} overflows the expert outputs before the "
                "router weight; the implementation does not claim to weight before the cast"
            )
        return why

    def bundle_of(self, spec: MoESpec, dtype: str) -> str | None:
        """The name of the first bundle that claims (spec, dtype); None without bundles or when none does."""
        return next((b.name for b in self.bundles if b.features._reason(spec, dtype, True) is None), None)

    def _reason(self, spec: MoESpec, dtype: str, features_only: bool = False) -> str | None:
        acts = self.gated_activations if spec.gated else self.nongated_activations
        checks = [
            (features_only or dtype in self.dtypes, f"dtype: {dtype} not in {sorted(self.dtypes)}"),
            (spec.w13_layout in self.layouts, f"w13_layout: {spec.w13_layout} not claimed"),
            (
                spec.activation in acts,
                f"activation: {spec.activation} ({'gated' if spec.gated else 'non-gated'})",
            ),
            (spec.scoring in self.scorings, f"scoring: {spec.scoring} not claimed"),
            (not spec.renormalize or "renormalize" in self.routing, "renormalize: not claimed"),
            (not spec.router_bias or "router_bias" in self.routing, "router_bias: not claimed"),
            (not spec.correction_bias or "correction_bias" in self.routing, "correction_bias: not claimed"),
            (not spec.grouped or "grouped" in self.routing, "n_group/topk_group: grouped top-k not claimed"),
            (
                spec.routed_scaling_factor == 1.0 or "scaling" in self.routing,
                "routed_scaling_factor: not claimed",
            ),
            (not spec.expert_bias or self.expert_bias, "expert_bias: not claimed"),
            (not spec.shared_width or self.shared_experts, "n_shared_experts: shared experts not claimed"),
            (not spec.shared_gate or self.shared_gate, "shared_gate: not claimed"),
            (spec.capacity_factor is None or self.capacity_dropping, "capacity_factor: dropping not claimed"),
            (spec.local_experts is None or self.local_mask, "local_experts: local expert mask not claimed"),
            (
                not spec.grouped or spec.group_score in self.group_scores,
                f"group_score: {spec.group_score} not claimed",
            ),
            (
                spec.num_experts // (spec.n_group if spec.grouped else 1) >= self.min_group_size,
                f"num_experts / n_group: at least {self.min_group_size} experts per group claimed",
            ),
            (
                not spec.shared_width
                or self.shared_size == "any"
                or spec.shared_intermediate_size == spec.intermediate_size,
                "shared_intermediate_size: shared experts as wide as intermediate_size claimed",
            ),
            (
                features_only or self.max_experts is None or spec.num_experts <= self.max_experts,
                f"num_experts: at most {self.max_experts} claimed",
            ),
            *(
                (features(spec)[f], f"{f}: always applied by this implementation, absent from the case")
                for f in sorted(self.required)
            ),
            (
                features_only or spec.quant is None or spec.quant.method in self.quant_schemes,
                f"quant: {spec.quant.method if spec.quant else None} not in {sorted(self.quant_schemes)}",
            ),
        ]
        return next((why for ok, why in checks if not ok), None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if k == "bundles":
                v = [{"name": b.name, "features": b.features.to_json()} for b in v]
            out[k] = sorted(v) if isinstance(v, frozenset) else v
        return out

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Capabilities:
        """The inverse of to_json (run.json, report.json, certificates); unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        kw = {
            k: (frozenset(v) if isinstance(v, list) else v)
            for k, v in doc.items()
            if k in names - {"bundles"}
        }
        kw["bundles"] = tuple(
            Bundle(b["name"], cls.from_json(b["features"])) for b in doc.get("bundles") or ()
        )
        return cls(**kw)


@dataclass(frozen=True)
class Bundle:
    """A named feature combination that comes together, e.g. gpt-oss: router bias, expert biases, the
    interleaved layout and swiglu_oai. `features` says what is claimed inside it (its `required` are the
    features always on there); its dtypes, stages, max_experts and quant_schemes are not read."""

    name: str
    features: Capabilities


#: features an implementation can make mandatory (Capabilities.required)
REQUIRABLE = (
    "renormalize",
    "router_bias",
    "correction_bias",
    "grouped",
    "scaling",
    "expert_bias",
    "shared_experts",
    "shared_gate",
)


def features(spec: MoESpec) -> dict[str, bool]:
    """Which REQUIRABLE features a spec uses."""
    return {
        "renormalize": spec.renormalize, "router_bias": spec.router_bias, "correction_bias": spec.correction_bias,
        "grouped": spec.grouped, "scaling": spec.routed_scaling_factor != 1.0, "expert_bias": spec.expert_bias,
        "shared_experts": bool(spec.shared_width), "shared_gate": spec.shared_gate,
    }  # fmt: skip


@runtime_checkable
class Implementation(Protocol):
    name: str

    def capabilities(self) -> Capabilities: ...

    def run(self, inputs: Any, stage: str, device: Any, *, out: Any = None) -> Any: ...

    def kernel_config(self) -> dict[str, Any]: ...
