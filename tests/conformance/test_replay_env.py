"""A replay command carries the environment that chose the kernel path of the failing run (engine/session.py
REPLAY_ENV): a case that failed under a candidate tile table or the swapped MXFP4 decode must replay there, not on
the defaults."""

from __future__ import annotations

import shlex

from moe_cts.conformance.engine.session import REPLAY_ENV, replay_command
from moe_cts.conformance.impls.vllm_peer import PEER_ENV
from moe_cts.kernels.config import PDL_ENV, TABLE_ENV
from moe_cts.kernels.fp8_gemm import HW_ROUND_ENV
from moe_cts.kernels.mxfp4_gemm import DECODE_ENV, ROW_GROUP_ENV


def test_the_names_are_the_modules_own():
    assert set(REPLAY_ENV) == {TABLE_ENV, DECODE_ENV, ROW_GROUP_ENV, HW_ROUND_ENV, PDL_ENV, PEER_ENV}


def test_the_variables_set_lead_the_command_and_the_others_do_not(monkeypatch):
    for name in REPLAY_ENV:
        monkeypatch.delenv(name, raising=False)
    assert replay_command("c1-x", "triton", "cuda:0").startswith("moe-cts replay c1-x ")
    monkeypatch.setenv(TABLE_ENV, "/tmp/my table.json")
    monkeypatch.setenv(DECODE_ENV, "swapped")
    words = shlex.split(replay_command("c1-x", "triton", "cuda:0", strict_ties=True))
    assert words[:2] == [f"{TABLE_ENV}=/tmp/my table.json", f"{DECODE_ENV}=swapped"]
    assert words[2:] == [
        "moe-cts",
        "replay",
        "c1-x",
        "--impl",
        "triton",
        "--device",
        "cuda:0",
        "--strict-ties",
    ]
