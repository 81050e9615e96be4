"""Grouped GEMMs over aligned expert slots: GEMM1 + activation (`gate_up`) and GEMM2 (`down`).

Stage twins of moe_cts.reference.gate_up / moe_cts.reference.down / moe_cts.reference.shared_expert (oracle layouts):

    act[t, j]  = activation(x[t] @ w13[e, gate].T + b13, x[t] @ w13[e, up].T + b13),  e = ids[t, j]
    out[t, j]  = act[t, j] @ w2[e].T + b2[e]                    (unweighted, as the oracle's down)
    shared[t]  = sigmoid(x[t] @ g.T) * (act(x[t] @ sw13.T) @ sw2.T)

    x (T, H)   topk_ids (T, k) int32   act (T, k, I)   out (T, k, H)   shared (T, H), all in x.dtype

`launch_gate_up` / `launch_down` are the building blocks fused_moe uses on flat (T*k, .) workspaces.
"""

from __future__ import annotations

import torch
import triton
from triton.tools.tensor_descriptor import TensorDescriptor

from moe_cts.kernels import _grouped_gemm_kernels as K
from moe_cts.kernels import config as cfgmod
from moe_cts.kernels._common import pdl_options
from moe_cts.kernels.capabilities import check_supported
from moe_cts.kernels.config import GemmTile, TileConfig
from moe_cts.kernels.metadata import AlignMeta, padded_capacity
from moe_cts.reference.spec import MoESpec, MoEWeights, SpecError


def dot_precision(dtype: torch.dtype, allow_tf32: bool) -> str | None:
    """fp32 is pinned to 'ieee' (CUDA would default to tf32: docs/bugs.md#facts-fp32-dot-precision); 16-bit
    dots need none."""
    if dtype != torch.float32:
        return None
    return "tf32" if allow_tf32 else "ieee"


def _even(n: int, block: int) -> bool:
    return n % block == 0


def merge_tail(tile: GemmTile, meta: AlignMeta, w_desc) -> bool:
    """The MERGE_TAIL constexpr of a 16-bit launch: tile.merge_tail where HALF_TAIL holds and the weights go
    through a descriptor (the merged loop reads its boxes)."""
    return tile.merge_tail and half_tail(tile, meta) and w_desc is not None


def half_tail(tile: GemmTile, meta: AlignMeta) -> bool:
    """The HALF_TAIL constexpr of a launch: tile.half_tail on a one-program-per-tile grid whose half tile still
    has the 16 rows a dot needs (TileConfig.validate refuses the other cases in a table or a forced config)."""
    return tile.half_tail and not tile.persistent and meta.block_m >= 32


#: TMA's box: at most 256 elements per dimension
_MAX_BOX = 256


def weight_desc(
    w: torch.Tensor, block_rows: int, block_k: int, *, halves: bool = False
) -> TensorDescriptor | None:
    """A tensor descriptor of expert weights w (E, R, K) in (1, block_rows, block_k) boxes, or None where TMA
    cannot address w (the launch then reads the tiles through pointers, same values). halves: w viewed as
    (E, 2, R / 2, K) in (1, 2, block_rows, block_k) boxes (a concat w13: gate rows and up rows in one box).

        needs w.stride(2) == 1, the other strides and w's address multiples of 16 bytes, block_rows <= 256,
        block_k * itemsize a multiple of 16 bytes (and block_k <= 256)

    Out-of-bounds box elements (rows past R or R / 2, columns past K) read as zeros."""
    item = w.element_size()
    if (
        w.dim() != 3
        or w.stride(2) != 1
        or any(s * item % 16 for s in (w.stride(0), w.stride(1)))
        or w.data_ptr() % 16
        or block_rows > _MAX_BOX
        or block_k > _MAX_BOX
        or block_k * item % 16
        or (halves and w.shape[1] % 2)
    ):
        return None
    E, R, K = w.shape
    if halves:
        half = R // 2
        return TensorDescriptor(
            w, [E, 2, half, K], [w.stride(0), half * w.stride(1), w.stride(1), 1], [1, 2, block_rows, block_k]
        )
    return TensorDescriptor(w, [E, R, K], list(w.stride()), [1, block_rows, block_k])


def w13_desc(
    w13: torch.Tensor, block_n: int, block_k: int, gated: bool, interleaved: bool
) -> TensorDescriptor | None:
    """w13's descriptor for the GEMM1 descriptor loops: concat gated rows as (E, 2, I, H) halves (a box holds
    block_n gate rows and the matching up rows), interleaved ones in 2 block_n-row boxes, non-gated rows in
    block_n-row boxes."""
    if gated and not interleaved:
        return weight_desc(w13, block_n, block_k, halves=True)
    return weight_desc(w13, (2 if gated else 1) * block_n, block_k)


def launch_gate_up(
    x: torch.Tensor,
    w13: torch.Tensor,
    b13: torch.Tensor | None,
    act: torch.Tensor,
    meta: AlignMeta,
    *,
    gated: bool,
    interleaved: bool,
    activation: str,
    tile: GemmTile,
    swiglu_alpha: float = 1.702,
    swiglu_limit: float = 7.0,
    allow_tf32: bool = False,
) -> None:
    """act[a] for every slot a of meta (x (T, H), w13 (E, R, H), act (T*k, I)); pad slots untouched."""
    I, H = act.shape[1], x.shape[1]
    num_m_blocks = meta.num_blocks
    grid = tile.grid(num_m_blocks * triton.cdiv(I, tile.BLOCK_N))
    bias = b13 if b13 is not None else w13
    w_desc = w13_desc(w13, tile.BLOCK_N, tile.BLOCK_K, gated, interleaved) if tile.tma else None
    pdl = cfgmod.pdl(cfgmod.dtype_class(x.dtype))
    K.gate_up_kernel[grid](
        # inputs
        x_ptr=x, w13_ptr=w13, w13_desc=w_desc, b13_ptr=bias,
        sorted_ids_ptr=meta.sorted_ids, expert_of_block_ptr=meta.expert_of_block, num_padded_ptr=meta.num_padded,
        # outputs
        act_ptr=act,
        # sizes and scalars
        num_assignments=meta.num_tokens * meta.top_k, top_k=meta.top_k, I=I, H=H, num_m_blocks=num_m_blocks,
        num_experts=w13.shape[0],
        swiglu_alpha=float(swiglu_alpha), swiglu_limit=float(swiglu_limit),
        # strides
        stride_x_t=x.stride(0), stride_x_h=x.stride(1),
        stride_w13_e=w13.stride(0), stride_w13_r=w13.stride(1), stride_w13_h=w13.stride(2),
        stride_b13_e=bias.stride(0), stride_b13_r=bias.stride(1) if b13 is not None else 0,
        stride_act_a=act.stride(0), stride_act_i=act.stride(1),
        # constexprs
        GATED=gated, INTERLEAVED=interleaved, HAS_BIAS=b13 is not None,
        ACTIVATION=K.ACTIVATIONS[activation], DOT_PRECISION=dot_precision(x.dtype, allow_tf32),
        EVEN_K=_even(H, tile.BLOCK_K), W_DESC=w_desc is not None, PERSISTENT=tile.persistent > 0,
        HALF_TAIL=half_tail(tile, meta), MERGE_TAIL=merge_tail(tile, meta, w_desc),
        BLOCK_M=meta.block_m, BLOCK_N=tile.BLOCK_N, BLOCK_K=tile.BLOCK_K, GROUP_M=tile.GROUP_M, PDL=pdl,
        # launch options
        **tile.launch_options(), **pdl_options(pdl),
    )  # fmt: skip


def launch_down(
    act: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor | None,
    out: torch.Tensor,
    meta: AlignMeta,
    *,
    tile: GemmTile,
    route_weights: torch.Tensor | None = None,
    allow_tf32: bool = False,
) -> None:
    """out[a] = act[a] @ w2[e].T + b2[e] (times route_weights[a] in fp32 if given) for every slot a."""
    H, I = out.shape[1], act.shape[1]
    num_m_blocks = meta.num_blocks
    grid = tile.grid(num_m_blocks * triton.cdiv(H, tile.BLOCK_N))
    bias = b2 if b2 is not None else w2
    rw = route_weights if route_weights is not None else meta.sorted_ids
    w_desc = weight_desc(w2, tile.BLOCK_N, tile.BLOCK_K) if tile.tma else None
    pdl = cfgmod.pdl(cfgmod.dtype_class(act.dtype))
    K.down_kernel[grid](
        # inputs
        a_ptr=act, w2_ptr=w2, w2_desc=w_desc, b2_ptr=bias, route_w_ptr=rw,
        sorted_ids_ptr=meta.sorted_ids, expert_of_block_ptr=meta.expert_of_block, num_padded_ptr=meta.num_padded,
        # outputs
        out_ptr=out,
        # sizes
        num_assignments=meta.num_tokens * meta.top_k, H=H, I=I, num_m_blocks=num_m_blocks,
        num_experts=w2.shape[0],
        # strides
        stride_a_a=act.stride(0), stride_a_i=act.stride(1),
        stride_w2_e=w2.stride(0), stride_w2_h=w2.stride(1), stride_w2_i=w2.stride(2),
        stride_b2_e=bias.stride(0), stride_b2_h=bias.stride(1) if b2 is not None else 0,
        stride_out_a=out.stride(0), stride_out_h=out.stride(1),
        # constexprs
        HAS_BIAS=b2 is not None, MUL_WEIGHT=route_weights is not None,
        DOT_PRECISION=dot_precision(act.dtype, allow_tf32), EVEN_K=_even(I, tile.BLOCK_K),
        W_DESC=w_desc is not None, PERSISTENT=tile.persistent > 0, HALF_TAIL=half_tail(tile, meta),
        MERGE_TAIL=merge_tail(tile, meta, w_desc),
        BLOCK_M=meta.block_m, BLOCK_N=tile.BLOCK_N, BLOCK_K=tile.BLOCK_K, GROUP_M=tile.GROUP_M, PDL=pdl,
        # launch options
        **tile.launch_options(), **pdl_options(pdl),
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------- checks
def check_weights(spec: MoESpec, weights: MoEWeights, x: torch.Tensor) -> None:
    """Shapes from the spec; expert matrices in x.dtype on x.device; raise before any launch."""
    from moe_cts.kernels._common import SUPPORTED_DTYPES, require_tensor

    check_supported(spec)
    require_tensor(
        "x",
        x,
        shape=(x.shape[0], spec.hidden_size) if x.dim() == 2 else None,
        dtype=SUPPORTED_DTYPES,
        launch=True,
    )
    if x.dim() != 2:
        raise SpecError("x.shape", f"(T, {spec.hidden_size})", tuple(x.shape))
    weights.validate(spec)
    for name in ("w13", "w2", "shared_w13", "shared_w2"):
        t = getattr(weights, name)
        if t is not None:
            require_tensor(name, t, dtype=x.dtype, device=x.device)
    for name in ("b13", "b2", "shared_gate"):
        t = getattr(weights, name)
        if t is not None:
            require_tensor(name, t, dtype=SUPPORTED_DTYPES, device=x.device)


def check_ids(spec: MoESpec, topk_ids: torch.Tensor, num_tokens: int, device: torch.device) -> None:
    from moe_cts.kernels._common import require_tensor

    require_tensor("topk_ids", topk_ids, shape=(num_tokens, spec.top_k), dtype=torch.int32, device=device)


def stage_config(
    spec: MoESpec, dtype: torch.dtype, num_tokens: int, config, batch_invariant: bool
) -> TileConfig:
    if config is not None:
        return cfgmod.as_config(config)
    return cfgmod.choose(
        dtype=dtype,
        num_tokens=num_tokens,
        top_k=spec.top_k,
        num_experts=spec.num_experts,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        batch_invariant=batch_invariant,
    )


def align_all(spec: MoESpec, topk_ids: torch.Tensor, block_m: int) -> AlignMeta:
    """Alignment of every assignment (no local-expert mask): the stage twins compute all of them."""
    from moe_cts.kernels.align import align

    return align(spec.replace(local_experts=None, capacity_factor=None), topk_ids, block_m)


# ----------------------------------------------------------------------------------------------- stages
def gate_up(
    spec: MoESpec,
    weights: MoEWeights,
    x: torch.Tensor,
    topk_ids: torch.Tensor,
    *,
    config: TileConfig | dict | None = None,
    meta: AlignMeta | None = None,
    allow_tf32: bool = False,
) -> torch.Tensor:
    """GEMM1 + activation for every assignment: act (T, k, I) in x.dtype (module docstring)."""
    check_weights(spec, weights, x)
    T, k, I = x.shape[0], spec.top_k, spec.intermediate_size
    check_ids(spec, topk_ids, T, x.device)
    act = torch.empty((T * k, I), dtype=x.dtype, device=x.device)
    if T == 0:
        return act.view(T, k, I)
    cfg = stage_config(spec, x.dtype, T, config, batch_invariant=False)
    meta = meta if meta is not None else align_all(spec, topk_ids, cfg.BLOCK_M)
    _require_block(meta, cfg)
    cfgmod.record(cfg)
    launch_gate_up(
        x, weights.w13, weights.b13, act, meta,
        gated=spec.gated, interleaved=spec.w13_layout == "interleaved", activation=spec.activation,
        tile=cfg.gate_up, swiglu_alpha=spec.swiglu_alpha, swiglu_limit=spec.swiglu_limit, allow_tf32=allow_tf32,
    )  # fmt: skip
    return act.view(T, k, I)


def down(
    spec: MoESpec,
    weights: MoEWeights,
    act: torch.Tensor,
    topk_ids: torch.Tensor,
    *,
    config: TileConfig | dict | None = None,
    meta: AlignMeta | None = None,
    allow_tf32: bool = False,
) -> torch.Tensor:
    """GEMM2 for every assignment, unweighted incl. b2: (T, k, H) in act.dtype (module docstring)."""
    T, k, H, I = topk_ids.shape[0], spec.top_k, spec.hidden_size, spec.intermediate_size
    from moe_cts.kernels._common import require_tensor

    require_tensor("act", act, shape=(T, k, I), dtype=weights.w2.dtype, device=weights.w2.device, launch=True)
    check_weights(spec, weights, torch.empty((0, H), dtype=act.dtype, device=act.device))
    check_ids(spec, topk_ids, T, act.device)
    out = torch.empty((T * k, H), dtype=act.dtype, device=act.device)
    if T == 0:
        return out.view(T, k, H)
    cfg = stage_config(spec, act.dtype, T, config, batch_invariant=False)
    meta = meta if meta is not None else align_all(spec, topk_ids, cfg.BLOCK_M)
    _require_block(meta, cfg)
    cfgmod.record(cfg)
    launch_down(
        act.reshape(T * k, I), weights.w2, weights.b2, out, meta, tile=cfg.down, allow_tf32=allow_tf32
    )
    return out.view(T, k, H)


#: Per device: int32 slots 0..C and C zeros that every dense_meta of up to C slots views. Building the
#: tensors took five tiny launches per shared-expert forward (arange, clamp, zeros, two fills: 3.9 us of the
#: 162 us DeepSeek-V3 block fp8 forward at T = 1 on the H200, session 9's kernel records). Views of a
#: process-wide buffer cost none. A buffer outgrown by a larger T is kept, never freed: a CUDA graph captured
#: with views of it reads them at every replay.
_DENSE_SLOTS: dict[tuple[str, int | None], tuple[torch.Tensor, torch.Tensor]] = {}
_DENSE_OUTGROWN: list[tuple[torch.Tensor, torch.Tensor]] = []


def _dense_slots(P: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(slots = arange(C + 1), zeros(C)) int32 on device with C >= P; None while a CUDA graph is being
    captured and the buffer must grow (a buffer filled inside a capture holds its values only after a
    replay, so it cannot serve the eager calls that follow)."""
    if (
        device.type == "cuda" and device.index is None
    ):  # "cuda" and "cuda:N" of the current device: one buffer
        device = torch.device("cuda", torch.cuda.current_device())
    key = (device.type, device.index)
    have = _DENSE_SLOTS.get(key)
    if have is not None and have[1].numel() >= P:
        return have
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return None
    C = max(1024, triton.next_power_of_2(P))
    new = (
        torch.arange(C + 1, dtype=torch.int32, device=device),
        torch.zeros(C, dtype=torch.int32, device=device),
    )
    if have is not None:
        _DENSE_OUTGROWN.append(have)
    _DENSE_SLOTS[key] = new
    return new


def dense_meta(num_tokens: int, block_m: int, device: torch.device) -> AlignMeta:
    """Alignment of a dense MLP as one expert holding every token (the shared expert path):

        sorted_ids       slots 0 .. P-1, P = ceil(T / block_m) block_m   (slot s holds token s; s >= T is a
                         pad: the kernels mask ids >= T)
        expert_of_block  0 for every tile   num_padded  P     expert_counts  [T]     inverse  0 .. T-1

    Views of _dense_slots' per-device buffers, no launch (built by launches only while a CUDA graph
    capture needs a larger buffer)."""
    T = num_tokens
    P = padded_capacity(T, 1, block_m)
    buf = _dense_slots(P, torch.device(device))
    if buf is None:
        slots = torch.arange(P + 1, dtype=torch.int32, device=device)
        zeros = torch.zeros(P // block_m, dtype=torch.int32, device=device)
    else:
        slots, zeros = buf
    return AlignMeta(
        block_m=block_m,
        num_tokens=T,
        top_k=1,
        expert_counts=slots[T : T + 1],
        sorted_ids=slots[:P],
        expert_of_block=zeros[: P // block_m],
        num_padded=slots[P : P + 1],
        inverse=slots[:T],
    )


def shared_forward(
    spec: MoESpec, weights: MoEWeights, x: torch.Tensor, cfg: TileConfig, *, allow_tf32: bool = False
) -> torch.Tensor:
    """The shared MLP through the same grouped kernels (one expert, k = 1); gate in the down epilogue."""
    T, S, H = x.shape[0], spec.shared_width, spec.hidden_size
    meta = dense_meta(T, cfg.BLOCK_M, x.device)
    act = torch.empty((T, S), dtype=x.dtype, device=x.device)
    tile_gu = cfgmod.fit_to_shape(cfg, H, S).gate_up
    launch_gate_up(
        x, weights.shared_w13.unsqueeze(0), None, act, meta,
        gated=spec.gated, interleaved=False, activation=spec.activation, tile=tile_gu,
        swiglu_alpha=spec.swiglu_alpha, swiglu_limit=spec.swiglu_limit, allow_tf32=allow_tf32,
    )  # fmt: skip
    gate = None
    if spec.shared_gate:
        gate = torch.empty((T,), dtype=torch.float32, device=x.device)
        g = weights.shared_gate
        K.row_gate_kernel[(triton.cdiv(T, 16),)](
            # inputs
            x_ptr=x, g_ptr=g,
            # outputs
            out_ptr=gate,
            # sizes and strides
            T=T, H=H, stride_x_t=x.stride(0), stride_x_h=x.stride(1), stride_g_h=g.stride(1),
            # constexprs
            BLOCK_T=16, BLOCK_H=128,
        )  # fmt: skip
    out = torch.empty((T, H), dtype=x.dtype, device=x.device)
    tile_d = cfgmod.fit_to_shape(cfg, H, S).down
    launch_down(act, weights.shared_w2.unsqueeze(0), None, out, meta, tile=tile_d, route_weights=gate,
                allow_tf32=allow_tf32)  # fmt: skip
    return out


def shared_expert(
    spec: MoESpec,
    weights: MoEWeights,
    x: torch.Tensor,
    *,
    config: TileConfig | dict | None = None,
    allow_tf32: bool = False,
) -> torch.Tensor:
    """Shared experts (T, H) in x.dtype, incl. the sigmoid gate; zeros when the spec has none."""
    check_weights(spec, weights, x)
    T = x.shape[0]
    if spec.shared_width == 0 or T == 0:
        return torch.zeros((T, spec.hidden_size), dtype=x.dtype, device=x.device)
    cfg = shared_config(spec, x.dtype, T, config, batch_invariant=False)
    cfgmod.record(cfg)
    return shared_forward(spec, weights, x, cfg, allow_tf32=allow_tf32)


def shared_config(
    spec: MoESpec, dtype: torch.dtype, num_tokens: int, config, batch_invariant: bool
) -> TileConfig:
    """The shared MLP is one dense GEMM pair: M = T rows, N/K from the shared width S."""
    if config is not None:
        return cfgmod.as_config(config)
    return cfgmod.choose(
        dtype=dtype,
        num_tokens=num_tokens,
        top_k=1,
        num_experts=1,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.shared_width,
        batch_invariant=batch_invariant,
    )


def _require_block(meta: AlignMeta, cfg: TileConfig) -> None:
    if meta.block_m != cfg.BLOCK_M:
        raise SpecError("meta.block_m", f"the config's BLOCK_M ({cfg.BLOCK_M})", meta.block_m)
