"""`moe-cts merge`: several report.json files (nodes, or devices) -> one fleet report (fleet.json, fleet.html).

The fleet report lists every device's verdict and compares devices of the same model (GPU name + arch) case by
case: a device whose result on a case (outcome and failing stage) differs from its siblings' majority is flagged,
so one bad card among eight is found, not averaged away.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from html import escape
from pathlib import Path
from typing import Any

from moe_cts.conformance.engine.results import Outcome
from moe_cts.conformance.report.html import CSS, VERDICT_TEXT
from moe_cts.conformance.report.schema import SCHEMA

FLEET_SCHEMA = "moe-cts/fleet"
FLEET_SCHEMA_VERSION = 1


class MergeError(ValueError):
    """An input that is not a moe-cts report; the message names the file."""


def load_report(path: Path) -> dict[str, Any]:
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MergeError(f"{path}: not a moe-cts report.json, cannot read it ({e})") from e
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        raise MergeError(f"{path}: not a moe-cts report.json (schema {SCHEMA!r} expected)")
    return report


def _device_rows(reports: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for src, rep in reports:
        host = rep.get("environment", {}).get("host", "?")
        for d in rep["devices"]:
            dev = d.get("device", {})
            rows.append(
                {
                    "id": f"{host}/{d['label']}",
                    "host": host,
                    "label": d["label"],
                    "report": src,
                    "model": f"{dev.get('name', '?')} ({dev.get('arch', '?')})",
                    "verdict": d["verdict"],
                    "counts": d["counts"],
                    # A must-pass case its siblings ran but this device has no result for is a difference too.
                    "_cases": {c["case_id"]: c for c in d["cases"]}
                    | {
                        cid: {"outcome": "missing", "failing_stage": None}
                        for cid in d.get("missing_must_pass", [])
                    },
                }
            )
    # Two reports from one host with the same label would collide; keep ids unique by source order.
    seen: Counter = Counter()
    for r in rows:
        seen[r["id"]] += 1
        if seen[r["id"]] > 1:
            r["id"] = f"{r['id']}@{seen[r['id']]}"
    return rows


def _result_key(c: dict[str, Any]) -> str:
    return c["outcome"] + (f"@{c['failing_stage']}" if c.get("failing_stage") else "")


def _conformant(key: str) -> bool:
    outcome = key.split("@")[0]
    return outcome in Outcome._value2member_map_ and Outcome(outcome).conformant


def compare(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and case run on 2+ devices: the results, the majority, and the devices that differ from it
    (without a strict majority: the non-conformant ones, else all)."""
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_model[r["model"]].append(r)
    out = []
    for model, devs in sorted(by_model.items()):
        case_ids = sorted({cid for d in devs for cid in d["_cases"]})
        for cid in case_ids:
            have = [(d["id"], d["_cases"][cid]) for d in devs if cid in d["_cases"]]
            if len(have) < 2:
                continue
            keys = {dev_id: _result_key(c) for dev_id, c in have}
            tally = Counter(keys.values())
            if len(tally) == 1:
                continue
            top, n = tally.most_common(1)[0]
            majority = top if n * 2 > len(keys) else None
            flagged = sorted(k for k, v in keys.items() if v != majority)
            if majority is None:
                # No majority (two cards, or an even split): the cards with a non-conformant result are the
                # suspects; when all results are conformant, or none is, every card of the case is flagged.
                bad = sorted(k for k, v in keys.items() if not _conformant(v))
                flagged = bad if 0 < len(bad) < len(keys) else flagged
            out.append(
                {
                    "model": model,
                    "case_id": cid,
                    "results": keys,
                    "max_ratio": {dev_id: c.get("max_ratio") for dev_id, c in have},
                    "majority": majority,
                    "flagged": flagged,
                }
            )
    return out


def merge_reports(paths: list[Path]) -> dict[str, Any]:
    reports = [(str(p), load_report(p)) for p in paths]
    rows = _device_rows(reports)
    diffs = compare(rows)
    flagged = Counter(dev for d in diffs for dev in d["flagged"])
    warnings = []
    for key in ("must_pass_hash", "kernel_source_hash", "version"):
        vals = {rep.get("suite", {}).get(key) for _, rep in reports}
        if len(vals) > 1:
            warnings.append(f"the reports differ in suite {key}: {sorted(map(str, vals))}")
    profiles = {rep.get("run", {}).get("profile") for _, rep in reports}
    if len(profiles) > 1:
        warnings.append(f"the reports ran different profiles: {sorted(map(str, profiles))}")
    verdicts = {r["id"]: r["verdict"] for r in rows}
    fleet = "conformant" if rows and all(v == "conformant" for v in verdicts.values()) else "not_conformant"
    if any(v in ("void", "partial") for v in verdicts.values()):
        fleet = "void" if "void" in verdicts.values() else "partial"
    return {
        "schema": FLEET_SCHEMA,
        "schema_version": FLEET_SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "reports": [
            {
                "path": src,
                "host": rep.get("environment", {}).get("host"),
                "node_verdict": rep["verdict"]["node"],
                "partial": rep.get("partial", False),
                "profile": rep.get("run", {}).get("profile"),
                "impl": rep.get("run", {}).get("impl"),
                "suite": {
                    k: rep.get("suite", {}).get(k)
                    for k in ("version", "git_sha", "kernel_source_hash", "must_pass_hash")
                },
            }
            for src, rep in reports
        ],
        "devices": [
            {k: v for k, v in r.items() if not k.startswith("_")} | {"flagged_cases": flagged[r["id"]]}
            for r in rows
        ],
        "comparison": diffs,
        "verdict": {"fleet": fleet, "devices": verdicts, "flagged_devices": dict(sorted(flagged.items()))},
        "warnings": warnings,
    }


def render_fleet_html(fleet: dict[str, Any]) -> str:
    v = fleet["verdict"]["fleet"]
    devs = "".join(
        f'<tr><td>{escape(d["id"])}</td><td>{escape(d["model"])}</td><td class="{d["verdict"]}">'
        f"{escape(VERDICT_TEXT[d['verdict']])}</td><td>{d['flagged_cases']}</td></tr>"
        for d in fleet["devices"]
    )
    diffs = "".join(
        f"<tr><td>{escape(d['model'])}</td><td>{escape(d['case_id'])}</td><td>{escape(str(d['majority']))}</td>"
        f"<td>{escape(', '.join(f'{k}: {r}' for k, r in d['results'].items()))}</td>"
        f'<td class="bad">{escape(", ".join(d["flagged"]))}</td></tr>'
        for d in fleet["comparison"]
    )
    warn = "".join(f"<li>{escape(w)}</li>" for w in fleet["warnings"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>moe-cts fleet report</title><style>{
        CSS
    }</style></head><body>
<h1>moe-cts fleet report</h1>
<p id="verdict" class="verdict {v}">{escape(VERDICT_TEXT[v])}</p>
{f"<ul>{warn}</ul>" if warn else ""}
<h2>Devices</h2><table><tr><th>device</th><th>model</th><th>verdict</th><th>cases differing from siblings</th></tr>
{devs}</table>
<h2>Cross-device comparison (devices of the same model)</h2>
{
        f"<table><tr><th>model</th><th>case</th><th>majority</th><th>results</th><th>flagged</th></tr>{diffs}</table>"
        if diffs
        else "<p>All devices of each model agree on every shared case.</p>"
    }
</body></html>
"""


def write_fleet(fleet: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    j, h = out / "fleet.json", out / "fleet.html"
    j.write_text(json.dumps(fleet, indent=1, sort_keys=True, default=str))
    h.write_text(render_fleet_html(fleet), encoding="utf-8")
    return j, h
