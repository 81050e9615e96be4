#!/usr/bin/env bash
# Session 8's GPU calls (one 590 s slot each), chosen by the first argument:
#   a   ci/gpu/perf_probe.py (PROBE_PARTS, default ab,decode,sweep90): the one-dot gate_up kernels against the
#       previous kernel modules in .probe_old/ (bitwise and time, one process), the decode forward with the
#       router kernel by kernel and the one-program alignment per warp count, sm90-only tiles at T >= 2048
#       (.probe_old/: `git show REV:kernels/_grouped_gemm_kernels.py > .probe_old/old_grouped_gemm_kernels.py`
#       and the same for _fp8_gemm_kernels.py, untracked so that it travels to the device; session 8: ad7a2f9)
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
GPU_TESTS="tests/kernels/test_router.py tests/kernels/test_router_split.py tests/kernels/test_align.py"
case "$MODE" in
a)
  probe "$OUT" "${PROBE_PARTS:-ab,decode,sweep90}" "$(slot_left ${SLOT:-585})"
  ;;
c)
  timeout 90 python3 ci/gpu/perf_probe.py --out "$OUT/probe" --parts decode > "$OUT/decode.log" 2>&1
  echo "decode probe exit $?"; sed -n '/== summary ==/,$p' "$OUT/decode.log" | cut -c1-400
  certify_quick "$OUT" "${CERT_JOBS:-10}" "${CERT_TIMEOUT:-230}"
  certify_summary "$OUT"
  peer_bench "$OUT" "${BENCH_TIMEOUT:-160}"
  grep -E "=>|geomean" "$OUT/peer.log" | tail -44
  quant_bench "$OUT"
  ;;
d)
  gpu_pytest "$OUT" "${TEST_TIMEOUT:-200}" $GPU_TESTS
  probe "$OUT" "${PROBE_PARTS:-decode,fp8,bf16dec}" "$(slot_left ${SLOT:-585})"
  ;;
r)
  probe "$OUT" "${PROBE_PARTS:-router,fp8}" "$(slot_left ${SLOT:-585})"
  ;;
e)
  gpu_pytest "$OUT" "${TEST_TIMEOUT:-200}" $GPU_TESTS
  certify_quick "$OUT" "${CERT_JOBS:-10}" "${CERT_TIMEOUT:-200}"
  certify_summary "$OUT"
  peer_bench "$OUT" "$(slot_left ${SLOT:-585})"
  grep -E "=>|geomean" "$OUT/peer.log" | tail -44
  ;;
esac
echo "total $(( $(date +%s) - T0 )) s"
