"""`moe-cts compile`: the ahead-of-time compile matrix on this CPU, with a progress bar (docs/aot.md)."""

from __future__ import annotations

import os
import time
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from moe_cts.conformance.aot.matrix import FAIL, parse_targets, run_matrix
from moe_cts.conformance.aot.report import render
from moe_cts.conformance.cli.common import check_out_dir, console, usage_error
from moe_cts.conformance.engine import candidate


class _Bar:
    """aot.matrix.Progress on a rich progress bar: count of compiles and time left."""

    def __init__(self, progress: Progress, task):
        self.progress, self.task = progress, task

    def planned(self, n: int) -> None:
        self.progress.update(self.task, total=n, description="compiling")

    def advance(self, k: int) -> None:
        if k:
            self.progress.advance(self.task, k)


def compile_(
    targets: Annotated[
        str, typer.Option(help="all, or a comma list of sm80,sm90,sm100,gfx90a,gfx942,gfx950")
    ] = "all",
    full: Annotated[
        bool, typer.Option(help="every table config and every preset's choice in every dtype")
    ] = False,
    out: Annotated[
        str, typer.Option(help="writes compile.json (report section) and summary.txt here")
    ] = "moe-cts-compile",
    jobs: Annotated[int, typer.Option(min=1, help="compiler processes in parallel")] = max(
        1, os.cpu_count() or 1
    ),
    table: Annotated[
        str | None,
        typer.Option(help="a candidate tile table (default $MOE_CTS_TABLE): its targets compile its entries"),
    ] = None,
) -> None:
    """Compile every kernel ahead of time for CUDA sm80/sm90/sm100 and ROCm gfx90a/gfx942/gfx950 on this CPU:
    shared memory against each target's limit, registers, spills, matrix instructions. Exit 1 on any Fail.
    With --table, the targets that read the candidate compile its entries instead of the shipped table's."""
    out_dir = check_out_dir(out)
    try:
        cand = candidate.resolve_for_targets(table, parse_targets(targets))
    except (ValueError, candidate.CandidateError) as e:
        raise usage_error(str(e)) from None
    if cand is not None:
        cand.export()  # the compiler processes inherit it
        console.print(f"candidate tile table: {cand.path} (sha256 {cand.sha256[:12]})", markup=False)
    start = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("left"), TimeRemainingColumn())  # fmt: skip
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(f"planning the {'full' if full else 'default'} tier", total=None)
            records = run_matrix(
                targets=targets, full=full, out=out_dir, jobs=jobs, progress=_Bar(progress, task)
            )
    except ValueError as e:
        raise usage_error(str(e)) from None
    render(console, records)
    fails = sum(r.status == FAIL for r in records)
    console.print(
        f"{len(records)} compiles in {time.perf_counter() - start:.0f} s with {jobs} process(es), {fails} fail(s); "
        f"report section in {out_dir / 'compile.json'}",
        markup=False,
    )
    if fails:
        raise typer.Exit(1)
