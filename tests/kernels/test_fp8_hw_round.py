"""The fp8 rounding left to the store's cast (fp8_gemm.hw_round: CUDA sm89+, e4m3fn / e5m2 codes).

On those targets quantize_rows_kernel and GEMM1's epilogue quantization skip _round_fp8 and let the cast,
`cvt.rn.satfinite`, round: to nearest even, saturating at the largest finite value, NaN kept, which is what
_round_fp8 computes. CPU part: where the switch is on (each target's view, as the AOT compiler sets it). GPU
part: both ways give the same codes and scales, bitwise, on values across fp32's range (zeros, groups of
subnormal and of huge values, the fp8 grid's codes, midpoints and their neighbours, inf and NaN), and the same
outputs through the block fp8 forward whose GEMM1 quantizes its activation in the epilogue.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from triton.backends.compiler import GPUTarget

from moe_cts.conformance.engine.cases import Case
from moe_cts.kernels import config as cfgmod
from moe_cts.kernels import fp8_gemm
from moe_cts.kernels.fp8_moe import fused_moe_fp8
from moe_cts.kernels.registry import active_target
from moe_cts.reference import formats
from moe_cts.reference.quant import QuantScheme
from moe_cts.reference.spec import MoESpec

SM90, SM80, SM100 = GPUTarget("cuda", 90, 32), GPUTarget("cuda", 80, 32), GPUTarget("cuda", 100, 32)
GFX942, GFX950 = GPUTarget("hip", "gfx942", 64), GPUTarget("hip", "gfx950", 64)


@pytest.mark.parametrize(
    ("target", "fmt", "want"),
    [(SM90, "e4m3fn", True), (SM90, "e5m2", True), (SM100, "e4m3fn", True), (SM90, "e4m3fnuz", False),
     (SM80, "e5m2", False), (GFX942, "e4m3fnuz", False), (GFX950, "e4m3fn", False)],
    ids=["sm90-e4m3fn", "sm90-e5m2", "sm100-e4m3fn", "sm90-e4m3fnuz", "sm80-e5m2", "gfx942", "gfx950"],
)  # fmt: skip
def test_the_cast_rounds_on_cuda_sm89_plus_only_and_the_switch_turns_it_off(target, fmt, want, monkeypatch):
    monkeypatch.delenv(fp8_gemm.HW_ROUND_ENV, raising=False)
    with active_target(target):
        assert fp8_gemm.hw_round(fmt) is want
        monkeypatch.setenv(fp8_gemm.HW_ROUND_ENV, "0")
        assert fp8_gemm.hw_round(fmt) is False


def test_the_interpreter_keeps_the_arithmetic():
    if not fp8_gemm.interpreting():
        pytest.skip("the interpreter's view")
    assert cfgmod.backend() == "interpreter"
    assert not any(fp8_gemm.hw_round(f) for f in ("e4m3fn", "e4m3fnuz", "e5m2"))


@pytest.mark.parametrize("fmt", ["e4m3fn", "e4m3fnuz", "e5m2"])
def test_a_negative_value_rounding_to_zero_is_minus_zero_where_the_format_has_one(fmt):
    """The oracle's copysign (formats.round_to) and the CUDA cast give -0 (code 0x80); e4m3fnuz has no -0 (its
    0x80 is NaN), so there it is +0. The arithmetic once gave +0 everywhere (`-r` on r = +0)."""
    from moe_cts.kernels.target_info import device_target, fp8_rejection

    dev = "cpu" if fp8_gemm.interpreting() else "cuda"
    if not fp8_gemm.interpreting() and fp8_rejection(*device_target(dev), fmt) is not None:
        pytest.skip(f"{fmt} on this device: {fp8_rejection(*device_target(dev), fmt)}")
    spec = MoESpec(hidden_size=4, intermediate_size=128, num_experts=4, top_k=2,
                   quant=QuantScheme.fp8_per_tensor(fp8_format=fmt, activation_scale="static"))  # fmt: skip
    x = torch.tensor([[-1e-30, -0.0, 1e-30, -1.0]], device=dev)
    q, _ = fp8_gemm.quantize_rows(spec, x, 1.0)
    neg_zero = fmt != "e4m3fnuz"
    if fp8_gemm.interpreting():  # fp32 values
        assert torch.signbit(q[0, :2]).tolist() == [neg_zero, neg_zero] and not torch.signbit(q[0, 2])
    else:
        assert _codes(q)[0, :3].tolist() == [0x80 if neg_zero else 0, 0x80 if neg_zero else 0, 0]


def _needs_hw_round(fmt: str) -> None:
    if fp8_gemm.interpreting() or not torch.cuda.is_available() or not fp8_gemm.hw_round(fmt):
        pytest.skip(f"a CUDA device whose cast rounds {fmt} (sm89+)")


def _both(fn, monkeypatch):
    """fn() with the cast rounding, then with the arithmetic (MOE_CTS_FP8_HW_ROUND=0)."""
    monkeypatch.delenv(fp8_gemm.HW_ROUND_ENV, raising=False)
    hw = fn()
    monkeypatch.setenv(fp8_gemm.HW_ROUND_ENV, "0")
    arith = fn()
    monkeypatch.delenv(fp8_gemm.HW_ROUND_ENV)
    return hw, arith


def _codes(q: torch.Tensor) -> np.ndarray:
    return q.view(torch.uint8).cpu().numpy()


def _wide_rows(R: int, K: int, seed: int) -> torch.Tensor:
    """Rows of magnitudes 1e-44 .. 1e37 (groups of subnormals, of huge values, mixed), a zero row, a row with
    an inf and one with a NaN."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(R, K, generator=g) * torch.logspace(-44, 37, R).reshape(R, 1)
    x[:, ::7] *= 1e-30  # small values beside large ones in every group
    x[3] = 0.0
    x[5, 17] = float("inf")
    x[6, 40] = float("nan")
    return x


@pytest.mark.parametrize("fmt", ["e4m3fn", "e5m2"])
@pytest.mark.parametrize(
    "scheme",
    [QuantScheme.fp8_block, lambda **kw: QuantScheme.fp8_block(scale_format="ue8m0", **kw), QuantScheme.fp8_per_token],
    ids=["block-fp32", "block-ue8m0", "per-token"],
)  # fmt: skip
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_dynamic_scales_give_the_arithmetic_codes(fmt, scheme, monkeypatch):
    _needs_hw_round(fmt)
    R, K = 61, 520  # a ragged last 128-group
    spec = MoESpec(hidden_size=K, intermediate_size=128, num_experts=4, top_k=2, quant=scheme(fp8_format=fmt))
    x = _wide_rows(R, K, seed=3).cuda()
    (q1, s1), (q0, s0) = _both(lambda: fp8_gemm.quantize_rows(spec, x), monkeypatch)
    np.testing.assert_array_equal(_codes(q1), _codes(q0))
    assert torch.equal(s1.view(torch.int32), s0.view(torch.int32))


@pytest.mark.parametrize("fmt", ["e4m3fn", "e5m2"])
def test_a_static_scale_gives_the_arithmetic_codes_on_every_code_midpoint_and_overflow(fmt, monkeypatch):
    _needs_hw_round(fmt)
    f = formats.get(fmt)
    vals = np.unique(formats.decode(fmt, np.arange(256)))
    vals = vals[np.isfinite(vals)]
    mids = (vals[1:] + vals[:-1]) / 2
    probe = np.concatenate([
        vals, mids, np.nextafter(mids, np.inf, dtype=np.float32), np.nextafter(mids, -np.inf, dtype=np.float32),
        [f.max * 1.03, 1e30, -1e30, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 0.0, -0.0],
    ]).astype(np.float32)  # fmt: skip
    spec = MoESpec(hidden_size=probe.size, intermediate_size=128, num_experts=4, top_k=2,
                   quant=QuantScheme.fp8_per_tensor(fp8_format=fmt, activation_scale="static"))  # fmt: skip
    x = torch.from_numpy(probe).reshape(1, -1).cuda()
    for scale in (1.0, 0.75, 2.0**-20):
        (q1, _), (q0, _) = _both(lambda s=scale: fp8_gemm.quantize_rows(spec, x, s), monkeypatch)
        np.testing.assert_array_equal(_codes(q1), _codes(q0))


def test_the_block_fp8_forward_with_epilogue_quantization_gives_the_arithmetic_outputs(monkeypatch):
    """DeepSeek-V3's scheme at m > 32 tokens per expert (T = 96, k = 2, E = 4): the sm90 table's GEMM1 tile
    quantizes its activation in the epilogue (paired 64-column tiles) and GEMM2 reads those codes."""
    _needs_hw_round("e4m3fn")
    spec = MoESpec(
        hidden_size=256, intermediate_size=256, num_experts=4, top_k=2, quant=QuantScheme.fp8_block()
    )
    inp = Case(spec, 96, "bfloat16", seed=5).build_inputs()
    x = inp.x.cuda()
    y1, y0 = _both(lambda: fused_moe_fp8(spec, inp.qweights, x), monkeypatch)
    assert torch.equal(y1.view(torch.int16), y0.view(torch.int16))
    assert y1.float().abs().max() > 0.1
