"""The conformance tests that moe_cts.conformance.harness.plugin parametrizes: run them by naming this file.

    pytest -n 2 --moe-cts-device interpreter --moe-cts-profile smoke --moe-cts-results out/shard \\
           $(python -c "import moe_cts.conformance.harness.suite as s; print(s.__file__)")

They live apart from the plugin module because pytest would otherwise call the plugin's
pytest_generate_tests twice (once as a plugin, once as the test module's own hook).
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from hypothesis import Phase, given, seed, settings

from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.protocol import Capabilities
from moe_cts.conformance.engine.results import CaseResult
from moe_cts.conformance.engine.strategies import cases
from moe_cts.conformance.harness.plugin import MoECts, _state


@pytest.fixture
def moe_cts(request: pytest.FixtureRequest) -> MoECts:
    state = _state(request.config)
    if state is None:
        raise pytest.UsageError("the moe-cts tests need --moe-cts-device (or another --moe-cts-* option)")
    return state


def _failure_text(state: MoECts, r: CaseResult) -> str:
    where = f" at stage {r.failing_stage}" if r.failing_stage else ""
    return f"{r.case_id}: {r.outcome.value}{where}: {r.message}\n  replay: {state.replay_command(r.case_id)}"


def test_must_pass(moe_cts: MoECts, moe_cts_case_id: str) -> None:
    result = moe_cts.run(Case.from_id(moe_cts_case_id), "must_pass")
    if not result.outcome.conformant:
        pytest.fail(_failure_text(moe_cts, result), pytrace=False)


def test_generated(moe_cts: MoECts, moe_cts_batch: int) -> None:
    """One hypothesis run of generated cases. Every case is recorded and the run continues past failures
    (no shrinking: a certification wants every case's verdict, and every case id replays on its own)."""
    per_batch = -(-moe_cts.examples // moe_cts.batches)
    bad: list[CaseResult] = []

    @seed(moe_cts.seed + moe_cts_batch)
    @settings(
        settings.get_profile(moe_cts.hypothesis_profile),
        max_examples=per_batch,
        phases=[Phase.explicit, Phase.generate],
        database=None,
    )
    @given(cases(**_strategy_kwargs(moe_cts)))
    def run(case) -> None:
        if case.case_id in moe_cts._seen:
            return
        moe_cts._seen.add(case.case_id)
        result = moe_cts.run(case, "generated")
        if not result.outcome.conformant:
            bad.append(result)

    run()
    if bad:
        pytest.fail("\n".join(_failure_text(moe_cts, r) for r in bad), pytrace=False)


def _strategy_kwargs(state: MoECts) -> dict[str, Any]:
    """Pass the device (or backend) to the strategy when it takes one, so shapes fit the device, and the
    implementation's Capabilities, so generation draws only what it claims."""
    params = inspect.signature(cases).parameters
    kw: dict[str, Any] = {}
    if "device" in params:
        kw["device"] = state.device
    elif "backend" in params:
        kw["backend"] = state.device.backend
    caps = state.session.impl.capabilities()
    if "capabilities" in params and isinstance(caps, Capabilities):
        kw["capabilities"] = caps
    return kw
