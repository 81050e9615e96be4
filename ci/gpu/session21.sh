#!/usr/bin/env bash
# Session 21's GPU calls (docs/h200.md "Session 21"), one 590 s slot each:
#   o   GPU pytest of test_pdl.py (both PDL modes give the serial bits), then perf_probe.py --parts pdl21b
#       (PROBE_PARTS overrides): PDL at exit against wait first and serial launches, block fp8 and bf16.
#       Its first runs (at commit f03916f) timed part pdl21, the trigger before the wait, removed after it lost
#   z   GPU pytest (GPU_TESTS), vLLM's Triton path side by side (carry .peer), certify quick
#   g   the last call: GPU pytest (GPU_TESTS), quant_bench (QB_ARGS), certify quick
set -u
MODE=${1:-o}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
o)
  gpu_pytest "$OUT" 120 tests/kernels/test_pdl.py
  probe "$OUT" "${PROBE_PARTS:-pdl21b}" "$(slot_left 585)"
  ;;
z)
  gpu_pytest "$OUT" 170 ${GPU_TESTS:-tests/kernels/test_pdl.py tests/kernels/test_fp8_moe.py}
  peer_and_certify "$OUT" "${PEER_S:-170}" 575
  ;;
g)
  gpu_pytest "$OUT" 150 ${GPU_TESTS:-tests/kernels/test_fp8_moe.py}
  SLOT=${QB_SLOT:-330} QB_ARGS=${QB_ARGS:-"--kinds fp8 --no-50k"} quant_bench "$OUT"
  certify_quick "$OUT" "${CERT_JOBS:-10}" "$(slot_left 575)"
  certify_summary "$OUT"
  ;;
esac
