"""ci/gpu/router_bench.py --cpu-smoke runs every code path of the router benchmark and writes what it promises.

One subprocess run (~20 s on 2 cores) serves the module: the four presets at tiny shapes (DeepSeek-V3's grouped
routing scaled by the script) on the Triton interpreter, T = 1 and 5, route() and both forwards per point.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "ci" / "gpu" / "router_bench.py"
PATHS = ("route", "fwd_ids", "fwd_router")


def _module():
    spec = importlib.util.spec_from_file_location("router_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("router_bench") / "router_bench.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, (
        f"router_bench.py --cpu-smoke exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    )
    return {"doc": json.loads(out.read_text()), "stdout": proc.stdout}


def test_every_preset_and_token_count_has_a_timed_and_checked_row(run):
    mod = _module()
    points = run["doc"]["points"]
    assert [(p["preset"], p["T"]) for p in points] == [(k, t) for k in mod.PRESETS for t in mod.SMOKE_TOKENS]
    for p in points:
        assert not p.get("error"), p
        assert all(p[name]["ms"] > 0 for name in PATHS), p
        assert p["check"] == "bitwise equal"
        assert p["tiles"]["SPLIT_H"] >= 1 and p["tiles"]["logits_programs"] >= 1
    dsv3 = next(p for p in points if p["preset"] == "deepseek-v3")
    assert dsv3["k"] == mod.SMOKE_DSV3["top_k"]  # the grouped preset ran, scaled


def test_the_printed_table_is_the_one_in_the_json(run):
    doc = run["doc"]
    assert run["stdout"].strip().splitlines() == doc["table"]
    assert doc["meta"]["cpu_smoke"] and doc["meta"]["torch"] == torch.__version__


def test_fewer_than_50_replays_are_refused():
    with pytest.raises(SystemExit):
        _module().parse_args(["--out", "x.json", "--reps", "49"])


def test_a_forward_whose_router_path_differs_is_reported(monkeypatch):
    """The bitwise check can fail: a fused_moe that shifts its output when it routes itself."""
    import moe_cts.kernels as K

    mod = _module()
    real = K.fused_moe
    monkeypatch.setattr(
        K, "fused_moe", lambda s, w, x, routing=None: real(s, w, x, routing=routing) + (routing is None)
    )
    spec, w, x_full = mod.build("mixtral", True, torch.float32, "cpu", 3)
    rec = mod.run_point(spec, w, x_full, 3, mod.GraphTimer(cpu=True, reps=50), forward=True)
    assert rec["check"].startswith("FAILED") and rec["error"]
