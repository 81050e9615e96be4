"""Load every registered implementation and check it keeps the contract, for `moe-cts list`.

    for found in survey():           one Found per name of available_implementations(), sorted
        found.name, found.source     "built-in" or the entry point's "module:Attr"
        found.capabilities           Capabilities, or None when loading or checking failed
        found.error                  "" or one line: what failed (import error, missing method, bad capabilities)

A broken entry point (a missing module, a factory that raises, an object without `run`) is reported with its
error, never raised: one bad third-party package must not hide the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from moe_cts.conformance.engine.protocol import ENTRY_POINT_GROUP, Capabilities
from moe_cts.conformance.impls.registry import available_implementations

REQUIRED = ("name", "capabilities", "run", "kernel_config")


@dataclass(frozen=True)
class Found:
    name: str  # the name `--impl` takes
    source: str  # "built-in" or the entry point value "module:Attr"
    capabilities: Capabilities | None  # None when loading or checking failed
    error: str = ""  # one line; "" when the implementation loaded and keeps the contract


def _sources() -> dict[str, str]:
    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def check(name: str, factory) -> tuple[Capabilities | None, str]:
    """(capabilities, "") when factory() builds an implementation that keeps the contract, else (None, why)."""
    try:
        impl = factory()
    except Exception as err:  # a third party's import or constructor: report it, do not crash the listing
        return None, f"loading failed: {type(err).__name__}: {err}"
    missing = [a for a in REQUIRED if a != "name" and not callable(getattr(impl, a, None))]
    if missing:
        return None, f"{type(impl).__name__}: missing method(s) {', '.join(missing)} (docs/implementing.md)"
    if not isinstance(getattr(impl, "name", name), str):
        return None, f"{type(impl).__name__}.name: expected a str, got {type(impl.name).__name__}"
    try:
        caps = impl.capabilities()
    except Exception as err:
        return None, f"capabilities() raised {type(err).__name__}: {err}"
    if not isinstance(caps, Capabilities):
        return None, f"capabilities(): expected a moe_cts Capabilities, got {type(caps).__name__}"
    return caps, ""


def survey() -> list[Found]:
    sources = _sources()
    out = []
    for name, factory in sorted(available_implementations().items()):
        source = "built-in" if not factory.__name__.startswith("entry_point_") else sources.get(name, "?")
        caps, error = check(name, factory)
        out.append(Found(name, source, caps, error))
    return out


def summary(caps: Capabilities) -> str:
    """One line of what an implementation claims, for a table cell."""
    flags = [f for f in ("expert_bias", "shared_experts", "shared_gate", "capacity_dropping", "local_mask",
                         "deterministic", "batch_invariant", "accepts_out") if getattr(caps, f)]  # fmt: skip
    parts = [
        "stages " + ",".join(sorted(caps.stages)),
        "dtypes " + ",".join(sorted(caps.dtypes)),
        "layouts " + ",".join(sorted(caps.layouts)),
        "act " + ",".join(sorted(caps.gated_activations | caps.nongated_activations)),
        "scoring " + ",".join(sorted(caps.scorings)),
        "routing " + ",".join(sorted(caps.routing)),
        "flags " + (",".join(flags) or "-"),
    ]
    if caps.max_experts is not None:
        parts.append(f"max_experts {caps.max_experts}")
    return "; ".join(parts)
