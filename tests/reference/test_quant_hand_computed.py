"""Two tiny quantized layers built the way real ones are (a config dict with quantization_config, a
safetensors file with the real tensor names and layouts), against results worked out by hand in this file.

DeepSeek-V3 style block fp8 (blocks 2 x 2 so that H = 3 has a partial block): codes and scales are written
as bytes; the expected values follow from the formulas by hand, including one rounding (1.1 * 64 = 70.4
-> 72), one tie (1.0625 * 64 = 68, between 64 and 72 -> 64, the even code) and the 1 x 2 requantization
of the SwiGLU output. gpt-oss MXFP4: nibble order, E8M0 scales, interleaved gate/up rows, biases and the
clamped SwiGLU. Both oracles must give the hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from refcheck import assert_close
from safetensors.torch import save_file

from moe_cts.reference import MoESpec, SpecError, layer, moe_forward
from moe_cts.reference.checkpoint import load_layer

ORACLES = {"numpy": moe_forward, "torch": layer.torch_moe_forward}

# e4m3fn codes used below (sign | 4-bit exponent, bias 7 | 3-bit mantissa)
ONE, TWO, MINUS_ONE = 0x38, 0x40, 0xB8


def silu(v: float) -> float:
    return v / (1.0 + math.exp(-v))


def requant_single(a: float) -> float:
    """The 1 x 2 group [a, 0] requantized: s = fp32(a / 448) and a / s rounds to 448, so a' = 448 * s."""
    return 448.0 * float(np.float32(a / 448.0))


# ----------------------------------------------------------------------------------------------- DeepSeek
DEEPSEEK_TINY = {
    "model_type": "deepseek_v3",
    "hidden_size": 3,
    "moe_intermediate_size": 2,
    "n_routed_experts": 2,
    "num_experts_per_tok": 1,
    "n_group": 1,
    "topk_group": 1,
    "n_shared_experts": 0,
    "norm_topk_prob": True,
    "routed_scaling_factor": 2.5,
    "hidden_act": "silu",
    "quantization_config": {
        "quant_method": "fp8",
        "fmt": "e4m3",
        "activation_scheme": "dynamic",
        "weight_block_size": [2, 2],
    },
}


def fp8(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.uint8).view(torch.float8_e4m3fn)


def deepseek_tensors() -> dict[str, torch.Tensor]:
    P = "model.layers.0.mlp."
    f32 = lambda rows: torch.tensor(rows, dtype=torch.float32)
    return {
        f"{P}gate.weight": torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.bfloat16),
        f"{P}gate.e_score_correction_bias": torch.zeros(2, dtype=torch.float32),
        # expert 0: W_gate = [[0.5, 0, 2], [1, 0, -2]], W_up = [[1, 1, 0], [2, 0, 0.25]],
        #           W_down = [[2, 0], [0, 2], [0.5, 0.5]]  (scale blocks: columns {0, 1} | {2}; rows {0, 1} | {2})
        f"{P}experts.0.gate_proj.weight": fp8([[ONE, 0, ONE], [TWO, 0, MINUS_ONE]]),
        f"{P}experts.0.gate_proj.weight_scale_inv": f32([[0.5, 2.0]]),
        f"{P}experts.0.up_proj.weight": fp8([[ONE, ONE, 0], [TWO, 0, ONE]]),
        f"{P}experts.0.up_proj.weight_scale_inv": f32([[1.0, 0.25]]),
        f"{P}experts.0.down_proj.weight": fp8([[ONE, 0], [0, ONE], [ONE, ONE]]),
        f"{P}experts.0.down_proj.weight_scale_inv": f32([[2.0], [0.5]]),
        # expert 1: W_gate = [[0, 1, 0], [0, 1, 8]], W_up = [[1, 0, -1], [0, 0, 0]], W_down = [[0, 1], [1, 0], [-4, 0]]
        f"{P}experts.1.gate_proj.weight": fp8([[0, ONE, 0], [0, ONE, ONE]]),
        f"{P}experts.1.gate_proj.weight_scale_inv": f32([[1.0, 8.0]]),
        f"{P}experts.1.up_proj.weight": fp8([[ONE, 0, MINUS_ONE], [0, 0, 0]]),
        f"{P}experts.1.up_proj.weight_scale_inv": f32([[1.0, 1.0]]),
        f"{P}experts.1.down_proj.weight": fp8([[0, ONE], [ONE, 0], [MINUS_ONE, 0]]),
        f"{P}experts.1.down_proj.weight_scale_inv": f32([[1.0], [4.0]]),
    }


def deepseek_expected() -> dict[str, np.ndarray]:
    # token 0 -> expert 0. x' = [7, 1.125, 3.5]: group {7, 1.1} has s = 7/448 = 1/64, 1.1*64 = 70.4 -> 72;
    # group {3.5} has s = 1/128, 3.5*128 = 448.
    gate0, up0 = (
        [0.5 * 7 + 2 * 3.5, 1 * 7 - 2 * 3.5],
        [7 + 1.125, 2 * 7 + 0.25 * 3.5],
    )  # [10.5, 0], [8.125, 14.875]
    a0 = requant_single(silu(10.5) * 8.125)  # silu(0) * 14.875 = 0 is the group's other element
    # token 1 -> expert 1. x' = [1.0, 7, -0.875]: 1.0625*64 = 68 ties between 64 and 72 -> 64 (even code);
    # group {-0.875} has s = 1/512, -0.875*512 = -448.
    gate1, up1 = [7.0, 7 + 8 * -0.875], [1.0 + 0.875, 0.0]  # [7, 0], [1.875, 0]
    a1 = requant_single(silu(7.0) * 1.875)
    return {
        "topk_ids": np.array([[0], [1]]),
        "gate_pre": np.array([[gate0], [gate1]]),
        "up_pre": np.array([[up0], [up1]]),
        "y": 2.5 * np.array([[2 * a0, 0.0, 0.5 * a0], [0.0, a1, -4 * a1]]),
    }


@pytest.mark.parametrize("oracle", list(ORACLES))
def test_deepseek_block_fp8_layer_matches_the_hand_computation(oracle, tmp_path):
    spec = MoESpec.from_hf_config(DEEPSEEK_TINY)
    save_file(deepseek_tensors(), str(tmp_path / "model.safetensors"))
    qw = load_layer(tmp_path / "model.safetensors", spec, layer=0)
    x = torch.tensor([[7.0, 1.1, 3.5], [1.0625, 7.0, -0.875]], dtype=torch.float64)
    r = ORACLES[oracle](spec, qw, x)
    want = deepseek_expected()
    np.testing.assert_array_equal(np.asarray(r.topk_ids), want["topk_ids"])
    assert_close(r.gate_up.gate_pre, want["gate_pre"], "gate_pre", rtol=1e-15)
    assert_close(r.gate_up.up_pre, want["up_pre"], "up_pre", rtol=1e-15)
    assert_close(r.y, want["y"], "y", rtol=1e-14)


def test_the_loader_reads_weight_scale_inv_as_block_scales(tmp_path):
    spec = MoESpec.from_hf_config(DEEPSEEK_TINY)
    qw = load_layer(deepseek_tensors(), spec, layer=0)
    w13_e0 = np.array([[0.5, 0, 2], [1, 0, -2], [1, 1, 0], [2, 0, 0.25]])
    np.testing.assert_array_equal(qw.w13.dequantize()[0], w13_e0)
    np.testing.assert_array_equal(qw.w2.dequantize()[1], [[0, 1], [1, 0], [-4, 0]])


def test_gate_up_blocks_that_straddle_gate_and_up_are_refused():
    cfg = {
        **DEEPSEEK_TINY,
        "quantization_config": {**DEEPSEEK_TINY["quantization_config"], "weight_block_size": [3, 2]},
    }
    with pytest.raises(SpecError, match=r"quant\.weight_block"):
        load_layer(deepseek_tensors(), MoESpec.from_hf_config(cfg), layer=0)


# ----------------------------------------------------------------------------------------------- gpt-oss
GPT_OSS_TINY = {
    "model_type": "gpt_oss",
    "hidden_size": 32,
    "intermediate_size": 32,
    "num_local_experts": 2,
    "num_experts_per_tok": 1,
    "swiglu_limit": 7.0,
    "quantization_config": {"quant_method": "mxfp4"},
}


def gpt_oss_tensors() -> dict[str, torch.Tensor]:
    """Every code 0 except the bytes set below; every E8M0 scale 127 (= 1) except those set below.
    e2m1 codes: 1 = 0.5, 2 = 1.0, 4 = 2.0, 5 = 3.0, 7 = 6.0, 9 = -0.5, 0xC = -2.0."""
    P = "model.layers.0.mlp."
    gu_blocks = torch.zeros(
        2, 64, 1, 16, dtype=torch.uint8
    )  # (E, 2I, H/32, 16); row 2i = gate_i, 2i+1 = up_i
    gu_scales = torch.full((2, 64, 1), 127, dtype=torch.uint8)
    gu_bias = torch.zeros(2, 64, dtype=torch.bfloat16)
    gu_blocks[0, 0, 0, 0], gu_scales[0, 0, 0] = 0x05, 126  # gate_0 of expert 0: element 0 = 3.0 * 2^-1 = 1.5
    gu_blocks[0, 1, 0, 0], gu_scales[0, 1, 0] = 0xC0, 128  # up_0: element 1 (high nibble) = -2.0 * 2 = -4
    gu_bias[0, 0], gu_bias[0, 1] = 0.25, 0.5
    gu_blocks[1, 0, 0, 1], gu_scales[1, 0, 0] = 0x07, 128  # expert 1 gate_0: element 2 = 6.0 * 2 = 12
    gu_blocks[1, 1, 0, 1] = 0x20  # up_0: element 3 (high nibble of byte 1) = 1.0
    gu_bias[1, 0] = -0.5
    dn_blocks = torch.zeros(2, 32, 1, 16, dtype=torch.uint8)  # (E, H, I/32, 16)
    dn_scales = torch.full((2, 32, 1), 127, dtype=torch.uint8)
    dn_bias = torch.zeros(2, 32, dtype=torch.bfloat16)
    dn_blocks[0, 0, 0, 0] = 0x04  # W2[0][0, 0] = 2.0
    dn_blocks[0, 5, 0, 0], dn_scales[0, 5, 0] = 0x09, 129  # W2[0][5, 0] = -0.5 * 4 = -2
    dn_bias[0, 0] = 0.125
    dn_blocks[1, 1, 0, 0], dn_scales[1, 1, 0] = 0x01, 130  # W2[1][1, 0] = 0.5 * 8 = 4
    router = torch.zeros(2, 32, dtype=torch.bfloat16)
    router[0, 0], router[1, 2] = 1.0, 1.0
    return {
        f"{P}router.weight": router,
        f"{P}router.bias": torch.zeros(2, dtype=torch.bfloat16),
        f"{P}experts.gate_up_proj_blocks": gu_blocks,
        f"{P}experts.gate_up_proj_scales": gu_scales,
        f"{P}experts.gate_up_proj_bias": gu_bias,
        f"{P}experts.down_proj_blocks": dn_blocks,
        f"{P}experts.down_proj_scales": dn_scales,
        f"{P}experts.down_proj_bias": dn_bias,
    }


def swiglu_oai(gate: float, up: float) -> float:
    g, u = min(gate, 7.0), max(-7.0, min(up, 7.0))
    return (u + 1.0) * g / (1.0 + math.exp(-1.702 * g))


@pytest.mark.parametrize("oracle", list(ORACLES))
def test_gpt_oss_mxfp4_layer_matches_the_hand_computation(oracle, tmp_path):
    spec = MoESpec.from_hf_config(GPT_OSS_TINY)
    save_file(gpt_oss_tensors(), str(tmp_path / "model.safetensors"))
    qw = load_layer(tmp_path / "model.safetensors", spec, layer=0)
    x = torch.zeros(2, 32, dtype=torch.float64)
    x[0, 0], x[0, 1] = 2.0, 0.5  # router logits [2, 0] -> expert 0
    x[1, 2], x[1, 3] = 1.0, 9.0  # router logits [0, 1] -> expert 1
    r = ORACLES[oracle](spec, qw, x)
    # token 0: gate_0 = 1.5 * 2 + 0.25 = 3.25, up_0 = -4 * 0.5 + 0.5 = -1.5; every other unit is 0
    a0 = swiglu_oai(3.25, -1.5)
    # token 1: gate_0 = 12 * 1 - 0.5 = 11.5 (clamped to 7), up_0 = 1 * 9 = 9 (clamped to 7)
    a1 = swiglu_oai(11.5, 9.0)
    want = np.zeros((2, 32))
    want[0, 0], want[0, 5] = 2 * a0 + 0.125, -2 * a0
    want[1, 1] = 4 * a1
    np.testing.assert_array_equal(np.asarray(r.topk_ids), [[0], [1]])
    assert_close(r.gate_up.gate_pre[:, 0, 0], [3.25, 11.5], "gate_pre", rtol=0)
    assert_close(r.gate_up.up_pre[:, 0, 0], [-1.5, 9.0], "up_pre", rtol=0)
    assert_close(r.y, want, "y", rtol=1e-15)
