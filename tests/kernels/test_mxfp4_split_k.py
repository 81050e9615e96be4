"""Split-K of the MXFP4 GEMMs (GemmTile.split_k, packed decode): each tile's K steps over split_k programs, the
fp32 partials summed in split order by the tile's last program (kernels/_mxfp4_gemm_kernels.py, _split_k_store).

    exact sums (small integer x, scale codes 124..127)  -> every split_k gives split_k 1's bits, both stages,
                                                           K tails and splits with no steps included
    two runs                                            -> the same bits (counters start at zero per call)
    split_k != 1 off the packed decode                  -> SpecError naming config.<gemm>.split_k
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _moe_testlib import DEVICE

import moe_cts.kernels.config as cfgmod
from moe_cts.kernels.mxfp4_moe import down_mxfp4, gate_up_mxfp4
from moe_cts.reference.quant import QuantScheme
from moe_cts.reference.qweights import QuantizedMoEWeights
from moe_cts.reference.spec import MoESpec, MoEWeights, SpecError

BF16 = torch.bfloat16
#: H = 416: 4 packed steps, the last one a 32-element tail; I = 288: 3 steps, a 32-element tail
SPEC = MoESpec(hidden_size=416, intermediate_size=288, num_experts=4, top_k=2, renormalize=True).replace(
    quant=QuantScheme.mxfp4(activation_dtype="bfloat16"), expert_bias=True
)
T = 5


def _inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    qw = QuantizedMoEWeights.quantize(SPEC, MoEWeights.random(SPEC, generator=g, dtype=torch.float64))

    def scramble(qt):  # every nibble; scale codes 124..127: every fp32 sum below is exact in any order
        codes = torch.randint(0, 256, qt.codes.shape, dtype=torch.uint8, generator=g)
        return dataclasses.replace(
            qt, codes=codes, scales=torch.randint(124, 128, qt.scales.shape, generator=g).to(torch.uint8)
        )

    qw = QuantizedMoEWeights.from_codes(SPEC, qw.base, w13=scramble(qw.w13), w2=scramble(qw.w2))
    x = torch.randint(-3, 4, (T, SPEC.hidden_size), generator=g).to(BF16)
    act = torch.randint(-3, 4, (T, SPEC.top_k, SPEC.intermediate_size), generator=g).to(BF16)
    ids = torch.stack([torch.randperm(SPEC.num_experts, generator=g)[: SPEC.top_k] for _ in range(T)])
    return qw, x, act, ids.to(torch.int32)


def _config(split_k: int, decode: str = "packed") -> dict:
    d = cfgmod.choose(
        dtype=BF16, num_tokens=T, top_k=2, num_experts=4, hidden_size=416, intermediate_size=288
    )
    d = d.to_dict()
    for g in ("gate_up", "down"):
        d[g] = {**d[g], "BLOCK_K": 128, "split_k": split_k}
    return {**d, "scale_at": "weights", "decode": decode}


def _stages(inputs, split_k: int):
    qw, x, act, ids = inputs
    cfg = _config(split_k)
    g = gate_up_mxfp4(SPEC, qw, x.to(DEVICE), ids.to(DEVICE), config=cfg)
    assert cfgmod.last_config().to_dict()["gate_up"]["split_k"] == split_k
    d = down_mxfp4(SPEC, qw, act.to(DEVICE), ids.to(DEVICE), config=cfg)
    assert cfgmod.last_config().to_dict()["down"]["split_k"] == split_k
    return g.cpu(), d.cpu()


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # SwiGLU of large gates
@pytest.mark.parametrize("split_k", [2, 3, 4, 5])  # 5: more splits than down's 3 steps (empty splits)
def test_every_split_gives_the_bits_of_one_program_per_tile_when_the_sums_are_exact(split_k):
    inputs = _inputs(seed=split_k)
    want = _stages(inputs, 1)
    got = _stages(inputs, split_k)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
        assert a.float().abs().max() > 1  # a sum that lost its partials would not pass


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
def test_two_runs_give_the_same_bits():
    inputs = _inputs(seed=9)
    first, second = _stages(inputs, 3), _stages(inputs, 3)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_split_k_off_the_packed_decode_is_refused_naming_its_field():
    qw, x, _, ids = _inputs(seed=0)
    with pytest.raises(SpecError, match=r"config\.gate_up\.split_k"):
        gate_up_mxfp4(SPEC, qw, x.to(DEVICE), ids.to(DEVICE), config=_config(2, decode="swar"))
    bad = _config(1)
    bad["down"]["split_k"] = 0
    with pytest.raises(SpecError, match=r"config\.down\.split_k"):
        gate_up_mxfp4(SPEC, qw, x.to(DEVICE), ids.to(DEVICE), config=bad)
