"""Classification of compile results, without compiling: every rule can fail."""

from __future__ import annotations

import pytest

from moe_cts.conformance.aot import matrix as aot
from moe_cts.conformance.aot import plan as aot_plan
from moe_cts.conformance.aot.report import compile_section, render_text
from moe_cts.kernels import target_info

TARGETS = aot_plan.load_targets()


def _job(kernel="gate_up_kernel", target="sm90", dtype="bfloat16"):
    return {"kernel": kernel, "target_name": target, "dtype": dtype, "config": {"BLOCK_M": 64, "BLOCK_N": 64,
            "BLOCK_K": 64, "num_warps": 4, "num_stages": 3}, "origins": ["test"], "presets": []}  # fmt: skip


def _ok(shared=1024, matrix=("wgmma",), **kw):
    return {"ok": True, "shared": shared, "static_shared": 0, "registers": 128, "spill_bytes": 0,
            "matrix_found": list(matrix), **kw}  # fmt: skip


def test_a_config_under_the_limit_compiles():
    assert aot.classify(_job(), _ok(), TARGETS).status == aot.COMPILED


def test_static_shared_counts_against_the_limit():
    limit = target_info.get("sm90").shared_limit_bytes
    rec = aot.classify(_job(), _ok(shared=limit - 512, static_shared=1024), TARGETS)
    assert rec.status == aot.FAIL and rec.shared_bytes == limit + 512


@pytest.mark.parametrize("target", target_info.GPU_TARGETS)
def test_one_byte_over_the_target_limit_is_a_fail(target):
    limit = target_info.get(target).shared_limit_bytes
    matrix = ("mfma",) if target.startswith("gfx") else ("mma",)
    assert aot.classify(_job(target=target), _ok(shared=limit, matrix=matrix), TARGETS).status == aot.COMPILED
    rec = aot.classify(_job(target=target), _ok(shared=limit + 1, matrix=matrix), TARGETS)
    assert rec.status == aot.FAIL and "would not load" in rec.reason


def test_a_gemm_without_matrix_instructions_is_a_scalar_fallback_fail():
    rec = aot.classify(_job(), _ok(matrix=()), TARGETS)
    assert rec.status == aot.FAIL and "scalar fallback" in rec.reason


def test_an_fp32_ieee_gemm_on_cuda_may_use_fma():
    assert aot.classify(_job(dtype="float32"), _ok(matrix=()), TARGETS).status == aot.COMPILED


def test_a_non_gemm_kernel_needs_no_matrix_instructions():
    assert aot.classify(_job(kernel="combine_kernel"), _ok(matrix=()), TARGETS).status == aot.COMPILED


@pytest.mark.parametrize(("dtype", "target"), [("float8_e4m3fnuz", "sm80"), ("float8_e4m3fnuz", "sm90"),
                                               ("float8_e4m3fnuz", "sm100"), ("float8_e4m3fn", "sm80")])  # fmt: skip
def test_a_compile_error_for_a_rejected_fp8_flavour_is_expected(dtype, target):
    rec = aot.classify(_job(dtype=dtype, target=target), {"ok": False, "error": "CompilationError"}, TARGETS)
    assert rec.status == aot.EXPECTED_REJECTION


def test_an_fp8_flavour_the_table_rejects_that_compiles_is_a_fail():
    rec = aot.classify(_job(dtype="float8_e4m3fnuz"), _ok(), TARGETS)
    assert rec.status == aot.FAIL and "update aot_targets.json" in rec.reason


def test_a_compile_error_for_a_supported_dtype_is_a_fail():
    rec = aot.classify(_job(), {"ok": False, "error": "CompilationError: boom"}, TARGETS)
    assert rec.status == aot.FAIL and "boom" in rec.reason


def test_the_report_section_fails_when_any_record_fails():
    good = aot.classify(_job(), _ok(), TARGETS)
    bad = aot.classify(_job(target="gfx942"), _ok(shared=70000, matrix=("mfma",)), TARGETS)
    assert compile_section([good])["verdict"] == "pass"
    section = compile_section([good, bad])
    assert section["verdict"] == "fail" and section["counts"]["gfx942"] == {"fail": 1}
    assert aot.AotRecord.from_json(section["records"][1]) == bad


def test_a_ptxas_performance_note_is_listed_and_does_not_fail_the_compile():
    note = "C7515: wgmma.mma_async instructions are serialized due to non wgmma instructions ..."
    rec = aot.classify(_job(), _ok(ptxas_registers=128, ptxas_notes=[note]), TARGETS)
    assert rec.status == aot.COMPILED and rec.ptxas_notes == (note,)
    section = compile_section([rec])
    assert section["verdict"] == "pass"
    assert section["ptxas_notes"] == [{"kernel": "gate_up_kernel", "target": "sm90", "dtype": "bfloat16",
                                       "config": rec.config_label, "notes": [note]}]  # fmt: skip
    assert f"NOTE gate_up_kernel [{rec.config_label}] bfloat16 on sm90: ptxas {note}" in render_text([rec])
    assert "NOTE" not in render_text(
        [aot.classify(_job(), _ok(ptxas_registers=128, ptxas_notes=[]), TARGETS)]
    )
    # certify's report: listed in the compile section's HTML, the verdict untouched
    from moe_cts.conformance.report.compile import compile_html, failure_lines, note_lines

    section.update(tier="default", requested_targets=["sm90"])
    line = f"compile NOTE gate_up_kernel [{rec.config_label}] bfloat16 on sm90: ptxas {note}"
    assert note_lines(section) == [line] and failure_lines(section) == []
    assert "serialized" in compile_html(section) and "PASS" in compile_html(section)


def test_unknown_targets_are_refused_with_the_known_ones_named():
    with pytest.raises(ValueError, match="sm90"):
        aot.parse_targets("sm90,sm42")


def test_the_mxfp4_decode_labels_name_the_kernels_decode_codes():
    """records.py names the MXFP4 decodes without importing the kernels; the names must be the kernels'."""
    from moe_cts.conformance.aot.records import _MX_DECODES, config_label
    from moe_cts.kernels import _mxfp4_gemm_kernels as MK

    for name, code in MK.DECODE.items():
        assert _MX_DECODES[code] == name
    assert _MX_DECODES[MK.DECODE_PACKED_PLAIN.value] == "packed"
    assert _MX_DECODES[MK.DECODE_SWAPPED_PLAIN.value] == "swapped"
    tile = {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 1, "num_warps": 4, "num_stages": 3}
    assert config_label({**tile, "SCALE_AT": 0, "DECODE": 6}) == "M16 N64 K128 G1 w4 s3 swapped"
    assert config_label({**tile, "SCALE_AT": 2, "DECODE": 0}) == "M16 N64 K128 G1 w4 s3 dot_scaled"
