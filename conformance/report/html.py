"""report.html: one self-contained page (no network, no scripts): verdict first, per-device verdicts, the pass
matrix (stage x dtype x routing scenario), error-ratio plots against the bound (PNG as base64 data URIs), the
environment, and every failure with its replay command."""

from __future__ import annotations

import base64
import io
import json
from collections import Counter, defaultdict
from html import escape
from pathlib import Path
from typing import Any

from moe_cts.conformance.engine.results import STAGES, Outcome
from moe_cts.conformance.report.compile import compile_html, failure_lines
from moe_cts.conformance.report.schema import all_cases

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
h1{margin-bottom:.2em} table{border-collapse:collapse;margin:.5em 0 1.5em} td,th{border:1px solid #ccc;
padding:.25em .6em;font-size:.9em;text-align:left} th{background:#f2f2f2}
.verdict{font-size:1.6em;font-weight:bold;padding:.5em 1em;border-radius:.3em;display:inline-block}
.conformant{background:#d7f5dd;color:#0a5d1e} .not_conformant{background:#fbd9d9;color:#8a1111}
.partial{background:#fff1c9;color:#7a5800} .void{background:#e5e5e5;color:#333}
.ok{background:#e7f7ea} .warn{background:#fff6d6} .bad{background:#fbd9d9} .na{color:#888}
code,pre{background:#f6f6f6;padding:.1em .3em} pre{padding:.6em;overflow-x:auto}
img.plot{max-width:100%;border:1px solid #ddd;margin:.5em 0}
"""

VERDICT_TEXT = {
    "conformant": "CONFORMANT",
    "not_conformant": "NOT CONFORMANT",
    "partial": "PARTIAL RUN (interrupted): no verdict",
    "void": "VOID: the run failed (internal error)",
}


def _cell_class(outcomes: Counter) -> str:
    if any(not Outcome(o).conformant for o in outcomes):
        return "bad"
    if outcomes.get("quality_warning") or outcomes.get("compatibility_warning"):
        return "warn"
    return "ok" if outcomes.get("pass") else "na"


def _fmt_counts(c: Counter) -> str:
    return ", ".join(f"{n} {o}" for o, n in sorted(c.items()))


def pass_matrix(report: dict[str, Any]) -> str:
    """Rows (dtype, scenario), columns stages; each cell the stage outcomes of the cases in that row."""
    m: dict[tuple[str, str], dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for _, c in all_cases(report):
        row = (str(c["params"].get("dtype", "?")), str(c["params"].get("scenario", "?")))
        if c["stages"]:
            for s in c["stages"]:
                m[row][s["stage"]][s["outcome"]] += 1
        else:
            m[row][c["failing_stage"] or "case"][c["outcome"]] += 1
    stages = [s for s in (*STAGES, "case") if any(s in v for v in m.values())]
    head = "".join(f"<th>{escape(s)}</th>" for s in stages)
    rows = []
    for (dtype, scen), cols in sorted(m.items()):
        cells = "".join(
            f'<td class="{_cell_class(cols[s])}">{escape(_fmt_counts(cols[s]))}</td>'
            if s in cols
            else '<td class="na">-</td>'
            for s in stages
        )
        rows.append(f"<tr><td>{escape(dtype)}</td><td>{escape(scen)}</td>{cells}</tr>")
    return f"<table><tr><th>dtype</th><th>scenario</th>{head}</tr>{''.join(rows)}</table>"


def ratio_samples(report: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """dtype -> stage -> max error ratios (error / bound) of the cases, where a stage reported one."""
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for _, c in all_cases(report):
        for s in c["stages"]:
            if s.get("max_ratio") is not None:
                out[str(c["params"].get("dtype", "?"))][s["stage"]].append(float(s["max_ratio"]))
    return out


def ratio_plots(report: dict[str, Any]) -> list[tuple[str, str]]:
    """One PNG per dtype: per stage, every case's max error ratio on a log axis, with the bound (ratio 1) as a
    red line. Returns (title, data URI) pairs."""
    # matplotlib costs about a second to import and fixes its backend then: Agg is chosen before pyplot,
    # and only when a page with plots is drawn.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    plots = []
    for dtype, by_stage in sorted(ratio_samples(report).items()):
        stages = [s for s in STAGES if by_stage.get(s)]
        if not stages:
            continue
        fig, ax = plt.subplots(figsize=(1.4 * len(stages) + 2.5, 3.4), dpi=90)
        rng = np.random.default_rng(0)  # jitter only; fixed so the page is reproducible
        for i, st in enumerate(stages):
            v = np.clip(np.asarray(by_stage[st]), 1e-6, None)
            ax.boxplot([v], positions=[i], widths=0.5, showfliers=False)
            ax.scatter(
                i + rng.uniform(-0.18, 0.18, len(v)),
                v,
                s=9,
                alpha=0.6,
                c=np.where(v > 1, "tab:red", "tab:blue"),
            )
        ax.axhline(1.0, color="red", lw=1.2, ls="--", label="bound (ratio 1)")
        ax.set_yscale("log")
        ax.set_xticks(range(len(stages)), stages, rotation=20)
        ax.set_ylabel("max |error| / bound per case (0 drawn at 1e-6)")
        ax.set_title(f"error ratio vs bound, {dtype}")
        ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        plots.append((dtype, "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()))
    return plots


def _kv_table(d: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{escape(str(k))}</th><td>{escape(v if isinstance(v, str) else json.dumps(v, default=str))}</td></tr>"
        for k, v in d.items()
    )
    return f"<table>{rows}</table>"


def _failure_block(dev: dict[str, Any], c: dict[str, Any]) -> str:
    worst = [w for s in c["stages"] if not Outcome(s["outcome"]).conformant for w in s.get("worst", [])]
    worst_html = f"<pre>{escape(json.dumps(worst[:5], indent=1, default=str))}</pre>" if worst else ""
    return (
        f"<h3>{escape(c['case_id'])} on {escape(dev['label'])}: {escape(c['outcome'])}"
        f"{' at stage ' + escape(c['failing_stage']) if c['failing_stage'] else ''}</h3>"
        f"<p>{escape(c['message'] or '')}</p><p>replay: <code>{escape(c['replay'] or '')}</code></p>{worst_html}"
    )


def render_html(report: dict[str, Any]) -> str:
    v = report["verdict"]["node"]
    suite, run = report.get("suite", {}), report.get("run", {})
    devices = "".join(
        f"<tr><td>{escape(d['label'])}</td><td>{escape(str(d['device'].get('name', '')))}</td>"
        f'<td class="{d["verdict"]}">{escape(VERDICT_TEXT[d["verdict"]])}</td>'
        f"<td>{escape(_fmt_counts(Counter(d['counts'])))}</td><td>{escape('; '.join(d['reasons']))}</td></tr>"
        for d in report["devices"]
    )
    plots = (
        "".join(
            f'<h3>{escape(t)}</h3><img class="plot" alt="error ratio plot {escape(t)}" src="{uri}">'
            for t, uri in ratio_plots(report)
        )
        or "<p>No stage reported an error ratio.</p>"
    )
    failures = (
        "".join(_failure_block(d, c) for d, c in all_cases(report) if not c["conformant"]) or "<p>None.</p>"
    )
    summary = {
        "implementation": run.get("impl"),
        "profile": run.get("profile"),
        "suite version": suite.get("version"),
        "git": f"{suite.get('git_sha')}{' (dirty)' if suite.get('git_dirty') else ''}",
        "kernel source hash": suite.get("kernel_source_hash"),
        "must-pass hash": suite.get("must_pass_hash"),
        "seeds": run.get("seeds"),
        "cases": sum(len(d["cases"]) for d in report["devices"]),
        "duration (s)": round(run["duration_s"], 1) if run.get("duration_s") else None,
    }
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>moe-cts report: {escape(VERDICT_TEXT[v])}</title>
<style>{CSS}</style></head><body>
<h1>moe-cts certification report</h1>
<p id="verdict" class="verdict {v}">{escape(VERDICT_TEXT[v])}</p>
{"<p><b>This report is partial: the run was interrupted.</b></p>" if report.get("partial") else ""}
{_kv_table(summary)}
{"".join(f'<p class="bad">{escape(line)}</p>' for line in failure_lines(report.get("compile")))}
<h2>Devices</h2>
<table><tr><th>device</th><th>name</th><th>verdict</th><th>cases</th><th>why</th></tr>{devices}</table>
<h2>Pass matrix (stage x dtype x routing scenario)</h2>{pass_matrix(report)}
<h2>Error ratio against the bound</h2>{plots}
<h2>Failures</h2>{failures}
{compile_html(report.get("compile"))}
<h2>Environment</h2>{_kv_table(report.get("environment", {}))}
</body></html>
"""


def write_html(report: dict[str, Any], out: Path) -> Path:
    path = out / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    return path
