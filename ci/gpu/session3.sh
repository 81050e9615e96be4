#!/usr/bin/env bash
# Session 3's GPU acceptance in one device call: the quantized kernels at full size against our bf16 path
# (ci/gpu/quant_bench.py), then `moe-cts certify --profile quick` of our Triton kernels with the quantized
# must-pass cases, timed.
set -u
OUT=${1:-/tmp/moe-cts-gpu}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v "^WARNING\|already" | tail -2
nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw --format=csv,noheader
timeout 200 python3 ci/gpu/quant_bench.py --out "$OUT/quant" 2>"$OUT/quant-stderr.log" | grep -v '^{'
start=$(date +%s)
timeout ${CERT_TIMEOUT:-380} moe-cts certify --profile quick --out "$OUT/cert" > "$OUT/cert.log" 2>&1
echo "certify exit $? in $(( $(date +%s) - start )) s"
grep -E "coverage|verdict|fail at|crash at|NOT|pass" "$OUT/cert.log" | grep -v "^│" | head -30
