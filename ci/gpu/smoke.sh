#!/usr/bin/env bash
# First contact with a CUDA GPU: install, kernel unit tests on the device, quick benchmark.
# Usage (on the GPU machine, repo root): bash ci/gpu/smoke.sh OUTDIR
set -u
OUT=${1:-/tmp/moe-cts-gpu}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
timeout 300 python3 -m pytest -q -x -p no:cacheprovider tests/kernels -n 8 2>&1 | tail -25 | tee "$OUT/kernels_tests.log"
# quick table: one preset, three T; the vLLM peer too when .peer/ holds a copy of ../shared/peer (docs/benchmark.md)
PEER=(); [ -f .peer/vllm_peer.py ] && PEER=(--peer .peer)
timeout 240 python3 ci/bench/moe_bench.py --presets qwen2 --tokens 1,128,2048 --no-zipf ${PEER[@]+"${PEER[@]}"} --out "$OUT/bench_quick" 2>&1 | tee "$OUT/bench_quick.log" | tail -40
