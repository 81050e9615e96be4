"""The smoke recall on the interpreter: every fault marked "smoke" is caught at its stage, on cases the
unmutated kernels pass. Measured on 2 shared cores: docs/recall.md (the budget is 10 minutes).

One test on purpose: the run is the expensive part (several minutes), and pytest-xdist would run a shared
module fixture once per worker. The assertions go from "the run means something" to "it caught enough".
A fault with a missing_check note documents a known gap of the suite: it must not be killed (once it is,
the note is out of date and the test says so).
"""

from __future__ import annotations

from moe_cts.conformance.recall.runner import run_recall
from moe_cts.conformance.recall.table import render


def test_the_smoke_recall_catches_every_smoke_fault_on_cases_the_real_kernels_pass() -> None:
    report = run_recall(profile="smoke", device="interpreter", jobs=2)
    faults = {f.name: f for f in report.faults}
    table = render(report)

    assert report.control, "no control cases ran"
    assert report.control_failures == [], f"the unmutated kernels fail cases the faults use:\n{table}"

    stale = {r.name: r.message for r in report.results if r.status in ("stale", "error")}
    assert stale == {}, "catalog entries no longer apply to the kernels"

    missed = [r.name for r in report.results if not faults[r.name].missing_check and r.status != "killed"]
    assert missed == [], f"smoke faults not caught at their stage:\n{table}"

    outdated = [r.name for r in report.results if faults[r.name].missing_check and r.status == "killed"]
    assert outdated == [], "the suite now catches these: drop their missing_check note in data/faults.json"

    row = report.recall()["smoke"]
    assert row["run"] == len(report.faults) == len([f for f in faults.values() if f.profile == "smoke"])
