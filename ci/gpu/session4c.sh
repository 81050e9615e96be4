#!/usr/bin/env bash
# Session 4's third GPU call, in one 560 s slot:
#   1. `moe-cts certify --profile quick` of the Triton kernels on main, timed, and beside it (other CPU cores,
#      the same GPU) `moe-cts recall --profile gpu`: every fault of the catalog (smoke, quick and gpu) on the H200
#   2. tests/kernels/test_mxfp4_decode.py on the GPU (every e2m1 code and E8M0 scale of the new decodes)
#   3. the quantized kernels at full size against our bf16 path (ci/gpu/quant_bench.py), in the time left
set -u
OUT=${1:-/tmp/moe-cts-gpu}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
t0=$(date +%s)
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v "^WARNING\|already" | tail -2
nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw --format=csv,noheader
( s=$(date +%s); timeout ${CERT_TIMEOUT:-330} moe-cts certify --profile quick --jobs ${CERT_JOBS:-8} --out "$OUT/cert" > "$OUT/cert.log" 2>&1
  echo "certify exit $? in $(( $(date +%s) - s )) s" >> "$OUT/cert.log" ) &
cert=$!
( timeout 200 python3 -m pytest -q -p no:cacheprovider -n 2 tests/kernels/test_mxfp4_decode.py > "$OUT/mxfp4-decode-tests.log" 2>&1 ) &
dec=$!
s=$(date +%s)
timeout ${RECALL_TIMEOUT:-330} moe-cts recall --profile gpu --device cuda:0 --jobs ${RECALL_JOBS:-6} --out "$OUT/recall" > "$OUT/recall.log" 2>&1
echo "recall exit $? in $(( $(date +%s) - s )) s"
wait $cert $dec
tail -1 "$OUT/cert.log"
tail -2 "$OUT/mxfp4-decode-tests.log"
grep -E "coverage|verdict|fail at|crash at|NOT|Fail|Crash|compile" "$OUT/cert.log" | grep -v "^│" | head -20
grep -vE "^\s*$" "$OUT/recall.log" | tail -25
left=$(( ${SLOT:-560} - ($(date +%s) - t0) ))
if [ "$left" -gt 40 ]; then
  timeout $left python3 ci/gpu/quant_bench.py --out "$OUT/quant" ${QB_ARGS:-} 2>"$OUT/quant-stderr.log" | grep -v '^{'
fi
echo "total $(( $(date +%s) - t0 )) s"
