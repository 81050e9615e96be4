"""The packed MXFP4 decode's layout, in the compiler's own IR (sm90, this environment's Triton).

The packed decode (kernels/_mxfp4_packed.py) is fast only while Triton lays its decoded tile out as the MMA
operand: kWidth 8 (a whole code word per thread), which Triton derives from the narrowest load feeding the dot
(AccelerateMatmul's computeOrigBitWidth: the uint8 scale load), and no trip of the decoded weights through
shared memory. Nothing in the interpreter sees a layout, so a Triton release that changed the heuristic, or an
edit that widened the scale load, would pass every numeric test and lose the speed (session 23: a uint32 scale
load gave kWidth 4 and warp shuffles, 896 instead of 625 instructions per gate_up step). This compiles the
default gpt-oss-120b T = 1 kernels and reads their TTGIR.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from _ptx import async_copies

from moe_cts.conformance.aot import matrix as aot
from moe_cts.conformance.aot import plan as aot_plan
from moe_cts.kernels import _mxfp4_gemm_kernels as MK

KERNELS = ("mx_gate_up_kernel", "mx_down_kernel")
#: the code layouts: row-major (1) and tile-major groups of 64 rows (Mxfp4Config.row_group)
GROUPS = (1, 64)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[tuple[str, int], Path]:
    keep = tmp_path_factory.mktemp("packed-ttgir")
    scenarios = [
        aot_plan.Scenario(
            origin=f"G={g}",
            preset="gpt-oss-120b",
            num_tokens=1,
            dtype="bfloat16",
            targets=("sm90",),
            quant="mxfp4",
            config={"decode": "packed", **({"row_group": g} if g > 1 else {})},
        )
        for g in GROUPS
    ]
    jobs = [j for j in aot.plan_jobs(scenarios) if j["kernel"] in KERNELS]
    # the packed decode (the default at T = 1 where mxfp4_gemm.TARGET_DECODE names no other),
    # on meta tensors with the plain scales real checkpoints have
    assert {j["launch"]["kwargs"]["DECODE"] for j in jobs} == {MK.DECODE_PACKED_PLAIN.value}
    results = aot.run_jobs(jobs, 1, str(keep))
    assert all(results[j["id"]].get("ok") for j in jobs), [results[j["id"]].get("error") for j in jobs]
    return {(j["kernel"], int(o[2:])): Path(keep) / str(j["id"]) for j in jobs for o in j["origins"]}


@pytest.fixture(scope="module")
def ttgir(compiled) -> dict[str, str]:
    return {k: compiled[k, 1].with_suffix(".ttgir").read_text() for k in KERNELS}


@pytest.mark.parametrize("kernel", KERNELS)
def test_the_decoded_tile_is_the_mma_operand_with_a_whole_word_per_thread(ttgir, kernel):
    ir = ttgir[kernel]
    dots = [ln for ln in ir.splitlines() if re.search(r"= tt\.dot ", ln)]
    assert dots, "no tt.dot in the packed kernel"
    for ln in dots:
        widths = set(re.findall(r"kWidth = (\d+)", ln))
        assert widths == {"8"}, f"dot operands with kWidth {widths}, expected 8: {ln.strip()[:200]}"
    # the decoded bf16 weights (128 x BLOCK_N) never go to shared memory; x (BLOCK_M x 128 bf16), the code
    # words (i32) and the scale codes (i8) do, as the pipeline's buffers
    stored = re.findall(r"ttg\.local_alloc[^\n]*?memdesc<(?:\d+x)?128x\d+xbf16", ir)
    assert not stored, stored


@pytest.mark.parametrize("kernel", KERNELS)
def test_tile_major_codes_keep_the_layout_and_the_pipelines_copies(compiled, kernel):
    """Row groups change only the codes' addresses: the same kWidth 8 dot operands and the same cp.async copies
    (16 bytes of code words, 4 of scale codes per thread and row) as the row-major copy."""
    ir = {g: compiled[kernel, g].with_suffix(".ttgir").read_text() for g in GROUPS}
    dots = {g: re.findall(r"= tt\.dot .*", ir[g]) for g in GROUPS}
    assert [re.findall(r"kWidth = \d+", d) for d in dots[64]] == [
        re.findall(r"kWidth = \d+", d) for d in dots[1]
    ]
    row_major, tiled = (async_copies(compiled[kernel, g].with_suffix(".ptx").read_text()) for g in GROUPS)
    assert tiled == row_major and row_major.get("0x10"), (row_major, tiled)
