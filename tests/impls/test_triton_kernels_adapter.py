"""The shipped triton_kernels adapter ("triton-kernels"): its claims, its weight mapping to matmul_ogs'
layout, and the interpreter waiver (triton_kernels passes its own tensor wrappers to its kernels, which the
interpreter cannot copy to the host). Skipped, with the reason, only where triton_kernels is absent."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.devices import select_device
from moe_cts.conformance.engine.results import Outcome
from moe_cts.conformance.engine.runner import run_case
from moe_cts.conformance.impls.registry import available_implementations
from moe_cts.conformance.impls.triton_kernels_moe import TritonKernelsMoE, their_weights
from moe_cts.conformance.impls.validate import check
from moe_cts.reference.spec import MoESpec, MoEWeights

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton_kernels") is None,
    reason="triton_kernels is not installed (docs/third-party.md: a wheel of vllm's vendored copy)",
)
OAI = MoESpec(hidden_size=32, intermediate_size=16, num_experts=4, top_k=2, renormalize=True,
              activation="swiglu_oai", expert_bias=True, router_bias=True, w13_layout="interleaved")  # fmt: skip


def test_triton_kernels_is_an_entry_point_whose_capabilities_validate():
    caps, error = check("triton-kernels", available_implementations()["triton-kernels"])
    assert error == ""
    assert caps.gated_activations == frozenset({"swiglu_oai"})
    assert caps.scorings == frozenset({"softmax"}) and "grouped" not in caps.routing


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"activation": "silu"}, "activation"), ({"scoring": "sigmoid"}, "scoring"),
     ({"n_shared_experts": 1, "shared_intermediate_size": 16, "activation": "swiglu_oai"}, "n_shared_experts")],
)  # fmt: skip
def test_what_triton_kernels_does_not_compute_is_not_claimed(fields, field):
    why = TritonKernelsMoE().capabilities().unsupported(MoESpec(**{**OAI.__dict__, **fields}), "bfloat16")
    assert why is not None and why.startswith(field)


@pytest.mark.parametrize("layout", ["concat", "interleaved"])
def test_weights_map_to_matmul_ogs_layout_with_gate_on_even_columns(layout):
    spec = MoESpec(**{**OAI.__dict__, "w13_layout": layout})
    E, H, I = spec.num_experts, spec.hidden_size, spec.intermediate_size
    w = MoEWeights.random(spec, seed=1)
    ours = their_weights(spec, w)
    gate = w.w13[:, 0::2] if layout == "interleaved" else w.w13[:, :I]
    assert ours["w1"].shape == (E, H, 2 * I) and ours["w2"].shape == (E, I, H)
    assert torch.equal(ours["w1"][:, :, 0::2], gate.transpose(1, 2))
    assert ours["b1"].dtype == torch.float32 and ours["b2"].dtype == torch.float32


def test_on_the_interpreter_a_case_is_waived_naming_the_tensor_wrapper_limit():
    r = run_case(TritonKernelsMoE(), Case(OAI, 3, dtype="float32", seed=3), select_device("interpreter"))
    assert r.outcome == Outcome.WAIVED, r.message
    assert "interpreter-tensor-wrapper-args" in r.message


def test_their_topk_kernel_does_not_compile_for_a_non_power_of_two_k(tmp_path):
    """The defect the H200 run finds at every non-power-of-two top-k (docs/third-party.md): the reproducer,
    run as a user would (no interpreter: it compiles their kernel for sm90 ahead of time)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("repro_triton_kernels_nonpow2_topk.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(CUDA_VISIBLE_DEVICES="", TRITON_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert "k=4: compiles for sm90" in out.stdout, out.stdout + out.stderr
    assert "k=6: CompilationError: arange's range must be a power of 2" in out.stdout, out.stdout + out.stderr
