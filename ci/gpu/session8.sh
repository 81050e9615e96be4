#!/usr/bin/env bash
# Session 8's GPU calls (one 590 s slot each), chosen by the first argument:
#   a   ci/gpu/perf_probe.py (PROBE_PARTS, default ab,decode,sweep90): the one-dot gate_up kernels against the
#       previous kernel modules in .probe_old/ (bitwise and time, one process), the decode forward with the
#       router kernel by kernel and the one-program alignment per warp count, sm90-only tiles at T >= 2048
#   c   the decode probe (perf_probe.py --parts decode), `moe-cts certify --profile quick --jobs 10`, then vLLM's
#       Triton path side by side (.peer/bench.py), then ci/gpu/quant_bench.py in the time left
#   d   GPU pytest of this session's kernel changes (router with the fused select, router split / batch
#       invariance, alignment tiles), then perf_probe.py --parts decode,fp8,bf16dec
#   r   perf_probe.py --parts router,fp8 (PROBE_PARTS): the fused select against the separate launch, then fp8 tiles
#   e   the GPU pytest of d, then `moe-cts certify --profile quick`, then vLLM's Triton path side by side
set -u
MODE=${1:-a}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
a)
  timeout "$(slot_left ${SLOT:-585})" python3 ci/gpu/perf_probe.py --out "$OUT/probe" --baseline .probe_old \
    --parts "${PROBE_PARTS:-ab,decode,sweep90}" > "$OUT/probe.log" 2>"$OUT/probe-stderr.log"
  echo "probe exit $?"
  sed -n '/== summary ==/,$p' "$OUT/probe.log" | cut -c1-300
  tail -3 "$OUT/probe-stderr.log"
  ;;
c)
  timeout 90 python3 ci/gpu/perf_probe.py --out "$OUT/probe" --parts decode > "$OUT/decode.log" 2>&1
  echo "decode probe exit $?"; sed -n '/== summary ==/,$p' "$OUT/decode.log" | cut -c1-400
  certify_quick "$OUT" "${CERT_JOBS:-10}" "${CERT_TIMEOUT:-230}"
  certify_summary "$OUT"
  peer_bench "$OUT" "${BENCH_TIMEOUT:-160}"
  grep -E "=>|geomean" "$OUT/peer.log" | tail -44
  timeout "$(slot_left ${SLOT:-585})" python3 ci/gpu/quant_bench.py --out "$OUT/quant" ${QB_ARGS:-} 2>"$OUT/quant-stderr.log" | tail -24
  echo "quant_bench exit $?"; tail -3 "$OUT/quant-stderr.log"
  ;;
d)
  s=$(date +%s)
  timeout "${TEST_TIMEOUT:-200}" python3 -m pytest -q -p no:cacheprovider tests/kernels/test_router.py \
    tests/kernels/test_router_split.py tests/kernels/test_align.py > "$OUT/pytest.log" 2>&1
  echo "pytest exit $? in $(( $(date +%s) - s )) s"; grep -E "FAILED|passed|failed" "$OUT/pytest.log" | head -20
  timeout "$(slot_left ${SLOT:-585})" python3 ci/gpu/perf_probe.py --out "$OUT/probe" \
    --parts "${PROBE_PARTS:-decode,fp8,bf16dec}" > "$OUT/probe.log" 2>"$OUT/probe-stderr.log"
  echo "probe exit $?"
  sed -n '/== summary ==/,$p' "$OUT/probe.log" | cut -c1-300
  tail -3 "$OUT/probe-stderr.log"
  ;;
r)
  timeout "$(slot_left ${SLOT:-585})" python3 ci/gpu/perf_probe.py --out "$OUT/probe" \
    --parts "${PROBE_PARTS:-router,fp8}" > "$OUT/probe.log" 2>"$OUT/probe-stderr.log"
  echo "probe exit $?"
  sed -n '/== summary ==/,$p' "$OUT/probe.log" | cut -c1-300
  tail -3 "$OUT/probe-stderr.log"
  ;;
e)
  s=$(date +%s)
  timeout "${TEST_TIMEOUT:-200}" python3 -m pytest -q -p no:cacheprovider tests/kernels/test_router.py \
    tests/kernels/test_router_split.py tests/kernels/test_align.py > "$OUT/pytest.log" 2>&1
  echo "pytest exit $? in $(( $(date +%s) - s )) s"; grep -E "FAILED|passed|failed" "$OUT/pytest.log" | head -20
  certify_quick "$OUT" "${CERT_JOBS:-10}" "${CERT_TIMEOUT:-200}"
  certify_summary "$OUT"
  peer_bench "$OUT" "$(slot_left ${SLOT:-585})"
  grep -E "=>|geomean" "$OUT/peer.log" | tail -44
  ;;
esac
echo "total $(( $(date +%s) - T0 )) s"
