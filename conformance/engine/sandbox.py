"""What surrounds an implementation's call in the runner: the soft time limit, NaN-filled allocations, the
poisoned output with canaries either side, and small tensor helpers. Apart from runner.py so that the runner
holds only the order of the stages and their verdicts.

    with deadline(timeout_s): ...          CaseTimeout (a BaseException) when the limit passes
    with nan_fill_uninitialized(): ...     torch.empty returns NaN-filled memory (unwritten elements show)
    settle(device)                         asynchronous GPU kernel faults surface here, in the caller's call
    p = PoisonedOutput.make(T, H, dtype, device); impl.run(..., out=p.view); p.unwritten(); p.canaries_changed()
"""

from __future__ import annotations

import contextlib
import signal
import threading
import traceback
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import moe_cts.reference.numpy_oracle as npo

#: (integer view dtype, NaN bit pattern) of the poison inside the output and of the canaries around it
POISON = {torch.float32: (torch.int32, 0x7FC0DEAD), torch.float16: (torch.int16, 0x7E5A),
          torch.bfloat16: (torch.int16, 0x7FCD)}  # fmt: skip
CANARY = {torch.float32: 0x7FC0CAFE, torch.float16: 0x7E3C, torch.bfloat16: 0x7FCA}
CANARY_ELEMS = 256


class CaseTimeout(BaseException):
    """Raised by the SIGALRM handler; BaseException so implementation code cannot swallow it."""


def summary(err: BaseException) -> str:
    tb = traceback.extract_tb(err.__traceback__)[-3:]
    where = " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in reversed(tb))
    return f"{type(err).__name__}: {err} [{where}]"


@contextlib.contextmanager
def deadline(timeout_s: float | None):
    usable = (
        timeout_s and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def on_alarm(signum, frame):
        raise CaseTimeout()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, float(timeout_s))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, old)


def settle(device: torch.device) -> None:
    """Wait for the device's queued work. Kernel faults on a GPU (an illegal address from a wrapped int32
    offset) are reported asynchronously, at the next synchronizing call: waiting inside the implementation's
    call makes them its Crash at its stage, not a harness error in the judge that reads the output next."""
    device = torch.device(device)
    if device.type == "cuda":  # ROCm devices are "cuda" too
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def nan_fill_uninitialized():
    """torch.empty returns NaN-filled memory while active (torch's deterministic-fill switch)."""
    was_det, was_warn = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    was_fill = torch.utils.deterministic.fill_uninitialized_memory
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = True
        try:
            yield
        finally:
            torch.utils.deterministic.fill_uninitialized_memory = was_fill
            torch.use_deterministic_algorithms(was_det, warn_only=was_warn)


def as_np(t) -> np.ndarray:
    return npo._np(t)


def ids_np(t) -> np.ndarray:
    return np.asarray(t.detach().cpu() if hasattr(t, "detach") else t).astype(np.int64)


def bits(t: torch.Tensor) -> torch.Tensor:
    view = {4: torch.int32, 2: torch.int16}[t.element_size()]
    return t.detach().contiguous().view(view).cpu()


def field_of(out: Any, name: str) -> Any:
    return out if isinstance(out, torch.Tensor) else getattr(out, name)


# ----------------------------------------------------------------------------------------------- poisoned output
@dataclass(frozen=True)
class PoisonedOutput:
    buf: torch.Tensor  # (CANARY_ELEMS + T*H + CANARY_ELEMS,) case dtype
    out: torch.Tensor  # (T, H) view into buf

    @classmethod
    def make(cls, T: int, H: int, dtype: torch.dtype, device: torch.device) -> PoisonedOutput:
        int_dt, poison = POISON[dtype]
        buf = torch.empty(T * H + 2 * CANARY_ELEMS, dtype=dtype, device=device)
        bits = buf.view(int_dt)
        bits.fill_(CANARY[dtype])
        bits[CANARY_ELEMS : CANARY_ELEMS + T * H] = poison
        return cls(buf, buf[CANARY_ELEMS : CANARY_ELEMS + T * H].view(T, H))

    def unwritten(self) -> np.ndarray:
        """(T, H) bool: elements that still hold the poison bits."""
        return (bits(self.out) == POISON[self.out.dtype][1]).numpy()

    def canaries_changed(self) -> int:
        b = bits(self.buf)
        n = self.out.numel()
        edges = torch.cat([b[:CANARY_ELEMS], b[CANARY_ELEMS + n :]])
        return int((edges != CANARY[self.out.dtype]).sum())


# ----------------------------------------------------------------------------------------------- session
