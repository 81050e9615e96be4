#!/usr/bin/env bash
# Session 23's GPU calls (docs/h200.md "Session 23"), one 590 s slot each:
#   m   GPU pytest of the MXFP4 files, quant_bench MXFP4 against swar in the same run (QB_ARGS), gpt-oss-120b
#       MXFP4 at full size against the float64 oracle (FULL_T). The first call (commit 13c4ab5) also timed the
#       packed decode's one-multiply kernel (config "packed-wide" was the two-multiply one, since removed)
#   s   (at commit a9c0580; split-K since reverted) GPU pytest of the split-K and MXFP4 decode files, then
#       quant_bench MXFP4 at T = 1, 2, 4, 8, 16 over gate_up:down split_k pairs on the default tiles of T = 1
#   r   quant_bench MXFP4 at REG_T (default 512) with ptxas register caps (REG_VARIANTS, ci/gpu/mx_configs.py),
#       then certify quick (CERT_JOBS workers) in the rest of the slot
#   n   Nsight Compute (clocks left alone) on one ids-given forward of the NCU_CASES, every kernel of it (the
#       MXFP4 forward at one and sixteen tokens): where the time of a decode-size forward goes
set -u
MODE=${1:-m}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
m)
  mxfp4_check "$OUT" 150 470
  ;;
r)
  CFGS=$(python3 ci/gpu/mx_configs.py --tokens "${REG_T:-512}" \
    --variants "${REG_VARIANTS:-gate_up.maxnreg=168,down.maxnreg=168;gate_up.maxnreg=168;down.maxnreg=168}")
  SLOT=200 QB_ARGS="--kinds mxfp4 --no-50k --tokens ${REG_T:-512} --mxfp4-configs default;$CFGS" quant_bench "$OUT"
  certify_quick "$OUT" "${CERT_JOBS:-10}" "$(slot_left 585)"
  certify_summary "$OUT"
  ;;
n)
  s=$(date +%s)
  timeout 400 ncu --profile-from-start off --clock-control none \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    python3 ci/gpu/ncu_probe.py ${NCU_CASES:-mxfp4:gpt-oss-120b:1 mxfp4:gpt-oss-120b:16} \
    > "$OUT/ncu.txt" 2> "$OUT/ncu-stderr.txt"
  echo "ncu exit $? in $(( $(date +%s) - s )) s"
  grep -E "==PROF==|==ERROR==" "$OUT/ncu.txt" "$OUT/ncu-stderr.txt" | head -10
  grep -E "^  [a-zA-Z_0-9<>:, ]+\(|Duration|DRAM Throughput|Achieved Occupancy|Registers Per|Grid Size|Warp Cycles Per Issued" \
    "$OUT/ncu.txt" | head -120
  ;;
esac
