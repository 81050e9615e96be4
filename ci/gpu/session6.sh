#!/usr/bin/env bash
# Session 6's GPU calls (one 590 s slot each), chosen by the first argument:
#   a   `moe-cts recall --profile gpu` (catalog v11), then vLLM's Triton path side by side (.peer/bench.py,
#       35 points), then `moe-cts certify --profile quick --jobs 10` in the time left
#   b   ci/gpu/quant_fullsize.py for the presets in QF_ARGS (full-size quantized accuracy, issue 13)
#   c   the recall again (catalog v11, a declined forward now NotSupported), then the tile sweep of the mid
#       buckets (ci/gpu/tune.py, BLOCK_M 32 and 64), then ci/gpu/quant_bench.py (issue 13: fp8 and MXFP4 against
#       bf16 in one run, T = 50,000 fp8 at DeepSeek-V3 width, two runs bit for bit) in the time left
#   d   the new cuda 16-bit table (BLOCK_M 64 for 16 < m <= 64): vLLM's Triton path side by side (.peer/bench.py),
#       then `moe-cts certify --profile quick --jobs 10` on it
#   e   `moe-cts certify --profile quick --jobs 10` again (the e4m3fnuz case no longer in a cuda run's
#       must-pass list), then ci/gpu/quant_fullsize.py (QF_ARGS) in the time left
set -u
MODE=${1:-a}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
a)
  recall_gpu "$OUT" "${RECALL_TIMEOUT:-200}"
  grep -vE "^\s*$" "$OUT/recall.log" | grep -v " killed " | tail -16
  peer_bench "$OUT" "${BENCH_TIMEOUT:-150}"
  tail -48 "$OUT/peer.log"
  certify_quick "$OUT" "${CERT_JOBS:-10}" "$(( $(slot_left ${SLOT:-585}) ))"
  certify_summary "$OUT"
  ;;
b)
  timeout "$(slot_left ${SLOT:-585})" python3 ci/gpu/quant_fullsize.py --out "$OUT/full" ${QF_ARGS:-} 2>"$OUT/full-stderr.log"
  echo "quant_fullsize exit $?"
  tail -5 "$OUT/full-stderr.log"
  ;;
c)
  recall_gpu "$OUT" "${RECALL_TIMEOUT:-200}"
  grep -vE "^\s*$" "$OUT/recall.log" | grep -v " killed " | tail -12
  s=$(date +%s)
  timeout "${TUNE_TIMEOUT:-220}" python3 ci/gpu/tune.py ${TUNE_ARGS:-} --json "$OUT/tune.json" > "$OUT/tune.log" 2>&1
  echo "tune exit $? in $(( $(date +%s) - s )) s"; grep -v "^  " "$OUT/tune.log" | tail -30
  timeout "$(slot_left ${SLOT:-585})" python3 ci/gpu/quant_bench.py --out "$OUT/quant" ${QB_ARGS:-} 2>"$OUT/quant-stderr.log" | tail -24
  echo "quant_bench exit $?"; tail -3 "$OUT/quant-stderr.log"
  ;;
d)
  peer_bench "$OUT" "${BENCH_TIMEOUT:-170}"
  grep -E "=>|geomean" "$OUT/peer.log" | tail -44
  certify_quick "$OUT" "${CERT_JOBS:-10}" "$(( $(slot_left ${SLOT:-585}) ))"
  certify_summary "$OUT"
  ;;
e)
  certify_quick "$OUT" "${CERT_JOBS:-10}" "${CERT_TIMEOUT:-240}"
  certify_summary "$OUT"
  left=$(slot_left ${SLOT:-585})
  [ "$left" -gt 30 ] && timeout "$left" python3 ci/gpu/quant_fullsize.py --out "$OUT/full" ${QF_ARGS:-} 2>"$OUT/full-stderr.log"
  echo "quant_fullsize exit $?"
  tail -5 "$OUT/full-stderr.log"
  ;;
esac
echo "total $(( $(date +%s) - T0 )) s"
