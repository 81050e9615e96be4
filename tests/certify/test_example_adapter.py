"""A third-party package certified end to end: tests/example_adapter, written from docs/implementing.md alone,
installed into this venv and found through its entry points.

    example-moe            CONFORMANT on --device cpu (smoke): claims only what it computes
    example-moe-norenorm   NOT CONFORMANT, failing at the router stage: claims renormalize but skips it
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from filelock import FileLock

PACKAGE = Path(__file__).parents[1] / "example_adapter"
DIST = "moe-cts-example-adapter"


def _installed() -> bool:
    try:
        dist = metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        return False
    names = {ep.name for ep in dist.entry_points if ep.group == "moe_cts.implementations"}
    return {"example-moe", "example-moe-norenorm"} <= names


@pytest.fixture(scope="session")
def example_adapter() -> None:
    """pip install -e tests/example_adapter into this venv, once: idempotent, and locked against the other
    xdist workers (two concurrent pip runs in one venv corrupt it)."""
    with FileLock(str(Path(sys.prefix) / "moe-cts-example-adapter.lock")):
        if not _installed():
            cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e",
                   str(PACKAGE)]  # fmt: skip
            p = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
            assert p.returncode == 0, f"pip install of {PACKAGE} failed:\n{p.stdout}\n{p.stderr}"


def _cases(run) -> list[dict]:
    return run.report["devices"][0]["cases"]


def test_the_example_adapter_is_conformant_on_the_cpu(example_adapter, certified):
    run = certified(
        "example-moe", ["--device", "cpu", "--impl", "example-moe", "--profile", "smoke", "--jobs", "2"]
    )
    assert run.returncode == 0, run.stdout[-3000:]
    assert "verdict: CONFORMANT" in run.stdout
    outcomes = {c["outcome"] for c in _cases(run)}
    assert "pass" in outcomes and outcomes <= {"pass", "not_supported", "compatibility_warning"}
    # what it does not claim is NotSupported with the capability named, never a Fail
    unclaimed = {c["message"] for c in _cases(run) if c["outcome"] == "not_supported"}
    assert any("sigmoid not claimed" in m for m in unclaimed)


def test_the_wrong_variant_fails_at_the_router_stage(example_adapter, certified):
    run = certified("example-moe-norenorm",
                    ["--device", "cpu", "--impl", "example-moe-norenorm", "--profile", "smoke", "--jobs", "2"])  # fmt: skip
    assert run.returncode == 1, run.stdout[-3000:]
    assert "verdict: NOT CONFORMANT" in run.stdout
    failed = [c for c in _cases(run) if c["outcome"] == "fail"]
    assert failed and {c["failing_stage"] for c in failed} == {"router"}
    assert all("router weights" in c["message"] for c in failed)
