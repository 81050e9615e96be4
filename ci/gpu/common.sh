# Shared steps of the ci/gpu/session*.sh device calls (sourced, not run).
#   gpu_setup OUT              OUT created, unbuffered Python, the project installed, the card and clocks printed;
#                              sets T0 (the call's start) for slot_left
#   certify_quick OUT JOBS S   `moe-cts certify --profile quick --jobs JOBS` into OUT/cert (log OUT/cert.log),
#                              at most S seconds, its exit and wall time appended to the log
#   certify_summary OUT        the log's verdict, coverage and non-passing lines
#   slot_left SLOT             seconds left of a SLOT-second call
#   recall_gpu OUT S           `moe-cts recall --profile gpu` on cuda:0 (RECALL_JOBS workers) into OUT/recall (log
#                              OUT/recall.log), at most S seconds; prints its exit and wall time
#   probe OUT PARTS S          ci/gpu/perf_probe.py --parts PARTS into OUT/probe (log OUT/probe.log), at most S
#                              seconds; prints its exit and the summary
#   quant_bench OUT            ci/gpu/quant_bench.py (QB_ARGS) in the rest of the slot; prints its table
#   gpu_pytest OUT S FILES...  pytest FILES on the GPU (log OUT/pytest.log), at most S seconds; prints the verdicts
#   peer_bench OUT S           .peer/bench.py (vLLM's Triton path beside ours, BENCH_ARGS) into OUT/peer (log
#                              OUT/peer.log), at most S seconds; prints its exit and wall time
#   peer_and_certify OUT P S   peer_bench (at most P seconds; carry .peer) and its table lines, then certify quick
#                              (CERT_JOBS workers) in the rest of an S-second slot and its summary
#   mx_variants OUT T V S      quant_bench MXFP4 at T tokens on the default config and its variants V (';'-list of
#                              ','-lists of gemm.field=int, ci/gpu/mx_configs.py) into OUT/tT, until S s of the slot
#   mxfp4_check OUT P Q        the MXFP4 files' GPU pytest (at most P s), quant_bench MXFP4 against swar (QB_ARGS, first
#                              Q s of the slot), gpt-oss-120b MXFP4 at full size against the oracle (FULL_T)
#   final_call OUT             a session's last call: quant_bench (QB_ARGS) in the first QB_SLOT seconds, the peer
#                              bench (PEER_S seconds; carry .peer), then certify quick in the rest of a 560 s slot
mx_variants() {
  mkdir -p "$1/t$2"
  local cfgs; cfgs=$(python3 ci/gpu/mx_configs.py --tokens "$2" --variants ";$3")
  SLOT=$4 QB_ARGS="--kinds mxfp4 --no-50k --tokens $2 --mxfp4-configs $cfgs" quant_bench "$1/t$2"
}

mxfp4_check() {
  # the MXFP4 files' GPU pytest (at most $2 s), quant_bench MXFP4 default against swar (QB_ARGS; first $3 s of
  # the slot, QB_SLOT overrides), gpt-oss-120b MXFP4 at full size against the float64 oracle (FULL_T)
  gpu_pytest "$1" "$2" tests/kernels/test_mxfp4_decode.py tests/kernels/test_mxfp4_moe.py tests/kernels/test_mxfp4_pack.py
  SLOT=${QB_SLOT:-$3} QB_ARGS=${QB_ARGS:-"--kinds mxfp4 --no-50k --mxfp4-configs default;swar"} quant_bench "$1"
  timeout "$(slot_left 585)" python3 ci/gpu/quant_fullsize.py --out "$1/full" --presets gpt-oss-120b \
    --tokens "${FULL_T:-1,16,4096}" > "$1/full.log" 2> "$1/full-stderr.log"
  echo "quant_fullsize exit $?"; tail -8 "$1/full.log"
}

gpu_setup() {
  mkdir -p "$1"
  export PYTHONUNBUFFERED=1
  T0=$(date +%s)
  python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v "^WARNING\|already" | tail -2
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw --format=csv,noheader
}

certify_quick() {
  local s; s=$(date +%s)
  timeout "$3" moe-cts certify --profile quick --jobs "$2" --out "$1/cert" > "$1/cert.log" 2>&1
  echo "certify exit $? in $(( $(date +%s) - s )) s" >> "$1/cert.log"
}

certify_summary() {
  tail -1 "$1/cert.log"
  grep -E "coverage|verdict|fail at|crash at|NOT|pass|Fail|Crash|compile" "$1/cert.log" | grep -v "^│" | head -30
}

slot_left() {
  echo $(( $1 - ($(date +%s) - T0) ))
}

recall_gpu() {
  local s; s=$(date +%s)
  timeout "$2" moe-cts recall --profile gpu --device cuda:0 --jobs ${RECALL_JOBS:-8} --out "$1/recall" > "$1/recall.log" 2>&1
  echo "recall exit $? in $(( $(date +%s) - s )) s"
}

peer_bench() {
  local s; s=$(date +%s)
  (cd .peer && timeout "$2" env MOE_CTS_SRC=.. python3 bench.py --out "$1/peer" ${BENCH_ARGS:-}) > "$1/peer.log" 2>"$1/peer-stderr.log"
  echo "peer bench exit $? in $(( $(date +%s) - s )) s"
}

probe() {
  timeout "$3" python3 ci/gpu/perf_probe.py --out "$1/probe" --baseline .probe_old --parts "$2" \
    > "$1/probe.log" 2>"$1/probe-stderr.log"
  echo "probe exit $?"
  sed -n '/== summary ==/,$p' "$1/probe.log" | cut -c1-300
  tail -3 "$1/probe-stderr.log"
}

quant_bench() {
  timeout "$(slot_left ${SLOT:-585})" python3 ci/gpu/quant_bench.py --out "$1/quant" ${QB_ARGS:-} 2>"$1/quant-stderr.log" | tail -24
  echo "quant_bench exit $?"; tail -3 "$1/quant-stderr.log"
}

gpu_pytest() {
  local out=$1 limit=$2 s; shift 2; s=$(date +%s)
  timeout "$limit" python3 -m pytest -q -p no:cacheprovider "$@" > "$out/pytest.log" 2>&1
  echo "pytest exit $? in $(( $(date +%s) - s )) s"; grep -E "FAILED|passed|failed" "$out/pytest.log" | head -20
}

peer_and_certify() {
  peer_bench "$1" "$2"
  grep -E "=>|geomean" "$1/peer.log" | tail -44
  certify_quick "$1" "${CERT_JOBS:-10}" "$(slot_left "$3")"
  certify_summary "$1"
}

final_call() {
  SLOT=${QB_SLOT:-230} quant_bench "$1"
  peer_and_certify "$1" "${PEER_S:-150}" "${SLOT:-560}"
}
