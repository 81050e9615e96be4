"""One hardware-facts table: what each compile target can hold and compute, in one place.

    TARGETS["sm90"]               -> TargetInfo(backend="cuda", arch=90, warp_size=32, shared_limit_bytes=232448, ...)
    by_device("cuda", "sm_90")    -> the same row, keyed as torch / the device matrix name the device
    backend_shared_limit("hip")   -> 65536: the smallest limit of the backend's GPU targets (a backend's
                                     config table is compiled for all of them, so it must fit the smallest)

Read by the AOT plan and matrix (conformance/aot: shared-memory check per compile), the device matrix
reader (conformance/engine/devices.py: limits in matrix_entry) and the config-table guard (kernels/config.py).
The JSON data files keep what is not a hardware fact: assembly patterns, measured fp8 compile outcomes,
accumulator profiles and waivers.

Sources: docs/bugs.md#facts-shared-memory-limits (sm90 limit read on an H100: 232448 B; gfx942 configs of 73728 B fail at load,
docs/bugs.md#bug-13-lds-overflow), CUDA programming guide (sm80 163 KiB opt-in, sm100 227 KiB), AMD CDNA2/3 ISA (64 KiB LDS),
CDNA4 ISA (160 KiB LDS, block-scaled MFMA), triton `tl.dot_scaled` (native on sm100 and gfx950 only).
"""

from __future__ import annotations

from dataclasses import dataclass

BACKENDS = ("cuda", "hip", "interpreter")


@dataclass(frozen=True)
class TargetInfo:
    name: str  # short target name used by the AOT tier and reports: "sm90", "gfx942", "interpreter"
    backend: str  # triton backend: "cuda" | "hip" | "interpreter"
    arch: int | str  # triton GPUTarget arch: 90 for CUDA, "gfx942" for HIP; "cpu" for the interpreter
    device_arch: str  # the arch as torch reports the device (devices.Device.arch): "sm_90", "gfx942", "cpu"
    warp_size: int  # threads per warp (NVIDIA) or wavefront (AMD CDNA); the interpreter ignores warps,
    # launchers size num_warps for it as for NVIDIA
    shared_limit_bytes: int | None  # largest shared memory / LDS one block may use; None = no limit (CPU)
    fp8_native: tuple[str, ...]  # torch fp8 dtypes the matrix unit takes without conversion
    scaled_mma: bool  # block-scaled MMA in hardware (tl.dot_scaled without emulation)
    bf16_dot: bool  # tl.dot on bf16 operands is exact-product hardware math (False: the interpreter
    # computes bf16 on raw bit patterns, so the kernels upcast there; docs/bugs.md#facts-triton-interpreter)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"{self.name}.backend: expected one of {BACKENDS}, got {self.backend!r}")
        if self.warp_size not in (32, 64):
            raise ValueError(f"{self.name}.warp_size: expected 32 or 64, got {self.warp_size}")
        limit = self.shared_limit_bytes
        if (limit is None) != (self.backend == "interpreter") or (limit is not None and limit <= 0):
            raise ValueError(
                f"{self.name}.shared_limit_bytes: expected bytes > 0 on a GPU, None on the CPU, got {limit}"
            )

    @property
    def is_gpu(self) -> bool:
        return self.backend != "interpreter"


E4M3FN, E4M3FNUZ = "float8_e4m3fn", "float8_e4m3fnuz"

# fmt: off
TARGETS: dict[str, TargetInfo] = {
    t.name: t
    for t in (
        # A100: 163 KiB opt-in shared memory per block; the compiler rejects e4m3fn.
        TargetInfo("sm80", "cuda", 80, "sm_80", 32, 166912, (), scaled_mma=False, bf16_dot=True),
        # H100: 227 KiB per block (232448 B read on an H100); dot_scaled is emulated on wgmma.
        TargetInfo("sm90", "cuda", 90, "sm_90", 32, 232448, (E4M3FN,), scaled_mma=False, bf16_dot=True),
        # B200: 227 KiB per block; tcgen05 block-scaled MMA.
        TargetInfo("sm100", "cuda", 100, "sm_100", 32, 232448, (E4M3FN,), scaled_mma=True, bf16_dot=True),
        # MI200: 64 KiB LDS; no fp8 matrix instructions.
        TargetInfo("gfx90a", "hip", "gfx90a", "gfx90a", 64, 65536, (), scaled_mma=False, bf16_dot=True),
        # MI300: 64 KiB LDS; fnuz fp8 MFMA (e4m3fn is converted before the matrix unit).
        TargetInfo("gfx942", "hip", "gfx942", "gfx942", 64, 65536, (E4M3FNUZ,), scaled_mma=False, bf16_dot=True),
        # MI350: 160 KiB LDS; OCP fp8 MFMA and block-scaled MFMA.
        TargetInfo("gfx950", "hip", "gfx950", "gfx950", 64, 163840, (E4M3FN,), scaled_mma=True, bf16_dot=True),
        # The Triton interpreter on the CPU: no shared memory limit, no fp8, bf16 emulated (kernels upcast).
        TargetInfo("interpreter", "interpreter", "cpu", "cpu", 32, None, (), scaled_mma=False, bf16_dot=False),
    )
}
# fmt: on
GPU_TARGETS = tuple(name for name, t in TARGETS.items() if t.is_gpu)


def get(name: str) -> TargetInfo:
    if name not in TARGETS:
        raise KeyError(f"target: expected one of {sorted(TARGETS)}, got {name!r}")
    return TARGETS[name]


def by_device(backend: str, device_arch: str) -> TargetInfo | None:
    """The row of a device as torch names it (backend, "sm_90" / "gfx942" / "cpu"); None if not listed."""
    return next((t for t in TARGETS.values() if t.backend == backend and t.device_arch == device_arch), None)


def backend_warp_size(backend: str) -> int:
    """Threads per warp of a backend's targets (one value per backend: checked by tests/aot/test_target_info.py)."""
    sizes = {t.warp_size for t in TARGETS.values() if t.backend == backend}
    if len(sizes) != 1:
        raise KeyError(
            f"backend: expected one of {BACKENDS} with one warp size, got {backend!r} ({sorted(sizes)})"
        )
    return sizes.pop()


def backend_shared_limit(backend: str) -> int | None:
    """Shared memory a backend's config table must fit: the smallest limit of its targets (None = unlimited)."""
    if backend not in BACKENDS:
        raise KeyError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    limits = [t.shared_limit_bytes for t in TARGETS.values() if t.backend == backend]
    return None if None in limits else min(limits)


# ----------------------------------------------------------------------------------------------- fp8 flavours
#: fp8 flavours (QuantScheme.fp8_format) Triton refuses to compile a dot for, per listed target: the
#: "rejected" entries of conformance/data/aot_targets.json "fp8_flavours" (measured with the fp8 probe on
#: triton 3.9.0 and 3.6.0). e5m2 is not in that probe: it follows e4m3fn (same hardware path). Targets not
#: listed follow FP8_MIN_CUDA_ARCH. HIP targets reject none (gfx90a/gfx942 emulate what they lack).
FP8_REJECTED: dict[str, tuple[str, ...]] = {
    "sm80": ("e4m3fn", "e4m3fnuz", "e5m2"),
    "sm90": ("e4m3fnuz",),
    "sm100": ("e4m3fnuz",),
    "gfx90a": (),
    "gfx942": (),
    "gfx950": (),
    "interpreter": (),  # the kernels round in fp32 and dot in fp32 there (kernels/_fp8_quant_kernels.py)
}
#: CUDA targets below this arch have no fp8 dot (Ada sm89 is the first); e4m3fnuz is AMD-only everywhere.
FP8_MIN_CUDA_ARCH = 89


def backend_rejected_fp8(backend: str) -> frozenset[str]:
    """fp8 flavours that no listed target of a backend compiles (e4m3fnuz on cuda): a case in one of them is
    not a case for that backend at all, whatever the implementation. Empty for backends without targets."""
    names = [t.name for t in TARGETS.values() if t.backend == backend]
    if not names:
        return frozenset()
    return frozenset.intersection(*(frozenset(FP8_REJECTED[n]) for n in names))


def device_rejects_fp8(backend: str, device_arch: str | None, fmt: str) -> bool:
    """Whether a device cannot run fp8 flavour `fmt`: its target's row when listed (device_arch as torch names
    it: "sm_90", "gfx942", "cpu"), the CUDA rule for an unlisted sm_NN, the whole backend's rejections when
    device_arch is None (backend_rejected_fp8)."""
    t = by_device(backend, device_arch) if device_arch is not None else None
    sm = (device_arch or "").removeprefix("sm_")
    arch = t.arch if t is not None else int(sm) if backend == "cuda" and sm.isdigit() else None
    if arch is None:  # no arch, or one neither listed nor an sm_NN: what the whole backend rejects
        return fmt in backend_rejected_fp8(backend)
    return fp8_rejection(backend, arch, fmt) is not None


def fp8_rejection(backend: str, arch: int | str, fmt: str) -> str | None:
    """Why a target cannot run fp8 flavour `fmt` (None if it can): the table first, the CUDA rule after."""
    t = next((t for t in TARGETS.values() if t.backend == backend and t.arch == arch), None)
    name = t.name if t is not None else f"{backend}:{arch}"
    if t is not None:
        rejected = fmt in FP8_REJECTED[t.name]
    elif backend == "cuda":
        rejected = fmt == "e4m3fnuz" or int(arch) < FP8_MIN_CUDA_ARCH
    else:
        rejected = False
    if not rejected:
        return None
    why = "e4m3fnuz is an AMD format" if fmt == "e4m3fnuz" else f"no fp8 dot below sm{FP8_MIN_CUDA_ARCH}"
    return f"quant.fp8_format: {fmt} is not supported on target {name} ({why}); expected a target that compiles it"


def device_target(device) -> tuple[str, int | str]:
    """(backend, arch) of a torch device as TARGETS names them: ("cuda", 90), ("hip", "gfx942"), or
    ("interpreter", "cpu") for a CPU tensor under the Triton interpreter."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return ("interpreter", "cpu")
    if torch.version.hip:
        return ("hip", torch.cuda.get_device_properties(dev).gcnArchName.split(":")[0])
    major, minor = torch.cuda.get_device_capability(dev)
    return ("cuda", 10 * major + minor)
