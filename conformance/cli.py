"""moe-cts: certify a machine's MoE kernels, and check, replay and merge the results.

    moe-cts certify [--device auto|cuda:N|hip:N|interpreter] [--devices all|LIST] [--impl triton]
                    [--profile smoke|quick|full] [--out DIR] [--jobs N] [--timeout S]
                    [--compile auto|none|all|sm90,gfx942,...]
    moe-cts list [--profile P] [--device D]        device matrix, implementations, cases of a profile
    moe-cts replay CASE_ID_OR_DIR                  re-run one case: stage verdicts, worst elements
    moe-cts verify CERT                            why a certificate.tgz is (not) valid
    moe-cts merge REPORT... --out DIR              fleet report of several report.json
    moe-cts compile ...                            ahead-of-time compile matrix (conformance.aot)

Exit codes: 0 conformant / valid, 1 not conformant / not valid (also an interrupted run), 2 usage error or a
void run (InternalError, a shard that never started).
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from conformance import shard as shardmod

app = typer.Typer(
    name="moe-cts",
    help="Conformance test suite for fused MoE kernels: certify, list, replay, verify, merge, compile.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

#: Outputs of a previous run in --out that certify replaces (nothing else there is touched).
OUTPUTS = ("shards", "failures", "report.json", "report.html", "junit.xml", "certificate.tgz")
#: Tensors are captured for at most this many failures per run (each costs a re-run in a subprocess).
MAX_CAPTURED_FAILURES = 20
INTERRUPT_GRACE_S = 15.0


class Profile(str, enum.Enum):
    smoke = "smoke"
    quick = "quick"
    full = "full"


def usage_error(msg: str) -> typer.Exit:
    err.print(f"moe-cts: {msg}", markup=False, soft_wrap=True)
    return typer.Exit(2)


# ----------------------------------------------------------------------------------------------- certify
def _check_devices(names: list[str]) -> list[str]:
    """Resolve "auto" and check every device exists, before any subprocess starts (exit 2 otherwise)."""
    from conformance.devices import select_device

    out = []
    for n in names:
        try:
            d = select_device(n)
        except ValueError as e:
            raise usage_error(f"{e}.") from None
        out.append("interpreter" if d.backend == "interpreter" else f"{d.backend}:{d.index}")
    return out


def _check_impl(impl: str) -> None:
    from conformance.plugin import load_implementation

    try:
        load_implementation(impl)
    except (ValueError, ImportError, AttributeError) as e:
        raise usage_error(f"unknown implementation {impl!r}: {e}") from None


def _clear_outputs(out: Path) -> None:
    for name in OUTPUTS:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _progress_counts(shard_dir: Path) -> tuple[int, int, int, int | None]:
    """(done, passed, failed, planned) from the shard's JSONL files and run.json."""
    from conformance.report.log import iter_events
    from conformance.results import Outcome

    done = passed = failed = 0
    for ev in iter_events(shard_dir):
        if ev["event"] == "result":
            done += 1
            if Outcome(ev["result"]["outcome"]).conformant:
                passed += 1
            else:
                failed += 1
    planned = None
    run = shard_dir / "run.json"
    if run.exists():
        try:
            planned = json.loads(run.read_text())["planned"]
        except (json.JSONDecodeError, KeyError):
            planned = None
    return done, passed, failed, planned


def _run_shards(shards, out: Path, cmds: list[list[str]]) -> bool:
    """Start one pytest process per shard, show progress until all end. Returns True when interrupted."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    procs = []
    for sh, cmd in zip(shards, cmds):
        d = sh.directory(out)
        d.mkdir(parents=True, exist_ok=True)
        (d / "command.txt").write_text(" ".join(cmd) + "\n")
        log = open(d / "pytest.log", "w")  # noqa: SIM115 -- closed after the process ends
        # Own session: the shard (and its xdist workers) is stopped as a group, and only on our signal.
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        (d / "pid").write_text(str(p.pid))
        procs.append((sh, d, p, log))
    interrupted = False
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("[green]{task.fields[passed]} pass[/] [red]{task.fields[failed]} fail[/]"),
        TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
    )  # fmt: skip
    with Progress(*columns, console=console, transient=False) as progress:
        tasks = {sh.label: progress.add_task(sh.label, total=None, passed=0, failed=0) for sh in shards}
        try:
            while True:
                running = [p for _, _, p, _ in procs if p.poll() is None]
                for sh, d, p, _ in procs:
                    done, ok, bad, planned = _progress_counts(d)
                    total = planned if p.poll() is None else done
                    state = "" if p.poll() is None else " (ended)"
                    progress.update(tasks[sh.label], completed=done, total=max(total or 0, done) or None,
                                    passed=ok, failed=bad, description=f"{sh.label}{state}")
                if not running:
                    break
                time.sleep(0.5)
        except KeyboardInterrupt:
            interrupted = True
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
    """failures/<case>/ for every non-conformant case; tensors (re-run in a subprocess) for the first few."""
    from conformance.replay import write_failure_dir

    n = 0
    for dev in report["devices"]:
        for c in dev["cases"]:
            if c["conformant"]:
                continue
            root = out / "failures" / (dev["label"] if len(report["devices"]) > 1 else "")
            d = write_failure_dir(root, c, impl=report["run"]["impl"], device=dev["device_arg"])
            if n >= MAX_CAPTURED_FAILURES:
                continue
            n += 1
            extra = ["inputs-only"] if c["outcome"] in ("crash", "timeout") else []
            cmd = [sys.executable, "-m", "conformance.replay", "capture", str(d), c["case_id"],
                   report["run"]["impl"], dev["device_arg"], *extra]  # fmt: skip
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
                if r.returncode != 0:
                    (d / "capture-error.txt").write_text(r.stdout + r.stderr)
            except subprocess.TimeoutExpired:
                (d / "capture-error.txt").write_text("capturing the tensors exceeded 300 s\n")


def _summary_table(report: dict) -> Table:
    from conformance.report.schema import summary_matrix

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
    from conformance.report.compile import print_compile
    from conformance.report.html import VERDICT_TEXT

    console.print(_summary_table(report))
    for d in report["devices"]:
        why = f": {'; '.join(d['reasons'])}" if d["reasons"] else ""
        console.print(f"{d['label']}: {VERDICT_TEXT[d['verdict']]}{why}", markup=False)
        for c in d["cases"]:
            if not c["conformant"]:
                stage = f" at stage {c['failing_stage']}" if c["failing_stage"] else ""
                console.print(f"  {c['outcome']}{stage}: {c['params'].get('name') or ''} {c['message']}",
                              markup=False)
                console.print(f"    replay: {c['replay']}", markup=False, soft_wrap=True)
    print_compile(console, report.get("compile"))
    style = {"conformant": "bold green", "not_conformant": "bold red"}.get(report["verdict"]["node"], "bold yellow")
    console.print(f"verdict: {VERDICT_TEXT[report['verdict']['node']]}", style=style)
    console.print(f"report: {out / 'report.html'}", markup=False)


@app.command()
def certify(
    device: Annotated[str, typer.Option(help="auto | cuda:N | hip:N | interpreter")] = "auto",
    devices: Annotated[str | None, typer.Option(help="all, or a list such as cuda:0,cuda:1: one shard per device")] = None,
    impl: Annotated[str, typer.Option(help="implementation under test (moe-cts list shows them)")] = "triton",
    profile: Annotated[Profile | None, typer.Option(help="smoke | quick | full; default smoke on the interpreter, quick on a GPU")] = None,
    out: Annotated[Path, typer.Option(help="output directory")] = Path("moe-cts-out"),
    jobs: Annotated[int | None, typer.Option(min=1, help="pytest-xdist workers per device (default: CPUs / devices on the interpreter, 2 on a GPU)")] = None,
    timeout: Annotated[float | None, typer.Option(min=0.0, help="per-case time limit in seconds (0: none)")] = None,
    examples: Annotated[int | None, typer.Option(min=0, help="generated cases per device (default: the profile's)")] = None,
    cases: Annotated[str | None, typer.Option(help="run only these comma-separated must-pass case ids (no certificate)")] = None,
    compile_spec: Annotated[str, typer.Option("--compile", help="AOT compile tier after the cases: auto (the device's own architecture if it is a target; nothing on the interpreter) | none | all | sm80,sm90,sm100,gfx90a,gfx942,gfx950")] = "auto",
) -> None:  # fmt: skip
    """Run the must-pass list and the generated cases of a profile, then the AOT compile tier (--compile);
    write report.json, report.html, junit.xml, failures/ and certificate.tgz to OUT.
    Exit 0 conformant, 1 not (a case or a compile Fail), 2 usage error or void run."""
    from conformance.certificate import pack
    from conformance.report.compile import CompileSpecError, compile_targets
    from conformance.report.html import write_html
    from conformance.report.junit import write_junit
    from conformance.report.schema import EXIT_CODES, build_report, write_report

    try:
        names = shardmod.resolve_devices(device, devices)
    except shardmod.DeviceListError as e:
        raise usage_error(str(e)) from None
    names = _check_devices(names)
    _check_impl(impl)
    try:
        targets = compile_targets(compile_spec, names)
    except CompileSpecError as e:
        raise usage_error(str(e)) from None
    shards = shardmod.make_shards(names)
    on_gpu = any(n != "interpreter" for n in names)
    prof = profile.value if profile else ("quick" if on_gpu else "smoke")
    jobs = jobs or (2 if on_gpu else max(1, (os.cpu_count() or 1) // len(shards)))
    out.mkdir(parents=True, exist_ok=True)
    _clear_outputs(out)
    cmds = [
        shardmod.pytest_command(sh, out, impl=impl, profile=prof, jobs=jobs, timeout_s=timeout,
                                examples=examples, cases=cases)
        for sh in shards
    ]  # fmt: skip
    console.print(f"moe-cts certify: impl {impl}, profile {prof}, devices {', '.join(names)}, {jobs} job(s) each")
    started = time.time()
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)  # a scheduler's SIGTERM: partial report too
    try:
        interrupted = _run_shards(shards, out, cmds)
        section = None if interrupted or not targets else _run_compile(targets, jobs)
    except KeyboardInterrupt:  # during the compile tier: the cases are done, the report is partial
        interrupted, section = True, None
    finally:
        signal.signal(signal.SIGTERM, previous)
    report = build_report([sh.directory(out) for sh in shards], partial=interrupted, command=sys.argv,
                          started=started, compile_section=section)  # fmt: skip
    report["run"]["subset"] = bool(cases)
    report["run"]["compile"] = {"requested": compile_spec, "targets": list(targets)}
    write_report(report, out)
    write_html(report, out)
    write_junit(report, out)
    if not interrupted:
        _capture_failures(report, out)
        pack(out)
    for d in report["devices"]:
        if d["verdict"] == "void" and not d["cases"]:
            log = out / "shards" / d["label"] / "pytest.log"
            tail = log.read_text()[-3000:] if log.exists() else ""
            err.print(f"shard {d['label']} produced no results; end of its pytest log:\n{tail}", markup=False)
    _print_verdict(report, out)
    raise typer.Exit(EXIT_CODES[report["verdict"]["node"]])


def _run_compile(targets: tuple[str, ...], jobs: int) -> dict:
    from conformance.report.compile import run_compile

    with console.status(f"compiling the AOT default tier for {', '.join(targets)} with {jobs} process(es)"):
        return run_compile(targets, jobs)


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


# ----------------------------------------------------------------------------------------------- list
@app.command("list")
def list_(
    profile: Annotated[Profile, typer.Option(help="whose must-pass cases to list")] = Profile.smoke,
    device: Annotated[str, typer.Option(help="the device whose cases to list")] = "auto",
) -> None:
    """Show the device matrix, the implementations found, and the must-pass cases of a profile."""
    from conformance.cases import must_pass_profiles
    from conformance.devices import load_matrix, select_device
    from conformance.impl import available_implementations
    from conformance.plugin import must_pass_for

    try:
        dev = select_device(device)
    except ValueError as e:
        raise usage_error(f"{e}.") from None
    t = Table(title="device matrix")
    for col in ("backend", "arch", "details"):
        t.add_column(col)
    for row in load_matrix()["entries"]:
        rest = {k: v for k, v in row.items() if k not in ("backend", "arch")}
        t.add_row(str(row.get("backend")), str(row.get("arch")), json.dumps(rest, default=str)[:160])
    console.print(t)
    console.print(f"this machine: {dev}", markup=False)
    console.print("implementations: " + ", ".join(sorted(available_implementations())), markup=False)
    cases = must_pass_for(profile.value, dev.backend)
    t = Table(title=f"must-pass cases of profile {profile.value} on {dev.backend} ({len(cases)})")
    for col in ("name", "profiles", "case", "case id"):
        t.add_column(col, overflow="fold")
    for c in cases:
        t.add_row(c.name, ",".join(must_pass_profiles(c)), str(c), c.case_id)
    console.print(t)


# ----------------------------------------------------------------------------------------------- replay
@app.command()
def replay(
    case: Annotated[str, typer.Argument(help="a case id, or a failures/<case>/ directory of a report")],
    impl: Annotated[str | None, typer.Option(help="implementation (default: the failure's, else triton)")] = None,
    device: Annotated[str | None, typer.Option(help="device (default: the failure's, else auto)")] = None,
    timeout: Annotated[float | None, typer.Option(min=0.0, help="time limit in seconds")] = None,
) -> None:
    """Re-run one case; print its stage verdicts and worst elements. Exit 0 conformant, 1 not, 2 void."""
    from conformance.replay import replay as run_replay

    case_id, saved_impl, saved_device = case, None, None
    if _is_dir(case):
        meta_path = Path(case) / "case.json"
        if not meta_path.exists():
            raise usage_error(f"{case} has no case.json: give a case id or a failures/<case>/ directory.")
        meta = json.loads(meta_path.read_text())
        case_id, saved_impl, saved_device = meta["case_id"], meta.get("impl"), meta.get("device")
    impl = impl or saved_impl or "triton"
    device = device or saved_device or "auto"
    from conformance.cases import Case

    try:
        Case.from_id(case_id)
    except ValueError as e:
        raise usage_error(str(e)) from None
    _check_devices([device])
    _check_impl(impl)
    result = run_replay(case_id, impl, device, timeout_s=timeout)
    _print_result(result)
    raise typer.Exit(0 if result.outcome.conformant else 2 if result.outcome.value == "internal_error" else 1)


def _is_dir(arg: str) -> bool:
    try:
        return Path(arg).is_dir()
    except OSError:  # a case id is longer than a file name may be
        return False


def _print_result(result) -> None:
    t = Table(title=f"{result.case_id[:60]}... on {result.device or '?'} ({result.impl})")
    for col in ("stage", "outcome", "max ratio", "p99 ratio", "rms ratio", "bias z", "message"):
        t.add_column(col, overflow="fold")
    for s in result.stages:
        f = lambda v: "" if v is None else f"{v:.3g}"
        t.add_row(s.stage, s.outcome.value, f(s.max_ratio), f(s.p99_ratio), f(s.rms_ratio), f(s.bias_z), s.message)
    console.print(t)
    for s in result.stages:
        if s.worst and not s.outcome.conformant:
            console.print(f"worst elements of {s.stage}:", markup=False)
            for w in s.worst[:8]:
                console.print(f"  {json.dumps(w, default=str)}", markup=False)
    stage = f" at stage {result.failing_stage}" if result.failing_stage else ""
    console.print(f"result: {result.outcome.value}{stage} {result.message}", markup=False)


# ----------------------------------------------------------------------------------------------- verify, merge
@app.command()
def verify(
    cert: Annotated[Path, typer.Argument(help="certificate.tgz written by certify")],
    allow_dirty: Annotated[bool, typer.Option(help="accept a run from a git tree with uncommitted changes (development only)")] = False,
) -> None:  # fmt: skip
    """Check a certificate: exact file list, SHA-256 manifest, every must-pass case once with an allowed
    result, hashes of this installation, released or clean suite. Exit 0 valid, 1 not valid."""
    from conformance.certificate import verify as run_verify

    if not cert.is_file():
        raise usage_error(f"{cert} is not a file.")
    problems = run_verify(cert, allow_dirty=allow_dirty)
    if problems:
        console.print(f"{cert}: NOT VALID", style="bold red")
        for p in problems:
            console.print(f"  - {p}", markup=False)
        raise typer.Exit(1)
    console.print(f"{cert}: valid", style="bold green")


@app.command()
def merge(
    reports: Annotated[list[Path], typer.Argument(help="report.json files (one per node or run)")],
    out: Annotated[Path, typer.Option(help="directory for fleet.json and fleet.html")] = Path("moe-cts-fleet"),
) -> None:
    """Merge reports into a fleet report with per-device verdicts and a cross-device comparison.
    Exit 0 when every device is conformant and no device differs from its siblings, else 1."""
    from conformance.merge import MergeError, merge_reports, write_fleet

    try:
        fleet = merge_reports(reports)
    except MergeError as e:
        raise usage_error(str(e)) from None
    j, h = write_fleet(fleet, out)
    for d in fleet["devices"]:
        flag = f", differs from its siblings on {d['flagged_cases']} case(s)" if d["flagged_cases"] else ""
        console.print(f"{d['id']} [{d['model']}]: {d['verdict']}{flag}", markup=False)
    for w in fleet["warnings"]:
        console.print(f"warning: {w}", markup=False)
    console.print(f"fleet: {fleet['verdict']['fleet']}; {j} {h}", markup=False)
    ok = fleet["verdict"]["fleet"] == "conformant" and not fleet["comparison"]
    raise typer.Exit(0 if ok else 1)


# ----------------------------------------------------------------------------------------------- compile
@app.command(
    "compile",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def compile_(ctx: typer.Context) -> None:
    """Ahead-of-time compile matrix of the kernels for GPU targets (conformance.aot; --help for its options)."""
    try:
        from conformance.aot import compile_command
    except ImportError as e:
        raise usage_error(f"the compile command is not available in this installation ({e}).") from None
    sub = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    sub.command()(compile_command)
    sub(args=list(ctx.args), prog_name="moe-cts compile")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
