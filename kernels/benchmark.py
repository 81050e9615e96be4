"""Benchmark of the Triton MoE forward on a GPU (not a test): `python -m moe_cts.kernels.benchmark [--quick]
[--check] [--json out.json]`.

For each preset (routed experts only) and T it times, with triton.testing.do_bench (median, warm-up):
    fwd     moe_cts.kernels.fused_moe, router to combine
    gemms   the gate_up and down launches alone (routing and alignment precomputed)
    gmm     torch._grouped_mm forward (ids precomputed; sort, two grouped GEMMs, silu*up, weighted sum)
    loop    a per-expert torch loop (T in {1, 512, 4096} only: it syncs the host per expert)
and prints % of the roofline floor beside vLLM's figures (docs/bugs.md#facts-peer-timings). `--check` compares
the bf16 output against a float64 per-expert reference with a probabilistic bound (fails on an all-zero output).
One failing point prints its error and the table goes on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import traceback
from dataclasses import asdict, dataclass, field

import torch

from moe_cts.reference import presets
from moe_cts.reference.spec import MoESpec, MoEWeights

HBM_BYTES_PER_S = 3.0e12
BF16_FLOPS = 738e12
PRESETS = {"mixtral": "mixtral-8x7b", "qwen2": "qwen2-57b-a14b", "deepseek-v3": "deepseek-v3"}
TOKENS = (1, 16, 128, 512, 2048, 4096)
QUICK_TOKENS = (1, 128, 2048)
LOOP_TOKENS = (1, 512, 4096)
# docs/bugs.md#facts-peer-timings: vLLM fwd / vLLM GEMMs / torch._grouped_mm fwd, ms on the H100 ("512z" = Zipf 1.2).
VLLM = {
    "mixtral": {1: (0.278, 0.259, 0.411), 16: (1.062, 0.958, 1.140), 128: (1.136, 0.990, 1.205),
                512: (2.230, 2.001, 1.610), 2048: (3.526, 3.115, 2.946), 4096: (6.763, 6.046, 5.512),
                "512z": (2.344, 2.117, 1.668)},
    "qwen2": {1: (0.263, 0.174, 0.398), 16: (1.128, 1.021, 1.236), 128: (1.385, 1.232, 1.494),
              512: (1.576, 1.360, 1.664), 2048: (2.589, 2.187, 3.062), 4096: (4.584, 4.023, 5.054)},
    "deepseek-v3": {1: (0.278, 0.259, 0.380), 16: (2.935, 2.827, 3.214), 128: (7.679, 7.522, 8.106),
                    512: (7.966, 7.749, 8.614), 2048: (8.650, 8.140, 10.278), 4096: (10.796, 10.103, 15.301)},
}  # fmt: skip


@dataclass
class Point:
    preset: str
    T: int
    routing: str
    floor_ms: float = float("nan")
    ms: dict[str, float] = field(default_factory=dict)
    config: dict | None = None
    check: dict | None = None
    error: str | None = None


def routed_spec(key: str) -> MoESpec:
    """The preset's routed experts only (shared experts off): the shapes of docs/bugs.md#facts-peer-timings."""
    return presets.get(PRESETS[key]).replace(n_shared_experts=0, shared_intermediate_size=0, shared_gate=False)


def make_weights(spec: MoESpec, device: str, seed: int = 0) -> MoEWeights:
    """bf16 weights built on the device (DeepSeek-V3's 88 GB of float64 would not fit on the host)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    E, H, I = spec.num_experts, spec.hidden_size, spec.intermediate_size

    def rnd(shape, fan_in, scale=1.0):
        return (torch.randn(shape, generator=gen, device=device, dtype=torch.bfloat16) * (scale / math.sqrt(fan_in)))

    extra = {}
    if spec.correction_bias:
        extra["correction_bias"] = rnd((E,), 1, 0.1).float()
    if spec.router_bias:
        extra["router_bias"] = rnd((E,), 1, 0.5)
    return MoEWeights(router=rnd((E, H), H), w13=rnd((E, spec.w13_rows, H), H), w2=rnd((E, H, I), I), **extra)


def zipf_ids(T: int, E: int, k: int, s: float, device: str, seed: int = 0) -> torch.Tensor:
    """k distinct experts per token drawn with probability ~ 1 / rank^s (hot experts get most tokens)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    p = 1.0 / torch.arange(1, E + 1, device=device, dtype=torch.float64) ** s
    return torch.multinomial(p.expand(T, E), k, replacement=False, generator=gen).to(torch.int32)


def floor_ms(spec: MoESpec, ids: torch.Tensor) -> float:
    H, I, k = spec.hidden_size, spec.intermediate_size, spec.top_k
    touched = int(torch.unique(ids).numel())
    bytes_ = touched * 3 * H * I * 2
    flops = 2 * ids.shape[0] * k * 3 * H * I
    return 1e3 * max(bytes_ / HBM_BYTES_PER_S, flops / BF16_FLOPS)


# ----------------------------------------------------------------------------------------------- peers
def grouped_mm_forward(spec: MoESpec, w: MoEWeights, x, ids, tw):
    """torch._grouped_mm forward with precomputed ids: the 'torch._grouped_mm fwd' column of
    docs/bugs.md#facts-peer-timings."""
    T, k, I = ids.shape[0], spec.top_k, spec.intermediate_size
    flat = ids.reshape(-1).long()
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=spec.num_experts)
    offs = torch.cumsum(counts, 0).to(torch.int32)
    xs = x[order // k]
    h = torch._grouped_mm(xs, w.w13.transpose(1, 2), offs=offs)
    act = torch.nn.functional.silu(h[:, :I]) * h[:, I:]
    o = torch._grouped_mm(act, w.w2.transpose(1, 2), offs=offs)
    o = o.float() * tw.reshape(-1)[order, None]
    y = torch.zeros((T * k, spec.hidden_size), dtype=torch.float32, device=x.device)
    y[order] = o
    return y.view(T, k, -1).sum(1).to(x.dtype)


def loop_forward(spec: MoESpec, w: MoEWeights, x, ids, tw):
    """The per-expert torch loop (host-synchronizing): the baseline of docs/bugs.md#facts-peer-timings."""
    I = spec.intermediate_size
    y = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for e in torch.unique(ids).tolist():
        t, j = torch.nonzero(ids == e, as_tuple=True)
        h = x[t] @ w.w13[e].T
        o = (torch.nn.functional.silu(h[:, :I]) * h[:, I:]) @ w.w2[e].T
        y.index_add_(0, t, o.float() * tw[t, j, None])
    return y.to(x.dtype)


# ----------------------------------------------------------------------------------------------- check
def check_against_float64(spec: MoESpec, w: MoEWeights, x, ids, tw, y) -> dict:
    """max |y - ref| / bound with a probabilistic bound: rounding act to bf16 perturbs each product
    independently, so bound = 6 u sqrt(sum_j w^2 (act^2 @ w2^2)) + u sum_j |w eo_j| (bf16 workspace) +
    u |ref| (final cast); u doubles under the interpreter, whose bf16 casts truncate. An all-zero y gives
    ratios >> 1 (the first term is ~ 6u |ref|, not ~ |ref|)."""
    u = 2.0**-8 * (2.0 if os.environ.get("TRITON_INTERPRET") == "1" else 1.0)
    I = spec.intermediate_size
    ref = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
    var = torch.zeros_like(ref)
    ws_mag = torch.zeros_like(ref)
    for e in torch.unique(ids).tolist():
        t, j = torch.nonzero(ids == e, as_tuple=True)
        h = x[t].double() @ w.w13[e].double().T
        act = torch.nn.functional.silu(h[:, :I]) * h[:, I:]
        w2 = w.w2[e].double()
        wt = tw[t, j, None].double()
        contrib = wt * (act @ w2.T)
        ref.index_add_(0, t, contrib)
        ws_mag.index_add_(0, t, contrib.abs())
        var.index_add_(0, t, wt**2 * ((act**2) @ (w2**2).T))
    bound = 6 * u * var.sqrt() + u * ws_mag + u * ref.abs() + 1e-30
    ratio = ((y.double() - ref).abs() / bound).max().item()
    rel_rms = ((y.double() - ref).norm() / ref.norm()).item()
    return {"max_error_over_bound": ratio, "rel_rms": rel_rms, "ok": ratio <= 1.0 and math.isfinite(ratio)}


# ----------------------------------------------------------------------------------------------- timing
def bench_point(key: str, T: int, zipf: bool, args) -> Point:
    import triton.testing

    import moe_cts.kernels
    import moe_cts.kernels.config as cfgmod
    from moe_cts.kernels.grouped_gemm import launch_down, launch_gate_up
    from moe_cts.kernels.metadata import Routing

    spec = routed_spec(key)
    pt = Point(key, T, "zipf1.2" if zipf else "router")
    dev = "cuda"
    w = make_weights(spec, dev)
    x = torch.randn((T, spec.hidden_size), device=dev, dtype=torch.bfloat16)
    if zipf:
        ids = zipf_ids(T, spec.num_experts, spec.top_k, 1.2, dev)
        tw = torch.softmax(torch.randn(ids.shape, device=dev), -1)
        fwd = lambda: moe_cts.kernels.fused_moe(spec, w, x, routing=Routing(ids, tw))
    else:
        r = moe_cts.kernels.route(spec, w, x)
        ids, tw = r.topk_ids, r.topk_weights
        fwd = lambda: moe_cts.kernels.fused_moe(spec, w, x)
        pre = Routing(ids, tw)
        fwd_pre = lambda: moe_cts.kernels.fused_moe(spec, w, x, routing=pre)
    pt.floor_ms = floor_ms(spec, ids)
    bench = lambda fn: triton.testing.do_bench(fn, warmup=args.warmup, rep=args.rep, return_mode="median")
    y = fwd()
    pt.config = cfgmod.last_config().to_dict()
    pt.ms["fwd"] = bench(fwd)
    # The peers were timed with top-k ids and weights precomputed: compare like with like.
    pt.ms["fwd_pre"] = bench(fwd_pre) if not zipf else pt.ms["fwd"]

    cfg = cfgmod.last_config()
    meta = moe_cts.kernels.align(spec, ids, cfg.BLOCK_M)
    act = torch.empty((T * spec.top_k, spec.intermediate_size), device=dev, dtype=x.dtype)
    ws = torch.empty((T * spec.top_k, spec.hidden_size), device=dev, dtype=x.dtype)
    twf = tw.reshape(-1).float()

    def gemms():
        launch_gate_up(x, w.w13, None, act, meta, gated=True, interleaved=False, activation=spec.activation,
                       tile=cfg.gate_up)  # fmt: skip
        launch_down(act, w.w2, None, ws, meta, tile=cfg.down, route_weights=twf)

    pt.ms["gemms"] = bench(gemms)
    if hasattr(torch, "_grouped_mm"):
        pt.ms["gmm"] = _safe(lambda: bench(lambda: grouped_mm_forward(spec, w, x, ids, tw)))
    if T in LOOP_TOKENS and not zipf and not args.quick:
        pt.ms["loop"] = _safe(lambda: bench(lambda: loop_forward(spec, w, x, ids, tw)))
    if args.check:
        pt.check = check_against_float64(spec, w, x, ids, tw, y)
    return pt


def _safe(fn) -> float:
    try:
        return fn()
    except Exception as err:  # a peer that cannot run here leaves a gap, not a stopped table
        print(f"    peer failed: {type(err).__name__}: {err}", file=sys.stderr)
        return float("nan")


def pct(floor: float, ms: float | None) -> str:
    if ms is None or not math.isfinite(ms):
        return "      -      "
    return f"{ms:7.3f} ({100 * floor / ms:3.0f}%)"


def print_row(pt: Point) -> None:
    tkey = "512z" if pt.routing.startswith("zipf") else pt.T
    vf, vg, _ = VLLM.get(pt.preset, {}).get(tkey, (None, None, None))
    if pt.error:
        print(f"{pt.preset:12s} {tkey!s:>5s}  ERROR {pt.error}")
        return
    m = pt.ms
    vs = f"{100 * vf / m['fwd_pre']:4.0f}%" if vf else "   - "
    chk = "" if pt.check is None else f"  check {'ok' if pt.check['ok'] else 'FAIL'} {pt.check['max_error_over_bound']:.2f}"
    print(
        f"{pt.preset:12s} {tkey!s:>5s} {pt.floor_ms:7.3f}  {pct(pt.floor_ms, m.get('fwd'))}  "
        f"{pct(pt.floor_ms, m.get('fwd_pre'))}  "
        f"{pct(pt.floor_ms, m.get('gemms'))}  {pct(pt.floor_ms, m.get('gmm'))}  {pct(pt.floor_ms, m.get('loop'))}  "
        f"{pct(pt.floor_ms, vf)}  {pct(pt.floor_ms, vg)}  {vs}{chk}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"T in {QUICK_TOKENS}, no Zipf, no torch loop")
    ap.add_argument("--check", action="store_true", help="compare bf16 output with a float64 reference")
    ap.add_argument("--json", metavar="PATH", help="write every point (timings, config, check) as JSON")
    ap.add_argument("--presets", nargs="*", default=list(PRESETS), choices=list(PRESETS))
    ap.add_argument("--warmup", type=int, default=25)
    ap.add_argument("--rep", type=int, default=100)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("moe_cts.kernels.benchmark needs a GPU", file=sys.stderr)
        return 2
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    print("preset           T   floor   ours fwd (%floor) ours fwd, ids given ours GEMMs       torch._grouped_mm  torch loop"
          "         vLLM fwd          vLLM GEMMs        ours vs vLLM fwd")  # fmt: skip
    points: list[Point] = []
    tokens = QUICK_TOKENS if args.quick else TOKENS
    for key in args.presets:
        runs = [(T, False) for T in tokens] + ([] if args.quick else [(512, True)])
        for T, zipf in runs:
            try:
                pt = bench_point(key, T, zipf, args)
            except Exception as err:  # one failure must not stop the table
                pt = Point(key, T, "zipf1.2" if zipf else "router", error=f"{type(err).__name__}: {err}")
                traceback.print_exc(file=sys.stderr)
            finally:
                torch.cuda.empty_cache()
            points.append(pt)
            print_row(pt)
            sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "points": [asdict(p) for p in points]}, f, indent=1)
    failed = [p for p in points if p.error or (p.check is not None and not p.check["ok"])]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
