"""Where a run came from: suite version and git state, kernel source hash, the machine's environment.

Everything here is captured by code, never typed by a person, so two reports can be compared field by field.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shutil
import socket
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

#: Environment variables that change what a run computes or where it runs.
ENV_PREFIXES = ("TRITON_", "MOE_CTS_", "CUDA_", "HIP_", "ROCR_", "ROCM_", "PYTORCH_", "NVIDIA_", "HSA_")
#: OPENBLAS_NUM_THREADS: the float64 judge's GEMMs round differently with another BLAS thread count (docs/certify.md)
ENV_NAMES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "LD_LIBRARY_PATH",
    "PYTEST_XDIST_WORKER_COUNT",
)


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def repo_root() -> Path:
    """The directory above the `conformance` package (a git checkout in development, site-packages installed)."""
    return Path(__file__).resolve().parents[2]


def kernel_source_hash() -> str:
    """sha256 over kernels/**/*.py and kernels/**/*.json (tile configs), path and bytes, in sorted order."""
    root = _package_dir("moe_cts.kernels")
    h = hashlib.sha256()
    if root is None:
        return "sha256:" + h.hexdigest()
    files = sorted(
        p for p in root.rglob("*") if p.suffix in (".py", ".json") and "__pycache__" not in p.parts
    )
    for p in files:
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    return "sha256:" + h.hexdigest()


def _git(*args: str) -> str | None:
    if shutil.which("git") is None:
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(repo_root()), *args], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def suite_info() -> dict[str, Any]:
    """Suite version, git SHA, dirty state (tracked files only: build outputs don't count), release tag."""
    try:
        ver = version("moe-cts")
    except PackageNotFoundError:
        ver = "unknown"
    sha = _git("rev-parse", "HEAD")
    in_git = sha is not None
    source = "git" if in_git else None
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no")) if in_git else False
    tags = (_git("tag", "--points-at", "HEAD") or "").split() if in_git else []
    # A copy installed from a wheel has no git: its version is the released one it was built from. A source
    # tree copied without .git (a GPU runner's workspace) is not a release: its commit must come from
    # MOE_CTS_GIT_SHA, set by whoever copied it, and is recorded as such.
    source_tree = (repo_root() / "pyproject.toml").exists()
    released = (f"v{ver}" in tags or ver in tags) if in_git else (ver != "unknown" and not source_tree)
    if not in_git and os.environ.get("MOE_CTS_GIT_SHA"):
        sha, source = os.environ["MOE_CTS_GIT_SHA"], "MOE_CTS_GIT_SHA"
    return {
        "name": "moe-cts",
        "version": ver,
        "git_sha": sha,
        "git_source": source,
        "git_dirty": dirty,
        "git_tags": tags,
        "released": released,
        "kernel_source_hash": kernel_source_hash(),
    }


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for mod in ("torch", "triton", "numpy", "hypothesis", "pytest", "xdist"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # a missing or broken optional package is reported as absent
            out[mod] = None
    return out


def _gpu_driver() -> dict[str, str | None]:
    """Driver versions from the vendor tools (they are not exposed by torch)."""
    drv: dict[str, str | None] = {"nvidia_driver": None, "rocm_smi": None}
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            drv["nvidia_driver"] = out.stdout.strip().splitlines()[0] if out.stdout.strip() else None
        except (OSError, subprocess.SubprocessError):
            pass
    if shutil.which("rocm-smi"):
        try:
            out = subprocess.run(
                ["rocm-smi", "--showdriverversion"], capture_output=True, text=True, timeout=20, check=False
            )
            lines = [ln for ln in out.stdout.splitlines() if "version" in ln.lower()]
            drv["rocm_smi"] = lines[0].strip() if lines else None
        except (OSError, subprocess.SubprocessError):
            pass
    return drv


def _torch_gpus() -> list[dict[str, Any]]:
    if not torch.cuda.is_available():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        arch = getattr(p, "gcnArchName", None) or f"sm_{p.major}{p.minor}"
        gpus.append(
            {
                "index": i,
                "name": p.name,
                "arch": arch,
                "multiprocessors": p.multi_processor_count,
                "memory_bytes": p.total_memory,
            }
        )
    return gpus


def environment() -> dict[str, Any]:
    """The machine and software a run used. GPU fields are empty on a CPU-only machine."""
    cuda, hip = torch.version.cuda, getattr(torch.version, "hip", None)
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES) or k in ENV_NAMES}
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python_executable": sys.executable,
        "versions": _versions(),
        "cuda_version": cuda,
        "rocm_version": hip,
        "gpus": _torch_gpus(),
        **_gpu_driver(),
        "env": env,
    }
