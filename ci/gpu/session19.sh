#!/usr/bin/env bash
# Session 19's GPU calls (docs/h200.md "Session 19"), one 590 s slot each:
#   o   perf_probe.py --parts occ19 (PROBE_PARTS overrides; the session ran occ19, occ19b, dec19, occ19c, mid19):
#       one more program per SM for the promotion-bound block fp8 GEMMs (3 stages, maxnreg 168) at T = 512 ..
#       8192, persistent and shallower decode GEMMs at T = 1 / 16, bf16 tiles of two programs per SM
#   g   the last call: GPU pytest (GPU_TESTS), quant_bench (QB_ARGS), certify quick
set -u
MODE=${1:-o}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
o)
  probe "$OUT" "${PROBE_PARTS:-occ19}" "$(slot_left 585)"
  ;;
g)
  gpu_pytest "$OUT" 150 ${GPU_TESTS:-tests/kernels/test_fp8_moe.py}
  SLOT=${QB_SLOT:-330} QB_ARGS=${QB_ARGS:-"--kinds fp8 --no-50k"} quant_bench "$OUT"
  certify_quick "$OUT" "${CERT_JOBS:-10}" "$(slot_left 575)"
  certify_summary "$OUT"
  ;;
esac
