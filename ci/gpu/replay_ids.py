"""Replay a file of case ids in one process: `python ci/gpu/replay_ids.py IDS.txt [--impl triton] [--device cuda:0]`.
Prints one line per case (outcome, failing stage, worst stage ratio) and exits 1 if any is not conformant."""

from __future__ import annotations

import argparse
import sys

from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.devices import select_device
from moe_cts.conformance.engine.runner import run_case
from moe_cts.conformance.impls.registry import get_implementation


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("ids")
    ap.add_argument("--impl", default="triton")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args(argv)
    device = select_device(a.device)
    impl = get_implementation(a.impl)
    bad = 0
    with open(a.ids) as f:
        ids = f.read().split()
    for cid in ids:
        r = run_case(impl, Case.from_id(cid), device)
        ratios = [s.max_ratio for s in r.stages if s.max_ratio is not None]
        print(
            f"{r.outcome.value:22s} {r.failing_stage or '-':12s} max ratio {max(ratios, default=float('nan')):.3f} {cid[:40]}"
        )
        bad += not r.outcome.conformant
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
