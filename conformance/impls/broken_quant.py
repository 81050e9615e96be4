"""Deliberately broken quantized implementations: each overrides one step of torch-eager's quantized path
(eager_quant.py) the way a shipped fp8 / MXFP4 kernel got it wrong, with the case that exposes it.

    name                      caught at  as    what it does                                    exposed by
    scale-layout-transposed   gemm1      fail  reads the (Nb, Kb) weight scales column-major     fp8_block, 3 x 3 blocks
    scale-neighbour-block     gemm1      fail  scale of block kb + 1 (wrapping) for block kb     fp8_block, 3 K blocks
    bias-before-dequant       gemm1      fail  bias added to the raw accumulator, so it is        per-token fp8 with
                                               scaled by s_x s_w                                 expert biases
    fnuz-max-224              gemm1      fail  e4m3fnuz saturates / scales at 224, not 240        per-tensor e4m3fnuz
    e8m0-rounded-down         gemm1      fail  ue8m0 activation scales rounded down (floor)       fp8_block ue8m0 ceil
                                               where the scheme says up: the top values clip
    no-amax-epsilon           gemm1      fail  no amax floor: a zero group gives 0 / 0 = NaN      fp8_block, zero group
    no-saturation             gemm1      fail  fp8 encode without saturation: NaN past max        static per-tensor
                                                                                                 (half the amax)

Every case also passes on the honest torch-eager (tests/conformance/test_broken_implementations.py).
"""

from __future__ import annotations

import torch

from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.results import Outcome
from moe_cts.conformance.impls.eager_quant import F32, FP8_DTYPES
from moe_cts.conformance.impls.torch_eager import TorchEagerImplementation
from moe_cts.reference.quant import QuantScheme
from moe_cts.reference.spec import MoESpec


class ScaleLayoutTransposed(TorchEagerImplementation):
    def weight_scales(self, qt, e):
        s = super().weight_scales(qt, e)
        nb, kb = s.shape
        return s.reshape(-1).reshape(kb, nb).T.contiguous()  # row-major memory read as column-major


class ScaleNeighbourBlock(TorchEagerImplementation):
    def weight_scales(self, qt, e):
        return torch.roll(super().weight_scales(qt, e), shifts=-1, dims=1)


class BiasBeforeDequant(TorchEagerImplementation):
    def add_bias(self, spec, y, bias, xq, qt, e):
        if bias is None:
            return y
        # per row: the amax element of a row encodes to fmt.max, so s_x = amax(x') / max
        sx = xq.abs().amax(dim=1, keepdim=True) / self.fp8_max(spec.quant.fp8_format)
        sw = self.weight_scales(qt, e).to(y.device)[:, 0].repeat_interleave(qt.block[0])[: y.shape[1]]
        return y + bias.to(F32) * sx * sw[None, :]


class FnuzMax224(TorchEagerImplementation):
    def fp8_max(self, fmt):
        return 224.0 if fmt == "e4m3fnuz" else super().fp8_max(fmt)


class E8m0RoundedDown(TorchEagerImplementation):
    def pow2_scale(self, spec, amax):
        a = torch.where(torch.isfinite(amax) & (amax > 0), amax, torch.ones_like(amax))
        _m, e = torch.frexp(a / self.fp8_max(spec.quant.fp8_format))  # floor(log2 ratio) = e - 1
        s = torch.ldexp(torch.ones_like(a), (e - 1).clamp(-127, 127).to(F32))
        return torch.where(amax == 0, torch.zeros_like(s), s)


class NoAmaxEpsilon(TorchEagerImplementation):
    def amax_floor(self, spec, amax):
        return amax


class NoSaturation(TorchEagerImplementation):
    def cast_fp8(self, fmt, v):
        m = self.fp8_max(fmt)
        over = torch.where(v.abs() > m, torch.full_like(v, float("nan")), v)  # cvt without .satfinite
        return over.to(FP8_DTYPES[fmt]).to(F32)


_B = MoESpec(hidden_size=320, intermediate_size=192, num_experts=4, top_k=2, renormalize=True)
_BLOCK = _B.replace(quant=QuantScheme.fp8_block())
_UE8M0 = _B.replace(quant=QuantScheme.fp8_block(scale_format="ue8m0"))
_TOKEN_BIAS = _B.replace(expert_bias=True, quant=QuantScheme.fp8_per_token())
_FNUZ = _B.replace(quant=QuantScheme.fp8_per_tensor(fp8_format="e4m3fnuz"))
_STATIC = _B.replace(quant=QuantScheme.fp8_per_tensor(activation_scale="static"))

_TABLE = [
    ("scale-layout-transposed", ScaleLayoutTransposed, _BLOCK, "bfloat16", 101),
    ("scale-neighbour-block", ScaleNeighbourBlock, _BLOCK, "bfloat16", 102),
    ("bias-before-dequant", BiasBeforeDequant, _TOKEN_BIAS, "bfloat16", 103),
    ("fnuz-max-224", FnuzMax224, _FNUZ, "float16", 104),
    ("e8m0-rounded-down", E8m0RoundedDown, _UE8M0, "bfloat16", 105),
    ("no-amax-epsilon", NoAmaxEpsilon, _BLOCK, "float32", 106),
    ("no-saturation", NoSaturation, _STATIC, "bfloat16", 107),
]

#: (name, class, stage, outcome, case) rows; broken.py registers them in BROKEN
QUANT_TABLE = [
    (n, cls, "gemm1", Outcome.FAIL, Case(spec, 9, dtype, seed=seed)) for n, cls, spec, dtype, seed in _TABLE
]
