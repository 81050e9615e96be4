"""The hardware-facts table (kernels/target_info.py) is the one place the limits live: every reader gets
them from it, the JSON data files hold no copy, and a changed value reaches every reader."""

from __future__ import annotations

import dataclasses
import json

import pytest

from moe_cts.conformance.aot import plan as aot_plan
from moe_cts.conformance.engine import devices
from moe_cts.kernels import config as cfgmod
from moe_cts.kernels import target_info

#: The measured limits (docs/bugs.md#facts-shared-memory-limits, vendor guides): pinned here once so that an edit of the table is seen.
MEASURED_SHARED_LIMITS = {"sm80": 166912, "sm90": 232448, "sm100": 232448,
                          "gfx90a": 65536, "gfx942": 65536, "gfx950": 163840, "interpreter": None}  # fmt: skip


@pytest.fixture
def fresh_matrix():
    devices.load_matrix.cache_clear()
    yield
    devices.load_matrix.cache_clear()


def test_the_table_holds_the_measured_shared_memory_limits():
    assert {n: t.shared_limit_bytes for n, t in target_info.TARGETS.items()} == MEASURED_SHARED_LIMITS


def test_every_aot_target_is_a_row_of_the_table_with_its_facts():
    for name, row in aot_plan.load_targets()["targets"].items():
        t = target_info.get(name)
        got = {f: row[f] for f in aot_plan.HARDWARE_FIELDS}
        want = {
            "backend": t.backend,
            "arch": t.arch,
            "warp_size": t.warp_size,
            "shared_limit_bytes": t.shared_limit_bytes,
        }
        assert got == want, name


def test_the_device_matrix_reads_limits_and_fp8_from_the_table(fresh_matrix):
    gpu_rows = 0
    for row in devices.load_matrix()["entries"]:
        if row["backend"] == "cpu":  # plain PyTorch on the CPU runs no Triton code: no target, no limits
            assert row["shared_memory_per_block"] is None and row["fp8"] is None, row
            continue
        t = target_info.by_device(row["backend"], row["arch"])
        assert t is not None, (
            f"device matrix row {row['backend']}/{row['arch']} has no kernels/target_info.py row"
        )
        assert row["shared_memory_per_block"] == t.shared_limit_bytes, row["arch"]
        assert row["fp8"] == (t.fp8_native[0].removeprefix("float8_") if t.fp8_native else None), row["arch"]
        gpu_rows += t.is_gpu
    assert gpu_rows == len(target_info.GPU_TARGETS)


def test_the_config_table_guard_uses_the_smallest_limit_of_each_backend():
    assert cfgmod.SMEM_LIMIT_BYTES == {"cuda": 166912, "hip": 65536, "interpreter": None}
    assert {b: target_info.backend_shared_limit(b) for b in target_info.BACKENDS} == cfgmod.SMEM_LIMIT_BYTES


@pytest.mark.parametrize("path", [aot_plan.TARGETS_PATH, devices.MATRIX_PATH], ids=lambda p: p.name)
def test_the_json_data_files_hold_no_copy_of_a_limit(path):
    text = path.read_text()
    for key in ("shared_limit_bytes", "shared_memory_per_block", "warp_size"):
        assert f'"{key}"' not in text, f"{path.name} holds {key}: it belongs in kernels/target_info.py"
    for limit in {v for v in MEASURED_SHARED_LIMITS.values() if v is not None}:
        assert str(limit) not in text, f"{path.name} holds the number {limit}"


def test_a_changed_limit_reaches_every_reader(monkeypatch, fresh_matrix):
    changed = dataclasses.replace(target_info.TARGETS["gfx942"], shared_limit_bytes=12345)
    monkeypatch.setitem(target_info.TARGETS, "gfx942", changed)
    assert aot_plan.load_targets()["targets"]["gfx942"]["shared_limit_bytes"] == 12345
    row = next(r for r in devices.load_matrix()["entries"] if r["arch"] == "gfx942")
    assert row["shared_memory_per_block"] == 12345
    assert target_info.backend_shared_limit("hip") == 12345


def test_a_limit_put_back_into_aot_targets_json_is_refused(monkeypatch, tmp_path):
    data = json.loads(aot_plan.TARGETS_PATH.read_text())
    data["targets"]["sm90"]["shared_limit_bytes"] = 1
    path = tmp_path / "aot_targets.json"
    path.write_text(json.dumps(data))
    monkeypatch.setattr(aot_plan, "TARGETS_PATH", path)
    with pytest.raises(
        ValueError, match=r"targets\.sm90: \['shared_limit_bytes'\] belong in kernels/target_info\.py"
    ):
        aot_plan.load_targets()


def test_a_limit_put_back_into_the_device_matrix_is_refused(monkeypatch, tmp_path, fresh_matrix):
    data = json.loads(devices.MATRIX_PATH.read_text())
    data["entries"][0]["shared_memory_per_block"] = 1
    path = tmp_path / "device_matrix.json"
    path.write_text(json.dumps(data))
    monkeypatch.setattr(devices, "MATRIX_PATH", path)
    with pytest.raises(ValueError, match=r"\['shared_memory_per_block'\] belong in kernels/target_info\.py"):
        devices.load_matrix()


def test_native_fp8_flavours_agree_with_the_measured_compile_outcomes():
    flavours = aot_plan.load_targets()["fp8_flavours"]
    for name in target_info.GPU_TARGETS:
        native = tuple(dt for dt, row in flavours.items() if row[name] == "native")
        assert native == target_info.get(name).fp8_native, name


def test_one_warp_size_per_backend():
    assert [target_info.backend_warp_size(b) for b in target_info.BACKENDS] == [32, 64, 32]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("backend", "metal", r"sm90\.backend: expected one of"),
        ("warp_size", 16, r"sm90\.warp_size: expected 32 or 64, got 16"),
        ("shared_limit_bytes", None, r"sm90\.shared_limit_bytes: expected bytes > 0 on a GPU"),
        ("shared_limit_bytes", 0, r"sm90\.shared_limit_bytes: expected bytes > 0 on a GPU"),
    ],
)
def test_a_malformed_row_is_refused_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(target_info.TARGETS["sm90"], **{field: value})


def test_an_unknown_target_names_the_known_ones():
    with pytest.raises(KeyError, match=r"target: expected one of \[.*'sm90'.*\], got 'sm75'"):
        target_info.get("sm75")
