"""Cases whose routed experts are too large for the host judge (sampled_experts.py): the whole batch on the
device, the oracle on sampled rows over sub-problems of the experts those rows route to. Exercised on the
interpreter with the thresholds lowered, on scaled DeepSeek-V3 (grouped top-k, correction bias, block fp8)
and gpt-oss-120b (softmax, router and expert biases, MXFP4) with 32 experts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from moe_cts.conformance.engine import quant_large, sampled, sampled_experts
from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.results import Outcome
from moe_cts.conformance.engine.runner import _Session, run_case
from moe_cts.conformance.impls.broken_quant import ScaleNeighbourBlock
from moe_cts.conformance.impls.registry import get_implementation
from moe_cts.conformance.impls.torch_eager import TorchEagerImplementation
from moe_cts.reference import presets
from moe_cts.reference.quant import QuantScheme
from moe_cts.reference.qweights import QuantTensor

DS = presets.scaled("deepseek-v3", hidden_size=256, intermediate_size=128, num_experts=32).replace(
    quant=QuantScheme.fp8_block()
)
GPT = presets.scaled("gpt-oss-120b", hidden_size=64, intermediate_size=64, num_experts=32).replace(
    quant=QuantScheme.mxfp4()
)
DS_CASE = Case(DS, 12, "bfloat16", seed=3)
GPT_CASE = Case(GPT, 12, "bfloat16", seed=4)


@pytest.fixture
def low_threshold(monkeypatch):
    """Every case here samples experts; a sub-problem holds at most 12 of the scaled DS experts."""
    monkeypatch.setattr(sampled_experts, "SAMPLE_EXPERTS_ABOVE", 1000)
    per = sampled_experts.FLOAT64_COPIES * 8 * 3 * 256 * 128
    monkeypatch.setattr(sampled_experts, "SUB_BYTES", 12 * per)
    monkeypatch.setattr(sampled_experts, "MAX_GROUPS", 64)  # every row of these small batches is judged
    quant_large._CACHE.clear()


def _e2e(result):
    return next(v for v in result.stages if v.stage == "end_to_end")


class ZeroQuant(TorchEagerImplementation):
    """All-zero output of the quantized forward."""

    def q_forward(self, spec, w, qw, x):
        return torch.zeros((x.shape[0], spec.hidden_size), dtype=x.dtype, device=x.device)


class WrongExpert(TorchEagerImplementation):
    """Each expert reads the next expert's codes and scales (an expert offset off by one)."""

    def run(self, inputs, stage, device=None, *, out=None):
        qw = inputs.qweights
        nxt = lambda qt: QuantTensor(
            qt.codes.roll(-1, 0), qt.scales.roll(-1, 0), qt.fmt, qt.block, qt.scale_dtype
        )
        inputs = dataclasses.replace(inputs, qweights=qw.replace(w13=nxt(qw.w13), w2=nxt(qw.w2)))
        return super().run(inputs, stage, device, out=out)


def test_full_size_presets_sample_experts_and_a_small_one_does_not():
    ds, gpt120 = presets.get("deepseek-v3"), presets.get("gpt-oss-120b")
    assert sampled_experts.needs_expert_sampling(Case(ds, 1))
    assert sampled_experts.needs_expert_sampling(Case(gpt120.replace(quant=QuantScheme.mxfp4()), 1))
    gpt20, mixtral = presets.get("gpt-oss-20b"), presets.get("mixtral-8x7b")
    assert not sampled_experts.needs_expert_sampling(Case(gpt20.replace(quant=QuantScheme.mxfp4()), 1))
    assert not sampled_experts.needs_expert_sampling(Case(mixtral, 1))  # judged whole, stage by stage
    assert sampled_experts.needs_expert_sampling(Case(mixtral.replace(quant=QuantScheme.fp8_block()), 1))
    assert ds.top_k <= sampled_experts.max_experts(ds) < ds.num_experts


def test_lean_inputs_hold_the_case_codes_scales_and_x():
    for case in (DS_CASE, GPT_CASE):
        quant_large._CACHE.clear()
        want, got = case.build_inputs(), quant_large.lean_quantized_inputs(case, "cpu")
        for n in ("w13", "w2"):
            assert torch.equal(getattr(want.qweights, n).codes, getattr(got.qweights, n).codes), n
            assert torch.equal(getattr(want.qweights, n).scales, getattr(got.qweights, n).scales), n
            assert torch.equal(getattr(want.weights, n), getattr(got.weights, n)), n
        assert torch.equal(want.x, got.x)
        other_t = dataclasses.replace(case, num_tokens=5)  # the cached experts, a new x
        assert torch.equal(quant_large.lean_quantized_inputs(other_t, "cpu").x, other_t.build_inputs().x)


@pytest.mark.parametrize("case", [DS_CASE, GPT_CASE, Case(DS.replace(quant=None), 12, "float32", seed=5)],
                         ids=["ds-fp8", "gpt-mxfp4", "ds-float"])  # fmt: skip
def test_sub_problems_give_the_full_oracle_and_routing(low_threshold, monkeypatch, device, case):
    """Grouped top-k with correction bias (DS) and softmax with biases (gpt-oss): the sub-problems' oracle rows
    equal the full session's (same routing, weights, outputs, bounds)."""
    per = sampled_experts.FLOAT64_COPIES * 8 * sampled_experts.expert_params(case.spec) // 32
    monkeypatch.setattr(sampled_experts, "SUB_BYTES", 2 * case.spec.top_k * per)  # several sub-problems
    impl = get_implementation("torch-eager")
    full = _Session(impl, case, device)
    ref = full.end_to_end_reference()
    inputs = sampled_experts.full_inputs(case, device)
    rows = np.arange(case.num_tokens)
    o = sampled_experts.oracle_rows(_Session, impl, case, device, inputs, rows, False)
    assert o.groups > 1 and sorted(o.judged.tolist()) == rows.tolist()
    scale = np.abs(ref["y"]).max()  # the same float64 sums, in another expert order: rounding apart
    np.testing.assert_allclose(o.y, ref["y"][o.judged], rtol=1e-12, atol=1e-14 * scale)
    np.testing.assert_allclose(o.e_y, ref["e_y"][o.judged], rtol=1e-9, atol=1e-14 * scale)


def test_sub_routing_keeps_each_rows_full_top_k(low_threshold, device):
    inputs = sampled_experts.full_inputs(DS_CASE, device)
    x = inputs.x.cpu()
    model = _Session(get_implementation("torch-eager"), DS_CASE, device).model
    full, e_s, e_k = sampled_experts.full_routing(model, DS, inputs.weights, x)
    rows = np.array([0, 3, 7])
    touched = np.unique(full.topk_ids[rows])
    sub, sub_e_s, _ = sampled_experts.sub_routing(full, e_s, e_k, touched, rows)
    assert (touched[sub.topk_ids] == full.topk_ids[rows]).all()
    np.testing.assert_array_equal(sub.scores, full.scores[rows][:, touched])
    assert sub_e_s.shape == (3, len(touched))


@pytest.mark.parametrize("impl", ["triton", "torch-eager"])
@pytest.mark.parametrize("case", [DS_CASE, GPT_CASE], ids=["ds-fp8", "gpt-mxfp4"])
def test_honest_implementations_pass_sampled_experts(low_threshold, device, impl, case):
    result = run_case(get_implementation(impl), case, device)
    e2e = _e2e(result)
    assert result.outcome == Outcome.PASS, result.message
    assert "sampled experts: 12 of 12 rows judged" in e2e.message and "only end_to_end" in e2e.message


@pytest.mark.parametrize(
    ("broken", "case"),
    [(ZeroQuant, DS_CASE), (ZeroQuant, GPT_CASE), (WrongExpert, DS_CASE), (WrongExpert, GPT_CASE),
     (ScaleNeighbourBlock, DS_CASE)],
    ids=["zero-ds", "zero-gpt", "wrong-expert-ds", "wrong-expert-gpt", "scale-neighbour-block-ds"],
)  # fmt: skip
def test_broken_outputs_fail_sampled_experts(low_threshold, device, broken, case):
    result = run_case(broken(), case, device)
    assert result.outcome == Outcome.FAIL and result.failing_stage == "end_to_end", result.message
    assert "sampled experts" in _e2e(result).message


def test_rows_sampled_past_the_group_budget_are_not_judged(low_threshold, monkeypatch, device):
    monkeypatch.setattr(sampled_experts, "MAX_GROUPS", 2)
    result = run_case(get_implementation("torch-eager"), DS_CASE, device)
    n = int(_e2e(result).message.split("sampled experts: ")[1].split(" of")[0])
    assert result.outcome == Outcome.PASS and 1 <= n < DS_CASE.num_tokens, _e2e(result).message


def test_the_row_sampled_judge_keeps_quantized_weights(monkeypatch, device):
    """sampled.py (rows only) judges a quantized case with its quantized oracle."""
    monkeypatch.setattr(sampled, "SAMPLE_ABOVE", 1000)
    result = run_case(ZeroQuant(), GPT_CASE, device)
    assert result.outcome == Outcome.FAIL and "sampled:" in _e2e(result).message, result.message
    assert run_case(get_implementation("torch-eager"), GPT_CASE, device).outcome == Outcome.PASS
