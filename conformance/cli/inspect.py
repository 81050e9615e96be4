"""`moe-cts list`, `replay`, `verify` and `merge`: look at what a run did, and re-run one case."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from moe_cts.conformance.cli.common import (
    Profile,
    check_devices,
    check_impl,
    console,
    device_error,
    usage_error,
)
from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.devices import load_matrix, select_device
from moe_cts.conformance.engine.must_pass import must_pass_for, must_pass_profiles
from moe_cts.conformance.engine.session import REPLAY_ENV
from moe_cts.conformance.harness.replay import replay as run_replay
from moe_cts.conformance.impls.validate import summary, survey
from moe_cts.conformance.report.certificate import verify as run_verify
from moe_cts.conformance.report.fleet import MergeError, merge_reports, write_fleet


def list_(
    profile: Annotated[Profile, typer.Option(help="whose must-pass cases to list")] = Profile.smoke,
    device: Annotated[str, typer.Option(help="the device whose cases to list")] = "auto",
) -> None:
    """Show the device matrix, the implementations found, and the must-pass cases of a profile."""
    try:
        dev = select_device(device)
    except ValueError as e:
        raise usage_error(device_error(e)) from None
    t = Table(title="device matrix")
    for col in ("backend", "arch", "details"):
        t.add_column(col)
    for row in load_matrix()["entries"]:
        rest = {k: v for k, v in row.items() if k not in ("backend", "arch")}
        t.add_row(str(row.get("backend")), str(row.get("arch")), json.dumps(rest, default=str)[:160])
    console.print(t)
    console.print(f"this machine: {dev}", markup=False)
    _print_implementations()
    cases = must_pass_for(profile.value, dev.backend, dev.arch)
    t = Table(title=f"must-pass cases of profile {profile.value} on {dev.backend} ({len(cases)})")
    for col in ("name", "profiles", "case"):
        t.add_column(col, overflow="fold")
    for c in cases:
        t.add_row(c.name, ",".join(must_pass_profiles(c)), str(c))
    console.print(t)
    # Case ids go on lines of their own, never folded inside a table cell: they are copied into `replay`.
    console.print("case ids:", markup=False)
    for c in cases:
        console.print(f"{c.name} {c.case_id}", markup=False, soft_wrap=True)


def _print_implementations() -> None:
    """Every implementation, built-in or entry point, loaded and checked; a broken one shows its error."""
    found = survey()
    # One line per implementation, never a table: capabilities are long and a folded cell is hard to read or
    # grep at 80 columns.
    console.print(f"implementations ({len(found)}; {sum(1 for f in found if f.error)} broken):", markup=False)
    for f in found:
        what = f"BROKEN: {f.error}" if f.error else summary(f.capabilities)
        console.print(f"  {f.name} [{f.source}]: {what}", markup=False, soft_wrap=True)
    # the usable names on one line, as `--impl` takes them
    console.print(
        "implementations: " + ", ".join(f.name for f in found if not f.error), markup=False, soft_wrap=True
    )
    for f in found:
        if f.error:
            console.print(
                f"broken implementation {f.name} ({f.source}): {f.error}", markup=False, soft_wrap=True
            )


def replay(
    case: Annotated[str, typer.Argument(help="a case id, or a failures/<case>/ directory of a report")],
    impl: Annotated[
        str | None, typer.Option(help="implementation (default: the failure's, else triton)")
    ] = None,
    device: Annotated[str | None, typer.Option(help="device (default: the failure's, else auto)")] = None,
    timeout: Annotated[float | None, typer.Option(min=0.0, help="time limit in seconds")] = None,
    strict_ties: Annotated[
        bool, typer.Option("--strict-ties", help="a tie-rule difference fails (as certify --strict-ties)")
    ] = False,
) -> None:
    """Re-run one case; print its stage verdicts and worst elements. Exit 0 conformant, 1 not, 2 void."""
    case_id, saved_impl, saved_device = case, None, None
    if _is_dir(case):
        meta_path = Path(case) / "case.json"
        if not meta_path.exists():
            raise usage_error(f"{case} has no case.json: give a case id or a failures/<case>/ directory.")
        meta = json.loads(meta_path.read_text())
        case_id, saved_impl, saved_device = meta["case_id"], meta.get("impl"), meta.get("device")
        # the failing run's kernel path, unless this shell sets its own
        for k, v in meta.get("env", {}).items():
            if k in REPLAY_ENV and k not in os.environ:
                os.environ[k] = v
                console.print(f"environment of the failing run: {k}={v}", markup=False, soft_wrap=True)
    impl = impl or saved_impl or "triton"
    device = device or saved_device or "auto"
    try:
        Case.from_id(case_id)
    except ValueError as e:
        raise usage_error(str(e)) from None
    check_devices([device])
    check_impl(impl)
    result = run_replay(case_id, impl, device, timeout_s=timeout, strict_ties=strict_ties)
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
        t.add_row(
            s.stage, s.outcome.value, f(s.max_ratio), f(s.p99_ratio), f(s.rms_ratio), f(s.bias_z), s.message
        )
    console.print(t)
    for s in result.stages:
        if s.worst and not s.outcome.conformant:
            console.print(f"worst elements of {s.stage}:", markup=False)
            for w in s.worst[:8]:
                console.print(f"  {json.dumps(w, default=str)}", markup=False)
    stage = f" at stage {result.failing_stage}" if result.failing_stage else ""
    console.print(f"result: {result.outcome.value}{stage} {result.message}", markup=False)


def verify(
    cert: Annotated[Path, typer.Argument(help="certificate.tgz written by certify")],
    allow_dirty: Annotated[bool, typer.Option(help="accept a run from a git tree with uncommitted changes (development only)")] = False,
) -> None:  # fmt: skip
    """Check a certificate: exact file list, SHA-256 manifest, every must-pass case once with an allowed
    result, hashes of this installation, released or clean suite. Exit 0 valid, 1 not valid."""
    if not cert.is_file():
        raise usage_error(f"{cert} is not a file.")
    problems = run_verify(cert, allow_dirty=allow_dirty)
    if problems:
        console.print(f"{cert}: NOT VALID", style="bold red")
        for p in problems:
            console.print(f"  - {p}", markup=False)
        raise typer.Exit(1)
    console.print(f"{cert}: valid", style="bold green")


def merge(
    reports: Annotated[list[Path], typer.Argument(help="report.json files (one per node or run)")],
    out: Annotated[Path, typer.Option(help="directory for fleet.json and fleet.html")] = Path(
        "moe-cts-fleet"
    ),
) -> None:
    """Merge reports into a fleet report with per-device verdicts and a cross-device comparison.
    Exit 0 when every device is conformant and no device differs from its siblings, else 1."""
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
