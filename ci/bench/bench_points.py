"""The benchmark's points as data, and what each point needs: its spec, weights, inputs, top-k ids and floor.

    point = (preset, T, routing)        35 on the GPU: 5 presets x T in TOKENS, plus Zipf(1.2) ids at T=512
    spec  = routed experts of the preset (shared experts off), at full size (or tiny under --cpu-smoke)
    floor = max(weight bytes of the experts that received tokens / copy BW, FLOPs / matmul rate)

The point list is the one of the vLLM peer's own bench (../shared/peer/bench.py), restated here as data.

    tensor          shape            dtype
    x               (T, H)           bf16 (fp32 under --cpu-smoke: the interpreter's bf16 arithmetic is wrong)
    topk_ids        (T, k)           int32
    topk_weights    (T, k)           float32
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import ModuleType

import torch


@dataclass(frozen=True)
class PresetChoice:
    key: str  # the name used on the command line and in the table
    label: str  # the model the shapes come from
    base: str  # preset in reference/presets.json whose routing semantics the point keeps
    # shape fields replaced on the base (models not in presets.json)
    overrides: tuple[tuple[str, int], ...] = ()


PRESETS = (
    PresetChoice("mixtral", "Mixtral-8x7B", "mixtral-8x7b"),
    PresetChoice("qwen2", "Qwen2-57B-A14B routed", "qwen2-57b-a14b"),
    PresetChoice("deepseek-v3", "DeepSeek-V3 routed", "deepseek-v3"),
    # Qwen3-235B-A22B's config.json: hidden 4096, moe_intermediate 1536, 128 experts, top-8; Qwen3-30B-A3B routing.
    PresetChoice(
        "qwen3-235b",
        "Qwen3-235B-A22B routed",
        "qwen3-30b-a3b",
        (("hidden_size", 4096), ("intermediate_size", 1536), ("num_experts", 128), ("top_k", 8)),
    ),
    PresetChoice("gpt-oss-120b", "gpt-oss-120b-like", "gpt-oss-120b"),
)
PRESET_BY_KEY = {p.key: p for p in PRESETS}
TOKENS = (1, 16, 128, 512, 2048, 4096)
ZIPF_T, ZIPF_S = 512, 1.2
# --cpu-smoke: one silu/softmax preset and the swiglu_oai/interleaved/bias one; tiny shapes on the interpreter.
SMOKE_PRESETS = ("mixtral", "gpt-oss-120b")
SMOKE_TOKENS = (1, 6)
SMOKE_ZIPF_T = 6
SMOKE_SHAPE = {"hidden_size": 64, "intermediate_size": 32}


@dataclass(frozen=True)
class Point:
    preset: str  # a PresetChoice.key
    T: int  # tokens
    routing: str  # "router": ids from our router on x; "zipf1.2": k distinct ids drawn with p ~ 1/rank^1.2

    @property
    def zipf(self) -> bool:
        return self.routing.startswith("zipf")


def point_list(presets: tuple[str, ...], tokens: tuple[int, ...], zipf_t: int | None) -> list[Point]:
    """Every (preset, T) with the router's ids, then Zipf ids at zipf_t (None: no Zipf point)."""
    pts = []
    for key in presets:
        pts += [Point(key, T, "router") for T in tokens]
        if zipf_t:
            pts.append(Point(key, zipf_t, f"zipf{ZIPF_S}"))
    return pts


def build_spec(presets_mod: ModuleType, key: str, smoke: bool):
    """The routed-only spec of `key`, built with the given side's presets module (new moe_cts or an old tree),
    so each side gets its own MoESpec class from the same data."""
    choice = PRESET_BY_KEY[key]
    spec = presets_mod.get(choice.base).replace(**dict(choice.overrides))
    spec = spec.replace(n_shared_experts=0, shared_intermediate_size=0, shared_gate=False)
    if smoke:
        spec = spec.replace(num_experts=min(spec.num_experts, 8), **SMOKE_SHAPE)
        # grouped routing needs E divisible by the groups and k experts in the kept ones: not scaled here
        if spec.n_group > 1:
            raise ValueError(f"--cpu-smoke preset {key}: grouped routing is not scaled here")
    return spec


@dataclass
class Tensors:
    """One preset's tensors, shared by every path (and by both sides of the baseline comparison)."""

    fields: dict[str, torch.Tensor]  # MoEWeights fields: router, w13, w2, and the biases the spec asks for
    x_full: torch.Tensor  # (max T, H): x of a point is its first T rows
    extra: dict = field(default_factory=dict)


def make_tensors(spec, dtype: torch.dtype, device: str, t_max: int, seed: int = 0) -> Tensors:
    """Random weights scaled by 1/sqrt(fan_in) (outputs O(1), so a zero output is far from the right one)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    E, H, I = spec.num_experts, spec.hidden_size, spec.intermediate_size

    def rnd(shape, fan_in, scale=1.0):
        t = torch.randn(shape, generator=gen, device=device, dtype=dtype)
        return (t * (scale / math.sqrt(fan_in))).to(dtype)

    f = {"router": rnd((E, H), H), "w13": rnd((E, spec.w13_rows, H), H), "w2": rnd((E, H, I), I)}
    if spec.correction_bias:
        f["correction_bias"] = rnd((E,), 1, 0.1).float()
    if spec.router_bias:
        f["router_bias"] = rnd((E,), 1, 0.5)
    if spec.expert_bias:
        f["b13"] = rnd((E, spec.w13_rows), 1, 0.5)
        f["b2"] = rnd((E, H), 1, 0.5)
    x = torch.randn((t_max, H), generator=gen, device=device, dtype=dtype)
    return Tensors(fields=f, x_full=x)


def zipf_routing(T: int, E: int, k: int, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """k distinct experts per token drawn with probability ~ 1 / rank^ZIPF_S; softmax of random weights."""
    gen = torch.Generator(device=device).manual_seed(seed)
    p = 1.0 / torch.arange(1, E + 1, device=device, dtype=torch.float64) ** ZIPF_S
    ids = torch.multinomial(p.expand(T, E), k, replacement=False, generator=gen).to(torch.int32)
    tw = torch.softmax(torch.randn(ids.shape, device=device, generator=gen), -1).float()
    return ids, tw


@dataclass(frozen=True)
class Floor:
    touched_experts: int  # experts that received at least one token
    weight_bytes: int  # touched * (w13 + w2 + biases) bytes; activations (x, y: 2*T*H elements) not counted
    flops: int  # 2 * T * k * (w13_rows + I) * H  (= 2*T*k*3*H*I gated)
    bytes_ms: float  # weight_bytes / measured copy bandwidth
    flops_ms: float  # flops / measured matmul rate
    ms: float  # max of the two: no forward can beat it on this device
    bound: str  # "bytes" or "flops"


def roofline_floor(spec, ids: torch.Tensor, elt: int, copy_bw_Bps: float, matmul_flops: float) -> Floor:
    """The point's floor from the ceilings measured in this run (module docstring)."""
    H, I, k, T = spec.hidden_size, spec.intermediate_size, spec.top_k, ids.shape[0]
    touched = int(torch.unique(ids).numel())
    per_expert = (spec.w13_rows * H + H * I) + ((spec.w13_rows + H) if spec.expert_bias else 0)
    nbytes = touched * per_expert * elt
    flops = 2 * T * k * (spec.w13_rows + I) * H
    b_ms, f_ms = 1e3 * nbytes / copy_bw_Bps, 1e3 * flops / matmul_flops
    return Floor(touched, nbytes, flops, b_ms, f_ms, max(b_ms, f_ms), "bytes" if b_ms >= f_ms else "flops")
