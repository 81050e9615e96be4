#!/usr/bin/env bash
# Session 13's GPU calls (one 590 s slot each), chosen by the first argument:
#   a   GPU pytest of the half-tail, persistent and fp8 tests, then perf_probe.py --parts half13 (half tail tiles
#       against the table's full tiles, alternating rounds; fp8 / bf16 at DeepSeek-V3 width)
#   s   perf_probe.py --parts stack13 (DeepSeek-V3's shared expert as one more routed expert at T = 1 / 16: the
#       work of a stacked layout measured before writing it)
#   d   GPU pytest of the PDL and half-tail tests, then perf_probe.py --parts pdl13 (programmatic dependent
#       launch against serial launches)
#   g   GPU pytest of the PDL / half-tail / fp8 tests, quant_bench (fp8, no T = 50,000), certify quick: the final
#       kernels (pdl for fp8 only)
#   f   the final call: quant_bench (QB_ARGS, default fp8 only, no T = 50,000), vLLM's Triton path side by side
#       (carry .peer), then `moe-cts certify --profile quick` in the rest of the slot
set -u
MODE=${1:-a}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
a)
  gpu_pytest "$OUT" "${TEST_TIMEOUT:-120}" tests/kernels/test_half_tail.py tests/kernels/test_persistent.py \
    tests/kernels/test_fp8_moe.py
  probe "$OUT" "${PROBE_PARTS:-half13}" "${PROBE_S:-430}"
  ;;
s)
  PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True probe "$OUT" "${PROBE_PARTS:-stack13}" "${PROBE_S:-400}"
  ;;
d)
  gpu_pytest "$OUT" "${TEST_TIMEOUT:-100}" tests/kernels/test_pdl.py tests/kernels/test_half_tail.py
  probe "$OUT" "${PROBE_PARTS:-pdl13}" "${PROBE_S:-400}"
  ;;
g)
  gpu_pytest "$OUT" "${TEST_TIMEOUT:-100}" tests/kernels/test_pdl.py tests/kernels/test_half_tail.py
  QB_ARGS=${QB_ARGS:-"--kinds fp8 --no-50k"} SLOT=230 quant_bench "$OUT"
  certify_quick "$OUT" "${CERT_JOBS:-10}" "$(slot_left ${SLOT:-440})"
  certify_summary "$OUT"
  ;;
f)
  QB_ARGS=${QB_ARGS:-"--kinds fp8 --no-50k"} SLOT=200 quant_bench "$OUT"
  peer_bench "$OUT" "${PEER_S:-150}"
  grep -E "=>|geomean" "$OUT/peer.log" | tail -44
  certify_quick "$OUT" "${CERT_JOBS:-10}" "$(slot_left ${SLOT:-560})"
  certify_summary "$OUT"
  ;;
esac
