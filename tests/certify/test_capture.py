"""Failure tensors are captured in one child process for all failures; a case that kills or hangs the child
costs only its own tensors (capture-error.txt names why), and the failures after it are still captured."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from moe_cts.conformance.engine.must_pass import must_pass_for
from moe_cts.conformance.harness.capture import ERROR_FILE, CaptureTask, capture_all

SMOKE = must_pass_for("smoke", "interpreter")
ONE_TOKEN = next(c.case_id for c in SMOKE if c.num_tokens == 1)
OTHER = next(c.case_id for c in SMOKE if c.num_tokens > 1 and c.spec.quant is None)


@pytest.fixture
def doubles_on_path(monkeypatch):
    here = str(Path(__file__).parent)  # cts_test_impls for the child process
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (here, os.environ.get("PYTHONPATH")))))


def _task(tmp_path: Path, name: str, case_id: str, impl: str) -> CaptureTask:
    d = tmp_path / name
    d.mkdir()
    return CaptureTask(str(d), case_id, impl, "interpreter")


@pytest.mark.parametrize(
    ("impl", "timeout_s", "says"),
    [
        ("cts_test_impls:AbortOnOneToken", 300.0, "exited with code"),
        ("cts_test_impls:HangOnOneToken", 15.0, "exceeded 15 s"),
    ],
    ids=["abort", "hang"],
)
def test_a_case_that_kills_the_capture_costs_only_its_own_tensors(
    tmp_path, doubles_on_path, impl, timeout_s, says
):
    tasks = [
        _task(tmp_path, "first", OTHER, "torch-eager"),
        _task(tmp_path, "dies", ONE_TOKEN, impl),
        _task(tmp_path, "after", OTHER, "torch-eager"),
    ]
    capture_all(tasks, timeout_s=timeout_s)
    for ok in ("first", "after"):
        d = tmp_path / ok
        assert {p.name for p in d.iterdir()} == {"inputs.safetensors", "outputs.safetensors"}, ok
    dies = tmp_path / "dies"
    assert says in (dies / ERROR_FILE).read_text()
    assert not (dies / "outputs.safetensors").exists()


def test_an_exception_in_one_capture_is_written_beside_it_and_the_child_goes_on(tmp_path):
    tasks = [
        _task(tmp_path, "bad", OTHER, "no-such-implementation"),
        _task(tmp_path, "good", OTHER, "torch-eager"),
    ]
    capture_all(tasks)
    assert "no-such-implementation" in (tmp_path / "bad" / ERROR_FILE).read_text()
    assert (tmp_path / "good" / "outputs.safetensors").exists()
