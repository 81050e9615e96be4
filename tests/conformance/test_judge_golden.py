"""The host-judge speed-ups (issue 15) change no reported number: scaled-down big cases and the quick
quantized cases give, field for field and to the last bit, what the judge reported before them
(judge_golden.py recorded data/judge_golden.json at 91ebd48). In a subprocess with one BLAS thread, since
OpenBLAS's float64 GEMM rounds differently with two, and on the AVX2 code paths the numbers were recorded on
(avx2_paths)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import judge_golden  # beside this file: pytest puts tests/conformance on sys.path (rootdir-less layout)

HERE = Path(__file__).parent


def test_golden_covers_the_big_quantized_case():
    golden = json.loads(judge_golden.GOLDEN.read_text())
    assert "torch-eager@cpu:quant-deepseek-v3-fp8-block-width" in golden
    assert len(golden) == len(judge_golden.RUNS)


def test_differences_can_fail():
    golden = json.loads(judge_golden.GOLDEN.read_text())
    k = next(iter(golden))
    moved = json.loads(json.dumps(golden))
    moved[k]["stages"][0]["max_ratio"] = repr(float(moved[k]["stages"][0]["max_ratio"]) * (1 + 2**-52))
    assert judge_golden.differences(moved, golden) and not judge_golden.differences(golden, golden)


def avx2_paths() -> dict[str, str]:
    """Environment that keeps torch, oneDNN, OpenBLAS and NumPy on their AVX2 kernels on an AVX-512 machine.

    The golden numbers came from a machine without AVX-512. On an AMD EPYC with AVX-512 (session 19) every run
    differed in the last bits: the oracle's float64 GEMMs (OpenBLAS's SkylakeX kernels), NumPy's AVX-512 loops and
    torch's bf16 CPU GEMMs (oneDNN's avx512_core_bf16) all round differently. With these four caps, all 14 runs
    equal the golden ones there. On a machine without AVX-512 they change nothing."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    if not __cpu_features__.get("AVX512F"):
        return {}
    # NumPy's AVX-512 dispatch targets in this build (2.4: X86_V4, AVX512_ICL, AVX512_SPR)
    npy = [f for f in __cpu_dispatch__ if f == "X86_V4" or f.startswith("AVX512")]
    return {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "OPENBLAS_CORETYPE": "Haswell",
            "NPY_DISABLE_CPU_FEATURES": " ".join(npy)}  # fmt: skip


def test_judge_numbers_equal_the_golden_ones():
    env = {
        **os.environ,
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "TRITON_INTERPRET": "1",
        **avx2_paths(),
    }
    r = subprocess.run(
        [sys.executable, str(HERE / "judge_golden.py"), "--check"],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
