"""Test-wide set-up: interpreter mode without a GPU, hypothesis profiles.

TRITON_INTERPRET must be set before triton is first imported, so this runs at conftest import time.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from moe_cts.conformance.engine.profiles import register_profiles
from moe_cts.conformance.impls.checkout_path import unshadow_checkout

# The README's `python -m pytest` puts the checkout root on sys.path, where our kernels/ shadows Hugging Face's
# `kernels`, which transformers >= 5.25 imports (conformance/impls/checkout_path.py).
unshadow_checkout()

register_profiles()


#: session fixtures that run one long subprocess behind a file lock (the AOT compile of every target; the README's
#: smoke certify). An xdist worker that asks for one while the other worker computes it sits idle on the lock:
#: measured, up to 300 s of the 2-core CI box's run when both workers started on tests/aot.
SHARED_RUNS = ("compiled", "smoke_run")


def pytest_collection_modifyitems(config, items):
    """The tests that use a shared run first, grouped by run: xdist's load scheduler hands each worker a block
    of consecutive tests to start with (a quarter of its share), so all of them land on one worker, which
    computes each run once while the other worker works through the rest. The order is a pure function of
    the collection, so every worker collects the same list (xdist requires it)."""

    def rank(item) -> int:
        names = getattr(item, "fixturenames", ())
        return next((k for k, f in enumerate(SHARED_RUNS) if f in names), len(SHARED_RUNS))

    items.sort(key=rank)  # stable: the file order stays inside each group
