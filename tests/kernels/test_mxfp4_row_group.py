"""The packed decodes' tile-major codes (Mxfp4Config.row_group, mxfp4_pack.pack_codes(group=...)).

    pack_codes(group=G) -> unpack_codes(group=G) == the reference codes (padding rows dropped)
    row_group G          -> the same bits as row_group 1, in every stage and the layer (same arithmetic, same
                            order: only the addresses of the codes change), interleaved and concatenated rows,
                            widths that leave the last group part padding
    a wrong group stride -> other outputs (the equality above can fail)
    bad row_group        -> SpecError naming config.row_group or MOE_CTS_MXFP4_ROW_GROUP, before any launch

Runs on the device the tests run on (the interpreter on CPU).
"""

from __future__ import annotations

import pytest
import torch
from _moe_testlib import DEVICE

import moe_cts.kernels.config as cfgmod
from moe_cts.kernels import mxfp4_gemm as mg
from moe_cts.kernels import mxfp4_pack
from moe_cts.kernels.mxfp4_moe import down_mxfp4, fused_moe_mxfp4, gate_up_mxfp4
from moe_cts.reference.quant import QuantScheme
from moe_cts.reference.qweights import QuantizedMoEWeights
from moe_cts.reference.spec import MoESpec, MoEWeights, SpecError

BF16 = torch.bfloat16
#: H and I not multiples of 64: the last group of a 64-row copy is part padding
SPEC = MoESpec(hidden_size=96, intermediate_size=160, num_experts=4, top_k=2, renormalize=True,
               quant=QuantScheme.mxfp4(activation_dtype="bfloat16"))  # fmt: skip


@pytest.mark.parametrize("group", [1, 2, 32, 64])
@pytest.mark.parametrize("order", mxfp4_pack.PACK_ORDERS)
def test_tile_major_codes_unpack_to_the_reference_codes(order, group):
    g = torch.Generator().manual_seed(group)
    codes = torch.randint(0, 256, (3, 150, 144), dtype=torch.uint8, generator=g)  # K 288: a step's tail
    packed = mxfp4_pack.pack_codes(codes, order, group)
    ng = -(-150 // group)
    assert packed.shape == (3, ng, mxfp4_pack.packed_k(288) // 2 * group) and packed.is_contiguous()
    assert torch.equal(mxfp4_pack.unpack_codes(packed, 288, order, group, rows=150), codes)
    if group > 1:  # row r's step s is the (s * group + r % group)-th 64-byte run of its group
        flat = mxfp4_pack.pack_codes(codes, order).reshape(3, 150, -1, 64)
        runs = packed.reshape(3, ng, -1, group, 64)
        r = group - 1  # the group's last row
        assert torch.equal(runs[:, 1, 2, r], flat[:, group + r, 2])


def _model(layout: str, seed: int):
    spec = SPEC.replace(w13_layout=layout, expert_bias=True)
    g = torch.Generator().manual_seed(seed)
    qw = QuantizedMoEWeights.quantize(spec, MoEWeights.random(spec, generator=g, dtype=torch.float64))
    x = torch.randn((5, spec.hidden_size), generator=g).to(BF16)
    act = torch.randn((5, spec.top_k, spec.intermediate_size), generator=g).to(BF16)
    ids = torch.stack([torch.randperm(spec.num_experts, generator=g)[: spec.top_k] for _ in range(5)])
    return spec, qw, x.to(DEVICE), act.to(DEVICE), ids.to(torch.int32).to(DEVICE)


def _stages(model, decode="swapped", **cfg):
    spec, qw, x, act, ids = model
    config = {"decode": decode, **cfg}
    g = gate_up_mxfp4(spec, qw, x, ids, config=config)
    used = cfgmod.last_config().to_dict()
    return (g.cpu(), down_mxfp4(spec, qw, act, ids, config=config).cpu()), used


@pytest.mark.parametrize("decode", list(mg.PACKED_DECODES))
@pytest.mark.parametrize(("layout", "groups"), [("interleaved", (2, 32, 64, 128)), ("concat", (2, 32))])
def test_every_row_group_gives_the_row_major_bits(layout, groups, decode):
    model = _model(layout, seed=len(groups))
    want, used = _stages(model, decode)
    assert "row_group" not in used  # a row-major config records as before
    assert all(o.abs().max() > 0.1 for o in want)
    for group in groups:
        got, used = _stages(model, decode, row_group=group)
        assert (used["decode"], used["row_group"]) == (decode, group)
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a, b), (layout, group)


@pytest.mark.parametrize("decode", list(mg.PACKED_DECODES))
def test_a_wrong_group_stride_gives_other_outputs(monkeypatch, decode):
    """The kernel told row_group 64 but handed the row-major copy: the equality above can fail."""
    model = _model("interleaved", seed=7)
    want, _ = _stages(model, decode)
    monkeypatch.setattr(mg, "packed_codes", lambda codes, order, group: mxfp4_pack.packed_codes(codes, order))
    got, _ = _stages(model, decode, row_group=64)
    assert not torch.equal(got[0], want[0]) and not torch.equal(got[1], want[1])


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
def test_the_layer_with_a_shared_expert_keeps_its_bits_under_the_env_row_group(monkeypatch):
    """gpt-oss's interleaved rows with a concatenated shared expert (S 64), the group from the environment."""
    spec, qw, x, _, _ = _model("interleaved", seed=3)
    spec = spec.replace(n_shared_experts=1, shared_intermediate_size=64)
    g = torch.Generator().manual_seed(5)
    qw = QuantizedMoEWeights.quantize(spec, MoEWeights.random(spec, generator=g, dtype=torch.float64))
    want = fused_moe_mxfp4(spec, qw, x, config={"decode": "swapped"})
    monkeypatch.setenv(mg.DECODE_ENV, "swapped")
    monkeypatch.setenv(mg.ROW_GROUP_ENV, "64")
    got = fused_moe_mxfp4(spec, qw, x)
    assert cfgmod.last_config().to_dict()["row_group"] == 64
    assert torch.equal(got, want) and want.abs().max() > 0.1


def test_a_row_group_that_does_not_apply_is_refused_naming_its_field(monkeypatch):
    spec, qw, x, _, ids = _model("concat", seed=1)
    with pytest.raises(SpecError, match=r"config\.row_group.*one of"):
        mg.choose_config(spec, BF16, 5, {"decode": "swapped", "row_group": 3})
    with pytest.raises(SpecError, match=r"config\.row_group.*'packed' or 'swapped'"):
        mg.choose_config(spec, BF16, 5, {"decode": "swar", "row_group": 64})
    # concatenated gate / up rows: the up rows' offset I = 160 is no multiple of 64
    with pytest.raises(SpecError, match=r"config\.row_group.*divisor of 160"):
        gate_up_mxfp4(spec, qw, x, ids, config={"decode": "swapped", "row_group": 64})
    monkeypatch.setenv(mg.ROW_GROUP_ENV, "sixty-four")
    with pytest.raises(SpecError, match=mg.ROW_GROUP_ENV):
        mg.choose_config(spec, BF16, 5, {"decode": "swapped"})
    assert (
        mg.choose_config(spec, BF16, 5, {"decode": "swar"}).row_group == 1
    )  # read for the packed copies only
