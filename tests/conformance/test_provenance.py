"""A tile table tuned for another target is a determinism Fail (docs/bugs.md#bug-27-cross-device-config-drift):
the implementation says which table it read (kernel_config()["table"]), engine/provenance.py compares it
with the device."""

from __future__ import annotations

import importlib

import pytest

import moe_cts.kernels.config as cfgmod
from moe_cts.conformance.engine import provenance
from moe_cts.conformance.engine.devices import select_device
from moe_cts.conformance.engine.results import Outcome
from moe_cts.conformance.engine.runner import run_case
from moe_cts.conformance.impls.broken import BROKEN
from moe_cts.conformance.impls.torch_eager import TorchEagerImplementation
from moe_cts.conformance.impls.triton import TritonImplementation


class _Tabled(TorchEagerImplementation):
    name = "tabled"

    def __init__(self, table: str):
        super().__init__()
        self.table = table

    def kernel_config(self):
        return {"BLOCK_M": 16, "table": self.table}


def _determinism(impl, device):
    result = run_case(impl, BROKEN["zero-output"].case, device)
    return next(v for v in result.stages if v.stage == "determinism")


def test_another_targets_table_fails_determinism():
    det = _determinism(_Tabled("hip"), select_device("cpu"))
    assert det.outcome == Outcome.FAIL and "tuned for hip ran on a cpu device" in det.message, det.message


def test_the_devices_own_table_or_none_passes():
    assert _determinism(_Tabled("cpu"), select_device("cpu")).outcome == Outcome.PASS
    assert provenance.check({"BLOCK_M": 16}, select_device("cpu")) is None


def test_our_kernels_report_the_table_they_read(monkeypatch):
    device = select_device("interpreter")
    impl = TritonImplementation()
    ok = _determinism(impl, device)
    assert ok.outcome == Outcome.PASS and impl.kernel_config()["table"] == "interpreter", ok.message
    # the cuda table read on the interpreter: what config-other-device-table injects on a GPU. The module is
    # looked up now, not at collection: tests/recall swaps the kernels package for a mutated copy and back
    monkeypatch.setattr(importlib.import_module("moe_cts.kernels.config"), "backend", lambda: "cuda")
    bad = _determinism(impl, device)
    assert bad.outcome == Outcome.FAIL and "tuned for cuda" in bad.message, bad.message


def test_a_given_config_reports_no_table():
    cfgmod.choose(dtype=cfgmod.torch.float32, num_tokens=4, top_k=2, num_experts=4, hidden_size=64,
                  intermediate_size=64)  # fmt: skip
    assert cfgmod.last_table() is not None
    with cfgmod.forced({"BLOCK_M": 16, "gate_up": {"BLOCK_N": 16, "BLOCK_K": 16},
                        "down": {"BLOCK_N": 16, "BLOCK_K": 16}}):  # fmt: skip
        assert cfgmod.last_table() is None


@pytest.mark.parametrize("backend", cfgmod.BACKENDS)
def test_every_table_names_its_backend(backend):
    assert cfgmod.load_table(backend)["backend"] == backend


def test_a_table_for_named_targets_fails_on_another_target_of_its_backend():
    """cuda@sm90 (kernels/configs/cuda-sm90.json) on an sm_80 device is the cross-device drift of bug-27."""

    class _Dev:
        backend, arch = "cuda", "sm_80"

    assert "tuned for cuda@sm90 ran on a cuda device (sm_80)" in provenance.check(
        {"table": "cuda@sm90"}, _Dev()
    )
    _Dev.arch = "sm_90"
    assert provenance.check({"table": "cuda@sm90"}, _Dev()) is None
    assert provenance.check({"table": "cuda"}, _Dev()) is None
