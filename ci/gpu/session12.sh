#!/usr/bin/env bash
# Session 12's GPU calls (one 590 s slot each), chosen by the first argument:
#   a   GPU pytest of the persistent-GEMM, descriptor-weight and fp8 tests, then perf_probe.py --parts pers12
#       (persistent grouped GEMMs against the table's one program per tile)
#   p   GPU pytest of the persistent / paired tests, perf_probe.py --parts pair12, quant_bench (QB_ARGS, default
#       fp8 only, no T = 50,000)
#   f   the final call: perf_probe.py --parts pair12 (paired fp8 GEMM1 tiles and persistent rows in alternating
#       rounds), quant_bench (fp8, no T = 50,000), `moe-cts certify --profile quick` in the rest of the slot
#   b   quant_bench (QB_ARGS, default fp8 only, no T = 50,000), vLLM's Triton path side by side (carry .peer),
#       then `moe-cts certify --profile quick` in the rest of the slot
set -u
MODE=${1:-a}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
a)
  gpu_pytest "$OUT" "${TEST_TIMEOUT:-120}" tests/kernels/test_persistent.py tests/kernels/test_weight_desc.py \
    tests/kernels/test_fp8_moe.py
  probe "$OUT" "${PROBE_PARTS:-pers12}" "${PROBE_S:-420}"
  ;;
p)
  gpu_pytest "$OUT" "${TEST_TIMEOUT:-150}" tests/kernels/test_persistent.py
  probe "$OUT" "${PROBE_PARTS:-pair12}" "${PROBE_S:-200}"
  QB_ARGS=${QB_ARGS:-"--kinds fp8 --no-50k"} quant_bench "$OUT"
  ;;
f)
  probe "$OUT" "${PROBE_PARTS:-pair12}" "${PROBE_S:-170}"
  QB_ARGS=${QB_ARGS:-"--kinds fp8 --no-50k"} SLOT=360 quant_bench "$OUT"
  certify_quick "$OUT" "${CERT_JOBS:-10}" "$(slot_left ${SLOT:-580})"
  certify_summary "$OUT"
  ;;
b)
  QB_ARGS=${QB_ARGS:-"--kinds fp8 --no-50k"} SLOT=200 quant_bench "$OUT"
  peer_bench "$OUT" "${PEER_S:-150}"
  grep -E "=>|geomean" "$OUT/peer.log" | tail -44
  certify_quick "$OUT" "${CERT_JOBS:-10}" "$(slot_left ${SLOT:-560})"
  certify_summary "$OUT"
  ;;
esac
