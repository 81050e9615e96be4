"""One soak worker process: batches of generated cases, each run on the device and judged on the host.

    run_batch(job, b, n, pool, deadline) -> BatchResult      in a spawned worker (soak.py docstring)

    for each case id of generate_batch(job, b, pool)[:n], until the wall-clock deadline:
        waived / NotSupported before any launch (device matrix, claims)
        record(): route() and forward(out=poisoned) on job.device, outputs copied to the host
        judge_one(): run_case on the recording (soak_judge.py)
        a Crash on a GPU: check the device; a lost context ends the batch with the reason

The worker keeps its implementation and its compiled kernels between batches (Pool workers live for the
whole run), so each Triton variant is compiled or loaded once per worker, and counted (CompileCounter).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from moe_cts.conformance.engine import known_issues, sandbox
from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.devices import Device, waiver_for
from moe_cts.conformance.engine.soak_judge import SoakJob, generate_batch, judge_one, record, summary
from moe_cts.reference.errors import NotSupportedError


@dataclass(frozen=True)
class BatchResult:
    b: int
    generated: int
    records: list = field(default_factory=list)  # soak_judge.summary() dicts, with "T"
    compiles: int = 0
    cache_loads: int = 0
    stopped: str = ""  # "time limit" or "device lost: ..." when the batch ended early


class CompileCounter:
    """Counts Triton compiles in this process through knobs.compilation.listener (chained to any listener
    already set): `compiles` ran the compiler, `cache_loads` found the kernel in Triton's on-disk cache."""

    def __init__(self) -> None:
        self.compiles = self.cache_loads = 0
        self._knobs = self._prev = None

    def __enter__(self) -> CompileCounter:
        try:
            from triton import knobs  # imported here: triton after select_device set TRITON_INTERPRET
        except ImportError:  # no triton (a PyTorch implementation on a machine without it): nothing compiles
            return self
        self._knobs, self._prev = knobs, knobs.compilation.listener

        def listener(**kw):
            if kw.get("cache_hit"):
                self.cache_loads += 1
            else:
                self.compiles += 1
            return self._prev(**kw) if self._prev else None

        knobs.compilation.listener = listener
        return self

    def __exit__(self, *exc) -> None:
        if self._knobs is not None:
            self._knobs.compilation.listener = self._prev


# ----------------------------------------------------------------------------------------------- device side
def run_on_device(impl, case: Case, device: Device, caps) -> tuple[str, Any]:
    """("recorded", (Recorded, host CaseInputs)) to judge, or (outcome, message) settled without the judge: waived by the device
    matrix, NotSupported (claims, or the implementation declined), Crash (it raised)."""
    reason = waiver_for(device, case)
    if reason:
        return "waived", reason
    why = caps.unsupported_case(case)
    if why:
        return "not_supported", why
    host = case.build_inputs("cpu")  # built once: moved to the device here, handed to the judge as it is
    on_device = host
    if host.qweights is not None and host.device != device.torch_device:  # codes + scales: build there
        on_device = case.build_inputs(device.torch_device)
    elif host.device != device.torch_device:
        on_device = dataclasses.replace(
            host, x=host.x.to(device.torch_device), weights=host.weights.to(device.torch_device)
        )
    try:
        return "recorded", (record(impl, on_device, device, caps), host)
    except NotSupportedError as err:
        return "not_supported", str(err)
    except Exception as err:
        known = known_issues.crash_waiver(device, str(getattr(impl, "name", "")), err)
        if known:
            return "waived", f"waived, known limit {known}; raised {sandbox.summary(err)}"
        return "crash", sandbox.summary(err)


def device_lost(device: Device) -> str:
    """Why the device can no longer run cases (a sticky CUDA error after a crash), or ""."""
    if not device.is_gpu:
        return ""
    try:
        torch.cuda.synchronize(device.torch_device)
        torch.zeros(1, device=device.torch_device).add_(1).item()
    except Exception as err:
        return f"device lost: {sandbox.summary(err)}"
    return ""


_COUNTER: list[CompileCounter] = []  # one per worker process, entered on its first batch and kept


def _counter() -> CompileCounter:
    if not _COUNTER:
        _COUNTER.append(CompileCounter().__enter__())
    return _COUNTER[0]


def run_batch(job: SoakJob, b: int, n: int, pool: list | None, deadline: float | None) -> BatchResult:
    """Up to n cases of batch b (module docstring); stops at `deadline` (time.time()) with what it judged.
    The deadline counts from soak()'s start, so worker start-up (spawn, imports: ~5 to 20 s on the test VM)
    is inside it."""
    counter = _counter()
    c0, l0 = counter.compiles, counter.cache_loads
    ids = generate_batch(job, b, pool)
    caps = job.impl.capabilities()
    host = dataclasses.replace(job.device, torch_device=torch.device("cpu"))
    records, stopped = [], ""
    for cid in list(dict.fromkeys(ids))[:n]:
        if deadline is not None and time.time() >= deadline:
            stopped = "time limit"
            break
        case = Case.from_id(cid)
        kind, payload = run_on_device(job.impl, case, job.device, caps)
        if kind == "recorded":
            recording, inputs = payload
            rec = summary(judge_one(dataclasses.replace(job, device=host), cid, recording, inputs))
        else:
            rec = {"case_id": cid, "outcome": kind, "failing_stage": None, "message": payload[:400],
                   "max_ratio": {}}  # fmt: skip
        records.append(rec)
        if kind == "crash":
            stopped = device_lost(job.device)
            if stopped:
                stopped += f" (after case {cid})"
                break
    return BatchResult(b, len(ids), records, counter.compiles - c0, counter.cache_loads - l0, stopped)
