"""moe_cts.kernels.mxfp4_moe against the float64 quantized oracle, under the quantized tolerance model.

Two routes to the same judge (conformance/engine/quant_tolerance.py + compare.py):
  * whole cases through the engine (`run_case`): adversarial MX blocks (neighbouring blocks differ by powers
    of two, a tiny and an all-zero block, a subnormal element per block), stages gemm1 / gemm2 / end_to_end;
  * stage calls on hand-made codes (`_judge_stage`): E8M0 extremes, where the case builder never goes.
Broken variants run the real kernels on codes or scales read the way a buggy kernel would read them: the
same checks must fail (a check that cannot fail is worth nothing).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from _moe_testlib import DEVICE, INTERPRET, random_ids

import moe_cts.kernels.config as cfgmod
from moe_cts.conformance.engine import quant_tolerance as qtol
from moe_cts.conformance.engine import tolerance as tol
from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.compare import compare
from moe_cts.conformance.engine.devices import accumulator_profile, select_device
from moe_cts.conformance.engine.protocol import FORWARD, Capabilities
from moe_cts.conformance.engine.results import Outcome
from moe_cts.conformance.engine.runner import run_case
from moe_cts.kernels import mxfp4_gemm, mxfp4_pack
from moe_cts.kernels.mxfp4_moe import down_mxfp4, fused_moe_mxfp4, gate_up_mxfp4
from moe_cts.reference import presets
from moe_cts.reference.errors import NotSupportedError
from moe_cts.reference.quant import QuantScheme
from moe_cts.reference.qweights import QuantizedMoEWeights, QuantTensor
from moe_cts.reference.spec import MoESpec, MoEWeights, SpecError

BF16, F16 = torch.bfloat16, torch.float16
ACT_DTYPE = {BF16: "bfloat16", F16: "float16", "bfloat16": "bfloat16", "float16": "float16"}


def mx(spec: MoESpec, dtype="bfloat16") -> MoESpec:
    return spec.replace(quant=QuantScheme.mxfp4(activation_dtype=ACT_DTYPE[dtype]))


#: gpt-oss semantics at CPU size: router bias, top-k then softmax over k (= softmax, renormalize),
#: interleaved gate/up, swiglu_oai (alpha 1.702, limit 7), expert biases
GPT_OSS = presets.scaled("gpt-oss-20b", hidden_size=64, intermediate_size=96)
#: H, I multiples of 32 but not of the interpreter's BLOCK_K (64 / 128): K tails of whole MX blocks
UNALIGNED = MoESpec(hidden_size=96, intermediate_size=160, num_experts=4, top_k=2, renormalize=True)
#: wide enough along K that one dropped 64-wide K tile is a quarter of the reduction
BROKEN_SPEC = GPT_OSS.replace(hidden_size=128, intermediate_size=64)


# ----------------------------------------------------------------------------------------------- the adapter
class MxImplementation:
    """The MXFP4 kernels behind the engine's Implementation protocol (test-local: the registry's "triton"
    implementation belongs to kernels/moe.py). `transform` rewrites the QuantizedMoEWeights first (broken
    variants); `config` forces a config."""

    name = "triton-mxfp4"

    def __init__(self, transform=None, config=None):
        self.transform, self.config = transform, config

    def capabilities(self) -> Capabilities:
        return Capabilities(
            stages=frozenset({FORWARD, "gate_up", "down"}),
            dtypes=frozenset({"bfloat16", "float16"}),
            quant_schemes=frozenset({"mxfp4"}),
            deterministic=True,
            accepts_out=True,
            local_mask=True,
        )

    def kernel_config(self) -> dict:
        cfg = cfgmod.last_config()
        return {} if cfg is None else cfg.to_dict()

    def run(self, inputs, stage: str, device=None, *, out=None):
        qw = inputs.qweights if self.transform is None else self.transform(inputs.qweights)
        spec, cfg = inputs.spec, self.config
        if stage == FORWARD:
            return fused_moe_mxfp4(spec, qw, inputs.x, config=cfg, out=out)
        if stage == "gate_up":
            return gate_up_mxfp4(spec, qw, inputs.x, inputs.topk_ids, config=cfg)
        if stage == "down":
            return down_mxfp4(spec, qw, inputs.act, inputs.topk_ids, config=cfg)
        raise NotSupportedError(f"stage: {stage} not exposed by the MXFP4 kernels")


@pytest.fixture(scope="module")
def device():
    return select_device("interpreter" if INTERPRET else "auto")


def _verdicts(r) -> str:
    return "; ".join(f"{v.stage}: {v.outcome.value} {v.message}" for v in r.stages)


# ----------------------------------------------------------------------------------------------- conformant
MATCH_CASES = [
    pytest.param(mx(GPT_OSS, "bfloat16"), 5, "bfloat16", id="gpt-oss-like bf16"),
    pytest.param(mx(GPT_OSS, "float16"), 5, "float16", id="gpt-oss-like fp16"),
    pytest.param(mx(UNALIGNED, "bfloat16"), 4, "bfloat16", id="H 96 I 160 concat silu bf16"),
    pytest.param(mx(UNALIGNED, "float16"), 4, "float16", id="H 96 I 160 concat silu fp16"),
    pytest.param(
        mx(UNALIGNED.replace(n_shared_experts=1, shared_intermediate_size=64, shared_gate=True)),
        3,
        "bfloat16",
        id="shared expert with gate bf16",
    ),
]


@pytest.mark.parametrize(("spec", "T", "dtype"), MATCH_CASES)
def test_mxfp4_layer_matches_the_float64_oracle_at_every_stage(spec, T, dtype, device):
    r = run_case(MxImplementation(), Case(spec, T, dtype, seed=7), device)
    assert r.outcome == Outcome.PASS, _verdicts(r)
    judged = {v.stage for v in r.stages if v.outcome == Outcome.PASS}
    assert {"gemm1", "gemm2", "end_to_end"} <= judged, _verdicts(r)


def test_the_adversarial_case_has_zero_tiny_and_subnormal_blocks():
    qw = Case(mx(GPT_OSS), 5, "bfloat16", seed=7).build_inputs().qweights
    w = qw.w13.dequantize()[0]  # (2I, H) of expert 0
    assert (w[-1, :32] == 0).all() and 0 < np.abs(w[0, 32:]).max() < 1e-9
    codes = qw.w13.element_codes()
    assert ((codes & 7) == 1).any(), "no e2m1 subnormal (0.5) element"


def test_bf16_and_fp16_record_where_the_scale_is_applied():
    spec = mx(GPT_OSS)
    inp = Case(spec, 3, "bfloat16", seed=1).build_inputs(DEVICE)
    fused_moe_mxfp4(spec, inp.qweights, inp.x)
    assert cfgmod.last_config().to_dict()["scale_at"] == "weights"
    fused_moe_mxfp4(spec, inp.qweights, inp.x.to(F16))
    d = cfgmod.last_config().to_dict()
    assert (d["scale_at"], d["dot"], d["quant"]) == ("accumulator", "portable", "mxfp4")


def test_both_scale_placements_agree_with_the_oracle_in_bf16(device):
    base = cfgmod.choose(
        dtype=BF16, num_tokens=4, top_k=2, num_experts=4, hidden_size=96, intermediate_size=160
    )
    forced = {**base.to_dict(), "scale_at": "accumulator"}
    r = run_case(MxImplementation(config=forced), Case(mx(UNALIGNED), 4, "bfloat16", seed=3), device)
    assert r.outcome == Outcome.PASS, _verdicts(r)
    assert r.kernel_config["scale_at"] == "accumulator"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_the_dot_scaled_variant_matches_the_oracle(dtype, device):
    r = run_case(
        MxImplementation(config={"dot": "dot_scaled"}), Case(mx(GPT_OSS, dtype), 5, dtype, seed=7), device
    )
    assert r.outcome == Outcome.PASS, _verdicts(r)
    assert r.kernel_config["dot"] == "dot_scaled"


def test_fp16_dot_scaled_is_refused_below_sm89_before_any_launch(monkeypatch):
    from triton.backends.compiler import GPUTarget

    import moe_cts.kernels.mxfp4_gemm as mg

    spec, qw, x = _gpt_inputs()
    monkeypatch.setattr(mg, "_active_target", lambda: GPUTarget("cuda", 80, 32))
    with pytest.raises(NotSupportedError, match=r"config\.dot.*sm89"):
        fused_moe_mxfp4(spec, qw, x.to(F16), config={"dot": "dot_scaled"})
    fused_moe_mxfp4(spec, qw, x, config={"dot": "dot_scaled"})  # bf16 compiles there: accepted


def test_zero_tokens_give_an_empty_output():
    spec = mx(GPT_OSS)
    inp = Case(spec, 2, "bfloat16", seed=1).build_inputs(DEVICE)
    y = fused_moe_mxfp4(spec, inp.qweights, inp.x[:0])
    assert y.shape == (0, spec.hidden_size) and y.dtype == BF16


# ----------------------------------------------------------------------------------------------- E8M0 extremes
def _shift_scales(qt: QuantTensor, lo: int | None, hi: int | None) -> tuple[QuantTensor, int]:
    """(codes moved by one power of two for the whole tensor so that min code = lo or max code = hi, shift)."""
    s = qt.scales.to(torch.int32)
    shift = (lo - int(s.min())) if lo is not None else (hi - int(s.max()))
    return dataclasses.replace(qt, scales=(s + shift).to(torch.uint8)), shift


def _stage_inputs(spec: MoESpec, dtype, T: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    w = MoEWeights.random(spec, generator=g, dtype=torch.float64)
    qw = QuantizedMoEWeights.quantize(spec, w)
    x = torch.randn((T, spec.hidden_size), generator=g, dtype=torch.float64)
    return qw, x, random_ids(T, spec.num_experts, spec.top_k, g)


def _judge_stage(stage: str, spec, qw, x64: np.ndarray, ids, dtype, device, config=None):
    """(Comparison, kernel output) of one stage on given codes; x64 holds values already in dtype."""
    model = tol.ErrorModel.for_case(accumulator_profile(device), ACT_DTYPE[dtype])
    qv = tol.WeightViews.of(qw.base)
    ids_np = ids.numpy()
    tid = ids.to(DEVICE)
    if stage == "gate_up":
        ref, bound = qtol.gate_up_bounds(model, spec, qw, qv, x64, ids_np)
        got = gate_up_mxfp4(spec, qw, torch.from_numpy(x64).to(dtype).to(DEVICE), tid, config=config)
        return compare(got, ref.act, bound, floor=model.tiny), got
    ref, bound = qtol.down_bounds(model, spec, qw, qv, x64, ids_np)
    got = down_mxfp4(spec, qw, torch.from_numpy(x64).to(dtype).to(DEVICE), tid, config=config)
    return compare(got, ref, bound, floor=model.tiny), got


EXTREMES = [
    # (dtype, scale_at, min code, max code, net): activations scaled by 2^(net - shift), so every product
    # moves by 2^net and outputs stay inside the dtype's range; unshifted codes are ~122-124
    pytest.param(BF16, "weights", 0, None, 0, id="bf16 weights codes down to 0 (2^-127)"),
    pytest.param(BF16, "weights", None, 252, 27, id="bf16 weights codes up to 252"),
    pytest.param(BF16, "accumulator", None, 254, 27, id="bf16 accumulator codes up to 254"),
    pytest.param(F16, "accumulator", None, 141, 3, id="fp16 scaled weights past 65504"),
    pytest.param(F16, "accumulator", 102, None, -7, id="fp16 scaled weights below 2^-24"),
]


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # sigmoid of -1e30: 0
@pytest.mark.parametrize(("dtype", "scale_at", "lo", "hi", "net"), EXTREMES)
@pytest.mark.parametrize("stage", ["gate_up", "down"])
def test_extreme_e8m0_scales_stay_within_the_bound(stage, dtype, scale_at, lo, hi, net, device):
    spec = mx(UNALIGNED.replace(expert_bias=False), dtype)
    qw, x, ids = _stage_inputs(spec, dtype, 4, seed=11)
    name = "w13" if stage == "gate_up" else "w2"
    qt, shift = _shift_scales(getattr(qw, name), lo, hi)
    qw = QuantizedMoEWeights.from_codes(spec, qw.base, **{"w13": qw.w13, "w2": qw.w2, name: qt})
    if stage == "down":  # an activation of the right width; the down stage takes it as given
        x = torch.randn((4, spec.top_k, spec.intermediate_size), generator=torch.Generator().manual_seed(2))
    x64 = torch.ldexp(x.double(), torch.tensor(float(net - shift))).to(dtype).double().numpy()
    base = cfgmod.choose(
        dtype=dtype, num_tokens=4, top_k=2, num_experts=4, hidden_size=96, intermediate_size=160
    )
    c, got = _judge_stage(stage, spec, qw, x64, ids, dtype, device, {**base.to_dict(), "scale_at": scale_at})
    assert torch.isfinite(got).all() and c.within_bound and c.quality_ok, c.summary()
    assert np.abs(got.double().cpu().numpy()).max() > 0


# ----------------------------------------------------------------------------------------------- broken variants
def _nibbles_swapped(qw):
    c = qw.w13.codes
    return qw.replace(w13=dataclasses.replace(qw.w13, codes=((c & 15) << 4) | (c >> 4)))


def _scale_of_next_block(qw):
    return qw.replace(w13=dataclasses.replace(qw.w13, scales=torch.roll(qw.w13.scales, -1, dims=-1)))


def _last_k_tile_dropped(qw):
    c = qw.w13.codes.clone()
    c[..., -32:] = 0  # the last 64 elements of K: what a K loop one BLOCK_K = 64 tile short computes
    return qw.replace(w13=dataclasses.replace(qw.w13, codes=c))


BROKEN = {
    "nibble order swapped": _nibbles_swapped,
    "scale read from the next K block": _scale_of_next_block,
    "last K tile dropped": _last_k_tile_dropped,
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_mxfp4_variant_fails_at_gemm1(name, device):
    r = run_case(
        MxImplementation(transform=BROKEN[name]), Case(mx(BROKEN_SPEC), 5, "bfloat16", seed=7), device
    )
    assert r.outcome == Outcome.FAIL and r.failing_stage == "gemm1", _verdicts(r)


def _pack_without_the_transpose(codes, order="mma_b", group=1):
    """A packer that pads but keeps the reference word order: the packed decodes then read word c of block b
    where word b of block c is, with its codes in the reference order."""
    kb = codes.shape[-1]
    return torch.nn.functional.pad(codes, (0, mxfp4_pack.packed_k(2 * kb) // 2 - kb)).contiguous()


@pytest.mark.parametrize("decode", ["packed", "swapped"])
def test_codes_not_in_the_packed_layout_fail_at_gemm1(device, monkeypatch, decode):
    monkeypatch.setattr(mxfp4_gemm, "packed_codes", _pack_without_the_transpose)
    cfg = {"decode": decode}
    r = run_case(MxImplementation(config=cfg), Case(mx(BROKEN_SPEC), 5, "bfloat16", seed=7), device)
    assert r.outcome == Outcome.FAIL and r.failing_stage == "gemm1", _verdicts(r)
    assert cfgmod.last_config().decode == decode


def test_a_scale_from_the_next_block_fails_the_stage_check_on_plain_random_weights(device):
    """Random weights repeat scale codes between neighbouring blocks (flashinfer issue 4087), yet the
    shifted read still leaves the bound somewhere."""
    spec = mx(UNALIGNED.replace(expert_bias=False))
    qw, x, ids = _stage_inputs(spec, BF16, 4, seed=11)
    x64 = x.to(BF16).double().numpy()
    good, _ = _judge_stage("gate_up", spec, qw, x64, ids, BF16, device)
    model = tol.ErrorModel.for_case(accumulator_profile(device), "bfloat16")
    ref, bound = qtol.gate_up_bounds(model, spec, qw, tol.WeightViews.of(qw.base), x64, ids.numpy())
    got = gate_up_mxfp4(spec, _scale_of_next_block(qw), x.to(BF16).to(DEVICE), ids.to(DEVICE))
    assert good.within_bound and not compare(got, ref.act, bound, floor=model.tiny).within_bound


# ----------------------------------------------------------------------------------------------- validation
def _gpt_inputs():
    spec = mx(GPT_OSS)
    inp = Case(spec, 2, "bfloat16", seed=1).build_inputs(DEVICE)
    return spec, inp.qweights, inp.x


def test_a_non_mxfp4_spec_is_refused_naming_the_method():
    spec, qw, x = _gpt_inputs()
    with pytest.raises(SpecError, match=r"spec\.quant\.method.*'mxfp4'"):
        fused_moe_mxfp4(spec.replace(quant=None), qw, x)


def test_fp32_activations_are_not_supported():
    spec, qw, x = _gpt_inputs()
    with pytest.raises(NotSupportedError, match=r"x\.dtype.*bfloat16 or float16"):
        fused_moe_mxfp4(spec, qw, x.float())


def test_unpacked_codes_are_refused_naming_the_shape():
    spec, qw, x = _gpt_inputs()
    q = qw.w13
    bad = QuantTensor(q.codes, q.scales, "e2m1", (1, 32), "e8m0")
    object.__setattr__(bad, "codes", torch.from_numpy(q.element_codes()))  # one code per byte, post hoc
    with pytest.raises(SpecError, match=r"qweights\.w13\.codes\.shape"):
        fused_moe_mxfp4(spec, qw.replace(w13=bad), x)


def test_float32_scales_are_refused_naming_the_scale_dtype():
    spec, qw, x = _gpt_inputs()
    q = qw.w2
    bad = QuantTensor(q.codes, torch.from_numpy(q.scale_values()).float(), "e2m1", (1, 32), "float32")
    with pytest.raises(SpecError, match=r"qweights\.w2\.scale_dtype.*'e8m0'"):
        fused_moe_mxfp4(spec, qw.replace(w2=bad), x)


def test_fp8_codes_are_refused_naming_the_format():
    spec, qw, x = _gpt_inputs()
    q = qw.w13
    E, R, H = q.shape
    bad = QuantTensor(torch.zeros((E, R, H), dtype=torch.uint8), q.scales, "e4m3fn", (1, 32), "e8m0")
    with pytest.raises(SpecError, match=r"qweights\.w13\.fmt.*'e2m1'"):
        fused_moe_mxfp4(spec, qw.replace(w13=bad), x)


def test_a_bad_config_names_its_field():
    spec, qw, x = _gpt_inputs()
    base = cfgmod.choose(
        dtype=BF16, num_tokens=2, top_k=4, num_experts=8, hidden_size=64, intermediate_size=96
    )
    with pytest.raises(SpecError, match=r"config\.scale_at"):
        fused_moe_mxfp4(spec, qw, x, config={**base.to_dict(), "scale_at": "registers"})
    with pytest.raises(SpecError, match=r"config\.dot.*\('portable', 'dot_scaled'\).*'fma'"):
        fused_moe_mxfp4(spec, qw, x, config={**base.to_dict(), "dot": "fma"})  # removed: docs/mxfp4.md
    with pytest.raises(SpecError, match=r"config\.BLOCK_M.*power of two >= 16"):
        fused_moe_mxfp4(spec, qw, x, config={**base.to_dict(), "BLOCK_M": 2})
