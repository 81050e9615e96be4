#!/usr/bin/env bash
# Session 24's GPU calls (docs/h200.md "Session 24"), one 590 s slot each:
#   m   GPU pytest of the MXFP4 files, quant_bench MXFP4 against swar in the same run (QB_ARGS), gpt-oss-120b
#       MXFP4 at full size against the float64 oracle (FULL_T): the packed decode with its codes at
#       mxfp4_pack.NIBBLE_PLACES and the select-free scales
#   v   quant_bench MXFP4 at T = 1 and 16 over pipeline depths and warp counts of the default tiles
#       (V_VARIANTS, ci/gpu/mx_configs.py), then certify quick (CERT_JOBS workers) in the rest of the slot
#   t   quant_bench MXFP4 over tile widths at T = 16 and 128 (T_VARIANTS) and register caps of the BLOCK_M 32
#       gate_up at T = 512 (R_VARIANTS): the table's rows against the new decode's register use
set -u
MODE=${1:-m}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
m)
  mxfp4_check "$OUT" 150 470
  ;;
v)
  V=${V_VARIANTS:-gate_up.num_stages=4,down.num_stages=4;gate_up.num_stages=5,down.num_stages=5;gate_up.num_warps=8,down.num_warps=8}
  mx_variants "$OUT" 1 "$V" 170
  mx_variants "$OUT" 16 "$V" 340
  certify_quick "$OUT" "${CERT_JOBS:-10}" "$(slot_left 585)"
  certify_summary "$OUT"
  ;;
t)
  TV=${T_VARIANTS:-gate_up.BLOCK_N=32;down.BLOCK_N=128;down.BLOCK_N=32}
  RV=${R_VARIANTS:-gate_up.maxnreg=0;gate_up.maxnreg=176;gate_up.maxnreg=160}
  mx_variants "$OUT" 16 "$TV" 180
  mx_variants "$OUT" 128 "$TV" 370
  mx_variants "$OUT" 512 "$RV" 585
  ;;
esac
