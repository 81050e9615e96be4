"""The wheel holds one top-level package, moe_cts, with every folder of the three parts (a subpackage missing
from pyproject's list would still import from an editable install, and only the wheel would lack it)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PARTS = {"reference": "moe_cts/reference", "kernels": "moe_cts/kernels", "conformance": "moe_cts/conformance"}


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (whl,) = out.glob("moe_cts-*.whl")
    return set(zipfile.ZipFile(whl).namelist())


def _on_disk(suffixes: tuple[str, ...]) -> set[str]:
    found = set()
    for folder, target in PARTS.items():
        for p in (ROOT / folder).rglob("*"):
            if p.suffix in suffixes and "__pycache__" not in p.parts:
                found.add(f"{target}/{p.relative_to(ROOT / folder).as_posix()}")
    return found


def test_the_only_top_level_package_is_moe_cts(wheel_names):
    tops = {n.split("/", 1)[0] for n in wheel_names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"moe_cts"}


def test_every_module_on_disk_is_in_the_wheel(wheel_names):
    missing = _on_disk((".py",)) - wheel_names
    assert not missing, f"listed nowhere in pyproject [tool.setuptools] packages: {sorted(missing)}"


def test_every_data_file_on_disk_is_in_the_wheel(wheel_names):
    missing = _on_disk((".json",)) - wheel_names
    assert not missing, f"not in [tool.setuptools.package-data]: {sorted(missing)}"


def test_the_console_script_and_plugin_point_into_moe_cts(wheel_names):
    (ep,) = [n for n in wheel_names if n.endswith("entry_points.txt")]
    assert ep  # the text itself is checked through importlib.metadata below
    from importlib.metadata import entry_points

    targets = [e.value for g in ("console_scripts", "pytest11", "moe_cts.implementations")
               for e in entry_points(group=g) if e.dist and e.dist.name == "moe-cts"]  # fmt: skip
    assert targets and all(t.startswith("moe_cts.") for t in targets), targets
