"""Shared AOT fixtures: one capture (plan) for all tests, one worker run for the acceptance compiles.

Every compile runs in conformance.aot subprocesses without TRITON_INTERPRET (the test process has it set).
CPU cost (measured, see docs/aot.md): planning ~25 s, acceptance compiles ~20 s, the table guard the rest.
"""

from __future__ import annotations

import pytest

from conformance import aot, aot_plan
from kernels.registry import Launch

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


@pytest.fixture(scope="session")
def planned_jobs() -> list[dict]:
    """The default tier on all six targets plus the acceptance scenarios, captured once (not compiled)."""
    return aot.plan_jobs(aot_plan.scenarios("default", aot_plan.target_names()) + ACCEPTANCE)


@pytest.fixture(scope="session")
def acceptance_records(planned_jobs) -> dict[str, list]:
    """{origin: records} of the acceptance scenarios and the probes, compiled in one worker run."""
    jobs = [j for j in planned_jobs if any(o.startswith("test:") for o in j["origins"])]
    jobs = [{**j, "origins": [o for o in j["origins"] if o.startswith("test:")]} for j in jobs]
    for i, p in enumerate(PROBES):
        jobs.append({**p, "id": 10_000 + i})
    results = aot.run_jobs(jobs, n_workers=1)
    targets = aot_plan.load_targets()
    out: dict[str, list] = {}
    for job in jobs:
        rec = aot.classify(job, results[job["id"]], targets)
        for origin in job["origins"]:
            out.setdefault(origin, []).append(rec)
    return out


@pytest.fixture(scope="session")
def table_records() -> list:
    """Every GEMM config of kernels/configs/cuda.json on sm80/sm90/sm100 and hip.json on gfx90a/942/950."""
    return aot.run_matrix(tier="tables", jobs=1)
