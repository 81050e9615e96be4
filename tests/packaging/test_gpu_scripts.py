"""The device scripts (ci/gpu/) name only what exists: a session's GPU call is minutes of a 30-minute budget, and
session 25's `probe OUT swap25` died on a KeyError there because the part was written but not registered."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROBE = REPO / "ci/gpu/perf_probe.py"


def _registered_parts() -> dict[str, set[str]]:
    """perf_probe's `parts` dict: part name -> the names its value calls (the function, or inside a lambda)."""
    for node in ast.walk(ast.parse(PROBE.read_text())):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "parts" for t in node.targets):
            assert isinstance(node.value, ast.Dict)
            return {
                k.value: {n.id for n in ast.walk(v) if isinstance(n, ast.Name)}
                for k, v in zip(node.value.keys, node.value.values, strict=True)
            }
    raise AssertionError("perf_probe.py: no `parts = {...}`")


def test_every_probe_part_function_is_registered() -> None:
    defined = set(re.findall(r"^def (part_\w+)\(timer", PROBE.read_text(), re.M))
    assert defined - set().union(*_registered_parts().values()) == set()


def test_every_probe_part_a_device_script_names_is_registered() -> None:
    parts = _registered_parts()
    named = {
        (sh.name, p)
        for sh in (REPO / "ci/gpu").glob("*.sh")
        for arg in re.findall(r'^\s*probe "\$\w+" ([\w,]+) ', sh.read_text(), re.M)
        for p in arg.split(",")
    }
    assert named, "no probe calls found: the pattern is stale"
    assert {(sh, p) for sh, p in named if p not in parts} == set()
