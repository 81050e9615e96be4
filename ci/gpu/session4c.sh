#!/usr/bin/env bash
# Session 4's third GPU call, in one 560 s slot:
#   1. `moe-cts certify --profile quick` of the Triton kernels on main, timed, and beside it (other CPU cores,
#      the same GPU) `moe-cts recall --profile gpu`: every fault of the catalog (smoke, quick and gpu) on the H200
#   2. tests/kernels/test_mxfp4_decode.py on the GPU (every e2m1 code and E8M0 scale of the new decodes)
#   3. the quantized kernels at full size against our bf16 path (ci/gpu/quant_bench.py), in the time left
set -u
OUT=${1:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
certify_quick "$OUT" "${CERT_JOBS:-8}" "${CERT_TIMEOUT:-330}" &
cert=$!
( timeout 200 python3 -m pytest -q -p no:cacheprovider -n 2 tests/kernels/test_mxfp4_decode.py > "$OUT/mxfp4-decode-tests.log" 2>&1 ) &
dec=$!
s=$(date +%s)
timeout ${RECALL_TIMEOUT:-330} moe-cts recall --profile gpu --device cuda:0 --jobs ${RECALL_JOBS:-6} --out "$OUT/recall" > "$OUT/recall.log" 2>&1
echo "recall exit $? in $(( $(date +%s) - s )) s"
wait $cert $dec
tail -2 "$OUT/mxfp4-decode-tests.log"
certify_summary "$OUT"
grep -vE "^\s*$" "$OUT/recall.log" | tail -25
left=$(slot_left "${SLOT:-560}")
if [ "$left" -gt 40 ]; then
  timeout $left python3 ci/gpu/quant_bench.py --out "$OUT/quant" ${QB_ARGS:-} 2>"$OUT/quant-stderr.log" | grep -v '^{'
fi
echo "total $(( $(date +%s) - T0 )) s"
