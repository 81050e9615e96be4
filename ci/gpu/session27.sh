#!/usr/bin/env bash
# Session 27's GPU calls. Session 25's mode a timed the swapped MXFP4 decode faster than the packed default at
# every T (docs/mxfp4.md "Session 27"); its fp8 probe part had not been registered in perf_probe (KeyError).
#   k   certify quick with the swapped decode as the default (MOE_CTS_MXFP4_DECODE=swapped: the run that would let
#       mxfp4_gemm.TARGET_DECODE name it for sm90), the MXFP4 files' GPU pytest, gpt-oss-120b MXFP4 at full size against the float64 oracle
#       with the swapped decode (FULL_T), then perf_probe --parts swap25 (the fp8 operand swap at T = 1 .. 16),
#       each in its share of one 520 s slot
#   x   session25.sh's mode x in 520 s: perf_probe --parts mix26 (Mixtral T = 1 and 128, issue 15's points slower
#       than vLLM, against other tiles), then the peer bench (the acceptance table)
set -u
MODE=${1:-k}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
k)
  MOE_CTS_MXFP4_DECODE=swapped certify_quick "$OUT" "${CERT_JOBS:-10}" 200
  certify_summary "$OUT"
  gpu_pytest "$OUT" "$(slot_left 290)" tests/kernels/test_mxfp4_decode.py tests/kernels/test_mxfp4_moe.py \
    tests/kernels/test_mxfp4_pack.py
  MOE_CTS_MXFP4_DECODE=swapped timeout "$(slot_left 400)" python3 ci/gpu/quant_fullsize.py --out "$OUT/full" \
    --presets gpt-oss-120b --tokens "${FULL_T:-1,16,4096}" > "$OUT/full.log" 2> "$OUT/full-stderr.log"
  echo "quant_fullsize (swapped) exit $?"; tail -8 "$OUT/full.log"
  probe "$OUT" swap25 "$(slot_left 520)"
  ;;
x)
  probe "$OUT" mix26 170
  peer_bench "$OUT" "$(slot_left 520)"
  grep -E "=>|geomean" "$OUT/peer.log" | tail -44
  ;;
esac
