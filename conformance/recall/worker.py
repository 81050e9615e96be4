"""One fault, or one control case, inside a worker process of the recall pool.

    init_worker(device)                  pool initializer: select the device (sets TRITON_INTERPRET first)
    run_fault(fault, cases, timeout_s)   -> FaultResult: inject, run cases in order, stop at the first kill
    run_control(fault, case, timeout_s)  -> CaseRun: the same case on the unmutated implementation

    status            meaning
    killed            a case got the expected outcome at the expected stage
    survived          every case ran and stayed conformant
    not_exercised     every case was NotSupported on this device (e4m3fnuz cases on CUDA, say): nothing ran
    equivalent        survived, and the mutant's forward output equals the unmutated kernels' bit for bit on
                      every case (runner.py marks it from the digests below): the mutation changes nothing
                      this device computes, so no check could catch it here (an equivalent mutant)
    caught_elsewhere  some case was non-conformant, but only through a crash or a Fail at another stage
    stale             a mutation's `old` snippet no longer occurs exactly once in the kernels
    error             the fault could not be injected (the mutated copy does not import, for example)

Cases run through moe_cts.conformance.engine.runner.run_case, the same judge a certify run uses; a fault's
worker keeps torch and Triton imported between faults, so one process handles many faults. A surviving
mutation's cases, and their control runs, carry a digest: sha256 of the forward output's bits on the
case's inputs (cases judged whole on the host; sampled ones get no digest and are never called equivalent).
"""

from __future__ import annotations

import hashlib
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.results import CaseResult, Outcome
from moe_cts.conformance.recall.catalog import Fault, environment
from moe_cts.conformance.recall.mutate import StaleMutation, kernels_root, mutated_kernels

_STATE: dict[str, Any] = {}
WARNINGS = (Outcome.COMPATIBILITY_WARNING, Outcome.QUALITY_WARNING)


@dataclass(frozen=True)
class CaseRun:
    case: str  # must-pass / catalog name, or the case id
    outcome: str  # the case's worst outcome
    failing_stage: str | None
    at_stage: str  # outcome of the fault's expected stage ("" when the case did not reach it)
    time_s: float
    message: str = ""
    digest: str = ""  # sha256 of the forward output's bits ("" when not computed)


@dataclass(frozen=True)
class FaultResult:
    name: str
    status: str  # killed | survived | not_exercised | equivalent | caught_elsewhere | stale | error
    killed_by: tuple[str, ...] = ()
    runs: tuple[CaseRun, ...] = ()
    time_s: float = 0.0
    message: str = ""


def init_worker(device: str) -> None:
    """Pool initializer: the device first (TRITON_INTERPRET must be set before triton is imported), then the
    real kernels folder, read before any mutation replaces the package.

    torch.empty is poisoned for the worker's life (torch's fill_uninitialized_memory: NaN for floats, the
    largest value for ints), for faults and control alike. A mutated alignment leaves slots of sorted_ids
    unwritten; with garbage there the interpreter follows the garbage ids out of bounds and corrupts the
    heap (measured: `malloc(): unaligned tcache chunk detected`, the same fault killed in one run and
    crashing the next). Poisoned, an unwritten slot is past every row (masked), and the run is repeatable."""
    import warnings

    import torch

    from moe_cts.conformance.engine.devices import select_device

    _STATE["device"] = select_device(device)
    _STATE["root"] = kernels_root()
    warnings.filterwarnings("ignore", message=".*deterministic.*")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True


def _label(case: Case) -> str:
    return case.name or case.case_id[:24]


def _impl(fault: Fault, *, control: bool):
    if fault.kind == "broken":
        if control:
            from moe_cts.conformance.impls.torch_eager import TorchEagerImplementation

            return TorchEagerImplementation()
        from moe_cts.conformance.impls.broken import BROKEN

        return BROKEN[fault.broken].factory()
    from moe_cts.conformance.impls.triton import TritonImplementation

    impl = TritonImplementation(**fault.impl)
    impl.name = "triton" if control else f"recall:{fault.name}"
    return impl


def judge(fault: Fault, result: CaseResult, label: str, elapsed: float) -> tuple[CaseRun, str]:
    """(the run, 'killed' | 'elsewhere' | 'conformant'): killed when the expected stage got the expected
    outcome (a Fail where a warning or a crash was expected also counts: the suite is stricter, not blind).
    Expected crashes are the memory faults of wrapped int32 offsets: on a GPU the wrapped address is an
    illegal access, reported inside the implementation's call (sandbox.settle)."""
    at = next((v.outcome for v in result.stages if v.stage == fault.stage), None)
    run = CaseRun(label, result.outcome.value, result.failing_stage,
                  at.value if at else "", round(elapsed, 3), result.message[:300])  # fmt: skip
    if at == fault.outcome or (fault.outcome in (*WARNINGS, Outcome.CRASH) and at == Outcome.FAIL):
        return run, "killed"
    if not result.outcome.conformant:
        return run, "elsewhere"
    return run, "conformant"


def digest(impl, case: Case) -> str:
    """sha256 of the bits of impl's forward output on the case's inputs; "" for cases judged by sampling
    and when the forward raises (run_case judged that)."""
    # here, not at the top: the engine imports triton, which must follow init_worker's TRITON_INTERPRET
    from moe_cts.conformance.engine import sampled, sampled_experts, sandbox
    from moe_cts.conformance.engine.protocol import FORWARD

    if sampled.needs_sampling(case) or sampled_experts.needs_expert_sampling(case):
        return ""
    device = _STATE["device"]
    try:
        y = sandbox.field_of(impl.run(case.build_inputs(device.torch_device), FORWARD, device), "y")
        return hashlib.sha256(sandbox.bits(y).cpu().numpy().tobytes()).hexdigest()
    except Exception:
        return ""


def _run_cases(fault: Fault, cases: list[Case], timeout_s: float) -> tuple[str, list[CaseRun], list[str]]:
    from moe_cts.conformance.engine.runner import run_case

    impl, runs, status = _impl(fault, control=False), [], "survived"
    for case in cases:
        t0 = time.perf_counter()
        result = run_case(impl, case, _STATE["device"], timeout_s=timeout_s)
        run, verdict = judge(fault, result, _label(case), time.perf_counter() - t0)
        runs.append(run)
        if verdict == "killed":
            return "killed", runs, [run.case]
        if verdict == "elsewhere":
            status = "caught_elsewhere"
    if status == "survived" and runs and all(r.outcome == Outcome.NOT_SUPPORTED.value for r in runs):
        status = "not_exercised"
    if status == "survived" and fault.kind == "mutation":  # only a survivor can be equivalent: digest it
        runs = [replace(r, digest=digest(impl, case)) for r, case in zip(runs, cases)]
    return status, runs, []


def smem_violations() -> list[str]:
    """The `compile` stage's table check on the loaded moe_cts.kernels: every tile-table entry's pipeline
    buffers must fit its backend's shared memory (docs/bugs.md#bug-13-lds-overflow)."""
    import moe_cts.kernels.config as cfgmod

    elem = cfgmod.ELEM_BYTES
    out = []
    for backend, dc, bucket, cfg in cfgmod.all_configs():
        need = max(cfg.pipeline_bytes(elem[dc]).values())
        limit = cfgmod.table_shared_limit(backend)
        if limit is not None and need > limit:  # None: the interpreter's table, no shared memory to overflow
            out.append(f"{backend}-{dc}-{bucket}: {need} B > {limit} B")
    return out


def run_fault(fault: Fault, cases: list[Case], timeout_s: float) -> FaultResult:
    t0 = time.perf_counter()

    def done(status: str, runs=(), killed=(), message: str = "") -> FaultResult:
        return FaultResult(
            fault.name, status, tuple(killed), tuple(runs), round(time.perf_counter() - t0, 3), message
        )

    if fault.kind == "broken":
        status, runs, killed = _run_cases(fault, cases, timeout_s)
        return done(status, runs, killed)
    try:
        with tempfile.TemporaryDirectory(prefix=f"recall-{fault.name}-") as tmp, \
                mutated_kernels(_STATE["root"], fault.edits, Path(tmp)), environment(fault.env):  # fmt: skip
            if fault.kind == "config":
                bad = smem_violations()
                return done("killed" if bad else "survived", killed=bad[:3], message="; ".join(bad[:3]))
            status, runs, killed = _run_cases(fault, cases, timeout_s)
            return done(status, runs, killed)
    except StaleMutation as err:
        return done("stale", message=str(err))
    except Exception as err:  # the mutated copy failed to import: the catalog entry is broken, not the suite
        tb = traceback.format_exception_only(type(err), err)[-1].strip()
        return done("error", message=f"injecting the fault failed: {tb}")


def run_control(fault: Fault, case: Case, timeout_s: float, want_digest: bool = False) -> CaseRun:
    """The case on the unmutated implementation the fault wraps; conformant or the recall means nothing.
    want_digest: a surviving mutation ran this case (runner.py step 5 compares the digests)."""
    from moe_cts.conformance.engine.runner import run_case

    t0 = time.perf_counter()
    impl = _impl(fault, control=True)
    with environment(fault.env):  # the same kernel path as the fault's run
        result = run_case(impl, case, _STATE["device"], timeout_s=timeout_s)
        return CaseRun(_label(case), result.outcome.value, result.failing_stage, "",
                       round(time.perf_counter() - t0, 3), result.message[:300],
                       digest(impl, case) if want_digest else "")  # fmt: skip
