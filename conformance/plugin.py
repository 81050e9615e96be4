"""pytest plugin of moe-cts (entry point pytest11 "moe_cts"): the conformance tests as pytest tests.

Inactive unless a --moe-cts-* option is given, so the project's own unit tests never see it. Active, it turns
the test functions of conformance/plugin_suite.py into one test per must-pass case (parametrized by case id)
and a few hypothesis batches of generated cases; run them by naming that file:

    pytest -n 2 --moe-cts-device interpreter --moe-cts-impl triton --moe-cts-profile smoke \\
           --moe-cts-results out/shard $(python -c "import conformance.plugin_suite as s; print(s.__file__)")

Every case writes "started" to DIR/results-<worker>.jsonl before it runs and its CaseResult after, so a case that
kills its worker is recorded as Crash (by the controller's xdist crash hook, and by `read_results` afterwards).
Conformant outcomes pass; Fail/Crash/Timeout/InternalError fail with the case id and the replay command.
"""

from __future__ import annotations

import json
import os
import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conformance.report.log import ResultLog, record_crash
from conformance.results import CaseResult, Outcome

PROFILES = ("smoke", "quick", "full")
#: certify profile -> (hypothesis profile of conformance/profiles.py, generated examples in total)
HYPOTHESIS_PROFILE = {"smoke": ("ci", 4), "quick": ("cert", 200), "full": ("cert", 2000)}
#: Generated cases run as up to this many hypothesis tests, each with its own seed, so xdist spreads them out;
#: at least this many examples per batch, because every batch first draws hypothesis's simplest example.
GENERATED_BATCHES = 16
MIN_EXAMPLES_PER_BATCH = 25
DEFAULT_SEED = 0x4D6F45  # "MoE": derandomized batches seed from here, so a profile draws the same cases
DEFAULT_TIMEOUT_S = 600.0
#: After the soft timeout, a case stuck in native code gets this long before the watchdog ends its process.
HARD_TIMEOUT_GRACE_S = 30.0
_WATCHDOG_EXIT = 70


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("moe-cts", "moe-cts conformance")
    g.addoption("--moe-cts-device", default=None, help="auto | cuda:N | hip:N | interpreter (activates moe-cts)")
    g.addoption("--moe-cts-impl", default=None, help="implementation under test (default: triton)")
    g.addoption("--moe-cts-profile", default=None, choices=PROFILES, help="case profile (default by device)")
    g.addoption("--moe-cts-results", default=None, help="directory for results-<worker>.jsonl and run.json")
    g.addoption("--moe-cts-timeout", default=None, type=float, help="per-case time limit in seconds")
    g.addoption("--moe-cts-examples", default=None, type=int, help="generated cases in total (0: none)")
    g.addoption("--moe-cts-seed", default=None, type=int, help="base seed of the generated batches")
    g.addoption("--moe-cts-label", default=None, help="device label of this shard in reports")
    g.addoption(
        "--moe-cts-cases", default=None, help="comma-separated must-pass case ids to run (a subset: no certificate)"
    )


@dataclass
class MoECts:
    """The plugin's state in one pytest process."""

    device_arg: str
    impl_name: str
    profile: str
    results: Path
    timeout_s: float
    examples: int
    seed: int
    label: str
    hypothesis_profile: str
    only: tuple[str, ...] = ()  # must-pass subset chosen by --moe-cts-cases; empty: the whole profile
    _device: Any = None
    _impl: Any = None
    _log: ResultLog | None = None
    _seen: set[str] = field(default_factory=set)

    # -- engine access, lazy so that loading the plugin costs nothing when inactive
    @property
    def device(self):
        if self._device is None:
            from conformance.devices import select_device

            self._device = select_device(self.device_arg)
        return self._device

    @property
    def impl(self):
        if self._impl is None:
            self._impl = load_implementation(self.impl_name)
        return self._impl

    @property
    def log(self) -> ResultLog:
        if self._log is None:
            self._log = ResultLog(self.results)
        return self._log

    @property
    def batches(self) -> int:
        if self.examples <= 0:
            return 0
        return min(GENERATED_BATCHES, max(1, self.examples // MIN_EXAMPLES_PER_BATCH))

    def must_pass_ids(self) -> list[str]:
        ids = [c.case_id for c in must_pass_for(self.profile, self.device.backend)]
        return [i for i in ids if i in self.only] if self.only else ids

    def replay_command(self, case_id: str) -> str:
        return replay_command(case_id, self.impl_name, self.device_arg)

    def run(self, case, source: str) -> CaseResult:
        """Run one case with the log lines around it; never raises for the implementation's faults."""
        self.log.started(case.case_id, source)
        result = run_guarded(self, case, source)
        self.log.result(result, source)
        return result


def load_implementation(name: str):
    """A registered implementation by name, or "package.module:Attr" (a class or an instance) for one that is
    not installed as an entry point (a test double, a work in progress)."""
    import importlib
    import re

    if re.fullmatch(r"[\w.]+\.\w+:\w+", name) or re.fullmatch(r"\w+:[A-Z]\w*", name):
        mod, _, attr = name.partition(":")
        obj = getattr(importlib.import_module(mod), attr)
        return obj() if isinstance(obj, type) else obj
    from conformance.impl import get_implementation

    return get_implementation(name)


def must_pass_for(profile: str, backend: str) -> list:
    """Must-pass cases of a profile. Cases tagged "gpu" (real-model presets at the sizes a GPU holds) join the
    quick and full profiles on a GPU, and are left out on the interpreter (they need device memory or time the
    CPU does not have) and from smoke (a few minutes anywhere)."""
    from conformance.cases import must_pass_cases, must_pass_profiles

    cases = [c for c in must_pass_cases(profile) if not (backend == "interpreter" and "gpu" in must_pass_profiles(c))]
    if backend != "interpreter" and profile in ("quick", "full"):
        seen = {c.case_id for c in cases}
        cases += [c for c in must_pass_cases("gpu") if c.case_id not in seen]
    return cases


def replay_command(case_id: str, impl: str, device: str) -> str:
    return f"moe-cts replay {shlex.quote(case_id)} --impl {shlex.quote(impl)} --device {shlex.quote(device)}"


def default_profile(backend: str) -> str:
    return "smoke" if backend == "interpreter" else "quick"


def _state(config: pytest.Config) -> MoECts | None:
    return getattr(config, "_moe_cts", None)


def pytest_configure(config: pytest.Config) -> None:
    opt = config.option
    names = ("moe_cts_device", "moe_cts_impl", "moe_cts_profile", "moe_cts_results")
    if not any(getattr(opt, n, None) is not None for n in names):
        return
    device_arg = opt.moe_cts_device or "auto"
    # select_device sets TRITON_INTERPRET for the interpreter: it must run before anything imports triton.
    from conformance.devices import select_device

    device = select_device(device_arg)
    profile = opt.moe_cts_profile or default_profile(device.backend)
    hyp_profile, examples = HYPOTHESIS_PROFILE[profile]
    state = MoECts(
        device_arg=device_arg,
        impl_name=opt.moe_cts_impl or "triton",
        profile=profile,
        results=Path(opt.moe_cts_results or "moe-cts-results"),
        timeout_s=opt.moe_cts_timeout if opt.moe_cts_timeout is not None else DEFAULT_TIMEOUT_S,
        examples=opt.moe_cts_examples if opt.moe_cts_examples is not None else examples,
        seed=opt.moe_cts_seed if opt.moe_cts_seed is not None else DEFAULT_SEED,
        label=opt.moe_cts_label or device_arg,
        hypothesis_profile=hyp_profile,
        only=tuple(i for i in (opt.moe_cts_cases or "").split(",") if i),
        _device=device,
    )
    config._moe_cts = state
    from conformance.profiles import register_profiles

    register_profiles()  # the hypothesis profiles the generated batches start from
    state.results.mkdir(parents=True, exist_ok=True)
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist) describes the run once
        write_run_json(state)


def write_run_json(state: MoECts) -> None:
    """DIR/run.json: what this shard runs and on what, captured in the process that runs it."""
    from conformance.cases import MUST_PASS_VERSION, must_pass_hash
    from conformance.devices import device_info, matrix_entry
    from conformance.report.provenance import environment, suite_info

    ids = state.must_pass_ids()
    doc = {
        "label": state.label,
        "device_arg": state.device_arg,
        "device": _jsonable(device_info(state.device)),
        "matrix_entry": _jsonable(matrix_entry(state.device)),
        "impl": state.impl_name,
        "capabilities": capabilities_of(state.impl),
        "profile": state.profile,
        "subset": bool(state.only),
        "hypothesis_profile": state.hypothesis_profile,
        "generated_examples": state.examples,
        "generated_batches": state.batches,
        "seed": state.seed,
        "batch_seeds": [state.seed + b for b in range(state.batches)],
        "timeout_s": state.timeout_s,
        "must_pass_version": MUST_PASS_VERSION,
        "must_pass_hash": must_pass_hash(),
        "must_pass_ids": ids,
        "planned": len(ids) + state.examples,
        "suite": suite_info(),
        "environment": environment(),
        "started": time.time(),
        "pid": os.getpid(),
    }
    tmp = state.results / "run.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True, default=str))
    tmp.replace(state.results / "run.json")


def capabilities_of(impl) -> Any:
    caps = getattr(impl, "capabilities", None)
    if callable(caps):
        caps = caps()
    return _jsonable(caps)


def _jsonable(obj: Any) -> Any:
    import dataclasses
    import enum

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [_jsonable(v) for v in obj]
        return sorted(items, key=str) if isinstance(obj, (set, frozenset)) else items
    if isinstance(obj, enum.Enum):
        return obj.value
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    state = _state(metafunc.config)
    if "moe_cts_case_id" in metafunc.fixturenames:
        ids = state.must_pass_ids() if state else []
        metafunc.parametrize("moe_cts_case_id", ids, ids=_readable_ids(ids))
    if "moe_cts_batch" in metafunc.fixturenames:
        n = state.batches if state else 0
        metafunc.parametrize("moe_cts_batch", range(n), ids=[f"g{b}" for b in range(n)])


def _readable_ids(ids: list[str]) -> list[str]:
    """Test ids: the must-pass case's name (ids are long base64 strings), the id itself as a fallback."""
    from conformance.cases import Case

    names = [Case.from_id(i).name or i for i in ids]
    return names if len(set(names)) == len(names) else ids


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem: str, report, sched) -> None:
    """xdist controller: the worker died inside a test; record each case it had started as Crash."""
    node = getattr(report, "node", None)
    worker = getattr(getattr(node, "gateway", None), "id", None)
    state = _state(node.config) if node is not None else None
    if state is None or worker is None:
        return
    record_crash(state.results, worker, f"worker {worker} crashed while running {crashitem}")


# -- per-case time limit ---------------------------------------------------------------------------------------


def run_guarded(state: MoECts, case, source: str) -> CaseResult:
    """run_case under two limits: its own soft one (SIGALRM interrupts Python code: Timeout naming the stage,
    the run goes on) and a hard one here: a watchdog thread records Timeout and ends the process when the case
    is stuck in native code (a kernel that never returns); xdist then starts a fresh worker."""
    from conformance.runner import run_case

    limit = state.timeout_s if state.timeout_s and state.timeout_s > 0 else None
    watchdog = None
    if limit:
        watchdog = threading.Timer(limit + HARD_TIMEOUT_GRACE_S, _hard_timeout, (state, case, limit, source))
        watchdog.daemon = True
        watchdog.start()
    try:
        return run_case(state.impl, case, state.device, timeout_s=limit)
    finally:
        if watchdog is not None:
            watchdog.cancel()


def timeout_result(state: MoECts, case, limit: float, elapsed: float) -> CaseResult:
    return CaseResult(
        case_id=case.case_id,
        outcome=Outcome.TIMEOUT,
        params=_jsonable(case.params()),
        duration_s=elapsed,
        message=f"exceeded the per-case limit of {limit:g} s",
        impl=state.impl_name,
        device=state.label,
    )


def _hard_timeout(state: MoECts, case, limit: float, source: str) -> None:
    state.log.result(timeout_result(state, case, limit, limit + HARD_TIMEOUT_GRACE_S), source)
    os._exit(_WATCHDOG_EXIT)
