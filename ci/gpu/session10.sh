#!/usr/bin/env bash
# Session 10's GPU calls (one 590 s slot each), chosen by the first argument:
#   a   GPU pytest of the alignment and combine kernels (dense_meta views, the unrolled combine), then
#       perf_probe.py --parts dec10 (decode launches, the old dense_meta, the fill rule to BLOCK_N 16, fp8
#       decode tiles), then quant_bench (QB_ARGS, default fp8 only) in the rest of the slot
#   b   GPU pytest of the fp8 / MXFP4 / grouped GEMM / stream / alignment / combine kernels, `moe-cts certify
#       --profile quick`, then quant_bench (QB_ARGS)
#   d   perf_probe.py --parts ab8 (carry .probe_old: old_fp8_gemm_kernels.py / old_grouped_gemm_kernels.py, the
#       kernels before the scale prefetch), then quant_bench (QB_ARGS, default fp8 only)
#   e   perf_probe.py --parts fill10 (the fill rule's warps, the rule past its bucket), then quant_bench (QB_ARGS,
#       default fp8 only)
#   f   GPU pytest (streams, capabilities, fp8, grouped GEMM), perf_probe.py --parts side10, then quant_bench
#       (QB_ARGS, default fp8 only)
#   g   quant_bench (QB_ARGS, default fp8 only, no T = 50,000), vLLM's Triton path side by side (carry .peer),
#       then `moe-cts certify --profile quick` in the rest of the slot
#   c   vLLM's Triton path side by side (.peer/bench.py; carry .peer), then quant_bench (QB_ARGS)
set -u
MODE=${1:-a}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
a)
  gpu_pytest "$OUT" "${TEST_TIMEOUT:-90}" tests/kernels/test_align.py tests/kernels/test_combine.py
  probe "$OUT" "${PROBE_PARTS:-dec10}" "${PROBE_S:-300}"
  QB_ARGS=${QB_ARGS:-"--kinds fp8 --no-50k"} quant_bench "$OUT"
  ;;
b)
  gpu_pytest "$OUT" "${TEST_TIMEOUT:-150}" tests/kernels/test_fp8_moe.py tests/kernels/test_grouped_gemm.py \
    tests/kernels/test_mxfp4_decode.py tests/kernels/test_streams.py tests/kernels/test_align.py \
    tests/kernels/test_combine.py
  certify_quick "$OUT" "${CERT_JOBS:-10}" "${CERT_TIMEOUT:-200}"
  certify_summary "$OUT"
  quant_bench "$OUT"
  ;;
d)
  probe "$OUT" "${PROBE_PARTS:-ab8}" "${PROBE_S:-240}"
  QB_ARGS=${QB_ARGS:-"--kinds fp8 --no-50k"} quant_bench "$OUT"
  ;;
e)
  probe "$OUT" "${PROBE_PARTS:-fill10}" "${PROBE_S:-300}"
  QB_ARGS=${QB_ARGS:-"--kinds fp8 --no-50k"} quant_bench "$OUT"
  ;;
f)
  gpu_pytest "$OUT" "${TEST_TIMEOUT:-150}" tests/kernels/test_streams.py tests/kernels/test_capabilities.py \
    tests/kernels/test_fp8_moe.py tests/kernels/test_grouped_gemm.py
  probe "$OUT" "${PROBE_PARTS:-side10}" "${PROBE_S:-200}"
  QB_ARGS=${QB_ARGS:-"--kinds fp8 --no-50k"} quant_bench "$OUT"
  ;;
g)
  QB_ARGS=${QB_ARGS:-"--kinds fp8 --no-50k"} SLOT=200 quant_bench "$OUT"
  peer_bench "$OUT" "${PEER_S:-150}"
  grep -E "=>|geomean" "$OUT/peer.log" | tail -44
  certify_quick "$OUT" "${CERT_JOBS:-10}" "$(slot_left ${SLOT:-500})"
  certify_summary "$OUT"
  ;;
c)
  peer_bench "$OUT" "${PEER_S:-300}"
  grep -E "=>|geomean" "$OUT/peer.log" | tail -44
  quant_bench "$OUT"
  ;;
esac
