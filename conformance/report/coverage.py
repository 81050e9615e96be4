"""Coverage: what a run actually executed against what the implementation claims, and each profile's minimum.

A verdict needs coverage: a run whose cases are all NotSupported says nothing about the kernels. Per device,
from the case records of report.json (so `verify` recomputes it from the same records):

    executed(case)   = outcome not in {not_supported, waived}
    claimed(case)    = Capabilities.unsupported_case(case) is None
    missing          = [must-pass case claimed but not executed]
                     + [claimed dtype with < per_dtype executed cases (any source)]
                     + [claimed dtype with < generated_per_dtype executed generated cases]
                     + [claimed stage never judged (a stage verdict other than not_supported/waived)]
                     + [no executed case at all]

A dtype that the device matrix waives in every case of it is not required (the device cannot run it; the
waivers are data, docs/certify.md). A `--cases` subset only needs one executed case and its claimed must-pass
cases executed: it is never a certificate anyway.

    section        shape
    claimed        {dtypes [str], stages [verdict stage]}
    cases          {executed, not_supported, waived, total}
    not_supported_share   not_supported / total (0.0 when no case)
    per_dtype      {dtype: {executed, not_supported, waived, generated_executed}}
    per_stage      {stage: {executed, not_supported, waived}}   from the stage verdicts of each case
    minimum        the profile's CoverageMinimum as a dict
    missing        one line per shortfall; empty when the run qualifies
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.protocol import VERDICT_STAGE, Capabilities
from moe_cts.conformance.engine.results import STAGES

NOT_EXECUTED = ("not_supported", "waived")


@dataclass(frozen=True)
class CoverageMinimum:
    """The least a run of a profile must execute for its verdict to mean anything."""

    per_dtype: int  # executed cases (must-pass or generated) per claimed dtype
    generated_per_dtype: int  # executed generated cases per claimed dtype
    must_pass_claimed: bool = True  # every must-pass case inside the claims executes
    stages_judged: bool = True  # every claimed stage is judged at least once


#: smoke draws 4 generated cases over 3 dtypes (no dtype is sure to be drawn) and CI runs it with
#: --examples 0; its 10 must-pass cases cover float32, float16 and bfloat16, so 1 executed case per dtype
#: from any source is the floor. quick (200 generated) and full (2000) must generate in every claimed dtype.
MINIMUM = {
    "smoke": CoverageMinimum(per_dtype=1, generated_per_dtype=0),
    "quick": CoverageMinimum(per_dtype=10, generated_per_dtype=10),
    "full": CoverageMinimum(per_dtype=100, generated_per_dtype=100),
}
#: a --cases subset: one executed case, and its claimed must-pass cases executed
SUBSET_MINIMUM = CoverageMinimum(per_dtype=0, generated_per_dtype=0, stages_judged=False)


def capabilities_from_json(doc: dict[str, Any] | None) -> Capabilities | None:
    """The Capabilities recorded in run.json / report.json, or None when the implementation recorded none."""
    if not isinstance(doc, dict):
        return None
    return Capabilities.from_json(doc)


def claimed_stages(caps: Capabilities) -> list[str]:
    """Verdict stages (results.STAGES) the implementation claims: its exposed stages, memory when it takes
    out=, determinism when it claims determinism or batch invariance."""
    out = {VERDICT_STAGE[s] for s in caps.stages if s in VERDICT_STAGE}
    if caps.accepts_out and "forward" in caps.stages:
        out.add("memory")
    if (caps.deterministic or caps.batch_invariant) and "forward" in caps.stages:
        out.add("determinism")
    return [s for s in STAGES if s in out]


def _claimed(caps: Capabilities, case_id: str) -> bool:
    try:
        case = Case.from_id(case_id)
    except Exception:  # a foreign id cannot be claimed: it is not counted as a must-pass shortfall either
        return False
    return caps.unsupported_case(case) is None


def _counts(cases: list[dict[str, Any]]) -> tuple[dict, dict, dict]:
    total: Counter = Counter()
    per_dtype: dict[str, Counter] = defaultdict(Counter)
    per_stage: dict[str, Counter] = defaultdict(Counter)
    for c in cases:
        key = c["outcome"] if c["outcome"] in NOT_EXECUTED else "executed"
        total[key] += 1
        d = per_dtype[str(c.get("params", {}).get("dtype", "?"))]
        d[key] += 1
        if key == "executed" and c.get("source") == "generated":
            d["generated_executed"] += 1
        for s in c.get("stages", []):
            per_stage[s["stage"]][s["outcome"] if s["outcome"] in NOT_EXECUTED else "executed"] += 1
    fields = ("executed", "not_supported", "waived")
    dtypes = {k: {f: v[f] for f in (*fields, "generated_executed")} for k, v in sorted(per_dtype.items())}
    order = {s: i for i, s in enumerate(STAGES)}
    stages = {
        k: {f: v[f] for f in fields}
        for k, v in sorted(per_stage.items(), key=lambda kv: order.get(kv[0], 99))
    }
    return {**{f: total[f] for f in fields}, "total": sum(total.values())}, dtypes, stages


def _shortfalls(
    minimum: CoverageMinimum,
    caps: Capabilities,
    cases: list[dict[str, Any]],
    must_pass_ids: list[str],
    counts: dict,
    dtypes: dict,
    stages: dict,
) -> list[str]:
    missing: list[str] = []
    if counts["executed"] == 0:
        missing.append(
            f"no case was executed ({counts['not_supported']} not supported, {counts['waived']} waived)"
        )
    if minimum.must_pass_claimed:
        outcome = {c["case_id"]: c["outcome"] for c in cases if c.get("source") == "must_pass"}
        skipped = [i for i in must_pass_ids if outcome.get(i) in NOT_EXECUTED and _claimed(caps, i)]
        if skipped:
            missing.append(
                f"{len(skipped)} must-pass case(s) inside the claimed capabilities were not executed "
                f"({outcome[skipped[0]]}: {skipped[0]})"
            )
    for dt in sorted(caps.dtypes):
        d = dtypes.get(dt, {"executed": 0, "not_supported": 0, "waived": 0, "generated_executed": 0})
        if d["waived"] and not d["executed"] and not d["not_supported"]:
            continue  # the device matrix waives this dtype on this device
        if d["executed"] < minimum.per_dtype:
            missing.append(
                f"dtype {dt}: {d['executed']} executed case(s), the profile needs {minimum.per_dtype}"
            )
        if d["generated_executed"] < minimum.generated_per_dtype:
            missing.append(
                f"dtype {dt}: {d['generated_executed']} executed generated case(s), the profile needs "
                f"{minimum.generated_per_dtype}"
            )
    if minimum.stages_judged:
        for s in claimed_stages(caps):
            if stages.get(s, {}).get("executed", 0) == 0:
                missing.append(f"stage {s}: claimed but never judged")
    return missing


def coverage(
    cases: list[dict[str, Any]],
    capabilities: dict[str, Any] | None,
    must_pass_ids: list[str],
    profile: str | None,
    *,
    subset: bool = False,
) -> dict[str, Any]:
    """The coverage section of one device (module docstring) from its case records."""
    counts, dtypes, stages = _counts(cases)
    caps = capabilities_from_json(capabilities)
    minimum = SUBSET_MINIMUM if subset else MINIMUM.get(profile or "")
    section = {
        "claimed": {"dtypes": sorted(caps.dtypes), "stages": claimed_stages(caps)} if caps else None,
        "cases": counts,
        "not_supported_share": counts["not_supported"] / counts["total"] if counts["total"] else 0.0,
        "per_dtype": dtypes,
        "per_stage": stages,
        "minimum": dataclasses.asdict(minimum) if minimum else None,
        "missing": [],
    }
    if caps is None:
        section["missing"] = ["the implementation's capabilities were not recorded: nothing is claimed"]
    elif minimum is None:
        section["missing"] = [f"profile {profile!r} has no coverage minimum (known: {sorted(MINIMUM)})"]
    else:
        section["missing"] = _shortfalls(minimum, caps, cases, must_pass_ids, counts, dtypes, stages)
    return section


def coverage_line(section: dict[str, Any]) -> str:
    """One console line: executed, NotSupported (with its share) and waived cases."""
    c = section["cases"]
    return (
        f"coverage: {c['executed']} executed, {c['not_supported']} not supported "
        f"({100 * section['not_supported_share']:.0f}% of {c['total']}), {c['waived']} waived"
    )
