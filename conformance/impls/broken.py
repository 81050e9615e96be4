"""Deliberately broken implementations: each reproduces one shipped MoE bug class on top of torch-eager,
and names the case that exposes it and the verdict the suite must give. The last column names the bug's
anchor in docs/bugs.md (docs/bugs.md#bug-17-topk-ties and so on).

    name                        caught at   as                     bug: docs/bugs.md anchor, or what it does
    zero-output                 end_to_end  fail                   all-zero output: facts-checks-that-can-fail
    dropped-k-tile              gemm2       fail                   GEMM2 skips its last K tile: same
    dropped-k-tile-gemm1        gemm1       fail                   GEMM1 skips its last K tile: same
    wrong-tie-break             router      compatibility_warning  bug-17-topk-ties (higher id wins)
    weight-after-bf16-cast      combine     fail                   bug-02-router-weight-after-cast
    scaling-twice               router      fail                   bug-05-routed-scaling-factor
    correction-bias-in-weights  router      fail                   bug-04-grouped-topk (bias in w)
    gate-up-swapped             gemm1       fail                   bug-11-gate-up-layout
    unwritten-row               memory      fail                   bug-09-stale-workspace-rows
    write-past-end              memory      fail                   one row written past the output's end
    nan-duplicate-id            router      fail                   bug-06-nan-router-logits
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.results import Outcome
from moe_cts.conformance.engine.scenarios import Scenario
from moe_cts.conformance.impls.broken_quant import QUANT_TABLE
from moe_cts.conformance.impls.torch_eager import EagerRouting, TorchEagerImplementation
from moe_cts.reference import presets
from moe_cts.reference.spec import MoESpec

BLOCK_K = 32  # K tile a broken GEMM "forgets"


class ZeroOutput(TorchEagerImplementation):
    def forward(self, spec, w, x):
        return torch.zeros((x.shape[0], spec.hidden_size), dtype=x.dtype, device=x.device)


def _drop_last_k_tile(a: torch.Tensor) -> torch.Tensor:
    K = a.shape[-1]
    a = a.clone()
    a[..., (K - 1) // BLOCK_K * BLOCK_K :] = 0
    return a


class DroppedKTile(TorchEagerImplementation):
    def expert_down(self, spec, w, e, ae):
        return super().expert_down(spec, w, e, _drop_last_k_tile(ae))


class DroppedKTileGemm1(TorchEagerImplementation):
    def expert_h(self, spec, w, e, xe):
        return super().expert_h(spec, w, e, _drop_last_k_tile(xe))


class WrongTieBreak(TorchEagerImplementation):
    def select(self, spec, keys):
        E = keys.shape[1]
        flipped = super().select(spec, keys.flip(1))  # stable sort on reversed ids: ties -> higher id
        return E - 1 - flipped


class WeightAfterBf16Cast(TorchEagerImplementation):
    def cast_weights(self, topk_weights, dtype):
        return topk_weights.to(torch.bfloat16).to(dtype)


class ScalingTwice(TorchEagerImplementation):
    def finish_weights(self, spec, tw, keys, ids):
        return super().finish_weights(spec, tw, keys, ids) * spec.routed_scaling_factor


class CorrectionBiasInWeights(TorchEagerImplementation):
    def finish_weights(self, spec, tw, keys, ids):
        return super().finish_weights(spec, keys.gather(1, ids), keys, ids)


class GateUpSwapped(TorchEagerImplementation):
    def split(self, spec, h):
        gate, up = super().split(spec, h)
        return (up, gate) if up is not None else (gate, up)


class UnwrittenRow(TorchEagerImplementation):
    def write_out(self, y, out):
        if out is None:
            return y
        out[:-1].copy_(y[:-1])
        return out


class WritePastEnd(TorchEagerImplementation):
    def write_out(self, y, out):
        if out is None:
            return y
        out.copy_(y)
        T, H = out.shape
        # a view over the same storage one row longer: what an unmasked last tile does on a GPU
        past = torch.empty(0, dtype=out.dtype, device=out.device)
        past.set_(out.untyped_storage(), out.storage_offset(), ((T + 1) * H,))
        past[T * H :] = 0
        return out


class NanDuplicateId(TorchEagerImplementation):
    def route(self, spec, w, x):
        r = super().route(spec, w, x)
        nan_rows = torch.isnan(self.logits(spec, w, x)).any(dim=1)
        ids = torch.where(nan_rows[:, None], torch.zeros_like(r.topk_ids), r.topk_ids)
        return EagerRouting(ids, r.topk_weights)


@dataclass(frozen=True)
class Broken:
    factory: Callable[[], TorchEagerImplementation]
    stage: str  # the verdict stage that must catch it (moe_cts.conformance.engine.results.STAGES)
    outcome: Outcome  # the verdict it must get there
    case: Case  # a case that exposes it


def _named(cls: type, name: str) -> Callable[[], TorchEagerImplementation]:
    def factory() -> TorchEagerImplementation:
        impl = cls()
        impl.name = f"broken:{name}"
        return impl

    return factory


_BASE = MoESpec(hidden_size=64, intermediate_size=64, num_experts=8, top_k=2, renormalize=True)
_WIDE = MoESpec(hidden_size=256, intermediate_size=256, num_experts=4, top_k=2, renormalize=True)
_SCALED = _BASE.replace(routed_scaling_factor=2.5)
_DSV3 = presets.scaled("deepseek-v3")

_TABLE = [
    ("zero-output", ZeroOutput, "end_to_end", Outcome.FAIL, Case(_BASE, 12, seed=1)),
    ("dropped-k-tile", DroppedKTile, "gemm2", Outcome.FAIL, Case(_WIDE, 8, "bfloat16", seed=2)),
    ("dropped-k-tile-gemm1", DroppedKTileGemm1, "gemm1", Outcome.FAIL, Case(_WIDE, 8, "bfloat16", seed=3)),
    ("wrong-tie-break", WrongTieBreak, "router", Outcome.COMPATIBILITY_WARNING,
     Case(_BASE, 8, scenario=Scenario("exact_ties"), seed=4)),
    ("weight-after-bf16-cast", WeightAfterBf16Cast, "combine", Outcome.FAIL, Case(_BASE, 12, seed=5)),
    ("scaling-twice", ScalingTwice, "router", Outcome.FAIL, Case(_SCALED, 12, seed=6)),
    ("correction-bias-in-weights", CorrectionBiasInWeights, "router", Outcome.FAIL, Case(_DSV3, 12, seed=7)),
    ("gate-up-swapped", GateUpSwapped, "gemm1", Outcome.FAIL, Case(_BASE, 12, "bfloat16", seed=8)),
    ("unwritten-row", UnwrittenRow, "memory", Outcome.FAIL, Case(_BASE, 12, seed=9)),
    ("write-past-end", WritePastEnd, "memory", Outcome.FAIL, Case(_BASE, 12, seed=10)),
    ("nan-duplicate-id", NanDuplicateId, "router", Outcome.FAIL, Case(_BASE, 12, scenario=Scenario("nan_rows"), seed=11)),
]  # fmt: skip

BROKEN: dict[str, Broken] = {
    n: Broken(_named(cls, n), stage, out, case) for n, cls, stage, out, case in _TABLE
}

# the quantized ones (broken_quant.py) register beside these, so "broken:<name>" finds them too
BROKEN.update({n: Broken(_named(cls, n), stage, out, case) for n, cls, stage, out, case in QUANT_TABLE})
