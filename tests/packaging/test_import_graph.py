"""The architecture as a checked fact: no import cycles among moe_cts modules, and the parts stack in at most
six layers (reference; kernels; engine; impls and aot; report; harness; cli)."""

from __future__ import annotations

from import_graph import cycles, import_graph, levels

#: A module's part: the subpackage of conformance, or reference / kernels.
MAX_LAYERS = 6


def part(module: str) -> str:
    bits = module.split(".")
    if bits[1] != "conformance" or len(bits) < 3:
        return ".".join(bits[:2])
    return ".".join(bits[:3])


def part_graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {}
    for m, deps in import_graph().items():
        g.setdefault(part(m), set()).update(part(d) for d in deps if part(d) != part(m))
    return g


def test_no_module_is_in_an_import_cycle():
    assert cycles(import_graph()) == []


def test_no_part_is_in_an_import_cycle():
    assert cycles(part_graph()) == []


def test_the_parts_stack_in_at_most_six_layers():
    lv = levels(part_graph())
    layers = 1 + max(lv.values())
    assert layers <= MAX_LAYERS, sorted(lv.items(), key=lambda kv: kv[1])
