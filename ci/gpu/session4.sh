#!/usr/bin/env bash
# Session 4's first GPU call: the fp8 diagnostics (ci/gpu/fp8_diag.py: MMA accumulation, the staged gemm2 of
# the quantized must-pass cases), `moe-cts certify --profile quick` timed, then the fp8 tile sweep in the time
# left of the 560 s slot.
set -u
OUT=${1:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
timeout 120 python3 ci/gpu/fp8_diag.py --out "$OUT/diag" --parts ${DIAG_PARTS:-acc,cases} 2>"$OUT/diag-stderr.log"
certify_quick "$OUT" "${CERT_JOBS:-6}" "${CERT_TIMEOUT:-400}"
certify_summary "$OUT"
left=$(slot_left "${SLOT:-560}")
if [ "$left" -gt 60 ]; then
  timeout $left python3 ci/gpu/fp8_diag.py --out "$OUT/sweep" --parts sweep --tokens ${SWEEP_T:-4096,512,16,1} 2>"$OUT/sweep-stderr.log" | grep -v '^{"device'
fi
echo "total $(( $(date +%s) - T0 )) s"
