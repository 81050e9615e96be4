#!/usr/bin/env bash
# Session 4's second GPU call: `moe-cts certify --profile quick` of the Triton kernels (fp8 promoted per K
# tile, the fp8 tile table, the fp8 MMA term of the tolerance model), timed, then the fp8 tile sweep with
# CUDA-graph replays (ci/gpu/fp8_diag.py --parts sweep) in the time left of the 560 s slot.
set -u
OUT=${1:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
certify_quick "$OUT" "${CERT_JOBS:-10}" "${CERT_TIMEOUT:-380}"
certify_summary "$OUT"
left=$(slot_left "${SLOT:-560}")
if [ "$left" -gt 60 ]; then
  timeout $left python3 ci/gpu/fp8_diag.py --out "$OUT/sweep" --parts sweep --tokens ${SWEEP_T:-4096,512,16,1,128} 2>"$OUT/sweep-stderr.log" | grep -v '^{"device'
fi
echo "total $(( $(date +%s) - T0 )) s"
