"""The tensors of a run's failures, captured in one child process that a crash or a hang only replaces.

    capture_all(tasks, timeout_s)      tasks: CaptureTask(dir, case_id, impl, device, outputs), in order

    parent                                         child (python -m moe_cts.conformance.harness.replay
                                                          capture-many TASKS.json)
    write TASKS.json, start the child   ------->   for task in TASKS: capture_tensors(task) (an exception:
                                                       DIR/capture-error.txt), then print "done" (flushed)
    read one "done" per task, each within
    timeout_s; the child died or hung on task i:
      DIR_i/capture-error.txt, a fresh child
      takes tasks i+1..

Why one child rather than one per failure: every child imports torch, Triton and the implementation (about
4 s on the project's 2-core CPU box), so a broken implementation's twenty failures cost 80 s of start-up
before (measured: `certify --impl broken:zero-output` spent 76 of its 140 s there). Why a child at all: a
case that crashed its process in the run can crash the capture too, and must not take certify down with it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ERROR_FILE = "capture-error.txt"


@dataclass(frozen=True)
class CaptureTask:
    dir: str  # the failure's folder (failures/<case>/)
    case_id: str
    impl: str
    device: str  # the device argument of the run (interpreter, cuda:0, ...)
    outputs: bool = True  # False: inputs only (a crashing or hanging case: its forward is not re-run)


def capture_all(tasks: list[CaptureTask], timeout_s: float = 300.0) -> None:
    """Capture every task, each within timeout_s; never raises for a task's failure (its folder gets
    capture-error.txt)."""
    pending = list(tasks)
    while pending:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump([dataclasses.asdict(t) for t in pending], f)
        try:
            done, why = _run_child(Path(f.name), len(pending), timeout_s)
        finally:
            os.unlink(f.name)
        if done >= len(pending):
            return
        Path(pending[done].dir, ERROR_FILE).write_text(why)
        pending = pending[done + 1 :]


def _run_child(tasks_json: Path, n: int, timeout_s: float) -> tuple[int, str]:
    """(tasks finished, why the child stopped early). stdout is read through the raw descriptor: a buffered
    readline could hold a second "done" that select() would then wait for in vain."""
    cmd = [sys.executable, "-m", "moe_cts.conformance.harness.replay", "capture-many", str(tasks_json)]
    with tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ)
        done, buf, deadline = 0, b"", time.monotonic() + timeout_s
        try:
            while done < n:
                if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    p.kill()
                    p.wait()
                    return done, f"capturing the tensors exceeded {timeout_s:g} s\n"
                chunk = os.read(p.stdout.fileno(), 4096)
                if not chunk:  # the child exited (or died) before finishing
                    break
                buf += chunk
                finished = buf.count(b"done\n")
                if finished:
                    done += finished
                    buf = buf.rsplit(b"done\n", 1)[1]
                    deadline = time.monotonic() + timeout_s
            rc = p.wait()
        finally:
            sel.close()
            p.stdout.close()
        err.seek(0)
        return done, f"the capture process exited with code {rc}:\n{err.read()[-4000:]}"
