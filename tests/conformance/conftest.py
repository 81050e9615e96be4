"""Shared fixtures of the engine's own tests: the interpreter device and the built-in implementations."""

from __future__ import annotations

import pytest

from moe_cts.conformance.engine.devices import select_device
from moe_cts.conformance.impls.registry import get_implementation


@pytest.fixture(scope="session")
def device():
    return select_device("interpreter")


@pytest.fixture(scope="session")
def eager():
    return get_implementation("torch-eager")
