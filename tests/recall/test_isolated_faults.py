"""Faults expected to crash run each in a process of its own (recall/runner.py): on a GPU an illegal address
poisons the CUDA context for the rest of its process, so a shared worker would fail every later task."""

from __future__ import annotations

import os

from moe_cts.conformance.recall import runner
from moe_cts.conformance.recall.catalog import load_catalog


def test_each_isolated_task_gets_a_process_of_its_own():
    pool = runner._Pool("interpreter", 2)
    try:
        pids = runner._isolated(pool, [(os.getpid, ())] * 3, lambda i: None)
    finally:
        pool.close()
    assert len(set(pids)) == 3 and os.getpid() not in pids


def test_the_int32_address_faults_expect_a_crash_and_are_the_isolated_ones():
    crash = {f.name for f in load_catalog().faults if f.outcome.value == "crash"}
    assert crash == {"router-logits-int32-rows", "gemm2-int32-rows", "combine-int32-token-offset"}
