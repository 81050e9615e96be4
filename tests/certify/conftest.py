"""Fixtures of the certify tests: run the real `moe-cts` CLI in a subprocess, once per distinct command even
across xdist workers (a file lock in the session's shared temp directory), and find chromium."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from certify_helpers import Run, run_cli
from filelock import FileLock


@pytest.fixture(scope="session")
def certified(tmp_path_factory):
    """certified(key, args) -> Run: `moe-cts certify *args` in a fresh directory (outputs in its default
    ./moe-cts-out), run once for the whole session."""
    shared = tmp_path_factory.getbasetemp().parent  # the same directory for every xdist worker

    def run(key: str, args: list[str], **env: str) -> Run:
        cwd = shared / f"certify-{key}"
        done = shared / f"certify-{key}.json"
        with FileLock(str(shared / f"certify-{key}.lock")):
            if not done.exists():
                cwd.mkdir(exist_ok=True)
                p = run_cli(["certify", *args], cwd=cwd, **env)
                done.write_text(json.dumps({"rc": p.returncode, "stdout": p.stdout + p.stderr}))
        meta = json.loads(done.read_text())
        return Run(cwd / "moe-cts-out", meta["rc"], meta["stdout"])

    return run


@pytest.fixture(scope="session")
def smoke_run(certified) -> Run:
    """Acceptance 1: `moe-cts certify` exactly as the README writes it (triton, interpreter, smoke)."""
    return certified("smoke", [])


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium. A newcomer's machine may lack it: the browser tests then skip with the reason. CI
    installs chromium and sets MOE_CTS_REQUIRE_BROWSER=1, where a missing browser fails instead, so the page is
    checked in a real browser on every submission."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        why = "chromium is not installed (apt-get install -y chromium): the report page is not checked in a browser"
        if os.environ.get("MOE_CTS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{why}, and MOE_CTS_REQUIRE_BROWSER=1 requires it", pytrace=False)
        pytest.skip(why)
    return exe
