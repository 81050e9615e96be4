"""Running cases without pytest: one implementation on one device, with the results log and two time limits.

    s = Session(impl=load_implementation("triton"), impl_name="triton", device=select_device("interpreter"),
                label="interpreter", timeout_s=600, log=ResultLog(dir))
    s.run(case, "must_pass") -> CaseResult      "started" logged before, the result after; never raises for
                                                 the implementation's faults

The pytest plugin (harness/plugin.py), `moe-cts replay` and any other driver are thin layers over this.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import shlex
import sys
import threading
from dataclasses import dataclass
from typing import Any

from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.devices import Device
from moe_cts.conformance.engine.log import ResultLog
from moe_cts.conformance.engine.protocol import Implementation
from moe_cts.conformance.engine.results import CaseResult, Outcome
from moe_cts.conformance.engine.runner import run_case

DEFAULT_TIMEOUT_S = 600.0
#: After the soft timeout, a case stuck in native code gets this long before the watchdog ends its process.
HARD_TIMEOUT_GRACE_S = 30.0
WATCHDOG_EXIT = 70


@dataclass
class Session:
    """The state that every case of one run shares."""

    impl: Implementation
    impl_name: str
    device: Device
    label: str
    timeout_s: float | None = DEFAULT_TIMEOUT_S
    log: ResultLog | None = None  # None: nothing is logged (replay)
    strict_ties: bool = False  # a tie-rule difference is a Fail, not a CompatibilityWarning (runner.py)

    def run(self, case: Case, source: str) -> CaseResult:
        """run_case under two limits: its own soft one (SIGALRM interrupts Python code: Timeout naming the
        stage, the run goes on) and a hard one here: a watchdog thread records Timeout and ends the process
        when the case is stuck in native code (a kernel that never returns); xdist then starts a fresh worker."""
        if self.log is not None:
            self.log.started(case.case_id, source)
        limit = self.timeout_s if self.timeout_s and self.timeout_s > 0 else None
        watchdog = None
        if limit:
            watchdog = threading.Timer(
                limit + HARD_TIMEOUT_GRACE_S, self._hard_timeout, (case, limit, source)
            )
            watchdog.daemon = True
            watchdog.start()
        try:
            result = run_case(self.impl, case, self.device, timeout_s=limit, strict_ties=self.strict_ties)
        finally:
            if watchdog is not None:
                watchdog.cancel()
        if self.log is not None:
            self.log.result(result, source)
        return result

    def timeout_result(self, case: Case, limit: float, elapsed: float) -> CaseResult:
        return CaseResult(
            case_id=case.case_id,
            outcome=Outcome.TIMEOUT,
            params=jsonable(case.params()),
            duration_s=elapsed,
            message=f"exceeded the per-case limit of {limit:g} s",
            impl=self.impl_name,
            device=self.label,
        )

    def _hard_timeout(self, case: Case, limit: float, source: str) -> None:
        result = self.timeout_result(case, limit, limit + HARD_TIMEOUT_GRACE_S)
        if self.log is not None:
            self.log.result(result, source)
        else:
            print(f"{case.case_id}: timeout: {result.message}", file=sys.stderr, flush=True)
        os._exit(WATCHDOG_EXIT)


#: variables that change what an implementation computes (a candidate tile table, the MXFP4 decode, the fp8
#: rounding path, programmatic dependent launch, where the vllm-peer file is): a replay command carries the ones
#: set, or it would replay another kernel path than the one that failed
REPLAY_ENV = (
    "MOE_CTS_TABLE",
    "MOE_CTS_MXFP4_DECODE",
    "MOE_CTS_MXFP4_ROW_GROUP",
    "MOE_CTS_FP8_HW_ROUND",
    "MOE_CTS_PDL",
    "MOE_CTS_VLLM_PEER",
)


def replay_env() -> dict[str, str]:
    """The REPLAY_ENV variables set in this process."""
    return {k: os.environ[k] for k in REPLAY_ENV if os.environ.get(k)}


def replay_command(case_id: str, impl: str, device: str, strict_ties: bool = False) -> str:
    env = "".join(f"{k}={shlex.quote(v)} " for k, v in replay_env().items())
    cmd = f"{env}moe-cts replay {shlex.quote(case_id)} --impl {shlex.quote(impl)} --device {shlex.quote(device)}"
    return cmd + (" --strict-ties" if strict_ties else "")


def capabilities_of(impl: Any) -> Any:
    caps = getattr(impl, "capabilities", None)
    if callable(caps):
        caps = caps()
    return jsonable(caps)


def jsonable(obj: Any) -> Any:
    """Dataclasses, enums, sets and the like as plain JSON values (sets sorted, so reports are stable)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [jsonable(v) for v in obj]
        return sorted(items, key=str) if isinstance(obj, (set, frozenset)) else items
    if isinstance(obj, enum.Enum):
        return obj.value
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)
