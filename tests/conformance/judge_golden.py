"""Scaled-down big cases and the exact numbers the judge reported for them before the host-judge speed-ups
(issue 15): tests/conformance/test_judge_golden.py replays them and compares every field to the last bit.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python tests/conformance/judge_golden.py [--check]
        rewrite data/judge_golden.json from the current tree; --check: compare instead, exit 1 on a difference

One BLAS thread: OpenBLAS's float64 GEMM gives other last bits with two threads than with one (measured: bias_z
-1.6479099115216689 vs -1.647909911521664 on the same case), so the numbers are pinned at one thread. AVX2 code
paths: on an AVX-512 machine torch, oneDNN, OpenBLAS and NumPy take kernels that round differently, so the test
caps them (test_judge_golden.avx2_paths; run this script with that environment there). Recorded
at 91ebd48 (before the speed-ups) on a 2-core x86-64 CPU machine, numpy 2.4.6 (scipy-openblas 0.3.31), torch 2.13.0.
Re-recorded in session 5 after the split router and `_common.dot_acc` changed what the Triton kernels compute on
the interpreter: only the two triton@interpreter entries moved (their router weights' error statistics); the
torch-eager entries, which measure the judge alone, were checked equal first.

Scaled: the must-pass gpu cases (quant-deepseek-v3-fp8-block-width, the *-width and *-full presets) with
H, I and the shared width divided by SCALE[name], T unchanged; the quick quantized cases as they are. Each
runs through run_case with torch-eager on the CPU (one torch thread: its own arithmetic does not depend on
the thread count then) and, for two small quantized cases, with the Triton kernels on the interpreter.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # the interpreter, as tests/conftest.py sets it, before triton is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch

from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.devices import select_device
from moe_cts.conformance.engine.must_pass import must_pass_entries
from moe_cts.conformance.engine.runner import run_case
from moe_cts.conformance.impls.registry import get_implementation

GOLDEN = Path(__file__).parent / "data" / "judge_golden.json"
#: must-pass case -> divisor of H, I and the shared width (a multiple of nothing in particular: the fp8
#: block cases get partial 128-blocks at H = 448, as the real widths have none)
SCALE = {
    "quant-deepseek-v3-fp8-block-width": 16,
    "deepseek-v3-width": 16,
    "gpt-oss-20b-width": 16,
    "qwen2-57b-a14b-width": 16,
    "mixtral-8x7b-full": 32,
    "quant-deepseek-v3-fp8-block": 1,
    "quant-deepseek-v3.1-fp8-block-ue8m0": 1,
    "quant-gpt-oss-mxfp4": 1,
    "quant-mixtral-fp8-per-tensor": 1,
    "quant-fp8-e4m3fnuz-per-token": 1,
    "quant-fp8-e5m2-block": 1,
    "quant-fp8-static-per-tensor": 1,
}
#: (impl, device) per run; the interpreter only for two small quantized cases (minutes otherwise)
RUNS = [("torch-eager", "cpu", name) for name in SCALE] + [
    ("triton", "interpreter", "quant-deepseek-v3-fp8-block"),
    ("triton", "interpreter", "quant-gpt-oss-mxfp4"),
]


def scaled_case(name: str) -> Case:
    e = next(e for e in must_pass_entries() if e["name"] == name)
    c = dict(e["case"])
    spec = dict(c["spec"])
    for f in ("hidden_size", "intermediate_size", "shared_intermediate_size"):
        if f in spec:
            spec[f] //= SCALE[name]
    return Case.from_json({**c, "spec": spec, "name": name})


def numbers(impl: str, device: str, name: str) -> dict[str, Any]:
    """Outcome, failing stage, message and every stage verdict's fields (floats as repr: exact)."""
    torch.set_num_threads(1)
    r = run_case(get_implementation(impl), scaled_case(name), select_device(device))
    stages = [{k: repr(v) for k, v in s.to_json().items()} for s in r.stages]
    return {
        "outcome": r.outcome.value,
        "failing_stage": r.failing_stage,
        "message": r.message,
        "stages": stages,
    }


def key(impl: str, device: str, name: str) -> str:
    return f"{impl}@{device}:{name}"


def differences(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """One line per run whose numbers differ from the golden ones (every field, exact)."""
    out = []
    for k in sorted(set(got) | set(want)):
        if got.get(k) != want.get(k):
            out.append(f"{k}: got {json.dumps(got.get(k))[:600]}\n  want {json.dumps(want.get(k))[:600]}")
    return out


if __name__ == "__main__":
    out = {key(*run): numbers(*run) for run in RUNS}
    if "--check" in sys.argv:
        diff = differences(out, json.loads(GOLDEN.read_text()))
        print("\n".join(diff) or f"{len(out)} runs equal to {GOLDEN.name}")
        sys.exit(1 if diff else 0)
    GOLDEN.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN} ({len(out)} runs)", file=sys.stderr)
