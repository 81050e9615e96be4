"""Router stage: logits, scores, grouped / plain top-k and weights in one Triton launch on GPUs.

The twin of `moe_cts.reference.numpy_oracle.route`; the kernel bodies are in `_router_kernels`:

    part   = router_logits_kernel(x, router)     # (SPLIT_H, T, E) fp32, grid: E tiles x H splits x T tiles
    logits = sum_s part[s] (+ router_bias)       # the select, s = 0, 1, ... in that order,
    ids, w = select(logits)                      #   then softmax / sigmoid, top-k, weights

On GPUs the select runs in the logits launch (FUSED_SELECT): the last program of each token tile to store its
partials (an int32 counter per tile, acq_rel atomics) selects that tile's rows. A forced `block_t` and the
interpreter (whose per-operation cost favours 64-row select tiles) launch router_select_kernel instead; both
run the same `_select_rows`.

Why a split GEMM: one program per token tile cannot use the GPU at decode sizes. At T <= 16 the old single
kernel ran ONE program that read the whole router matrix on one SM (DeepSeek-V3, E 256, H 7168, bf16: 3.7 MB;
at T = 1 the forward with that router took 0.42 ms against 0.19 ms with the ids given: H200, CUDA-graph replay).
The logits GEMM is now split over E tiles and H splits, so a decode call runs E/BLOCK_E * SPLIT_H programs.

Why one path for every T (no single-program kernel kept for large T; the GPUs fuse the select at every T):
batch invariance. The tiles and the split are a
function of (E, H, dtypes, backend) only (`logits_tile_for`), and the partials are summed in one fixed order, so
a token's logits are the same bits whether it is routed alone or inside 4096 tokens. A second path for large T
would need bitwise-equal logits from another tl.dot shape, which nothing guarantees. The price at large T is
the partial-logits traffic, SPLIT_H * T * E * 4 bytes written and read once: `logits_tile_for` caps SPLIT_H so
that it stays at most the bytes of x itself (T * H * element size), unless that cap would leave a decode call
fewer than MIN_DECODE_PROGRAMS programs (gpt-oss-120b: about twice x's bytes then).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import triton

from moe_cts.kernels import config as _config
from moe_cts.kernels import target_info
from moe_cts.kernels._common import INTERPRET, SUPPORTED_DTYPES, require_tensor
from moe_cts.kernels._router_kernels import router_logits_kernel, router_select_kernel
from moe_cts.kernels.metadata import Routing
from moe_cts.reference.spec import MoESpec, MoEWeights, SpecError, check_input

#: Largest E one select program can hold: the (BLOCK_T, BLOCK_E) fp32 tiles live in registers.
MAX_EXPERTS = 1024
#: Programs the logits GEMM aims for at T <= LOGITS_BLOCK_T (one token tile): about one per SM / CU of the
#: GPUs this targets (H100 / H200: 132 SMs; MI300X: 304 CUs). A target, not a device query: the split must
#: not depend on the device a call runs on more than on the backend (AOT compiles it per backend).
DECODE_PROGRAMS = 128
#: Token rows of one select program: no tl.dot there, so fewer than 16 (_select_sizes).
SELECT_BLOCK_T = 4
#: The select inside the logits launch (module docstring); off on the interpreter, where programs run one
#: after another and a 64-row select tile costs a quarter of the operations.
FUSED_SELECT = not INTERPRET
#: Fewest programs a decode call of the logits GEMM may run before the traffic cap yields (logits_tile_for): with
#: gpt-oss-120b's H = 2880 the cap left 16 programs of 3 dot steps each (H200, perf_probe.py router17).
MIN_DECODE_PROGRAMS = 32
#: Token rows of one logits tile: tl.dot's minimum M, so a decode call computes one tile row of 16.
LOGITS_BLOCK_T = 16
#: Largest E tile of the logits GEMM: E / BLOCK_E tiles times SPLIT_H splits make the decode programs.
LOGITS_MAX_BLOCK_E = 64
#: Bytes of one router tile (BLOCK_E x BLOCK_H) per pipeline stage: with the x tile (16 x BLOCK_H, at most
#: 4 KiB) two stages need at most 40 KiB, inside AMD's 64 KiB LDS (gfx90a / gfx942) with room for the
#: layout conversions of tl.dot's operands.
ROUTER_TILE_BYTES = 16384


@dataclass(frozen=True)
class LogitsTile:
    """The decomposition of the logits GEMM (router_logits_kernel). A function of (E, H, dtypes, backend):
    never of T, so a token's logits do not depend on the batch (module docstring).

        BLOCK_T   token rows per program (tl.dot M)      BLOCK_E   experts per program (tl.dot N)
        BLOCK_H   columns per dot step (tl.dot K)        H_CHUNK   columns per split, a multiple of BLOCK_H
        SPLIT_H   cdiv(H, H_CHUNK): partial logits (SPLIT_H, T, E) fp32, summed in order s = 0, 1, ...
    """

    BLOCK_T: int
    BLOCK_E: int
    BLOCK_H: int
    H_CHUNK: int
    SPLIT_H: int
    num_warps: int = 4
    num_stages: int = 2

    def validate(self, H: int) -> LogitsTile:
        for name in ("BLOCK_T", "BLOCK_E", "BLOCK_H"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 16 and v & (v - 1) == 0):
                raise SpecError(f"logits_tile.{name}", "a power of two >= 16 (tl.dot's minimum)", v)
        if not (isinstance(self.H_CHUNK, int) and self.H_CHUNK >= 1 and self.H_CHUNK % self.BLOCK_H == 0):
            raise SpecError(
                "logits_tile.H_CHUNK", f"a positive multiple of BLOCK_H ({self.BLOCK_H})", self.H_CHUNK
            )
        if self.SPLIT_H != -(-H // self.H_CHUNK):
            raise SpecError(
                "logits_tile.SPLIT_H", f"cdiv(H, H_CHUNK) = {-(-H // self.H_CHUNK)}", self.SPLIT_H
            )
        for name in ("num_warps", "num_stages"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise SpecError(f"logits_tile.{name}", "an int >= 1", v)
        return self


def _warp_size() -> int:
    """Threads per warp: 64 on AMD CDNA, 32 on NVIDIA (kernels/target_info.py; the backend is read through
    moe_cts.kernels.config.backend, which the AOT capture in kernels/registry.py overrides per target)."""
    return target_info.backend_warp_size(_config.backend())


def logits_tile_for(E: int, H: int, x_dtype: torch.dtype, w_dtype: torch.dtype) -> LogitsTile:
    """The heuristic (a function of E, H, the dtypes and the backend's warp size only)::

        BLOCK_T = 16                                   decode calls fill one tile row; fixed for invariance
        BLOCK_E = min(64, next_pow2(E)), >= 16         E / BLOCK_E tiles
        BLOCK_H = ROUTER_TILE_BYTES / (BLOCK_E * larger element size of x and router), in [16, 128]
        steps   = cdiv(H, BLOCK_H)                     dot steps over the whole of H
        split   = min(cdiv(DECODE_PROGRAMS, E tiles),  enough programs at decode,
                      H * x bytes // (E * 4),          partial traffic <= x's own bytes (large T),
                      steps), >= 1
        H_CHUNK = cdiv(steps, split) * BLOCK_H;  SPLIT_H = cdiv(H, H_CHUNK)   (no empty split)
        if E tiles * SPLIT_H < MIN_DECODE_PROGRAMS: H_CHUNK = BLOCK_H       (one dot step per split: the cap
                                                                             yields where it starved decode)

    The last rule is gpt-oss-120b's (E 128, H 2880): the cap gave 8 splits of 3 steps, 16 programs; one step per
    split (23 splits, 46 programs, partial traffic about twice x's bytes) took the T = 1 forward with the router from
    0.0768 to 0.0757 ms against 0.0695 with the ids given (H200, triton 3.6, 7 alternating rounds of graph
    replays, perf_probe.py router17); at the other peer presets one step per split was no faster.

    Examples (bf16): DeepSeek-V3 E 256, H 7168 -> BLOCK_E 64, BLOCK_H 128, SPLIT_H 14 (56 programs at decode);
    Mixtral E 8, H 4096 -> BLOCK_E 16, SPLIT_H 32 (32 programs). num_warps: 128 threads (4 warps of 32, or 2
    of 64 on AMD), the old router's rule for tiles of <= 4096 fp32 accumulators."""
    elt_w = torch.empty((), dtype=w_dtype).element_size()
    elt_x = torch.empty((), dtype=x_dtype).element_size()
    BLOCK_E = max(16, min(LOGITS_MAX_BLOCK_E, triton.next_power_of_2(E)))
    BLOCK_H = max(16, min(128, ROUTER_TILE_BYTES // (BLOCK_E * max(elt_w, elt_x))))
    steps = triton.cdiv(H, BLOCK_H)
    e_tiles = triton.cdiv(E, BLOCK_E)
    split = max(1, min(triton.cdiv(DECODE_PROGRAMS, e_tiles), (H * elt_x) // (E * 4), steps))
    h_chunk = triton.cdiv(steps, split) * BLOCK_H
    if e_tiles * triton.cdiv(H, h_chunk) < MIN_DECODE_PROGRAMS:
        h_chunk = BLOCK_H
    num_warps = max(1, 128 // _warp_size())
    return LogitsTile(LOGITS_BLOCK_T, BLOCK_E, BLOCK_H, h_chunk, triton.cdiv(H, h_chunk), num_warps, 2)


def _select_sizes(E: int, block_t: int | None) -> tuple[int, int, int]:
    """(BLOCK_T, BLOCK_E, num_warps) of router_select_kernel, a function of E and the backend (never of T:
    the softmax and renormalizing sums reduce along a layout that depends on the tile shape).

    BLOCK_E is E's next power of two (>= 16). The select stage has no tl.dot, so BLOCK_T need not be 16: a
    small tile (4 rows) and about 32 elements per thread keep its ~k + 2 n_group row reductions inside one
    warp (shuffles, no shared-memory round trip and barrier per reduction), which is what a decode call
    waits on: k argmax passes, group scores, the softmax sum. At E = 1024 that is 4 warps (128 threads),
    inside AMD's LDS (the single-kernel router measured 65536 B on gfx942 at 256 threads)."""
    BLOCK_E = max(16, triton.next_power_of_2(E))
    if block_t is not None:
        BLOCK_T = block_t
    elif INTERPRET:
        BLOCK_T = (
            64  # the interpreter pays per program, not per element (docs/bugs.md#facts-triton-interpreter)
        )
    else:
        BLOCK_T = SELECT_BLOCK_T
    threads = max(_warp_size(), min(256, BLOCK_T * BLOCK_E // 32))
    return BLOCK_T, BLOCK_E, max(1, threads // _warp_size())


def _check(
    spec: MoESpec, weights: MoEWeights, x: torch.Tensor, block_t: int | None, tile: LogitsTile | None
) -> None:
    """Raise SpecError / NotSupportedError naming the field before any launch."""
    from moe_cts.kernels.capabilities import NotSupportedError

    check_input(spec, x)
    E, H = spec.num_experts, spec.hidden_size
    require_tensor("x", x, dtype=SUPPORTED_DTYPES, launch=True)
    require_tensor("router", weights.router, shape=(E, H), dtype=SUPPORTED_DTYPES, device=x.device)
    for name, used in (("router_bias", spec.router_bias), ("correction_bias", spec.correction_bias)):
        t = getattr(weights, name)
        if used:
            require_tensor(name, t, shape=(E,), dtype=SUPPORTED_DTYPES, device=x.device)
        elif t is not None:
            raise SpecError(name, f"None (spec.{name} is False)", "a tensor")
    if E > MAX_EXPERTS:
        raise NotSupportedError(f"num_experts: the router kernel supports E <= {MAX_EXPERTS}, got {E}")
    if block_t is not None and (block_t < 16 or block_t & (block_t - 1)):
        raise SpecError("block_t", "a power of two >= 16", block_t)
    if tile is not None:
        if not isinstance(tile, LogitsTile):
            raise SpecError("logits_tile", "a moe_cts.kernels.router.LogitsTile", tile)
        tile.validate(H)


def router_weights(weights: MoEWeights, x: torch.Tensor) -> MoEWeights:
    """What route() reads (router, router_bias, correction_bias) on x's device in x.dtype, as the float path
    stores them. w13 / w2 are placeholders route() never reads: a quantized layer's base holds float64
    dequantized experts, and converting or moving them to route would be wasted work."""
    cast = lambda t: None if t is None else t.to(device=x.device, dtype=x.dtype)
    r = cast(weights.router)
    return MoEWeights(
        router=r, w13=r, w2=r,
        router_bias=cast(weights.router_bias), correction_bias=cast(weights.correction_bias),
    )  # fmt: skip


def route(
    spec: MoESpec,
    weights: MoEWeights,
    x: torch.Tensor,
    *,
    block_t: int | None = None,
    logits_tile: LogitsTile | None = None,
    allow_tf32: bool = False,
    keep_scores: bool = True,
) -> Routing:
    """Route each token to its top-k experts (the oracle's `route`, in fp32 on the device)::

        logits = x @ router.T + router_bias                 # fp32 accumulation, ieee unless allow_tf32
        scores = softmax(logits) | sigmoid(logits)
        ids    = topk(scores + correction_bias, k, groups)   # descending, NaN lowest, ties -> lower id
        w      = scores[ids]; w /= sum(w) + 1e-20 if renormalize; w *= routed_scaling_factor

        x (T, H) fp32|fp16|bf16 -> topk_ids (T, k) int32, topk_weights (T, k) fp32,
                                   logits (T, E) fp32, scores (T, E) fp32 (None if not keep_scores)
        workspace: partial logits (SPLIT_H, T, E) fp32

    No host synchronization; T = 0 launches nothing. `block_t` forces the select kernel's token tile and
    `logits_tile` the GEMM's decomposition (tests and benchmarks; both change a row's bits, so a caller that
    needs batch invariance keeps the defaults)."""
    _check(spec, weights, x, block_t, logits_tile)
    T, E, H, k = x.shape[0], spec.num_experts, spec.hidden_size, spec.top_k
    dev = x.device
    ids = torch.empty((T, k), dtype=torch.int32, device=dev)
    topw = torch.empty((T, k), dtype=torch.float32, device=dev)
    logits = scores = None
    if keep_scores:
        logits = torch.empty((T, E), dtype=torch.float32, device=dev)
        scores = torch.empty((T, E), dtype=torch.float32, device=dev)
    if T == 0:
        return Routing(topk_ids=ids, topk_weights=topw, logits=logits, scores=scores)
    lt = logits_tile or logits_tile_for(E, H, x.dtype, weights.router.dtype)
    fused = FUSED_SELECT and block_t is None
    sizes = _select_sizes(E, SELECT_BLOCK_T if fused else block_t)  # (BLOCK_T, BLOCK_E, num_warps)
    sel = _select_args(spec, weights, lt.SPLIT_H, ids, topw, logits, scores, *sizes[:2])
    part = _launch_logits(x, weights.router, lt, allow_tf32, sel if fused else None)
    if not fused:
        router_select_kernel[(triton.cdiv(T, sizes[0]),)](
            part_ptr=part, **sel, T=T, E=E, num_warps=sizes[2], num_stages=1
        )
    return Routing(topk_ids=ids, topk_weights=topw, logits=logits, scores=scores)


#: Counter slots of the fused select per device: eager calls take the next of EAGER_SLOTS in turn, each CUDA-graph
#: capture one of GRAPH_SLOTS for good (its replays reuse it). A slot is zero again when its launch ends (the
#: last program of each tile resets its counter), so two launches race only if they share a slot while both
#: run: eager calls would need EAGER_SLOTS launches in flight, and a graph's slot is no one else's.
EAGER_SLOTS, GRAPH_SLOTS = 64, 64


@dataclass
class _CounterPool:
    buf: torch.Tensor  # (EAGER_SLOTS + GRAPH_SLOTS, width) int32, zero between launches
    next_eager: int = 0
    next_graph: int = EAGER_SLOTS
    # outgrown buffers, kept: a launch in flight may still use one
    retired: list = field(default_factory=list)


@functools.cache
def _counter_pool(device: str) -> _CounterPool:
    return _CounterPool(torch.zeros((EAGER_SLOTS + GRAPH_SLOTS, 0), dtype=torch.int32, device=device))


def _counters(device: torch.device, n: int) -> torch.Tensor:
    """n zeroed int32 counters of a free slot (EAGER_SLOTS): no memset per call, which would be a launch (a
    graph node) of its own. The buffer grows outside a capture only; a capture that needs more than it holds
    (or finds no graph slot left) gets fresh zeros allocated in the graph, a memset per replay but correct."""
    pool = _counter_pool(str(device))
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    if pool.buf.shape[1] < n:
        if capturing:
            return torch.zeros(n, dtype=torch.int32, device=device)
        pool.retired.append(pool.buf)
        width = max(n, 2 * pool.buf.shape[1], 64)
        pool.buf = torch.zeros((EAGER_SLOTS + GRAPH_SLOTS, width), dtype=torch.int32, device=device)
    if capturing:
        if pool.next_graph == EAGER_SLOTS + GRAPH_SLOTS:
            return torch.zeros(n, dtype=torch.int32, device=device)
        slot, pool.next_graph = pool.next_graph, pool.next_graph + 1
    else:
        slot, pool.next_eager = pool.next_eager, (pool.next_eager + 1) % EAGER_SLOTS
    return pool.buf[slot]


_SELECT_POINTERS = ("rbias_ptr", "cbias_ptr", "ids_ptr", "topw_ptr", "logits_ptr", "scores_ptr")
#: The select's scalars and constexprs when the logits launch does not select (one compiled variant).
_NO_SELECT = dict(
    K=1, stride_rbias=0, stride_cbias=0, group_size=1, n_group=1, topk_group=1, scaling=1.0,
    SIGMOID=False, HAS_RBIAS=False, HAS_CBIAS=False, GROUPED=False, GROUP_TOP2=False, RENORMALIZE=False,
    STORE_SCORES=False, N_SPLIT=1, GROUP_TILED=False, N_GROUP=1, BLOCK_T=SELECT_BLOCK_T, BLOCK_E=16,
)  # fmt: skip


def _select_args(spec, weights, n_split, ids, topw, logits, scores, BLOCK_T, BLOCK_E) -> dict:
    """The select's arguments and constexprs (router_select_kernel's, also FUSE_SELECT's in the logits launch)."""
    E, k = spec.num_experts, spec.top_k
    keep_scores = logits is not None
    rb = weights.router_bias if spec.router_bias else weights.router
    cb = weights.correction_bias if spec.correction_bias else weights.router
    g = spec.n_group
    tiled = spec.grouped and E == BLOCK_E and g & (g - 1) == 0  # _group_keep_tiled reshape
    return dict(
        # inputs
        rbias_ptr=rb, cbias_ptr=cb,
        # outputs
        ids_ptr=ids, topw_ptr=topw,
        logits_ptr=logits if keep_scores else topw, scores_ptr=scores if keep_scores else topw,
        # sizes and scalars
        K=k, stride_rbias=rb.stride(0), stride_cbias=cb.stride(0),
        group_size=E // spec.n_group, n_group=spec.n_group, topk_group=spec.topk_group,
        scaling=float(spec.routed_scaling_factor),
        # constexprs
        SIGMOID=spec.scoring == "sigmoid", HAS_RBIAS=spec.router_bias, HAS_CBIAS=spec.correction_bias,
        GROUPED=spec.grouped, GROUP_TOP2=spec.group_score == "top2_sum", RENORMALIZE=spec.renormalize,
        STORE_SCORES=keep_scores, N_SPLIT=n_split, GROUP_TILED=tiled, N_GROUP=spec.n_group if tiled else 1,
        BLOCK_T=BLOCK_T, BLOCK_E=BLOCK_E,
    )  # fmt: skip


def _launch_logits(
    x: torch.Tensor, w: torch.Tensor, lt: LogitsTile, allow_tf32: bool, sel: dict | None
) -> torch.Tensor:
    """part (SPLIT_H, T, E) fp32 from router_logits_kernel, one program per (E tile, split, T tile); with
    `sel` (the select's arguments) the last program of each token tile selects its rows."""
    T, H = x.shape
    E = w.shape[0]
    part = torch.empty((lt.SPLIT_H, T, E), dtype=torch.float32, device=x.device)
    n_t = triton.cdiv(T, lt.BLOCK_T)
    grid = (triton.cdiv(E, lt.BLOCK_E) * lt.SPLIT_H * n_t,)
    if sel is None:  # FUSE_SELECT False: the select's arguments are never read
        fuse, counters, sel = False, part, _NO_SELECT | dict.fromkeys(_SELECT_POINTERS, part)
    else:
        fuse, counters, sel = True, _counters(x.device, n_t), dict(sel)
    sel["SEL_BLOCK_T"], sel["SEL_BLOCK_E"] = sel.pop("BLOCK_T"), sel.pop("BLOCK_E")
    router_logits_kernel[grid](
        x_ptr=x, w_ptr=w, part_ptr=part,
        T=T, E=E, H=H, h_chunk=lt.H_CHUNK,
        stride_x_t=x.stride(0), stride_x_h=x.stride(1), stride_w_e=w.stride(0), stride_w_h=w.stride(1),
        counter_ptr=counters, **sel, FUSE_SELECT=fuse,
        UPCAST=x.dtype != w.dtype,
        INPUT_PRECISION="tf32" if allow_tf32 else "ieee",
        BLOCK_T=lt.BLOCK_T, BLOCK_E=lt.BLOCK_E, BLOCK_H=lt.BLOCK_H,
        num_warps=lt.num_warps, num_stages=lt.num_stages,
    )  # fmt: skip
    return part
