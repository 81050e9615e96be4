"""Weight tiles through tensor descriptors (GemmTile.tma: TMA on sm90+) against the pointer loads they replace.

The descriptor path must give the pointer path's bits wherever the weights' strides allow a descriptor
(grouped_gemm.weight_desc), fall back to pointers where they do not, and stay within the oracle's bound.
Runs on the interpreter (CI) and on a GPU (ci/gpu: there the boxes are real TMA copies).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _moe_testlib import DEVICE, assert_within, down_expected, gate_up_expected, shared_expected
from test_grouped_gemm import Case

import moe_cts.kernels
import moe_cts.reference.numpy_oracle as ref
from moe_cts.kernels import config as cfgmod
from moe_cts.kernels.config import GemmTile, TileConfig
from moe_cts.kernels.grouped_gemm import weight_desc
from moe_cts.reference.spec import SpecError

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


def _config(tma: bool, block_n: int = 32) -> TileConfig:
    tile = GemmTile(BLOCK_N=block_n, BLOCK_K=32, GROUP_M=1, num_warps=4, num_stages=2, tma=tma)
    return TileConfig(BLOCK_M=16, gate_up=tile, down=tile)


CASES = [
    Case("one token concat", T=1, dtype=BF16),
    Case("several M tiles per expert", spec=dict(num_experts=2, top_k=1), T=40, dtype=F16),
    # 50 * 2 bytes is no multiple of 16: no descriptor, the pointer loads run (same values)
    Case("H, I not multiples of 16", spec=dict(hidden_size=50, intermediate_size=20), dtype=BF16),
    Case(
        "interleaved swiglu_oai with biases, I tail",
        spec=dict(w13_layout="interleaved", activation="swiglu_oai", expert_bias=True, intermediate_size=48),
        dtype=BF16,
    ),
    Case("non-gated gelu with biases", spec=dict(gated=False, activation="gelu", expert_bias=True)),
    Case("strided weights (pointer fallback)", strided=True, dtype=F16),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_descriptor_weights_give_the_pointer_bits_within_the_bound(case: Case) -> None:
    spec, inp = case.build()
    acts, outs = [], []
    for tma in (False, True):
        act = moe_cts.kernels.gate_up(spec, inp.weights, inp.x, inp.topk_ids, config=_config(tma))
        acts.append(act)
        outs.append(moe_cts.kernels.down(spec, inp.weights, acts[0], inp.topk_ids, config=_config(tma)))
    assert torch.equal(acts[0], acts[1]), "gate_up: descriptor and pointer weights differ"
    assert torch.equal(outs[0], outs[1]), "down: descriptor and pointer weights differ"
    want, bound = gate_up_expected(inp)
    assert_within(acts[1], want, bound, f"gate_up[{case.id}] tma")
    act64 = ref.gate_up(spec, inp.weights64, inp.x64, inp.topk_ids.cpu().numpy()).act
    act = torch.from_numpy(act64).to(inp.dtype).to(inp.x.device)
    out = moe_cts.kernels.down(spec, inp.weights, act, inp.topk_ids, config=_config(True))
    want, bound = down_expected(inp, act.cpu().double().numpy())
    assert_within(out, want, bound, f"down[{case.id}] tma")


def test_the_shared_expert_through_descriptors() -> None:
    case = Case(
        "shared", spec=dict(n_shared_experts=1, shared_intermediate_size=48, shared_gate=True), dtype=BF16
    )
    spec, inp = case.build()
    got = [moe_cts.kernels.shared_expert(spec, inp.weights, inp.x, config=_config(t)) for t in (False, True)]
    assert torch.equal(got[0], got[1])
    want, bound = shared_expected(inp)
    assert_within(got[1], want, bound, "shared_expert tma")


def test_weight_desc_takes_aligned_weights_and_refuses_what_tma_cannot_address() -> None:
    w = torch.zeros((3, 40, 72), dtype=BF16, device=DEVICE)
    d = weight_desc(w, 64, 32)
    assert d is not None and list(d.block_shape) == [1, 64, 32] and list(d.shape) == [3, 40, 72]
    assert weight_desc(w.transpose(1, 2), 64, 32) is None  # K not contiguous
    assert weight_desc(torch.zeros((3, 40, 50), dtype=BF16, device=DEVICE), 64, 32) is None  # 100-byte rows
    assert weight_desc(w[:, :, 1:], 64, 32) is None  # misaligned base
    assert weight_desc(w, 512, 32) is None  # a box dimension over 256
    assert weight_desc(torch.zeros((3, 40, 64), dtype=torch.uint8, device=DEVICE), 32, 16) is not None


def test_a_non_bool_tma_key_is_refused_naming_the_field() -> None:
    bad = dataclasses.replace(_config(True).gate_up, tma=1)
    with pytest.raises(SpecError, match=r"config\.gate_up\.tma"):
        TileConfig(BLOCK_M=16, gate_up=bad, down=bad).validate()
    assert cfgmod.as_config(_config(True).to_dict()).gate_up.tma is True
