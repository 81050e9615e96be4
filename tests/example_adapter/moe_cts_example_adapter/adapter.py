"""The moe-cts adapter of tiny_moe, written from docs/implementing.md alone.

example-moe            claims what tiny_moe computes: softmax top-k, renormalize, SiLU-gated concat experts
example-moe-norenorm   a deliberately wrong variant: claims renormalize but never renormalizes
                       (certification must fail it at the router stage)
"""

from __future__ import annotations

from typing import Any

from moe_cts.conformance.impls import FORWARD, Capabilities, NotSupportedError
from moe_cts_example_adapter import tiny_moe


class ExampleMoE:
    name = "example-moe"
    renormalizes = True  # what tiny_moe is asked to do when a case says renormalize

    def capabilities(self) -> Capabilities:
        return Capabilities(
            stages=frozenset({FORWARD, "route"}),
            layouts=frozenset({"concat"}),
            gated_activations=frozenset({"silu"}),
            nongated_activations=frozenset(),
            scorings=frozenset({"softmax"}),
            routing=frozenset({"renormalize"}),
            expert_bias=False,
            shared_experts=False,
            shared_gate=False,
            deterministic=True,
            accepts_out=True,
        )

    def kernel_config(self) -> dict[str, Any]:
        return {"kind": "tiny-moe", "loop": "per expert", "sum": "fp32"}

    def run(self, inputs, stage: str, device, *, out=None) -> Any:
        spec = inputs.spec
        why = self.capabilities().unsupported(spec, str(inputs.x.dtype).removeprefix("torch."))
        if why is None and spec.quant is not None:
            why = "quant: quantized weights are not handled by tiny_moe"
        if why is None and stage not in (FORWARD, "route"):
            why = f"stage: {stage} not exposed"
        if why is not None:
            raise NotSupportedError(why)
        w = inputs.weights
        renorm = spec.renormalize and self.renormalizes
        if stage == "route":
            return tiny_moe.route(inputs.x, w.router, spec.top_k, renorm)
        y = tiny_moe.forward(inputs.x, w.router, w.w13, w.w2, spec.top_k, renorm)
        return y if out is None else out.copy_(y)


class ExampleMoENoRenorm(ExampleMoE):
    """Claims renormalize (inherited capabilities) but does not do it: the bug certification must catch."""

    name = "example-moe-norenorm"
    renormalizes = False
