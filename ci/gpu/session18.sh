#!/usr/bin/env bash
# Session 18's GPU calls (docs/h200.md "Session 18"), one 590 s slot each:
#   w   ci/gpu/ws_probe.py: warp-specialized grouped GEMMs with activation rows through TMA against the table's
#       m > 32 tiles, bf16, the ten T >= 2048 points of the peer presets (WS_POINTS overrides)
#   d   perf_probe.py --parts drop18 (PROBE_PARTS overrides): upper bounds of launch fusion at decode sizes (the
#       combine / the fp8 quantize launches replaced by no-ops)
#   h   GPU pytest of the fp8 rounding left to the store's cast (test_fp8_hw_round.py, test_fp8_moe.py), then
#       perf_probe.py --parts hw18: the cast rounding against the arithmetic, block fp8 DeepSeek-V3, T = 1 .. 4096
#   p   perf_probe.py --parts dec18: narrower combine programs and block fp8 GEMM1 BLOCK_N 64 at one token
#   g   the last call: those tests again, quant_bench (fp8), certify quick
set -u
MODE=${1:-w}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
w)
  timeout "$(slot_left 585)" python3 ci/gpu/ws_probe.py --out "$OUT/ws" ${WS_POINTS:+--points "$WS_POINTS"} \
    > "$OUT/ws.log" 2>"$OUT/ws-stderr.log"
  echo "ws_probe exit $?"; sed -n '/== summary ==/,$p' "$OUT/ws.log" | cut -c1-200; tail -5 "$OUT/ws-stderr.log"
  ;;
d)
  probe "$OUT" "${PROBE_PARTS:-drop18}" "$(slot_left 585)"
  ;;
h)
  gpu_pytest "$OUT" 200 tests/kernels/test_fp8_hw_round.py tests/kernels/test_fp8_moe.py
  probe "$OUT" "${PROBE_PARTS:-hw18}" "$(slot_left 585)"
  ;;
p)
  probe "$OUT" "${PROBE_PARTS:-dec18}" "$(slot_left 585)"
  ;;
g)
  # the last call: the fp8 tests after the -0 fix, quant_bench (fp8 only: the 16-bit and MXFP4 kernels did not
  # change this session), certify quick
  gpu_pytest "$OUT" 150 tests/kernels/test_fp8_hw_round.py tests/kernels/test_fp8_moe.py
  SLOT=${QB_SLOT:-330} QB_ARGS=${QB_ARGS:-"--kinds fp8 --no-50k"} quant_bench "$OUT"
  certify_quick "$OUT" "${CERT_JOBS:-10}" "$(slot_left 575)"
  certify_summary "$OUT"
  ;;
esac
