"""The MXFP4 decodes (Mxfp4Config.decode: "packed" kernels/_mxfp4_packed.py, "swapped" _mxfp4_swapped.py,
"swar" kernels/_mxfp4_swar.py,
"native" kernels/_mxfp4_decode.py, "fp32" the first version) against the bit-exact reference formats and against
each other.

    every byte 0..255          -> native (lo, hi) bits in bf16 and fp16   == formats.decode("e2m1", nibbles)
    every nibble, every place  -> swar values (bits * 2^126)              == formats.decode("e2m1", nibbles)
                                  and packed values from words at mxfp4_pack.NIBBLE_PLACES, likewise
    every E8M0 code 0..255     -> bf16 bits of 2^(s-127)                  == formats.e8m0_decode (NaN for 255)
    every (nibble, code) pair  -> native and swar products in the dtype   == the float64 product where finite
    whole GEMMs, K tails       -> packed == swapped == swar == native == fp32 bit for bit (inputs whose fp32 sums are exact
                                  in any order), NaN where a scale code is 255; on plain random codes native ==
                                  fp32; packed and swapped with their select-free (plain) scales == with the
                                  selects
                                  (the word order of its layout is checked in test_mxfp4_pack.py)

Runs on the device the tests run on: on a GPU the probes check the hardware's bf16 multiply (the swar decode
multiplies bf16 subnormals by 2^126; the native one the subnormal scale 2^-127), on the interpreter the fp32
path that replaces it there.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import triton
import triton.language as tl
from _moe_testlib import DEVICE

import moe_cts.kernels.config as cfgmod
from moe_cts.kernels import mxfp4_gemm as mg
from moe_cts.kernels import mxfp4_pack
from moe_cts.kernels._mxfp4_decode import _decode_pair, _e8m0_bf16_bits, _scale_tile
from moe_cts.kernels._mxfp4_packed import _pair_bits
from moe_cts.kernels._mxfp4_swar import _e2m1_pair_bits, _half_as_float
from moe_cts.kernels.mxfp4_gemm import Mxfp4Config
from moe_cts.kernels.mxfp4_moe import down_mxfp4, gate_up_mxfp4
from moe_cts.reference import formats
from moe_cts.reference.quant import QuantScheme
from moe_cts.reference.qweights import QuantizedMoEWeights
from moe_cts.reference.spec import MoESpec, MoEWeights, SpecError

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
    """(lo, hi, scale) of all 256 bytes / codes, as CPU tensors of `dtype` (scale: bf16)."""
    b = torch.arange(256, dtype=torch.uint8, device=DEVICE)
    lo, hi, sb = (torch.empty(256, dtype=torch.int16, device=DEVICE) for _ in range(3))
    _decode_probe[(1,)](b, lo, hi, b, sb, X_FMT=FMT[dtype])
    return lo.cpu().view(dtype), hi.cpu().view(dtype), sb.cpu().view(BF16)


@triton.jit
def _swar_probe(w_ptr, s_ptr, out_ptr, N: tl.constexpr):
    """out[q, n, c] = e2m1 code q of word n times 2^(s[c] - 127), as the swar GEMM computes it (fp32 out)."""
    words = tl.load(w_ptr + tl.arange(0, N)).to(tl.uint32, bitcast=True)
    sc = _scale_tile(tl.load(s_ptr + tl.arange(0, 256)), "bf16")[None, :]
    offs = tl.arange(0, N)[:, None] * 256 + tl.arange(0, 256)[None, :]
    for q in tl.static_range(4):
        r = _e2m1_pair_bits(words, q)[:, None]
        tl.store(out_ptr + q * N * 256 + offs, (_half_as_float(r & 0xFFFF) * sc).to(tl.float32))
        tl.store(out_ptr + (q + 4) * N * 256 + offs, (_half_as_float(r >> 16) * sc).to(tl.float32))


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


def test_swar_words_decode_every_nibble_in_every_place_times_every_scale_exactly():
    g = torch.Generator().manual_seed(3)
    words = torch.cat([torch.arange(16) * 0x11111111, torch.randint(0, 2**31, (48,), generator=g)])
    words = (words - (words >= 2**31) * 2**32).to(torch.int32)  # the same bits as int32
    out = torch.empty((8, 64, 256), dtype=torch.float32, device=DEVICE)
    codes = torch.arange(256, dtype=torch.uint8, device=DEVICE)
    _swar_probe[(1,)](words.to(DEVICE), codes, out, N=64)
    nib = (words.numpy().view(np.uint32)[None, :] >> (4 * np.arange(8))[:, None]) & 0xF  # (8, 64): code q
    want = formats.decode("e2m1", nib)[..., None] * formats.e8m0_decode(np.arange(256))
    got = out.cpu().double().numpy()
    finite = np.isfinite(want) & (np.abs(want) < 2.0**128)
    assert np.array_equal(got[finite], want[finite])
    assert np.isnan(got[..., 255]).all()
    assert np.array_equal(np.signbit(got[..., 127]), np.signbit(want[..., 127]))  # -0 keeps its sign


@triton.jit
def _packed_probe(w_ptr, out_ptr, N: tl.constexpr):
    """out[q, n] / out[q + 4, n] = the low / high half of packed register q of word n, times 2^126 (fp32)."""
    words = tl.load(w_ptr + tl.arange(0, N)).to(tl.uint32, bitcast=True)
    for q in tl.static_range(4):
        r = _pair_bits(words, q)
        tl.store(out_ptr + q * N + tl.arange(0, N), _half_as_float(r & 0xFFFF).to(tl.float32))
        tl.store(out_ptr + (q + 4) * N + tl.arange(0, N), _half_as_float(r >> 16).to(tl.float32))


def test_packed_words_decode_every_nibble_in_every_place():
    """Each register q holds elements q (low half) and q + 4 (high) of the word in reference order, whatever
    bits mxfp4_pack.NIBBLE_PLACES moved them to."""
    g = torch.Generator().manual_seed(4)
    words = torch.cat([torch.arange(16) * 0x11111111, torch.randint(0, 2**31, (48,), generator=g)])
    words = (words - (words >= 2**31) * 2**32).to(torch.int32)  # reference order, every nibble everywhere
    placed = mxfp4_pack._place_nibbles(words)
    out = torch.empty((8, 64), dtype=torch.float32, device=DEVICE)
    _packed_probe[(1,)](placed.to(DEVICE), out, N=64)
    nib = (words.numpy().view(np.uint32)[None, :] >> (4 * np.arange(8))[:, None]) & 0xF  # (8, 64)
    want = formats.decode("e2m1", nib)
    got = out.cpu().double().numpy()
    assert np.array_equal(got, want) and np.array_equal(np.signbit(got), np.signbit(want))


# ----------------------------------------------------------------------------------------------- whole GEMMs
def _inputs(dtype, seed: int, scales: tuple[int, int], x_ints: bool):
    """Random bytes (every nibble) and scale codes in [lo, hi). x_ints: activations small integers, so that
    with codes in [124, 128) every product is a multiple of 2^-4 below 2^5 and every fp32 sum is exact."""
    act_dtype = "bfloat16" if dtype == BF16 else "float16"
    spec = SPEC.replace(quant=QuantScheme.mxfp4(activation_dtype=act_dtype), expert_bias=False)
    g = torch.Generator().manual_seed(seed)
    qw = QuantizedMoEWeights.quantize(spec, MoEWeights.random(spec, generator=g, dtype=torch.float64))

    def scramble(qt):
        codes = torch.randint(0, 256, qt.codes.shape, dtype=torch.uint8, generator=g)
        sc = torch.randint(*scales, qt.scales.shape, generator=g).to(torch.uint8)
        return dataclasses.replace(qt, codes=codes, scales=sc)

    qw = QuantizedMoEWeights.from_codes(spec, qw.base, w13=scramble(qw.w13), w2=scramble(qw.w2))

    def draw(*shape):
        if x_ints:
            return torch.randint(-3, 4, shape, generator=g).to(dtype)
        return (torch.randn(shape, generator=g) * 2.0**-20).to(dtype)

    x, act = draw(5, spec.hidden_size), draw(5, spec.top_k, spec.intermediate_size)
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


def run_stages(inputs, cfg: dict):
    """(gate_up output, down output) on the CPU under config cfg, and the config gate_up recorded."""
    spec, qw, x, act, ids = inputs
    g = gate_up_mxfp4(spec, qw, x.to(DEVICE), ids.to(DEVICE), config=cfg)
    used = cfgmod.last_config().to_dict()
    return (g.cpu(), down_mxfp4(spec, qw, act.to(DEVICE), ids.to(DEVICE), config=cfg).cpu()), used


def _run(inputs, dtype, scale_at: str, decode: str, block_k: int):
    outs, used = run_stages(inputs, _config(dtype, scale_at, decode, block_k))
    assert used["decode"] == decode
    return outs


def unaligned_codes(qt):
    """qt with its codes 2 bytes into wider rows: not 4-byte aligned, so no 32-bit word reads."""
    c = qt.codes
    wide = torch.zeros((*c.shape[:-1], c.shape[-1] + 2), dtype=torch.uint8)
    wide[..., 2:] = c
    return dataclasses.replace(qt, codes=wide[..., 2:])


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(torch.nan_to_num(a), torch.nan_to_num(b))


#: (dtype, scale_at, decodes that apply): swar and packed are bf16 with the scale on the weights only; packed
#: takes BLOCK_K 128 only (its packing step)
PLACEMENTS = [
    pytest.param(BF16, "weights", ("fp32", "native", "swar", "packed", "swapped"), id="bf16-weights"),
    pytest.param(BF16, "accumulator", ("fp32", "native"), id="bf16-accumulator"),
    pytest.param(F16, "accumulator", ("fp32", "native"), id="fp16-accumulator"),
]


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # sigmoid of -1e3: 0
@pytest.mark.parametrize(("dtype", "scale_at", "decodes"), PLACEMENTS)
@pytest.mark.parametrize("block_k", [32, 64, 128, 256])  # H 96, I 160: K tails in both GEMMs
def test_every_decode_gives_the_same_bits_when_the_sums_are_exact(dtype, scale_at, decodes, block_k):
    decodes = tuple(d for d in decodes if d not in mg.PACKED_DECODES or block_k == mg.PACKED_BLOCK_K)
    inputs = _inputs(dtype, seed=block_k, scales=(124, 128), x_ints=True)
    outs = {d: _run(inputs, dtype, scale_at, d, block_k) for d in decodes}
    for d in decodes[1:]:
        for got, want in zip(outs[d], outs["fp32"], strict=True):
            assert torch.equal(got, want), d
    assert all(o.abs().max() > 1 for o in outs["fp32"])  # a decode that drops values must not pass


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NaN scale codes: the interpreter's numpy warns
@pytest.mark.parametrize(("dtype", "scale_at", "decodes"), PLACEMENTS)
def test_native_and_fp32_decodes_agree_bit_for_bit_over_every_scale_code(dtype, scale_at, decodes):
    """Same dots in the same order (BLOCK_K 64): bit-equal whatever the sums; bf16 sees every code, 255 too."""
    inputs = _inputs(dtype, seed=7, scales=(0, 256) if dtype == BF16 else (112, 136), x_ints=False)
    native, fp32 = _run(inputs, dtype, scale_at, "native", 64), _run(inputs, dtype, scale_at, "fp32", 64)
    for a, b in zip(native, fp32, strict=True):
        assert _same(a, b)
        assert a.nan_to_num().abs().max() > 0
    if dtype == BF16:
        assert native[0].isnan().any()  # code 255 reached the output


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("decode", ["swar", "packed", "swapped"])
def test_a_nan_scale_code_poisons_exactly_the_same_outputs(decode):
    inputs = _inputs(BF16, seed=5, scales=(124, 128), x_ints=True)
    _, qw, *_ = inputs
    qw.w13.scales.view(-1)[::37] = 255
    got, fp32 = _run(inputs, BF16, "weights", decode, 128), _run(inputs, BF16, "weights", "fp32", 128)
    assert got[0].isnan().any() and torch.equal(got[0].isnan(), fp32[0].isnan())
    assert _same(got[0], fp32[0])


def _tile(block_k: int):
    return mg.choose_config(SPEC, BF16, 5, _config(BF16, "weights", "native", block_k)).tile


def _on_cuda(monkeypatch, target: str) -> None:
    """choose_config as on a CUDA GPU of `target` (sm80: no TARGET_DECODE entry, the packed default)."""
    monkeypatch.setattr(cfgmod, "backend", lambda: "cuda")
    monkeypatch.setattr(cfgmod, "current_target", lambda: target)


def test_the_default_decode_is_packed_for_bf16_weights_native_else_and_fp32_on_rocm():
    for backend in ("cuda", "interpreter"):
        assert mg.default_decode(BF16, "weights", "portable", backend) == "packed"
        assert mg.default_decode(F16, "accumulator", "portable", backend) == "native"
        assert mg.default_decode(BF16, "accumulator", "portable", backend) == "native"
        assert mg.default_decode(BF16, "weights", "dot_scaled", backend) == "native"
    assert mg.default_decode(BF16, "weights", "portable", "hip") == "fp32"
    assert Mxfp4Config(tile=_tile(64), scale_at="weights").decode == "native"  # the dataclass default


def test_a_target_decode_replaces_packed_on_that_target_only(monkeypatch):
    """TARGET_DECODE (empty until the H200 certifies sm90 -> swapped, timed faster there in session 27): only
    a CUDA device of that target reads it; the env still wins; the interpreter and other targets keep packed."""
    shipped = mg.TARGET_DECODE.get("sm90", "packed")
    assert mg.default_decode(BF16, "weights", "portable", "cuda", "sm90") == shipped
    monkeypatch.setattr(mg, "TARGET_DECODE", {"sm90": "swapped"})
    assert mg.default_decode(BF16, "weights", "portable", "cuda", "sm90") == "swapped"
    assert mg.default_decode(F16, "accumulator", "portable", "cuda", "sm90") == "native"
    for backend, target in (("cuda", "sm80"), ("cuda", "sm100"), ("cuda", None), ("interpreter", "sm90")):
        assert mg.default_decode(BF16, "weights", "portable", backend, target) == "packed"
    assert mg.default_decode(BF16, "weights", "portable", "hip", "gfx942") == "fp32"
    monkeypatch.setenv(mg.DECODE_ENV, "packed")
    assert mg.default_decode(BF16, "weights", "portable", "cuda", "sm90") == "packed"
    monkeypatch.delenv(mg.DECODE_ENV)
    _on_cuda(monkeypatch, "sm90")
    spec = SPEC.replace(quant=QuantScheme.mxfp4())
    row = _config(BF16, "weights", "packed", 128)
    row = {
        "BLOCK_M": 16,
        "gate_up": {**row["gate_up"], "BLOCK_N": 32},
        "down": {**row["down"], "BLOCK_N": 32},
    }
    monkeypatch.setattr(cfgmod, "choose", lambda **_: cfgmod.as_config(row))
    cfg = mg.choose_config(spec, BF16, 5, None)
    got = (cfg.decode, cfg.gate_up.BLOCK_N, cfg.down.BLOCK_N, cfg.gate_up.BLOCK_K)
    assert got == ("swapped", 32, 64, 128)
    assert mg.choose_config(spec, BF16, 5, row).decode == "swapped"  # the caller's tiles at the packing step
    k64 = {**row, **{g: {**row[g], "BLOCK_K": 64} for g in ("gate_up", "down")}}
    assert mg.choose_config(spec, BF16, 5, k64).decode == "swar"  # not the packing step: swar's K order
    wide = {**row, "BLOCK_M": 128}
    monkeypatch.setattr(cfgmod, "choose", lambda **_: cfgmod.as_config(wide))
    # its large rows too (no spill at 128 weight rows)
    assert mg.choose_config(spec, BF16, 5, None).decode == "swapped"
    monkeypatch.setattr(cfgmod, "current_target", lambda: "sm80")
    assert mg.choose_config(spec, BF16, 5, None).decode == "swar"  # packed's large rows elsewhere


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
def test_the_decode_env_replaces_packed_where_it_is_the_default_and_names_itself_when_wrong(monkeypatch):
    monkeypatch.setenv(mg.DECODE_ENV, "swapped")
    assert mg.default_decode(BF16, "weights", "portable", "cuda") == "swapped"
    assert mg.default_decode(F16, "accumulator", "portable", "cuda") == "native"  # not where packed is not
    assert mg.default_decode(BF16, "weights", "portable", "hip") == "fp32"
    inputs = _inputs(BF16, seed=2, scales=(124, 128), x_ints=True)
    outs, used = run_stages(inputs, None)
    assert used["decode"] == "swapped" and all(o.abs().max() > 1 for o in outs)
    monkeypatch.setenv(mg.DECODE_ENV, "native")  # not a bf16 decode of the scaled weights
    with pytest.raises(SpecError, match=mg.DECODE_ENV):
        mg.default_decode(BF16, "weights", "portable", "cuda")


def test_the_gpu_caps_block_k_by_decode(monkeypatch):
    _on_cuda(monkeypatch, "sm80")
    spec = SPEC.replace(quant=QuantScheme.mxfp4())
    wide = {
        k: v for k, v in _config(BF16, "weights", "swar", 256).items() if k in ("BLOCK_M", "gate_up", "down")
    }
    monkeypatch.setattr(cfgmod, "choose", lambda **_: cfgmod.as_config(wide))
    bf16 = mg.choose_config(spec, BF16, 5, None)
    assert (bf16.decode, bf16.gate_up.BLOCK_K, bf16.down.BLOCK_K) == ("packed", 128, 128)
    swar = mg.choose_config(spec, BF16, 5, {"decode": "swar"})
    assert (swar.decode, swar.gate_up.BLOCK_K, swar.down.BLOCK_K) == ("swar", 128, 128)
    f16 = mg.choose_config(spec, F16, 5, None)
    assert (f16.decode, f16.gate_up.BLOCK_K) == ("native", 64)
    forced = mg.choose_config(spec, BF16, 5, {**wide, "decode": "swar"})  # the caller's tiles stay
    assert forced.gate_up.BLOCK_K == 256
    # the caller's tiles without a decode: packed where BLOCK_K is its step, swar's K order otherwise
    assert mg.choose_config(spec, BF16, 5, wide).decode == "swar"
    step = {**wide, **{g: {**wide[g], "BLOCK_K": 128} for g in ("gate_up", "down")}}
    assert mg.choose_config(spec, BF16, 5, step).decode == "packed"


def test_the_packed_gate_up_of_block_m_32_gets_its_register_cap_where_the_table_sets_none(monkeypatch):
    _on_cuda(monkeypatch, "sm80")
    spec = SPEC.replace(quant=QuantScheme.mxfp4())
    row = _config(BF16, "weights", "packed", 128)
    row = {"BLOCK_M": 32, "gate_up": {**row["gate_up"], "BLOCK_N": 64, "num_warps": 4}, "down": row["down"]}
    monkeypatch.setattr(cfgmod, "choose", lambda **_: cfgmod.as_config(row))
    cfg = mg.choose_config(spec, BF16, 5, None)
    assert (cfg.decode, cfg.gate_up.maxnreg, cfg.down.maxnreg) == ("packed", 168, 0)
    assert mg.choose_config(spec, BF16, 5, row).gate_up.maxnreg == 0  # the caller's tiles as given
    capped = {**row, "gate_up": {**row["gate_up"], "maxnreg": 200}}
    monkeypatch.setattr(cfgmod, "choose", lambda **_: cfgmod.as_config(capped))
    assert mg.choose_config(spec, BF16, 5, None).gate_up.maxnreg == 200  # a table's own cap stays
    narrow = {**row, "BLOCK_M": 16}
    monkeypatch.setattr(cfgmod, "choose", lambda **_: cfgmod.as_config(narrow))
    assert mg.choose_config(spec, BF16, 5, None).gate_up.maxnreg == 0


@pytest.mark.parametrize(
    ("widths", "want"), [((32, 32), (32, 64)), ((128, 256), (64, 128)), ((64, 64), (64, 64))]
)
def test_the_swapped_decode_keeps_its_table_tiles_operands_between_64_and_128_rows(monkeypatch, widths, want):
    """gate_up's operand is 2 BLOCK_N weight rows, down's BLOCK_N (mxfp4_gemm.SWAPPED_ROWS); no cap (the packed
    decode's register cap is its own); the caller's tiles stay as given."""
    _on_cuda(monkeypatch, "sm80")
    spec = SPEC.replace(quant=QuantScheme.mxfp4())
    row = _config(BF16, "weights", "packed", 128)
    row = {"BLOCK_M": 32, **{g: {**row[g], "BLOCK_N": n} for g, n in zip(("gate_up", "down"), widths)}}
    monkeypatch.setattr(cfgmod, "choose", lambda **_: cfgmod.as_config(row))
    cfg = mg.choose_config(spec, BF16, 5, {"decode": "swapped"})
    assert (cfg.decode, cfg.gate_up.BLOCK_N, cfg.down.BLOCK_N) == ("swapped", *want)
    assert (cfg.gate_up.BLOCK_K, cfg.down.BLOCK_K, cfg.gate_up.maxnreg) == (128, 128, 0)
    given = mg.choose_config(spec, BF16, 5, {**row, "decode": "swapped"})
    assert widths == (given.gate_up.BLOCK_N, given.down.BLOCK_N)


def test_a_decode_that_does_not_apply_is_refused_naming_its_field():
    spec, qw, x, _, ids = _inputs(BF16, seed=0, scales=(124, 128), x_ints=True)
    x, ids = x.to(DEVICE), ids.to(DEVICE)  # a host x on a GPU is refused first (x.device)
    with pytest.raises(SpecError, match=r"config\.decode"):
        gate_up_mxfp4(spec, qw, x, ids, config={"decode": "fp8"})
    with pytest.raises(SpecError, match=r"config\.decode.*accumulator"):
        gate_up_mxfp4(spec, qw, x, ids, config=_config(BF16, "accumulator", "swar", 128))
    with pytest.raises(SpecError, match=r"config\.decode.*float16"):
        gate_up_mxfp4(spec, qw, x.to(F16), ids, config=_config(F16, "weights", "swar", 128))
    with pytest.raises(SpecError, match=r"config\.decode.*accumulator"):
        gate_up_mxfp4(spec, qw, x, ids, config=_config(BF16, "accumulator", "packed", 128))
    with pytest.raises(SpecError, match=r"config\.decode.*float16.*packed"):
        gate_up_mxfp4(spec, qw, x.to(F16), ids, config=_config(F16, "weights", "packed", 128))
    with pytest.raises(SpecError, match=r"config\.gate_up\.BLOCK_K.*128"):
        gate_up_mxfp4(spec, qw, x, ids, config=_config(BF16, "weights", "packed", 64))
    with pytest.raises(SpecError, match=r"config\.decode.*float16.*swapped"):
        gate_up_mxfp4(spec, qw, x.to(F16), ids, config=_config(F16, "weights", "swapped", 128))
    with pytest.raises(SpecError, match=r"config\.gate_up\.BLOCK_K.*128.*swapped"):
        gate_up_mxfp4(spec, qw, x, ids, config=_config(BF16, "weights", "swapped", 64))


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
def test_unaligned_codes_fall_back_to_the_native_decode():
    inputs = _inputs(BF16, seed=9, scales=(124, 128), x_ints=True)
    spec, qw, x, act, ids = inputs
    want = _run(inputs, BF16, "weights", "swar", 128)
    moved = unaligned_codes(qw.w13)
    qw2 = QuantizedMoEWeights.from_codes(spec, qw.base, w13=moved, w2=qw.w2)
    cfg = mg.choose_config(spec, BF16, 5, _config(BF16, "weights", "swar", 128))
    assert mg._operands(cfg, moved)[2] == mg.MK.DECODE["native"]
    assert mg._operands(cfg, qw.w13)[2] == mg.MK.DECODE["swar"]
    got = _run((spec, qw2, x, act, ids), BF16, "weights", "swar", 128)
    assert torch.equal(
        got[0], want[0]
    )  # exact sums: the fallback's other summation order gives the same bits


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # codes near 254 overflow: inf and NaN outputs
@pytest.mark.parametrize(
    ("decode", "codes"),
    [("packed", (mg.MK.DECODE_PACKED, mg.MK.DECODE_PACKED_PLAIN)),
     ("swapped", (mg.MK.DECODE_SWAPPED, mg.MK.DECODE_SWAPPED_PLAIN))],
)  # fmt: skip
def test_plain_scales_pick_the_select_free_kernel_with_the_same_bits(monkeypatch, decode, codes):
    """Codes in [1, 254] take DECODE_PACKED_PLAIN (2^(s - 127) as s << 7); the kernel with the selects gives
    the same bits on them, and is the one a code 0 or 255 gets. The swapped decode likewise."""
    inputs = _inputs(BF16, seed=11, scales=(1, 255), x_ints=False)
    spec, qw, *_ = inputs
    cfg = mg.choose_config(spec, BF16, 5, _config(BF16, "weights", decode, 128))
    assert mg._operands(cfg, qw.w13)[2] == codes[1].value
    plain = _run(inputs, BF16, "weights", decode, 128)
    real = mxfp4_pack.pack_scales
    monkeypatch.setattr(mxfp4_pack, "_cached", lambda t, kind, make: make(t))  # no cache: the patch applies
    monkeypatch.setattr(mg, "packed_scales", lambda s: dataclasses.replace(real(s), plain=False))
    assert mg._operands(cfg, qw.w13)[2] == codes[0].value
    general = _run(inputs, BF16, "weights", decode, 128)
    for a, b in zip(plain, general, strict=True):
        assert _same(a, b) and a.nan_to_num().abs().max() > 0
    zero = qw.w13.scales.clone()
    zero.view(-1)[::41] = 0
    assert not real(zero).plain and real(qw.w13.scales).plain
