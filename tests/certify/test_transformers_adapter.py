"""The shipped transformers adapter: real transformers 5.x MoE blocks, one per experts implementation,
certified on the plain cpu device (skipped, with the reason, only where transformers is not installed)."""

from __future__ import annotations

import importlib.util

import pytest

from moe_cts.conformance.engine.devices import select_device
from moe_cts.conformance.engine.must_pass import must_pass_cases
from moe_cts.conformance.engine.results import Outcome
from moe_cts.conformance.engine.runner import run_case
from moe_cts.conformance.impls import transformers_experts as te
from moe_cts.conformance.impls.registry import available_implementations
from moe_cts.reference.errors import NotSupportedError
from moe_cts.reference.spec import MoESpec

pytestmark = [
    pytest.mark.hf,
    pytest.mark.skipif(
        importlib.util.find_spec("transformers") is None,
        reason="transformers is not installed (it is in the `test` extra)",
    ),
]
SMOKE = {c.name: c for c in must_pass_cases("smoke")}
BASE = dict(hidden_size=32, intermediate_size=16, num_experts=8, top_k=2)


@pytest.mark.parametrize(
    ("spec", "family"),
    [
        (MoESpec(**BASE, renormalize=True), "mixtral"),
        (MoESpec(**BASE), "olmoe"),
        (MoESpec(**BASE, n_shared_experts=1, shared_intermediate_size=32, shared_gate=True), "qwen2_moe"),
        (MoESpec(**BASE, scoring="sigmoid", correction_bias=True, n_group=4, topk_group=2), "deepseek_v3"),
        (
            MoESpec(
                **BASE,
                router_bias=True,
                renormalize=True,
                activation="swiglu_oai",
                expert_bias=True,
                w13_layout="interleaved",
            ),
            "gpt_oss",
        ),
    ],
)
def test_each_spec_is_built_by_the_family_that_computes_it(spec, family):
    assert te.family_for(spec) == family


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"gated": False, "activation": "relu"}, "gated"),
        ({"router_bias": True}, "router_bias"),
        ({"routed_scaling_factor": 2.0}, "routed_scaling_factor"),
        ({"n_shared_experts": 1, "shared_intermediate_size": 16}, "shared_gate"),
    ],
)
def test_a_spec_no_family_computes_is_refused_naming_the_field(fields, field):
    with pytest.raises(NotSupportedError, match=field):
        te.family_for(MoESpec(**{**BASE, **fields}))


def test_the_three_experts_implementations_are_entry_points():
    names = set(available_implementations())
    assert {"transformers-eager", "transformers-batched_mm", "transformers-grouped_mm"} <= names


@pytest.mark.parametrize("impl", [te.TransformersEager, te.TransformersBatchedMM, te.TransformersGroupedMM])
@pytest.mark.parametrize(
    "name", ["mixtral-scaled", "qwen2-shared-gate", "dsv3-grouped-sigmoid", "gpt-oss-interleaved"]
)
def test_real_model_presets_pass_through_every_experts_implementation(impl, name):
    r = run_case(impl(), SMOKE[name], select_device("cpu"))
    assert r.outcome == Outcome.PASS, r.message
    assert r.kernel_config["experts_implementation"] == impl.experts_implementation


def test_the_experts_implementation_switch_is_the_one_that_runs(monkeypatch):
    from transformers.integrations import moe

    def refuse(*args, **kwargs):
        raise RuntimeError("batched_mm ran")

    monkeypatch.setitem(moe.ALL_EXPERTS_FUNCTIONS._global_mapping, "batched_mm", refuse)
    r = run_case(te.TransformersBatchedMM(), SMOKE["mixtral-scaled"], select_device("cpu"))
    assert r.outcome == Outcome.CRASH and "batched_mm ran" in r.message


#: transformers' grouped_mm on the CPU raises for rows that are not a multiple of 16 bytes instead of falling
#: back (docs/third-party.md; reproducer: docs/repro/transformers_grouped_mm_cpu_strides.py)
GROUPED_MM_CPU_DEFECT = "strides should be multiple of 16 bytes"


@pytest.mark.parametrize("impl", ["transformers-eager", "transformers-batched_mm", "transformers-grouped_mm"])
def test_each_experts_implementation_gets_its_smoke_verdict_on_the_cpu(certified, impl):
    run = certified(impl, ["--device", "cpu", "--impl", impl, "--profile", "smoke", "--jobs", "2"])
    cases = run.report["devices"][0]["cases"]
    counts = {o: sum(c["outcome"] == o for c in cases) for o in ("pass", "not_supported")}
    bad = [c for c in cases if c["outcome"] not in ("pass", "not_supported")]
    assert counts["pass"] >= 10 and counts["not_supported"] <= 0.35 * len(cases), counts
    if impl == "transformers-grouped_mm" and bad:  # the real defect, and nothing else
        assert run.returncode == 1 and "NOT CONFORMANT" in run.stdout, run.stdout[-3000:]
        assert all(c["outcome"] == "crash" and GROUPED_MM_CPU_DEFECT in c["message"] for c in bad), bad
    else:
        assert run.returncode == 0 and not bad, run.stdout[-3000:]
