"""The soak lane: many generated cases through one implementation on one device, judged by run_case's own
tolerance model, with the count of each outcome (docs/soak.md).

    report = soak(impl, device, SoakPlan(cases=100_000, seed=0, time_limit_s=300))
    report.counts            {"pass": ..., "fail": ..., "crash": ..., "not_supported": ...}
    report.fails             [{"case_id", "failing_stage", "message", "replay"}]   each replays through run_case

Why this shape (measured on the CPU, docs/soak.md): run_case costs ~2.5 s a case on the interpreter and
~2.1 s on an H200 because it runs seven device calls per case (five stages, the forward, its determinism
re-run) and, on the host, the float64 NumPy oracle and the bound of every stage. For 10^5 cases in ~300 s the
budget is ~3 ms a case, so:

    device process (this one)                  worker processes (spawn; SoakPlan.workers)
    ------------------------------------       ------------------------------------------------------
    case ids of batch b  <-------------------  generate_batch: hypothesis @seed/@given, max_examples
    build inputs, route(), forward(out=)       (the certify pattern, not find/example), batch b seeded
      on the device, copy ids/w/y/canary         by (seed, b): the same ids on every machine
      buffer to the host (a few KB)  ------->  judge_chunk: run_case on the recording
    counts, fails, time limit  <------------   (soak_judge.py: same oracle, same bounds, same verdicts)

- Judge: the host float64 oracle through run_case, not torch_oracle on the device: the error model
  (tolerance.py) is NumPy, and a second, device-side port of it would be a second judge to keep consistent.
  The host judge costs ~5 ms a case on one core (router + end_to_end + memory); it runs in parallel workers,
  so the device process only launches and copies.
- Compiles: Triton compiles one variant per constexpr set and integer specialization; a fresh spec per case
  would compile for most cases. SoakPlan.spec_pool draws that many specs once (strategies.specs under the
  claims) and every case draws its spec from them (strategies.cases(specs=sampled_from(pool))), so the
  variants are bounded by pool x dtypes x T buckets. Compiles are counted (Triton's jit_post_compile_hook;
  0 on the interpreter, which does not compile).
- Time limit: checked before each case; at the limit the device loop stops and the judged results already
  sent to the workers are collected, never dropped.
- A Crash on a GPU may leave the context unusable (an illegal address): the loop checks the device and stops
  with the reason when it is.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from moe_cts.conformance.engine import known_issues, sandbox
from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.devices import Device, waiver_for
from moe_cts.conformance.engine.session import replay_command
from moe_cts.conformance.engine.soak_judge import SoakJob, generate_batch, judge_chunk, record, spec_pool
from moe_cts.reference.errors import NotSupportedError

#: strategy bounds: certify's generated cases on a GPU; tiny ones on the interpreter (a case there costs
#: ~0.1 s of interpreted kernels at these sizes, ~2.5 s at the GPU ones)
GPU_SHAPES = {"max_tokens": 40, "max_hidden": 64, "max_intermediate": 64, "max_experts": 16}
HOST_SHAPES = {"max_tokens": 8, "max_hidden": 32, "max_intermediate": 32, "max_experts": 8}
CHUNK = 32  # recordings per judge task: amortizes the pickling of the job
SHAPE_KEYS = ("T", "H", "I", "E", "k")


@dataclass(frozen=True)
class SoakPlan:
    cases: int  # cases to run (generated; duplicates of an id are skipped, not counted)
    seed: int = 0
    time_limit_s: float | None = None  # stop launching new cases after this many seconds
    workers: int = 0  # judge/generation processes; 0: the CPU count less one
    batch: int = 500  # generated cases per hypothesis run (per seed)
    spec_pool: int = 64  # distinct specs per run (0: a fresh spec per case)
    shapes: dict = field(default_factory=dict)  # strategy bounds; empty: GPU_SHAPES or HOST_SHAPES
    strict_ties: bool = False

    def __post_init__(self) -> None:
        checks = [
            ("cases", self.cases, isinstance(self.cases, int) and self.cases >= 1, "an int >= 1"),
            ("seed", self.seed, isinstance(self.seed, int) and self.seed >= 0, "an int >= 0"),
            ("workers", self.workers, isinstance(self.workers, int) and self.workers >= 0, "an int >= 0"),
            ("batch", self.batch, isinstance(self.batch, int) and self.batch >= 1, "an int >= 1"),
            ("spec_pool", self.spec_pool, isinstance(self.spec_pool, int) and self.spec_pool >= 0, "an int >= 0"),
            ("time_limit_s", self.time_limit_s, self.time_limit_s is None or self.time_limit_s > 0, "a number > 0"),
        ]  # fmt: skip
        for name, got, ok, want in checks:
            if not ok:
                raise ValueError(f"SoakPlan.{name}: expected {want}, got {got!r}")
        unknown = sorted(set(self.shapes) - set(GPU_SHAPES))
        if unknown:
            raise ValueError(f"SoakPlan.shapes: unknown keys {unknown}, expected some of {list(GPU_SHAPES)}")


@dataclass
class SoakReport:
    impl: str
    device: str
    plan: dict
    counts: Counter = field(default_factory=Counter)
    fails: list = field(default_factory=list)  # not conformant: fail, crash, timeout, internal_error
    ranges: dict = field(default_factory=dict)  # "T" -> [min, max], ...; "dtype" -> {name: n}
    compiles: int = 0
    generated: int = 0
    duplicates: int = 0
    started: int = 0  # cases taken off the stream; equals ran once soak() returns (none lost)
    empty: int = 0  # cases with T = 0 (the strategy draws the edge often): counted, but nothing to judge
    elapsed_s: float = 0.0
    stopped: str = ""  # why the run ended before plan.cases ("time limit", "device lost: ...")
    worst_ratio: dict = field(default_factory=dict)  # stage -> largest max_ratio among conformant cases

    @property
    def ran(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        ran = self.ran
        return {
            "impl": self.impl, "device": self.device, "plan": self.plan, "cases_run": ran,
            "counts": dict(sorted(self.counts.items())), "compiles": self.compiles,
            "cases_started": self.started, "cases_with_T0": self.empty,
            "generated": self.generated, "duplicates_skipped": self.duplicates,
            "elapsed_s": round(self.elapsed_s, 3),
            "cases_per_s": round(ran / self.elapsed_s, 2) if self.elapsed_s > 0 else None,
            "ranges": self.ranges, "worst_ratio_conformant": self.worst_ratio,
            "stopped": self.stopped, "fails": self.fails,
        }  # fmt: skip


class CompileCounter:
    """Counts Triton JIT compiles in this process (knobs.runtime.jit_post_compile_hook, chained)."""

    def __init__(self) -> None:
        self.count = 0
        self._knobs = self._prev = None

    def __enter__(self) -> CompileCounter:
        try:
            from triton import knobs  # imported here: triton after select_device set TRITON_INTERPRET
        except ImportError:  # no triton (a PyTorch implementation on a machine without it): nothing compiles
            return self
        self._knobs, self._prev = knobs, knobs.runtime.jit_post_compile_hook

        def hook(*args, **kwargs):
            self.count += 1
            return self._prev(*args, **kwargs) if self._prev else None

        knobs.runtime.jit_post_compile_hook = hook
        return self

    def __exit__(self, *exc) -> None:
        if self._knobs is not None:
            self._knobs.runtime.jit_post_compile_hook = self._prev


# ----------------------------------------------------------------------------------------------- device side
def run_on_device(impl, case: Case, device: Device, caps) -> tuple[str, Any]:
    """("recorded", Recorded) to judge, or (outcome, message) settled without the judge: waived by the device
    matrix, NotSupported (claims, or the implementation declined), Crash (it raised)."""
    reason = waiver_for(device, case)
    if reason:
        return "waived", reason
    why = caps.unsupported_case(case)
    if why:
        return "not_supported", why
    try:
        return "recorded", record(impl, case.build_inputs(device.torch_device), device, caps)
    except NotSupportedError as err:
        return "not_supported", str(err)
    except Exception as err:
        known = known_issues.crash_waiver(device, str(getattr(impl, "name", "")), err)
        if known:
            return "waived", f"waived, known limit {known}; raised {sandbox.summary(err)}"
        return "crash", sandbox.summary(err)


def device_lost(device: Device) -> str:
    """Why the device can no longer run cases (a sticky CUDA error after a crash), or ""."""
    if not device.is_gpu:
        return ""
    try:
        torch.cuda.synchronize(device.torch_device)
        torch.zeros(1, device=device.torch_device).add_(1).item()
    except Exception as err:
        return f"device lost: {sandbox.summary(err)}"
    return ""


# ----------------------------------------------------------------------------------------------- the loop
def _job(impl, device: Device, plan: SoakPlan, caps) -> SoakJob:
    bounds = {**(GPU_SHAPES if device.is_gpu else HOST_SHAPES), **plan.shapes}
    host = dataclasses.replace(device, torch_device=torch.device("cpu"))
    return SoakJob(str(getattr(impl, "name", type(impl).__name__)), caps, host, plan.seed, plan.batch,
                   plan.spec_pool, strict_ties=plan.strict_ties, **bounds)  # fmt: skip


def _workers(plan: SoakPlan) -> int:
    return plan.workers or max(1, (os.cpu_count() or 2) - 1)


def soak(impl, device: Device, plan: SoakPlan, progress: Callable[[str], None] | None = None) -> SoakReport:
    """Run plan.cases generated cases (module docstring); never raises for the implementation's faults."""
    caps = impl.capabilities()
    job = _job(impl, device, plan, caps)
    report = SoakReport(job.impl_name, device.arg, {**dataclasses.asdict(plan), "bounds": _bounds(job)})
    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")  # fork after CUDA or triton initialization is unsafe
    with ctx.Pool(_workers(plan)) as pool, CompileCounter() as compiles:
        loop = _Loop(impl, device, plan, caps, job, pool, report, t0, progress)
        try:
            loop.run()
        finally:
            loop.drain()
            report.compiles = compiles.count
            report.elapsed_s = time.perf_counter() - t0
    return report


def _bounds(job: SoakJob) -> dict:
    keys = ("max_tokens", "max_hidden", "max_intermediate", "max_experts")
    return {k: getattr(job, k) for k in keys}


class _Loop:
    """The device loop of soak(): batches of ids in, recordings out to the judges, results gathered."""

    def __init__(self, impl, device, plan, caps, job, pool, report, t0, progress):
        self.impl, self.device, self.plan, self.caps, self.job = impl, device, plan, caps, job
        self.pool, self.report, self.t0, self.progress = pool, report, t0, progress
        self.pending: deque = deque()  # judge tasks in flight
        self.chunk: list = []
        self.seen: set[str] = set()
        self.started = 0  # cases taken (recorded or settled on the device side)
        self.window = 2 * _workers(plan)  # judge tasks in flight at most: bounds host memory

    def run(self) -> None:
        pool_specs = spec_pool(self.job) if self.plan.spec_pool else None
        batches: deque = deque()
        b = 0
        while self.started < self.plan.cases:
            while len(batches) < 4:  # generation runs ahead in the workers
                batches.append(self.pool.apply_async(generate_batch, (self.job, b, pool_specs)))
                b += 1
            ids = batches.popleft().get()
            self.report.generated += len(ids)
            if not ids:
                self.report.stopped = f"generation returned no cases in batch {b}"
                return
            for cid in ids:
                if self.started >= self.plan.cases or self._out_of_time():
                    return
                if cid in self.seen:
                    self.report.duplicates += 1
                    continue
                self.seen.add(cid)
                if not self._one(cid):
                    return

    def _out_of_time(self) -> bool:
        limit = self.plan.time_limit_s
        if limit is not None and time.perf_counter() - self.t0 >= limit:
            self.report.stopped = f"time limit {limit:g} s"
            return True
        return False

    def _one(self, cid: str) -> bool:
        """Run one case on the device; False when the device can take no more."""
        case = Case.from_id(cid)
        self.started += 1
        self.report.started = self.started
        kind, payload = run_on_device(self.impl, case, self.device, self.caps)
        if kind == "recorded":
            self.chunk.append((cid, payload))
            if len(self.chunk) >= CHUNK:
                self._submit()
            return True
        self._add({"case_id": cid, "outcome": kind, "failing_stage": None, "message": payload[:400],
                   "max_ratio": {}}, case)  # fmt: skip
        if kind == "crash":
            lost = device_lost(self.device)
            if lost:
                self.report.stopped = f"{lost} (after case {cid})"
                return False
        return True

    def _submit(self) -> None:
        if self.chunk:
            self.pending.append(self.pool.apply_async(judge_chunk, (self.job, self.chunk)))
            self.chunk = []
        while len(self.pending) > self.window or (self.pending and self.pending[0].ready()):
            self._collect(self.pending.popleft())

    def _collect(self, task) -> None:
        for rec in task.get():
            self._add(rec, Case.from_id(rec["case_id"]))
        if self.progress and self.report.ran % 1000 < CHUNK:
            rate = self.report.ran / max(time.perf_counter() - self.t0, 1e-9)
            self.progress(f"{self.report.ran} judged, {dict(self.report.counts)}, {rate:.1f} cases/s")

    def drain(self) -> None:
        """Judge what was recorded and gather every result still in flight (a time limit loses none)."""
        self._submit()
        while self.pending:
            self._collect(self.pending.popleft())

    def _add(self, rec: dict, case: Case) -> None:
        r = self.report
        r.counts[rec["outcome"]] += 1
        p = case.params()
        r.empty += p["T"] == 0
        for key in SHAPE_KEYS:
            lo, hi = r.ranges.get(key, (p[key], p[key]))
            r.ranges[key] = [min(lo, p[key]), max(hi, p[key])]
        for key in ("dtype", "scenario", "activation", "scoring"):
            r.ranges.setdefault(key, Counter())[str(p[key]).split("(")[0]] += 1
        if rec["outcome"] in ("fail", "crash", "timeout", "internal_error"):
            cmd = replay_command(rec["case_id"], r.impl, self.device.arg, self.plan.strict_ties)
            r.fails.append({**rec, "case": str(case), "replay": cmd})
        else:
            for stage, v in rec["max_ratio"].items():
                r.worst_ratio[stage] = max(r.worst_ratio.get(stage, 0.0), v)
