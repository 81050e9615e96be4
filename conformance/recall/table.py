"""The recall report as a text table and as JSON (recall.json beside it).

    fault                      bug  stage     profile  status            killed by / why          time
    router-scaling-twice       05   router    smoke    killed            dsv3-grouped-sigmoid     3.1 s
    ...
    recall smoke: 41/42 = 0.976   (survived: ...; caught elsewhere: ...)

JSON: {"profile", "device", "catalog_version", "wall_s", "jobs", "recall": {profile: {...}},
       "control": [{impl, case, outcome, ...}], "faults": [{name, bug, stage, profile, status, killed_by,
       runs: [{case, outcome, failing_stage, at_stage, time_s, message}], time_s, message, missing_check}]}
"""

from __future__ import annotations

import dataclasses
from typing import Any

from moe_cts.conformance.recall.runner import RecallReport


def _why(status: str, r, fault) -> str:
    if status == "killed":
        return ", ".join(r.killed_by)
    if status == "caught_elsewhere":
        bad = [f"{x.case}: {x.outcome}@{x.failing_stage}" for x in r.runs if x.outcome not in ("pass",)]
        return "; ".join(bad[:2]) or r.message
    if status == "survived" and fault.missing_check:
        return f"missing check: {fault.missing_check}"
    return r.message or f"{len(r.runs)} cases conformant"


def render(report: RecallReport, width: int = 60) -> str:
    by_name = {r.name: r for r in report.results}
    head = f"{'fault':42} {'bug':3} {'stage':11} {'profile':7} {'status':16} {'killed by / why':{width}} {'time':>7}"
    lines = [head, "-" * len(head)]
    for f in report.faults:
        r = by_name[f.name]
        why = _why(r.status, r, f)
        why = why if len(why) <= width else why[: width - 3] + "..."
        lines.append(f"{f.name:42} {f.bug[4:6]:3} {f.stage:11} {f.profile:7} {r.status:16} {why:{width}} "
                     f"{r.time_s:6.1f}s")  # fmt: skip
    lines.append("")
    for profile, row in report.recall().items():
        extra = []
        if row["survived"]:
            extra.append("survived: " + ", ".join(row["survived"]))
        if row["elsewhere"]:
            extra.append("caught elsewhere: " + ", ".join(row["elsewhere"]))
        if row["equivalent"]:
            extra.append("equivalent here, not counted: " + ", ".join(row["equivalent"]))
        if row["not_exercised"]:
            extra.append("not supported here, not counted: " + ", ".join(row["not_exercised"]))
        tail = f"   ({'; '.join(extra)})" if extra else ""
        lines.append(f"recall {profile}: {row['killed']}/{row['run']} = {row['recall']}{tail}")
    bad = report.control_failures
    lines.append(f"control: {len(report.control)} cases, {len(bad)} not conformant"
                 + ("".join(f"\n  {k} {r.case}: {r.outcome}@{r.failing_stage} {r.message}" for k, r in bad)))  # fmt: skip
    lines.append(f"wall time {report.wall_s:.1f} s with {report.jobs} workers on {report.device}")
    return "\n".join(lines)


def to_json(report: RecallReport) -> dict[str, Any]:
    faults = {f.name: f for f in report.faults}
    return {
        "profile": report.profile,
        "device": report.device,
        "catalog_version": report.catalog_version,
        "wall_s": report.wall_s,
        "jobs": report.jobs,
        "recall": report.recall(),
        "control": [{"impl": k, **dataclasses.asdict(r)} for k, r in report.control],
        "faults": [
            {
                **dataclasses.asdict(r),
                "bug": faults[r.name].bug,
                "stage": faults[r.name].stage,
                "profile": faults[r.name].profile,
                "kind": faults[r.name].kind,
                "missing_check": faults[r.name].missing_check,
            }
            for r in report.results
        ],
    }
