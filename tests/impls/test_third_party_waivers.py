"""Known interpreter limits of outside Triton code, as data: an `on_fail` entry may waive a Fail, but only for
the implementations it names (`only_for`), so a waiver can never hide another implementation's wrong result."""

from __future__ import annotations

import pytest

from moe_cts.conformance.engine import known_issues
from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.devices import select_device
from moe_cts.reference.spec import MoESpec

BF16 = Case(
    MoESpec(hidden_size=32, intermediate_size=32, num_experts=4, top_k=2), 5, dtype="bfloat16", seed=3
)
FP32 = Case(BF16.spec, 5, seed=3)


@pytest.fixture
def interpreter():
    return select_device("interpreter")


def test_liger_bf16_fails_on_the_interpreter_are_waived_with_the_reason(interpreter):
    reason = known_issues.fail_waiver(interpreter, "liger", BF16)
    assert reason is not None and "interpreter-liger-bf16-dot" in reason and "11584" in reason


@pytest.mark.parametrize(
    ("impl", "case"), [("torch-eager", BF16), ("transformers-eager", BF16), ("liger", FP32)]
)
def test_the_liger_waiver_covers_nothing_else(interpreter, impl, case):
    assert known_issues.fail_waiver(interpreter, impl, case) is None


def test_a_waiving_entry_only_leaves_the_note_for_other_implementations(interpreter):
    note = known_issues.fail_note(interpreter, "torch-eager", BF16)
    assert note is not None and "interpreter-bf16-arithmetic" in note


def test_the_triton_kernels_wrapper_crash_is_a_known_interpreter_limit(interpreter):
    err = AttributeError("'Tensor' object has no attribute 'untyped_storage'")
    reason = known_issues.crash_waiver(interpreter, "triton-kernels", err)
    assert reason is not None and "interpreter-tensor-wrapper-args" in reason


def test_waivers_are_not_applied_on_the_cpu_device():
    cpu = select_device("cpu")
    assert known_issues.fail_waiver(cpu, "liger", BF16) is None


@pytest.mark.parametrize(
    "entry",
    [
        {"id": "x", "on_fail": {"dtypes": ["bfloat16"]}, "waive": True, "reason": "r"},
        {"id": "x", "exception": "E", "waive": True, "only_for": ["a"], "reason": "r"},
    ],
)
def test_a_waiving_entry_must_be_on_fail_and_name_its_implementations(monkeypatch, interpreter, entry):
    monkeypatch.setattr(known_issues, "matrix_entry", lambda device: {"known_issues": [entry]})
    with pytest.raises(ValueError, match="waive"):
        known_issues.fail_waiver(interpreter, "a", BF16)
