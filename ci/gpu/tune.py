"""Tile sweep of the two grouped GEMMs on a GPU (not a test): finds the table rows of kernels/configs/cuda.json.

    python ci/gpu/tune.py [--points deepseek-v3:4096 qwen2-57b-a14b:2048 ...] [--block-ms 32,64] [--json OUT.json]

For each (preset, T) and each BLOCK_M it aligns once, then times gate_up and down alone for every candidate
tile (triton.testing.do_bench median, L2 flushed), and prints the best pair per BLOCK_M with the bucket
m = ceil(T*k/E) it belongs to. Routed experts only, bf16, router ids from moe_cts.kernels.route.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

import torch
import triton.testing

import moe_cts.kernels
from moe_cts.kernels.config import GemmTile
from moe_cts.kernels.grouped_gemm import launch_down, launch_gate_up
from moe_cts.reference import presets
from moe_cts.reference.spec import MoESpec, MoEWeights, weight_shapes

GATE_UP = [  # (BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages); two B tiles per stage (gate and up)
    (64, 64, 8, 4, 4), (64, 128, 8, 4, 3), (128, 64, 8, 8, 3), (128, 64, 8, 4, 4), (64, 64, 8, 8, 5),
    (128, 128, 8, 8, 2), (64, 128, 8, 8, 4), (128, 64, 16, 8, 4),
    # mid-size buckets (m = 16..128 tokens per expert, where vLLM's BLOCK_M 64 rows led in session 6's run):
    # narrower effective N (2 x 64) with deeper pipelines, one M block per expert (GROUP_M 1)
    (64, 64, 1, 8, 3), (64, 64, 1, 4, 4), (128, 64, 1, 8, 3),
]  # fmt: skip
DOWN = [
    (128, 64, 8, 8, 3), (128, 64, 8, 4, 4), (256, 64, 8, 8, 3), (128, 128, 8, 8, 3), (64, 128, 8, 4, 4),
    (256, 64, 16, 8, 4), (128, 128, 8, 4, 3), (64, 64, 8, 4, 5),
    (128, 64, 1, 8, 3), (128, 64, 1, 4, 4), (64, 128, 1, 4, 3),
]  # fmt: skip
BLOCK_MS = {"small": (16, 32), "large": (64, 128)}


SHAPE = re.compile(r"E(\d+)k(\d+)H(\d+)I(\d+)")


def routed(name):
    """A preset's routed experts, or a bare softmax top-k layer named by its shape, `E128k8H4096I1536`
    (Qwen3-235B's routed experts: a layer the benchmark has and presets.json does not)."""
    m = SHAPE.fullmatch(name)
    if m:
        E, k, H, I = map(int, m.groups())
        return MoESpec(hidden_size=H, intermediate_size=I, num_experts=E, top_k=k)
    return presets.get(name).replace(n_shared_experts=0, shared_intermediate_size=0, shared_gate=False)


def _launcher(kind, tile, x, w, act, ws, meta, twf):
    if kind == "gate_up":
        return lambda: launch_gate_up(
            x, w.w13, None, act, meta, gated=True, interleaved=False, activation="silu", tile=tile
        )
    return lambda: launch_down(act, w.w2, None, ws, meta, tile=tile, route_weights=twf)


def sweep(name: str, T: int, out: list, block_ms: tuple[int, ...] | None = None) -> None:
    spec = routed(name)
    g = torch.Generator(device="cuda").manual_seed(0)
    weights = MoEWeights(**{
        n: torch.randn(s, generator=g, device="cuda", dtype=torch.bfloat16).div_(s[-1] ** 0.5)
        for n, s in weight_shapes(spec).items()
    })  # fmt: skip
    x = torch.randn((T, spec.hidden_size), device="cuda", dtype=torch.bfloat16)
    r = moe_cts.kernels.route(spec, weights, x)
    m = -(-T * spec.top_k // spec.num_experts)
    I, H = spec.intermediate_size, spec.hidden_size
    act = torch.empty((T * spec.top_k, I), device="cuda", dtype=torch.bfloat16)
    ws = torch.empty((T * spec.top_k, H), device="cuda", dtype=torch.bfloat16)
    twf = r.topk_weights.reshape(-1).float()
    for bm in block_ms or BLOCK_MS["small" if m <= 32 else "large"]:
        meta = moe_cts.kernels.align(spec, r.topk_ids, bm)
        best = {}
        for kind, cands in (("gate_up", GATE_UP), ("down", DOWN)):
            for c in cands:
                fn = _launcher(kind, GemmTile(*c), x, weights, act, ws, meta, twf)
                try:
                    ms = triton.testing.do_bench(fn, warmup=5, rep=25, return_mode="median")
                except Exception as err:  # out of resources etc.: record, go on
                    ms = float("inf")
                    print(f"  {kind} {c}: {type(err).__name__}", flush=True)
                out.append(
                    {"preset": name, "T": T, "m": m, "BLOCK_M": bm, "kernel": kind, "tile": c, "ms": ms}
                )
                if ms < best.get(kind, (float("inf"),))[0]:
                    best[kind] = (ms, c)
        tot = best["gate_up"][0] + best["down"][0]
        print(
            f"{name:16s} T={T:5d} m={m:5d} BLOCK_M={bm:3d}  gate_up {best['gate_up'][0]:.3f} {best['gate_up'][1]}  "
            f"down {best['down'][0]:.3f} {best['down'][1]}  sum {tot:.3f}",
            flush=True,
        )
    del weights
    torch.cuda.empty_cache()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", nargs="*", default=["deepseek-v3:4096", "qwen2-57b-a14b:2048",
                                                     "deepseek-v3:2048", "deepseek-v3:512", "qwen2-57b-a14b:512"])  # fmt: skip
    ap.add_argument(
        "--block-ms", help="BLOCK_M values to try at every point (default: 16,32 for m <= 32, else 64,128)"
    )
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    block_ms = tuple(int(b) for b in args.block_ms.split(",")) if args.block_ms else None
    out: list = []
    t0 = time.time()
    for p in args.points:
        name, T = p.split(":")
        sweep(name, int(T), out, block_ms)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f)
    print(f"sweep took {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
