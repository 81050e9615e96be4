"""The magnitude scenarios (large_logits, beyond_clamp) reach the magnitudes they are named for, and the
unbroken torch-eager implementation passes their must-pass cases (docs/bugs.md#bug-11-gate-up-layout)."""

from __future__ import annotations

import numpy as np
import torch

import moe_cts.reference.numpy_oracle as npo
from moe_cts.conformance.engine.devices import select_device
from moe_cts.conformance.engine.must_pass import must_pass_cases
from moe_cts.conformance.engine.runner import run_case
from moe_cts.conformance.impls.torch_eager import TorchEagerImplementation


def _case(name: str):
    return next(c for c in must_pass_cases() if c.name == name)


def test_beyond_clamp_drives_gate_values_past_the_swiglu_limit():
    case = _case("gpt-oss-beyond-clamp")
    inputs = case.build_inputs()
    spec, w = inputs.spec, inputs.weights.to("cpu", torch.float64)
    x = inputs.x.double().numpy()
    ids = npo.route(spec, w, x).topk_ids
    gate = npo.gate_up(spec, w, x, ids).gate_pre
    past = np.mean(gate > spec.swiglu_limit)
    assert past > 0.02, f"only {past:.3%} of gate values exceed swiglu_limit {spec.swiglu_limit}"


def test_large_logits_give_logits_far_past_the_exp_range_of_a_naive_softmax():
    inputs = _case("large-logits").build_inputs()
    logits = inputs.x.float() @ inputs.weights.router.float().T
    spread = (logits.max(dim=1).values - logits.min(dim=1).values).min()
    assert spread > 88.0, f"row spread {spread}: exp of the largest logit would not overflow fp32"


def test_torch_eager_passes_the_magnitude_cases():
    device = select_device("cpu")
    for name in ("gpt-oss-beyond-clamp", "large-logits"):
        result = run_case(TorchEagerImplementation(), _case(name), device)
        assert result.outcome.conformant, f"{name}: {result.message}"
