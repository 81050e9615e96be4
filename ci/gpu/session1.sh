#!/usr/bin/env bash
# One GPU session: kernel tests on the device, full-size acceptance checks, full benchmark table.
set -u
OUT=${1:-/tmp/moe-cts-gpu}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/kernels -n 8 2>&1 | tail -8 | tee "$OUT/kernels_tests.log"
timeout 200 python3 ci/gpu/validate.py --json "$OUT/validate.json" 2>&1 | tee "$OUT/validate.log" | grep -v "^  File\|^    " 
PEER=(); [ -f .peer/vllm_peer.py ] && PEER=(--peer .peer)
timeout 300 python3 ci/bench/moe_bench.py --out "$OUT/bench" --budget-s 240 --rep-ms 50 --warmup-ms 10 ${PEER[@]+"${PEER[@]}"} 2>"$OUT/bench.err" | tee "$OUT/bench.log"
