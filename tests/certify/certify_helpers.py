"""Helpers of the certify tests: run the real `moe-cts` CLI in a subprocess with the test doubles importable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
# The installed console script when there is one (the README's command), else the same app as a module.
_SCRIPT = Path(sys.executable).with_name("moe-cts")
MOE_CTS = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "moe_cts.conformance.cli.app"]


def cli_env(**extra: str) -> dict[str, str]:
    """The test doubles of cts_test_impls.py importable as "cts_test_impls:Class" in every shard process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
    env.pop("PYTEST_XDIST_WORKER", None)  # the shards' own xdist workers set theirs
    env.update(extra)
    return env


@dataclass
class Run:
    out: Path
    returncode: int
    stdout: str

    @property
    def report(self) -> dict:
        return json.loads((self.out / "report.json").read_text())


def run_cli(args: list[str], *, cwd: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*MOE_CTS, *args],
        cwd=cwd,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
