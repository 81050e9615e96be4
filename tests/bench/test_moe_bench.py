"""ci/bench/moe_bench.py --cpu-smoke runs every code path of the benchmark script and writes what it promises.

One subprocess run (~30-40 s on 2 cores) serves the whole module: tiny shapes on the Triton interpreter, the vLLM
peer from ../shared/peer when that folder exists (MOE_CTS_PEER overrides), the old-vs-new comparison against
6e80182 extracted with `git archive` when this checkout's history has it. The floors must be the ones computed
from the ceilings measured in that run: a figure typed into the script would break the recomputation here.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "ci" / "bench" / "moe_bench.py"
PEER = Path(os.environ.get("MOE_CTS_PEER", ROOT.parent / "shared" / "peer"))
OLD_REV = "6e80182"
HAS_PEER = (PEER / "vllm_peer.py").is_file()
HAS_OLD = (
    subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{OLD_REV}^{{commit}}"], capture_output=True
    ).returncode
    == 0
)
POINT_FIELDS = {"preset", "T", "routing", "H", "I", "E", "k", "activation", "floor", "paths", "ratios"}
FLOOR_FIELDS = {"touched_experts", "weight_bytes", "flops", "bytes_ms", "flops_ms", "ms", "bound"}
CEILING_FIELDS = {"source", "copy_bytes", "copy_ms", "copy_bw_Bps", "matmul_n", "matmul_ms", "matmul_flops"}

sys.path.insert(0, str(SCRIPT.parent))
from bench_baseline import bits  # noqa: E402
from bench_points import roofline_floor  # noqa: E402

from moe_cts.reference.spec import MoESpec  # noqa: E402


def _smoke_run(out: Path, old: Path) -> str:
    """Run the script once into out (extracting the old tree into old first); its stdout."""
    cmd = [sys.executable, str(SCRIPT), "--cpu-smoke", "--out", str(out)]
    if HAS_PEER:
        cmd += ["--peer", str(PEER)]
    if HAS_OLD:
        old.mkdir(exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", OLD_REV, "kernels", "reference"],
                                 capture_output=True, check=True)  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        cmd += ["--baseline-src", str(old)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"moe_bench.py --cpu-smoke exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """{"doc": moe_bench.json, "table": moe_bench.md text, "stdout": printed table} of one smoke run, shared by
    the pytest-xdist workers (the first one runs it under a file lock, the others read its files)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    # under xdist every worker's basetemp sits in this session's folder; without xdist, parent is not per session
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "moe_bench_smoke"
    shared.mkdir(exist_ok=True)
    with FileLock(str(shared / "lock")):
        if not (shared / "stdout.txt").exists():
            (shared / "stdout.txt").write_text(_smoke_run(shared / "out", shared / "old"))
    return {
        "doc": json.loads((shared / "out" / "moe_bench.json").read_text()),
        "table": (shared / "out" / "moe_bench.md").read_text(),
        "stdout": (shared / "stdout.txt").read_text(),
    }


def test_smoke_run_writes_json_and_the_printed_table_beside_it(run):
    doc = run["doc"]
    assert set(doc) == {"meta", "points", "baseline", "summary"}
    assert doc["meta"]["cpu_smoke"] is True
    for line in run["stdout"].splitlines():
        assert line in run["table"], f"printed line missing from moe_bench.md: {line!r}"


def test_every_point_has_its_fields_and_no_error(run):
    pts = run["doc"]["points"]
    assert {(p["preset"], p["routing"]) for p in pts} == {
        ("mixtral", "router"), ("mixtral", "zipf1.2"), ("gpt-oss-120b", "router"), ("gpt-oss-120b", "zipf1.2")
    }  # fmt: skip
    for p in pts:
        assert "error" not in p, f"{p['preset']} T={p['T']}: {p.get('error')}"
        assert set(p) >= POINT_FIELDS, f"missing {POINT_FIELDS - set(p)}"
        assert set(p["floor"]) >= FLOOR_FIELDS, f"missing {FLOOR_FIELDS - set(p['floor'])}"
        assert p["paths"]["ours"]["ms"] > 0 and p["paths"]["ours"]["error"] is None
        assert p["paths"]["ours_graph"]["skipped"], "the CPU run must say why it has no CUDA-graph time"


def test_router_points_time_ours_with_the_router_and_zipf_points_do_not(run):
    for p in run["doc"]["points"]:
        if p["routing"] == "router":
            assert p["paths"]["ours_router"]["ms"] > 0, p["paths"]["ours_router"]
        else:
            assert "ours_router" not in p["paths"]


def test_ceilings_are_the_ones_measured_in_the_run(run):
    c = run["doc"]["meta"]["ceilings"]
    assert set(c) >= CEILING_FIELDS, f"missing {CEILING_FIELDS - set(c)}"
    assert "CPU stand-in" in c["source"]
    assert math.isclose(c["copy_bw_Bps"], 2 * c["copy_bytes"] / (c["copy_ms"] * 1e-3), rel_tol=1e-12)
    assert math.isclose(c["matmul_flops"], 2 * c["matmul_n"] ** 3 / (c["matmul_ms"] * 1e-3), rel_tol=1e-12)


def test_every_floor_is_recomputed_from_the_measured_ceilings(run):
    c = run["doc"]["meta"]["ceilings"]
    for p in run["doc"]["points"]:
        f, H, I = p["floor"], p["H"], p["I"]
        per_expert = 3 * H * I + (
            2 * I + H if p["activation"] == "swiglu_oai" else 0
        )  # gpt-oss: b13, b2 biases
        assert f["weight_bytes"] == f["touched_experts"] * per_expert * 4  # fp32 on the CPU
        assert f["flops"] == 2 * p["T"] * p["k"] * 3 * H * I
        assert math.isclose(f["bytes_ms"], 1e3 * f["weight_bytes"] / c["copy_bw_Bps"], rel_tol=1e-12)
        assert math.isclose(f["flops_ms"], 1e3 * f["flops"] / c["matmul_flops"], rel_tol=1e-12)
        assert f["ms"] == max(f["bytes_ms"], f["flops_ms"])
        ours = p["paths"]["ours"]
        assert math.isclose(ours["pct_floor"], 100 * f["ms"] / ours["ms"], rel_tol=1e-12)


def test_the_table_prints_the_floor_of_the_json(run):
    rows = {}
    main_table = run["table"].split("old (--baseline-src)")[0]  # the baseline table follows with its own rows
    for line in main_table.splitlines():
        cols = line.split()
        if len(cols) > 4 and cols[1].isdigit():
            rows[(cols[0], int(cols[1]), cols[2])] = cols[3]
    for p in run["doc"]["points"]:
        assert rows[(p["preset"], p["T"], p["routing"])] == f"{p['floor']['ms']:.3f}"


@pytest.mark.skipif(not HAS_PEER, reason=f"no vLLM peer at {PEER} (set MOE_CTS_PEER)")
def test_the_peer_runs_on_the_same_ids_and_agrees_with_ours(run):
    for p in run["doc"]["points"]:
        v = p["paths"]["vllm"]
        assert v["error"] is None and v["ms"] > 0, v
        assert v["check_rel"] <= 2e-2, (
            f"{p['preset']} T={p['T']}: vLLM differs from ours by {v['check_rel']:.2e}"
        )
        assert p["ratios"]["vllm/ours"] == v["ms"] / p["paths"]["ours"]["ms"]
    assert run["doc"]["summary"]["vllm/ours"]["points"] == len(run["doc"]["points"])


@pytest.mark.skipif(not HAS_OLD, reason=f"{OLD_REV} is not in this checkout's history")
def test_the_old_tree_is_compared_at_every_point(run):
    doc = run["doc"]
    assert len(doc["baseline"]) == len(doc["points"])
    for b in doc["baseline"]:
        assert b["error"] is None, b["error"]
        assert isinstance(b["bitwise_equal"], bool)
        modes = {"ids"} if b["routing"].startswith("zipf") else {"ids", "router"}
        assert set(b["new_over_old"]) == modes
        assert b["slower"] == any(v > 1.03 for v in b["new_over_old"].values())


def test_bits_tell_signed_zeros_apart_and_match_nans():
    a = torch.tensor([0.0, float("nan"), 1.0], dtype=torch.bfloat16)
    b = torch.tensor([-0.0, float("nan"), 1.0], dtype=torch.bfloat16)
    assert not torch.equal(bits(a), bits(b))
    assert torch.equal(bits(a[1:]), bits(b[1:]))


def test_the_floor_counts_only_experts_that_received_tokens():
    spec = MoESpec(hidden_size=4, intermediate_size=2, num_experts=8, top_k=2)
    ids = torch.tensor([[0, 1], [1, 0], [0, 5]], dtype=torch.int32)  # experts 0, 1, 5
    f = roofline_floor(spec, ids, elt=2, copy_bw_Bps=1e3, matmul_flops=1e6)
    assert f.touched_experts == 3
    assert f.weight_bytes == 3 * (4 * 4 + 4 * 2) * 2
    assert f.flops == 2 * 3 * 2 * 3 * 4 * 2
    assert (f.ms, f.bound) == (1e3 * f.weight_bytes / 1e3, "bytes")
