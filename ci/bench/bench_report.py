"""The table, the geometric means and the JSON of a run.

ratios per point (times; > 1 means ours is faster):   vllm/ours, vllm/ours_router, gmm/ours (eager and graph)
pct_floor per path = 100 * floor_ms / ms              (the floor of this point from this run's ceilings)
summary = geometric mean of each ratio (and of ours' % floor) over the points that have it
files: DIR/moe_bench.json (everything), DIR/moe_bench.md (the table as printed)
"""

from __future__ import annotations

import json
import math
import os

RATIOS = (  # (name, numerator path, denominator path)
    ("vllm/ours", "vllm", "ours"),
    ("vllm/ours_router", "vllm", "ours_router"),
    ("gmm/ours", "gmm", "ours"),
    ("vllm_graph/ours_graph", "vllm_graph", "ours_graph"),
    ("vllm_graph/ours_router_graph", "vllm_graph", "ours_router_graph"),
    ("gmm_graph/ours_graph", "gmm_graph", "ours_graph"),
)
COLS = ("ours", "ours_router", "vllm", "gmm")


def _ms(pt: dict, path: str) -> float | None:
    r = pt.get("paths", {}).get(path)
    return r["ms"] if r and r.get("ms") else None


def add_ratios(pt: dict) -> None:
    """pt["ratios"] and every path's pct_floor (in place)."""
    pt["ratios"] = {}
    for name, num, den in RATIOS:
        a, b = _ms(pt, num), _ms(pt, den)
        pt["ratios"][name] = a / b if a and b else None
    for rec in pt.get("paths", {}).values():
        if rec.get("ms"):
            rec["pct_floor"] = 100.0 * pt["floor"]["ms"] / rec["ms"]


def geomean(vals) -> tuple[float | None, int]:
    vals = [v for v in vals if v and v > 0 and math.isfinite(v)]
    return (math.exp(sum(map(math.log, vals)) / len(vals)), len(vals)) if vals else (None, 0)


def summarize(points: list[dict], baseline: list[dict]) -> dict:
    out = {}
    for name, _, _ in RATIOS:
        g, n = geomean(p.get("ratios", {}).get(name) for p in points)
        out[name] = {"geomean": g, "points": n}
    for mode in ("ours", "ours_graph"):
        g, n = geomean((p["paths"].get(mode) or {}).get("pct_floor") for p in points if p.get("paths"))
        out[f"pct_floor[{mode}]"] = {"geomean": g, "points": n}
    for mode in ("ids", "router"):
        g, n = geomean((b.get("new_over_old") or {}).get(mode) for b in baseline)
        out[f"baseline new/old {mode}"] = {"geomean": g, "points": n}
    return out


def _cell(pt: dict, path: str) -> str:
    r = pt.get("paths", {}).get(path)
    if r is None:
        return "-"
    return f"{r['ms']:.3f}" if r.get("ms") else ("ERR" if r.get("error") else "skip")


def _r(v) -> str:
    return f"{v:.2f}" if v else "-"


def _pct(pt: dict, path: str) -> str:
    r = pt.get("paths", {}).get(path) or {}
    return f"{r['pct_floor']:.0f}%" if r.get("pct_floor") else "-"


def table_lines(meta: dict, points: list[dict], baseline: list[dict], summary: dict) -> list[str]:
    """The compact table: one row per point, eager columns then graph-replay columns (ms)."""
    c = meta["ceilings"]
    L = [f"{meta['device']} | torch {meta['torch']} | triton {meta['triton']} | peer {meta.get('peer') or 'none'}",
         f"ceilings ({c['source']}): copy {c['copy_bw_Bps'] / 1e9:.1f} GB/s (read + write, {c['copy_bytes']} B), "
         f"{c['matmul_dtype']} {c['matmul_n']}^3 matmul {c['matmul_flops'] / 1e9:.1f} GFLOP/s",
         "ms; floor = max(touched experts' weight bytes / copy BW, 2*T*k*3*H*I / matmul rate); vLLM/ours > 1: "
         "ours faster; %fl = floor / ours (ids given)", ""]  # fmt: skip
    head = ("preset", "T", "routing", "floor", "ours", "+router", "vLLM", "gmm", "vLLM/ours", "vLLM/+r", "%fl",
            "| g:ours", "g:+router", "g:vLLM", "g:gmm", "vLLM/ours", "vLLM/+r", "%fl")  # fmt: skip
    fmt = ("{:12s} {:>5s} {:>8s} {:>8s} {:>8s} {:>8s} {:>8s} {:>8s} {:>9s} {:>7s} {:>5s} "
           "{:>8s} {:>9s} {:>8s} {:>8s} {:>9s} {:>7s} {:>5s}")  # fmt: skip
    L.append(fmt.format(*head))
    for p in points:
        row = [p["preset"], str(p["T"]), p["routing"]]
        if p.get("error"):
            L.append(fmt.format(*row, "ERROR", *[""] * 14) + "  " + p["error"])
            continue
        R = p["ratios"]
        row += [f"{p['floor']['ms']:.3f}"] + [_cell(p, n) for n in COLS]
        row += [_r(R["vllm/ours"]), _r(R["vllm/ours_router"]), _pct(p, "ours")]
        row += ["| " + _cell(p, "ours_graph")] + [_cell(p, n + "_graph") for n in COLS[1:]]
        row += [_r(R["vllm_graph/ours_graph"]), _r(R["vllm_graph/ours_router_graph"]), _pct(p, "ours_graph")]
        L.append(fmt.format(*row))
    if baseline:
        L += ["", "old (--baseline-src) vs new, same inputs, graph replays; new/old = median over interleaved rounds of",
              "the round's time ratio; noise = spread of those ratios; SLOWER above 1.03, NOISE when inside the noise",
              f"{'preset':12s} {'T':>5s} {'routing':>8s} {'bitwise':>8s} {'new/old ids':>11s} "
              f"{'new/old router':>14s} {'noise':>6s}  flag"]  # fmt: skip
        for b in baseline:
            no = b.get("new_over_old") or {}
            eq = "ERROR" if b.get("error") else ("equal" if b["bitwise_equal"] else "DIFFER")
            noise = max((b.get("noise") or {}).values(), default=None)
            slower = "SLOWER" if b.get("slower_than_noise") else ("NOISE" if b.get("slower") else "")
            flag = slower + ("" if b.get("bitwise_equal") in (True, None) else " BITS")
            L.append(f"{b['preset']:12s} {b['T']:>5d} {b['routing']:>8s} {eq:>8s} {_r(no.get('ids')):>11s} "
                     f"{_r(no.get('router')):>14s} {_r(noise):>6s}  {flag.strip()}{'  ' + b['error'] if b.get('error') else ''}")  # fmt: skip
    L += ["", "geometric means:"]
    for name, v in summary.items():
        g = f"{v['geomean']:.3f}" if v["geomean"] else "-"
        L.append(f"  {name:32s} {g:>8s} over {v['points']} points")
    return L


def write(out_dir: str | None, meta: dict, points: list[dict], baseline: list[dict]) -> list[str]:
    """Table lines; with out_dir, moe_bench.json and moe_bench.md written beside each other."""
    summary = summarize(points, baseline)
    lines = table_lines(meta, points, baseline, summary)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        doc = {"meta": meta, "points": points, "baseline": baseline, "summary": summary}
        with open(os.path.join(out_dir, "moe_bench.json"), "w") as f:
            json.dump(doc, f, indent=1, default=str)
        with open(os.path.join(out_dir, "moe_bench.md"), "w") as f:
            f.write("```\n" + "\n".join(lines) + "\n```\n")
    return lines
