#!/usr/bin/env bash
# Session 22's GPU calls (docs/h200.md "Session 22"), one 590 s slot each:
#   r   ci/gpu/mx_reg_probe.py: standalone MXFP4 GEMMs, the swar structure against the decode into the MMA
#       operand layout (reference-layout words, then packed words) and a bf16 loop
#   m   GPU pytest of the MXFP4 files (the packed decode), quant_bench MXFP4 default against swar
#       (QB_ARGS), gpt-oss-120b MXFP4 at full size against the float64 oracle (FULL_T)
#   z   GPU pytest (GPU_TESTS), vLLM's Triton path side by side (carry .peer), certify quick
#   n   Nsight Compute (clocks left alone) on one ids-given forward of the MXFP4 cases NCU_CASES (the packed decode)
set -u
MODE=${1:-m}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
r)
  python3 ci/gpu/mx_reg_probe.py --out "$OUT/mxreg.json" > "$OUT/mxreg.log" 2>&1
  sed -n '/summary/,$p' "$OUT/mxreg.log"
  ;;
m)
  mxfp4_check "$OUT" 200 400
  ;;
n)
  s=$(date +%s)
  timeout 420 ncu --profile-from-start off --clock-control none --kernel-name regex:"gate_up|down" \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section SchedulerStats --section MemoryWorkloadAnalysis \
    python3 ci/gpu/ncu_probe.py ${NCU_CASES:-mxfp4:gpt-oss-120b:1 mxfp4:gpt-oss-120b:16} \
    > "$OUT/ncu.txt" 2> "$OUT/ncu-stderr.txt"
  echo "ncu exit $? in $(( $(date +%s) - s )) s"
  grep -E "profiled|==PROF==|==ERROR==|==WARNING==" "$OUT/ncu.txt" "$OUT/ncu-stderr.txt" | head -20
  grep -E "^  [a-z_0-9]+_kernel|Duration|Compute \(SM\) Throughput|DRAM Throughput|Achieved Occupancy|Registers Per|Theoretical Occupancy|No Eligible|Issued Warp|Warp Cycles Per Issued|Stall|Shared Memory|Block Limit|Grid Size|Block Size" "$OUT/ncu.txt" | head -120
  ;;
z)
  gpu_pytest "$OUT" 170 ${GPU_TESTS:-tests/kernels/test_mxfp4_pack.py}
  peer_and_certify "$OUT" "${PEER_S:-170}" 575
  ;;
esac
