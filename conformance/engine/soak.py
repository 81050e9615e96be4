"""The soak lane: many generated cases through one implementation on one device, judged by run_case's own
tolerance model, with the count of each outcome (docs/soak.md).

    report = soak(impl, device, SoakPlan(cases=100_000, seed=0, time_limit_s=300))
    report.counts            {"pass": ..., "fail": ..., "crash": ..., "not_supported": ...}
    report.fails             [{"case_id", "failing_stage", "message", "replay"}]   each replays through run_case

Why this shape (measured on the CPU, docs/soak.md has the numbers and the machine): run_case spends ~99% of
a generated case on the interpreter in its seven device calls (five stages, the forward, the determinism
re-run); its host part (float64 NumPy oracle and the bound of every stage) is ~16 ms. The lead measured
~2.1 s a case on an H200. For 10^5 cases in ~300 s the budget is ~3 ms a case, so the soak lane runs two
device calls per case (route, forward) and only the judgement of their outputs, in parallel processes:

    main process                                 each worker process (spawn; SoakPlan.workers of them)
    ------------------------------------------   --------------------------------------------------------
    spec pool: strategies.specs, seeded          run_batch(b): generate_batch: strategies.cases through
    submit batches b = 0, 1, ... (2 per worker)    hypothesis @seed/@given/max_examples (the certify
    gather BatchResults: counts, ranges, fails     pattern; not find/example), seeded by (seed, b)
    stop submitting at the time limit            per case: inputs from the case seed, route() and
                                                   forward(out=poisoned) on the device, outputs to the
                                                   host, run_case on the recording (soak_judge.py)

- One kind of worker (generate + device + judge in one process), because every part costs host CPU at these
  sizes (one core of the 2-core test VM, GPU shape bounds: generation ~6 ms, inputs ~5 ms, judge ~22 ms a
  case): a single process driving the device would be bound by input building alone. Workers share the GPU,
  each with its own context; each case is judged right after it ran, so nothing waits in memory.
- Judge: run_case itself on the recorded outputs, so the oracle (float64 NumPy on the host), the bounds
  (tolerance.ErrorModel of the real device's accumulator profile) and the verdicts are the certify run's.
  Not torch_oracle on the device: the error model is NumPy, and a device-side port of it would be a second
  judge to keep consistent with the first; the float64 oracle is a fraction of the judge's cost anyway
  (torch_oracle.moe_forward alone: ~14 ms a case on the same core).
- Compiles: Triton compiles a variant per constexpr set and integer specialization; a fresh spec per case
  would compile for most cases. SoakPlan.spec_pool draws that many specs once (strategies.specs under the
  claims) and every case draws its spec from them (strategies.cases(specs=sampled_from(pool))): the variants
  are bounded by pool x dtypes x T buckets, compiled once per worker (Triton's disk cache serves the other
  workers), and counted (knobs.compilation.listener; 0 on the interpreter, which does not compile).
- Time limit: a wall-clock deadline every worker checks before each case; each batch returns what it judged,
  and the main process gathers every batch it submitted: a result already judged is never lost.
- A Crash on a GPU may leave the context unusable (an illegal address): the worker checks the device and
  the run stops with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.devices import THREAD_VARS, Device
from moe_cts.conformance.engine.environ import setenv
from moe_cts.conformance.engine.session import replay_command
from moe_cts.conformance.engine.soak_judge import SoakJob, spec_pool
from moe_cts.conformance.engine.soak_worker import BatchResult, run_batch

#: strategy bounds: certify's generated cases on a GPU; tiny ones on the interpreter (a case there costs
#: ~0.1 s of interpreted kernels at these sizes, ~2.5 s at the GPU ones)
GPU_SHAPES = {"max_tokens": 40, "max_hidden": 64, "max_intermediate": 64, "max_experts": 16}
HOST_SHAPES = {"max_tokens": 8, "max_hidden": 32, "max_intermediate": 32, "max_experts": 8}
SHAPE_KEYS = ("T", "H", "I", "E", "k")


#: outcomes whose error ratios are a conformant result's: judged and within the bound (a waived or NotSupported
#: case is neither; a vllm-peer soak on the interpreter reported 6e13 as the worst "conformant" ratio, a waived bf16 Fail)
JUDGED_CONFORMANT = ("pass", "quality_warning", "compatibility_warning")


@dataclass(frozen=True)
class SoakPlan:
    cases: int  # cases to run (generated; duplicates of an id are skipped, not counted)
    seed: int = 0
    time_limit_s: float | None = None  # stop launching new cases after this many seconds
    workers: int = 0  # judge/generation processes; 0: the CPU count less one
    batch: int = 500  # generated cases per hypothesis run (per seed)
    spec_pool: int = 16  # distinct specs per run (0: a fresh spec per case); bounds compiles (docs/soak.md)
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
    compiles: int = 0  # Triton compiler runs, summed over the workers
    cache_loads: int = 0  # kernels a worker loaded from Triton's on-disk cache instead
    generated: int = 0
    duplicates: int = 0
    started: int = 0  # cases the workers ran; ran + duplicates once soak() returns (none lost)
    empty: int = 0  # cases with T = 0: none, as generate_batch leaves them out (kept as a check of that)
    elapsed_s: float = 0.0
    stopped: str = ""  # why the run ended before plan.cases ("time limit", "device lost: ...")
    worst_ratio: dict = field(default_factory=dict)  # stage -> largest max_ratio, JUDGED_CONFORMANT cases

    @property
    def ran(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        ran = self.ran
        return {
            "impl": self.impl, "device": self.device, "plan": self.plan, "cases_run": ran,
            "counts": dict(sorted(self.counts.items())), "compiles": self.compiles, "cache_loads": self.cache_loads,
            "cases_started": self.started, "cases_with_T0": self.empty,
            "generated": self.generated, "duplicates_skipped": self.duplicates,
            "elapsed_s": round(self.elapsed_s, 3),
            "cases_per_s": round(ran / self.elapsed_s, 2) if self.elapsed_s > 0 else None,
            "ranges": self.ranges, "worst_ratio_conformant": self.worst_ratio,
            "stopped": self.stopped, "fails": self.fails,
        }  # fmt: skip


# ----------------------------------------------------------------------------------------------- the loop
def _job(impl, device: Device, plan: SoakPlan) -> SoakJob:
    bounds = {**(GPU_SHAPES if device.is_gpu else HOST_SHAPES), **plan.shapes}
    return SoakJob(str(getattr(impl, "name", type(impl).__name__)), impl.capabilities(), device, plan.seed,
                   plan.batch, plan.spec_pool, strict_ties=plan.strict_ties, impl=impl, **bounds)  # fmt: skip


def _workers(plan: SoakPlan) -> int:
    return plan.workers or max(1, (os.cpu_count() or 2) - 1)


def soak(impl, device: Device, plan: SoakPlan, progress: Callable[[str], None] | None = None) -> SoakReport:
    """Run plan.cases generated cases (module docstring); never raises for the implementation's faults.
    `impl` must pickle: each spawned worker gets its own copy."""
    job = _job(impl, device, plan)
    bounds = {k: getattr(job, k) for k in ("max_tokens", "max_hidden", "max_intermediate", "max_experts")}
    report = SoakReport(job.impl_name, device.arg, {**dataclasses.asdict(plan), "bounds": bounds,
                                                    "workers": _workers(plan)})  # fmt: skip
    t0 = time.perf_counter()
    deadline = None if plan.time_limit_s is None else time.time() + plan.time_limit_s
    pool_specs = spec_pool(job) if plan.spec_pool else None
    ctx = multiprocessing.get_context("spawn")  # fork after CUDA or triton initialization is unsafe
    with _one_thread_each(), ctx.Pool(_workers(plan), initializer=_worker_init) as pool:
        _Loop(job, plan, pool, pool_specs, deadline, report, progress).run()
    report.elapsed_s = time.perf_counter() - t0
    return report


@contextlib.contextmanager
def _one_thread_each():
    """BLAS/OpenMP pools of one thread in the workers: W workers each with a pool per core would oversubscribe
    the host W-fold on the judge's small NumPy and torch operations. Spawned workers copy the environment when
    they start, before they import NumPy: set it while the pool runs (a worker the pool restarts gets it too),
    then restore this process's own."""
    with setenv(dict.fromkeys(THREAD_VARS, "1")):
        yield


def _worker_init() -> None:
    torch.set_num_threads(1)


class _Loop:
    """Keeps 2 batches per worker in flight, gathers each BatchResult, tops up until plan.cases ran."""

    def __init__(self, job, plan, pool, pool_specs, deadline, report, progress):
        self.job, self.plan, self.pool, self.pool_specs = job, plan, pool, pool_specs
        self.deadline, self.report, self.progress = deadline, report, progress
        self.pending: deque = deque()
        self.seen: set[str] = set()
        self.next_b = 0
        self.t0 = time.perf_counter()

    def run(self) -> None:
        window = 2 * _workers(self.plan)
        while True:
            asked = sum(n for _, n in self.pending)
            while (not self.report.stopped and len(self.pending) < window
                   and self.report.ran + asked < self.plan.cases and not self._late()):  # fmt: skip
                n = min(self.plan.batch, self.plan.cases - self.report.ran - asked)
                args = (self.job, self.next_b, n, self.pool_specs, self.deadline)
                self.pending.append((self.pool.apply_async(run_batch, args), n))
                self.next_b, asked = self.next_b + 1, asked + n
            if not self.pending:
                return
            task, _ = self.pending.popleft()
            self._gather(task.get())  # every submitted batch is gathered, also after a stop

    def _late(self) -> bool:
        if self.deadline is not None and time.time() >= self.deadline:
            self.report.stopped = self.report.stopped or f"time limit {self.plan.time_limit_s:g} s"
            return True
        return False

    def _gather(self, res: BatchResult) -> None:
        r = self.report
        r.generated += res.generated
        r.compiles += res.compiles
        r.cache_loads += res.cache_loads
        if res.stopped and not r.stopped:
            r.stopped = (
                f"time limit {self.plan.time_limit_s:g} s" if res.stopped == "time limit" else res.stopped
            )
        for rec in res.records:
            r.started += 1
            if rec["case_id"] in self.seen:  # another batch drew the same case: counted once
                r.duplicates += 1
                continue
            self.seen.add(rec["case_id"])
            self._add(rec, Case.from_id(rec["case_id"]))
        if self.progress:
            rate = r.ran / max(time.perf_counter() - self.t0, 1e-9)
            self.progress(f"batch {res.b}: {r.ran} judged, {dict(r.counts)}, {rate:.1f} cases/s")

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
            cmd = replay_command(rec["case_id"], r.impl, self.job.device.arg, self.plan.strict_ties)
            r.fails.append({**rec, "case": str(case), "replay": cmd})
        elif rec["outcome"] in JUDGED_CONFORMANT:  # a waived Fail's ratio is the Fail's: not a conformant one
            for stage, v in rec["max_ratio"].items():
                r.worst_ratio[stage] = max(r.worst_ratio.get(stage, 0.0), v)
