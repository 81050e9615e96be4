#!/usr/bin/env bash
# Session 28's GPU calls (written without a device; docs/mxfp4.md "Session 28"). Run after session27.sh k and x,
# one 585 s slot each.
#   t   the tile-major MXFP4 codes (Mxfp4Config.row_group): the GPU pytest of test_mxfp4_row_group.py (every group
#       gives the row-major bits, on CUDA), perf_probe --parts reads28 (the codes' reads alone, no decode:
#       row-major against tile-major GB/s) and tiles28 (gpt-oss-120b T = 1 .. 512, swapped at row
#       groups 1 / 32 / 64 / 128, packed at 1 / 64, alternating rounds, bits compared), then quant_bench MXFP4,
#       swapped row-major and at row group 64 and packed at 64, against our bf16 path at T = 1 .. 4096 (issue 13's
#       ratio and % of the floor) in the rest of the slot
#   g   if t wins: certify quick and gpt-oss-120b at full size against the float64 oracle with the swapped decode
#       at row group 64 (MOE_CTS_MXFP4_DECODE=swapped MOE_CTS_MXFP4_ROW_GROUP=64), the run that would let sm90's
#       default take it
set -u
MODE=${1:-t}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
t)
  gpu_pytest "$OUT" 90 tests/kernels/test_mxfp4_row_group.py
  probe "$OUT" reads28,tiles28 300
  SLOT=585 QB_ARGS='--kinds mxfp4 --no-50k --mxfp4-configs swapped;{"decode":"swapped","row_group":64};{"decode":"packed","row_group":64}' quant_bench "$OUT"
  ;;
g)
  export MOE_CTS_MXFP4_DECODE=swapped MOE_CTS_MXFP4_ROW_GROUP=64
  certify_quick "$OUT" "${CERT_JOBS:-10}" 220
  certify_summary "$OUT"
  timeout "$(slot_left 585)" python3 ci/gpu/quant_fullsize.py --out "$OUT/full" --presets gpt-oss-120b \
    --tokens "${FULL_T:-1,16,4096}" > "$OUT/full.log" 2> "$OUT/full-stderr.log"
  echo "quant_fullsize (swapped, row group 64) exit $?"; tail -8 "$OUT/full.log"
  ;;
esac
