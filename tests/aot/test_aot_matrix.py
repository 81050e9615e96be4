"""The AOT tier on real compiles: shared-memory limits per target, fp8 rejections, the fake active driver,
compiler crashes, and the config tables (acceptance items 2 and "the tier also guards the tables")."""

from __future__ import annotations

import pytest

from moe_cts.conformance.aot import matrix as aot
from moe_cts.conformance.aot import plan as aot_plan
from moe_cts.kernels import target_info

GFX942_LIMIT = target_info.get("gfx942").shared_limit_bytes


def _one(records, **match):
    hits = [r for r in records if all(getattr(r, k) == v for k, v in match.items())]
    assert len(hits) == 1, f"expected one record with {match}, got {len(hits)}: {hits}"
    return hits[0]


def test_an_oversized_config_is_a_shared_memory_fail_on_gfx942(acceptance_records):
    rec = _one(acceptance_records["test:oversized"], target="gfx942")
    assert rec.status == aot.FAIL
    assert "shared memory" in rec.reason and rec.shared_bytes > rec.shared_limit == GFX942_LIMIT, rec


def test_the_same_oversized_config_compiles_and_fits_on_sm90(acceptance_records):
    rec = _one(acceptance_records["test:oversized"], target="sm90")
    assert rec.status == aot.COMPILED, rec.reason
    assert (
        GFX942_LIMIT < rec.shared_bytes <= rec.shared_limit == target_info.get("sm90").shared_limit_bytes
    ), rec


def test_an_e4m3fnuz_gemm_on_sm90_is_an_expected_rejection(acceptance_records):
    rec = _one(acceptance_records["test:fp8-e4m3fnuz"], target="sm90")
    assert (rec.status, rec.dtype) == (aot.EXPECTED_REJECTION, "float8_e4m3fnuz"), rec


def test_gemms_compiled_for_sm90_use_the_matrix_units(acceptance_records):
    rec = _one(acceptance_records["test:oversized"], target="sm90")
    assert rec.matrix_required and rec.matrix_found, rec


def test_registers_are_read_from_the_binaries(acceptance_records):
    recs = acceptance_records["test:oversized"]
    assert all(r.registers and r.registers > 0 and r.spill_bytes is not None for r in recs), recs


# ptxas's own words for a kernel whose wgmmas it runs one at a time: the line this environment's ptxas printed
# for the swapped MXFP4 decode before its first K step was peeled (kernels/_mxfp4_swapped.py), kept verbatim
C7515_LOG = """\
ptxas-blackwell info    : 0 bytes gmem
ptxas-blackwell info    : Compiling entry function 'mx_down_kernel' for 'sm_90a'
ptxas-blackwell info    : (C7515) Potential Performance Loss: wgmma.mma_async instructions are serialized due to \
non wgmma instructions defining accumulator registers of a wgmma between start and end of the pipeline stage in \
the function 'mx_down_kernel' in line 2089
ptxas-blackwell info    : Function properties for mx_down_kernel
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas-blackwell info    : Used 96 registers, used 1 barrier
"""


def test_a_serialized_wgmma_note_is_read_from_the_ptxas_log():
    from moe_cts.conformance.aot.worker import ptxas_findings

    got = ptxas_findings(C7515_LOG)
    assert got["ptxas_registers"] == 96
    assert [n.split(":")[0] for n in got["ptxas_notes"]] == ["C7515"]
    assert "wgmma.mma_async instructions are serialized" in got["ptxas_notes"][0]
    assert ptxas_findings(C7515_LOG.replace("(C7515) Potential Performance Loss", "other")) == {
        "ptxas_registers": 96,
        "ptxas_notes": [],
    }
    assert ptxas_findings("") == {}  # no compile in the log (a cached binary): nothing claimed


def _cuda_compiled(acceptance_records, table_records) -> list:
    recs = [r for rs in acceptance_records.values() for r in rs] + table_records
    return [r for r in recs if r.status == aot.COMPILED and r.target.startswith("sm")]


def test_every_cuda_compile_reads_its_ptxas_log(acceptance_records, table_records):
    """The worker catches ptxas's log of each compile: its register count is cuobjdump's, so a missing or
    foreign log (and with it a missed note) cannot pass for a clean one."""
    recs = _cuda_compiled(acceptance_records, table_records)
    assert recs
    wrong = [(r.kernel, r.target, r.registers, r.extra.get("ptxas_registers")) for r in recs]
    assert all(reg == log_reg for *_, reg, log_reg in wrong), [w for w in wrong if w[2] != w[3]]


def test_no_shipped_config_serializes_its_wgmmas(acceptance_records, table_records):
    """Every table row, the heuristic's choices and the quantized kernels on sm80/sm90/sm100: no ptxas
    performance note. A C7515 note halves a Hopper GEMM without changing a bit of its output, so only this sees it."""
    noted = [(r.kernel, r.target, r.dtype, r.config_label, r.ptxas_notes) for r in _cuda_compiled(
        acceptance_records, table_records) if r.ptxas_notes]  # fmt: skip
    assert not noted, noted


@pytest.mark.parametrize("target", ["gfx942", "sm90"])
def test_in_kernel_target_checks_see_the_compile_target(acceptance_records, target):
    rec = _one(acceptance_records["test:probe:target_probe"], target=target)
    assert rec.status == aot.COMPILED, rec.reason


def test_a_wrong_target_assumption_fails_to_compile(acceptance_records):
    """Negative control for the probe: it can fail (is_hip() is True on gfx950)."""
    rec = _one(acceptance_records["test:probe:target_probe"], target="gfx950")
    assert rec.status == aot.FAIL and "target check" in rec.reason, rec


def test_a_compiler_crash_is_a_recorded_fail_and_the_run_goes_on(acceptance_records):
    rec = _one(acceptance_records["test:probe:die"], target="sm90")
    assert rec.status == aot.FAIL and "died" in rec.reason, rec
    # the jobs after it in the same worker still ran
    assert _one(acceptance_records["test:probe:target_probe"], target="sm90").status == aot.COMPILED


@pytest.mark.parametrize("target", aot_plan.target_names())
def test_the_config_tables_fit_each_targets_shared_memory(table_records, target):
    over = [r for r in table_records if r.target == target and "shared memory" in r.reason]
    assert not over, "\n".join(f"{r.kernel} {r.config_label} {r.dtype}: {r.reason}" for r in over)


@pytest.mark.parametrize("target", aot_plan.target_names())
def test_every_table_config_compiles_for_its_targets(table_records, target):
    recs = [r for r in table_records if r.target == target]
    bad = [r for r in recs if r.status == aot.FAIL]  # an expected rejection (fp8 rows on sm80) is data
    assert any(r.status == aot.COMPILED for r in recs) and not bad, "\n".join(
        f"{r.kernel} {r.config_label} {r.dtype}: {r.reason}" for r in bad
    )


def test_the_table_guard_covers_every_row_of_both_tables(table_records):
    from moe_cts.kernels.registry import table_configs

    origins = {o for r in table_records for o in r.origins}
    want = {f"guard:table:{b}/{dc}/{bucket}" for b, dc, bucket, _ in table_configs()}
    assert want <= origins, sorted(want - origins)


def test_the_quantized_kernels_compile_for_a_cuda_and_an_amd_target(acceptance_records):
    recs = [r for origin, rs in acceptance_records.items() if origin.startswith("test:quant:") for r in rs]
    bad = [r for r in recs if r.status == aot.FAIL]
    assert recs and not bad, "\n".join(
        f"{r.kernel} {r.target} {r.config_label} {r.dtype}: {r.reason}" for r in bad
    )
    compiled = {(r.kernel, r.target) for r in recs if r.status == aot.COMPILED}
    for kernel in ("mx_gate_up_kernel", "mx_down_kernel", "fp8_gate_up_kernel", "fp8_down_kernel"):
        assert {(kernel, "sm90"), (kernel, "gfx942")} <= compiled, kernel
    dot_scaled = [r for r in recs if r.config.get("SCALE_AT") == 2 and r.target == "sm90"]
    assert dot_scaled and all(r.status == aot.COMPILED for r in dot_scaled)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_the_router_compiles_for_every_target(acceptance_records, dtype):
    """The router (logits GEMM with the fused select) on the six targets, within each target's shared memory;
    the 16-bit logits GEMM on the matrix units (fp32 ieee may use FMA on NVIDIA, so only bf16 is held to it)."""
    recs = acceptance_records[f"test:router:{dtype}"]
    got = {(r.kernel, r.target) for r in recs}
    want = {("router_logits_kernel", t) for t in aot_plan.target_names()}
    assert got == want, sorted(want - got)
    bad = [(r.kernel, r.target, r.reason) for r in recs if r.status != aot.COMPILED]
    assert not bad, bad
    assert all(r.shared_bytes <= r.shared_limit for r in recs)
    if dtype == "bfloat16":
        scalar = [r.target for r in recs if r.kernel == "router_logits_kernel" and not r.matrix_found]
        assert not scalar, f"router_logits_kernel without matrix instructions on {scalar}"
