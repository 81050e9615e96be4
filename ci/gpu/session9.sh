#!/usr/bin/env bash
# Session 9's GPU calls (one 590 s slot each), chosen by the first argument:
#   a   GPU pytest of the MXFP4 decodes (swap included: every code and scale bit on the device's multiply),
#       then perf_probe.py --parts swap (PROBE_PARTS): decode="swap" tiles against the swar table row and bf16
set -u
MODE=${1:-a}
OUT=${2:-/tmp/moe-cts-gpu}
source "$(dirname "$0")/common.sh"
gpu_setup "$OUT"
case "$MODE" in
a)
  gpu_pytest "$OUT" "${TEST_TIMEOUT:-150}" tests/kernels/test_mxfp4_decode.py
  probe "$OUT" "${PROBE_PARTS:-swap}" "$(slot_left ${SLOT:-585})"
  ;;
esac
