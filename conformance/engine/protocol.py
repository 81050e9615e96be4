"""Implementations under test: the protocol, capabilities, and discovery.

    impl = get_implementation("triton")          # built-in, "torch-eager", "broken:<name>", or an entry point
    impl.capabilities()                          -> Capabilities (what it claims; the rest is NotSupported)
    impl.run(inputs, "forward", device, out=y)   -> y (T, H)   end to end; `out` is a poisoned view when given
    impl.run(inputs, "route", device)            -> object with topk_ids (T, k), topk_weights (T, k)
    impl.run(inputs, "permute", device)          -> object with expert_counts, kept, kept_counts, order, offsets
    impl.run(inputs, "gate_up", device)          -> act (T, k, I)      fed inputs.topk_ids
    impl.run(inputs, "down", device)             -> expert_out (T, k, H)  fed inputs.act, inputs.topk_ids
    impl.run(inputs, "combine", device)          -> y (T, H)  fed expert_out, topk_weights, kept, shared_out
    impl.kernel_config()                         -> dict: the tile config of the last run (for reports)

A third party registers a factory under the entry-point group "moe_cts.implementations":

    [project.entry-points."moe_cts.implementations"]
    my-moe = "my_pkg.moe_cts_adapter:MyImplementation"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from moe_cts.reference.spec import GATED_ACTIVATIONS, LAYOUTS, NONGATED_ACTIVATIONS, MoESpec

ENTRY_POINT_GROUP = "moe_cts.implementations"
FORWARD = "forward"
#: Capabilities.router_weights_dtype: route() returns fp32 weights, or weights in the case (input) dtype
ROUTER_WEIGHTS_DTYPES = ("float32", "input")
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
    notes: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.required) - set(REQUIRABLE))
        if unknown:
            raise ValueError(f"required: {unknown} are not features; expected names from {list(REQUIRABLE)}")
        if self.router_weights_dtype not in ROUTER_WEIGHTS_DTYPES:
            raise ValueError(
                f"router_weights_dtype: expected one of {ROUTER_WEIGHTS_DTYPES}, "
                f"got {self.router_weights_dtype!r}"
            )

    def unsupported(self, spec: MoESpec, dtype: str) -> str | None:
        """Why this implementation cannot run a case of (spec, dtype), or None when it claims it."""
        acts = self.gated_activations if spec.gated else self.nongated_activations
        checks = [
            (dtype in self.dtypes, f"dtype: {dtype} not in {sorted(self.dtypes)}"),
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
                self.max_experts is None or spec.num_experts <= self.max_experts,
                f"num_experts: at most {self.max_experts} claimed",
            ),
            *(
                (features(spec)[f], f"{f}: always applied by this implementation, absent from the case")
                for f in sorted(self.required)
            ),
            (
                spec.quant is None or spec.quant.method in self.quant_schemes,
                f"quant: {spec.quant.method if spec.quant else None} not in {sorted(self.quant_schemes)}",
            ),
        ]
        return next((why for ok, why in checks if not ok), None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            out[k] = sorted(v) if isinstance(v, frozenset) else v
        return out


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
