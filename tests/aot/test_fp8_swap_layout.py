"""The fp8 operand swap (GemmTile.swap_ab) in the compiler's own IR and in ptxas (sm90, this environment's Triton).

The swap pays only if the decode-size tiles (BLOCK_M 16) reach fp8 wgmma: the unswapped dot is mma.sync, which has
no fp8 on sm90, so Triton widens both tiles to fp16 first. No numeric test sees which instruction ran. This
compiles DeepSeek-V3's block fp8 GEMMs at T = 1 on conformance/aot/plan.FP8_SWAP_TILES and checks that every
dot is a warp_group_dot on fp8 operands (the weight box first: from shared memory in GEMM2, through registers in
GEMM1, whose gate and up halves are one reshaped box) and that ptxas keeps the wgmmas asynchronous.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from moe_cts.conformance.aot import matrix as aot
from moe_cts.conformance.aot import plan as aot_plan
from moe_cts.kernels import _fp8_gemm_kernels as K

KERNELS = ("fp8_gate_up_kernel", "fp8_down_kernel")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, Path]:
    keep = tmp_path_factory.mktemp("fp8-swap-ir")
    scenario = aot_plan.Scenario(
        origin="test:fp8-swap",
        preset=aot_plan.FP8_MOE_PRESET,
        num_tokens=1,
        dtype="bfloat16",
        targets=("sm90",),
        config=aot_plan.FP8_SWAP_TILES,
        quant="fp8_block:e4m3fn",
    )
    jobs = [j for j in aot.plan_jobs([scenario]) if j["kernel"] in KERNELS]
    assert {j["launch"]["kwargs"]["W_DESC"] for j in jobs} == {K.W_BOX_A.value}  # both GEMMs take the swap
    results = aot.run_jobs(jobs, 1, str(keep))
    assert all(results[j["id"]].get("ok") for j in jobs), [results[j["id"]].get("error") for j in jobs]
    return {j["kernel"]: Path(keep) / str(j["id"]) for j in jobs}  # routed and shared expert: the same kernel


@pytest.mark.parametrize("kernel", KERNELS)
def test_the_weight_box_is_the_first_operand_of_an_fp8_wgmma(compiled, kernel):
    ir = compiled[kernel].with_suffix(".ttgir").read_text()
    assert not re.search(r"= tt\.dot ", ir), "a dot left for mma.sync"
    dots = [ln for ln in ir.splitlines() if re.search(r"= ttng\.warp_group_dot ", ln)]
    assert dots, "no wgmma in the swapped fp8 kernel"
    # A: the (64, BLOCK_K) weight box in fp8, from shared memory (GEMM2) or loaded from it into registers
    # (GEMM1, whose gate and up halves are one reshaped box); B: the activation tile's transpose in fp8
    a_operand = r"(?:!ttg\.memdesc<64x128xf8E4M3FN|tensor<64x128xf8E4M3FN, #ttg\.dot_op<\{opIdx = 0)"
    b_operand = r"!ttg\.memdesc<128x16xf8E4M3FN"
    for ln in dots:
        assert re.search(": " + a_operand + r"[^*]*\* " + b_operand, ln), ln[:240]


@pytest.mark.parametrize("kernel", KERNELS)
def test_ptxas_keeps_the_fp8_wgmmas_asynchronous(compiled, kernel):
    from triton.backends.nvidia.compiler import get_ptxas

    ptx = compiled[kernel].with_suffix(".ptx")
    assert "wgmma.mma_async.sync.aligned.m64n16k32.f32.e4m3.e4m3" in ptx.read_text()
    ptxas = get_ptxas(90).path
    if not Path(ptxas).exists():
        pytest.skip(f"no ptxas at {ptxas}")
    run = subprocess.run(
        [ptxas, "-arch=sm_90a", "-v", str(ptx), "-o", str(ptx.with_suffix(".check.cubin"))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "C7515" not in run.stderr and "serialized" not in run.stderr, run.stderr[-2000:]
