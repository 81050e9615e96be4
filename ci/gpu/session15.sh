#!/usr/bin/env bash
# Session 15's GPU calls (one 590 s slot each), chosen by the first argument:
#   a   GPU pytest of the host-tensor refusal and the MXFP4 tests that failed on the H200 with host inputs, then
#       ci/gpu/quant_fullsize.py for DeepSeek-V3 block fp8 (issue 13: full size against the float64 oracle)
#   b   ci/gpu/quant_fullsize.py for gpt-oss-120b MXFP4, T = 50,000 block fp8 at DeepSeek-V3 width
#       (quant_bench --kinds none), then `moe-cts certify --profile quick` in the rest of the slot
#   c   GPU pytest of the MXFP4 tests after the FMA path's removal, then perf_probe.py --parts dec15 (the block fp8
#       decode row with 1-warp tiles, DeepSeek-V3 with its shared expert, T = 1 / 16)
#   v   GPU pytest of the validation tests (errors raised before any launch) after the host-tensor refusal
set -u
MODE=${1:-a}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
fullsize() {
  timeout "$(slot_left "$2")" python3 ci/gpu/quant_fullsize.py --out "$OUT/full-$1" --presets "$1" \
    --max-groups "${QF_GROUPS:-4}" 2>"$OUT/full-$1-stderr.log" | tail -12
  echo "quant_fullsize $1 exit $?"; tail -3 "$OUT/full-$1-stderr.log"
}
case "$MODE" in
a)
  gpu_pytest "$OUT" 150 tests/kernels/test_fused_moe.py::test_host_tensors_outside_the_interpreter_are_refused_naming_the_field \
    tests/kernels/test_mxfp4_moe.py
  fullsize deepseek-v3 585
  ;;
b)
  fullsize gpt-oss-120b 300
  QB_ARGS="--kinds none" SLOT=360 quant_bench "$OUT"
  certify_quick "$OUT" "${CERT_JOBS:-10}" "$(slot_left 585)"
  certify_summary "$OUT"
  ;;
c)
  gpu_pytest "$OUT" 180 tests/kernels/test_mxfp4_decode.py tests/kernels/test_mxfp4_moe.py
  probe "$OUT" "${PROBE_PARTS:-dec15}" "$(slot_left 585)"
  ;;
v)
  gpu_pytest "$OUT" 300 tests/kernels/test_mxfp4_decode.py tests/kernels/test_mxfp4_moe.py tests/kernels/test_router.py \
    tests/kernels/test_router_split.py tests/kernels/test_fp8_moe.py tests/kernels/test_grouped_gemm.py \
    tests/kernels/test_combine.py tests/kernels/test_fused_moe.py tests/kernels/test_capabilities.py \
    -k "refused or rejected or bad or raises or delegates or host or dtype or shape or capacity or without"
  ;;
esac
