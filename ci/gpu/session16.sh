#!/usr/bin/env bash
# Session 16's GPU calls, in the order they ran (n, p, s, d, f; docs/h200.md "Session 16"), one 590 s slot each:
#   n   Nsight Compute (ncu, clocks left alone) on one ids-given forward per case (NCU_CASES): MXFP4 gpt-oss-120b
#       at T = 1 and 16 beside bf16 at T = 1 (the same shapes: MXFP4's GEMMs take the bf16 time for a quarter of
#       the bytes, and the FMA decode took the swar decode's time, so the limit is not the decode's instruction
#       count alone: docs/mxfp4.md), and block fp8 DeepSeek-V3 at T = 1 (GEMM2 at 77% of the copy rate)
#   p   perf_probe.py --parts dec16 (PROBE_PARTS): block fp8 tiles after the profile of mode n
#   s   GPU pytest of the one-token slot layout and its neighbours, then perf_probe.py --parts slot16
#   d   test_slot_meta.py on the GPU, then perf_probe.py --parts down16
#   f   the final call: quant_bench (QB_ARGS), vLLM's Triton path side by side (carry .peer), certify quick
set -u
MODE=${1:-n}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
n)
  s=$(date +%s)
  timeout 400 ncu --profile-from-start off --clock-control none --kernel-name regex:"gate_up|down" \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section SchedulerStats --section MemoryWorkloadAnalysis \
    python3 ci/gpu/ncu_probe.py ${NCU_CASES:-mxfp4:gpt-oss-120b:1 bf16:gpt-oss-120b:1 mxfp4:gpt-oss-120b:16 fp8:deepseek-v3:1} \
    > "$OUT/ncu.txt" 2> "$OUT/ncu-stderr.txt"
  echo "ncu exit $? in $(( $(date +%s) - s )) s"
  grep -E "profiled|==PROF==|==ERROR==|==WARNING==" "$OUT/ncu.txt" "$OUT/ncu-stderr.txt" | head -20
  grep -E "^  [a-z_0-9]+_kernel|Duration|Compute \(SM\) Throughput|DRAM Throughput|Achieved Occupancy|Registers Per|Theoretical Occupancy|No Eligible|Issued Warp|Warp Cycles Per Issued|Stall" "$OUT/ncu.txt" | head -150
  ;;
p)
  probe "$OUT" "${PROBE_PARTS:-dec16}" "$(slot_left 585)"
  ;;
s)
  gpu_pytest "$OUT" 200 tests/kernels/test_slot_meta.py tests/kernels/test_combine.py tests/kernels/test_align.py \
    tests/kernels/test_pdl.py tests/kernels/test_streams.py tests/kernels/test_half_tail.py tests/kernels/test_persistent.py
  probe "$OUT" "${PROBE_PARTS:-slot16}" "$(slot_left 585)"
  ;;
d)
  gpu_pytest "$OUT" 120 tests/kernels/test_slot_meta.py
  probe "$OUT" "${PROBE_PARTS:-down16}" "$(slot_left 300)"
  ;;
f)
  QB_ARGS=${QB_ARGS:-"--kinds fp8,mxfp4 --no-50k"} final_call "$OUT"
  ;;
esac
