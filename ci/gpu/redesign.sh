#!/usr/bin/env bash
# The redesign's GPU acceptance in two device calls (each under 10 minutes):
#   ci/gpu/redesign.sh bench OUT    kernel tests on the GPU; old (6e80182, .baseline) vs new: bitwise outputs on the
#                                   full-size presets and speed side by side, with vLLM's path (.peer) and the
#                                   ceilings measured in the same run
#   ci/gpu/redesign.sh baseline OUT old vs new alone: bitwise and graph-replay speed in interleaved rounds
#   ci/gpu/redesign.sh recheck OUT  the T=2048 points (and Zipf 512) again with 10 rounds
#   ci/gpu/redesign.sh paired OUT   every point, old vs new, 12 paired rounds (median of per-round ratios)
#   ci/gpu/redesign.sh certify OUT  moe-cts certify --profile quick (with the sm90 compile tier), then verify
# Carry .peer (a copy of ../shared/peer) and .baseline (git archive 6e80182 kernels reference).
set -u
what=$1; OUT=${2:-/tmp/moe-cts-gpu}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v "^WARNING\|already" | tail -2
nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
case $what in
bench)
  timeout 150 python3 -m pytest -q -p no:cacheprovider tests/kernels -n 8 2>&1 | tail -4
  mkdir -p "$OUT/bench"
  timeout 400 python3 ci/bench/moe_bench.py --out "$OUT/bench" --budget-s 330 --rep-ms 60 --warmup-ms 10 \
    --peer .peer --baseline-src .baseline 2>"$OUT/bench/stderr.log" | tail -70
  ;;
baseline)
  timeout 150 python3 -m pytest -q -p no:cacheprovider tests/kernels -n 8 2>&1 | tail -2
  mkdir -p "$OUT/baseline"
  timeout 420 python3 ci/bench/moe_bench.py --out "$OUT/baseline" --budget-s 380 --rep-ms 40 --warmup-ms 10 \
    --baseline-src .baseline --baseline-only 2>"$OUT/baseline/stderr.log" | tail -42
  ;;
recheck)
  mkdir -p "$OUT/recheck"
  timeout 300 python3 ci/bench/moe_bench.py --out "$OUT/recheck" --rounds 10 --rep-ms 60 --warmup-ms 10 \
    --presets mixtral,qwen2,deepseek-v3,qwen3-235b,gpt-oss-120b --tokens 2048 \
    --baseline-src .baseline --baseline-only 2>"$OUT/recheck/stderr.log" | grep -A12 "^old"
  ;;
paired)
  # every point, old vs new as the median of 12 paired rounds (ci/bench/bench_baseline.py)
  mkdir -p "$OUT/paired"
  timeout 540 python3 ci/bench/moe_bench.py --out "$OUT/paired" --rounds 12 --rep-ms 40 --warmup-ms 10 \
    --baseline-src .baseline --baseline-only 2>"$OUT/paired/stderr.log" | grep -A40 "^old"
  ;;
certify)
  start=$(date +%s)
  timeout 560 moe-cts certify --profile quick --out "$OUT/cert" 2>&1 | tail -30
  echo "certify exit ${PIPESTATUS[0]} in $(( $(date +%s) - start )) s"
  moe-cts verify "$OUT/cert/certificate.tgz" --allow-dirty | tail -5
  ;;
esac
