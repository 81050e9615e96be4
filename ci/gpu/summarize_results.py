"""Summarize a conformance results directory (results-*.jsonl): cases per dtype and outcome, and the largest
error/bound ratio per dtype and stage. `python ci/gpu/summarize_results.py DIR`."""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path


def main(directory: str) -> int:
    rows = []
    for f in sorted(Path(directory).glob("results-*.jsonl")):
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("event") == "result":
                rows.append(rec["result"])
    by = collections.Counter((r["params"].get("dtype"), r["outcome"]) for r in rows)
    worst: dict[tuple[str, str], float] = collections.defaultdict(float)
    for r in rows:
        for s in r.get("stages", []):
            if s.get("max_ratio") is not None:
                key = (r["params"].get("dtype"), s["stage"])
                worst[key] = max(worst[key], s["max_ratio"])
    print(f"{len(rows)} cases")
    for (dt, oc), n in sorted(by.items(), key=str):
        print(f"  {dt!s:9s} {oc:22s} {n}")
    print("largest error/bound ratio per dtype and stage:")
    for (dt, st), v in sorted(worst.items(), key=str):
        print(f"  {dt!s:9s} {st:12s} {v:.3f}")
    fails = [r for r in rows if r["outcome"] not in ("pass", "quality_warning", "compatibility_warning",
                                                     "not_supported", "waived")]  # fmt: skip
    for r in fails[:20]:
        print(
            f"NONCONFORMANT {r['outcome']} {r.get('failing_stage')} {r['case_id']} {r.get('message', '')[:200]}"
        )
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
