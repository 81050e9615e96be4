"""Devices under test: auto-detection, explicit choice, and the device matrix (data/device_matrix.json).

    select_device("auto")        -> first CUDA/ROCm GPU, else the Triton interpreter on the CPU
    select_device("cuda:1")      -> Device(backend="cuda", index=1, arch="sm_90", ...)
    select_device("interpreter") -> sets TRITON_INTERPRET=1 (before triton is imported) and runs on the CPU
    select_device("cpu")         -> plain PyTorch on the CPU, for PyTorch implementations (TRITON_INTERPRET untouched)
    matrix_entry(device)         -> the matrix row for (backend, arch): limits, fp8 flavour, accumulator, waivers
    waiver_for(device, case)     -> reason string when the matrix waives the case on this device, else None

What a device cannot do is data (the matrix), never a skip branch in a test body.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

MATRIX_PATH = Path(__file__).parents[1] / "data" / "device_matrix.json"
BACKENDS = ("cuda", "hip", "interpreter", "cpu")
#: backends whose tensors live on the host CPU (no GPU memory, no GPU-sized cases)
HOST_BACKENDS = ("interpreter", "cpu")
#: the environment variables that size the BLAS / OpenMP thread pools of a host judge's worker processes
#: (certify's pytest workers, the soak pool): set before the worker imports NumPy, they decide its pool size
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class Device:
    backend: str  # "cuda" | "hip" | "interpreter" | "cpu"
    index: int  # GPU ordinal; 0 for the interpreter and the cpu
    torch_device: torch.device  # where tensors live: cuda:N (ROCm uses the cuda namespace too) or cpu
    name: str  # marketing name, "NVIDIA H100 80GB HBM3", "Triton interpreter (CPU)" or "CPU (PyTorch)"
    arch: str  # "sm_90", "gfx942", "cpu"

    def __str__(self) -> str:
        return f"{self.backend}:{self.index} ({self.name}, {self.arch})"

    @property
    def is_gpu(self) -> bool:
        return self.backend not in HOST_BACKENDS

    @property
    def arg(self) -> str:
        """The --device argument that selects this device again: "interpreter", "cpu" or "cuda:N"."""
        return self.backend if self.backend in HOST_BACKENDS else f"{self.backend}:{self.index}"


def _gpu_backend() -> str:
    return "hip" if getattr(torch.version, "hip", None) else "cuda"


def _gpu_arch(index: int) -> str:
    props = torch.cuda.get_device_properties(index)
    if _gpu_backend() == "hip":
        # gcnArchName looks like "gfx942:sramecc+:xnack-"; the matrix keys on the bare gfx name
        return str(getattr(props, "gcnArchName", "gfx")).split(":")[0]
    return f"sm_{props.major}{props.minor}"


def _interpreter() -> Device:
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        # Triton reads TRITON_INTERPRET when a kernel is first decorated; too late to switch now.
        raise ValueError(
            "device: 'interpreter' needs TRITON_INTERPRET=1 before triton is imported; "
            "set it in the environment (tests/conftest.py does when no GPU is present)"
        )
    os.environ["TRITON_INTERPRET"] = "1"
    return Device("interpreter", 0, torch.device("cpu"), "Triton interpreter (CPU)", "cpu")


def _cpu() -> Device:
    # No TRITON_INTERPRET here: a PyTorch implementation needs none, and setting it would change how any
    # Triton code imported later in this process behaves.
    return Device("cpu", 0, torch.device("cpu"), "CPU (PyTorch)", "cpu")


def _gpu(backend: str, index: int) -> Device:
    if not torch.cuda.is_available():
        raise ValueError(f"device: {backend}:{index} requested, but torch sees no GPU (try 'interpreter')")
    if backend != _gpu_backend():
        raise ValueError(f"device: {backend}:{index} requested, but this torch build is for {_gpu_backend()}")
    count = torch.cuda.device_count()
    if not 0 <= index < count:
        raise ValueError(f"device: index expected in [0, {count}), got {index}")
    name = torch.cuda.get_device_name(index)
    return Device(backend, index, torch.device("cuda", index), name, _gpu_arch(index))


def select_device(spec: str = "auto") -> Device:
    """Parse "auto" | "cuda" | "cuda:N" | "hip" | "hip:N" | "interpreter" | "cpu" into a Device.

    Raises ValueError naming the accepted forms for anything else, or when the device is missing."""
    if not isinstance(spec, str):
        raise ValueError(
            f"device: expected a string like 'auto', 'cuda:0', 'interpreter', 'cpu', got {spec!r}"
        )
    s = spec.strip().lower()
    if s == "auto":
        return _gpu(_gpu_backend(), 0) if torch.cuda.is_available() else _interpreter()
    if s == "interpreter":
        return _interpreter()
    if s == "cpu":
        return _cpu()
    m = re.fullmatch(r"(cuda|hip)(?::(\d+))?", s)
    if not m:
        raise ValueError(
            f"device: expected 'auto', 'cuda', 'cuda:N', 'hip', 'hip:N', 'interpreter' or 'cpu', got {spec!r}"
        )
    return _gpu(m.group(1), int(m.group(2) or 0))


def device_info(device: Device) -> dict[str, Any]:
    """Facts for reports: name, arch, SM/CU count, memory, driver and CUDA/ROCm versions."""
    info: dict[str, Any] = {
        "backend": device.backend,
        "index": device.index,
        "name": device.name,
        "arch": device.arch,
        "torch": torch.__version__,
    }
    try:
        import triton  # triton reads TRITON_INTERPRET once, at import: select_device sets it before this runs

        info["triton"] = triton.__version__
    except ImportError:  # triton is optional on non-Linux machines
        info["triton"] = None
    if device.is_gpu:
        props = torch.cuda.get_device_properties(device.index)
        info["multiprocessors"] = props.multi_processor_count
        info["memory_bytes"] = props.total_memory
        info["cuda_version"] = torch.version.cuda
        info["rocm_version"] = getattr(torch.version, "hip", None)
        info["driver"] = _driver_version()
    else:
        info["multiprocessors"] = os.cpu_count()
        info["memory_bytes"] = None
    return info


def _driver_version() -> str | None:
    try:
        return str(torch.cuda.driver_version()) if hasattr(torch.cuda, "driver_version") else None
    except Exception:  # informational only: a report without the driver string is still valid
        return None


# ----------------------------------------------------------------------------------------------- matrix
#: Fields of a matrix row that come from moe_cts.kernels.target_info (never from the JSON file).
HARDWARE_FIELDS = ("shared_memory_per_block", "fp8")


def hardware_fields(backend: str, arch: str) -> dict[str, Any]:
    """The row's hardware facts from moe_cts.kernels.target_info: shared memory per block in bytes and the
    native fp8 flavour ("e4m3fn" / "e4m3fnuz"), None for both when the target table does not list the device."""
    from moe_cts.kernels import target_info

    t = target_info.by_device(backend, arch)
    native = t.fp8_native if t is not None else ()
    return {
        "shared_memory_per_block": t.shared_limit_bytes if t is not None else None,
        "fp8": native[0].removeprefix("float8_") if native else None,
    }


@functools.cache
def load_matrix() -> dict[str, Any]:
    """device_matrix.json, each entry completed with hardware_fields() (the JSON holds the accumulator
    profiles, notes and waivers; the limits live in kernels/target_info.py)."""
    m = json.loads(MATRIX_PATH.read_text())
    for row in m["entries"]:
        clash = sorted(set(row) & set(HARDWARE_FIELDS))
        if clash:
            raise ValueError(
                f"{MATRIX_PATH.name} entry {row['backend']}/{row['arch']}: {clash} belong in kernels/target_info.py"
            )
        row.update(hardware_fields(row["backend"], row["arch"]))
    return m


def matrix_entry(device: Device) -> dict[str, Any]:
    """The matrix row of (backend, arch), with its accumulator profile resolved into a dict.

    An architecture the matrix does not list gets the backend's generic row (fp32_fma, no waivers)."""
    m = load_matrix()
    rows = [r for r in m["entries"] if r["backend"] == device.backend]
    row = next((r for r in rows if r["arch"] == device.arch), None)
    if row is None:
        row = {
            "backend": device.backend,
            "arch": device.arch,
            **hardware_fields(device.backend, device.arch),
            "accumulator": "fp32_fma",
            "note": "not in the device matrix: generic profile",
            "waivers": [],
        }
    return {**row, "accumulator_profile": m["accumulator_profiles"][row["accumulator"]]}


def accumulator_profile(device: Device) -> dict[str, Any]:
    return matrix_entry(device)["accumulator_profile"]


def _matches(match: dict[str, Any], case) -> bool:
    spec = case.spec
    weight_elems = spec.num_experts * (spec.w13_rows + spec.intermediate_size) * spec.hidden_size
    checks = {
        "min_weight_elements": lambda v: weight_elems >= v,
        "min_tokens": lambda v: case.num_tokens >= v,
        "dtypes": lambda v: case.dtype in v,
        "scenarios": lambda v: case.scenario.name in v,
    }
    unknown = set(match) - set(checks)
    if unknown:
        raise ValueError(
            f"device_matrix waiver match: unknown keys {sorted(unknown)}; known {sorted(checks)}"
        )
    return all(checks[k](v) for k, v in match.items())


def waiver_for(device: Device, case) -> str | None:
    """The reason the matrix waives `case` on `device`, or None."""
    for w in matrix_entry(device)["waivers"]:
        if _matches(w["match"], case):
            return w["reason"]
    return None
