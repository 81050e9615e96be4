#!/usr/bin/env bash
# Session 18's GPU calls (docs/h200.md "Session 18"), one 590 s slot each:
#   w   ci/gpu/ws_probe.py: warp-specialized grouped GEMMs with activation rows through TMA against the table's
#       m > 32 tiles, bf16, the ten T >= 2048 points of the peer presets (WS_POINTS overrides)
#   d   perf_probe.py --parts drop18 (PROBE_PARTS overrides): upper bounds of launch fusion at decode sizes (the
#       combine / the fp8 quantize launches replaced by no-ops)
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
esac
