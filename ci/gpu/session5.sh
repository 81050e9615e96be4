#!/usr/bin/env bash
# Session 5's GPU calls (one 590 s slot each), chosen by the first argument:
#   a   `moe-cts certify --profile quick --jobs 10` on main (issue 10's last item), then
#       `moe-cts recall --profile gpu` (catalog v7) in the time left
#   b   ci/gpu/quant_fullsize.py (gpt-oss-120b MXFP4, then DeepSeek-V3 block fp8) against the float64 oracle
#   c   ci/bench/moe_bench.py beside vLLM's Triton path (.peer), then certify quick again, timed
#   d   the split router on the GPU (tests/kernels/test_router_split.py, ci/gpu/router_bench.py), then
#       `moe-cts recall --profile gpu` (catalog v8+), then `moe-cts soak` (10^5 generated cases) in the time left
#   e   the router's select stage in one warp (test_router_split, router_bench), then
#       `moe-cts certify --profile quick --jobs 10` (the faster host judge, longest first), then the recall
#       (catalog v10, with the quantized faults), then ci/gpu/quant_fullsize.py in the time left
set -u
MODE=${1:-a}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
a)
  certify_quick "$OUT" "${CERT_JOBS:-10}" "${CERT_TIMEOUT:-340}"
  certify_summary "$OUT"
  left=$(slot_left "${SLOT:-585}")
  s=$(date +%s)
  timeout "$left" moe-cts recall --profile gpu --device cuda:0 --jobs ${RECALL_JOBS:-8} --out "$OUT/recall" > "$OUT/recall.log" 2>&1
  echo "recall exit $? in $(( $(date +%s) - s )) s (limit $left s)"
  grep -vE "^\s*$" "$OUT/recall.log" | grep -v " killed " | tail -30
  ;;
b)
  timeout "$(slot_left ${SLOT:-585})" python3 ci/gpu/quant_fullsize.py --out "$OUT/full" ${QF_ARGS:-} 2>"$OUT/full-stderr.log"
  echo "quant_fullsize exit $?"
  tail -5 "$OUT/full-stderr.log"
  ;;
c)
  (cd .peer && timeout 240 env MOE_CTS_SRC=.. python3 ../ci/bench/moe_bench.py --peer . --out "$OUT/bench" ${BENCH_ARGS:-}) 2>"$OUT/bench-stderr.log" | tail -60
  certify_quick "$OUT" "${CERT_JOBS:-10}" "$(slot_left ${SLOT:-585})"
  certify_summary "$OUT"
  ;;
d)
  timeout 90 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_router_split.py 2>&1 | tail -3
  timeout 150 python3 ci/gpu/router_bench.py --out "$OUT/router/router_bench.json" 2>"$OUT/router-stderr.log" | tail -30
  s=$(date +%s)
  timeout 200 moe-cts recall --profile gpu --device cuda:0 --jobs ${RECALL_JOBS:-8} --out "$OUT/recall" > "$OUT/recall.log" 2>&1
  echo "recall exit $? in $(( $(date +%s) - s )) s"
  grep -vE "^\s*$" "$OUT/recall.log" | grep -v " killed " | tail -20
  left=$(( $(slot_left ${SLOT:-585}) - 25 ))
  timeout $(( left + 20 )) moe-cts soak --cases ${SOAK_CASES:-100000} --device cuda:0 --time-limit "$left" --workers ${SOAK_WORKERS:-15} --out "$OUT/soak" > "$OUT/soak.log" 2>&1
  echo "soak exit $?"
  tail -40 "$OUT/soak.log"
  ;;
e)
  timeout 60 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_router_split.py 2>&1 | tail -2
  timeout 120 python3 ci/gpu/router_bench.py --out "$OUT/router/router_bench.json" 2>"$OUT/router-stderr.log" | tail -23
  certify_quick "$OUT" "${CERT_JOBS:-10}" "${CERT_TIMEOUT:-330}"
  certify_summary "$OUT"
  s=$(date +%s)
  timeout 150 moe-cts recall --profile gpu --device cuda:0 --jobs ${RECALL_JOBS:-8} --out "$OUT/recall" > "$OUT/recall.log" 2>&1
  echo "recall exit $? in $(( $(date +%s) - s )) s"
  grep -vE "^\s*$" "$OUT/recall.log" | grep -v " killed " | tail -12
  left=$(( $(slot_left ${SLOT:-585}) ))
  [ "$left" -gt 30 ] && timeout "$left" python3 ci/gpu/quant_fullsize.py --out "$OUT/full" ${QF_ARGS:-} 2>"$OUT/full-stderr.log"
  echo "quant_fullsize exit $?"
  ;;
esac
echo "total $(( $(date +%s) - T0 )) s"
