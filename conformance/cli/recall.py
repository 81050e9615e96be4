"""`moe-cts recall`: run the fault catalog (data/faults.json) and report which injected bugs the suite catches.

    moe-cts recall [--profile smoke|quick|full|gpu] [--device interpreter|cuda:N|hip:N] [--jobs N]
                   [--out DIR] [--faults a,b] [--max-cases N] [--timeout S]

Prints one row per fault (killed / survived / equivalent / not_exercised /
caught_elsewhere / stale / error, the stage, the
cases that killed it, the time) and the recall per profile; writes DIR/recall.json and DIR/recall.txt.
Exit codes: 0 every fault that must be caught was (faults with a documented missing_check, and equivalent
mutants: outputs bitwise equal to the unmutated kernels' on this device, and faults whose every case the
device declines, excepted),
1 a fault survived or the catalog is stale, 2 usage error or a void run (the control run failed).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from moe_cts.conformance.cli.common import check_out_dir, console, err, usage_error


def _exit_code(report) -> int:
    if report.control_failures:
        return 2
    faults = {f.name: f for f in report.faults}
    for r in report.results:
        f = faults[r.name]
        if r.status in ("stale", "error") or (
            r.status not in ("killed", "equivalent", "not_exercised") and not f.missing_check
        ):
            return 1
    return 0


def recall(
    profile: str = typer.Option(
        "smoke", help="smoke | quick | full | gpu: faults of this profile and below."
    ),
    device: str = typer.Option("interpreter", help="interpreter (Triton on the CPU) or a GPU, e.g. cuda:0."),
    jobs: int = typer.Option(2, help="worker processes; each handles many faults."),
    out: str = typer.Option("moe-cts-recall", help="directory for recall.json and recall.txt."),
    faults: str = typer.Option("", help="comma-separated fault names (default: every fault of the profile)."),
    max_cases: int = typer.Option(
        6, help="cases per fault: its exposing cases, then must-pass cases up to this."
    ),
    timeout: float = typer.Option(300.0, help="per-case limit in seconds."),
) -> None:
    """Inject each catalogued bug into the kernels (or an implementation) and count how many the suite catches."""
    from moe_cts.conformance.recall.catalog import PROFILE_ORDER, load_catalog
    from moe_cts.conformance.recall.runner import run_recall
    from moe_cts.conformance.recall.table import render, to_json

    if profile not in PROFILE_ORDER:
        raise usage_error(f"--profile: expected one of {sorted(PROFILE_ORDER)}, got {profile!r}.")
    if jobs < 1:
        raise usage_error(f"--jobs: expected an int >= 1, got {jobs}.")
    if device != "interpreter" and not device.startswith(("cuda", "hip")):
        raise usage_error(f"--device: expected interpreter, cuda:N or hip:N, got {device!r}.")
    out_dir = check_out_dir(out)
    names = [n.strip() for n in faults.split(",") if n.strip()] or None
    try:
        if names:
            load_catalog().by_name(names)
    except ValueError as e:
        raise usage_error(f"--faults: {e}.") from None
    report = run_recall(profile=profile, device=device, jobs=jobs, names=names, cap=max_cases, timeout_s=timeout,
                        progress=lambda s: err.print(f"recall: {s}", markup=False))  # fmt: skip
    text = render(report)
    console.print(text, markup=False, soft_wrap=True)
    Path(out_dir, "recall.txt").write_text(text + "\n")
    Path(out_dir, "recall.json").write_text(json.dumps(to_json(report), indent=1) + "\n")
    raise typer.Exit(_exit_code(report))
