"""certify's compile tier beside the cases (cli/certify.py CompileBeside, aot/matrix.py cancel): it starts at
once in a thread, holds the registry name in the environment from the caller's thread, hands its section over
after the cases, and an interrupted run's cancel stops it (no compiler process is started after it)."""

from __future__ import annotations

import os
import threading

from moe_cts.conformance.aot import matrix as aot
from moe_cts.conformance.aot import registry_ref
from moe_cts.conformance.cli import certify as cmod


def test_the_tier_runs_in_a_thread_and_hands_over_its_section(monkeypatch):
    started, release = threading.Event(), threading.Event()
    seen = {}

    def fake_run_compile(targets, jobs, registry, cancel=None):
        seen.update(env=os.environ.get(registry_ref.ENV), targets=targets, jobs=jobs, registry=registry)
        started.set()
        assert release.wait(30)
        return {"verdict": "pass", "records": []}

    monkeypatch.setattr(cmod, "run_compile", fake_run_compile)
    monkeypatch.setattr(cmod, "kernel_registry_of", lambda _loaded: "some.registry")
    monkeypatch.delenv(registry_ref.ENV, raising=False)
    tier = cmod.CompileBeside("impl", object(), ("sm90",), 3)
    assert started.wait(30), "the tier did not start before the cases"
    # set on the caller's thread before it returned, so that no thread changes os.environ while shards spawn
    assert os.environ[registry_ref.ENV] == "some.registry" == seen["env"]
    release.set()
    assert tier.result() == {"verdict": "pass", "records": []}
    tier.close()
    assert registry_ref.ENV not in os.environ
    assert (seen["targets"], seen["jobs"], seen["registry"]) == (("sm90",), 3, "some.registry")


def test_cancel_reaches_the_running_tier(monkeypatch):
    got = {}

    def fake_run_compile(targets, jobs, registry, cancel=None):
        got["cancelled"] = cancel.wait(30)
        return {"verdict": "error", "records": []}

    monkeypatch.setattr(cmod, "run_compile", fake_run_compile)
    monkeypatch.setattr(cmod, "kernel_registry_of", lambda _loaded: "some.registry")
    tier = cmod.CompileBeside("impl", object(), ("sm90",), 1)
    tier.cancel()
    tier.result()
    tier.close()
    assert got["cancelled"] is True


def test_an_implementation_without_a_registry_gets_not_applicable_at_once(monkeypatch):
    monkeypatch.setattr(cmod, "kernel_registry_of", lambda _loaded: None)
    monkeypatch.setattr(
        cmod, "run_compile", lambda *a, **k: (_ for _ in ()).throw(AssertionError("compiled"))
    )
    tier = cmod.CompileBeside("someone-elses", object(), ("sm90", "gfx942"), 2)
    assert tier.result()["verdict"] == "not_applicable"
    tier.close()


def test_a_cancelled_matrix_starts_no_compiler_and_fails_every_job(monkeypatch):
    def no_popen(*a, **k):
        raise AssertionError("a compiler process was started after the cancel")

    monkeypatch.setattr(aot.subprocess, "Popen", no_popen)
    cancel = threading.Event()
    cancel.set()
    jobs = [{"id": i, "kernel": f"k{i}", "target_name": "sm90"} for i in range(5)]
    results = aot.run_jobs(jobs, n_workers=2, cancel=cancel)
    assert sorted(results) == list(range(5))
    assert all(r == {"id": i, "ok": False, "error": "cancelled"} for i, r in results.items())


def test_compile_processes_use_the_cpus_the_case_workers_leave():
    assert cmod.compile_jobs(10, cpus=16) == 6
    assert cmod.compile_jobs(2, cpus=2) == 1  # at least one
