"""pytest plugin of moe-cts (entry point pytest11 "moe_cts"): the conformance tests as pytest tests.

A thin layer over the engine (engine/session.py runs every case): it turns the options into a Session, the
must-pass list into one test per case, and the generated cases into a few hypothesis batches. Inactive unless
a --moe-cts-* option is given, so the project's own unit tests never see it. Active, it parametrizes the test
functions of harness/suite.py; run them by naming that file:

    pytest -n 2 --moe-cts-device interpreter --moe-cts-impl triton --moe-cts-profile smoke \\
           --moe-cts-results out/shard $(python -c "import moe_cts.conformance.harness.suite as s; print(s.__file__)")

Every case writes "started" to DIR/results-<worker>.jsonl before it runs and its CaseResult after, so a case that
kills its worker is recorded as Crash (by the controller's xdist crash hook, and by `read_results` afterwards).
Conformant outcomes pass; Fail/Crash/Timeout/InternalError fail with the case id and the replay command.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from moe_cts.conformance.engine import session as sessionmod
from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.devices import device_info, matrix_entry, select_device
from moe_cts.conformance.engine.log import ResultLog, record_crash
from moe_cts.conformance.engine.must_pass import MUST_PASS_VERSION, must_pass_for, must_pass_hash
from moe_cts.conformance.engine.profiles import register_profiles
from moe_cts.conformance.engine.results import CaseResult
from moe_cts.conformance.harness.schedule import LongestFirst, order_items
from moe_cts.conformance.impls.registry import load_implementation
from moe_cts.conformance.report.provenance import environment, suite_info

PROFILES = ("smoke", "quick", "full")
#: certify profile -> (hypothesis profile of engine/profiles.py, generated examples in total)
HYPOTHESIS_PROFILE = {"smoke": ("ci", 4), "quick": ("cert", 200), "full": ("cert", 2000)}
#: Generated cases run as up to this many hypothesis tests, each with its own seed, so xdist spreads them out;
#: at least this many examples per batch, because every batch first draws hypothesis's simplest example.
GENERATED_BATCHES = 16
MIN_EXAMPLES_PER_BATCH = 25
DEFAULT_SEED = 0x4D6F45  # "MoE": derandomized batches seed from here, so a profile draws the same cases


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("moe-cts", "moe-cts conformance")
    g.addoption(
        "--moe-cts-device", default=None, help="auto | cuda:N | hip:N | interpreter | cpu (activates moe-cts)"
    )
    g.addoption("--moe-cts-impl", default=None, help="implementation under test (default: triton)")
    g.addoption("--moe-cts-profile", default=None, choices=PROFILES, help="case profile (default by device)")
    g.addoption("--moe-cts-results", default=None, help="directory for results-<worker>.jsonl and run.json")
    g.addoption("--moe-cts-timeout", default=None, type=float, help="per-case time limit in seconds")
    g.addoption("--moe-cts-examples", default=None, type=int, help="generated cases in total (0: none)")
    g.addoption("--moe-cts-seed", default=None, type=int, help="base seed of the generated batches")
    g.addoption("--moe-cts-label", default=None, help="device label of this shard in reports")
    g.addoption(
        "--moe-cts-strict-ties",
        action="store_true",
        default=False,
        help="one tie rule everywhere: a tie broken differently from the lower-id rule fails the case",
    )
    g.addoption(
        "--moe-cts-cases",
        default=None,
        help="comma-separated must-pass case ids to run (a subset: no certificate)",
    )


@dataclass
class MoECts:
    """The plugin's state in one pytest process: a Session (built lazily, so that loading the implementation
    costs nothing until a case runs) plus what the run plans."""

    device_arg: str
    impl_name: str
    profile: str
    results: Path
    timeout_s: float
    examples: int
    seed: int
    label: str
    hypothesis_profile: str
    device: object
    only: tuple[str, ...] = ()  # must-pass subset chosen by --moe-cts-cases; empty: the whole profile
    strict_ties: bool = False  # --moe-cts-strict-ties: tie-rule differences fail
    _session: sessionmod.Session | None = None
    _seen: set[str] = field(default_factory=set)

    @property
    def session(self) -> sessionmod.Session:
        if self._session is None:
            self._session = sessionmod.Session(
                impl=load_implementation(self.impl_name), impl_name=self.impl_name, device=self.device,
                label=self.label, timeout_s=self.timeout_s, log=ResultLog(self.results),
                strict_ties=self.strict_ties,
            )  # fmt: skip
        return self._session

    @property
    def batches(self) -> int:
        if self.examples <= 0:
            return 0
        return min(GENERATED_BATCHES, max(1, self.examples // MIN_EXAMPLES_PER_BATCH))

    def must_pass_ids(self) -> list[str]:
        ids = [c.case_id for c in must_pass_for(self.profile, self.device.backend, self.device.arch)]
        return [i for i in ids if i in self.only] if self.only else ids

    def replay_command(self, case_id: str) -> str:
        return sessionmod.replay_command(case_id, self.impl_name, self.device_arg, self.strict_ties)

    def run(self, case: Case, source: str) -> CaseResult:
        return self.session.run(case, source)


def default_profile(backend: str) -> str:
    return "smoke" if backend in ("interpreter", "cpu") else "quick"


def _state(config: pytest.Config) -> MoECts | None:
    return getattr(config, "_moe_cts", None)


def pytest_configure(config: pytest.Config) -> None:
    opt = config.option
    names = ("moe_cts_device", "moe_cts_impl", "moe_cts_profile", "moe_cts_results")
    if not any(getattr(opt, n, None) is not None for n in names):
        return
    device_arg = opt.moe_cts_device or "auto"
    device = select_device(device_arg)
    profile = opt.moe_cts_profile or default_profile(device.backend)
    hyp_profile, examples = HYPOTHESIS_PROFILE[profile]
    state = MoECts(
        device_arg=device_arg,
        impl_name=opt.moe_cts_impl or "triton",
        profile=profile,
        results=Path(opt.moe_cts_results or "moe-cts-results"),
        timeout_s=opt.moe_cts_timeout if opt.moe_cts_timeout is not None else sessionmod.DEFAULT_TIMEOUT_S,
        examples=opt.moe_cts_examples if opt.moe_cts_examples is not None else examples,
        seed=opt.moe_cts_seed if opt.moe_cts_seed is not None else DEFAULT_SEED,
        label=opt.moe_cts_label or device_arg,
        hypothesis_profile=hyp_profile,
        device=device,
        only=tuple(i for i in (opt.moe_cts_cases or "").split(",") if i),
        strict_ties=bool(getattr(opt, "moe_cts_strict_ties", False)),
    )
    config._moe_cts = state
    register_profiles()  # the hypothesis profiles the generated batches start from
    state.results.mkdir(parents=True, exist_ok=True)
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist) describes the run once
        write_run_json(state)


def write_run_json(state: MoECts) -> None:
    """DIR/run.json: what this shard runs and on what, captured in the process that runs it."""
    ids = state.must_pass_ids()
    doc = {
        "label": state.label,
        "device_arg": state.device_arg,
        "device": sessionmod.jsonable(device_info(state.device)),
        "matrix_entry": sessionmod.jsonable(matrix_entry(state.device)),
        "impl": state.impl_name,
        "capabilities": sessionmod.capabilities_of(state.session.impl),
        "profile": state.profile,
        "subset": bool(state.only),
        "hypothesis_profile": state.hypothesis_profile,
        "generated_examples": state.examples,
        "generated_batches": state.batches,
        "seed": state.seed,
        "batch_seeds": [state.seed + b for b in range(state.batches)],
        "timeout_s": state.timeout_s,
        "strict_ties": state.strict_ties,
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
    names = [Case.from_id(i).name or i for i in ids]
    return names if len(set(names)) == len(names) else ids


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest cases first (harness/schedule.py), so the critical path does not start last."""
    state = _state(config)
    if state is not None:
        order_items(items, -(-state.examples // state.batches) if state.batches else 0)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log) -> LongestFirst | None:
    """xdist's load scheduling, dealing the longest cases to different workers first (harness/schedule.py)."""
    if _state(config) is None or config.getoption("dist", "load") != "load":
        return None
    return LongestFirst(config, log)


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem: str, report, sched) -> None:
    """xdist controller: the worker died inside a test; record each case it had started as Crash."""
    node = getattr(report, "node", None)
    worker = getattr(getattr(node, "gateway", None), "id", None)
    state = _state(node.config) if node is not None else None
    if state is None or worker is None:
        return
    record_crash(state.results, worker, f"worker {worker} crashed while running {crashitem}")
