"""The engine's contracts: implementation discovery, NotSupported / Crash / Waived taxonomy, devices."""

from __future__ import annotations

from importlib import metadata

import pytest

from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.devices import matrix_entry, select_device
from moe_cts.conformance.engine.must_pass import must_pass_cases
from moe_cts.conformance.engine.protocol import ENTRY_POINT_GROUP
from moe_cts.conformance.engine.results import Outcome
from moe_cts.conformance.engine.runner import run_case
from moe_cts.conformance.impls import registry as impl_mod
from moe_cts.conformance.impls.registry import available_implementations, get_implementation
from moe_cts.conformance.impls.torch_eager import TorchEagerImplementation
from moe_cts.reference.spec import MoESpec

SMALL = Case(MoESpec(hidden_size=32, intermediate_size=32, num_experts=4, top_k=2), 5, seed=3)


class _Exploding(TorchEagerImplementation):
    name = "exploding"

    def gate_up(self, spec, w, x, topk_ids):
        raise RuntimeError("illegal memory access (simulated)")


def test_third_party_entry_point_is_discovered(monkeypatch):
    ep = metadata.EntryPoint(
        "fake-moe", "moe_cts.conformance.impls.torch_eager:TorchEagerImplementation", ENTRY_POINT_GROUP
    )

    real = metadata.entry_points

    def entry_points(**selection):  # only our group: other libraries read theirs through the same function
        return [ep] if selection.get("group") == ENTRY_POINT_GROUP else real(**selection)

    monkeypatch.setattr(impl_mod.metadata, "entry_points", entry_points)
    assert "fake-moe" in available_implementations()
    assert isinstance(get_implementation("fake-moe"), TorchEagerImplementation)


def test_unknown_implementation_names_the_known_ones():
    with pytest.raises(ValueError, match="torch-eager"):
        get_implementation("no-such-impl")


def test_unclaimed_capability_is_not_supported(device):
    case = Case(SMALL.spec.replace(capacity_factor=1.0), 5)
    r = run_case(get_implementation("triton"), case, device)
    assert r.outcome == Outcome.NOT_SUPPORTED and "capacity_factor" in r.message


def test_exception_in_a_stage_is_a_crash_with_its_traceback(device):
    r = run_case(_Exploding(), SMALL, device)
    assert (r.outcome, r.failing_stage) == (Outcome.CRASH, "gemm1") and "illegal memory access" in r.message


def test_full_size_preset_is_waived_on_the_interpreter(device, eager):
    case = must_pass_cases("gpu")[0]
    r = run_case(eager, case, device)
    assert r.outcome == Outcome.WAIVED and "interpreter" in r.message


@pytest.mark.parametrize("spec", ["cuda:banana", "tpu", "hip:x"])
def test_unknown_device_is_a_clear_error(spec):
    with pytest.raises(ValueError, match="device"):
        select_device(spec)


def test_interpreter_matrix_entry_has_an_accumulator_profile(device):
    entry = matrix_entry(device)
    assert entry["backend"] == "interpreter" and entry["accumulator_profile"]["c"] > 0


def test_a_near_tie_between_group_scores_makes_the_row_ambiguous_for_a_forward_only_judge():
    """Grouped top-k: when two groups' scores tie, another group choice is as valid as the oracle's, so a
    forward-only implementation's output is not judged on that row (it was a false alarm on transformers'
    DeepSeek-V3 block with saturated sigmoid scores)."""
    import numpy as np

    from moe_cts.conformance.engine import judge

    spec = MoESpec(hidden_size=8, intermediate_size=8, num_experts=8, top_k=2, scoring="sigmoid",
                   n_group=4, topk_group=1)  # fmt: skip
    keys = np.array([[1.0, 0.5, 0.2, 0.1, 1.0, 0.5, 0.3, 0.0]])  # groups 0 and 2 tie on top-2 sum 1.5
    tol = np.full_like(keys, 1e-7)
    assert judge.ambiguous_rows(spec, keys, tol, np.array([[0, 1]]))[0]
    keys[0, 5] = 0.4  # group 2 now scores 1.4: the choice of group 0 is clear, and inside it so is {0, 1}
    assert not judge.ambiguous_rows(spec, keys, tol, np.array([[0, 1]]))[0]
