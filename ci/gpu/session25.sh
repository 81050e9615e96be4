#!/usr/bin/env bash
# Session 25's GPU calls (docs/mxfp4.md and docs/h200.md "Session 25"), one 590 s slot each: the swapped MXFP4
# decode (kernels/_mxfp4_swapped.py, config decode="swapped": out.T = W @ x.T, wgmma with the decoded weights in
# registers) against the packed default, and the fp8 operand swap (GemmTile.swap_ab) against the fp8 table.
#   a   the first call: quant_bench MXFP4 default against swapped at T = 1 .. 4096 (first 330 s of the slot), then
#       perf_probe --parts swap25 (the fp8 operand swap at T = 1 .. 16) in the rest; no pytest (modes m, f)
#   m   GPU pytest of the MXFP4 files (both decodes), quant_bench MXFP4 default against swapped on the default
#       tiles at T = 1 .. 4096 (QB_ARGS), gpt-oss-120b MXFP4 at full size against the float64 oracle with the
#       swapped decode (MOE_CTS_MXFP4_DECODE=swapped, FULL_T)
#   s   quant_bench MXFP4 over swapped tiles (mx_configs.py variants) at T = 1, 16 (S_SMALL) and 512, 4096
#       (S_BIG), around its default tiles (mxfp4_gemm.SWAPPED_ROWS: 64 to 128 weight rows per operand; the fill
#       rule's 32-row down is mma.sync with a trip through shared memory, the m > 32 row's 256-row operands spill)
#   f   perf_probe --parts swap25: the fp8 operand swap (GemmTile.swap_ab) in the block fp8 decode row, DeepSeek-V3
#       with its shared expert at T = 1 .. 16 (9 alternating rounds; bf16 in the same rounds), then GPU pytest of
#       test_fp8_moe.py (the swap's PASS cases) in the rest of the slot
#   c   certify quick with the swapped decode as the default (MOE_CTS_MXFP4_DECODE=swapped), CERT_JOBS workers
#   v   (session 26) vLLM's Triton fused_experts certified on the GPU: `certify --impl vllm-peer --profile quick`
#       with the peer carried as .peer (MOE_CTS_VLLM_PEER; bf16 is what the interpreter could not judge), then
#       the plain certify quick with the shipped sm90 table given as a candidate (`--table`): the candidate path
#       end to end, the tile cases of cuda-sm90's six 16-bit buckets, and the report's run.table
#   x   (session 26) perf_probe --parts mix26: Mixtral-8x7B at T = 1 and 128 (issue 15's points slower than vLLM)
#       against the m <= 8 row at 4 / 5 stages and vLLM-like BLOCK_K 128 tiles in the m <= 32 row, then the peer
#       bench (mode z's, the acceptance table) in the rest of the slot
set -u
MODE=${1:-m}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
a)
  SLOT=330 QB_ARGS="--kinds mxfp4 --no-50k --mxfp4-configs default;swapped" quant_bench "$OUT"
  probe "$OUT" swap25 "$(slot_left 585)"
  ;;
m)
  gpu_pytest "$OUT" 170 tests/kernels/test_mxfp4_decode.py tests/kernels/test_mxfp4_moe.py \
    tests/kernels/test_mxfp4_pack.py
  SLOT=480 QB_ARGS=${QB_ARGS:-"--kinds mxfp4 --no-50k --mxfp4-configs default;swapped"} quant_bench "$OUT"
  MOE_CTS_MXFP4_DECODE=swapped timeout "$(slot_left 585)" python3 ci/gpu/quant_fullsize.py --out "$OUT/full" \
    --presets gpt-oss-120b --tokens "${FULL_T:-1,16,4096}" > "$OUT/full.log" 2> "$OUT/full-stderr.log"
  echo "quant_fullsize (swapped) exit $?"; tail -8 "$OUT/full.log"
  ;;
s)
  SW=decode=swapped
  SMALL=${S_SMALL:-"$SW;$SW,gate_up.BLOCK_N=64;$SW,down.BLOCK_N=32;$SW,gate_up.num_stages=4,down.num_stages=4;$SW,down.BLOCK_N=128"}
  BIG512=${S_512:-"$SW;$SW,BLOCK_M=64,gate_up.BLOCK_N=64,down.BLOCK_N=128,down.num_warps=8"}
  BIG=${S_BIG:-"$SW;$SW,BLOCK_M=128,gate_up.BLOCK_N=64,gate_up.num_warps=8,down.BLOCK_N=128,down.num_warps=8;$SW,BLOCK_M=128,gate_up.BLOCK_N=32,down.BLOCK_N=64,gate_up.num_warps=4,down.num_warps=4"}
  mx_variants "$OUT" 1 "$SMALL" 150
  mx_variants "$OUT" 16 "$SMALL" 300
  mx_variants "$OUT" 512 "$BIG512" 420
  mx_variants "$OUT" 4096 "$BIG" 585
  ;;
f)
  probe "$OUT" swap25 430
  gpu_pytest "$OUT" "$(slot_left 585)" tests/kernels/test_fp8_moe.py
  ;;
c)
  MOE_CTS_MXFP4_DECODE=swapped certify_quick "$OUT" "${CERT_JOBS:-10}" "$(slot_left 585)"
  certify_summary "$OUT"
  ;;
x)
  probe "$OUT" mix26 200
  peer_bench "$OUT" "$(slot_left 585)"
  grep -E "=>|geomean" "$OUT/peer.log" | tail -44
  ;;
v)
  MOE_CTS_VLLM_PEER=$PWD/.peer timeout 240 moe-cts certify --impl vllm-peer --profile quick --jobs "${CERT_JOBS:-10}" \
    --out "$OUT/cert-vllm" > "$OUT/cert-vllm.log" 2>&1
  echo "certify vllm-peer exit $?"; grep -E "coverage|verdict|CONFORMANT|VOID" "$OUT/cert-vllm.log" | tail -6
  timeout "$(slot_left 585)" moe-cts certify --profile quick --jobs "${CERT_JOBS:-10}" \
    --table kernels/configs/cuda-sm90.json --out "$OUT/cert" > "$OUT/cert.log" 2>&1
  echo "certify exit $? (candidate table)" >> "$OUT/cert.log"
  certify_summary "$OUT"
  ;;
esac
