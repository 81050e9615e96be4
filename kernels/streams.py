"""A side branch for work independent of the routed experts: the shared expert beside them.

    shared, branch = beside(device, work)  # work() on the side stream while a CUDA graph is captured
                                           # (inline otherwise); work None: nothing, shared None
    ... routed experts on the current stream ...
    branch.join()                          # the current stream waits for the side stream

Why: the shared expert's GEMMs are one-expert launches with few programs at decode sizes (DeepSeek-V3 at
T = 1: 64 programs for GEMM1, one per SM at most; 23.5 us for its 29 MB of fp8 weights on the H200, where
the routed GEMM1 moved 235 MB in 60 us). In a captured graph the two launches become parallel branches and
the shared programs take SMs the routed launch leaves idle.

Why only while capturing: production decode replays graphs; an eager forward pays the stream switch and the
event on the host for every call, more than the overlap gains when launches are host-bound. Same kernels,
same inputs either way: the outputs are bitwise equal (tests/kernels/test_streams.py on a GPU).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")

#: The side branch is taken while capturing; perf probes switch it off to time the serial order.
ENABLED = True


@functools.cache
def _side_stream(index: int) -> torch.cuda.Stream:
    return torch.cuda.Stream(device=index)


class SideBranch:
    """Context manager for the side work, then join() before its result is read (module docstring)."""

    def __init__(self, device: torch.device, enabled: bool = True) -> None:
        self.main = self.side = None
        self._ctx = None
        device = torch.device(device)
        if ENABLED and enabled and device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            self.main = torch.cuda.current_stream(device)
            self.side = _side_stream(
                device.index if device.index is not None else torch.cuda.current_device()
            )
            self.side.wait_stream(self.main)  # the side work sees everything issued before the fork

    def __enter__(self) -> SideBranch:
        if self.side is not None:
            self._ctx = torch.cuda.stream(self.side)
            self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
            self._ctx = None

    def join(self) -> None:
        """The current stream waits for the side work (a graph capture must end joined)."""
        if self.side is not None:
            self.main.wait_stream(self.side)


def beside(device: torch.device, work: Callable[[], T] | None) -> tuple[T | None, SideBranch]:
    """(work() issued on a side branch, the branch to join before its result is read); (None, a branch with
    nothing to join) when work is None (a layer without a shared expert)."""
    branch = SideBranch(device, enabled=work is not None)
    with branch:
        out = work() if work is not None else None
    return out, branch
