"""Shared AOT fixtures: one capture (plan) and one worker run for every compile the tests need.

Every compile runs in moe_cts.conformance.aot.matrix subprocesses without TRITON_INTERPRET (the test process has it set).
CPU cost, measured: see docs/aot.md (the table guard's ~100 GEMM compiles are most of it).
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from filelock import FileLock

from moe_cts.conformance.aot import matrix as aot
from moe_cts.conformance.aot import plan as aot_plan
from moe_cts.kernels.registry import Launch

#: 96 KiB of operand buffers for gate_up (BLOCK_M 64, BLOCK_N 64, BLOCK_K 64, 4 stages, bf16, gate and up
#: tiles): over the 64 KiB LDS of gfx942, well under the 227 KiB of sm90.
OVERSIZED = {
    "BLOCK_M": 64,
    "gate_up": {"BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 4, "num_stages": 4},
    "down": {"BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 4, "num_stages": 4},
}

ACCEPTANCE = [
    aot_plan.Scenario(
        origin="test:oversized",
        preset="mixtral-8x7b",
        num_tokens=512,
        dtype="bfloat16",
        targets=("sm90", "gfx942"),
        config=OVERSIZED,
        kernels=("gate_up_kernel",),
    ),
    aot_plan.Scenario(
        origin="test:fp8-e4m3fnuz",
        preset="mixtral-8x7b",
        num_tokens=512,
        dtype="bfloat16",
        targets=("sm90",),
        config=OVERSIZED,
        kernels=("gate_up_kernel",),
        fp8=("float8_e4m3fnuz",),
    ),
]


#: The router on every target (issue 15): DeepSeek-V3's logits tiles are the largest the heuristic picks (E 256:
#: BLOCK_E 64), in bf16 (the matrix units) and fp32 (the widest elements). GPUs run the select inside the logits
#: launch (kernels/router.py FUSED_SELECT), so that one kernel carries the grouped top-k as well.
ROUTER = [
    aot_plan.Scenario(
        origin=f"test:router:{dtype}",
        preset="deepseek-v3",
        num_tokens=1,
        dtype=dtype,
        targets=aot_plan.target_names(),
        kernels=("router_logits_kernel",),
    )
    for dtype in ("bfloat16", "float32")
]


def probe_job(kernel: str, target: str, **constexprs) -> dict:
    launch = Launch(kernel, ({"tensor": "float32", "shape": [1], "stride": [1]},), constexprs)
    info = aot_plan.load_targets()["targets"][target]
    return {
        "kernel": kernel,
        "target_name": target,
        "target": info,
        "dtype": "float32",
        "config": constexprs,
        "launch": launch.to_json(),
        "origins": [f"test:{kernel}"],
    }


PROBES = [
    probe_job("probe:target_probe", "gfx942", EXPECT_HIP=True),
    probe_job("probe:target_probe", "sm90", EXPECT_HIP=False),
    probe_job("probe:target_probe", "gfx950", EXPECT_HIP=False),  # negative control: must not compile
    probe_job("probe:die", "sm90"),
]


def quant_scenarios() -> list[aot_plan.Scenario]:
    """The default tier's quantized scenarios (MXFP4 with both scale placements and tl.dot_scaled, fp8 w8a8
    in each flavour, the cuda fp8 table rows) on one CUDA and one AMD target, renamed "test:quant:...": the
    interpreter runs only the branches a call takes, so a dead constexpr branch that does not compile is
    seen only here (session 4: the native MXFP4 decode under SCALE_AT = SCALE_IN_MMA)."""
    targets = ("sm90", "gfx942")
    return [
        dataclasses.replace(s, origin="test:quant:" + s.origin)
        for s in aot_plan.scenarios("default", targets)
        if s.quant is not None
    ]


def guard_scenarios() -> list[aot_plan.Scenario]:
    """The tables tier (every GEMM config of cuda.json on sm80/sm90/sm100, hip.json on gfx90a/942/950),
    renamed "guard:..." so its records stay apart from the default tier's table rows."""
    return [
        dataclasses.replace(s, origin="guard:" + s.origin)
        for s in aot_plan.scenarios("tables", aot_plan.target_names())
    ]


def _compile_everything() -> dict:
    """One plan (default tier + acceptance + router + guard) and one worker run (the same, and the probes)."""
    planned = aot.plan_jobs(
        aot_plan.scenarios("default", aot_plan.target_names())
        + ACCEPTANCE
        + ROUTER
        + quant_scenarios()
        + guard_scenarios()
    )
    ours = ("test:", "guard:")
    jobs = [
        {**j, "origins": [o for o in j["origins"] if o.startswith(ours)]}
        for j in planned
        if any(o.startswith(ours) for o in j["origins"])
    ]
    jobs += [{**p, "id": 10_000 + i} for i, p in enumerate(PROBES)]
    results = aot.run_jobs(jobs, n_workers=1)
    targets = aot_plan.load_targets()
    records: dict[str, list] = {}
    for job in jobs:
        rec = aot.classify(job, results[job["id"]], targets).to_json()
        for origin in job["origins"]:
            key = "guard" if origin.startswith("guard:") else origin
            records.setdefault(key, []).append({**rec, "origins": [origin]})
    return {"launched": sorted({(j["kernel"], j["target_name"]) for j in planned}), "records": records}


@pytest.fixture(scope="session")
def compiled(tmp_path_factory, worker_id) -> dict:
    """Computed once per test run, also under pytest-xdist: the first worker compiles, the others wait
    on the lock and read its result (a session fixture alone would compile once per worker)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if worker_id != "master" else base  # the parent is shared by the xdist workers
    path = root / "aot-compiled.json"
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            path.write_text(json.dumps(_compile_everything()))
        return json.loads(path.read_text())


@pytest.fixture(scope="session")
def launched(compiled) -> set[tuple[str, str]]:
    """(kernel, target) pairs that the default tier's captured launches reach."""
    return {tuple(x) for x in compiled["launched"]}


@pytest.fixture(scope="session")
def acceptance_records(compiled) -> dict[str, list]:
    """{origin: records} of the acceptance scenarios and the probes."""
    return {
        origin: [aot.AotRecord.from_json(r) for r in recs]
        for origin, recs in compiled["records"].items()
        if origin != "guard"
    }


@pytest.fixture(scope="session")
def table_records(compiled) -> list:
    """The guard's records: every GEMM config of both tables on its three targets."""
    return [aot.AotRecord.from_json(r) for r in compiled["records"].get("guard", [])]
