#!/usr/bin/env bash
# Session 4's first GPU call: the fp8 diagnostics (ci/gpu/fp8_diag.py: MMA accumulation, the staged gemm2 of
# the quantized must-pass cases), `moe-cts certify --profile quick` timed, then the fp8 tile sweep in the time
# left of the 560 s slot.
set -u
OUT=${1:-/tmp/moe-cts-gpu}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
t0=$(date +%s)
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v "^WARNING\|already" | tail -2
nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw --format=csv,noheader
timeout 120 python3 ci/gpu/fp8_diag.py --out "$OUT/diag" --parts ${DIAG_PARTS:-acc,cases} 2>"$OUT/diag-stderr.log"
start=$(date +%s)
timeout ${CERT_TIMEOUT:-400} moe-cts certify --profile quick --jobs ${CERT_JOBS:-6} --out "$OUT/cert" > "$OUT/cert.log" 2>&1
echo "certify exit $? in $(( $(date +%s) - start )) s"
grep -E "coverage|verdict|fail at|crash at|NOT|pass|Fail|Crash" "$OUT/cert.log" | grep -v "^│" | head -30
left=$(( ${SLOT:-560} - ($(date +%s) - t0) ))
if [ "$left" -gt 60 ]; then
  timeout $left python3 ci/gpu/fp8_diag.py --out "$OUT/sweep" --parts sweep --tokens ${SWEEP_T:-4096,512,16,1} 2>"$OUT/sweep-stderr.log" | grep -v '^{"device'
fi
echo "total $(( $(date +%s) - t0 )) s"
