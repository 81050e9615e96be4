#!/usr/bin/env bash
# Session 17's GPU calls (docs/h200.md "Session 17"), one 590 s slot each. Modes p and q ran at commit 9aabe99:
# perf_probe.py part s17, the in-loop quantization of one-row fp8 tiles (ROW_QUANT) and the router -> GEMM1 PDL
# edge were removed after they lost (run them from that commit):
#   p   GPU pytest of the one-row quantization (test_row_quant.py) and its neighbours (slot layout, PDL, router,
#       streams), then perf_probe.py --parts s17 (PROBE_PARTS): block fp8 at T = 1 with / without the quantize
#       launches, and the router -> GEMM1 PDL edge at T = 1 on the five peer presets
#   q   the same probe after the row loads went one step ahead (S17_ROUTER=0: the fp8 part alone), GPU pytest of
#       test_row_quant.py first
#   r   perf_probe.py --parts router17: the router's logits split at T = 1 / 16
#   t   GPU pytest of the kernels after session 16's _tile_expert refactor and the router's split rule
#   v   issue 13's accuracy items on the final code: gpt-oss-120b MXFP4 at full size (its router split changed)
#       against the float64 oracle, then T = 50,000 at DeepSeek-V3 width in block fp8
#   f   the final call: quant_bench (QB_ARGS), vLLM's Triton path side by side (carry .peer), certify quick
set -u
MODE=${1:-p}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
p)
  gpu_pytest "$OUT" 170 tests/kernels/test_row_quant.py tests/kernels/test_slot_meta.py tests/kernels/test_pdl.py \
    tests/kernels/test_router.py tests/kernels/test_router_split.py tests/kernels/test_streams.py
  probe "$OUT" "${PROBE_PARTS:-s17}" "$(slot_left 585)"
  ;;
q)
  gpu_pytest "$OUT" 120 tests/kernels/test_row_quant.py tests/kernels/test_slot_meta.py
  export S17_ROUTER=0; probe "$OUT" "${PROBE_PARTS:-s17}" "$(slot_left 585)"
  ;;
r)
  probe "$OUT" "${PROBE_PARTS:-router17}" "$(slot_left 585)"
  ;;
t)
  gpu_pytest "$OUT" 230 tests/kernels/test_router_split.py tests/kernels/test_slot_meta.py tests/kernels/test_fp8_moe.py \
    tests/kernels/test_mxfp4_moe.py tests/kernels/test_grouped_gemm.py tests/kernels/test_fused_moe.py tests/kernels/test_router.py
  ;;
v)
  timeout 220 python3 ci/gpu/quant_fullsize.py --out "$OUT/full" --presets gpt-oss-120b --tokens ${FULL_T:-1,16,4096} \
    > "$OUT/fullsize.log" 2>&1; echo "fullsize exit $?"; tail -12 "$OUT/fullsize.log"
  timeout "$(slot_left 330)" python3 ci/gpu/quant_bench.py --out "$OUT/q50k" --kinds none > "$OUT/q50k.log" 2>&1
  echo "50k exit $?"; tail -4 "$OUT/q50k.log"
  ;;
f)
  QB_ARGS=${QB_ARGS:-"--kinds fp8,mxfp4 --no-50k"} final_call "$OUT"
  ;;
esac
