#!/usr/bin/env bash
# Session 14's GPU calls (one 590 s slot each), chosen by the first argument:
#   a   GPU pytest of the MXFP4 tests (the FMA path's with them), then perf_probe.py --parts fma14 (MXFP4 tiles of
#       1-4 rows on fp32 FMAs against the table's swar + mma row, gpt-oss-120b at T = 1, 16, 64, 128)
#   g   quant_bench (QB_ARGS, default fp8 and MXFP4, no T = 50,000), then `moe-cts certify --profile quick`
#   f   the final call: quant_bench (QB_ARGS), vLLM's Triton path side by side (carry .peer), then
#       `moe-cts certify --profile quick` in the rest of the slot
set -u
MODE=${1:-a}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
a)
  gpu_pytest "$OUT" "${TEST_TIMEOUT:-150}" tests/kernels/test_mxfp4_fma.py tests/kernels/test_mxfp4_decode.py \
    tests/kernels/test_mxfp4_moe.py
  PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True probe "$OUT" "${PROBE_PARTS:-fma14}" "${PROBE_S:-400}"
  ;;
g)
  QB_ARGS=${QB_ARGS:-"--kinds fp8,mxfp4 --no-50k"} SLOT=300 quant_bench "$OUT"
  certify_quick "$OUT" "${CERT_JOBS:-10}" "$(slot_left ${SLOT:-560})"
  certify_summary "$OUT"
  ;;
f)
  QB_ARGS=${QB_ARGS:-"--kinds fp8,mxfp4 --no-50k"} final_call "$OUT"
  ;;
esac
