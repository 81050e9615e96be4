"""Full-size MoE layer specs of real models (docs/bugs.md#facts-model-shapes), read from presets.json (data).

presets.names()                     -> ("deepseek-v2-lite", "deepseek-v3", ...)
presets.get("deepseek-v3")          -> MoESpec(H=7168, I=2048, E=256, k=8, sigmoid, 8 groups, ...)
presets.scaled("deepseek-v3")       -> the same routing semantics at CPU-test size (H=32, I=16, E=16)
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

from moe_cts.reference.spec import MoESpec, SpecError

_PATH = Path(__file__).with_name("presets.json")


@functools.cache
def _table() -> dict[str, dict[str, Any]]:
    return json.loads(_PATH.read_text())["presets"]


def names() -> tuple[str, ...]:
    """Preset names, sorted."""
    return tuple(sorted(_table()))


def get(name: str) -> MoESpec:
    """The full-size spec of a real model's MoE layer."""
    table = _table()
    if name not in table:
        raise SpecError("preset", f"one of {sorted(table)}", name)
    return MoESpec.from_dict(table[name])


def _scaled_experts(spec: MoESpec) -> int:
    """Fewest experts (at most E) that keep the routing non-trivial: at least 2k experts (8 at least) so
    top-k still chooses; grouped top-k keeps its group count, >= 2 experts per group (top-2 sums) and one
    more expert in the kept groups than k, so the choice inside the kept groups still matters."""
    E, k = spec.num_experts, spec.top_k
    if spec.grouped:
        per_group = max(2, math.ceil(k / spec.topk_group) + 1)
        return min(E, spec.n_group * per_group)
    return min(E, max(2 * k, 8))


def scaled(
    name: str,
    *,
    hidden_size: int = 32,
    intermediate_size: int = 16,
    num_experts: int | None = None,
) -> MoESpec:
    """A small spec with the preset's routing semantics (scoring, biases, groups, top-k, renormalize,
    scaling, activation, layout, shared experts) for CPU tests. The shared-expert width keeps its ratio to
    the routed width (Qwen2-57B: 8x). num_experts=None picks the smallest count that keeps the routing
    non-trivial; an explicit count that breaks the grouping raises SpecError."""
    full = get(name)
    E = _scaled_experts(full) if num_experts is None else num_experts
    shared = 0
    if full.shared_width:
        ratio = full.shared_intermediate_size / full.intermediate_size
        shared = max(1, round(ratio * intermediate_size))
    return full.replace(
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_experts=E,
        shared_intermediate_size=shared,
        name=f"{name}-scaled",
    )
