"""Which kernel registry the AOT tier compiles: `certify --compile` judges the implementation under test.

    registry()  -> the module named by MOE_CTS_KERNEL_REGISTRY, default moe_cts.kernels.registry (ours)
    using(name) -> context manager: the compile workers started inside it read `name`

An implementation opts in with `kernel_registry() -> str` (a module path) on its adapter; one without it gets
"not applicable" from the compile tier. The module provides what moe_cts.kernels.registry provides: KERNELS,
capture, table_configs, jit_function, Launch, active_target and materialize_arg (the last three can be
re-exported from ours). The name travels to the worker processes through the environment, which they inherit.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from types import ModuleType

ENV = "MOE_CTS_KERNEL_REGISTRY"
DEFAULT = "moe_cts.kernels.registry"


def name() -> str:
    return os.environ.get(ENV) or DEFAULT


def registry() -> ModuleType:
    """The registry module (imported on first use: it imports triton, which the parent keeps out until needed)."""
    return importlib.import_module(name())


@contextlib.contextmanager
def using(module: str) -> Iterator[None]:
    old = os.environ.get(ENV)
    os.environ[ENV] = module
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = old
