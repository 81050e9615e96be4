"""--strict-ties: a tie broken differently from the lower-id rule is a Fail instead of a CompatibilityWarning,
through the router stage and through the forward of an implementation that exposes nothing else; the flag
reaches the pytest command of a shard and the report's run section (docs/bugs.md#bug-17-topk-ties)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from moe_cts.conformance.engine.devices import select_device
from moe_cts.conformance.engine.protocol import FORWARD
from moe_cts.conformance.engine.results import FailKind, Outcome
from moe_cts.conformance.engine.runner import run_case
from moe_cts.conformance.harness import shard
from moe_cts.conformance.impls.broken import BROKEN
from moe_cts.conformance.impls.torch_eager import TorchEagerImplementation

CPU = select_device("cpu")
TIE_CASE = BROKEN["wrong-tie-break"].case


def _stage(result, name):
    return next(v for v in result.stages if v.stage == name)


def test_a_different_tie_rule_is_only_a_compatibility_warning_by_default():
    result = run_case(BROKEN["wrong-tie-break"].factory(), TIE_CASE, CPU)
    assert _stage(result, "router").outcome == Outcome.COMPATIBILITY_WARNING
    assert result.outcome.conformant


def test_strict_ties_make_a_different_tie_rule_a_routing_fail():
    result = run_case(BROKEN["wrong-tie-break"].factory(), TIE_CASE, CPU, strict_ties=True)
    router = _stage(result, "router")
    assert router.outcome == Outcome.FAIL and router.fail_kind == FailKind.ROUTING
    assert router.message.startswith("strict ties:")
    assert result.failing_stage == "router" and not result.outcome.conformant


def test_strict_ties_pass_an_implementation_that_follows_the_lower_id_rule():
    result = run_case(TorchEagerImplementation(), TIE_CASE, CPU, strict_ties=True)
    assert result.outcome == Outcome.PASS, result.message


class _ForwardOnly:
    """An implementation that exposes only the forward: its tie choice is seen only in y."""

    def __init__(self, inner):
        self.inner, self.name = inner, f"forward-only:{inner.name}"

    def capabilities(self):
        return dataclasses.replace(self.inner.capabilities(), stages=frozenset({FORWARD}))

    def kernel_config(self):
        return {}

    def run(self, inputs, stage, device=None, **kw):
        return self.inner.run(inputs, stage, device, **kw)


@pytest.mark.parametrize("strict", [False, True])
def test_a_forward_only_tie_difference_fails_end_to_end_only_under_strict_ties(strict):
    impl = _ForwardOnly(BROKEN["wrong-tie-break"].factory())
    result = run_case(impl, TIE_CASE, CPU, strict_ties=strict)
    e2e = _stage(result, "end_to_end")
    assert e2e.outcome == (Outcome.FAIL if strict else Outcome.PASS), e2e.message


def test_the_flag_reaches_the_shard_command():
    sh = shard.make_shards(["interpreter"])[0]
    cmd = shard.pytest_command(sh, Path("out"), impl="triton", profile="smoke", jobs=1, timeout_s=None,
                               strict_ties=True)  # fmt: skip
    assert "--moe-cts-strict-ties" in cmd
    plain = shard.pytest_command(sh, Path("out"), impl="triton", profile="smoke", jobs=1, timeout_s=None)
    assert "--moe-cts-strict-ties" not in plain
