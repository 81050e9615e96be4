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

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _ptx import async_copies

from moe_cts.conformance.aot import matrix as aot
from moe_cts.conformance.aot import plan as aot_plan
from moe_cts.kernels import _mxfp4_gemm_kernels as MK
from moe_cts.kernels import mxfp4_gemm

KERNELS = ("mx_gate_up_kernel", "mx_down_kernel")


#: the swapped decode's code layouts: row-major (1) and tile-major groups of 64 rows (Mxfp4Config.row_group)
GROUPS = (1, 64)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[tuple[str, int, int], Path]:
    keep = tmp_path_factory.mktemp("swapped-ir")
    scenarios = [
        aot_plan.Scenario(
            origin=f"T={t}/G={g}",
            preset="gpt-oss-120b",
            num_tokens=t,
            dtype="bfloat16",
            targets=("sm90",),
            quant="mxfp4",
            config={"decode": "swapped", **({"row_group": g} if g > 1 else {})},
        )
        for t in (1, 512)
        for g in GROUPS
    ]
    jobs = [j for j in aot.plan_jobs(scenarios) if j["kernel"] in KERNELS]
    # on meta tensors with the plain scales real checkpoints have
    assert {j["launch"]["kwargs"]["DECODE"] for j in jobs} == {MK.DECODE_SWAPPED_PLAIN.value}
    assert {j["launch"]["kwargs"]["W_GROUP"] for j in jobs} == set(GROUPS)
    results = aot.run_jobs(jobs, 1, str(keep))
    assert all(results[j["id"]].get("ok") for j in jobs), [results[j["id"]].get("error") for j in jobs]
    key = lambda origin: tuple(int(part[2:]) for part in origin.split("/"))
    return {(j["kernel"], *key(origin)): Path(keep) / str(j["id"]) for j in jobs for origin in j["origins"]}


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("tokens", [1, 512])
@pytest.mark.parametrize("kernel", KERNELS)
def test_the_decoded_weights_are_the_register_operand_of_wgmma(compiled, kernel, tokens, group):
    ir = compiled[kernel, tokens, group].with_suffix(".ttgir").read_text()
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


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("tokens", [1, 512])
@pytest.mark.parametrize("kernel", KERNELS)
def test_ptxas_keeps_the_wgmmas_asynchronous(compiled, kernel, tokens, group):
    from triton.backends.nvidia.compiler import get_ptxas

    ptx = compiled[kernel, tokens, group].with_suffix(".ptx")
    ptxas = get_ptxas(90).path
    if not Path(ptxas).exists():
        pytest.skip(f"no ptxas at {ptxas}")
    run = subprocess.run(
        [ptxas, "-arch=sm_90a", "-v", str(ptx), "-o", str(ptx.with_suffix(".check.cubin"))],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "C7515" not in run.stderr and "serialized" not in run.stderr, run.stderr[-2000:]


# The capture needs compiled (not interpreted) kernel objects, so it runs in a child without TRITON_INTERPRET, as
# `moe-cts compile` plans; this child first sets the table it is given, which a monkeypatch could not reach.
_PLAN_WITH_TABLE = """
import json, sys
from moe_cts.conformance.aot import plan
from moe_cts.kernels import mxfp4_gemm
mxfp4_gemm.TARGET_DECODE.clear()
mxfp4_gemm.TARGET_DECODE.update(json.loads(sys.argv[1]))
sys.exit(plan.main(sys.argv[2:]))
"""


def _default_decodes(table: dict[str, str], num_tokens: int, tmp_path: Path) -> dict[str, set[int]]:
    """Per target, the DECODE constants of the MXFP4 GEMM jobs planned for gpt-oss-120b's default config with
    mxfp4_gemm.TARGET_DECODE = table."""
    targets = ("sm80", "sm90")
    scenario = aot_plan.Scenario(
        origin="test:default-decode", preset="gpt-oss-120b", num_tokens=num_tokens, dtype="bfloat16",
        targets=targets, quant="mxfp4",
    )  # fmt: skip
    src, dst = tmp_path / f"scenarios-{num_tokens}.json", tmp_path / f"jobs-{num_tokens}.json"
    src.write_text(json.dumps([scenario.to_json()]))
    run = subprocess.run(
        [sys.executable, "-c", _PLAN_WITH_TABLE, json.dumps(table), str(src), ",".join(targets), str(dst)],
        env=aot._child_env(), cwd=aot.ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    jobs = [j for j in json.loads(dst.read_text()) if j["kernel"] in KERNELS]
    return {t: {j["launch"]["kwargs"]["DECODE"] for j in jobs if j["target_name"] == t} for t in targets}


PLAIN = {"packed": MK.DECODE_PACKED_PLAIN.value, "swapped": MK.DECODE_SWAPPED_PLAIN.value}


@pytest.mark.parametrize(
    "table", [mxfp4_gemm.TARGET_DECODE, {"sm90": "swapped"}], ids=["as-shipped", "sm90-swapped"]
)
def test_the_ahead_of_time_default_is_each_targets_own_decode(tmp_path, table):
    """registry.active_target gives the heuristic the target's name, so an AOT compile of the default config
    builds what that device would launch: its mxfp4_gemm.TARGET_DECODE entry, else packed (swar at T = 4096's
    BLOCK_M 128 row, where packed is not the default). Checked with the table as shipped (empty until the
    swapped decode is certified on a GPU) and with sm90 -> swapped, whatever the shipped table holds."""
    got = _default_decodes(table, 1, tmp_path)
    assert got == {t: {PLAIN[table.get(t, "packed")]} for t in ("sm80", "sm90")}
    big = _default_decodes(table, 4096, tmp_path)
    want_sm90 = PLAIN["swapped"] if table.get("sm90") == "swapped" else MK.DECODE_SWAR.value
    assert big == {"sm80": {MK.DECODE_SWAR.value}, "sm90": {want_sm90}}


@pytest.mark.parametrize("tokens", [1, 512])
@pytest.mark.parametrize("kernel", KERNELS)
def test_tile_major_codes_keep_the_pipelines_16_byte_copies(compiled, kernel, tokens):
    """Row groups change only the codes' addresses: the K loop's loads stay the same cp.async copies (16 bytes
    of codes per thread and row, 4 of scale codes), so the layout cannot cost the vector loads the row pointers'
    alignment bought (docs/mxfp4.md, session 22's finding)."""
    row_major, tiled = (
        async_copies(compiled[kernel, tokens, g].with_suffix(".ptx").read_text()) for g in GROUPS
    )
    assert tiled == row_major and row_major.get("0x10"), (row_major, tiled)
