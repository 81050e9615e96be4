"""MXFP4 grouped GEMMs over aligned expert slots: checks, config and launches (bodies: _mxfp4_gemm_kernels.py).

Stage twins of moe_cts.reference.torch_quant.gate_up / down for spec.quant.method == "mxfp4":

    act[t, j] = activation(x[t] @ W13[e, gate].T + b13, x[t] @ W13[e, up].T + b13),  e = ids[t, j]
    out[t, j] = act[t, j] @ W2[e].T + b2[e]           W = e2m1(codes) * 2^(scale - 127) per 1 x 32 block

    field                 dtype / shape                      note
    x / act               bf16 | fp16 (T, H) / (T, k, I)     unquantized activations; x.dtype is the dot dtype
    qweights.w13.codes    uint8 (E, R, H / 2)                R = 2I gated, I non-gated; low nibble = even k
    qweights.w13.scales   uint8 (E, R, H / 32)               E8M0 codes (255 = NaN)
    qweights.w2.codes     uint8 (E, H, I / 2)
    qweights.w2.scales    uint8 (E, H, I / 32)
    qweights.base         biases b13 (E, R), b2 (E, H), router: any float dtype, read in fp32

H and I are multiples of 32 (reference/quant.py check_spec: MX blocks are never partial), so K tails are
whole 32-blocks; BLOCK_K is a power of two >= 32 and the K mask works per packed byte.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
import triton

from moe_cts.kernels import _mxfp4_gemm_kernels as MK
from moe_cts.kernels import config as cfgmod
from moe_cts.kernels._common import require_tensor
from moe_cts.kernels._grouped_gemm_kernels import ACTIVATIONS
from moe_cts.kernels.config import GemmTile, TileConfig
from moe_cts.kernels.metadata import AlignMeta
from moe_cts.kernels.mxfp4_pack import packed_codes, packed_scales
from moe_cts.reference.errors import NotSupportedError
from moe_cts.reference.qweights import QuantTensor
from moe_cts.reference.spec import MoESpec, SpecError

MX_DTYPES = (torch.bfloat16, torch.float16)
SCALE_AT_CHOICES = ("weights", "accumulator")
#: "portable": bf16/fp16 tl.dot on weights decoded in registers; "dot_scaled": tl.dot_scaled (scaled MMA on
#: sm100 / gfx950, decomposed by Triton elsewhere), opt-in: never timed on a GPU here
DOT_KINDS = ("portable", "dot_scaled")
#: how the portable path decodes the weights (the default: default_decode):
#:   "packed"  shifts and masks as swar's on a packed copy of the codes (mxfp4_pack.py), straight into the MMA
#:             operand layout, bf16 with the scale on the weights, BLOCK_K 128 (_mxfp4_packed.py)
#:   "swapped" packed's arithmetic with the weights as the MMA's first operand, out.T = W @ x.T, on codes packed
#:             in the "mma_a" order (_mxfp4_swapped.py); opt-in, or a target's default by TARGET_DECODE
#:   "swar"    32-bit words, two codes per integer op, bf16 with the scale on the weights (_mxfp4_swar.py)
#:   "native"  bytes, straight to the dot dtype's bits, one E8M0 code per (32-block, column) (_mxfp4_decode.py)
#:   "fp32"    the first version: fp32 bits, a per-element scale gather, fp32 multiply, cast
#: SASS instructions per weight element in the sm90 K loop (gpt-oss-120b, T = 1, docs/mxfp4.md): fp32 17.7 /
#: 18.4 (gate_up / down), native 14.4 / 15.2, swar 5.0 / 5.6 (plus the decoded tile's trip through shared
#: memory), packed 3.8 / 4.5 (BLOCK_N 64, triton 3.9; no shared-memory trip; 4.9 / 5.5 before session 24)
DECODE_KINDS = ("packed", "swapped", "swar", "native", "fp32")
BF16_DECODES = ("packed", "swapped", "swar")  # decodes that build bf16 bits with the scale on the weights
#: decodes on the packed copies (mxfp4_pack.py), and the order of their codes
PACKED_DECODES = {"packed": "mma_b", "swapped": "mma_a"}
PACKED_BLOCK_K = 128  # the packed decodes' BLOCK_K: their packing step (mxfp4_pack.PACK_K)
#: MOE_CTS_MXFP4_DECODE: the decode that replaces "packed" as the default where it is one (bf16, scale on the
#: weights, the portable dot; not ROCm): one of BF16_DECODES. For timing and certifying a decode before a
#: table adopts it, e.g. MOE_CTS_MXFP4_DECODE=swapped moe-cts certify --profile quick
DECODE_ENV = "MOE_CTS_MXFP4_DECODE"
#: the decode that replaces "packed" as the default on a GPU target: one that was timed faster there at every point
#: AND certified there (certify quick, the MXFP4 GPU tests, the full-size oracle check). Empty for now. The
#: candidate is sm90 -> "swapped": wgmma with the decoded weights in registers, timed against packed's mma.sync
#: on the H200 (triton 3.6, gpt-oss-120b bf16, same-run ratios to our bf16 path at T = 1 / 16 / 128 / 512 / 4096:
#: 1.31 / 1.93 / 2.00 / 1.66 / 0.75 against 1.25 / 1.74 / 1.81 / 1.36 / 0.53, packed and swar at 4096;
#: docs/measured/session27/quant-bench-mxfp4-swapped.json). Its correctness on the GPU is not measured yet
#: (ci/gpu/session27.sh k), so it stays opt-in (DECODE_ENV) until that run passes. sm80 has no wgmma, sm100's MMA
#: reads its first operand from shared or tensor memory: nothing was timed there.
TARGET_DECODE: dict[str, str] = {}
#: Mxfp4Config.row_group: the packed decodes' codes stored tile-major in groups of this many rows
#: (mxfp4_pack.pack_codes), so a program's K step reads one contiguous run of row_group x 64 bytes where the
#: row-major copy gives it 64 bytes in each of its rows. 1 (row-major) is the default; opt-in, untimed
#: (docs/mxfp4.md "Session 28"): MOE_CTS_MXFP4_ROW_GROUP=64 (read where the decode is packed or swapped) or
#: config={"decode": "swapped", "row_group": 64}
ROW_GROUPS = (1, 2, 4, 8, 16, 32, 64, 128)
ROW_GROUP_ENV = "MOE_CTS_MXFP4_ROW_GROUP"
#: largest BLOCK_M of the table rows the packed decode is the default for: it holds the whole decoded tile in
#: registers, and the m > 32 rows' 128 x 128 / 128 x 256 tiles at 8 warps spill 96-176 B on sm90 with it (AOT,
#: triton 3.9, gpt-oss-120b T = 4096); swar stages the tile through shared memory and keeps those rows
PACKED_MAX_BLOCK_M = 32
#: weight rows per MMA operand of the swapped decode's table tiles (gate_up: 2 BLOCK_N, down: BLOCK_N), where the
#: caller gives no tiles: at least wgmma's 64 (below it sm90 takes mma.sync and the decoded tile goes through
#: shared memory: the fill rule's 32-row GEMM2 at T = 1), at most 128 (the m > 32 row's 256- and 512-row operands
#: spill 88 / 280 B on sm90; 128 rows at 8 warps: none, 222 registers; AOT, triton 3.9)
SWAPPED_ROWS = (64, 128)
#: ptxas register cap (GemmTile.maxnreg, CUDA only) of the packed gate_up kernel per (BLOCK_M, BLOCK_N,
#: num_warps), where the table sets none. BLOCK_M 32 x 64 at 4 warps takes 173 registers on sm90 (triton 3.6):
#: 2 programs per SM; at 168, 3 fit (65,536 registers). H200, gpt-oss-120b T = 512 against our bf16 path:
#: 1.22x -> 1.31x (docs/measured/h200-session23/maxnreg-t512.json; capping down as well: 1.30x)
PACKED_GATE_UP_MAXNREG = {(32, 64, 4): 168}
X_FMT = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def default_scale_at(dtype: torch.dtype) -> str:
    """bf16: scale folded into the weights (exact, fp32's exponent range); fp16: scale on the fp32 partial
    of each 32-block, because scaled weights leave fp16's range (_mxfp4_gemm_kernels.py docstring)."""
    return "weights" if dtype == torch.bfloat16 else "accumulator"


@dataclass(frozen=True)
class Mxfp4Config:
    """Tiles of the MXFP4 GEMMs plus the choices the float path does not have. Duck-compatible with
    TileConfig (BLOCK_M, gate_up, down, to_dict) so config.record / last_config report it."""

    tile: TileConfig  # BLOCK_K of both GEMMs a power of two >= 32 (whole MX blocks per K step)
    scale_at: str  # "weights" | "accumulator": where 2^(s-127) is applied (SCALE_AT_CHOICES)
    dot: str = "portable"  # "portable": bf16/fp16 tl.dot on decoded weights (DOT_KINDS)
    decode: str = "native"  # the portable path's weight decode (DECODE_KINDS); dot_scaled ignores it
    row_group: int = 1  # packed / swapped decodes: codes tile-major in groups of this many rows (ROW_GROUPS)

    def __post_init__(self) -> None:
        if self.scale_at not in SCALE_AT_CHOICES:
            raise SpecError("config.scale_at", f"one of {SCALE_AT_CHOICES}", self.scale_at)
        if self.dot not in DOT_KINDS:
            raise SpecError("config.dot", f"one of {DOT_KINDS}", self.dot)
        if self.decode not in DECODE_KINDS:
            raise SpecError("config.decode", f"one of {DECODE_KINDS}", self.decode)
        if self.decode in BF16_DECODES and self.dot == "portable" and self.scale_at != "weights":
            raise SpecError("config.decode", "'native' or 'fp32' with scale_at='accumulator'", self.decode)
        if self.row_group not in ROW_GROUPS:
            raise SpecError("config.row_group", f"one of {ROW_GROUPS}", self.row_group)
        if self.row_group > 1 and (self.decode not in PACKED_DECODES or self.dot != "portable"):
            raise SpecError(
                "config.row_group",
                "1 unless decode is 'packed' or 'swapped' (the portable dot)",
                self.row_group,
            )
        for name in ("gate_up", "down"):
            bk = getattr(self.tile, name).BLOCK_K
            if bk < 32:
                raise SpecError(f"config.{name}.BLOCK_K", "a power of two >= 32 (one MX block)", bk)
            if self.decode in PACKED_DECODES and self.dot == "portable" and bk != PACKED_BLOCK_K:
                raise SpecError(f"config.{name}.BLOCK_K", f"{PACKED_BLOCK_K} with decode='{self.decode}'", bk)

    @property
    def BLOCK_M(self) -> int:
        return self.tile.BLOCK_M

    @property
    def gate_up(self) -> GemmTile:
        return self.tile.gate_up

    @property
    def down(self) -> GemmTile:
        return self.tile.down

    @property
    def scale_code(self) -> int:
        """SCALE_AT constexpr of the kernels: dot_scaled puts the scale in the MMA whatever scale_at says."""
        return MK.SCALE_AT["mma" if self.dot == "dot_scaled" else self.scale_at]

    @property
    def sub_k(self) -> int:
        """Elements per dot pair inside a K step: the whole BLOCK_K, or one 32-block."""
        return 32 if self.scale_at == "accumulator" else 0  # 0 = BLOCK_K of the GEMM

    @property
    def decode_code(self) -> int:
        """DECODE constexpr of the kernels."""
        return MK.DECODE[self.decode]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.tile.to_dict(),
            "scale_at": self.scale_at,
            "dot": self.dot,
            "decode": self.decode,
            # only where set: the records and certificates of row-major configs stay as they were
            **({"row_group": self.row_group} if self.row_group > 1 else {}),
            "quant": "mxfp4",
        }


#: largest BLOCK_K of the MXFP4 GEMMs on a GPU per decode (AOT, triton 3.9, gpt-oss-120b): the fp32 decode's lo / hi
#: tiles (BLOCK_K / 2, BLOCK_N) live in fp32 registers; at BLOCK_K 128, BLOCK_N 128 both GEMMs hit 255 registers
#: and spill 72-136 B on sm90. The native decode spills 8-16 B at 128 in fp16 (sm90 / sm100). swar at 128: no
#: spill on sm80 / sm90 / sm100 (68-167 registers). The interpreter has no registers: its table's BLOCK_K stays.
GPU_MAX_BLOCK_K = {"fp32": 64, "native": 64, "swar": 128, "packed": PACKED_BLOCK_K, "swapped": PACKED_BLOCK_K}


def default_decode(
    dtype: torch.dtype, scale_at: str, dot: str, backend: str, target: str | None = None
) -> str:
    """CUDA and the interpreter: 'packed' for bf16 with the scale on the weights (the portable dot), else
    'native' (choose_config takes 'swar' instead of 'packed' for a caller's tiles whose BLOCK_K is not 128 and
    for table rows of BLOCK_M > PACKED_MAX_BLOCK_M). On a CUDA `target` of TARGET_DECODE, its decode replaces
    'packed' at every table row.
    ROCm: 'fp32' as before, nothing was timed there (AOT registers: docs/mxfp4.md). All decodes are exact;
    they differ in the fp32 summation order only (fp32 / native: even and odd columns in two dots per K step,
    swar: one dot in K order, packed: one dot per 128 elements in a permuted K order, swapped: the same in K
    order). DECODE_ENV replaces 'packed' (or the target's decode) where it is the default."""
    if backend == "hip":
        return "fp32"
    if dtype == torch.bfloat16 and scale_at == "weights" and dot == "portable":
        fallback = TARGET_DECODE.get(target or "", "packed") if backend == "cuda" else "packed"
        env = os.environ.get(DECODE_ENV) or fallback
        if env not in BF16_DECODES:
            raise SpecError(DECODE_ENV, f"one of {BF16_DECODES}", env)
        return env
    return "native"


def swapped_block_n(gate_up: int, down: int) -> tuple[int, int]:
    """The (gate_up, down) BLOCK_N of a table row under the swapped decode: operands of SWAPPED_ROWS weight rows
    (gate_up's operand is its gate and up rows, 2 BLOCK_N)."""
    lo, hi = SWAPPED_ROWS
    return min(max(gate_up, lo // 2), hi // 2), min(max(down, lo), hi)


def _mx_tile(t: GemmTile, max_k: int | None) -> GemmTile:
    """A float table's tile for the MXFP4 GEMMs: BLOCK_K capped per decode; tma, persistent and half_tail off
    (the packed codes and their scales are read through pointers, one full tile per program: a row's tma,
    persistent and half_tail keys do not reach these kernels, so the config says so)."""
    bk = max(t.BLOCK_K, 32)
    return replace(
        t, BLOCK_K=bk if max_k is None else min(bk, max_k), tma=False, persistent=0, half_tail=False
    )


_MX_KEYS = ("scale_at", "dot", "decode", "row_group", "quant")  # Mxfp4Config keys beyond the tiles


def choose_config(
    spec: MoESpec, dtype: torch.dtype, num_tokens: int, config: Mxfp4Config | TileConfig | Mapping | None
) -> Mxfp4Config:
    """The float path's table row (config.choose) with BLOCK_K in [32, GPU_MAX_BLOCK_K[decode]], or the caller's
    config (a Mxfp4Config, a TileConfig, or a dict with optional "scale_at" / "dot" / "decode" keys; its BLOCK_K is
    raised to 32 but not capped). A dict of only those keys keeps the heuristic's tiles."""
    if isinstance(config, Mxfp4Config):
        return config
    scale_at, dot, decode, row_group = default_scale_at(dtype), "portable", None, None
    if isinstance(config, Mapping):
        scale_at, dot = config.get("scale_at", scale_at), config.get("dot", dot)
        decode, row_group = config.get("decode", decode), config.get("row_group")
        config = {k: v for k, v in config.items() if k not in _MX_KEYS} or None
    if config is not None:
        tile = cfgmod.as_config(config)
    else:
        tile = cfgmod.choose(
            dtype=dtype,
            num_tokens=num_tokens,
            top_k=spec.top_k,
            num_experts=spec.num_experts,
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
        )
    backend = cfgmod.backend()
    if decode is None:
        decode = default_decode(dtype, scale_at, dot, backend, cfgmod.current_target())
        ks = (tile.gate_up.BLOCK_K, tile.down.BLOCK_K)
        if decode in PACKED_DECODES and config is not None and ks != (PACKED_BLOCK_K, PACKED_BLOCK_K):
            decode = "swar"  # the caller's tiles are not the packing step: the same arithmetic in K order
        elif decode == "packed" and tile.BLOCK_M > PACKED_MAX_BLOCK_M:
            decode = "swar"  # the large tiles' rows (PACKED_MAX_BLOCK_M)
    if decode in PACKED_DECODES and dot == "portable" and config is None:  # BLOCK_K is the packing step
        gu, dn = tile.gate_up, tile.down
        if decode == "swapped":
            gu_n, dn_n = swapped_block_n(gu.BLOCK_N, dn.BLOCK_N)
            gu, dn = replace(gu, BLOCK_N=gu_n), replace(dn, BLOCK_N=dn_n)
        caps = PACKED_GATE_UP_MAXNREG if decode == "packed" else {}
        cap = gu.maxnreg or caps.get((tile.BLOCK_M, gu.BLOCK_N, gu.num_warps), 0)
        tile = replace(
            tile,
            gate_up=replace(gu, BLOCK_K=PACKED_BLOCK_K, maxnreg=cap),
            down=replace(dn, BLOCK_K=PACKED_BLOCK_K),
        )
    # the caller's tiles are not capped; the interpreter has no registers
    max_k = None if config is not None or backend == "interpreter" else GPU_MAX_BLOCK_K.get(decode)
    tile = replace(tile, gate_up=_mx_tile(tile.gate_up, max_k), down=_mx_tile(tile.down, max_k))
    if row_group is None:
        row_group = _env_row_group() if decode in PACKED_DECODES and dot == "portable" else 1
    return Mxfp4Config(tile=tile, scale_at=scale_at, dot=dot, decode=decode, row_group=row_group)


def _env_row_group() -> int:
    """ROW_GROUP_ENV as an int (1 when unset): a SpecError naming the variable for anything else."""
    raw = os.environ.get(ROW_GROUP_ENV) or "1"
    if not raw.isdigit() or int(raw) not in ROW_GROUPS:
        raise SpecError(ROW_GROUP_ENV, f"one of {ROW_GROUPS}", raw)
    return int(raw)


# ----------------------------------------------------------------------------------------------- checks
def _active_target():
    """The active driver's GPUTarget (the compile target under AOT's FakeDriver), None without a GPU driver."""
    try:
        from triton.runtime import driver

        return driver.active.get_current_target()
    except Exception:  # the interpreter, or no GPU: nothing target-specific to refuse
        return None


def check_dot_kind(cfg: Mxfp4Config, dtype: torch.dtype) -> None:
    """dot_scaled with fp16 activations on CUDA below sm89 is refused (NotSupportedError) before any launch:
    Triton lowers it through fp8 conversions that ptxas rejects there ("cvt with .e4m3x2 requires sm_89",
    AOT with triton 3.9). bf16 compiles on all six AOT targets. decode='swar', 'packed' and 'swapped' build
    bf16 bits: float16 activations with any of them raise SpecError."""
    if cfg.dot == "portable" and cfg.decode in BF16_DECODES and dtype != torch.bfloat16:
        raise SpecError(
            "config.decode",
            f"'native' or 'fp32' for float16 activations ('{cfg.decode}' decodes to bf16)",
            cfg.decode,
        )
    if cfg.dot != "dot_scaled" or dtype != torch.float16:
        return
    t = _active_target()
    if t is not None and t.backend == "cuda" and int(t.arch) < 89:
        raise NotSupportedError(
            f"config.dot: 'dot_scaled' with float16 activations needs sm89 or newer, got sm{t.arch}; "
            "expected dot='portable' there"
        )


def check_row_group(cfg: Mxfp4Config, *up_offsets: int) -> None:
    """Tile-major codes (row_group > 1) with concatenated gate / up rows: each up row must sit at its gate row's
    place in a group `offset` rows on, so row_group must divide every such offset (the routed experts' I, the
    shared expert's S). SpecError before any launch."""
    for off in up_offsets:
        if cfg.row_group > 1 and off % cfg.row_group:
            raise SpecError(
                "config.row_group",
                f"a divisor of {off} (the up rows' offset, concatenated gate/up rows)",
                cfg.row_group,
            )


def check_mx_tensor(name: str, qt: QuantTensor, shape: tuple[int, ...], device: torch.device) -> None:
    """One MXFP4 QuantTensor: e2m1 codes packed (..., N, K/2), E8M0 scales (..., N, K/32), 1 x 32 blocks."""
    if not isinstance(qt, QuantTensor):
        raise SpecError(name, "a QuantTensor (reference/qweights.py)", type(qt).__name__)
    *lead, N, K = shape
    want = {
        f"{name}.fmt": ("e2m1", qt.fmt),
        f"{name}.block": ((1, 32), tuple(qt.block)),
        f"{name}.scale_dtype": ("e8m0", qt.scale_dtype),
    }
    for field_name, (expected, got) in want.items():
        if got != expected:
            raise SpecError(field_name, repr(expected), got)
    if K % 32:
        raise SpecError(f"{name}.shape", f"K = {K} a multiple of 32 (whole MX blocks)", tuple(shape))
    require_tensor(f"{name}.codes", qt.codes, shape=(*lead, N, K // 2), dtype=torch.uint8, device=device)
    require_tensor(f"{name}.scales", qt.scales, shape=(*lead, N, K // 32), dtype=torch.uint8, device=device)


def check_activations(name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    """bf16 / fp16 only: fp32 activations x MXFP4 are not a gpt-oss path (NotSupportedError)."""
    require_tensor(name, t, shape=shape, launch=True)
    if t.dtype not in MX_DTYPES:
        raise NotSupportedError(
            f"{name}.dtype: MXFP4 weights take bfloat16 or float16 activations, got {t.dtype}"
        )


# ----------------------------------------------------------------------------------------------- launches
def _operands(cfg: Mxfp4Config, qt: QuantTensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(codes, scales, DECODE) as the kernels read them:
    - packed / swapped: the packed copies of both (mxfp4_pack.py; the codes in the decode's order), and
      DECODE_PACKED_PLAIN / DECODE_SWAPPED_PLAIN where every scale code is in [1, 254] (the select-free
      scale; the same bits);
    - swar: the codes as stored, or the native decode where they cannot be read as 32-bit words (swar needs
      rows 4-byte aligned and contiguous along K; the weights the reference builds always are);
    - else cfg's DECODE on the stored tensors."""
    if cfg.decode in PACKED_DECODES and cfg.dot == "portable":
        ps = packed_scales(qt.scales)
        plain = MK.DECODE_PACKED_PLAIN if cfg.decode == "packed" else MK.DECODE_SWAPPED_PLAIN
        return (
            packed_codes(qt.codes, PACKED_DECODES[cfg.decode], cfg.row_group),
            ps.scales,
            plain.value if ps.plain else cfg.decode_code,
        )
    codes = qt.codes
    if cfg.decode != "swar":
        return codes, qt.scales, cfg.decode_code
    st = codes.stride()
    aligned = st[-1] == 1 and codes.data_ptr() % 4 == 0 and all(s % 4 == 0 for s in st[:-1])
    return codes, qt.scales, cfg.decode_code if aligned else MK.DECODE["native"]


def _bias_args(b: torch.Tensor | None, like: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    if b is None:
        return like, 0, 0
    return b, b.stride(0), b.stride(1)


def launch_mx_gate_up(
    x: torch.Tensor,
    w13: QuantTensor,
    b13: torch.Tensor | None,
    act: torch.Tensor,
    meta: AlignMeta,
    cfg: Mxfp4Config,
    *,
    spec: MoESpec,
    interleaved: bool | None = None,
) -> None:
    """act[a] for every slot a of meta (x (T, H), w13 codes (E, R, H/2), act (T*k, I)); pad slots untouched.
    The layer and stage entry points (mxfp4_moe.py) check cfg.row_group against concatenated rows (check_row_group)
    before their first launch."""
    I, H = act.shape[1], x.shape[1]
    tile = cfg.gate_up
    grid = (meta.num_blocks * triton.cdiv(I, tile.BLOCK_N),)
    c, s, decode = _operands(cfg, w13)
    bias, sb_e, sb_r = _bias_args(b13, c)
    inter = spec.w13_layout == "interleaved" if interleaved is None else interleaved
    MK.mx_gate_up_kernel[grid](
        # inputs
        x_ptr=x, w13_ptr=c, s13_ptr=s, b13_ptr=bias,
        sorted_ids_ptr=meta.sorted_ids, expert_of_block_ptr=meta.expert_of_block, num_padded_ptr=meta.num_padded,
        # outputs
        act_ptr=act,
        # sizes and scalars
        num_assignments=meta.num_tokens * meta.top_k, top_k=meta.top_k, I=I, H=H, num_m_blocks=meta.num_blocks,
        num_experts=c.shape[0],
        swiglu_alpha=float(spec.swiglu_alpha), swiglu_limit=float(spec.swiglu_limit),
        # strides
        stride_x_t=x.stride(0), stride_x_h=x.stride(1),
        stride_w13_e=c.stride(0), stride_w13_r=c.stride(1), stride_w13_hb=c.stride(2),
        stride_s13_e=s.stride(0), stride_s13_r=s.stride(1), stride_s13_hb=s.stride(2),
        stride_b13_e=sb_e, stride_b13_r=sb_r,
        stride_act_a=act.stride(0), stride_act_i=act.stride(1),
        # constexprs
        GATED=spec.gated, INTERLEAVED=inter, HAS_BIAS=b13 is not None, ACTIVATION=ACTIVATIONS[spec.activation],
        SCALE_AT=cfg.scale_code, EVEN_K=H % tile.BLOCK_K == 0,
        BLOCK_M=meta.block_m, BLOCK_N=tile.BLOCK_N, BLOCK_K=tile.BLOCK_K, SUB_K=cfg.sub_k or tile.BLOCK_K,
        GROUP_M=tile.GROUP_M, X_FMT=X_FMT[x.dtype], DECODE=decode, W_GROUP=cfg.row_group,
        # launch options
        **tile.launch_options(),
    )  # fmt: skip


def launch_mx_down(
    act: torch.Tensor,
    w2: QuantTensor,
    b2: torch.Tensor | None,
    out: torch.Tensor,
    meta: AlignMeta,
    cfg: Mxfp4Config,
    *,
    route_weights: torch.Tensor | None = None,
) -> None:
    """out[a] = act[a] @ W2[e].T + b2[e] (times route_weights[a] in fp32 if given) for every slot a."""
    H, I = out.shape[1], act.shape[1]
    tile = cfg.down
    grid = (meta.num_blocks * triton.cdiv(H, tile.BLOCK_N),)
    c, s, decode = _operands(cfg, w2)
    bias, sb_e, sb_h = _bias_args(b2, c)
    rw = route_weights if route_weights is not None else meta.sorted_ids
    MK.mx_down_kernel[grid](
        # inputs
        a_ptr=act, w2_ptr=c, s2_ptr=s, b2_ptr=bias, route_w_ptr=rw,
        sorted_ids_ptr=meta.sorted_ids, expert_of_block_ptr=meta.expert_of_block, num_padded_ptr=meta.num_padded,
        # outputs
        out_ptr=out,
        # sizes
        num_assignments=meta.num_tokens * meta.top_k, H=H, I=I, num_m_blocks=meta.num_blocks,
        num_experts=c.shape[0],
        # strides
        stride_a_a=act.stride(0), stride_a_i=act.stride(1),
        stride_w2_e=c.stride(0), stride_w2_h=c.stride(1), stride_w2_ib=c.stride(2),
        stride_s2_e=s.stride(0), stride_s2_h=s.stride(1), stride_s2_ib=s.stride(2),
        stride_b2_e=sb_e, stride_b2_h=sb_h,
        stride_out_a=out.stride(0), stride_out_h=out.stride(1),
        # constexprs
        HAS_BIAS=b2 is not None, MUL_WEIGHT=route_weights is not None,
        SCALE_AT=cfg.scale_code, EVEN_K=I % tile.BLOCK_K == 0,
        BLOCK_M=meta.block_m, BLOCK_N=tile.BLOCK_N, BLOCK_K=tile.BLOCK_K, SUB_K=cfg.sub_k or tile.BLOCK_K,
        GROUP_M=tile.GROUP_M, X_FMT=X_FMT[act.dtype], DECODE=decode, W_GROUP=cfg.row_group,
        # launch options
        **tile.launch_options(),
    )  # fmt: skip
