#!/usr/bin/env python3
"""Router benchmark (issue 15): route() alone, and the forward with the router against the ids given.

    python ci/gpu/router_bench.py --out DIR/router_bench.json [--presets a,b] [--tokens 1,4] [--reps 100]
    python ci/gpu/router_bench.py --cpu-smoke --out DIR/router_bench.json    # interpreter, tiny shapes

    for preset in deepseek-v3, qwen3-235b, mixtral, gpt-oss-120b      (routed experts, bf16: ci/bench/bench_points)
        for T in 1, 4, 16, 128, 4096:
            route       graph of route(spec, w, x)                           what fused_moe calls
            fwd_ids     graph of fused_moe(spec, w, x, routing=Routing(ids, tw))
            fwd_router  graph of fused_moe(spec, w, x)
            check       fwd_router's output == fwd_ids' output bit for bit (the ids and weights come from the
                        same route() call, so any difference is a bug, not rounding)
            time        per path: median of --reps (>= 50) replays after 10 warm-up replays, each replay between
                        its own pair of torch.cuda.Events, L2 flushed (256 MB memset) before each, outside them
    overhead = fwd_router / fwd_ids - 1        issue 15's goal: <= 10 % at T <= 16
    print one table; write the records and the run's versions to --out (JSON)

The old single-kernel router: run this same file in a checkout of the older revision (it calls only route and
fused_moe, whose signatures did not change there); `tiles` is then null. --cpu-smoke runs tiny shapes on the
Triton interpreter in fp32 with one perf_counter call per path: it checks the plumbing, its times mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

PRESETS = ("deepseek-v3", "qwen3-235b", "mixtral", "gpt-oss-120b")  # keys of bench_points.PRESET_BY_KEY
TOKENS = (1, 4, 16, 128, 4096)
SMOKE_TOKENS = (1, 5)
#: --cpu-smoke: bench_points scales the ungrouped presets; DeepSeek-V3's grouped routing is scaled here
SMOKE_DSV3 = {"hidden_size": 64, "intermediate_size": 32, "num_experts": 16, "n_group": 4, "topk_group": 2,
              "top_k": 4}  # fmt: skip
MIN_REPS = 50
FLUSH_BYTES = 256 << 20
GOAL_T, GOAL_OVERHEAD = 16, 0.10


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--cpu-smoke", action="store_true", help="Triton interpreter, tiny shapes, fp32")
    ap.add_argument("--presets", help=f"comma list of {','.join(PRESETS)}")
    ap.add_argument("--tokens", help=f"comma list of T (default {','.join(map(str, TOKENS))})")
    ap.add_argument("--reps", type=int, default=100, help=f"timed replays per path (>= {MIN_REPS})")
    ap.add_argument("--no-forward", action="store_true", help="time route() only")
    args = ap.parse_args(argv)
    if args.reps < MIN_REPS:
        ap.error(f"--reps: expected >= {MIN_REPS}, got {args.reps}")
    return args


def build(key: str, smoke: bool, dtype, device: str, t_max: int):
    """(spec, MoEWeights, x_full) of one preset: bench_points' routed-only spec and random tensors."""
    from bench_points import build_spec, make_tensors

    import moe_cts.reference as R

    if smoke and key == "deepseek-v3":
        spec = build_spec(R.presets, key, False).replace(**SMOKE_DSV3)
    else:
        spec = build_spec(R.presets, key, smoke)
    t = make_tensors(spec, dtype, device, t_max)
    return spec, R.MoEWeights(**t.fields), t.x_full


def tiles(spec, w, x) -> dict | None:
    """The logits GEMM's decomposition at this shape (None on a revision without a split router)."""
    try:
        from moe_cts.kernels.router import logits_tile_for
    except ImportError:
        return None
    lt = logits_tile_for(spec.num_experts, spec.hidden_size, x.dtype, w.router.dtype)
    e_tiles = -(-spec.num_experts // lt.BLOCK_E)
    programs = e_tiles * lt.SPLIT_H * -(-x.shape[0] // lt.BLOCK_T)
    return {**{k: getattr(lt, k) for k in lt.__dataclass_fields__}, "logits_programs": programs}


class GraphTimer:
    """Median time of graph replays (module docstring); on the CPU one perf_counter call of fn."""

    def __init__(self, cpu: bool, reps: int):
        import torch

        self.cpu, self.reps = cpu, reps
        self.flush = None if cpu else torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")

    def __call__(self, fn) -> tuple[object, dict]:
        """(output, {"ms", "method", ...}): the eager call's output on the CPU, the graph's static output (as
        the last replay left it) on the GPU."""
        if self.cpu:
            t0 = time.perf_counter()
            y = fn()
            return y, {"ms": 1e3 * (time.perf_counter() - t0), "method": "perf_counter, 1 eager call (CPU)"}
        import torch
        from bench_timing import capture_graph

        graph, out = capture_graph(fn)
        for _ in range(10):
            graph.replay()
        ev = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(self.reps)
        ]
        for start, end in ev:
            self.flush.zero_()  # on the stream before start: not timed
            start.record()
            graph.replay()
            end.record()
        torch.cuda.synchronize()
        times = [s.elapsed_time(e) for s, e in ev]
        del graph  # the static output keeps its memory; the graph's other buffers go
        rec = {"ms": statistics.median(times), "min_ms": min(times), "reps": self.reps,
               "method": "CUDA-graph replay, median of per-replay CUDA events, L2 flushed before each"}  # fmt: skip
        return out, rec


def run_point(spec, w, x_full, T: int, timer: GraphTimer, forward: bool) -> dict:
    import torch

    import moe_cts.kernels as K

    x = x_full[:T].contiguous()
    rec: dict = {
        "T": T,
        "E": spec.num_experts,
        "H": spec.hidden_size,
        "k": spec.top_k,
        "tiles": tiles(spec, w, x),
    }
    r = K.route(spec, w, x)
    ids, tw = r.topk_ids.clone(), r.topk_weights.clone()
    y_route, rec["route"] = timer(lambda: K.route(spec, w, x))
    got = y_route
    if not (torch.equal(got.topk_ids, ids) and torch.equal(got.topk_weights, tw)):
        rec["error"] = "route(): the timed call's ids / weights differ from the eager call's"
    del y_route
    if not forward:
        return rec
    routing = K.Routing(ids, tw)
    y_ids, rec["fwd_ids"] = timer(lambda: K.fused_moe(spec, w, x, routing=routing))
    y_router, rec["fwd_router"] = timer(lambda: K.fused_moe(spec, w, x))
    a, b = y_ids, y_router
    rec["check"] = "bitwise equal" if torch.equal(a, b) else "FAILED: with the router != with its ids"
    if rec["check"] != "bitwise equal":
        rec["error"] = rec["check"]
    rec["overhead"] = rec["fwd_router"]["ms"] / rec["fwd_ids"]["ms"] - 1
    return rec


def table(points: list[dict], flag_goal: bool = True) -> list[str]:
    head = f"{'preset':<14}{'T':>6}{'split':>7}{'progs':>7}{'route_us':>10}{'fwd_ids_us':>12}{'fwd_rtr_us':>12}{'overhead':>10}"
    lines = [head]
    us = lambda p, k: f"{1e3 * p[k]['ms']:.1f}" if p.get(k, {}).get("ms") is not None else "-"
    for p in points:
        t = p.get("tiles") or {}
        ov = p.get("overhead")
        flag = " !" if flag_goal and ov is not None and p["T"] <= GOAL_T and ov > GOAL_OVERHEAD else ""
        lines.append(f"{p['preset']:<14}{p['T']:>6}{t.get('SPLIT_H', '-'):>7}{t.get('logits_programs', '-'):>7}"
                     f"{us(p, 'route'):>10}{us(p, 'fwd_ids'):>12}{us(p, 'fwd_router'):>12}"
                     f"{(f'{100 * ov:.1f}%' if ov is not None else '-'):>10}{flag}"
                     + (f"  ERROR {p['error']}" if p.get("error") else ""))  # fmt: skip
    if flag_goal:
        lines.append(f"! = overhead above {100 * GOAL_OVERHEAD:.0f}% at T <= {GOAL_T} (issue 15's goal)")
    else:
        lines.append("--cpu-smoke: interpreter times, they mean nothing")
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
    import torch
    import triton

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("router_bench.py needs a CUDA GPU (or --cpu-smoke)", file=sys.stderr)
        return 2
    device, dtype = ("cpu", torch.float32) if args.cpu_smoke else ("cuda", torch.bfloat16)
    presets = tuple(args.presets.split(",")) if args.presets else PRESETS
    tokens = (
        tuple(int(t) for t in args.tokens.split(","))
        if args.tokens
        else (SMOKE_TOKENS if args.cpu_smoke else TOKENS)
    )
    timer = GraphTimer(args.cpu_smoke, args.reps)
    points = []
    for key in presets:
        try:
            spec, w, x_full = build(key, args.cpu_smoke, dtype, device, max(tokens))
        except Exception as exc:
            points += [
                {"preset": key, "T": T, "error": f"setup: {type(exc).__name__}: {exc}"} for T in tokens
            ]
            continue
        for T in tokens:
            try:
                rec = {"preset": key, **run_point(spec, w, x_full, T, timer, not args.no_forward)}
            except Exception as exc:  # one failing point leaves its row marked; the table goes on
                traceback.print_exc()
                rec = {"preset": key, "T": T, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            points.append(rec)
            print(table([rec], not args.cpu_smoke)[1], file=sys.stderr, flush=True)
        del w, x_full
        if not args.cpu_smoke:
            torch.cuda.empty_cache()
    lines = table(points, not args.cpu_smoke)
    print("\n".join(lines))
    meta = {"device": "CPU (Triton interpreter, --cpu-smoke)" if args.cpu_smoke else torch.cuda.get_device_name(),
            "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
            "dtype": str(dtype).removeprefix("torch."), "cpu_smoke": args.cpu_smoke, "args": vars(args)}  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "points": points, "table": lines}, indent=1))
    return 1 if any(p.get("error") for p in points) else 0


if __name__ == "__main__":
    sys.exit(main())
