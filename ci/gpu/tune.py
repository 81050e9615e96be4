"""Tile sweep of the two grouped GEMMs on a GPU (not a test): finds the 16-bit rows of a tile table.

    python ci/gpu/tune.py [--points deepseek-v3:4096 qwen2-57b-a14b:2048 ...] [--block-ms 32,64] [--json OUT.json]
                          [--base cuda-sm90] [--table-out CANDIDATE.json]

For each (preset, T) and each BLOCK_M it aligns once, then times gate_up and down alone for every candidate
tile (triton.testing.do_bench median, L2 flushed), and prints the best pair per BLOCK_M with the bucket
m = ceil(T*k/E) it belongs to. Routed experts only, bf16, router ids from moe_cts.kernels.route.

The base table (--base; default: the one this device reads) takes part: each point also times the tiles of the
base row its m falls in, in the same run, and every candidate carries that row's flags (tma, half_tail,
merge_tail, persistent, maxnreg) where its BLOCK_M allows them. --table-out writes a candidate table
(table_from_sweep): the base table with each measured 16-bit row replaced by the sweep's best BLOCK_M and tiles
for the points of its bucket, where they beat the row's own tiles by more than KEEP_WITHIN; its "tuned" field
records the device, versions, command and, per row, the points and both times. Certify it before it ships:
`moe-cts certify --table CANDIDATE.json` (docs/certify.md).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

import torch
import triton
import triton.testing

import moe_cts.kernels
from moe_cts.kernels import config as cfgmod
from moe_cts.kernels.config import GemmTile, bucket_row
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


#: a row is replaced only where the sweep's best beats its own tiles by more than this fraction (timing noise)
KEEP_WITHIN = 0.02
#: GemmTile fields a candidate inherits from the base row (the sweep varies the five numeric ones)
FLAGS = ("tma", "persistent", "half_tail", "merge_tail", "maxnreg")


def _fields(c) -> dict:
    """A sweep candidate (BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages) as GemmTile fields."""
    return dict(zip(("BLOCK_N", "BLOCK_K", "GROUP_M", "num_warps", "num_stages"), c))


def with_flags(tile: dict, base_tile: dict, block_m: int) -> dict:
    """`tile` with the base row's flags, less those its BLOCK_M cannot take (half tails need BLOCK_M >= 32)."""
    flags = {f: base_tile[f] for f in FLAGS if f in base_tile}
    if block_m < 32:
        flags.pop("half_tail", None)
        flags.pop("merge_tail", None)
    return {**tile, **flags}


def _fits(r: dict, limit: int | None) -> bool:
    """Whether a record's tile fits `limit` bytes of shared memory (the table's targets: a tile this GPU ran may
    not fit another target that reads the table)."""
    return (
        limit is None or GemmTile(**r["tile"]).smem_bytes(r["BLOCK_M"], 2, cfgmod.N_B[r["kernel"]]) <= limit
    )


def _best(records: list[dict], kind: str, n_points: int) -> tuple[float, dict] | None:
    """(summed ms, tile) of the fastest `kind` tile among records that ran at all n_points points; None if none."""
    sums: dict[str, dict] = {}
    for r in records:
        if r["kernel"] == kind:
            sums.setdefault(json.dumps(r["tile"], sort_keys=True), {})[(r["preset"], r["T"])] = r["ms"]
    full = [(sum(v.values()), json.loads(k)) for k, v in sums.items() if len(v) == n_points]
    return min(full, key=lambda t: t[0], default=None)


def table_from_sweep(base: dict, records: list[dict], provenance: dict, limit: int | None = None) -> dict:
    """The base table with its 16-bit rows re-chosen from the sweep's records (module docstring).

    records: {"preset", "T", "m", "BLOCK_M", "kernel": gate_up | down, "tile": GemmTile fields, "ms", "base": bool}
    Per row: its points (preset, T) are those whose m falls in its bucket. Per BLOCK_M, the best gate_up and the
    best down tile by their summed ms over those points (a tile must have run at every point); the row's time is
    their sum. The fastest BLOCK_M replaces the row when it beats the row's own tiles (records with base: true)
    by more than KEEP_WITHIN; rows without points, or without their own tiles measured, stay as they are. Tiles
    over `limit` bytes of shared memory (the smallest of the table's targets) take no part."""
    table = json.loads(json.dumps(base))  # a copy
    rows = table["tables"]["16bit"]
    tuned = []
    for i, row in enumerate(rows):
        mine = [
            r
            for r in records
            if bucket_row(rows, r["m"]) == i and r["ms"] != float("inf") and _fits(r, limit)
        ]
        points = sorted({(r["preset"], r["T"]) for r in mine})
        if not points:
            tuned.append(
                {"row": i, "max_tokens_per_expert": row["max_tokens_per_expert"], "result": "not measured"}
            )
            continue
        own = [r for r in mine if r.get("base")]
        base_gu, base_dn = _best(own, "gate_up", len(points)), _best(own, "down", len(points))
        choices = []
        for bm in sorted({r["BLOCK_M"] for r in mine}):
            at_bm = [r for r in mine if r["BLOCK_M"] == bm]
            gu, dn = _best(at_bm, "gate_up", len(points)), _best(at_bm, "down", len(points))
            if gu and dn:
                choices.append((gu[0] + dn[0], bm, gu[1], dn[1]))
        entry = {
            "row": i,
            "max_tokens_per_expert": row["max_tokens_per_expert"],
            "points": [list(p) for p in points],
        }
        if not (base_gu and base_dn and choices):
            tuned.append(
                {
                    **entry,
                    "result": "kept: the row's own tiles or a full candidate pair not measured at every point",
                }
            )
            continue
        base_ms = base_gu[0] + base_dn[0]
        ms, bm, gu, dn = min(choices, key=lambda c: c[0])
        entry.update(base_ms=round(base_ms, 4), best_ms=round(ms, 4))
        if ms < base_ms * (1 - KEEP_WITHIN):
            rows[i] = {
                "max_tokens_per_expert": row["max_tokens_per_expert"],
                "BLOCK_M": bm,
                "gate_up": gu,
                "down": dn,
            }
            entry["result"] = "replaced"
        else:
            entry["result"] = f"kept: within {KEEP_WITHIN:.0%} of the row's own tiles"
        tuned.append(entry)
    table["tuned"] = {**provenance, "keep_within": KEEP_WITHIN, "rows_16bit": tuned,
                      "previous": base.get("tuned")}  # fmt: skip
    return table


def sweep(
    name: str, T: int, out: list, block_ms: tuple[int, ...] | None = None, base: dict | None = None
) -> None:
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
    row = base["tables"]["16bit"][bucket_row(base["tables"]["16bit"], m)] if base else None
    sizes = tuple(block_ms or BLOCK_MS["small" if m <= 32 else "large"])
    if row is not None and row["BLOCK_M"] not in sizes:
        sizes += (row["BLOCK_M"],)  # the base row's own tiles run in the same sweep
    for bm in sizes:
        meta = moe_cts.kernels.align(spec, r.topk_ids, bm)
        best = {}
        for kind, cands in (("gate_up", GATE_UP), ("down", DOWN)):
            tiles = [
                (_fields(c) if row is None else with_flags(_fields(c), row[kind], bm), False) for c in cands
            ]
            if row is not None and bm == row["BLOCK_M"]:
                tiles.append((dict(row[kind]), True))
            for tile, is_base in tiles:
                fn = _launcher(kind, GemmTile(**tile), x, weights, act, ws, meta, twf)
                try:
                    ms = triton.testing.do_bench(fn, warmup=5, rep=25, return_mode="median")
                except Exception as err:  # out of resources etc.: record, go on
                    ms = float("inf")
                    print(f"  {kind} {tile}: {type(err).__name__}", flush=True)
                out.append({"preset": name, "T": T, "m": m, "BLOCK_M": bm, "kernel": kind, "tile": tile, "ms": ms,
                            "base": is_base})  # fmt: skip
                if ms < best.get(kind, (float("inf"),))[0]:
                    best[kind] = (ms, tile)
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
    ap.add_argument(
        "--base", help="the table whose rows compete (a kernels/configs name; default: this device's)"
    )
    ap.add_argument("--table-out", help="write a candidate table here (table_from_sweep)")
    args = ap.parse_args(argv)
    block_ms = tuple(int(b) for b in args.block_ms.split(",")) if args.block_ms else None
    base_name = args.base or cfgmod.current_table()
    base = cfgmod.load_table(base_name)
    out: list = []
    t0 = time.time()
    for p in args.points:
        name, T = p.split(":")
        sweep(name, int(T), out, block_ms, base)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f)
    print(f"sweep took {time.time() - t0:.0f} s")
    if args.table_out:
        provenance = {
            "by": "ci/gpu/tune.py", "command": " ".join(sys.argv), "base": base_name,
            "device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "method": "triton.testing.do_bench median, warmup 5, rep 25, "
            "L2 flushed; gate_up and down timed alone per tile, summed over the bucket's points",
        }  # fmt: skip
        limit = cfgmod.table_shared_limit(base_name)
        table = cfgmod.check_table(table_from_sweep(base, out, provenance, limit), "--table-out ")
        with open(args.table_out, "w") as f:
            json.dump(table, f, indent=1)
        for e in table["tuned"]["rows_16bit"]:
            print(f"row {e['row']} (m <= {e['max_tokens_per_expert']}): {e['result']} {e.get('base_ms', '')} -> "
                  f"{e.get('best_ms', '')}")  # fmt: skip
        print(f"wrote {args.table_out}: certify it with `moe-cts certify --table {args.table_out}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
