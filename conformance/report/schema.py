"""report.json: one certify run, built from the shard directories the plugin wrote (docs/report-schema.md).

A shard is one device: DIR/shards/<label>/ holds run.json (what ran, where) and results-*.jsonl.
Verdicts, per device and for the node:

    conformant       every case conformant, every must-pass case of the profile present, and the coverage
                     minimum of the profile met (report/coverage.py)
    not_conformant   a Fail, Crash or Timeout, or a must-pass case missing
    partial          the run was interrupted (Ctrl-C): never a certificate
    void             an InternalError, the shard never started, or a run that would be conformant but is below
                     its coverage minimum (all NotSupported, a claimed dtype or stage never run, --cases bogus):
                     the run says nothing about the kernels
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.log import read_results
from moe_cts.conformance.engine.results import STAGES, CaseResult, Outcome
from moe_cts.conformance.engine.session import replay_command
from moe_cts.conformance.report.compile import apply_compile
from moe_cts.conformance.report.coverage import coverage

SCHEMA = "moe-cts/report"
#: 2: the top-level "compile" section and verdict.compile / verdict.reasons (certify --compile).
SCHEMA_VERSION = 2
VERDICTS = ("conformant", "not_conformant", "partial", "void")
EXIT_CODES = {"conformant": 0, "not_conformant": 1, "partial": 1, "void": 2}
#: Worst elements kept per non-conformant stage in the report (the failure directory keeps them all).
WORST_IN_REPORT = 5


def case_record(
    source: str, r: CaseResult, impl: str, device_arg: str, strict_ties: bool = False
) -> dict[str, Any]:
    """One case in report.json: the CaseResult plus the ratio statistics and, when it failed, its replay line."""
    ratios = [s.max_ratio for s in r.stages if s.max_ratio is not None]
    p99 = [s.p99_ratio for s in r.stages if s.p99_ratio is not None]
    stages = []
    for s in r.stages:
        d = s.to_json()
        d["worst"] = d["worst"][:WORST_IN_REPORT] if not s.outcome.conformant else []
        stages.append(d)
    return {
        "case_id": r.case_id,
        "source": source,
        "outcome": r.outcome.value,
        "conformant": r.outcome.conformant,
        "failing_stage": r.failing_stage,
        "message": r.message,
        "params": r.params or _params_of(r.case_id),
        "kernel_config": r.kernel_config,
        "duration_s": r.duration_s,
        "max_ratio": max(ratios) if ratios else None,
        "p99_ratio": max(p99) if p99 else None,
        "stages": stages,
        "replay": None if r.outcome.conformant else replay_command(r.case_id, impl, device_arg, strict_ties),
    }


def _params_of(case_id: str) -> dict[str, Any]:
    """Parameters of a case whose result carries none (a Crash recorded from its "started" line)."""
    try:
        return Case.from_id(case_id).params()
    except Exception:  # a foreign or malformed id: the record keeps its id, the report stays writable
        return {}


def _dedupe(results: list[tuple[str, CaseResult]]) -> list[tuple[str, CaseResult]]:
    """Last result per (source, case id): a case re-run after a worker restart counts once."""
    last: dict[tuple[str, str], tuple[str, CaseResult]] = {}
    for source, r in results:
        last[(source, r.case_id)] = (source, r)
    return list(last.values())


def device_section(shard: Path, *, partial: bool) -> dict[str, Any]:
    """Per-device part of the report: run.json, the case records and the device verdict with its reasons."""
    run_path = shard / "run.json"
    run = json.loads(run_path.read_text()) if run_path.exists() else None
    logged = read_results(shard, interrupted=partial)
    impl = run["impl"] if run else "?"
    device_arg = run["device_arg"] if run else shard.name
    strict = bool((run or {}).get("strict_ties", False))
    cases = [case_record(src, r, impl, device_arg, strict) for src, r in _dedupe(logged.results)]
    cases.sort(key=lambda c: (c["source"] != "must_pass", c["case_id"]))
    present = {c["case_id"] for c in cases if c["source"] == "must_pass"}
    missing = [i for i in (run or {}).get("must_pass_ids", []) if i not in present]
    counts = Counter(c["outcome"] for c in cases)
    reasons: list[str] = []
    if run is None:
        reasons.append(f"shard {shard.name} never started (no run.json): see its pytest.log")
    if counts.get(Outcome.INTERNAL_ERROR.value):
        reasons.append(f"{counts[Outcome.INTERNAL_ERROR.value]} internal error(s) void the run")
    bad = sum(n for o, n in counts.items() if not Outcome(o).conformant and o != Outcome.INTERNAL_ERROR.value)
    if bad:
        reasons.append(f"{bad} case(s) not conformant")
    if missing:
        reasons.append(f"{len(missing)} must-pass case(s) missing")
    if partial:
        reasons.append(f"interrupted: {len(logged.unfinished)} case(s) cut off, the rest not run")
    cov = coverage(
        cases,
        (run or {}).get("capabilities"),
        (run or {}).get("must_pass_ids", []),
        (run or {}).get("profile"),
        subset=bool((run or {}).get("subset")),
    )
    if run is not None and not partial:
        reasons += [f"coverage below the profile's minimum: {m}" for m in cov["missing"]]
    if run is None or counts.get(Outcome.INTERNAL_ERROR.value):
        verdict = "void"
    elif partial:
        verdict = "partial"
    elif bad or missing:
        verdict = "not_conformant"  # a Fail is a finding however little ran
    elif cov["missing"]:
        verdict = "void"
    else:
        verdict = "conformant"
    return {
        "label": run["label"] if run else shard.name,
        "device_arg": device_arg,
        "device": (run or {}).get("device", {}),
        "verdict": verdict,
        "reasons": reasons,
        "counts": dict(sorted(counts.items())),
        "planned": (run or {}).get("planned"),
        "must_pass_ids": (run or {}).get("must_pass_ids", []),
        "missing_must_pass": missing,
        "coverage": cov,
        "unfinished": [e["case_id"] for e in logged.unfinished],
        "cases": cases,
        "_run": run,
    }


def node_verdict(devices: list[dict[str, Any]]) -> str:
    vs = {d["verdict"] for d in devices}
    for v in ("void", "partial", "not_conformant"):
        if v in vs:
            return v
    return "conformant" if devices else "void"


def build_report(
    shards: list[Path],
    *,
    partial: bool = False,
    command: list[str] | None = None,
    started: float | None = None,
    compile_section: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report of the shards; `compile_section` (certify --compile, moe_cts.conformance.report.compile) is added
    as "compile" and a compile Fail makes a conformant node not conformant."""
    devices = [device_section(s, partial=partial) for s in shards]
    runs = [d.pop("_run") for d in devices]
    first = next((r for r in runs if r), {}) or {}
    verdict = node_verdict(devices)
    report = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "partial": partial,
        "suite": {
            **first.get("suite", {}),
            "must_pass_version": first.get("must_pass_version"),
            "must_pass_hash": first.get("must_pass_hash"),
        },
        "run": {
            "impl": first.get("impl"),
            "profile": first.get("profile"),
            "hypothesis_profile": first.get("hypothesis_profile"),
            "generated_examples": first.get("generated_examples"),
            "seeds": {"base": first.get("seed"), "batches": first.get("batch_seeds", [])},
            "timeout_s": first.get("timeout_s"),
            "strict_ties": bool(first.get("strict_ties", False)),
            "command": command or [],
            "started": started or first.get("started"),
            "duration_s": (time.time() - started) if started else None,
        },
        "environment": first.get("environment", {}),
        "implementation": {"name": first.get("impl"), "capabilities": first.get("capabilities")},
        "verdict": {
            "node": verdict,
            "conformant": verdict == "conformant",
            "devices": {d["label"]: d["verdict"] for d in devices},
            "counts": dict(sum((Counter(d["counts"]) for d in devices), Counter())),
        },
        "devices": devices,
    }
    report["claims"] = claims_section(devices, first.get("capabilities") or {})
    apply_compile(report, compile_section)
    return report


def claims_section(devices: list[dict[str, Any]], caps: dict[str, Any]) -> dict[str, Any]:
    """The determinism claims as checked: per claim, whether it is made and over how many cases the
    `determinism` stage judged it (runner.determinism_verdict: two runs bitwise; sub-batches of
    engine/invariance.py), with the failures. A claim made and judged on no case is checked on nothing."""
    judged = [
        s["outcome"]
        for d in devices
        for c in d["cases"]
        for s in c.get("stages", [])
        if s["stage"] == "determinism" and s["outcome"] not in ("not_supported", "waived")
    ]
    out = {}
    for claim in ("deterministic", "batch_invariant"):
        made = bool(caps.get(claim, False))
        out[claim] = {
            "claimed": made,
            "cases_checked": len(judged) if made else 0,
            "failed": sum(o == "fail" for o in judged) if made else 0,
        }
    return out


def write_report(report: dict[str, Any], out: Path) -> Path:
    path = out / "report.json"
    tmp = out / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=1, sort_keys=True, default=str))
    tmp.replace(path)
    return path


def all_cases(report: dict[str, Any]):
    for d in report.get("devices", []):
        for c in d.get("cases", []):
            yield d, c


def summary_matrix(report: dict[str, Any]) -> dict[tuple[str, str], Counter]:
    """(stage, dtype) -> Counter of outcomes. A case without stage verdicts (crash, timeout) counts under
    its failing stage, or "case" when none is known."""
    m: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for _, c in all_cases(report):
        dtype = str(c["params"].get("dtype", "?"))
        if c["stages"]:
            for s in c["stages"]:
                m[(s["stage"], dtype)][s["outcome"]] += 1
        else:
            m[(c["failing_stage"] or "case", dtype)][c["outcome"]] += 1
    order = {s: i for i, s in enumerate(STAGES)}
    return dict(sorted(m.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][0], kv[0][1])))
