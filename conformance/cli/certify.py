"""`moe-cts certify`: one pytest shard per device with live progress, then the report, the HTML page, JUnit,
failure directories and the certificate (see docs/certify.md)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from moe_cts.conformance.aot import registry_ref
from moe_cts.conformance.cli.common import (
    Profile,
    check_devices,
    check_impl,
    check_out_dir,
    console,
    err,
    usage_error,
)
from moe_cts.conformance.engine import candidate
from moe_cts.conformance.engine.devices import THREAD_VARS, select_device
from moe_cts.conformance.engine.log import iter_events
from moe_cts.conformance.engine.must_pass import must_pass_cases, must_pass_for
from moe_cts.conformance.engine.results import Outcome
from moe_cts.conformance.harness import shard as shardmod
from moe_cts.conformance.harness.capture import CaptureTask, capture_all
from moe_cts.conformance.harness.replay import write_failure_dir
from moe_cts.conformance.report.certificate import pack
from moe_cts.conformance.report.compile import (
    CompileSpecError,
    compile_targets,
    kernel_registry_of,
    not_applicable,
    print_compile,
    run_compile,
)
from moe_cts.conformance.report.coverage import coverage_line
from moe_cts.conformance.report.html import VERDICT_TEXT, write_html
from moe_cts.conformance.report.junit import write_junit
from moe_cts.conformance.report.schema import EXIT_CODES, build_report, summary_matrix, write_report

#: Outputs of a previous run in --out that certify replaces (nothing else there is touched).
OUTPUTS = ("shards", "failures", "report.json", "report.html", "junit.xml", "certificate.tgz", "table.json")
#: Tensors are captured for at most this many failures per run (each costs a re-run in a subprocess).
MAX_CAPTURED_FAILURES = 20
INTERRUPT_GRACE_S = 15.0
#: A run is also void when it is below its coverage minimum, not only on an internal error.
_TEXT = {**VERDICT_TEXT, "void": "VOID: the run says nothing about the implementation"}
#: pytest-xdist workers per GPU when --jobs is not given: one per CPU of the device's share, at least 2 and at most
#: GPU_JOBS_MAX, and one per GPU_GIB_PER_WORKER of the smallest certified GPU's memory. A GPU run waits on the
#: host's float64 judge (the full-size must-pass cases take 20-80 s of CPU each), so the workers parallelize
#: the judge. 10 is the most measured on one GPU: an H200 host (16 CPUs, 139 GiB) ran the quick profile in
#: 120-166 s with 10 workers (docs/h200.md, sessions 19-21). The schedule starts the largest cases together; by
#: their tensor sizes the int32-offsets case (T = 310,000) holds about 35 GB on the device and the others a few
#: GB each, so 13 GiB a worker keeps the H200's 10 and gives 6 on an 80 GB card.
GPU_JOBS_MAX = 10
GPU_GIB_PER_WORKER = 13


def default_jobs(on_gpu: bool, devices: int, cpus: int | None = None, device_gib: float | None = None) -> int:
    """Workers per device without --jobs: CPUs / devices; on a GPU also at most GPU_JOBS_MAX and one per
    GPU_GIB_PER_WORKER of `device_gib` (the smallest certified GPU's memory), and at least 2."""
    per_device = max(1, (cpus if cpus is not None else os.cpu_count() or 1) // max(1, devices))
    if not on_gpu:
        return per_device
    cap = GPU_JOBS_MAX if device_gib is None else min(GPU_JOBS_MAX, int(device_gib // GPU_GIB_PER_WORKER))
    return max(2, min(per_device, cap))


def smallest_gpu_gib(names: list[str]) -> float | None:
    """Memory of the smallest GPU among the certified devices (GiB), None without a GPU."""
    gpus = [d for d in map(select_device, names) if d.is_gpu]
    if not gpus:
        return None
    return min(torch.cuda.get_device_properties(d.index).total_memory for d in gpus) / 2**30


def _clear_outputs(out: Path) -> None:
    for name in OUTPUTS:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _progress_counts(shard_dir: Path) -> tuple[int, int, int, int | None]:
    """(done, passed, failed, planned) from the shard's JSONL files and run.json. NotSupported and Waived
    cases are done but neither passed nor failed (an all-waived run showed "24 pass")."""
    done = passed = failed = 0
    for ev in iter_events(shard_dir):
        if ev["event"] == "result":
            done += 1
            outcome = Outcome(ev["result"]["outcome"])
            if not outcome.conformant:
                failed += 1
            elif outcome not in (Outcome.NOT_SUPPORTED, Outcome.WAIVED):
                passed += 1
    planned = None
    run = shard_dir / "run.json"
    if run.exists():
        try:
            planned = json.loads(run.read_text())["planned"]
        except (json.JSONDecodeError, KeyError):
            planned = None
    return done, passed, failed, planned


def _worker_env(workers: int) -> dict[str, str]:
    """BLAS / OpenMP threads per pytest worker unless the user set them: jobs x shards workers, each with a pool
    per core, oversubscribe the host on the judge's float64 GEMMs; the thread count also moves the judge's last
    bits (docs/certify.md), so it is fixed per run and recorded in the report's environment."""
    threads = str(max(1, (os.cpu_count() or 1) // max(1, workers)))
    return {**{k: threads for k in THREAD_VARS}, **os.environ}


def _run_shards(shards, out: Path, cmds: list[list[str]], workers: int) -> bool:
    """Start one pytest process per shard, show progress until all end. Returns True when interrupted."""
    procs, env = [], _worker_env(workers)
    for sh, cmd in zip(shards, cmds):
        d = sh.directory(out)
        d.mkdir(parents=True, exist_ok=True)
        (d / "command.txt").write_text(" ".join(cmd) + "\n")
        log = open(d / "pytest.log", "w")  # noqa: SIM115 -- closed after the process ends
        # Own session: the shard (and its xdist workers) is stopped as a group, and only on our signal.
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        (d / "pid").write_text(str(p.pid))
        procs.append((sh, d, p, log))
    # SIGINT / SIGTERM only record themselves while the progress display runs, and the loop polls: a
    # KeyboardInterrupt raised at an arbitrary point inside rich's rendering could leave its refresh thread
    # waiting on a lock the main thread never releases (the suspected cause of a ctrl-c test that hung past
    # 120 s under load). A plain list, not a threading.Event: the handler must take no lock the interrupted
    # code might hold.
    stop: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, _: stop.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("[green]{task.fields[passed]} pass[/] [red]{task.fields[failed]} fail[/]"),
        TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
    )  # fmt: skip
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            tasks = {sh.label: progress.add_task(sh.label, total=None, passed=0, failed=0) for sh in shards}
            while not stop:
                running = [p for _, _, p, _ in procs if p.poll() is None]
                for sh, d, p, _ in procs:
                    done, ok, bad, planned = _progress_counts(d)
                    total = planned if p.poll() is None else done
                    state = "" if p.poll() is None else " (ended)"
                    progress.update(
                        tasks[sh.label],
                        completed=done,
                        total=max(total or 0, done) or None,
                        passed=ok,
                        failed=bad,
                        description=f"{sh.label}{state}",
                    )
                if not running:
                    break
                time.sleep(0.5)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    interrupted = bool(stop)
    if interrupted:
        console.print("interrupted: stopping the shards and writing a partial report")
        _stop(procs)
    for *_, log in procs:
        log.close()
    return interrupted


def _stop(procs) -> None:
    """SIGINT to every shard group (pytest stops cleanly), SIGKILL what is left after a grace period."""
    for _, _, p, _ in procs:
        if p.poll() is None:
            _signal_group(p, signal.SIGINT)
    deadline = time.time() + INTERRUPT_GRACE_S
    for _, _, p, _ in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            _signal_group(p, signal.SIGKILL)
            p.wait()


def _signal_group(p: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, sig)


def _capture_failures(report: dict, out: Path) -> None:
    """failures/<case>/ for every non-conformant case; tensors (re-run in one child process) for the first few."""
    tasks = []
    for dev in report["devices"]:
        for c in dev["cases"]:
            if c["conformant"]:
                continue
            root = out / "failures" / (dev["label"] if len(report["devices"]) > 1 else "")
            d = write_failure_dir(root, c, impl=report["run"]["impl"], device=dev["device_arg"])
            if len(tasks) < MAX_CAPTURED_FAILURES:
                outputs = c["outcome"] not in ("crash", "timeout")  # a crashing case: its inputs only
                tasks.append(
                    CaptureTask(str(d), c["case_id"], report["run"]["impl"], dev["device_arg"], outputs)
                )
    capture_all(tasks, timeout_s=300.0)


def _summary_table(report: dict) -> Table:
    m = summary_matrix(report)
    outcomes = sorted({o for c in m.values() for o in c})
    t = Table(title="stage x dtype x result")
    t.add_column("stage")
    t.add_column("dtype")
    for o in outcomes:
        t.add_column(o, justify="right")
    for (stage, dtype), counts in m.items():
        t.add_row(stage, dtype, *[str(counts.get(o, "")) for o in outcomes])
    return t


def _print_verdict(report: dict, out: Path) -> None:
    console.print(_summary_table(report))
    for d in report["devices"]:
        why = f": {'; '.join(d['reasons'])}" if d["reasons"] else ""
        console.print(f"{d['label']}: {_TEXT[d['verdict']]}{why}", markup=False)
        console.print(f"  {coverage_line(d['coverage'])}", markup=False)
        for c in d["cases"]:
            if not c["conformant"]:
                stage = f" at stage {c['failing_stage']}" if c["failing_stage"] else ""
                console.print(
                    f"  {c['outcome']}{stage}: {c['params'].get('name') or ''} {c['message']}", markup=False
                )
                console.print(f"    replay: {c['replay']}", markup=False, soft_wrap=True)
    print_compile(console, report.get("compile"))
    style = {"conformant": "bold green", "not_conformant": "bold red"}.get(
        report["verdict"]["node"], "bold yellow"
    )
    console.print(f"verdict: {_TEXT[report['verdict']['node']]}", style=style)
    if report["verdict"]["node"] == "void":
        console.print("no certificate written: a void run certifies nothing", markup=False)
    console.print(f"report: {out / 'report.html'}", markup=False)


def certify(
    device: Annotated[str, typer.Option(help="auto | cuda:N | hip:N | interpreter | cpu (PyTorch implementations)")] = "auto",
    devices: Annotated[str | None, typer.Option(help="all, or a list such as cuda:0,cuda:1: one shard per device")] = None,
    impl: Annotated[str, typer.Option(help="implementation under test (moe-cts list shows them)")] = "triton",
    profile: Annotated[Profile | None, typer.Option(help="smoke | quick | full; default smoke on the interpreter, quick on a GPU")] = None,
    out: Annotated[str, typer.Option(help="output directory (created; must be writable)")] = "moe-cts-out",
    jobs: Annotated[int | None, typer.Option(min=1, help="pytest-xdist workers per device (default: CPUs / devices; on a GPU 2-10, one per 13 GiB)")] = None,
    timeout: Annotated[float | None, typer.Option(min=0.0, help="per-case time limit in seconds (0: none)")] = None,
    examples: Annotated[int | None, typer.Option(min=0, help="generated cases per device (default: the profile's)")] = None,
    cases: Annotated[str | None, typer.Option(help="run only these comma-separated must-pass case ids (no certificate)")] = None,
    strict_ties: Annotated[bool, typer.Option("--strict-ties", help="one tie rule everywhere (batch invariance, RL rollouts): a tie broken differently from the lower-id rule is a Fail, not a CompatibilityWarning")] = False,
    compile_spec: Annotated[str, typer.Option("--compile", help="AOT compile tier beside the cases: auto (the device's own architecture if it is a target; nothing on the interpreter) | none | all | sm80,sm90,sm100,gfx90a,gfx942,gfx950")] = "auto",
    table: Annotated[str | None, typer.Option(help="certify a candidate tile table (JSON of kernels/configs/*.json; default $MOE_CTS_TABLE): the Triton kernels read it in place of the shipped table on the devices it names")] = None,
) -> None:  # fmt: skip
    """Run the must-pass list and the generated cases of a profile, then the AOT compile tier (--compile);
    write report.json, report.html, junit.xml, failures/ and certificate.tgz to OUT.
    Exit 0 conformant, 1 not (a case or a compile Fail), 2 usage error or void run."""
    out_dir = check_out_dir(out)
    try:
        names = shardmod.resolve_devices(device, devices)
    except shardmod.DeviceListError as e:
        raise usage_error(str(e)) from None
    names = check_devices(names)
    if (
        devices is not None
        and devices.strip() == "all"
        and names == ["interpreter"]
        and not shardmod.fake_devices()
    ):
        console.print(
            "--devices all: no GPU found, falling back to the Triton interpreter on the CPU", markup=False
        )
    loaded = check_impl(impl)
    try:
        cand = candidate.resolve(table, [select_device(n) for n in names], impl)
    except candidate.CandidateError as e:
        raise usage_error(str(e)) from None
    if cand is not None:
        cand.export()  # before the shards and the compile tier start: they inherit it
    try:
        targets = compile_targets(compile_spec, names)
    except CompileSpecError as e:
        raise usage_error(str(e)) from None
    shards = shardmod.make_shards(names)
    on_gpu = any(n not in ("interpreter", "cpu") for n in names)
    prof = profile.value if profile else ("quick" if on_gpu else "smoke")
    _check_cases(cases, prof, names)
    jobs = jobs or default_jobs(on_gpu, len(shards), device_gib=smallest_gpu_gib(names) if on_gpu else None)
    out = out_dir
    _clear_outputs(out)
    cmds = [
        shardmod.pytest_command(sh, out, impl=impl, profile=prof, jobs=jobs, timeout_s=timeout,
                                examples=examples, cases=cases, strict_ties=strict_ties)
        for sh in shards
    ]  # fmt: skip
    console.print(
        f"moe-cts certify: impl {impl}, profile {prof}, devices {', '.join(names)}, {jobs} job(s) each"
    )
    if cand is not None:
        console.print(f"candidate tile table: {cand.path} (sha256 {cand.sha256[:12]})", markup=False)
    compilers = compile_jobs(jobs * len(shards))
    if targets:
        console.print(f"compile tier: {', '.join(targets)}, {compilers} process(es) beside the cases")
    started = time.time()
    previous = signal.signal(
        signal.SIGTERM, _sigterm_as_interrupt
    )  # a scheduler's SIGTERM: partial report too
    tier = CompileBeside(impl, loaded, targets, compilers) if targets else None
    section = None
    try:
        interrupted = _run_shards(shards, out, cmds, jobs * len(shards))
        if tier is not None and not interrupted:
            section = tier.result()
    except KeyboardInterrupt:  # while the compile tier finishes: the cases are done, the report is partial
        interrupted, section = True, None
    finally:
        if tier is not None:
            if section is None:
                tier.cancel()
            tier.close()
        signal.signal(signal.SIGTERM, previous)
    report = build_report([sh.directory(out) for sh in shards], partial=interrupted, command=sys.argv,
                          started=started, compile_section=section)  # fmt: skip
    report["run"]["subset"] = bool(cases)
    report["run"]["compile"] = {"requested": compile_spec, "targets": list(targets)}
    if cand is not None:  # the certificate carries the table's bytes (verify recomputes the must-pass list)
        report["run"]["table"] = cand.record()
        (out / candidate.TABLE_FILE).write_bytes(cand.data)
    write_report(report, out)
    write_html(report, out)
    write_junit(report, out)
    if not interrupted:
        _capture_failures(report, out)
    if not interrupted and report["verdict"]["node"] != "void":  # a void run certifies nothing
        pack(out)
    for d in report["devices"]:
        if d["verdict"] == "void" and not d["cases"]:
            log = out / "shards" / d["label"] / "pytest.log"
            tail = log.read_text()[-3000:] if log.exists() else ""
            err.print(f"shard {d['label']} produced no results; end of its pytest log:\n{tail}", markup=False)
    _print_verdict(report, out)
    raise typer.Exit(EXIT_CODES[report["verdict"]["node"]])


def _check_cases(cases: str | None, profile: str, names: list[str]) -> None:
    """--cases must name must-pass cases of the profile that run on these devices (exit 2 before any shard
    starts): ids that match nothing would make a run of zero cases."""
    if cases is None:
        return
    ids = [i for i in cases.split(",") if i]
    known = {c.case_id for c in must_pass_cases(profile)} | {
        c.case_id for d in map(select_device, names) for c in must_pass_for(profile, d.backend, d.arch)
    }
    unknown = [i for i in ids if i not in known]
    if not ids or unknown:
        raise usage_error(
            f"--cases: {unknown[0] if unknown else repr(cases)} is not a must-pass case id of profile "
            f"{profile} (moe-cts list --profile {profile} shows them)"
        )


def compile_jobs(case_workers: int, cpus: int | None = None) -> int:
    """Compiler processes of the compile tier: the CPUs the case workers leave, at least one."""
    return max(1, (cpus if cpus is not None else os.cpu_count() or 1) - case_workers)


class CompileBeside:
    """The AOT compile tier (report section "compile") in a thread while the cases run, instead of after them.

    Why: on a GPU the case workers leave CPUs idle (the H200 host: 10 single-threaded workers on 16 CPUs), and
    the sm90 tier's ~100 compiles took 21-27 s of the quick profile's 120-166 s when they ran after the cases.
    The compiles touch neither the devices nor the cases' processes. The tier judges the implementation under
    test: its own kernel registry, or not applicable.

        tier = CompileBeside(impl, loaded, targets, processes)   # starts at once
        section = tier.result()                                  # waits for it after the cases
        tier.cancel()                                            # an interrupted run: the compilers stop
    """

    def __init__(self, impl: str, loaded: Any, targets: tuple[str, ...], processes: int) -> None:
        self.targets, self.processes = targets, processes
        self._cancel = threading.Event()
        self._section: dict | None = None
        self._error: BaseException | None = None
        self._env: contextlib.AbstractContextManager | None = None
        registry = kernel_registry_of(loaded)
        if registry is None:
            self._section = not_applicable(impl, targets)
            self._thread = None
            return
        # The registry reaches the compiler processes through the environment (aot/registry_ref.py). It is set
        # here, on the caller's thread, before the case shards are spawned: no thread then changes os.environ
        # while another copies it for a child process (the shards inherit the name; nothing there reads it).
        self._env = registry_ref.using(registry)
        self._env.__enter__()
        # daemon: an interrupted run must not wait for it at exit (cancel() stops its compiler processes)
        self._thread = threading.Thread(
            target=self._run, args=(registry,), name="moe-cts-compile", daemon=True
        )
        self._thread.start()

    def _run(self, registry: str) -> None:
        try:
            self._section = run_compile(self.targets, self.processes, registry, cancel=self._cancel)
        except BaseException as e:  # re-raised in result(), on the caller's thread
            self._error = e

    def result(self) -> dict:
        if self._thread is not None and self._thread.is_alive():
            with console.status(
                f"finishing the AOT default tier for {', '.join(self.targets)} ({self.processes} process(es))"
            ):
                self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._section is not None
        return self._section

    def cancel(self) -> None:
        self._cancel.set()

    def close(self) -> None:
        """Restore the environment (after result() or cancel())."""
        if self._env is not None:
            self._env.__exit__(None, None, None)
            self._env = None


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt
