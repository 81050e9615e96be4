"""Simulated makespan of a certify run from a report's per-case durations: xdist's load order against
longest first (conformance/harness/schedule.py). Rough: on the session-4 H200 report it gives 371 s for
xdist's own order where the run took 269 s.

    python ci/bench/schedule_sim.py docs/measured/h200-certify-quick-session4.json --workers 10
"""

from __future__ import annotations

import argparse
import heapq
import json
from pathlib import Path

from moe_cts.conformance.engine.cost import GENERATED_CASE_S, case_cost
from moe_cts.conformance.engine.must_pass import must_pass_for

BATCHES, PER_BATCH = 8, 25  # the quick profile's generated batches


def makespan(items: list[tuple[float, float]], n: int, snake: bool) -> float:
    """items: (duration, cost) in hand-out order; a worker holds its running item and one more."""
    pend, queues = list(items), [[] for _ in range(n)]
    first = [(i, 1) for i in [*range(n), *range(n)[::-1]]] if snake else [(i, max(2, len(pend) // n // 4)) for i in range(n)]  # fmt: skip
    for node, k in first:
        queues[node] += [pend.pop(0) for _ in range(min(k, len(pend)))]
    events = [(q[0][0], i) for i, q in enumerate(queues) if q]
    heapq.heapify(events)
    end = 0.0
    while events:
        t, i = heapq.heappop(events)
        queues[i].pop(0)
        end = max(end, t)
        if pend and len(queues[i]) < 2:
            send = 1 if snake else max(1, max(2, len(pend) // n // 2) - len(queues[i]))
            queues[i] += [pend.pop(0) for _ in range(min(send, len(pend)))]
        if queues[i]:
            heapq.heappush(events, (t + queues[i][0][0], i))
    return end


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument(
        "--big-scale", type=float, default=1.0, help="scale the durations of cases with H >= 2048"
    )
    a = ap.parse_args()
    cases = json.loads(Path(a.report).read_text())["devices"][0]["cases"]
    dur = {c["case_id"]: c["duration_s"] for c in cases if c["source"] == "must_pass"}
    gen = sum(c["duration_s"] for c in cases if c["source"] == "generated") / BATCHES
    items = []
    for c in must_pass_for("quick", "cuda"):
        scale = a.big_scale if c.spec.hidden_size >= 2048 else 1.0
        items.append((dur.get(c.case_id, 6.0) * scale, case_cost(c)))
    items += [(gen, GENERATED_CASE_S * PER_BATCH)] * BATCHES
    ordered = sorted(items, key=lambda it: -it[1])
    print(f"{len(items)} tests, {sum(d for d, _ in items):.0f} s in all, longest {max(d for d, _ in items):.0f} s; "
          f"{a.workers} workers: xdist load order {makespan(items, a.workers, False):.0f} s, "
          f"longest first {makespan(ordered, a.workers, True):.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
