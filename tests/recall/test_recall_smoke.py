"""The smoke recall on the interpreter: every fault marked "smoke" is caught at its stage, on cases the
unmutated kernels pass. Measured on 2 cores: see docs/recall.md (the budget is 10 minutes).

A fault with a missing_check note documents a known gap of the suite: it must survive (or be caught only
elsewhere); once it is killed the note is out of date and this test says so.
"""

from __future__ import annotations

import pytest

from moe_cts.conformance.recall.runner import run_recall
from moe_cts.conformance.recall.table import render


@pytest.fixture(scope="module")
def report():
    return run_recall(profile="smoke", device="interpreter", jobs=2)


def test_the_unmutated_kernels_pass_every_case_the_faults_use(report) -> None:
    assert report.control, "no control cases ran"
    assert report.control_failures == [], render(report)


def test_no_catalog_entry_is_stale(report) -> None:
    bad = {r.name: r.message for r in report.results if r.status in ("stale", "error")}
    assert bad == {}


def test_every_smoke_fault_is_caught_at_its_stage(report) -> None:
    faults = {f.name: f for f in report.faults}
    missed = [r.name for r in report.results if faults[r.name].profile == "smoke" and not faults[r.name].missing_check
              and r.status != "killed"]  # fmt: skip
    assert missed == [], render(report)


def test_faults_with_a_missing_check_note_still_survive(report) -> None:
    faults = {f.name: f for f in report.faults}
    outdated = [r.name for r in report.results if faults[r.name].missing_check and r.status == "killed"]
    assert outdated == [], "the suite now catches these: drop their missing_check note in data/faults.json"


def test_the_smoke_recall_counts_every_runnable_fault(report) -> None:
    row = report.recall()["smoke"]
    assert row["run"] == len([f for f in report.faults if f.profile == "smoke"])
    assert 0.0 < row["recall"] <= 1.0
