"""Implementations that misbehave at the process level, for the certify tests (loaded as "module:Class" from a
PYTHONPATH entry, the way a third-party implementation under development is certified).

    AbortOnOneToken   os.abort() on a case of one token (must-pass "one-token"), torch-eager elsewhere
                      (a segfault stand-in)
    HangOnOneToken    sleeps on a case of one token until interrupted (a hung kernel)
    Slow              torch-eager that takes 0.5 s per forward (time to act on a running shard)
    EagerWithOurRegistry torch-eager exposing our kernel registry (certify --compile applies)
    SupportsNothing   claims every dtype but raises NotSupportedError from every stage (a run with nothing
                      executed: void, never a certificate)
"""

from __future__ import annotations

import os
import time

from moe_cts.conformance.impls.torch_eager import TorchEagerImplementation
from moe_cts.reference.errors import NotSupportedError


def _is_one_token(inputs) -> bool:
    # Only the must-pass case "one-token" has T == 1 in the smoke profile (the tests run no generated cases).
    return inputs.x.shape[0] == 1


class AbortOnOneToken(TorchEagerImplementation):
    name = "abort-on-one-token"

    def run(self, inputs, stage, device=None, *, out=None):
        if _is_one_token(inputs):
            os.abort()
        return super().run(inputs, stage, device, out=out)


class HangOnOneToken(TorchEagerImplementation):
    name = "hang-on-one-token"

    def run(self, inputs, stage, device=None, *, out=None):
        if _is_one_token(inputs):
            time.sleep(3600)
        return super().run(inputs, stage, device, out=out)


class Slow(TorchEagerImplementation):
    name = "slow"

    def run(self, inputs, stage, device=None, *, out=None):
        if stage == "forward":
            time.sleep(0.5)
        return super().run(inputs, stage, device, out=out)


class SupportsNothing(TorchEagerImplementation):
    name = "supports-nothing"

    def run(self, inputs, stage, device=None, *, out=None):
        raise NotSupportedError(f"{stage}: not implemented yet")


class EagerWithOurRegistry(TorchEagerImplementation):
    """torch-eager that names moe-cts' own kernel registry for `certify --compile` (the AOT certify tests
    compile without running the Triton kernels on the interpreter)."""

    name = "eager-with-our-registry"

    def kernel_registry(self) -> str:
        return "moe_cts.kernels.registry"
