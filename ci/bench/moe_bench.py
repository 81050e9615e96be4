#!/usr/bin/env python3
"""MoE forward benchmark of the installed moe_cts kernels (not a test), run from the repository root:

    python ci/bench/moe_bench.py --out DIR [--peer .peer] [--baseline-src OLD] [--presets a,b] [--tokens 1,16]
    python ci/bench/moe_bench.py --cpu-smoke --out DIR [--peer ../shared/peer] [--baseline-src OLD]

    ceilings = copy bandwidth and bf16 8192^3 matmul rate, measured first in this run (bench_timing)
    for point in 5 presets x T in (1..4096) + Zipf(1.2) at T=512 (35 points, bench_points):
        ids     = our router's top-k on x, or Zipf ids        (every path gets the same ids and weights)
        floor   = max(touched weight bytes / copy BW, FLOPs / matmul rate)
        time    ours, ours with router, vLLM (--peer, tuned=True), torch._grouped_mm; eager and CUDA-graph replay
        compare old tree (--baseline-src) with new: bitwise outputs, new/old time (flag > 3% slower)
    print one table + geometric means; DIR/moe_bench.json and DIR/moe_bench.md

No figure comes from outside the run: every floor divides by ceilings measured in it. docs/benchmark.md explains
the columns. --cpu-smoke runs tiny shapes on the Triton interpreter (fp32; CPU stand-in ceilings, marked as such)
so CI can check every code path; its times mean nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # sibling modules, also when imported rather than run
    sys.path.insert(0, str(HERE))

from bench_points import (  # noqa: E402
    PRESETS,
    SMOKE_PRESETS,
    SMOKE_TOKENS,
    SMOKE_ZIPF_T,
    TOKENS,
    ZIPF_T,
    Point,
    point_list,
)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="folder for moe_bench.json and moe_bench.md")
    ap.add_argument("--peer", help="folder holding vllm_peer.py (vLLM's Triton fused-MoE path), e.g. .peer")
    ap.add_argument("--baseline-src", help="folder with an older revision's flat kernels/ and reference/")
    ap.add_argument(
        "--cpu-smoke", action="store_true", help="Triton interpreter, tiny shapes, fp32, 1 call per time"
    )
    ap.add_argument("--presets", help=f"comma list of {','.join(p.key for p in PRESETS)}")
    ap.add_argument("--tokens", help="comma list of T (default 1,16,128,512,2048,4096)")
    ap.add_argument("--no-zipf", action="store_true", help="leave out the Zipf(1.2) point of each preset")
    ap.add_argument("--no-graph", action="store_true", help="leave out the CUDA-graph replays")
    ap.add_argument(
        "--baseline-only", action="store_true", help="with --baseline-src: only old vs new, no paths"
    )
    ap.add_argument("--rounds", type=int, default=4, help="interleaved timing rounds of old vs new (GPU)")
    ap.add_argument(
        "--budget-s", type=float, help="start no new point after this many seconds (partial table)"
    )
    ap.add_argument("--warmup-ms", type=float, default=25.0)
    ap.add_argument("--rep-ms", type=float, default=100.0)
    ap.add_argument("--min-reps", type=int, default=25)
    return ap.parse_args(argv)


@dataclass
class Ctx:
    """What every point needs from the run."""

    smoke: bool
    device: str
    dtype: object  # torch.dtype
    timer: object  # bench_timing.Timer
    no_graph: bool
    peer: ModuleType | None  # vllm_peer, imported from --peer
    ceilings: dict  # measure_ceilings()
    baseline_only: bool = False  # --baseline-only: old vs new alone, no timing paths
    rounds: int = 4  # --rounds: interleaved old-vs-new timing rounds


def import_peer(peer_dir: str | None) -> ModuleType | None:
    """vllm_peer from --peer DIR, in this process (it must be that file, not another on sys.path)."""
    if not peer_dir:
        return None
    d = str(Path(peer_dir).resolve())
    if not (Path(d) / "vllm_peer.py").is_file():
        raise SystemExit(
            f"--peer: expected {d}/vllm_peer.py (copy ../shared/peer into the checkout), not found"
        )
    sys.path.insert(0, d)
    import vllm_peer

    if Path(vllm_peer.__file__).resolve().parent != Path(d):
        raise SystemExit(f"--peer: imported vllm_peer from {vllm_peer.__file__}, expected {d}")
    return vllm_peer


def run_point(ctx: Ctx, point: Point, spec, w, tensors, sides) -> tuple[dict, dict | None]:
    """(record, baseline record) of one point."""
    from bench_baseline import compare_point
    from bench_paths import forwards, run_paths
    from bench_points import roofline_floor, zipf_routing

    import moe_cts.kernels as K

    x = tensors.x_full[: point.T].contiguous()
    if point.zipf:
        ids, tw = zipf_routing(point.T, spec.num_experts, spec.top_k, ctx.device)
    else:
        r = K.route(spec, w, x)
        ids, tw = r.topk_ids, r.topk_weights
    c = ctx.ceilings
    floor = roofline_floor(spec, ids, x.element_size(), c["copy_bw_Bps"], c["matmul_flops"])
    pt = {**asdict(point), "H": spec.hidden_size, "I": spec.intermediate_size, "E": spec.num_experts,
          "k": spec.top_k, "activation": spec.activation, "floor": asdict(floor)}  # fmt: skip
    if ctx.peer is not None:
        cfg, src = ctx.peer.pick_config(x, w.w13, w.w2, spec.top_k, tuned=True)
        pt["vllm_config"] = {"config": cfg, "source": src}
    pt["paths"] = (
        {}
        if ctx.baseline_only
        else run_paths(ctx, forwards(ctx, spec, w, x, ids, tw, K.Routing(ids, tw), point.zipf))
    )
    base = None
    if sides:
        base = {**asdict(point), **compare_point(ctx, sides, point.preset, tensors, x, ids, tw, point.zipf)}
    return pt, base


def fits(ctx: Ctx, spec) -> str | None:
    """None if the preset's weights (plus room for workspaces and graphs) fit the GPU, else the reason."""
    if ctx.smoke:
        return None
    import torch

    need = spec.num_experts * (spec.w13_rows + spec.intermediate_size) * spec.hidden_size * 2
    torch.cuda.empty_cache()  # the previous preset's freed blocks would otherwise count as used
    free, _ = torch.cuda.mem_get_info()
    return (
        None
        if free > 1.3 * need + (8 << 30)
        else f"weights {need / 2**30:.1f} GiB do not fit ({free / 2**30:.1f} free)"
    )


def run_preset(ctx: Ctx, key: str, pts: list[Point], sides, log):
    """Yield (record, baseline record or None) for every point of one preset, on one set of tensors."""
    import torch
    from bench_paths import _err
    from bench_points import build_spec, make_tensors

    import moe_cts.reference as R

    try:
        spec = build_spec(R.presets, key, ctx.smoke)
        reason = fits(ctx, spec)
        if reason:
            raise MemoryError(reason)
        tensors = make_tensors(spec, ctx.dtype, ctx.device, max(p.T for p in pts))
        w = R.MoEWeights(**tensors.fields)
    except Exception as exc:
        msg = _err(exc)
        for p in pts:
            yield {**asdict(p), "error": f"setup: {msg}"}, None
        return
    for p in pts:
        try:
            rec, b = run_point(ctx, p, spec, w, tensors, sides)
        except Exception as exc:  # one point that fails leaves its row marked, the table goes on
            rec, b = {**asdict(p), "error": _err(exc)}, None
        log(f"{key} T={p.T} {p.routing}: " + ", ".join(
            f"{n} {r['ms']:.3f}" if r.get("ms") else f"{n} -" for n, r in rec.get("paths", {}).items()))  # fmt: skip
        yield rec, b
        if not ctx.smoke:
            torch.cuda.empty_cache()


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported (by moe_cts or the peer)
    import bench_report
    import torch
    import triton
    from bench_baseline import new_side, old_side
    from bench_timing import Timer, measure_ceilings

    t0 = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("moe_bench.py needs a CUDA GPU (or --cpu-smoke)", file=sys.stderr)
        return 2
    device = "cpu" if args.cpu_smoke else "cuda"
    peer = import_peer(args.peer)
    sides = (old_side(str(Path(args.baseline_src).resolve())), new_side()) if args.baseline_src else None
    timer = Timer(cpu=args.cpu_smoke, warmup_ms=args.warmup_ms, rep_ms=args.rep_ms, min_reps=args.min_reps)
    ceilings = measure_ceilings(timer, device)
    ctx = Ctx(args.cpu_smoke, device, torch.float32 if args.cpu_smoke else torch.bfloat16, timer, args.no_graph,
              peer, ceilings, args.baseline_only and bool(args.baseline_src), args.rounds)  # fmt: skip
    presets = tuple(args.presets.split(",")) if args.presets else (SMOKE_PRESETS if ctx.smoke else
                                                                    tuple(p.key for p in PRESETS))  # fmt: skip
    tokens = (
        tuple(int(t) for t in args.tokens.split(","))
        if args.tokens
        else (SMOKE_TOKENS if ctx.smoke else TOKENS)
    )
    zipf_t = None if args.no_zipf else (SMOKE_ZIPF_T if ctx.smoke else ZIPF_T)
    meta = {"device": "CPU (Triton interpreter, --cpu-smoke)" if ctx.smoke else torch.cuda.get_device_name(),
            "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
            "dtype": str(ctx.dtype).replace("torch.", ""), "cpu_smoke": ctx.smoke, "ceilings": ceilings,
            "peer": getattr(peer, "__file__", None), "peer_version": getattr(peer, "VLLM_VERSION", None),
            "baseline_src": args.baseline_src, "args": vars(args)}  # fmt: skip
    log(f"ceilings: copy {ceilings['copy_bw_Bps'] / 1e9:.1f} GB/s, matmul {ceilings['matmul_flops'] / 1e9:.1f} "
        f"GFLOP/s ({ceilings['source']})")  # fmt: skip
    points, baseline, skipped = [], [], []
    for key in presets:
        for rec, base in run_preset(ctx, key, point_list((key,), tokens, zipf_t), sides, log):
            if "paths" in rec:
                bench_report.add_ratios(rec)
            points.append(rec)
            baseline += [base] if base else []
            bench_report.write(args.out, meta, points, baseline)  # partial results survive a killed run
            if args.budget_s and time.time() - t0 > args.budget_s:
                break
        if args.budget_s and time.time() - t0 > args.budget_s:
            skipped.append(key)  # the rest of this preset and every later one
    meta["skipped_presets_over_budget"] = skipped
    meta["wall_s"] = round(time.time() - t0, 1)
    if peer is not None:
        meta["vllm_peer_log"] = peer.logger.messages[:50]
    print("\n".join(bench_report.write(args.out, meta, points, baseline)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
