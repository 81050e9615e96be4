#!/usr/bin/env bash
# Session 20's GPU calls (docs/h200.md "Session 20"), one 590 s slot each:
#   p   vLLM's Triton path side by side with ours (carry .peer; BENCH_ARGS) on the current code, then perf_probe.py
#       --parts big20 (PROBE_PARTS overrides): bf16 BLOCK_M 256 tiles at T = 2048 / 4096
#   l   (at commit 301e769, where config.late_shared and perf_probe part late20 live; removed after they lost)
#       GPU pytest of test_streams.py, then perf_probe.py --parts late20: the shared expert's branch forked after
#       the routed GEMM1, block fp8 and bf16, T = 1 .. 4096
#   f   perf_probe.py --parts fill20 (PROBE_PARTS overrides; also ran bal20): the fill rule's min_block_n 16 at
#       T <= 8, block fp8 and bf16; balanced against random ids at m ~ 128
#   n   Nsight Compute (ncu, clocks left alone) on one ids-given bf16 forward per case (NCU_CASES): DeepSeek-V3
#       and Mixtral-8x7B at T = 4096, the routed and shared GEMMs (why T >= 2048 sits at 52-78% of the floor)
#   m   GPU pytest of the merged half tails (test_merge_tail.py, test_half_tail.py), then perf_probe.py --parts
#       merge20: GemmTile.merge_tail in the 16-bit m > 32 row, the five peer presets at T = 512 .. 4096
#   z   after the merged half tails went into the sm90 table: GPU pytest (merge_tail, half_tail, fused_moe,
#       grouped_gemm, weight_desc, capabilities), vLLM's Triton path side by side (carry .peer), certify quick
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
n)
  s=$(date +%s)
  timeout 420 ncu --profile-from-start off --clock-control none --kernel-name regex:"gate_up|down" \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section SchedulerStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
    python3 ci/gpu/ncu_probe.py ${NCU_CASES:-bf16:deepseek-v3:4096 bf16:mixtral-8x7b:4096} \
    > "$OUT/ncu.txt" 2> "$OUT/ncu-stderr.txt"
  echo "ncu exit $? in $(( $(date +%s) - s )) s"
  grep -E "profiled|==PROF==|==ERROR==|==WARNING==" "$OUT/ncu.txt" "$OUT/ncu-stderr.txt" | head -20
  grep -E "^  [a-z_0-9]+_kernel|Duration|Throughput|Hit Rate|Achieved Occupancy|Registers Per|Issue Slots Busy|No Eligible|Issued Warp|Warp Cycles Per Issued|Pipe|Stall" "$OUT/ncu.txt" | head -200
  ;;
m)
  gpu_pytest "$OUT" 150 tests/kernels/test_merge_tail.py tests/kernels/test_half_tail.py
  probe "$OUT" "${PROBE_PARTS:-merge20}" "$(slot_left 585)"
  ;;
z)
  gpu_pytest "$OUT" 170 tests/kernels/test_merge_tail.py tests/kernels/test_half_tail.py tests/kernels/test_fused_moe.py \
    tests/kernels/test_grouped_gemm.py tests/kernels/test_weight_desc.py tests/kernels/test_capabilities.py
  peer_and_certify "$OUT" "${PEER_S:-170}" 575
  ;;
g)
  gpu_pytest "$OUT" 150 ${GPU_TESTS:-tests/kernels/test_fp8_moe.py}
  SLOT=${QB_SLOT:-330} QB_ARGS=${QB_ARGS:-"--kinds fp8 --no-50k"} quant_bench "$OUT"
  certify_quick "$OUT" "${CERT_JOBS:-10}" "$(slot_left 575)"
  certify_summary "$OUT"
  ;;
esac
