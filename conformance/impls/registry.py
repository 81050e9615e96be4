"""Implementations by name: the built-ins, the deliberately broken ones, and third-party entry points.

    get_implementation("triton")              built-in, "torch-eager", "broken:<name>", or an entry point
    load_implementation("pkg.mod:Attr")       also a class or instance by import path (a test double)
    available_implementations()               name -> factory

A third party registers a factory under the entry-point group "moe_cts.implementations":

    [project.entry-points."moe_cts.implementations"]
    my-moe = "my_pkg.moe_cts_adapter:MyImplementation"
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from importlib import metadata

from moe_cts.conformance.engine.protocol import ENTRY_POINT_GROUP, Implementation
from moe_cts.conformance.impls.broken import BROKEN
from moe_cts.conformance.impls.torch_eager import TorchEagerImplementation
from moe_cts.conformance.impls.triton import TritonImplementation


def _builtins() -> dict[str, Callable[[], Implementation]]:
    found: dict[str, Callable[[], Implementation]] = {
        "triton": TritonImplementation,
        "torch-eager": TorchEagerImplementation,
    }
    for name, b in BROKEN.items():
        found[f"broken:{name}"] = b.factory
    return found


def _entry_points() -> dict[str, Callable[[], Implementation]]:
    found: dict[str, Callable[[], Implementation]] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = _lazy(ep)
    return found


def _lazy(ep: metadata.EntryPoint) -> Callable[[], Implementation]:
    def factory() -> Implementation:
        return ep.load()()

    factory.__name__ = f"entry_point_{ep.name}"
    return factory


def available_implementations() -> dict[str, Callable[[], Implementation]]:
    """name -> factory: built-ins (the ones of this package win over its own entry points), then
    third-party entry points."""
    found = _entry_points()
    found.update(_builtins())
    return found


def get_implementation(name: str) -> Implementation:
    """Build an implementation by name; ValueError listing the known names otherwise."""
    found = available_implementations()
    if name not in found:
        raise ValueError(f"implementation: expected one of {sorted(found)}, got {name!r}")
    impl = found[name]()
    if not getattr(impl, "name", None):
        impl.name = name
    return impl


def load_implementation(name: str) -> Implementation:
    """A registered implementation by name, or "package.module:Attr" (a class or an instance) for one that is
    not installed as an entry point (a test double, a work in progress)."""
    if re.fullmatch(r"[\w.]+\.\w+:\w+", name) or re.fullmatch(r"\w+:[A-Z]\w*", name):
        mod, _, attr = name.partition(":")
        obj = getattr(importlib.import_module(mod), attr)
        return obj() if isinstance(obj, type) else obj
    return get_implementation(name)
