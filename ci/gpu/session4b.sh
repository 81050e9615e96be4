#!/usr/bin/env bash
# Session 4's second GPU call: `moe-cts certify --profile quick` of the Triton kernels (fp8 promoted per K
# tile, the fp8 tile table, the fp8 MMA term of the tolerance model), timed, then the fp8 tile sweep with
# CUDA-graph replays (ci/gpu/fp8_diag.py --parts sweep) in the time left of the 560 s slot.
set -u
OUT=${1:-/tmp/moe-cts-gpu}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
t0=$(date +%s)
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v "^WARNING\|already" | tail -2
nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw --format=csv,noheader
start=$(date +%s)
timeout ${CERT_TIMEOUT:-380} moe-cts certify --profile quick --jobs ${CERT_JOBS:-10} --out "$OUT/cert" > "$OUT/cert.log" 2>&1
echo "certify exit $? in $(( $(date +%s) - start )) s"
grep -E "coverage|verdict|fail at|crash at|NOT|pass|Fail|Crash|compile" "$OUT/cert.log" | grep -v "^│" | head -30
left=$(( ${SLOT:-560} - ($(date +%s) - t0) ))
if [ "$left" -gt 60 ]; then
  timeout $left python3 ci/gpu/fp8_diag.py --out "$OUT/sweep" --parts sweep --tokens ${SWEEP_T:-4096,512,16,1,128} 2>"$OUT/sweep-stderr.log" | grep -v '^{"device'
fi
echo "total $(( $(date +%s) - t0 )) s"
