#!/usr/bin/env bash
# Session 20's GPU calls (docs/h200.md "Session 20"), one 590 s slot each:
#   p   vLLM's Triton path side by side with ours (carry .peer; BENCH_ARGS) on the current code, then perf_probe.py
#       --parts big20 (PROBE_PARTS overrides): bf16 BLOCK_M 256 tiles at T = 2048 / 4096
#   l   (at commit 301e769, where config.late_shared and perf_probe part late20 live; removed after they lost)
#       GPU pytest of test_streams.py, then perf_probe.py --parts late20: the shared expert's branch forked after
#       the routed GEMM1, block fp8 and bf16, T = 1 .. 4096
#   f   perf_probe.py --parts fill20: the fill rule's min_block_n 16 at T <= 8, block fp8 and bf16
#   g   the last call: GPU pytest (GPU_TESTS), quant_bench (QB_ARGS), certify quick
set -u
MODE=${1:-p}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
p)
  peer_bench "$OUT" "${PEER_S:-200}"
  grep -E "=>|geomean" "$OUT/peer.log" | tail -44
  probe "$OUT" "${PROBE_PARTS:-big20}" "$(slot_left 585)"
  ;;
l)
  gpu_pytest "$OUT" 120 tests/kernels/test_streams.py
  probe "$OUT" "${PROBE_PARTS:-late20}" "$(slot_left 585)"
  ;;
f)
  probe "$OUT" "${PROBE_PARTS:-fill20}" "$(slot_left 585)"
  ;;
g)
  gpu_pytest "$OUT" 150 ${GPU_TESTS:-tests/kernels/test_fp8_moe.py}
  SLOT=${QB_SLOT:-330} QB_ARGS=${QB_ARGS:-"--kinds fp8 --no-50k"} quant_bench "$OUT"
  certify_quick "$OUT" "${CERT_JOBS:-10}" "$(slot_left 575)"
  certify_summary "$OUT"
  ;;
esac
