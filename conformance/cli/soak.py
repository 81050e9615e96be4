"""`moe-cts soak`: many generated cases through one implementation, judged by the error model, counted.

    moe-cts soak --cases N [--device D] [--seed S] [--out DIR] [--impl NAME] [--time-limit SECONDS]
                 [--workers W] [--spec-pool K] [--batch B]

Prints the counts per outcome, compiles, cases/s, the shape ranges covered and a replay command per Fail;
writes DIR/soak.json (the whole report) and DIR/soak-fails.txt (one replay command per line).
Exit codes: 0 no case failed, 1 a case failed or crashed (or the device was lost), 2 usage error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from moe_cts.conformance.cli.common import check_devices, check_impl, check_out_dir, console, err, usage_error
from moe_cts.conformance.engine.devices import select_device
from moe_cts.conformance.engine.soak import SoakPlan, SoakReport
from moe_cts.conformance.engine.soak import soak as run_soak


def soak(
    cases: Annotated[int, typer.Option(min=1, help="generated cases to run")] = 1000,
    device: Annotated[str, typer.Option(help="auto | cuda:N | hip:N | interpreter | cpu (PyTorch implementations)")] = "auto",
    seed: Annotated[int, typer.Option(min=0, help="seed of the generated stream (the same cases for the same seed)")] = 0,
    out: Annotated[str, typer.Option(help="directory for soak.json and soak-fails.txt")] = "moe-cts-soak",
    impl: Annotated[str, typer.Option(help="implementation under test (moe-cts list shows them)")] = "triton",
    time_limit: Annotated[float | None, typer.Option(min=0.0, help="stop launching cases after this many seconds; what ran is reported")] = None,
    workers: Annotated[int, typer.Option(min=0, help="worker processes: each generates, runs on the device and judges (0: CPUs less one)")] = 0,
    spec_pool: Annotated[int, typer.Option(min=0, help="distinct specs per run, bounds Triton compiles (0: a fresh spec per case)")] = 16,
    batch: Annotated[int, typer.Option(min=1, help="generated cases per hypothesis run")] = 500,
) -> None:  # fmt: skip
    """Run N generated cases through route() and the forward on one device, judge each against the float64
    oracle with run_case's tolerance model, and count Pass / Fail / Crash / NotSupported."""
    out_dir = check_out_dir(out)
    arg = check_devices([device])[0]
    implementation = check_impl(impl)
    if not getattr(implementation, "name", None):
        implementation.name = impl
    try:
        plan = SoakPlan(cases=cases, seed=seed, time_limit_s=time_limit or None, workers=workers,
                        batch=batch, spec_pool=spec_pool)  # fmt: skip
    except ValueError as e:
        raise usage_error(str(e)) from None
    report = run_soak(implementation, select_device(arg), plan,
                      progress=lambda s: err.print(f"soak: {s}", markup=False))  # fmt: skip
    _write(report, out_dir)
    _print(report, out_dir)
    bad = any(k in report.counts for k in ("fail", "crash", "timeout", "internal_error"))
    raise typer.Exit(1 if bad or report.stopped.startswith("device lost") else 0)


def _write(report: SoakReport, out_dir: Path) -> None:
    Path(out_dir, "soak.json").write_text(json.dumps(report.to_json(), indent=1, default=str) + "\n")
    Path(out_dir, "soak-fails.txt").write_text("".join(f["replay"] + "\n" for f in report.fails))


def _print(report: SoakReport, out_dir: Path) -> None:
    d = report.to_json()
    t = Table(title=f"soak: {report.impl} on {report.device}")
    t.add_column("what")
    t.add_column("value", overflow="fold")
    t.add_row("cases run", f"{d['cases_run']} of {report.plan['cases']} ({d['cases_with_T0']} with T = 0)")
    for outcome, n in d["counts"].items():
        t.add_row(outcome, str(n))
    t.add_row("compiles", f"{d['compiles']} (and {d['cache_loads']} loaded from Triton's cache)")
    t.add_row("elapsed", f"{d['elapsed_s']:.1f} s ({d['cases_per_s']} cases/s)")
    for key in ("T", "H", "I", "E", "k"):
        if key in d["ranges"]:
            lo, hi = d["ranges"][key]
            t.add_row(f"{key} range", f"{lo}..{hi}")
    for key in ("dtype", "scenario"):
        if key in d["ranges"]:
            t.add_row(key, ", ".join(f"{k} {v}" for k, v in sorted(d["ranges"][key].items())))
    worst = ", ".join(f"{k} {v:.3g}" for k, v in sorted(d["worst_ratio_conformant"].items()))
    t.add_row("worst err/bound (conformant)", worst)
    if report.stopped:
        t.add_row("stopped", report.stopped)
    console.print(t)
    # replay commands on lines of their own, never folded in a table cell: they are copied into a shell
    for f in report.fails:
        console.print(
            f"{f['outcome']} at {f['failing_stage']}: {f['message'][:200]}", markup=False, soft_wrap=True
        )
        console.print(f"  replay: {f['replay']}", markup=False, soft_wrap=True)
    console.print(f"wrote {out_dir}/soak.json and {out_dir}/soak-fails.txt", markup=False)
