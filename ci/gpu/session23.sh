#!/usr/bin/env bash
# Session 23's GPU calls (docs/h200.md "Session 23"), one 590 s slot each:
#   m   GPU pytest of the MXFP4 files, quant_bench MXFP4 against swar in the same run (QB_ARGS), gpt-oss-120b
#       MXFP4 at full size against the float64 oracle (FULL_T). The first call (commit 13c4ab5) also timed the
#       packed decode's one-multiply kernel (config "packed-wide" was the two-multiply one, since removed)
#   z   GPU pytest (GPU_TESTS), vLLM's Triton path side by side (carry .peer), certify quick
set -u
MODE=${1:-m}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
m)
  gpu_pytest "$OUT" 150 tests/kernels/test_mxfp4_decode.py tests/kernels/test_mxfp4_moe.py tests/kernels/test_mxfp4_pack.py
  SLOT=${QB_SLOT:-470} QB_ARGS=${QB_ARGS:-"--kinds mxfp4 --no-50k --mxfp4-configs default;swar"} quant_bench "$OUT"
  timeout "$(slot_left 585)" python3 ci/gpu/quant_fullsize.py --out "$OUT/full" --presets gpt-oss-120b \
    --tokens "${FULL_T:-1,16,4096}" > "$OUT/full.log" 2> "$OUT/full-stderr.log"
  echo "quant_fullsize exit $?"; tail -8 "$OUT/full.log"
  ;;
z)
  gpu_pytest "$OUT" 170 ${GPU_TESTS:-tests/kernels/test_mxfp4_pack.py}
  peer_and_certify "$OUT" "${PEER_S:-170}" 575
  ;;
esac
