"""The incremental results log: one JSON object per line in DIR/results-<worker>.jsonl.

Every pytest process (xdist worker or not) appends to its own file, flushed and fsync'ed per line, so results
gathered so far survive a killed run. Events:

    {"event": "started", "case_id", "source", "worker", "pid", "t"}     written BEFORE the case runs
    {"event": "result",  "case_id", "source", "worker", "result": CaseResult.to_json(), "t"}

A "started" line with no "result" line after it is a case that killed its process: `read_results` turns it into
a Crash (or, for an interrupted run, into "not run").
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moe_cts.conformance.engine.results import CaseResult, Outcome

SOURCES = ("must_pass", "generated")


def worker_name() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


class ResultLog:
    """Append-only JSONL writer; one per process. Each line is flushed and fsync'ed before the call returns."""

    def __init__(self, directory: str | os.PathLike, worker: str | None = None):
        self.worker = worker or worker_name()
        self.path = Path(directory) / f"results-{self.worker}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _append(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj, sort_keys=True, default=str) + "\n"
        # O_APPEND keeps lines whole even when the controller appends a crash line for this worker.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def started(self, case_id: str, source: str) -> None:
        self._append(
            {
                "event": "started",
                "case_id": case_id,
                "source": source,
                "worker": self.worker,
                "pid": os.getpid(),
                "t": time.time(),
            }
        )

    def result(self, result: CaseResult, source: str) -> None:
        self._append(
            {
                "event": "result",
                "case_id": result.case_id,
                "source": source,
                "worker": self.worker,
                "result": result.to_json(),
                "t": time.time(),
            }
        )


def iter_events(directory: str | os.PathLike) -> Iterable[dict[str, Any]]:
    """Every well-formed line of every results-*.jsonl in `directory` (a torn last line is ignored)."""
    for path in sorted(Path(directory).glob("results-*.jsonl")):
        yield from iter_events_of(path)


@dataclass
class LoggedRun:
    """What the log says: finished results in order, and cases that started but never finished."""

    results: list[tuple[str, CaseResult]] = field(default_factory=list)  # (source, result)
    unfinished: list[dict[str, Any]] = field(default_factory=list)  # "started" events without a result


def read_results(directory: str | os.PathLike, *, interrupted: bool = False) -> LoggedRun:
    """Results of one shard directory. Started-without-result becomes a Crash, unless the run was interrupted
    (then the case was merely cut off and is left out: the report is partial anyway)."""
    run = LoggedRun()
    pending: dict[tuple[str, str, str], dict[str, Any]] = {}
    for ev in iter_events(directory):
        key = (ev.get("worker", ""), ev.get("source", ""), ev["case_id"])
        if ev["event"] == "started":
            pending[key] = ev
        elif ev["event"] == "result":
            pending.pop(key, None)
            run.results.append((ev.get("source", "generated"), CaseResult.from_json(ev["result"])))
    for ev in pending.values():
        if interrupted:
            run.unfinished.append(ev)
        else:
            run.results.append((ev.get("source", "generated"), crash_result(ev)))
    return run


def crash_result(started: dict[str, Any], why: str = "") -> CaseResult:
    msg = why or f"the case killed its process (worker {started.get('worker')}, pid {started.get('pid')})"
    return CaseResult(case_id=started["case_id"], outcome=Outcome.CRASH, message=msg)


def record_crash(directory: str | os.PathLike, worker: str, why: str) -> list[str]:
    """Called by the xdist controller when `worker` died: append a Crash result for each case the worker had
    started but not finished. Returns the case ids recorded."""
    path = Path(directory) / f"results-{worker}.jsonl"
    if not path.exists():
        return []
    pending: dict[tuple[str, str], dict[str, Any]] = {}
    for ev in iter_events_of(path):
        key = (ev.get("source", ""), ev["case_id"])
        if ev["event"] == "started":
            pending[key] = ev
        else:
            pending.pop(key, None)
    log = ResultLog(directory, worker)
    for (source, _), ev in pending.items():
        log.result(crash_result(ev, why), source)
    return [ev["case_id"] for ev in pending.values()]


def iter_events_of(path: Path) -> Iterable[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(ev, dict) and "event" in ev and "case_id" in ev:
                yield ev
