"""One compile of the AOT matrix as data: what was compiled for which target, and how it came out.

AotRecord(kernel, target, dtype, config, status, reason, shared_bytes, registers, spill_bytes, ...)
status: COMPILED | EXPECTED_REJECTION (the matrix says the target cannot run it) | FAIL
extra:  per backend (sgprs / agprs on AMD; stack_bytes, ptxas_registers, ptxas_notes on CUDA), triton version
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

COMPILED, EXPECTED_REJECTION, FAIL = "compiled", "expected_rejection", "fail"


@dataclass(frozen=True)
class AotRecord:
    kernel: str
    target: str
    dtype: str  # torch dtype name of the kernel's data ('int' for index kernels)
    config: dict[str, Any]  # constexpr keywords + num_warps / num_stages of the launch
    status: str  # compiled | expected_rejection | fail
    reason: str = ""  # why it failed or was rejected
    origins: tuple[str, ...] = ()  # scenarios that asked for this compile
    presets: tuple[dict[str, Any], ...] = ()  # {preset, T} whose heuristic chose this config
    shared_bytes: int | None = None  # dynamic + static shared memory (LDS) per block
    shared_limit: int | None = None
    registers: int | None = None  # per thread: REG (cuobjdump) or VGPRs incl. AGPRs (amdgcn)
    spill_bytes: int | None = None  # max(STACK, LOCAL) bytes (CUDA) / 4 * (VGPR + SGPR spills) (AMD)
    matrix_found: tuple[str, ...] = ()  # names of the target's matrix_patterns present in the assembly
    matrix_required: bool = False
    seconds: float = 0.0  # wall time of the compile
    cpu_seconds: float = 0.0  # CPU time of the compile, ptxas / linker included
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["origins"], d["presets"], d["matrix_found"] = (
            list(self.origins),
            list(self.presets),
            list(self.matrix_found),
        )
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AotRecord:
        return cls(
            **{
                **d,
                "origins": tuple(d.get("origins", ())),
                "presets": tuple(d.get("presets", ())),
                "matrix_found": tuple(d.get("matrix_found", ())),
            }
        )

    @property
    def ptxas_notes(self) -> tuple[str, ...]:
        """ptxas's "Potential Performance Loss" notes ("C7515: wgmma.mma_async instructions are serialized ...")
        of a CUDA compile; they do not fail it (it runs and computes right), the report lists them."""
        return tuple(self.extra.get("ptxas_notes", ()))

    @property
    def config_label(self) -> str:
        return config_label(self.config)


_MX_DECODES = {0: "fp32", 1: "native", 2: "swar", 3: "packed", 4: "packed", 5: "swapped", 6: "swapped"}


def config_label(cfg: dict[str, Any]) -> str:
    """'M16 N64 K128 G1 w4 s4' for GEMM tiles ('... tma' with descriptor weights: W_DESC; 'persistent' for a
    persistent tile walk; 'paired' for fp8 GEMM1 column tiles in pairs; 'half-tail' for half tiles at an
    expert's pad-only tail; 'swap-ab' for fp8 weight boxes as the dot's first operand; 'dot_scaled' for that
    MXFP4 dot kind, else the MXFP4 decode; 'rows64' for MXFP4 codes tile-major in groups of 64 rows); 'BLOCK_T=16 BLOCK_E=256 ... w4 s2' for
    the other kernels."""
    short = {"BLOCK_M": "M", "BLOCK_N": "N", "BLOCK_K": "K", "GROUP_M": "G"}
    if "BLOCK_K" in cfg and "BLOCK_M" in cfg:
        parts = [f"{short[k]}{cfg[k]}" for k in short if k in cfg]
    else:
        parts = [f"{k}={v}" for k, v in cfg.items() if k.startswith("BLOCK")]
    parts += [
        f"w{cfg['num_warps']}" if "num_warps" in cfg else "",
        f"s{cfg['num_stages']}" if "num_stages" in cfg else "",
        "tma" if cfg.get("W_DESC") else "",
        "persistent" if cfg.get("PERSISTENT") else "",
        "paired" if cfg.get("PAIRED") else "",
        "half-tail" if cfg.get("HALF_TAIL") else "",
        "merge-tail" if cfg.get("MERGE_TAIL") else "",
        "swap-ab" if cfg.get("W_DESC") == 2 else "",  # the fp8 GEMMs' weight box as the dot's first operand
        "dot_scaled" if cfg.get("SCALE_AT") == 2 else "",  # the MXFP4 kernels' dot kind (SCALE_IN_MMA)
        # the MXFP4 kernels' weight decode (_mxfp4_gemm_kernels.DECODE; the *_PLAIN codes are their decode's)
        _MX_DECODES.get(cfg["DECODE"], "") if "DECODE" in cfg and cfg.get("SCALE_AT") != 2 else "",
        f"rows{cfg['W_GROUP']}"
        if cfg.get("W_GROUP", 1) > 1
        else "",  # tile-major codes (Mxfp4Config.row_group)
    ]
    return " ".join(p for p in parts if p)
