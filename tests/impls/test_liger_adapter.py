"""The shipped Liger-Kernel adapter ("liger"): its claims, its weight mapping, and a tiny case on the Triton
interpreter (fp32: Liger keeps bf16 tl.dot operands, which the interpreter computes on raw bits, so bf16 is
waived there by the device matrix). Skipped, with the reason, only where liger-kernel is not installed."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.devices import select_device
from moe_cts.conformance.engine.results import Outcome
from moe_cts.conformance.engine.runner import run_case
from moe_cts.conformance.impls import third_party_glue as glue
from moe_cts.conformance.impls.liger import LigerFusedMoE
from moe_cts.conformance.impls.registry import available_implementations
from moe_cts.conformance.impls.validate import check
from moe_cts.reference.spec import MoESpec

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("liger_kernel") is None,
    reason="liger-kernel is not installed (extra `liger`: pip install 'moe-cts[liger]')",
)
SPEC = MoESpec(hidden_size=32, intermediate_size=32, num_experts=4, top_k=2, renormalize=True)


def test_liger_is_an_entry_point_whose_capabilities_validate():
    factory = available_implementations()["liger"]
    caps, error = check("liger", factory)
    assert error == ""
    assert caps.stages == frozenset({"forward"})
    assert caps.gated_activations == frozenset({"silu"}) and not caps.expert_bias
    assert caps.max_experts == 0xFFFF


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"scoring": "sigmoid"}, "scoring"),
        ({"activation": "swiglu_oai"}, "activation"),
        ({"expert_bias": True}, "expert_bias"),
        ({"n_shared_experts": 1, "shared_intermediate_size": 32}, "n_shared_experts"),
    ],
)
def test_what_liger_does_not_compute_is_not_claimed(fields, field):
    why = LigerFusedMoE().capabilities().unsupported(MoESpec(**{**SPEC.__dict__, **fields}), "float32")
    assert why is not None and why.startswith(field)


def test_interleaved_rows_map_to_liger_concat_gate_up_exactly():
    spec = MoESpec(**{**SPEC.__dict__, "w13_layout": "interleaved"})
    rows = torch.arange(2 * spec.intermediate_size, dtype=torch.float32).reshape(1, -1, 1)
    concat = glue.rows_concat(rows, spec, axis=1).flatten()
    assert concat[: spec.intermediate_size].tolist() == list(range(0, 64, 2))
    assert concat[spec.intermediate_size :].tolist() == list(range(1, 64, 2))
    assert torch.equal(glue.rows_interleaved(concat.reshape(1, -1, 1), MoESpec(**SPEC.__dict__), 1), rows)


@pytest.mark.parametrize("layout", ["concat", "interleaved"])
def test_a_tiny_fp32_case_passes_on_the_interpreter(layout):
    spec = MoESpec(**{**SPEC.__dict__, "w13_layout": layout})
    r = run_case(LigerFusedMoE(), Case(spec, 5, seed=3), select_device("interpreter"))
    assert r.outcome == Outcome.PASS, r.message
    assert r.kernel_config["kind"] == "liger"
    assert r.kernel_config["autotune"] == "off"  # Liger's own knob: autotuning needs a GPU driver


def test_a_bf16_case_on_the_interpreter_is_waived_naming_the_limit():
    r = run_case(LigerFusedMoE(), Case(SPEC, 5, dtype="bfloat16", seed=3), select_device("interpreter"))
    assert r.outcome == Outcome.WAIVED
    assert "interpreter-liger-bf16-dot" in r.message
    assert next(s for s in r.stages if s.stage == "end_to_end").outcome == Outcome.WAIVED


def test_moe_cts_list_shows_liger_and_triton_kernels_with_their_claims():
    from typer.testing import CliRunner

    from moe_cts.conformance.cli.app import app

    out = CliRunner().invoke(app, ["list"], terminal_width=400).output
    liger = next(line for line in out.splitlines() if line.strip().startswith("liger ["))
    assert "moe_cts.conformance.impls.liger:LigerFusedMoE" in liger and "act silu" in liger
    assert "triton-kernels [moe_cts.conformance.impls.triton_kernels_moe:TritonKernelsMoE]" in out


def test_on_the_plain_cpu_device_liger_is_not_supported_naming_the_device():
    r = run_case(LigerFusedMoE(), Case(SPEC, 5, seed=3), select_device("cpu"))
    assert r.outcome == Outcome.NOT_SUPPORTED
    assert "device: cpu runs PyTorch implementations only" in r.message


class _GateUpSwapped(LigerFusedMoE):
    """The adapter with the classic layout mistake (bug class 11): up rows handed to Liger as gate rows."""

    def run(self, inputs, stage, device=None, *, out=None):
        I = inputs.spec.intermediate_size
        w13 = inputs.weights.w13
        swapped = inputs.weights.replace(w13=torch.cat([w13[:, I:], w13[:, :I]], dim=1))
        return super().run(inputs.with_feeds(weights=swapped), stage, device, out=out)


def test_a_gate_up_mix_up_in_the_mapping_fails_end_to_end():
    r = run_case(_GateUpSwapped(), Case(SPEC, 5, seed=3), select_device("interpreter"))
    assert r.outcome == Outcome.FAIL
    assert r.failing_stage == "end_to_end"
