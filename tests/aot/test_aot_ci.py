"""The CI workflow definitions parse, and the GPU ones are parameterized by runner labels and say that
they were not run here."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "ci" / "workflows").glob("*.yml"))


def _load(name: str) -> dict:
    return yaml.safe_load((ROOT / "ci" / "workflows" / name).read_text())


def _steps(doc: dict) -> list[dict]:
    return [step for job in doc["jobs"].values() for step in job["steps"]]


def _triggers(doc: dict) -> dict:
    return doc.get("on", doc.get(True))  # YAML 1.1 reads the key `on` as True


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_each_workflow_is_valid_yaml_with_jobs_and_steps(path):
    doc = yaml.safe_load(path.read_text())
    assert doc["jobs"] and all(job["steps"] for job in doc["jobs"].values())
    assert _triggers(doc)


@pytest.mark.parametrize(("name", "device"), [("cuda.yml", "cuda:0"), ("rocm.yml", "hip:0")])
def test_gpu_workflows_certify_on_runner_labels_given_as_inputs(name, device):
    text = (ROOT / "ci" / "workflows" / name).read_text()
    doc = _load(name)
    assert "NOT RUN HERE" in text
    for trigger in ("workflow_dispatch", "workflow_call"):
        assert "runner_labels" in _triggers(doc)[trigger]["inputs"]
    job = next(iter(doc["jobs"].values()))
    assert "inputs.runner_labels" in job["runs-on"]
    runs = " ".join(s.get("run", "") for s in _steps(doc))
    assert f"moe-cts certify --device {device}" in runs and "moe-cts verify" in runs
    assert any(s.get("uses", "").startswith("actions/upload-artifact") for s in _steps(doc))


def test_the_cpu_workflow_runs_tests_interpreter_conformance_and_the_aot_tier():
    runs = " ".join(s.get("run", "") for s in _steps(_load("cpu.yml")))
    assert "pytest -n 2" in runs
    assert "moe-cts certify --device interpreter" in runs
    assert "moe-cts compile --targets all" in runs


def test_tox_has_the_aot_cuda_and_rocm_envs():
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT / "tox.ini")
    for env in ("aot", "cuda", "rocm"):
        assert f"testenv:{env}" in cfg, env
