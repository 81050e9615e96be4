"""Ahead-of-time compile matrix: every kernel for CUDA sm80/sm90/sm100 and ROCm gfx90a/gfx942/gfx950, on the CPU.

    records = run_matrix(targets=None, full=False, out=None, jobs=1)
      scenarios = aot_plan.scenarios(tier, targets)          # table rows, heuristic choices, fp8 checks
      jobs      = aot_plan.plan(scenarios)                    # subprocess: captured launches, deduplicated
      results   = aot_worker in `jobs` processes             # fresh cache + fake active driver per compile
      records   = [classify(job, result)]                    # compiled | expected_rejection | fail

    per record          kernel, target, dtype, config (constexprs, num_warps, num_stages), origins
                        shared bytes vs the target limit (over: Fail, the config would not load),
                        registers and spill bytes, matrix instructions found (a GEMM without: Fail)

`compile_section(records)` is the "compile" section of the certification report, `summary_table(records)` the
rich table (per target: shared memory and registers of each kernel's config chosen for the presets), and
`moe-cts compile` (cli/compile.py) drives it with a progress bar. A compiler crash or hang is a Fail of that
job, never a crash of the run. `python -m moe_cts.conformance.aot.cubin` proves the AOT path on a GPU (aot/cubin.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from moe_cts.conformance.aot import plan as aot_plan
from moe_cts.conformance.aot import registry_ref
from moe_cts.conformance.aot.records import COMPILED, EXPECTED_REJECTION, FAIL, AotRecord, config_label
from moe_cts.conformance.aot.report import compile_section, render_text

ROOT = Path(__file__).resolve().parents[2]  # the checkout (or site-packages) above moe_cts
#: A compile that takes longer is killed and recorded as a Fail (the slowest seen: ~20 s, chunk_scatter).
JOB_TIMEOUT_S = 600.0


# ----------------------------------------------------------------------------------------------------------
# Classification (pure: tested without compiling)


def fp8_flavour(targets_data: dict[str, Any], dtype: str, target: str) -> str | None:
    row = targets_data["fp8_flavours"].get(dtype)
    return None if row is None else row[target]


def _scalar_ok(targets_data: dict[str, Any], backend: str, dtype: str, flavour: str | None) -> bool:
    if flavour == "emulated_scalar":
        return True
    return any(e["backend"] == backend and e["dtype"] == dtype for e in targets_data["scalar_ok"])


def classify(job: dict[str, Any], result: dict[str, Any], targets_data: dict[str, Any]) -> AotRecord:
    # The registry imports moe_cts.kernels and so triton; this parent process only reads its table, while the
    # workers import triton under a fake driver per target: keep triton out of the parent until needed.
    KERNELS = registry_ref.registry().KERNELS

    tname, target = job["target_name"], targets_data["targets"][job["target_name"]]
    flavour = fp8_flavour(targets_data, job["dtype"], tname)
    info = KERNELS.get(job["kernel"])
    matrix_required = bool(info and info.matrix) and not _scalar_ok(
        targets_data, target["backend"], job["dtype"], flavour
    )
    base = dict(
        kernel=job["kernel"],
        target=tname,
        dtype=job["dtype"],
        config=job["config"],
        origins=tuple(job["origins"]),
        presets=tuple(job.get("presets", ())),
        shared_limit=target["shared_limit_bytes"],
        matrix_required=matrix_required,
        seconds=round(result.get("seconds", 0.0), 3),
        cpu_seconds=round(result.get("cpu_seconds", 0.0), 3),
    )
    if not result.get("ok"):
        error = result.get("error", "no result")
        if flavour == "rejected":
            return AotRecord(
                **base,
                status=EXPECTED_REJECTION,
                reason=f"{job['dtype']} is not supported on {tname}: {error}",
            )
        return AotRecord(**base, status=FAIL, reason=error)
    shared = result["shared"] + result.get("static_shared", 0)
    measured = dict(
        shared_bytes=shared,
        registers=result.get("registers"),
        spill_bytes=result.get("spill_bytes"),
        matrix_found=tuple(result.get("matrix_found", ())),
        extra={
            k: result[k]
            for k in ("sgprs", "agprs", "stack_bytes", "triton", "ptxas_registers", "ptxas_notes")
            if k in result
        },
    )
    reasons = []
    if flavour == "rejected":
        reasons.append(
            f"the fp8 table says {job['dtype']} is rejected on {tname}, but it compiled: update aot_targets.json"
        )
    if shared > target["shared_limit_bytes"]:
        reasons.append(
            f"shared memory {shared} B > {target['shared_limit_bytes']} B per block: would not load on {tname}"
        )
    if matrix_required and not measured["matrix_found"]:
        want = "/".join(target["matrix_patterns"].values())
        reasons.append(f"scalar fallback: no matrix instruction ({want}) in the {target['asm']}")
    status = FAIL if reasons else COMPILED
    return AotRecord(**base, **measured, status=status, reason="; ".join(reasons))


# ----------------------------------------------------------------------------------------------------------
# Running the plan and the workers in subprocesses (no TRITON_INTERPRET there)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def plan_jobs(scenarios: list[aot_plan.Scenario]) -> list[dict[str, Any]]:
    """Capture and deduplicate the compile jobs (aot_plan.plan) in one subprocess: its imports (torch,
    triton, and torch._dynamo that meta-tensor ops pull in) cost ~13 s, more than all the captures."""
    targets = [t for t in aot_plan.target_names() if any(t in s.targets for s in scenarios)]
    with tempfile.TemporaryDirectory(prefix="moe-cts-plan-") as d:
        src, dst = Path(d) / "scenarios.json", Path(d) / "jobs.json"
        src.write_text(json.dumps([s.to_json() for s in scenarios]))
        proc = subprocess.run(
            [sys.executable, "-m", "moe_cts.conformance.aot.plan", str(src), ",".join(targets), str(dst)],
            env=_child_env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"AOT planning failed (capturing the launches):\n{proc.stderr[-3000:]}")
        jobs = json.loads(dst.read_text())
    for i, job in enumerate(jobs):
        job["id"] = i
    return jobs


class Progress(Protocol):
    """What run_matrix tells its caller while it compiles (the CLI's progress bar)."""

    def planned(self, n: int) -> None: ...

    def advance(self, k: int) -> None: ...


class _Silent:
    def planned(self, n: int) -> None:
        pass

    def advance(self, k: int) -> None:
        pass


def _run_shard(
    shard: list[dict[str, Any]],
    keep_dir: str | None,
    timeout_s: float,
    progress: Progress,
    cancel: threading.Event | None = None,
) -> dict[int, dict[str, Any]]:
    """Run one worker over `shard`; if it dies or hangs, the job in flight is a Fail and a new worker
    takes the rest. Once `cancel` is set the worker is killed and the jobs left are Fails ("cancelled")."""
    results: dict[int, dict[str, Any]] = {}
    pending = list(shard)
    with tempfile.TemporaryDirectory(prefix="moe-cts-aot-shard-") as d:
        while pending and not (cancel is not None and cancel.is_set()):
            jobs_file, out_file = Path(d) / "jobs.json", Path(d) / "results.jsonl"
            jobs_file.write_text(json.dumps(pending))
            out_file.write_text("")
            cmd = [sys.executable, "-m", "moe_cts.conformance.aot.worker", str(jobs_file), str(out_file)]
            proc = subprocess.Popen(
                cmd + ([keep_dir] if keep_dir else []),
                env=_child_env(),
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            died = _wait(proc, out_file, timeout_s, progress, cancel)
            done = [json.loads(line) for line in out_file.read_text().splitlines() if line.strip()]
            results.update({r["id"]: r for r in done})
            pending = pending[len(done) :]
            if pending and died:
                victim = pending.pop(0)
                results[victim["id"]] = {"id": victim["id"], "ok": False, "error": died}
                progress.advance(1)
            elif pending:  # exited cleanly without finishing: nothing more to learn by retrying
                for job in pending:
                    results[job["id"]] = {"id": job["id"], "ok": False, "error": "worker exited early"}
                progress.advance(len(pending))
                pending = []
    for job in pending:  # cancelled
        results[job["id"]] = {"id": job["id"], "ok": False, "error": "cancelled"}
    return results


def _wait(
    proc: subprocess.Popen,
    out_file: Path,
    timeout_s: float,
    progress: Progress,
    cancel: threading.Event | None = None,
) -> str | None:
    """None when the worker finished; else why the job in flight failed (crash, timeout, cancel)."""
    seen, since = 0, time.monotonic()
    while True:
        try:
            proc.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            if cancel is not None and cancel.is_set():
                proc.kill()
                proc.wait()
                return "cancelled"
            lines = out_file.read_text().count("\n")
            if lines != seen:
                progress.advance(lines - seen)
                seen, since = lines, time.monotonic()
            elif time.monotonic() - since > timeout_s:
                proc.kill()
                proc.wait()
                return f"compile timed out after {timeout_s:.0f} s"
    progress.advance(out_file.read_text().count("\n") - seen)
    stderr = (proc.stderr.read() if proc.stderr else "").strip().splitlines()
    if proc.returncode == 0:
        return None
    tail = stderr[-1][:300] if stderr else ""
    return f"compiler process died (exit code {proc.returncode}){': ' + tail if tail else ''}"


def run_jobs(
    jobs: list[dict[str, Any]],
    n_workers: int = 1,
    keep_dir: str | None = None,
    timeout_s: float = JOB_TIMEOUT_S,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> dict[int, dict[str, Any]]:
    n = max(1, min(n_workers, len(jobs)))
    # Interleave by kernel so that the slow ones (big GEMM tiles, chunk_scatter) spread over the workers.
    ordered = sorted(jobs, key=lambda j: (j["kernel"], j["target_name"], j["id"]))
    shards = [ordered[i::n] for i in range(n)]
    results: dict[int, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=n) as pool:
        for part in pool.map(
            lambda s: _run_shard(s, keep_dir, timeout_s, progress or _Silent(), cancel), shards
        ):
            results.update(part)
    return results


def run_scenarios(
    scenarios: list[aot_plan.Scenario],
    jobs: int = 1,
    keep_dir: str | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> list[AotRecord]:
    planned = plan_jobs(scenarios)
    if progress is not None:
        progress.planned(len(planned))
    results = run_jobs(planned, jobs, keep_dir, progress=progress, cancel=cancel)
    targets_data = aot_plan.load_targets()
    return [classify(job, results[job["id"]], targets_data) for job in planned]


def parse_targets(targets: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    known = aot_plan.target_names()
    if targets is None or targets == "all":
        return known
    names = tuple(t.strip() for t in targets.split(",")) if isinstance(targets, str) else tuple(targets)
    unknown = [t for t in names if t not in known]
    if unknown or not names:
        raise ValueError(
            f"targets: expected 'all' or a comma-separated subset of {', '.join(known)}, got {targets!r}"
        )
    return names


def run_matrix(
    targets: str | list[str] | tuple[str, ...] | None = None,
    full: bool = False,
    out: Path | str | None = None,
    jobs: int = 1,
    tier: str | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> list[AotRecord]:
    """Compile the tier (default, or full with full=True; tier='tables' guards the config tables) for the
    targets; with `out`, write out/compile.json (the report section) and out/summary.txt. Setting `cancel`
    stops the compiler processes (certify's interrupted run: its records are then not used)."""
    names = parse_targets(targets)
    start = time.perf_counter()
    records = run_scenarios(
        aot_plan.scenarios(tier or ("full" if full else "default"), names),
        jobs,
        progress=progress,
        cancel=cancel,
    )
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        section = compile_section(records)
        section["wall_seconds"] = round(time.perf_counter() - start, 1)
        section["tier"] = tier or ("full" if full else "default")
        (out / "compile.json").write_text(json.dumps(section, indent=1))
        (out / "summary.txt").write_text(render_text(records))
    return records


__all__ = ["COMPILED", "EXPECTED_REJECTION", "FAIL", "AotRecord", "compile_section", "config_label"]
