#!/usr/bin/env bash
# Session 11's GPU calls (one 590 s slot each), chosen by the first argument:
#   a   GPU pytest of the descriptor-weight tests and the grouped GEMM / fp8 / stream kernels, then
#       perf_probe.py --parts tma11 (weight tiles through tensor descriptors against the table's pointer loads)
#   b   quant_bench (QB_ARGS, default fp8 only, no T = 50,000), vLLM's Triton path side by side (carry .peer),
#       then `moe-cts certify --profile quick` in the rest of the slot
#   c   GPU pytest of the fp8 / MXFP4 / grouped GEMM / stream / alignment / combine / descriptor kernels, then
#       quant_bench (QB_ARGS: by default every kind with T = 50,000)
set -u
MODE=${1:-a}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
a)
  gpu_pytest "$OUT" "${TEST_TIMEOUT:-120}" tests/kernels/test_weight_desc.py tests/kernels/test_grouped_gemm.py \
    tests/kernels/test_streams.py tests/kernels/test_fp8_moe.py
  probe "$OUT" "${PROBE_PARTS:-tma11}" "${PROBE_S:-400}"
  ;;
b)
  QB_ARGS=${QB_ARGS:-"--kinds fp8 --no-50k"} SLOT=200 quant_bench "$OUT"
  peer_bench "$OUT" "${PEER_S:-150}"
  grep -E "=>|geomean" "$OUT/peer.log" | tail -44
  certify_quick "$OUT" "${CERT_JOBS:-10}" "$(slot_left ${SLOT:-560})"
  certify_summary "$OUT"
  ;;
c)
  gpu_pytest "$OUT" "${TEST_TIMEOUT:-150}" tests/kernels/test_fp8_moe.py tests/kernels/test_grouped_gemm.py \
    tests/kernels/test_mxfp4_decode.py tests/kernels/test_streams.py tests/kernels/test_align.py \
    tests/kernels/test_combine.py tests/kernels/test_weight_desc.py
  quant_bench "$OUT"
  ;;
esac
