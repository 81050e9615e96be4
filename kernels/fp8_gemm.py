"""fp8 w8a8 grouped GEMMs: activation quantization, GEMM1 + activation, GEMM2 (launchers; bodies in
_fp8_quant_kernels.py and _fp8_gemm_kernels.py). Stage twins of reference/numpy_quant.py:

    xq, sx      = quantize_rows(spec, x, static)     # x (R, K) -> fp8 values (R, K), scales (R, G) fp32
    act[t, j]   = activation(dequant(xq[t] @ w13_q[e].T) + b13[e])          gate_up  (T, k, I) x.dtype
    out[t, j]   = dequant(quantize_rows(act[t, j]) @ w2_q[e].T) + b2[e]      down     (T, k, H) act.dtype

    scheme           activation scales (G groups)        weight scales (E, Nb, Kb)   GEMM scaling
    fp8_per_tensor   one (dynamic: torch amax on device,  (E, 1, 1)                   once, after the K loop
                     no host sync; static: given)
    fp8_per_token    (R, 1) per row                       (E, N, 1)                   once, after the K loop
    fp8_block        (R, ceil(K/g)) per 1 x g group       (E, ceil(N/bn), ceil(K/bk)) per K tile (fp32 partials)

Quantized operand storage: fp8 (torch.float8_*) on a GPU, fp32 values under the Triton interpreter (its
fp32 -> fp8 casts are wrong; the rounding is done in fp32 arithmetic, see _fp8_quant_kernels.py). On CUDA sm89+
the store's conversion rounds instead, the same way (hw_round).
Weight codes are passed as fp8 views on a GPU and as uint8 (decoded in the kernel) under the interpreter.
"""

from __future__ import annotations

import os

import torch
import triton

from moe_cts.kernels import _fp8_gemm_kernels as K
from moe_cts.kernels import _fp8_quant_kernels as Q
from moe_cts.kernels import config as cfgmod
from moe_cts.kernels._common import pdl_options
from moe_cts.kernels._grouped_gemm_kernels import ACTIVATIONS
from moe_cts.kernels.config import GemmTile
from moe_cts.kernels.grouped_gemm import half_tail, w13_desc, weight_desc
from moe_cts.kernels.metadata import AlignMeta
from moe_cts.reference import formats
from moe_cts.reference.errors import NotSupportedError
from moe_cts.reference.spec import MoESpec, SpecError

FP8_METHODS = ("fp8_per_tensor", "fp8_per_token", "fp8_block")
FP8_TORCH = {"e4m3fn": torch.float8_e4m3fn, "e4m3fnuz": torch.float8_e4m3fnuz, "e5m2": torch.float8_e5m2}
NAN_CODES = {"e4m3fn": Q.NAN_FN.value, "e4m3fnuz": Q.NAN_FNUZ.value, "e5m2": Q.NAN_IEEE.value}
#: (scale_format, scale_rounding) -> SCALE_FMT constexpr
SCALE_CODES = {
    ("fp32", "ceil"): Q.SCALE_FP32.value,
    ("ue8m0", "ceil"): Q.SCALE_UE8M0_CEIL.value,
    ("ue8m0", "floor"): Q.SCALE_UE8M0_FLOOR.value,
    ("ue8m0", "threshold_1p75"): Q.SCALE_UE8M0_T175.value,
}
QUANT_BLOCK = 128  # columns per program-iteration of quantize_rows_kernel
#: rows per program of quantize_rows_kernel: groups that fit one BLOCK (one pass, the tile stays in registers)
#: and groups wider than BLOCK (per token / tensor: two passes over the row)
QUANT_ROWS, QUANT_ROWS_LOOP = 16, 4
QUANT_PROGRAMS = 1024  # (row, group) pairs per row of a program before programs take more than one row


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def operand_dtype(fmt: str) -> torch.dtype:
    """Storage of quantized activations: fp8 on a GPU, their fp32 values under the interpreter."""
    return torch.float32 if interpreting() else FP8_TORCH[fmt]


def fmt_constexprs(fmt: str) -> dict[str, int | float]:
    f = formats.get(fmt)
    return {
        "FP8_MBITS": f.mbits, "FP8_EBITS": f.ebits, "FP8_BIAS": f.bias, "FP8_NAN": NAN_CODES[fmt],
        "FP8_EMIN": f.emin, "FP8_MAX": float(f.max), "FP8_EMAX": f.emax,
    }  # fmt: skip


#: fp8 formats whose CUDA cast from fp32 on sm89+ (`cvt.rn.satfinite.{e4m3,e5m2}x2.f32`) rounds as
#: _fp8_quant_kernels._round_fp8 does: to nearest even, saturating at the largest finite value, NaN kept
HW_ROUND_FORMATS = ("e4m3fn", "e5m2")
#: "0": the arithmetic rounding on every target (the A/B of tests/kernels/test_fp8_hw_round.py and the probes)
HW_ROUND_ENV = "MOE_CTS_FP8_HW_ROUND"


def hw_round(fmt: str) -> bool:
    """The quantizing kernels leave the rounding to the store's cast (FP8_HW_ROUND): CUDA sm89+ and a format of
    HW_ROUND_FORMATS. The target is the driver's (the compile target during AOT capture). Not on ROCm: its
    conversions are not the ones measured here; not under the interpreter: its fp8 casts are wrong."""
    if os.environ.get(HW_ROUND_ENV) == "0" or cfgmod.backend() != "cuda" or fmt not in HW_ROUND_FORMATS:
        return False
    arch = triton.runtime.driver.active.get_current_target().arch
    return isinstance(arch, int) and arch >= 89


def round_constexprs(fmt: str) -> dict[str, bool]:
    return {"FP8_HW_ROUND": hw_round(fmt)}


def scale_constexprs(spec: MoESpec) -> dict:
    q = spec.quant
    return {"SCALE_FMT": SCALE_CODES[(q.scale_format, q.scale_rounding)], "HAS_EPS": q.amax_eps is not None}


def group_width(spec: MoESpec, K: int) -> int:
    """Activation group along K: act_group for the block scheme, the whole row otherwise."""
    return spec.quant.act_group if spec.quant.method == "fp8_block" else max(K, 1)


# ----------------------------------------------------------------------------------------------- activations
def _per_tensor_scale(spec: MoESpec, x: torch.Tensor) -> torch.Tensor:
    """(1,) fp32 dynamic per-tensor scale on the device: fp32(max(amax, eps) / fp8 max)."""
    amax = x.abs().amax().to(torch.float32).reshape(1) if x.numel() else x.new_zeros(1, dtype=torch.float32)
    if spec.quant.amax_eps is not None:
        amax = amax.clamp(min=spec.quant.amax_eps)
    return amax / formats.get(spec.quant.fp8_format).max


def quantize_rows(
    spec: MoESpec, x: torch.Tensor, static: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(xq (R, K) in operand_dtype, scales (R, G) fp32) of rows x (R, K) under spec.quant (module docstring)."""
    q = spec.quant
    R, Kd = x.shape
    gw = group_width(spec, Kd)
    G = max(1, triton.cdiv(Kd, gw))
    xq = torch.empty((R, Kd), dtype=operand_dtype(q.fp8_format), device=x.device)
    s = torch.empty((R, G), dtype=torch.float32, device=x.device)
    if R == 0:
        return xq, s
    scale_in = None
    if static is not None:
        scale_in = torch.full((1,), float(static), dtype=torch.float32, device=x.device)
    elif q.method == "fp8_per_tensor":
        scale_in = _per_tensor_scale(spec, x)
    block = min(QUANT_BLOCK, triton.next_power_of_2(max(min(gw, Kd), 16)))
    one_pass = min(gw, Kd) <= block
    # rows per program: up to QUANT_ROWS once the grid has work for every SM several times over; small batches
    # keep one row per program (16 rows at T = 1 took the two quantize launches from 4.5 us in session 7's
    # kernel records to 11.4 us on the H200: 15 of 16 rows masked, one long program per group)
    cap = QUANT_ROWS if one_pass else QUANT_ROWS_LOOP
    rows = min(cap, triton.next_power_of_2(max(1, R * G // QUANT_PROGRAMS)))
    pdl = cfgmod.pdl("fp8")
    Q.quantize_rows_kernel[(triton.cdiv(R, rows), G)](
        x_ptr=x, q_ptr=xq, s_ptr=s, scale_in_ptr=scale_in if scale_in is not None else s,
        R=R, K=Kd, GW=gw, stride_x_r=x.stride(0), stride_x_k=x.stride(1), stride_q_r=xq.stride(0),
        stride_q_k=xq.stride(1), stride_s_r=s.stride(0), stride_s_g=s.stride(1),
        amax_eps=float(q.amax_eps or 0.0), STATIC=scale_in is not None, **scale_constexprs(spec),
        **{k: v for k, v in fmt_constexprs(q.fp8_format).items() if k in ("FP8_MBITS", "FP8_EMIN", "FP8_MAX", "FP8_EMAX")},
        **round_constexprs(q.fp8_format),
        ROWS=rows, BLOCK=block, ONE_PASS=one_pass, PDL=pdl, **pdl_options(pdl),
    )  # fmt: skip
    return xq, s


# ----------------------------------------------------------------------------------------------- weights
def weight_operands(qt, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(codes (E, N, K) fp8 view (GPU) or uint8 (interpreter), scales (E, Nb, Kb) fp32, bn) on device.
    A 2-D tensor (shared expert) gets a leading expert dim of 1."""
    if qt.scale_dtype != "float32" or qt.fmt not in FP8_TORCH:
        raise NotSupportedError(
            f"quant: fp8 weights with float32 scales expected, got {qt.fmt} / {qt.scale_dtype}"
        )
    codes, scales = qt.codes.to(device), qt.scales.to(device)
    if codes.dim() == 2:
        codes, scales = codes.unsqueeze(0), scales.unsqueeze(0)
    if not interpreting():
        codes = codes.view(FP8_TORCH[qt.fmt])
    return codes, scales, qt.block[0]


#: most products per fp8 MMA run before the fp32 add (the kernels promote per K tile: _fp8_gemm_kernels.py)
FP8_PROMOTION = 128


def k_block(spec: MoESpec, tile_k: int) -> int:
    """BLOCK_K of an fp8 GEMM: at most FP8_PROMOTION (each K tile's dot is one promoted MMA run); the block
    scheme also needs tiles inside one scale group (BLOCK_K | group)."""
    q = spec.quant
    if q.method != "fp8_block":
        return min(tile_k, FP8_PROMOTION)
    g = q.weight_block[1]
    if g < 16 or g & (g - 1):
        raise NotSupportedError(
            f"quant.weight_block: the fp8 kernels need a K block that is a power of two >= 16, got {q.weight_block}"
        )
    return min(tile_k, g, FP8_PROMOTION)


def scalar_weight_scales(spec: MoESpec, bn: int, block_n: int, up_offset: int) -> bool:
    """Block scheme with every N tile's weight rows inside one weight block (the kernels' SW_SCALAR): block_n
    divides the weight block's bn rows, and a gated GEMM1's up rows (up_offset = I rows further) start on a
    block boundary too. Then a K group has one weight scale per tile (per half: gate, up), loaded as a scalar."""
    return spec.quant.method == "fp8_block" and bn % block_n == 0 and up_offset % bn == 0


# ----------------------------------------------------------------------------------------------- GEMMs
def w_mode(w_desc, tile: GemmTile, swappable: bool) -> int:
    """The kernels' W_DESC: pointers (no descriptor), descriptor boxes as the dot's second operand, or as its
    first (tile.swap_ab, where the K loop has a swapped form: GEMM2 always, GEMM1 with scalar weight scales;
    elsewhere swap_ab has no effect, as tma has none where TMA cannot address the weights)."""
    if w_desc is None:
        return K.W_PTR.value
    return K.W_BOX_A.value if tile.swap_ab and swappable else K.W_BOX.value


def launch_fp8_gate_up(
    spec: MoESpec, xq, sx, w, bias, act, meta: AlignMeta, tile: GemmTile, *, sq=None, interleaved=None
) -> None:
    """act[a] for every slot of meta. w = weight_operands(w13); bias fp32 (E, R) or None. With sq (R, G2)
    the activation is quantized in the epilogue: act receives fp8 values, sq their scales (QUANT_OUT)."""
    codes, scales, bn = w
    I, H = act.shape[1], xq.shape[1]
    q = spec.quant
    block_k = k_block(spec, tile.BLOCK_K)
    if sq is not None and not fused_requant(spec, tile):  # no epilogue quantization for this tile
        raise SpecError("config.gate_up", f"a tile fused_requant accepts (act_group {q.act_group})", tile)
    paired = sq is not None and tile.BLOCK_N % q.act_group != 0  # fused_requant's pairs (2 BLOCK_N = group)
    grid = tile.grid(meta.num_blocks * triton.cdiv(I, tile.BLOCK_N * (2 if paired else 1)))
    b = bias if bias is not None else scales
    so = sq if sq is not None else sx
    il = spec.w13_layout == "interleaved" if interleaved is None else interleaved
    w_desc = w13_desc(codes, tile.BLOCK_N, block_k, spec.gated, il) if tile.tma else None
    sw_scalar = (
        w_desc is not None and not il and scalar_weight_scales(spec, bn, tile.BLOCK_N, I if spec.gated else 0)
    )
    pdl = cfgmod.pdl("fp8")
    K.fp8_gate_up_kernel[grid](
        xq, sx, codes, scales, w_desc, b, act, so,
        meta.sorted_ids, meta.expert_of_block, meta.num_padded,
        meta.num_tokens * meta.top_k, meta.top_k, I, H, meta.num_blocks, codes.shape[0], bn,
        group_width(spec, H),
        xq.stride(0), xq.stride(1), sx.stride(0), sx.stride(1),
        codes.stride(0), codes.stride(1), codes.stride(2), scales.stride(0), scales.stride(1), scales.stride(2),
        b.stride(0), b.stride(1) if bias is not None else 0, act.stride(0), act.stride(1), so.stride(0), so.stride(1),
        float(spec.swiglu_alpha), float(spec.swiglu_limit), float(q.amax_eps or 0.0),
        GATED=spec.gated, INTERLEAVED=il,
        HAS_BIAS=bias is not None, ACTIVATION=ACTIVATIONS[spec.activation],
        BLOCKWISE=q.method == "fp8_block", QUANT_OUT=sq is not None, **scale_constexprs(spec),
        **fmt_constexprs(q.fp8_format), **round_constexprs(q.fp8_format), W_DESC=w_mode(w_desc, tile, sw_scalar),
        SW_SCALAR=sw_scalar,
        PERSISTENT=tile.persistent > 0, PAIRED=paired, HALF_TAIL=half_tail(tile, meta),
        BLOCK_M=meta.block_m, BLOCK_N=tile.BLOCK_N, BLOCK_K=block_k, GROUP_M=tile.GROUP_M,
        G2=q.act_group if sq is not None else 16, PDL=pdl,
        **tile.launch_options(), **pdl_options(pdl),
    )  # fmt: skip


def launch_fp8_down(
    spec: MoESpec, aq, sa, w, bias, out, meta: AlignMeta, tile: GemmTile, *, route_weights=None
) -> None:
    """out[a] = dequant(aq[a] @ w2_q[e].T) + b2[e] (times route_weights[a] in fp32 if given)."""
    codes, scales, bn = w
    H, I = out.shape[1], aq.shape[1]
    q = spec.quant
    grid = tile.grid(meta.num_blocks * triton.cdiv(H, tile.BLOCK_N))
    b = bias if bias is not None else scales
    rw = route_weights if route_weights is not None else meta.sorted_ids
    fc = fmt_constexprs(q.fp8_format)
    block_k = k_block(spec, tile.BLOCK_K)
    w_desc = weight_desc(codes, tile.BLOCK_N, block_k) if tile.tma else None
    pdl = cfgmod.pdl("fp8")
    K.fp8_down_kernel[grid](
        aq, sa, codes, scales, w_desc, b, out, rw,
        meta.sorted_ids, meta.expert_of_block, meta.num_padded,
        meta.num_tokens * meta.top_k, H, I, meta.num_blocks, codes.shape[0], bn, group_width(spec, I),
        aq.stride(0), aq.stride(1), sa.stride(0), sa.stride(1),
        codes.stride(0), codes.stride(1), codes.stride(2), scales.stride(0), scales.stride(1), scales.stride(2),
        b.stride(0), b.stride(1) if bias is not None else 0, out.stride(0), out.stride(1),
        HAS_BIAS=bias is not None, MUL_WEIGHT=route_weights is not None, BLOCKWISE=q.method == "fp8_block",
        FP8_MBITS=fc["FP8_MBITS"], FP8_EBITS=fc["FP8_EBITS"], FP8_BIAS=fc["FP8_BIAS"], FP8_NAN=fc["FP8_NAN"],
        W_DESC=w_mode(w_desc, tile, True), SW_SCALAR=scalar_weight_scales(spec, bn, tile.BLOCK_N, 0),
        PERSISTENT=tile.persistent > 0, HALF_TAIL=half_tail(tile, meta),
        BLOCK_M=meta.block_m, BLOCK_N=tile.BLOCK_N, BLOCK_K=block_k, GROUP_M=tile.GROUP_M, PDL=pdl,
        **tile.launch_options(), **pdl_options(pdl),
    )  # fmt: skip


def fused_requant(spec: MoESpec, tile: GemmTile) -> bool:
    """GEMM1 quantizes its activation in the epilogue when a tile holds whole groups: the block scheme with
    BLOCK_N a multiple of the group width, or (tile.paired) half of it, two column tiles per program
    (fp8_gate_up_kernel's PAIRED). Otherwise quantize_rows runs on the fp32 activation. Same bits either way:
    the same fp32 activation, group amax and rounding."""
    q = spec.quant
    if not (q.method == "fp8_block" and "gemm2" in q.quantize_inputs):
        return False
    return tile.BLOCK_N % q.act_group == 0 or (tile.paired and q.act_group == 2 * tile.BLOCK_N)
