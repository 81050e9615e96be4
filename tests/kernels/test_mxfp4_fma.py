"""The MXFP4 FMA path (Mxfp4Config.dot == "fma", kernels/_mxfp4_fma.py): decode-size tiles of 1, 2 or 4 rows
whose products are fp32 FMAs, no matrix instruction.

    every nibble, every place of a word -> fp32 e2m1 value             == formats.decode (bit for bit, -0 kept)
    whole GEMMs on exact-sum inputs      -> the fp32 decode's bits      words and bytes (unaligned codes), 1/2/4 rows,
                                                                         K tails (H 96, I 160), bf16 and fp16
    NaN scale codes                      -> the same outputs poisoned as the fp32 decode
    whole cases through the engine       -> PASS at every stage under the quantized tolerance model
    a scale read from the next block     -> FAIL at gemm1
Runs on the interpreter (CI) and on a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import triton
import triton.language as tl
from _moe_testlib import DEVICE
from test_mxfp4_decode import SPEC, _config, _inputs, _run, _same, run_stages, unaligned_codes
from test_mxfp4_moe import (
    GPT_OSS,
    UNALIGNED,
    MxImplementation,
    _judge_stage,
    _scale_of_next_block,
    _shift_scales,
    _stage_inputs,
    _verdicts,
    mx,
)

from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.devices import select_device
from moe_cts.conformance.engine.results import Outcome
from moe_cts.conformance.engine.runner import run_case
from moe_cts.kernels import mxfp4_gemm as mg
from moe_cts.kernels._mxfp4_fma import _e2m1_f32
from moe_cts.kernels.mxfp4_moe import fused_moe_mxfp4
from moe_cts.reference import formats
from moe_cts.reference.qweights import QuantizedMoEWeights
from moe_cts.reference.spec import SpecError

BF16, F16 = torch.bfloat16, torch.float16


@pytest.fixture(scope="module")
def device():
    from _moe_testlib import INTERPRET

    return select_device("interpreter" if INTERPRET else "auto")


@triton.jit
def _fma_probe(w_ptr, out_ptr, N: tl.constexpr):
    """out[q, n] = e2m1 code q of word n, as the FMA path decodes it."""
    words = tl.load(w_ptr + tl.arange(0, N)).to(tl.uint32, bitcast=True)
    for q in tl.static_range(8):
        tl.store(out_ptr + q * N + tl.arange(0, N), _e2m1_f32(words, q))


def test_every_nibble_in_every_place_of_a_word_decodes_exactly():
    g = torch.Generator().manual_seed(5)
    words = torch.cat([torch.arange(16) * 0x11111111, torch.randint(0, 2**31, (48,), generator=g)])
    words = (words - (words >= 2**31) * 2**32).to(torch.int32)
    out = torch.empty((8, 64), dtype=torch.float32, device=DEVICE)
    _fma_probe[(1,)](words.to(DEVICE), out, N=64)
    nib = (words.numpy().view(np.uint32)[None, :] >> (4 * np.arange(8))[:, None]) & 0xF
    want = formats.decode("e2m1", nib)
    got = out.cpu().double().numpy()
    assert np.array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want))  # code 8 is -0


def _fma(dtype, rows: int, block_k: int) -> dict:
    d = _config(dtype, "weights" if dtype == BF16 else "accumulator", "swar", block_k)
    return {**d, "BLOCK_M": rows, "dot": "fma"}


def _run_fma(inputs, dtype, rows, block_k):
    outs, used = run_stages(inputs, _fma(dtype, rows, block_k))
    assert (used["dot"], used["BLOCK_M"]) == ("fma", rows)
    return outs


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
@pytest.mark.parametrize(
    ("codes", "dtype", "rows", "block_k"),
    [
        ("words", BF16, 1, 64),
        ("words", BF16, 4, 64),
        ("words", F16, 2, 64),
        ("bytes", BF16, 2, 128),
        ("bytes", F16, 1, 128),
    ],
    ids=["words-bf16-1-64", "words-bf16-4-64", "words-fp16-2-64", "bytes-bf16-2-128", "bytes-fp16-1-128"],
)
def test_the_fma_path_gives_the_fp32_decodes_bits_when_the_sums_are_exact(codes, dtype, rows, block_k):
    inputs = _inputs(dtype, seed=rows * block_k, scales=(124, 128), x_ints=True)
    want = _run(inputs, dtype, "weights" if dtype == BF16 else "accumulator", "fp32", 64)
    if codes == "bytes":
        spec, qw, *rest = inputs
        qw = QuantizedMoEWeights.from_codes(
            spec, qw.base, w13=unaligned_codes(qw.w13), w2=unaligned_codes(qw.w2)
        )  # both weights: the FMA path reads bytes
        assert (
            mg._decode_code(mg.choose_config(spec, dtype, 5, _fma(dtype, rows, block_k)), qw.w13.codes)
            == (mg.MK.DECODE["native"])
        )
        inputs = (spec, qw, *rest)
    got = _run_fma(inputs, dtype, rows, block_k)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
    assert all(o.abs().max() > 1 for o in got)  # a path that drops values must not pass


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NaN scale codes: the interpreter's numpy warns
def test_a_nan_scale_code_poisons_the_same_outputs_as_the_fp32_decode():
    inputs = _inputs(BF16, seed=5, scales=(124, 128), x_ints=True)
    _, qw, *_ = inputs
    qw.w13.scales.view(-1)[::37] = 255
    fma, fp32 = _run_fma(inputs, BF16, 2, 128), _run(inputs, BF16, "weights", "fp32", 128)
    assert fma[0].isnan().any() and _same(fma[0], fp32[0])


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # sigmoid of -1e30: 0
@pytest.mark.parametrize(
    ("lo", "hi", "net"), [(0, None, 0), (None, 254, 27)], ids=["codes down to 0", "up to 254"]
)
def test_extreme_scale_codes_stay_within_the_bound_in_bf16(lo, hi, net, device):
    """The scale multiplies fp32 partials: codes 253 / 254, which overflow bf16 weights scaled in bf16 (the
    swar path needs scale_at='accumulator' for them), and the subnormal 2^-127 of code 0 stay in range."""
    spec = mx(UNALIGNED.replace(expert_bias=False), BF16)
    qw, x, ids = _stage_inputs(spec, BF16, 4, seed=11)
    qt, shift = _shift_scales(qw.w13, lo, hi)
    qw = QuantizedMoEWeights.from_codes(spec, qw.base, w13=qt, w2=qw.w2)
    x64 = torch.ldexp(x.double(), torch.tensor(float(net - shift))).to(BF16).double().numpy()
    c, got = _judge_stage("gate_up", spec, qw, x64, ids, BF16, device, _fma(BF16, 2, 64))
    assert torch.isfinite(got).all() and c.within_bound and c.quality_ok, c.summary()
    assert np.abs(got.double().cpu().numpy()).max() > 0


@pytest.mark.parametrize(
    ("spec", "T", "dtype", "rows"),
    [
        pytest.param(mx(GPT_OSS, "bfloat16"), 5, "bfloat16", 1, id="gpt-oss-like bf16 1 row"),
    ],
)
def test_the_fma_layer_matches_the_float64_oracle_at_every_stage(spec, T, dtype, rows, device):
    cfg = {**_fma(BF16, rows, 128), "scale_at": "weights" if dtype == "bfloat16" else "accumulator"}
    r = run_case(MxImplementation(config=cfg), Case(spec, T, dtype, seed=7), device)
    assert r.outcome == Outcome.PASS, _verdicts(r)
    assert {"gemm1", "gemm2", "end_to_end"} <= {v.stage for v in r.stages if v.outcome == Outcome.PASS}
    assert r.kernel_config["dot"] == "fma"


def test_a_scale_from_the_next_block_fails_at_gemm1_on_the_fma_path(device):
    spec = mx(GPT_OSS.replace(hidden_size=128, intermediate_size=64))
    impl = MxImplementation(transform=_scale_of_next_block, config=_fma(BF16, 2, 128))
    r = run_case(impl, Case(spec, 5, "bfloat16", seed=7), device)
    assert r.outcome == Outcome.FAIL and r.failing_stage == "gemm1", _verdicts(r)


def test_fma_tiles_take_1_2_or_4_rows_and_dot_tiles_16_or_more():
    spec = SPEC.replace(quant=mx(SPEC).quant)
    for rows in (1, 2, 4):
        got = mg.choose_config(spec, BF16, 5, _fma(BF16, rows, 64)).tile.BLOCK_M
        assert got == rows
    with pytest.raises(SpecError, match=r"config\.BLOCK_M.*\(1, 2, 4\)"):
        mg.choose_config(spec, BF16, 5, _fma(BF16, 8, 64))
    with pytest.raises(SpecError, match=r"config\.BLOCK_M.*power of two >= 16"):
        mg.choose_config(spec, BF16, 5, {**_fma(BF16, 2, 64), "dot": "portable"})
    with pytest.raises(SpecError, match=r"config\.BLOCK_M.*power of two >= 1"):
        mg.choose_config(spec, BF16, 5, _fma(BF16, 3, 64))


def test_the_fma_path_reads_words_by_default_and_takes_fp16():
    spec, qw, *_ = _inputs(F16, seed=1, scales=(124, 128), x_ints=True)
    tiles = {k: v for k, v in _fma(F16, 1, 64).items() if k in ("gate_up", "down")}
    cfg = mg.choose_config(spec, F16, 5, {"dot": "fma", "BLOCK_M": 1, **tiles})
    assert (cfg.dot, cfg.decode, cfg.scale_code) == ("fma", "swar", mg.MK.SCALE_AT["fma"])
    x = torch.randn((3, spec.hidden_size), generator=torch.Generator().manual_seed(1)).to(F16)
    y = fused_moe_mxfp4(spec, qw, x.to(DEVICE), config=cfg)
    assert y.dtype == F16 and torch.isfinite(y).all() and y.abs().max() > 0
