"""Probe kernels for testing the AOT machinery itself (not kernels under test; not in moe_cts.kernels.registry).

target_probe   compiles only if tl.target_info.is_hip() equals EXPECT_HIP: proves that in-kernel
               target checks see the compile target during AOT (the fake active driver)
die            looking it up kills the worker process with SIGSEGV: proves that a compiler crash is
               recorded as a Fail of that job and the run goes on
"""

from __future__ import annotations

import os
import signal

import triton
import triton.language as tl


@triton.jit
def target_probe(out_ptr, EXPECT_HIP: tl.constexpr):
    tl.static_assert(tl.target_info.is_hip() == EXPECT_HIP, "in-kernel target check saw the wrong target")
    tl.store(out_ptr, 1.0)


def __getattr__(name: str):
    if name == "die":
        os.kill(os.getpid(), signal.SIGSEGV)
    raise AttributeError(name)
