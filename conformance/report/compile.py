"""The "compile" part of a certification: `certify --compile`, its report section, HTML and console tables.

    targets = compile_targets(spec, device_names)    # auto | none | all | sm90,gfx942,...  -> ("sm90",)
    section = run_compile(targets, jobs)             # aot.run_matrix, default tier -> aot.compile_section + run info
    apply_compile(report, section)                   # report["compile"]; a Fail makes the node not conformant
    compile_html(section) / print_compile(console, section)

`auto` compiles for the certified devices' own architectures when they are AOT targets (sm_90 -> sm90, gfx942),
and nothing on the interpreter, so the CPU smoke run stays fast.
"""

from __future__ import annotations

import threading
import time
from html import escape
from typing import Any

from rich.table import Table

from moe_cts.conformance.aot import matrix as aot
from moe_cts.conformance.aot import plan as aot_plan
from moe_cts.conformance.aot import registry_ref
from moe_cts.conformance.aot.matrix import config_label
from moe_cts.conformance.engine.devices import select_device

COMPILE_CHOICES = "auto, none, all or a comma-separated subset of"


class CompileSpecError(ValueError):
    pass


def _known() -> tuple[str, ...]:
    return aot_plan.target_names()


def arch_target(arch: str) -> str | None:
    """The AOT target of a device architecture: "sm_90" -> "sm90", "gfx942" -> "gfx942", "cpu" -> None."""
    name = arch.split(":")[0].replace("sm_", "sm")
    return name if name in _known() else None


def compile_targets(spec: str, device_names: list[str]) -> tuple[str, ...]:
    """Resolve --compile against the devices being certified (names as _check_devices returns them)."""
    known = _known()
    spec = spec.strip()
    if spec == "none":
        return ()
    if spec == "all":
        return known
    if spec == "auto":
        archs = [select_device(n).arch for n in device_names if n != "interpreter"]
        found = {t for t in (arch_target(a) for a in archs) if t}
        return tuple(t for t in known if t in found)
    names = [t.strip() for t in spec.split(",") if t.strip()]
    unknown = [t for t in names if t not in known]
    if unknown or not names:
        raise CompileSpecError(
            f"--compile: expected {COMPILE_CHOICES} {', '.join(known)}; got {spec!r}"
            + (f" ({', '.join(repr(u) for u in unknown)} is not a target)." if unknown else ".")
        )
    return tuple(t for t in known if t in names)


def kernel_registry_of(impl: Any) -> str | None:
    """The kernel registry module an implementation exposes for the compile tier, or None (not applicable)."""
    fn = getattr(impl, "kernel_registry", None)
    return fn() if callable(fn) else None


def not_applicable(impl_name: str, targets: tuple[str, ...]) -> dict[str, Any]:
    """The compile section of an implementation that exposes no kernel registry: nothing of ours is compiled
    in its name, and the verdict does not depend on it."""
    return {
        "verdict": "not_applicable",
        "reason": f"{impl_name} exposes no kernel registry (kernel_registry()); the AOT tier compiles the "
        "implementation under test only",
        "records": [],
        "failures": [],
        "tier": "default",
        "requested_targets": list(targets),
    }


def run_compile(
    targets: tuple[str, ...],
    jobs: int,
    registry: str = registry_ref.DEFAULT,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """The default AOT tier for `targets` as the report's "compile" section, compiling the kernels of
    `registry` (a module path). A planning failure (the launch capture itself broke) is an "error" section:
    the run then says nothing about compilation."""
    start = time.perf_counter()
    try:
        with registry_ref.using(registry):
            records = aot.run_matrix(targets=targets, full=False, jobs=jobs, cancel=cancel)
    except RuntimeError as e:
        section: dict[str, Any] = {"verdict": "error", "error": str(e)[-2000:], "records": [], "failures": []}
    else:
        section = aot.compile_section(records)
    section.update(
        tier="default",
        requested_targets=list(targets),
        registry=registry,
        wall_seconds=round(time.perf_counter() - start, 1),
    )
    return section


def failure_lines(section: dict[str, Any] | None) -> list[str]:
    """One line per failing (kernel, config, dtype, target), or the tier's own error."""
    if not section:
        return []
    if section["verdict"] == "error":
        last = (section.get("error") or "no error text").strip().splitlines()[-1]
        return [f"compile tier did not run: {last}"]
    if section["verdict"] == "not_applicable":
        return []
    return [
        f"compile FAIL {f['kernel']} [{f['config']}] {f['dtype']} on {f['target']}: {f['reason']}"
        for f in section["failures"]
    ]


def note_lines(section: dict[str, Any] | None) -> list[str]:
    """ptxas's performance notes (serialized wgmmas, ...): compiles that run right but slow; not a Fail."""
    return [
        f"compile NOTE {n['kernel']} [{n['config']}] {n['dtype']} on {n['target']}: ptxas {note}"
        for n in (section or {}).get("ptxas_notes", [])
        for note in n["notes"]
    ]


def apply_compile(report: dict[str, Any], section: dict[str, Any] | None) -> None:
    """Put the section into the report; a compile Fail turns a conformant node not conformant, an error
    (no records) makes it void. Partial and void runs keep their verdict."""
    report["compile"] = section
    verdict = report["verdict"]
    verdict["compile"] = section["verdict"] if section else None
    verdict["reasons"] = failure_lines(section)
    judged = section and section["verdict"] not in ("pass", "not_applicable")
    if judged and verdict["node"] in ("conformant", "not_conformant"):
        verdict["node"] = "void" if section["verdict"] == "error" else "not_conformant"
        verdict["conformant"] = False


# ------------------------------------------------------------------------------------------------ output
COLUMNS = (
    "kernel",
    "config",
    "dtype",
    "shared memory / limit",
    "registers",
    "spills",
    "matrix instructions",
    "result",
)


def _row(r: dict[str, Any], *, reason: bool = True) -> list[str]:
    shared = (
        "-"
        if r["shared_bytes"] is None
        else f"{r['shared_bytes'] / 1024:.1f} / {r['shared_limit'] / 1024:.0f} KiB"
    )
    matrix = ", ".join(r["matrix_found"]) or ("none (required)" if r["matrix_required"] else "none")
    result = r["status"] + (f": {r['reason']}" if r["reason"] and reason else "")
    spills = "-" if r["spill_bytes"] is None else f"{r['spill_bytes']} B"
    regs = "-" if r["registers"] is None else str(r["registers"])
    return [r["kernel"], config_label(r["config"]), r["dtype"], shared, regs, spills, matrix, result]


def per_target(section: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """target -> its records, in target order, sorted by kernel, dtype, config."""
    by: dict[str, list[dict[str, Any]]] = {t: [] for t in _known()}
    for r in section.get("records", []):
        by.setdefault(r["target"], []).append(r)
    key = lambda r: (r["kernel"], r["dtype"], str(sorted(r["config"].items())))
    return {t: sorted(rs, key=key) for t, rs in by.items() if rs}


def compile_html(section: dict[str, Any] | None) -> str:
    """The "Compile" section of report.html: verdict, counts per target, one table per target."""
    if not section:
        return '<h2 id="compile">Compile</h2><p>Not run (<code>--compile none</code>, or <code>auto</code> on a device that is no AOT target).</p>'
    if section["verdict"] == "not_applicable":
        return f'<h2 id="compile">Compile</h2><p>Not applicable: {escape(section["reason"])}.</p>'
    cls = {"pass": "ok", "fail": "bad"}.get(section["verdict"], "warn")
    head = (
        f'<h2 id="compile">Compile</h2><p>Ahead-of-time compile matrix, {escape(section.get("tier", ""))} tier, '
        f"targets {escape(', '.join(section.get('requested_targets', [])))}: "
        f'<span class="{cls}">{escape(section["verdict"].upper())}</span></p>'
    )
    fails = "".join(f"<li>{escape(line)}</li>" for line in failure_lines(section))
    fails += "".join(f'<li class="warn">{escape(line)}</li>' for line in note_lines(section))
    head += f"<ul>{fails}</ul>" if fails else ""
    tables = []
    for target, recs in per_target(section).items():
        counts = section.get("counts", {}).get(target, {})
        cells = "".join(f"<th>{escape(c)}</th>" for c in COLUMNS)
        rows = "".join(
            f'<tr class="{ {"fail": "bad", "expected_rejection": "warn"}.get(r["status"], "") }">'
            + "".join(f"<td>{escape(v)}</td>" for v in _row(r))
            + "</tr>"
            for r in recs
        )
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        tables.append(f"<h3>{escape(target)} ({escape(summary)})</h3><table><tr>{cells}</tr>{rows}</table>")
    return head + "".join(tables)


def print_compile(console, section: dict[str, Any] | None) -> None:
    """Rich tables on the console: counts per target, then one summary table per target."""
    if not section:
        return
    if section["verdict"] == "not_applicable":
        console.print(f"compile: not applicable ({section['reason']})", markup=False)
        return
    for target, recs in per_target(section).items():
        counts = ", ".join(f"{n} {s}" for s, n in sorted(section.get("counts", {}).get(target, {}).items()))
        t = Table(title=f"compile {target}: {counts}")
        for c in COLUMNS:
            t.add_column(c, overflow="fold")
        for r in recs:
            t.add_row(*_row(r, reason=False), style="red" if r["status"] == "fail" else None)
        console.print(t)
    for line in failure_lines(section):  # the reasons, in full, below the tables
        console.print(line, style="red", markup=False, soft_wrap=True)
    for line in note_lines(section):
        console.print(line, style="yellow", markup=False, soft_wrap=True)
    console.print(f"compile: {section['verdict']}", markup=False)
