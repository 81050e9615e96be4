"""Reporting of the AOT compile matrix: the report section, the rich summary tables, the CLI body.

compile_section(records) -> {"verdict", "counts": {target: {status: n}}, "chosen": [...], "records": [...]}
summary_table(records)   -> rich Table: one row per (kernel, config) the heuristic chose for the presets,
                            one column per target: "shared KiB / registers" (red: Fail on that target)
status_table(records)    -> rich Table: compiled / expected rejections / fails per target
note_lines(records)      -> one line per ptxas performance note (serialized wgmma, ...): listed, not a fail
"""

from __future__ import annotations

import io
import json
from collections import Counter, defaultdict
from typing import Any

from rich.console import Console
from rich.table import Table

from moe_cts.conformance.aot import plan as aot_plan
from moe_cts.conformance.aot.records import COMPILED, EXPECTED_REJECTION, FAIL

SECTION_VERSION = 1


def _targets_in(records) -> list[str]:
    order = list(aot_plan.target_names())
    return sorted({r.target for r in records}, key=order.index)


def chosen_rows(records) -> list[dict[str, Any]]:
    """One row per (kernel, dtype, config) that the heuristic chose for a preset, with each target's cell."""
    rows: dict[tuple, dict[str, Any]] = {}
    for r in records:
        if not r.presets:
            continue
        key = (r.kernel, r.dtype, json.dumps(r.config, sort_keys=True))
        row = rows.setdefault(
            key,
            {"kernel": r.kernel, "dtype": r.dtype, "config": r.config_label, "presets": [], "targets": {}},
        )
        for p in r.presets:
            label = f"{p['preset']}@T={p['T']}"
            if label not in row["presets"]:
                row["presets"].append(label)
        row["targets"][r.target] = {
            "status": r.status,
            "shared_bytes": r.shared_bytes,
            "registers": r.registers,
            "spill_bytes": r.spill_bytes,
        }
    return sorted(rows.values(), key=lambda x: (x["kernel"], x["dtype"], x["config"]))


def compile_section(records) -> dict[str, Any]:
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        counts[r.target][r.status] += 1
    fails = [r for r in records if r.status == FAIL]
    triton_versions = sorted({r.extra.get("triton") for r in records if r.extra.get("triton")})
    return {
        "version": SECTION_VERSION,
        "verdict": "fail" if fails else "pass",
        "triton": triton_versions,
        "targets": {
            name: {"shared_limit_bytes": info["shared_limit_bytes"], "backend": info["backend"]}
            for name, info in aot_plan.load_targets()["targets"].items()
            if name in counts
        },
        "counts": {t: dict(c) for t, c in counts.items()},
        "failures": [
            {
                "kernel": r.kernel,
                "target": r.target,
                "dtype": r.dtype,
                "config": r.config_label,
                "reason": r.reason,
            }
            for r in fails
        ],
        "ptxas_notes": [
            {
                "kernel": r.kernel,
                "target": r.target,
                "dtype": r.dtype,
                "config": r.config_label,
                "notes": list(notes),
            }
            for r in records
            if (notes := r.ptxas_notes)
        ],
        "chosen": chosen_rows(records),
        "records": [r.to_json() for r in records],
    }


def _cell(c: dict[str, Any] | None) -> str:
    if c is None:
        return "-"
    if c["shared_bytes"] is None:
        return "[yellow]rejected[/]" if c["status"] == "expected_rejection" else "[red]FAIL[/]"
    text = f"{c['shared_bytes'] / 1024:.0f}K/{c['registers']}r"
    if c["spill_bytes"]:
        text += f" spill {c['spill_bytes']}B"
    return f"[red]{text}[/]" if c["status"] == "fail" else text


def summary_table(records) -> Table:
    targets = _targets_in(records)
    table = Table(
        title="Configs chosen for the presets: shared memory (KiB) / registers per thread, per target"
    )
    for col in ("kernel", "dtype", "config", "chosen for"):
        table.add_column(col, overflow="fold")
    for t in targets:
        table.add_column(t, justify="right")
    for row in chosen_rows(records):
        presets = row["presets"]
        who = ", ".join(presets[:3]) + (f" +{len(presets) - 3}" if len(presets) > 3 else "")
        table.add_row(
            row["kernel"], row["dtype"], row["config"], who, *[_cell(row["targets"].get(t)) for t in targets]
        )
    return table


def status_table(records) -> Table:
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        counts[r.target][r.status] += 1
    table = Table(title="AOT compile matrix")
    for col in ("target", "shared limit", COMPILED, EXPECTED_REJECTION, FAIL):
        table.add_column(col, justify="right")
    limits = {n: i["shared_limit_bytes"] for n, i in aot_plan.load_targets()["targets"].items()}
    for t in _targets_in(records):
        c = counts[t]
        fails = f"[red]{c[FAIL]}[/]" if c[FAIL] else "0"
        table.add_row(t, f"{limits[t] // 1024} KiB", str(c[COMPILED]), str(c[EXPECTED_REJECTION]), fails)
    return table


def failure_lines(records) -> list[str]:
    return [
        f"FAIL {r.kernel} [{r.config_label}] {r.dtype} on {r.target}: {r.reason}"
        for r in records
        if r.status == "fail"
    ]


def note_lines(records) -> list[str]:
    """ptxas's performance notes: the kernel compiled and computes right, but (C7515) runs its wgmmas one at a
    time, say. A table row with one is slow on that target; tests/aot holds the shipped tables to none."""
    return [
        f"NOTE {r.kernel} [{r.config_label}] {r.dtype} on {r.target}: ptxas {note}"
        for r in records
        for note in r.ptxas_notes
    ]


def summary_lines(records) -> list[str]:
    """The summary table as one line per (kernel, dtype, config, target): for logs and narrow pipes, where a
    wide table would fold its cells."""
    lines = []
    for row in chosen_rows(records):
        for t in _targets_in(records):
            c = row["targets"].get(t)
            if c is not None:
                cell = _cell(c).replace("[red]", "").replace("[yellow]", "").replace("[/]", "")
                lines.append(f"{row['kernel']} {row['dtype']} [{row['config']}] {t}: {cell} ({c['status']})")
    return lines


def render(console: Console, records) -> None:
    """Tables on a terminal; plain lines when the output goes to a file or a pipe."""
    console.print(status_table(records))
    if console.is_terminal:
        console.print(summary_table(records))
    else:
        for line in summary_lines(records):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    for line in note_lines(records):
        console.print(line, style="yellow", markup=False, highlight=False, soft_wrap=True)
    for line in failure_lines(records):
        console.print(line, style="red", markup=False, highlight=False)


def render_text(records) -> str:
    buf = io.StringIO()
    render(Console(file=buf, width=200, force_terminal=False, color_system=None), records)
    return buf.getvalue()
