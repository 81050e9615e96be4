"""The swapped MXFP4 decode's code, in the compiler's own IR and in ptxas (sm90, this environment's Triton).

The swapped decode (kernels/_mxfp4_swapped.py) pays only while three things hold that no numeric test sees:
- Triton lowers its dots to wgmma with the decoded weights as the register operand (A) and the activation
  tile from shared memory (B);
- the decoded bf16 weights never go through shared memory;
- ptxas keeps the wgmmas asynchronous. It serializes every wgmma of a kernel (its C7515 note) when a non-wgmma
  instruction defines an accumulator register inside a wgmma pipeline stage, which the K loop's zero-trip
  path did before the first step was peeled off the loop.
This compiles gpt-oss-120b's T = 1 and T = 512 kernels with decode="swapped" and reads their TTGIR, then runs
Triton's own ptxas on their PTX and reads its notes.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from moe_cts.conformance.aot import matrix as aot
from moe_cts.conformance.aot import plan as aot_plan
from moe_cts.kernels import _mxfp4_gemm_kernels as MK
from moe_cts.kernels.mxfp4_gemm import TARGET_DECODE

KERNELS = ("mx_gate_up_kernel", "mx_down_kernel")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[tuple[str, int], Path]:
    keep = tmp_path_factory.mktemp("swapped-ir")
    scenarios = [
        aot_plan.Scenario(
            origin=f"T={t}",
            preset="gpt-oss-120b",
            num_tokens=t,
            dtype="bfloat16",
            targets=("sm90",),
            quant="mxfp4",
            config={"decode": "swapped"},
        )
        for t in (1, 512)
    ]
    jobs = [j for j in aot.plan_jobs(scenarios) if j["kernel"] in KERNELS]
    # on meta tensors with the plain scales real checkpoints have
    assert {j["launch"]["kwargs"]["DECODE"] for j in jobs} == {MK.DECODE_SWAPPED_PLAIN.value}
    results = aot.run_jobs(jobs, 1, str(keep))
    assert all(results[j["id"]].get("ok") for j in jobs), [results[j["id"]].get("error") for j in jobs]
    return {
        (j["kernel"], int(origin[2:])): Path(keep) / str(j["id"]) for j in jobs for origin in j["origins"]
    }


@pytest.mark.parametrize("tokens", [1, 512])
@pytest.mark.parametrize("kernel", KERNELS)
def test_the_decoded_weights_are_the_register_operand_of_wgmma(compiled, kernel, tokens):
    ir = compiled[kernel, tokens].with_suffix(".ttgir").read_text()
    assert not re.search(r"= tt\.dot ", ir), "a dot left for mma.sync"
    dots = [ln for ln in ir.splitlines() if re.search(r"= ttng\.warp_group_dot ", ln)]
    assert dots, "no wgmma in the swapped kernel"
    for ln in dots:
        # A: the decoded weights, a register tensor in the dot-operand layout; B: x.T from shared memory
        assert re.search(r": tensor<\d+x\d+xbf16, #ttg\.dot_op<\{opIdx = 0[^*]*\* !ttg\.memdesc<", ln), ln[
            :240
        ]
    # x (BLOCK_M x 128 bf16), the code words (i32) and the scale codes (i8) go to shared memory as the
    # pipeline's buffers; a (rows x 128) bf16 tile would be the decoded weights
    stored = re.findall(r"ttg\.local_alloc[^\n]*?memdesc<(?:\d+x)*\d+x128xbf16", ir)
    assert all(re.search(r"memdesc<(?:\d+x)?(?:16|32|64|128)x128xbf16", s) for s in stored), stored


@pytest.mark.parametrize("tokens", [1, 512])
@pytest.mark.parametrize("kernel", KERNELS)
def test_ptxas_keeps_the_wgmmas_asynchronous(compiled, kernel, tokens):
    from triton.backends.nvidia.compiler import get_ptxas

    ptx = compiled[kernel, tokens].with_suffix(".ptx")
    ptxas = get_ptxas(90).path
    if not Path(ptxas).exists():
        pytest.skip(f"no ptxas at {ptxas}")
    run = subprocess.run(
        [ptxas, "-arch=sm_90a", "-v", str(ptx), "-o", str(ptx.with_suffix(".check.cubin"))],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "C7515" not in run.stderr and "serialized" not in run.stderr, run.stderr[-2000:]


def test_the_ahead_of_time_default_is_each_targets_own_decode():
    """registry.active_target gives the heuristic the target's name, so an AOT compile of the default config
    builds what that device would launch: its mxfp4_gemm.TARGET_DECODE entry (sm90 -> swapped once certified on
    the H200), else packed, at every T (where sm90 takes swapped: T = 4096's BLOCK_M 128 row too, where packed's
    default is swar)."""
    plain = {"packed": MK.DECODE_PACKED_PLAIN.value, "swapped": MK.DECODE_SWAPPED_PLAIN.value}
    want = {t: plain[TARGET_DECODE.get(t, "packed")] for t in ("sm80", "sm90")}
    for target, decode in want.items():
        scenario = aot_plan.Scenario(
            origin="test:default-decode", preset="gpt-oss-120b", num_tokens=1, dtype="bfloat16",
            targets=(target,), quant="mxfp4",
        )  # fmt: skip
        jobs = [j for j in aot.plan_jobs([scenario]) if j["kernel"] in KERNELS]
        assert {j["launch"]["kwargs"]["DECODE"] for j in jobs} == {decode}, target
    big = aot_plan.Scenario(
        origin="test:default-decode", preset="gpt-oss-120b", num_tokens=4096, dtype="bfloat16", targets=("sm90",),
        quant="mxfp4",
    )  # fmt: skip
    if TARGET_DECODE.get("sm90") == "swapped":
        jobs = [j for j in aot.plan_jobs([big]) if j["kernel"] in KERNELS]
        assert {j["launch"]["kwargs"]["DECODE"] for j in jobs} == {MK.DECODE_SWAPPED_PLAIN.value}
