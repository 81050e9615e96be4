"""Test helpers of the grouped-GEMM / combine / fused_moe tests: inputs, the error-bound model, one
comparison helper. Private to those tests (the conformance engine has the full model).

Error model (docs/bugs.md#facts-tolerance-model): inputs are rounded to the kernel dtype first and the
float64 oracle runs on those rounded values, so the only errors left are fp32 accumulation
(~ c * sqrt(K) * u_acc * sum|a||b|) and the final rounding to the output dtype (u_out * |y|; 2 u_out for the
interpreter's truncating bf16 cast, docs/bugs.md#facts-triton-interpreter: allowed there only). Magnitude
tensors come from the oracle run on |inputs|.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

import moe_cts.reference.numpy_oracle as ref
from moe_cts.conformance.engine.compare import compare
from moe_cts.kernels.metadata import AlignMeta, padded_capacity
from moe_cts.reference.spec import MoESpec, MoEWeights

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRET else "cuda"
U = {torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
U_FP32 = 2.0**-24
#: lambda of the probabilistic bound (Higham & Mary 2019); 3 keeps the false-failure rate negligible.
LAMBDA = 3.0
#: Lipschitz constant of every activation on its gate input (silu' <= 1.1, gelu' <= 1.13, relu' <= 1).
ACT_LIPSCHITZ = 1.2


def u_out(dtype: torch.dtype) -> float:
    """Rounding error of the final cast; the interpreter truncates fp32 -> bf16 (twice the error)."""
    return U[dtype] * (2.0 if INTERPRET and dtype == torch.bfloat16 else 1.0)


# ----------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Inputs:
    spec: MoESpec
    dtype: torch.dtype
    weights: MoEWeights  # kernel dtype, on DEVICE (maybe strided views)
    weights64: MoEWeights  # the same rounded values in float64 on the CPU
    x: torch.Tensor  # (T, H) kernel dtype
    x64: torch.Tensor  # float64 copy of the rounded x
    topk_ids: torch.Tensor  # (T, k) int32 on DEVICE
    topk_weights: torch.Tensor  # (T, k) float32 on DEVICE


def strided_copy(t: torch.Tensor) -> torch.Tensor:
    """A non-contiguous view with the same values: the last axis is stored first."""
    if t.dim() < 2:
        return t
    store = t.transpose(-1, -2).contiguous()
    return store.transpose(-1, -2)


def random_ids(T: int, E: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """(T, k) distinct ids per row from a seeded permutation (test inputs, not the router)."""
    if T == 0:
        return torch.empty((0, k), dtype=torch.int32)
    return torch.argsort(torch.rand((T, E), generator=gen), dim=1)[:, :k].to(torch.int32)


def make_inputs(
    spec: MoESpec,
    dtype: torch.dtype,
    T: int,
    *,
    seed: int = 0,
    strided: bool = False,
    ids: torch.Tensor | None = None,
) -> Inputs:
    gen = torch.Generator().manual_seed(seed)
    w = MoEWeights.random(spec, generator=gen, dtype=torch.float64).map(lambda t: t.to(dtype))
    x = torch.randn((T, spec.hidden_size), generator=gen, dtype=torch.float64).to(dtype)
    ids = random_ids(T, spec.num_experts, spec.top_k, gen) if ids is None else ids
    tw = torch.rand((T, spec.top_k), generator=gen, dtype=torch.float64).to(torch.float32) + 0.25
    dev_w = w.map(lambda t: (strided_copy(t) if strided else t).to(DEVICE))
    return Inputs(
        spec=spec,
        dtype=dtype,
        weights=dev_w,
        weights64=w.map(lambda t: t.double()),
        x=x.to(DEVICE),
        x64=x.double(),
        topk_ids=ids.to(DEVICE),
        topk_weights=tw.to(DEVICE),
    )


def standin_align(spec: MoESpec, topk_ids: torch.Tensor, block_m: int) -> AlignMeta:
    """Torch stand-in of moe_cts.kernels.align.align (host loops allowed: tests only)."""
    T, k = topk_ids.shape
    E, N = spec.num_experts, T * k
    ids = topk_ids.cpu().long().reshape(-1)
    local = torch.ones(E, dtype=torch.bool)
    if spec.local_experts is not None:
        local[:] = False
        local[list(spec.local_experts)] = True
    kept = local[ids] if N else torch.zeros(0, dtype=torch.bool)
    P = padded_capacity(N, E, block_m)
    sorted_ids = torch.full((P,), N, dtype=torch.int32)
    expert_of_block = torch.full((P // block_m,), -1, dtype=torch.int32)
    inverse = torch.full((N,), -1, dtype=torch.int32)
    counts = torch.zeros(E, dtype=torch.int32)
    pos = 0
    for e in range(E):
        flat = torch.nonzero((ids == e) & kept).flatten()
        counts[e] = flat.numel()
        if flat.numel() == 0:
            continue
        sorted_ids[pos : pos + flat.numel()] = flat.to(torch.int32)
        inverse[flat] = torch.arange(pos, pos + flat.numel(), dtype=torch.int32)
        n_tiles = -(-flat.numel() // block_m)
        expert_of_block[pos // block_m : pos // block_m + n_tiles] = e
        pos += n_tiles * block_m
    dev = topk_ids.device
    return AlignMeta(
        block_m=block_m,
        num_tokens=T,
        top_k=k,
        expert_counts=counts.to(dev),
        sorted_ids=sorted_ids.to(dev),
        expert_of_block=expert_of_block.to(dev),
        num_padded=torch.tensor([pos], dtype=torch.int32, device=dev),
        inverse=inverse.to(dev),
    )


# ----------------------------------------------------------------------------------------------- bounds
def _abs(w: MoEWeights) -> MoEWeights:
    return w.map(torch.abs)


def gate_up_expected(inp: Inputs) -> tuple[np.ndarray, np.ndarray]:
    """(act64, bound) of the gate_up stage for the rounded inputs."""
    spec, ids = inp.spec, inp.topk_ids.cpu().numpy()
    gu = ref.gate_up(spec, inp.weights64, inp.x64, ids)
    mag = ref.gate_up(spec, _abs(inp.weights64), inp.x64.abs(), ids)
    acc = LAMBDA * math.sqrt(spec.hidden_size) * U_FP32
    eg = acc * mag.gate_pre
    gate, up = gu.gate_pre, gu.up_pre
    if spec.gated:
        if (
            spec.activation == "swiglu_oai"
        ):  # (u + 1) * g * sigmoid(alpha g): d/dg <= 1.1 |u + 1|, d/du = |g s|
            eu = acc * mag.up_pre
            act_g = np.minimum(gate, spec.swiglu_limit) * ref.sigmoid(
                spec.swiglu_alpha * np.minimum(gate, spec.swiglu_limit)
            )
            prop = ACT_LIPSCHITZ * (np.abs(up) + 1.0 + eu) * eg + np.abs(act_g) * eu
        else:
            eu = acc * mag.up_pre
            act_g = ref.activate(
                spec.replace(gated=False, activation=_nongated(spec.activation), w13_layout="concat"),
                gate,
                None,
            )
            prop = ACT_LIPSCHITZ * (np.abs(up) + eu) * eg + (np.abs(act_g) + ACT_LIPSCHITZ * eg) * eu
    else:
        prop = ACT_LIPSCHITZ * eg
    bound = prop + (u_out(inp.dtype) + 8 * U_FP32) * np.abs(gu.act)
    return gu.act, bound


def _nongated(act: str) -> str:
    return act if act in ("gelu", "gelu_tanh", "relu", "silu") else "silu"


def down_expected(
    inp: Inputs, act64: np.ndarray, act_err: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(out64, bound) of the down stage fed with act64 (act_err: its error bound, propagated)."""
    spec, ids = inp.spec, inp.topk_ids.cpu().numpy()
    out = ref.down(spec, inp.weights64, act64, ids)
    w_abs = _abs(inp.weights64)
    mag = ref.down(spec, w_abs, np.abs(act64), ids)
    bound = LAMBDA * math.sqrt(spec.intermediate_size) * U_FP32 * mag + u_out(inp.dtype) * np.abs(out)
    if act_err is not None:
        bound = bound + ref.down(
            spec, w_abs.replace(b2=None if w_abs.b2 is None else 0 * w_abs.b2), act_err, ids
        )
    return out, bound


# ----------------------------------------------------------------------------------------------- compare
def assert_within(got: torch.Tensor, want: np.ndarray, bound: np.ndarray, what: str) -> None:
    """Fail unless |got - want| <= bound everywhere, NaN/inf in the same places. Judged by the engine's one
    comparison helper (conformance/engine/compare.py); the message gives the max and RMS error/bound ratios and
    the worst elements with both values and the bound."""
    g = got.detach().cpu().double().numpy()
    assert g.shape == want.shape, f"{what}: shape {g.shape} != {want.shape}"
    c = compare(g, want, np.maximum(bound, 1e-300))
    if c.within_bound:
        return
    g6 = lambda v: f"{v:.6g}" if isinstance(v, float) else str(v)  # compare writes NaN/inf as strings
    rows = [f"  at {w['index']}: got {g6(w['got'])} want {g6(w['want'])} bound {g6(w['bound'])} ratio {g6(w['ratio'])}"
            for w in c.worst]  # fmt: skip
    raise AssertionError(
        f"{what}: max error/bound {c.max_ratio:.3g}, rms ratio {c.rms_ratio:.3g}, "
        f"{c.nonfinite_mismatch} NaN/inf mismatches\n" + "\n".join(rows)
    )


def _dense_inputs(inp: Inputs) -> Inputs:
    """The shared MLP as a one-expert routed layer (k = 1, no bias, concat): reuses the routed bounds."""
    spec = inp.spec
    dense = MoESpec(
        hidden_size=spec.hidden_size,
        intermediate_size=spec.shared_width,
        num_experts=1,
        top_k=1,
        activation=spec.activation,
        gated=spec.gated,
        swiglu_alpha=spec.swiglu_alpha,
        swiglu_limit=spec.swiglu_limit,
    )
    w = inp.weights64
    w64 = MoEWeights(router=w.router[:1], w13=w.shared_w13[None], w2=w.shared_w2[None])
    T = inp.x64.shape[0]
    ids = torch.zeros((T, 1), dtype=torch.int32)
    return Inputs(dense, inp.dtype, w64, w64, inp.x, inp.x64, ids, torch.ones((T, 1)))


def shared_expected(inp: Inputs) -> tuple[np.ndarray, np.ndarray]:
    """(shared64, bound): dense GEMM pair bound, then the fp32 sigmoid gate applied before the cast."""
    spec = inp.spec
    want = ref.shared_expert(spec, inp.weights64, inp.x64)
    dense = _dense_inputs(inp)
    act, e_act = gate_up_expected(dense)
    out, e_out = down_expected(dense, act, e_act)
    out, e_out = out[:, 0], e_out[:, 0]
    if spec.shared_gate:
        g = inp.weights64.shared_gate.numpy()
        logit = inp.x64.numpy() @ g.T
        e_logit = LAMBDA * math.sqrt(spec.hidden_size) * U_FP32 * (np.abs(inp.x64.numpy()) @ np.abs(g).T)
        s = ref.sigmoid(logit)
        # sigmoid' <= 1/4; the gated product is rounded once more
        e_out = s * e_out + 0.25 * e_logit * np.abs(out) + u_out(inp.dtype) * np.abs(want)
    return want, e_out


def forward_expected(inp: Inputs, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(y64, bound) of the whole layer for the given ids / weights / kept mask, errors propagated."""
    spec = inp.spec
    act, e_act = gate_up_expected(inp)
    eo, e_eo = down_expected(inp, act, e_act)
    tw = inp.topk_weights.cpu().double().numpy()
    shared, e_sh = shared_expected(inp) if spec.shared_width else (None, 0.0)
    y = ref.combine(spec, eo, tw, kept, shared)
    mag = ref.combine(spec, np.abs(eo), np.abs(tw), kept, None if shared is None else np.abs(shared))
    e_routed = ref.combine(spec, e_eo + u_out(inp.dtype) * np.abs(eo), np.abs(tw), kept, None)
    bound = e_routed + e_sh + (spec.top_k + 1) * U_FP32 * mag + u_out(inp.dtype) * np.abs(y)
    return y, bound
