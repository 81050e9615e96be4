"""The soak lane's host side: case generation and the judge, both run in worker processes.

    generate_batch(job, b)          -> [case_id]   batch b of the seeded hypothesis stream (soak.py docstring)
    record(impl, inputs, device)    -> Recorded    what the implementation produced on the device, on the host
    judge_chunk(job, [(id, rec)])   -> [dict]      run_case on each recording: the runner's own judge

The judge is `runner.run_case` itself, called with a `RecordedImplementation` that hands back what the real
implementation produced on the device instead of computing anything. run_case therefore builds the same
float64 oracle, the same error bounds (tolerance.ErrorModel for the real device's accumulator profile) and the
same verdicts as a certify run; only the stages the soak lane recorded are judged:

    stage        recorded on the device                          judged by run_case as
    router       route(): topk_ids (T, k), topk_weights (T, k)   tie-aware ids, weights under the bound
    end_to_end   forward(out=poisoned view): y (T, H)            compare() under e_y, fed the accepted ids
    memory       the poisoned buffer (canaries + y + canaries)   unwritten elements, changed canaries
    others       not recorded                                    NotSupported (severity 0: never hides a Fail)

The recorded claims keep every field of the real Capabilities except: stages = {route, forward} of those the
implementation exposes, deterministic = batch_invariant = False (the soak lane runs each case once; the
determinism and invariance re-runs stay with certify).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from moe_cts.conformance.engine import sandbox
from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.devices import Device
from moe_cts.conformance.engine.protocol import FORWARD, Capabilities
from moe_cts.conformance.engine.results import CaseResult
from moe_cts.conformance.engine.runner import run_case
from moe_cts.conformance.engine.strategies import cases, shapes, specs

#: the stages the soak lane records on the device and judges (module docstring)
RECORDED_STAGES = frozenset({"route", FORWARD})
JUDGED = ("router", "end_to_end", "memory")


@dataclass(frozen=True)
class SoakJob:
    """What every worker needs to generate and judge: plain data, pickled once per task."""

    impl_name: str
    caps: Capabilities  # the real implementation's claims
    device: Device  # the device under test (its backend and arch pick the accumulator profile)
    seed: int
    batch: int  # generated cases per batch
    spec_pool: int  # distinct specs per run (0: a fresh spec per case); bounds Triton compiles
    max_tokens: int
    max_hidden: int
    max_intermediate: int
    max_experts: int
    strict_ties: bool = False
    impl: Any = None  # the implementation object (pickled into each worker); None for a judge-only job


# ----------------------------------------------------------------------------------------------- generation
_QUIET = list(HealthCheck)  # bulk generation: slow draws and filtered examples are expected, not errors


def _draw(strategy, n: int, seed_value: int) -> list:
    """n examples of `strategy` from hypothesis's own engine with a fixed seed (the certify pattern:
    @seed + @given + max_examples, generate phase only, no database); hypothesis may return fewer."""
    out: list = []

    @seed(seed_value)
    @settings(max_examples=n, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=_QUIET, derandomize=False)  # fmt: skip
    @given(strategy)
    def run(example) -> None:
        out.append(example)

    run()
    return out


def spec_pool(job: SoakJob) -> list:
    """The run's specs: job.spec_pool draws of strategies.specs under the implementation's claims."""
    shape_st = shapes(max_tokens=0, max_hidden=job.max_hidden, max_intermediate=job.max_intermediate,
                      max_experts=job.max_experts)  # fmt: skip
    pool = _draw(specs(shapes=shape_st, capabilities=job.caps), job.spec_pool * 2, job.seed)
    unique = list(dict.fromkeys(pool))  # MoESpec is frozen and hashable: first occurrence wins
    return unique[: job.spec_pool]


def generate_batch(job: SoakJob, b: int, pool: list | None = None) -> list[str]:
    """Case ids of batch b: strategies.cases under the claims (specs from `pool` when given), T >= 1, seeded
    by (job.seed, b), so batch b is the same list on every machine."""
    kw: dict[str, Any] = {"max_tokens": job.max_tokens, "max_hidden": job.max_hidden,
                          "max_intermediate": job.max_intermediate, "max_experts": job.max_experts}  # fmt: skip
    if pool:
        kw["specs"] = st.sampled_from(pool)
    # T = 0 is left out: nothing to judge. strategies.cases draws it as an edge; measured at the GPU bounds
    # and spec_pool 64, 37% of hypothesis's draws were T = 0 (docs/soak.md), which would pad the count.
    strategy = cases(capabilities=job.caps, **kw).filter(lambda c: c.num_tokens > 0)
    return [c.case_id for c in _draw(strategy, job.batch, job.seed * 1_000_003 + b + 1)]


# ----------------------------------------------------------------------------------------------- recording
@dataclass(frozen=True)
class Packed:
    """A host tensor as its raw bits in NumPy: pickles as plain bytes. (Tensors themselves would go through
    torch's shared-memory reductions, one file descriptor per tensor: 10^5 cases exhaust them.)"""

    bits: np.ndarray
    dtype: str  # torch dtype name, "bfloat16", "int32", ...

    @classmethod
    def of(cls, t: torch.Tensor | None) -> Packed | None:
        if t is None:
            return None
        t = t.detach().cpu().contiguous()
        raw = t.view(_BITS[t.element_size()]) if t.is_floating_point() else t
        return cls(raw.numpy().copy(), str(t.dtype).removeprefix("torch."))

    def tensor(self) -> torch.Tensor:
        t = torch.from_numpy(self.bits.copy())
        dt = getattr(torch, self.dtype)
        return t.view(dt) if dt.is_floating_point else t


_BITS = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}


@dataclass(frozen=True)
class Recorded:
    """One case's device outputs, on the host (a few KB at soak sizes)."""

    topk_ids: Packed | None  # (T, k) as returned by route(); None when route is not exposed
    topk_weights: Packed | None  # (T, k), dtype as returned (run_case checks the declared dtype)
    y: Packed  # (T, H) the forward's output
    buf: Packed | None  # the poisoned buffer (canaries, y, canaries) when the forward took out=
    same_tensor: bool  # the forward returned the out= tensor itself
    kernel_config: dict


def record(impl, inputs, device: Device, caps: Capabilities) -> Recorded:
    """Run route() and the forward on the device as run_case does (poisoned out= with canaries when accepted,
    else NaN-filled fresh memory) and copy the results to the host. Raises what the implementation raises."""
    ids = w = None
    if "route" in caps.stages:
        r = impl.run(inputs, "route", device)
        ids, w = Packed.of(r.topk_ids), Packed.of(r.topk_weights)
    T, H = inputs.x.shape
    if caps.accepts_out:
        p = sandbox.PoisonedOutput.make(T, H, inputs.x.dtype, device.torch_device)
        y = sandbox.field_of(impl.run(inputs, FORWARD, device, out=p.out), "y")
        same, buf = y.data_ptr() == p.out.data_ptr(), Packed.of(p.buf)
    else:
        with sandbox.nan_fill_uninitialized():
            y = sandbox.field_of(impl.run(inputs, FORWARD, device), "y")
        same, buf = False, None
    sandbox.settle(device.torch_device)
    cfg = {}
    if hasattr(impl, "kernel_config"):
        cfg = dict(impl.kernel_config() or {})
    return Recorded(ids, w, Packed.of(y), buf, same, cfg)


class RecordedImplementation:
    """Replays a Recorded to run_case (module docstring). Never computes: the outputs are the device's."""

    def __init__(self, name: str, caps: Capabilities, rec: Recorded):
        self.name, self.rec = name, rec
        self.caps = dataclasses.replace(
            caps, stages=caps.stages & RECORDED_STAGES, deterministic=False, batch_invariant=False
        )

    def capabilities(self) -> Capabilities:
        return self.caps

    def kernel_config(self) -> dict:
        return self.rec.kernel_config

    def run(self, inputs, stage: str, device=None, *, out=None) -> Any:
        rec = self.rec
        if stage == "route":
            return _Routing(rec.topk_ids.tensor(), rec.topk_weights.tensor())
        if stage != FORWARD:  # not exposed: run_case never asks (capabilities), a guard for other callers
            raise RuntimeError(f"recorded implementation: stage {stage} was not recorded")
        y = rec.y.tensor()
        if out is None or rec.buf is None:
            return y
        full = _enclosing_buffer(out, rec.buf.bits.size)
        if full is None:  # not run_case's poisoned view: the values only
            out.copy_(y)
        else:  # canaries and unwritten poison bits come across as they were on the device
            full.copy_(rec.buf.tensor())
        return out if rec.same_tensor else y


@dataclass(frozen=True)
class _Routing:
    topk_ids: torch.Tensor
    topk_weights: torch.Tensor


def _enclosing_buffer(out: torch.Tensor, n: int) -> torch.Tensor | None:
    """The flat buffer of n elements around `out` (sandbox.PoisonedOutput: CANARY_ELEMS either side), or None."""
    start = out.storage_offset() - sandbox.CANARY_ELEMS
    if start < 0 or out.untyped_storage().nbytes() < (start + n) * out.element_size():
        return None
    full = torch.empty(0, dtype=out.dtype, device=out.device)
    full.set_(out.untyped_storage(), start, (n,))
    return full


# ----------------------------------------------------------------------------------------------- judging
def judge_one(job: SoakJob, case_id: str, rec: Recorded, inputs=None) -> CaseResult:
    """run_case's verdict on the recorded outputs of one case. `inputs`: the case's inputs on the host when
    the caller built them already (the same bits run_case would build from the seed: ~4 ms a case saved)."""
    impl = RecordedImplementation(job.impl_name, job.caps, rec)
    return run_case(impl, Case.from_id(case_id), job.device, strict_ties=job.strict_ties, inputs=inputs)


def summary(r: CaseResult) -> dict[str, Any]:
    """The small record the soak report keeps of one judged case."""
    ratios = {v.stage: v.max_ratio for v in r.stages if v.stage in JUDGED and v.max_ratio is not None}
    return {
        "case_id": r.case_id,
        "outcome": r.outcome.value,
        "failing_stage": r.failing_stage,
        "message": r.message[:400],
        "max_ratio": ratios,
    }


def judge_chunk(job: SoakJob, items: list[tuple[str, Recorded]]) -> list[dict[str, Any]]:
    return [summary(judge_one(job, cid, rec)) for cid, rec in items]
