"""Shared fixtures of the engine's own tests: the interpreter device and the built-in implementations."""

from __future__ import annotations

import pytest

from conformance.devices import select_device
from conformance.impl import get_implementation


@pytest.fixture(scope="session")
def device():
    return select_device("interpreter")


@pytest.fixture(scope="session")
def eager():
    return get_implementation("torch-eager")
