"""The native MXFP4 decode (kernels/_mxfp4_decode.py) against the bit-exact reference formats, and against the
fp32 decode it replaces (Mxfp4Config.decode "native" vs "fp32").

    every byte 0..255          -> (lo, hi) bits in bf16 and fp16  == formats.decode("e2m1", nibbles)
    every E8M0 code 0..255     -> bf16 bits of 2^(s-127)          == formats.e8m0_decode (NaN for 255)
    every (nibble, code) pair  -> bf16 product e2m1 * 2^(s-127)   == the float64 product wherever finite
    whole GEMMs, random codes, every scale code, K tails: native == fp32 bit for bit (NaN where NaN)

The GEMM comparison runs on the interpreter, where both decodes multiply in fp32; the bf16 product check is
what the GPU computes instead (one bf16 multiply of two exact bf16 values).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import triton
import triton.language as tl
from _moe_testlib import DEVICE, INTERPRET

import moe_cts.kernels.config as cfgmod
from moe_cts.kernels._mxfp4_decode import _decode_pair, _e8m0_bf16_bits
from moe_cts.kernels.mxfp4_gemm import Mxfp4Config
from moe_cts.kernels.mxfp4_moe import down_mxfp4, gate_up_mxfp4
from moe_cts.reference import formats
from moe_cts.reference.quant import QuantScheme
from moe_cts.reference.qweights import QuantizedMoEWeights
from moe_cts.reference.spec import MoESpec, MoEWeights, SpecError

pytestmark = pytest.mark.skipif(not INTERPRET, reason="decode bits are checked on the interpreter")

BF16, F16 = torch.bfloat16, torch.float16
FMT = {BF16: "bf16", F16: "fp16"}
#: H, I multiples of 32 but not of 64: the last K step of a 64-wide BLOCK_K holds one live 32-block
SPEC = MoESpec(hidden_size=96, intermediate_size=160, num_experts=4, top_k=2, renormalize=True)


@triton.jit
def _decode_probe(b_ptr, lo_ptr, hi_ptr, s_ptr, sb_ptr, X_FMT: tl.constexpr):
    i = tl.arange(0, 256)
    lo, hi = _decode_pair(tl.load(b_ptr + i).to(tl.uint16), X_FMT)
    tl.store(lo_ptr + i, lo)
    tl.store(hi_ptr + i, hi)
    tl.store(sb_ptr + i, _e8m0_bf16_bits(tl.load(s_ptr + i).to(tl.uint16)))


def _probe(dtype):
    """(lo, hi, scale) of all 256 bytes / codes, as tensors of `dtype` (scale: bf16)."""
    b = torch.arange(256, dtype=torch.uint8)
    lo, hi, sb = (torch.empty(256, dtype=torch.uint16) for _ in range(3))
    _decode_probe[(1,)](b, lo, hi, b, sb, X_FMT=FMT[dtype])
    return lo.view(dtype), hi.view(dtype), sb.view(BF16)


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bf16", "fp16"])
def test_every_byte_decodes_to_its_two_e2m1_values(dtype):
    lo, hi, _ = _probe(dtype)
    nib = formats.unpack_e2m1(np.arange(256, dtype=np.uint8)[:, None])
    want = formats.decode("e2m1", nib)
    got = np.stack([lo.double().numpy(), hi.double().numpy()], axis=1)
    assert np.array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want))  # -0 (code 8) keeps its sign


def test_every_e8m0_code_gives_its_power_of_two_in_bf16():
    _, _, sb = _probe(BF16)
    want = formats.e8m0_decode(np.arange(256))
    got = sb.double().numpy()
    assert np.isnan(got[255]) and np.array_equal(got[:255], want[:255])
    assert got[0] == 2.0**-127  # bf16's subnormal, not a flushed 0


def test_bf16_products_of_every_nibble_and_scale_code_are_exact_where_finite():
    lo, _, sb = _probe(BF16)
    e2m1 = lo[:16]  # bytes 0..15: the low nibble runs over every code
    prod = (e2m1[:, None] * sb[None, :]).double().numpy()  # the GPU's one bf16 multiply
    want = formats.decode("e2m1", np.arange(16))[:, None] * formats.e8m0_decode(np.arange(256))[None, :]
    finite = np.isfinite(want) & (np.abs(want) < 2.0**128)
    assert np.array_equal(prod[finite], want[finite])
    assert np.isnan(prod[:, 255]).all()
    assert finite[:, :253].all()  # codes up to 252 never overflow bf16


# ----------------------------------------------------------------------------------------------- whole GEMMs
def _inputs(dtype, seed: int):
    """Random bytes (every nibble) and scale codes (bf16: all 256; fp16: where x * w stays in range)."""
    spec = SPEC.replace(quant=QuantScheme.mxfp4(activation_dtype="bfloat16" if dtype == BF16 else "float16"))
    g = torch.Generator().manual_seed(seed)
    qw = QuantizedMoEWeights.quantize(spec, MoEWeights.random(spec, generator=g, dtype=torch.float64))
    lo, hi = (0, 256) if dtype == BF16 else (112, 136)

    def scramble(qt):
        codes = torch.randint(0, 256, qt.codes.shape, dtype=torch.uint8, generator=g)
        return dataclasses.replace(
            qt, codes=codes, scales=torch.randint(lo, hi, qt.scales.shape, generator=g).to(torch.uint8)
        )

    qw = QuantizedMoEWeights.from_codes(spec, qw.base, w13=scramble(qw.w13), w2=scramble(qw.w2))
    x = (torch.randn(5, spec.hidden_size, generator=g) * 2.0**-20).to(dtype)
    act = (torch.randn(5, spec.top_k, spec.intermediate_size, generator=g) * 2.0**-20).to(dtype)
    ids = torch.stack([torch.randperm(spec.num_experts, generator=g)[: spec.top_k] for _ in range(5)])
    return spec, qw, x, act, ids.to(torch.int32)


def _config(dtype, scale_at: str, decode: str, block_k: int) -> dict:
    base = cfgmod.choose(
        dtype=dtype, num_tokens=5, top_k=2, num_experts=4, hidden_size=96, intermediate_size=160
    )
    d = base.to_dict()
    for g in ("gate_up", "down"):
        d[g] = {**d[g], "BLOCK_K": block_k}
    return {**d, "scale_at": scale_at, "decode": decode}


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(torch.nan_to_num(a), torch.nan_to_num(b))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NaN scale codes: the interpreter's numpy warns
@pytest.mark.parametrize(
    ("dtype", "scale_at"), [(BF16, "weights"), (BF16, "accumulator"), (F16, "accumulator")], ids=str
)
@pytest.mark.parametrize("block_k", [32, 64])
def test_native_and_fp32_decodes_agree_bit_for_bit(dtype, scale_at, block_k):
    spec, qw, x, act, ids = _inputs(dtype, seed=block_k)
    outs = {}
    for decode in ("fp32", "native"):
        cfg = _config(dtype, scale_at, decode, block_k)
        g = gate_up_mxfp4(spec, qw, x.to(DEVICE), ids.to(DEVICE), config=cfg)
        d = down_mxfp4(spec, qw, act.to(DEVICE), ids.to(DEVICE), config=cfg)
        assert cfgmod.last_config().to_dict()["decode"] == decode
        outs[decode] = (g, d)
    for native, fp32 in zip(outs["native"], outs["fp32"], strict=True):
        assert _same(native, fp32)
        assert native.nan_to_num().abs().max() > 0  # a decode that drops every value must not pass
    if dtype == BF16 and scale_at == "weights":
        assert outs["native"][0].isnan().any()  # code 255 reached the output


def test_the_native_decode_is_the_default_and_a_bad_decode_names_its_field():
    tile = cfgmod.choose(
        dtype=BF16, num_tokens=5, top_k=2, num_experts=4, hidden_size=96, intermediate_size=160
    )
    assert Mxfp4Config(tile=tile, scale_at="weights").decode == "native"
    spec, qw, x, _, ids = _inputs(BF16, seed=0)
    with pytest.raises(SpecError, match=r"config\.decode"):
        gate_up_mxfp4(spec, qw, x, ids, config={"decode": "fp8"})
