"""Read one quantized MoE layer from a safetensors checkpoint, by the real checkpoints' tensor names.

    DeepSeek-V3 block fp8 (quant_method fp8, weight_block_size [bn, bk]); P = model.layers.{L}.mlp.
    name                                              dtype / shape
    P gate.weight                                     (E, H) router
    P gate.e_score_correction_bias                    (E,) float32
    P experts.{e}.{gate,up}_proj.weight               float8_e4m3fn (I, H)
    P experts.{e}.{gate,up}_proj.weight_scale_inv     float32 (ceil(I/bn), ceil(H/bk))   W = q * scale_inv
    P experts.{e}.down_proj.weight / .weight_scale_inv  (H, I) / (ceil(H/bn), ceil(I/bk))
    P shared_experts.{gate,up,down}_proj.weight (+ _scale_inv)   the shared MLP, same layout

    gpt-oss MXFP4 (quant_method mxfp4)
    P router.weight, P router.bias                    (E, H), (E,)
    P experts.gate_up_proj_blocks                     uint8 (E, 2I, H/32, 16): 32 e2m1 codes per 16 bytes,
                                                      element 2i in the low nibble; rows gate/up interleaved
    P experts.gate_up_proj_scales                     uint8 (E, 2I, H/32) E8M0
    P experts.gate_up_proj_bias                       (E, 2I)
    P experts.down_proj_blocks / _scales / _bias      (E, H, I/32, 16) / (E, H, I/32) / (E, H)

gate and up of DeepSeek are fused as w13 = [gate; up]: their scale rows stack only when bn divides I
(DeepSeek-V3: I = 2048, bn = 128), so a checkpoint with I % bn != 0 is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from moe_cts.reference.errors import SpecError
from moe_cts.reference.qweights import QuantizedMoEWeights, QuantTensor
from moe_cts.reference.spec import MoESpec, MoEWeights, weight_shapes


def _get(tensors: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    if name not in tensors:
        raise SpecError(name, "a tensor in the checkpoint", None)
    return tensors[name]


def _codes(t: torch.Tensor) -> torch.Tensor:
    """fp8 tensors (or their uint8 bytes) as uint8 codes."""
    return t.contiguous().view(torch.uint8) if t.dtype != torch.uint8 else t


def _deepseek_mlp(tensors, prefix: str, spec: MoESpec) -> tuple[QuantTensor, QuantTensor]:
    """One gate/up/down MLP as (w13 = [gate; up], w2) QuantTensors."""
    q = spec.quant
    bn, bk = q.weight_block
    parts = {
        p: (
            _codes(_get(tensors, f"{prefix}{p}_proj.weight")),
            _get(tensors, f"{prefix}{p}_proj.weight_scale_inv"),
        )
        for p in ("gate", "up", "down")
    }
    rows = parts["gate"][0].shape[0]
    if rows % bn:
        raise SpecError(
            "quant.weight_block", f"bn dividing the gate/up rows ({rows}) to fuse them into w13", (bn, bk)
        )
    w13 = QuantTensor(
        torch.cat([parts["gate"][0], parts["up"][0]]),
        torch.cat([parts["gate"][1], parts["up"][1]]).float(),
        q.fp8_format,
        (bn, bk),
        "float32",
    )
    w2 = QuantTensor(parts["down"][0], parts["down"][1].float(), q.fp8_format, (bn, bk), "float32")
    return w13, w2


def _deepseek(tensors, spec: MoESpec, P: str) -> QuantizedMoEWeights:
    experts = [_deepseek_mlp(tensors, f"{P}experts.{e}.", spec) for e in range(spec.num_experts)]
    w13 = QuantTensor(
        torch.stack([a.codes for a, _ in experts]),
        torch.stack([a.scales for a, _ in experts]),
        experts[0][0].fmt,
        experts[0][0].block,
        "float32",
    )
    w2 = QuantTensor(
        torch.stack([b.codes for _, b in experts]),
        torch.stack([b.scales for _, b in experts]),
        experts[0][1].fmt,
        experts[0][1].block,
        "float32",
    )
    quantized = {"w13": w13, "w2": w2}
    floats = {"router": _get(tensors, f"{P}gate.weight").double()}
    if spec.correction_bias:
        floats["correction_bias"] = _get(tensors, f"{P}gate.e_score_correction_bias").double()
    if spec.shared_width:
        quantized["shared_w13"], quantized["shared_w2"] = _deepseek_mlp(tensors, f"{P}shared_experts.", spec)
    return _assemble(spec, floats, quantized)


def _gpt_oss(tensors, spec: MoESpec, P: str) -> QuantizedMoEWeights:
    quantized = {}
    for ours, theirs in (("w13", "gate_up_proj"), ("w2", "down_proj")):
        blocks = _get(tensors, f"{P}experts.{theirs}_blocks")
        E, N, nb, nbytes = blocks.shape
        if nbytes != 16:
            raise SpecError(f"{P}experts.{theirs}_blocks.shape", "(E, N, K/32, 16)", tuple(blocks.shape))
        codes = blocks.reshape(E, N, nb * 16)  # 16 bytes = 32 elements: the blocks are contiguous along K
        quantized[ours] = QuantTensor(
            codes, _get(tensors, f"{P}experts.{theirs}_scales"), "e2m1", (1, 32), "e8m0"
        )
    floats = {
        "router": _get(tensors, f"{P}router.weight").double(),
        "router_bias": _get(tensors, f"{P}router.bias").double(),
        "b13": _get(tensors, f"{P}experts.gate_up_proj_bias").double(),
        "b2": _get(tensors, f"{P}experts.down_proj_bias").double(),
    }
    return _assemble(spec, floats, quantized)


def _assemble(spec: MoESpec, floats: dict, quantized: dict) -> QuantizedMoEWeights:
    shapes = weight_shapes(spec)
    placeholders = {n: torch.zeros(shapes[n], dtype=torch.float64) for n in quantized}
    base = MoEWeights(**floats, **placeholders)
    return QuantizedMoEWeights.from_codes(spec, base, **quantized)


def load_layer(
    source: str | Path | Mapping[str, torch.Tensor], spec: MoESpec, layer: int
) -> QuantizedMoEWeights:
    """The quantized weights of MoE layer `layer` from a safetensors file (or a name -> tensor mapping),
    read by spec.quant.method: fp8_block -> DeepSeek names, mxfp4 -> gpt-oss names (module docstring)."""
    if spec.quant is None or spec.quant.method not in ("fp8_block", "mxfp4"):
        raise SpecError(
            "spec.quant.method",
            "'fp8_block' (DeepSeek) or 'mxfp4' (gpt-oss)",
            getattr(spec.quant, "method", None),
        )
    if not isinstance(source, Mapping):
        from safetensors.torch import load_file

        source = load_file(str(source))
    P = f"model.layers.{layer}.mlp."
    return _deepseek(source, spec, P) if spec.quant.method == "fp8_block" else _gpt_oss(source, spec, P)
