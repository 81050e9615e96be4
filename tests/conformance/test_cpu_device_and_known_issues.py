"""The plain `cpu` device, and known backend limits as data (device matrix `known_issues`)."""

from __future__ import annotations

import os

import pytest

from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.devices import matrix_entry, select_device
from moe_cts.conformance.engine.results import Outcome
from moe_cts.conformance.engine.runner import run_case
from moe_cts.conformance.harness.shard import resolve_devices
from moe_cts.conformance.impls.registry import get_implementation
from moe_cts.conformance.impls.torch_eager import TorchEagerImplementation
from moe_cts.reference.errors import NotSupportedError
from moe_cts.reference.spec import MoESpec

SMALL = Case(MoESpec(hidden_size=32, intermediate_size=32, num_experts=4, top_k=2), 5, seed=3)
SMALL_BF16 = Case(SMALL.spec, 5, dtype="bfloat16", seed=3)


class InterpreterError(Exception):
    """Same name as triton's interpreter exception: known issues match by type name and message."""


class _RaisesInRoute(TorchEagerImplementation):
    name = "raises-in-route"
    error: Exception = InterpreterError("InterpreterError(\"ValueError('All-NaN slice encountered')\")")

    def route(self, spec, w, x):
        raise self.error


class _UnknownCrash(_RaisesInRoute):
    error = InterpreterError("ValueError('something else')")


class _WrongInBf16(TorchEagerImplementation):
    name = "wrong-in-bf16"

    def combine(self, spec, expert_out, topk_weights, kept, shared_out=None):
        return 2 * super().combine(spec, expert_out, topk_weights, kept, shared_out)


class _DeclinesForward(TorchEagerImplementation):
    name = "declines"

    def run(self, inputs, stage, device=None, *, out=None):
        raise NotSupportedError("num_tokens: at least 8 tokens needed by this kernel")


class _DeclinesOnlyForward(TorchEagerImplementation):
    """Runs the router and every stage, declines the forward (an e4m3fnuz case's on CUDA, say)."""

    name = "declines-forward"

    def run(self, inputs, stage, device=None, *, out=None):
        if stage == "forward":
            raise NotSupportedError("quant.fp8_format: e4m3fnuz is not supported on target sm90")
        return super().run(inputs, stage, device, out=out)


# -- the cpu device
def test_cpu_device_runs_on_the_host_without_the_interpreter():
    before = os.environ.get("TRITON_INTERPRET")
    d = select_device("cpu")
    assert (d.backend, d.arch, d.torch_device.type, d.is_gpu, d.arg) == ("cpu", "cpu", "cpu", False, "cpu")
    assert os.environ.get("TRITON_INTERPRET") == before


def test_cpu_device_has_its_own_accumulator_profile():
    entry = matrix_entry(select_device("cpu"))
    assert entry["accumulator"] == "fp32_accumulate_round_once"
    assert entry["accumulator_profile"]["bf16_cast"] == "rne"


def test_cpu_is_an_accepted_shard_device():
    assert resolve_devices("cpu", None) == ["cpu"]


def test_torch_eager_passes_on_the_cpu_device():
    assert (
        run_case(get_implementation("torch-eager"), SMALL_BF16, select_device("cpu")).outcome == Outcome.PASS
    )


def test_triton_is_not_supported_on_the_cpu_device_with_the_reason():
    r = run_case(get_implementation("triton"), SMALL, select_device("cpu"))
    assert r.outcome == Outcome.NOT_SUPPORTED
    assert "needs a GPU" in r.message and "interpreter" in r.message


def test_a_not_supported_error_from_run_keeps_its_message():
    r = run_case(_DeclinesForward(), SMALL, select_device("cpu"))
    assert r.outcome == Outcome.NOT_SUPPORTED
    assert "at least 8 tokens" in r.message


def test_a_declined_forward_makes_the_case_not_supported_though_other_stages_passed():
    # the stages it ran pass, so without the rule the case would count as an executed Pass (recall: a fault
    # whose only case is such a case would "survive" instead of being not exercised)
    r = run_case(_DeclinesOnlyForward(), SMALL_BF16, select_device("cpu"))
    assert r.outcome == Outcome.NOT_SUPPORTED
    assert "e4m3fnuz" in r.message
    assert any(v.outcome == Outcome.PASS for v in r.stages)


# -- known issues of the interpreter
def test_a_crash_matching_a_known_interpreter_limit_is_waived_with_its_reason(device):
    r = run_case(_RaisesInRoute(), SMALL, device)
    assert r.outcome == Outcome.WAIVED
    assert "interpreter-all-nan-argmax" in r.message and "All-NaN" in r.message
    router = next(s for s in r.stages if s.stage == "router")
    assert router.outcome == Outcome.WAIVED


def test_an_unknown_crash_on_the_interpreter_stays_a_crash(device):
    assert run_case(_UnknownCrash(), SMALL, device).outcome == Outcome.CRASH


def test_known_limits_are_not_waived_on_the_cpu_device():
    assert run_case(_RaisesInRoute(), SMALL, select_device("cpu")).outcome == Outcome.CRASH


@pytest.mark.parametrize("dtype", ["bfloat16"])
def test_a_bf16_fail_on_the_interpreter_stays_a_fail_and_names_the_silent_limit(device, dtype):
    r = run_case(_WrongInBf16(), Case(SMALL.spec, 5, dtype=dtype, seed=3), device)
    assert r.outcome == Outcome.FAIL
    assert "interpreter-bf16-arithmetic" in r.message


def test_a_fp32_fail_on_the_interpreter_names_no_limit(device):
    r = run_case(_WrongInBf16(), SMALL, device)
    assert r.outcome == Outcome.FAIL
    assert "known limit" not in r.message


def test_a_silent_limit_can_be_limited_to_scenarios():
    from moe_cts.conformance.engine.known_issues import fail_note
    from moe_cts.conformance.engine.scenarios import Scenario

    cpu = select_device("cpu")
    nan_rows = Case(
        SMALL.spec, 5, dtype="bfloat16", scenario=Scenario.make("nan_rows", fraction=0.25), seed=3
    )
    assert "cpu-bf16-gemm-nan-spreads-across-rows" in fail_note(cpu, "torch-eager", nan_rows)
    assert fail_note(cpu, "torch-eager", SMALL_BF16) is None
