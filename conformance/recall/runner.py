"""A recall run: the control run, then every selected fault, in a pool of worker processes.

report = run_recall(profile="smoke", device="interpreter", jobs=2, faults=None, cap=6)
report.recall            killed / (faults run), per profile of the faults run
report.control_failures  cases the unmutated implementation does not pass (then the recall is void)

1. plan       per fault: its exposing cases, then the profile's must-pass cases up to `cap`
2. control    every (implementation, case) pair of the plan on the unmutated implementation
3. faults     each fault in some worker (a worker handles many faults: torch and Triton stay
              imported); a worker that dies (a segfaulting mutation) fails only its own task,
              which is retried once alone, then reported as caught_elsewhere. Faults expected to crash
              (wrapped int32 offsets: an illegal address on a GPU) run each in a process of its own: an
              illegal address poisons the CUDA context for the rest of its process (H200, session 4:
              every control case after one in the same worker reported it)
4. control    in a fresh pool, for the same reason
5. not run   a fault whose every case the device declines (NotSupported) is `not_exercised`, out of the
              denominator and listed beside it, like
   equivalent a surviving mutation whose forward outputs equal the control's bit for bit on every case it
              ran (worker.digest) changes nothing this device computes: an equivalent mutant, reported
              as `equivalent` and left out of the recall's denominator (listed beside it)
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.devices import select_device
from moe_cts.conformance.recall import worker
from moe_cts.conformance.recall.catalog import Catalog, Fault, load_catalog
from moe_cts.conformance.recall.worker import CaseRun, FaultResult

DEFAULT_CAP = 6
DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class RecallReport:
    profile: str
    device: str
    catalog_version: str
    faults: tuple[Fault, ...]
    results: tuple[FaultResult, ...]
    control: tuple[tuple[str, CaseRun], ...]  # (impl key, run) of every control case
    wall_s: float
    jobs: int

    @property
    def control_failures(self) -> list[tuple[str, CaseRun]]:
        return [(k, r) for k, r in self.control if r.outcome not in _CONFORMANT]

    def recall(self) -> dict[str, dict[str, Any]]:
        """Per profile of the faults run: killed, run (faults not stale / error), recall = killed / run."""
        out: dict[str, dict[str, Any]] = {}
        by_name = {r.name: r for r in self.results}
        for f in self.faults:
            r = by_name[f.name]
            row = out.setdefault(
                f.profile,
                {
                    "killed": 0,
                    "run": 0,
                    "survived": [],
                    "elsewhere": [],
                    "equivalent": [],
                    "not_exercised": [],
                },
            )
            if r.status in ("equivalent", "not_exercised"):
                row[r.status].append(f.name)
            if r.status in ("stale", "error", "equivalent", "not_exercised"):
                continue
            row["run"] += 1
            row["killed"] += r.status == "killed"
            if r.status == "survived":
                row["survived"].append(f.name)
            if r.status == "caught_elsewhere":
                row["elsewhere"].append(f.name)
        for row in out.values():
            row["recall"] = round(row["killed"] / row["run"], 4) if row["run"] else None
        return out


_CONFORMANT = {"pass", "quality_warning", "compatibility_warning", "not_supported", "waived"}


def plan(
    catalog: Catalog, faults: list[Fault], profile: str, backend: str, cap: int, arch: str | None = None
) -> dict[str, list[Case]]:
    return {f.name: catalog.cases_for(f, profile, backend, cap, arch) for f in faults}


def _pool(device: str, jobs: int) -> cf.ProcessPoolExecutor:
    # spawn: a fresh interpreter per worker, so TRITON_INTERPRET is set before triton is imported there
    ctx = multiprocessing.get_context("spawn")
    return cf.ProcessPoolExecutor(
        max_workers=jobs, mp_context=ctx, initializer=worker.init_worker, initargs=(device,)
    )


class _Pool:
    """The worker pool of one run; replaced by a fresh one when a dying worker breaks it."""

    def __init__(self, device: str, jobs: int):
        self.device, self.jobs = device, jobs
        self.pool = _pool(device, jobs)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _map(p: _Pool, tasks: list[tuple[Callable, tuple]], on_crash: Callable[[int], Any]) -> list[Any]:
    """Run tasks (fn, args) in the pool, results in task order. Tasks lost to a dying worker are retried
    one at a time in a fresh one-worker pool; a second loss gives on_crash(index)."""
    results: list[Any] = [None] * len(tasks)
    lost: list[int] = []
    futs = {p.pool.submit(fn, *args): i for i, (fn, args) in enumerate(tasks)}
    for fut in cf.as_completed(futs):
        try:
            results[futs[fut]] = fut.result()
        except cf.process.BrokenProcessPool:
            lost.append(futs[fut])
    if lost:  # a broken pool takes every pending task with it: start a fresh one for what follows
        p.close()
        p.pool = _pool(p.device, p.jobs)
    for i in sorted(lost):
        fn, args = tasks[i]
        try:
            with _pool(p.device, 1) as single:
                results[i] = single.submit(fn, *args).result()
        except cf.process.BrokenProcessPool:
            results[i] = on_crash(i)
    return results


def run_recall(
    *,
    profile: str = "smoke",
    device: str = "interpreter",
    jobs: int = 2,
    names: list[str] | None = None,
    cap: int = DEFAULT_CAP,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    catalog: Catalog | None = None,
    progress: Callable[[str], None] | None = None,
) -> RecallReport:
    """The whole run (module docstring). device: 'interpreter' or a GPU device name ('cuda:0')."""
    t0 = time.perf_counter()
    cat = catalog or load_catalog()
    backend = "interpreter" if device == "interpreter" else "gpu"
    faults = cat.by_name(names) if names else cat.runnable(profile, backend)
    # on a GPU, that device's backend (cuda / hip) and arch: the tile cases are the rows of the table it reads
    # (cuda-sm90's on an H200), as in a certify run there
    dev = None if backend == "interpreter" else select_device(device)
    cases = plan(cat, faults, profile, dev.backend if dev else "interpreter", cap, dev.arch if dev else None)
    say = progress or (lambda s: None)

    say(f"faults: {len(faults)} in {jobs} workers")
    pool = _Pool(device, jobs)
    try:
        results, control = _faults_then_control(pool, faults, cases, timeout_s, say)
    finally:
        pool.close()
    return RecallReport(profile=profile, device=device, catalog_version=cat.version, faults=tuple(faults),
                        results=tuple(results), control=control, wall_s=round(time.perf_counter() - t0, 2),
                        jobs=jobs)  # fmt: skip


def _isolated(p: _Pool, tasks: list[tuple[Callable, tuple]], on_crash: Callable[[int], Any]) -> list[Any]:
    """Each task in a one-worker pool of its own, up to p.jobs at a time (module docstring, step 3)."""
    results: list[Any] = [None] * len(tasks)
    for start in range(0, len(tasks), p.jobs):
        pools = {i: _pool(p.device, 1) for i in range(start, min(start + p.jobs, len(tasks)))}
        futs = {pl.submit(tasks[i][0], *tasks[i][1]): i for i, pl in pools.items()}
        for fut in cf.as_completed(futs):
            try:
                results[futs[fut]] = fut.result()
            except cf.process.BrokenProcessPool:
                results[futs[fut]] = on_crash(futs[fut])
        for pl in pools.values():
            pl.shutdown(wait=True, cancel_futures=True)
    return results


def _faults_then_control(pool: _Pool, faults: list[Fault], cases: dict[str, list[Case]], timeout_s: float,
                         say: Callable[[str], None]) -> tuple[list[FaultResult], tuple[tuple[str, CaseRun], ...]]:  # fmt: skip
    tasks = [(worker.run_fault, (f, cases[f.name], timeout_s)) for f in faults]
    died = lambda i: FaultResult(faults[i].name, "caught_elsewhere", message="worker process died (crash)")
    alone = [i for i, f in enumerate(faults) if f.outcome.value == "crash"]
    shared = [i for i in range(len(faults)) if i not in alone]
    results: list[FaultResult] = [None] * len(faults)  # type: ignore[list-item]
    for i, r in zip(shared, _map(pool, [tasks[i] for i in shared], lambda j: died(shared[j]))):
        results[i] = r
    for i, r in zip(alone, _isolated(pool, [tasks[i] for i in alone], lambda j: died(alone[j]))):
        results[i] = r
    pool.close()  # control in fresh workers: a fault may have left a worker's GPU context unusable
    pool.pool = _pool(pool.device, pool.jobs)

    # Control: exactly the cases the faults ran (runs[i] is cases[i]), on the unmutated implementation.
    pairs: dict[tuple[str, str], tuple[Fault, Case]] = {}
    for f, r in zip(faults, results):
        for c in cases[f.name][: len(r.runs)]:
            pairs.setdefault((f.impl_key, c.case_id), (f, c))
    say(f"control: {len(pairs)} (implementation, case) pairs")
    survivors = {(f.impl_key, c.case_id) for f, r in zip(faults, results) if r.status == "survived"
                 and f.kind == "mutation" for c in cases[f.name][: len(r.runs)]}  # fmt: skip
    ctl_tasks = [(worker.run_control, (f, c, timeout_s, key in survivors)) for key, (f, c) in pairs.items()]
    ctl = _map(pool, ctl_tasks, lambda i: CaseRun(ctl_tasks[i][1][1].name, "crash", None, "", 0.0,
                                                          "worker process died"))  # fmt: skip
    control = tuple((f.impl_key, r) for (f, _), r in zip(pairs.values(), ctl))
    return [_equivalent(f, r, control) for f, r in zip(faults, results)], control


def _equivalent(fault: Fault, r: FaultResult, control: tuple[tuple[str, CaseRun], ...]) -> FaultResult:
    """A survivor whose every case has the control's forward digest is an equivalent mutant (step 5)."""
    if r.status != "survived" or fault.kind != "mutation" or not r.runs:
        return r
    ctl = {(k, c.case): c.digest for k, c in control}
    if all(run.digest and ctl.get((fault.impl_key, run.case)) == run.digest for run in r.runs):
        n = len(r.runs)
        why = f"forward outputs bitwise equal to the unmutated kernels' on {n} case{'s' * (n > 1)}"
        return dataclasses.replace(r, status="equivalent", message=why)
    return r
