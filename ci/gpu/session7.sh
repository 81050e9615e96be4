#!/usr/bin/env bash
# Session 7's GPU calls (one 590 s slot each), chosen by the first argument:
#   a   ci/gpu/perf_probe.py (PROBE_PARTS): kernel-by-kernel profile of the router at T = 1, of the bf16 forward
#       where vLLM led, of the fp8 / MXFP4 forwards; fp8, MXFP4 and bf16 tile candidates
#   b   ci/gpu/quant_fullsize.py for the presets in QF_ARGS (full-size quantized accuracy, issue 13; the
#       inputs are now quantized on the device)
#   c   `moe-cts certify --profile quick --jobs 10`, then vLLM's Triton path side by side (.peer/bench.py),
#       then ci/gpu/quant_bench.py in the time left
#   d   the device-side checks of this session's changes (pytest on cuda: quant_large's device quantization
#       against numpy, the router's split / batch invariance), then `moe-cts certify --profile quick`
set -u
MODE=${1:-a}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
a)
  timeout "$(slot_left ${SLOT:-585})" python3 ci/gpu/perf_probe.py --out "$OUT/probe" --parts "${PROBE_PARTS:-profile,fp8,mxfp4,bf16}" > "$OUT/probe.log" 2>"$OUT/probe-stderr.log"
  echo "probe exit $?"
  sed -n '/== summary ==/,$p' "$OUT/probe.log" | cut -c1-330
  tail -3 "$OUT/probe-stderr.log"
  ;;
b)
  timeout "$(slot_left ${SLOT:-585})" python3 ci/gpu/quant_fullsize.py --out "$OUT/full" ${QF_ARGS:-} 2>"$OUT/full-stderr.log"
  echo "quant_fullsize exit $?"
  tail -5 "$OUT/full-stderr.log"
  ;;
c)
  certify_quick "$OUT" "${CERT_JOBS:-10}" "${CERT_TIMEOUT:-230}"
  certify_summary "$OUT"
  peer_bench "$OUT" "${BENCH_TIMEOUT:-160}"
  grep -E "=>|geomean" "$OUT/peer.log" | tail -44
  timeout "$(slot_left ${SLOT:-585})" python3 ci/gpu/quant_bench.py --out "$OUT/quant" ${QB_ARGS:-} 2>"$OUT/quant-stderr.log" | tail -24
  echo "quant_bench exit $?"; tail -3 "$OUT/quant-stderr.log"
  ;;
d)
  s=$(date +%s)
  timeout "${TEST_TIMEOUT:-150}" python3 -m pytest -q -x -p no:cacheprovider tests/conformance/test_quant_large.py \
    tests/kernels/test_router_split.py > "$OUT/pytest.log" 2>&1
  echo "pytest exit $? in $(( $(date +%s) - s )) s"; tail -4 "$OUT/pytest.log"
  certify_quick "$OUT" "${CERT_JOBS:-10}" "$(slot_left ${SLOT:-585})"
  certify_summary "$OUT"
  ;;
esac
echo "total $(( $(date +%s) - T0 )) s"
