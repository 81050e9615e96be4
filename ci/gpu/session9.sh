#!/usr/bin/env bash
# Session 9's GPU calls (one 590 s slot each), chosen by the first argument:
#   a   GPU pytest of the MXFP4 decodes, then perf_probe.py --parts PROBE_PARTS. Session 9 ran it at 552ea80
#       with the "swap" decode and its probe part (removed after they lost to swar: docs/mxfp4.md)
#   b   Nsight Compute (ncu, clocks left alone) on one ids-given forward per case (NCU_CASES): block fp8 and bf16
#       at DeepSeek-V3 width, T = 4096 and 1; MXFP4 gpt-oss-120b T = 16; then perf_probe.py --parts fp8dec
#   c   perf_probe.py --parts fp8dec (PROBE_PARTS) in at most 200 s, then ci/gpu/quant_bench.py (QB_ARGS) in the
#       rest of the slot (the row-tiled quantize_rows_kernel)
#   d   GPU pytest of the fp8 and MXFP4 kernels, `moe-cts certify --profile quick`, then quant_bench (QB_ARGS)
#   e   perf_probe.py --parts fill (the sm90 table's fill rule at T = 1 against the row as written), then vLLM's
#       Triton path side by side (.peer/bench.py; carry .peer) in the rest of the slot
#   f   vLLM's Triton path side by side, then quant_bench for MXFP4 only (the fill rule at 1.5 programs per SM)
set -u
MODE=${1:-a}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
a)
  gpu_pytest "$OUT" "${TEST_TIMEOUT:-150}" tests/kernels/test_mxfp4_decode.py
  probe "$OUT" "${PROBE_PARTS:-mxfp4}" "$(slot_left ${SLOT:-585})"
  ;;
b)
  s=$(date +%s)
  timeout 240 ncu --profile-from-start off --clock-control none --kernel-name regex:"gate_up|down|quantize" \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section SchedulerStats --section MemoryWorkloadAnalysis \
    python3 ci/gpu/ncu_probe.py ${NCU_CASES:-fp8:deepseek-v3:4096 bf16:deepseek-v3:4096 fp8:deepseek-v3:1 mxfp4:gpt-oss-120b:16} \
    > "$OUT/ncu.txt" 2> "$OUT/ncu-stderr.txt"
  echo "ncu exit $? in $(( $(date +%s) - s )) s"
  grep -E "profiled|==PROF==|==ERROR==|==WARNING==" "$OUT/ncu.txt" "$OUT/ncu-stderr.txt" | head -20
  grep -E "^  [a-z_0-9]+_kernel|Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Theoretical Occupancy|No Eligible|Issued Warp|Warp Cycles Per Issued" "$OUT/ncu.txt" | head -120
  probe "$OUT" "${PROBE_PARTS:-fp8dec}" "$(slot_left ${SLOT:-585})"
  ;;
c)
  probe "$OUT" "${PROBE_PARTS:-fp8dec}" 200
  quant_bench "$OUT"
  ;;
d)
  gpu_pytest "$OUT" "${TEST_TIMEOUT:-150}" tests/kernels/test_fp8_moe.py tests/kernels/test_mxfp4_decode.py
  certify_quick "$OUT" "${CERT_JOBS:-10}" "${CERT_TIMEOUT:-200}"
  certify_summary "$OUT"
  quant_bench "$OUT"
  ;;
e)
  probe "$OUT" "${PROBE_PARTS:-fill}" 230
  peer_bench "$OUT" "$(slot_left ${SLOT:-585})"
  grep -E "=>|geomean" "$OUT/peer.log" | tail -44
  ;;
f)
  peer_bench "$OUT" 200
  grep -E "=>|geomean" "$OUT/peer.log" | tail -44
  QB_ARGS="--kinds mxfp4 --no-50k" quant_bench "$OUT"
  ;;
esac
