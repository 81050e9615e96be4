"""Old-vs-new comparison for a redesign's acceptance: the project at an older revision against the installed one.

    DIR holds `kernels/` and `reference/` of a revision that used the flat package names (6e80182):
        git -C /work/main archive 6e80182 kernels reference | tar -x -C DIR
    old = import kernels, reference from DIR (sys.path)     new = moe_cts.kernels, moe_cts.reference
    per point, each side builds its own MoESpec / MoEWeights / Routing from the same tensors, then
        bitwise   = y_old and y_new have the same bits (ids given; and with the router at router points)
        new/old   = median over interleaved rounds of (new time / old time) in that round; > 1 + SLOWER_BY is
                    flagged (each time is a median of many graph replays)

The two trees never share a module: the old names are `kernels.*` / `reference.*`, the new `moe_cts.*`.
"""

from __future__ import annotations

import importlib
import statistics
import sys
from dataclasses import dataclass
from types import ModuleType

import torch
from bench_paths import _err
from bench_points import build_spec
from bench_timing import capture_graph

SLOWER_BY = 0.03  # a point where new takes more than 3% longer than old is flagged
ROUNDS = 4  # default interleaved timing rounds per side on the GPU (--rounds), each timing graph replays


@dataclass(frozen=True)
class Side:
    """One tree's entry points: fused_moe, Routing, MoEWeights and the presets module."""

    name: str  # "old" or "new"
    kernels: ModuleType
    routing_cls: type
    weights_cls: type
    presets: ModuleType


def new_side() -> Side:
    import moe_cts.kernels as K
    import moe_cts.reference as R
    from moe_cts.reference import presets

    return Side("new", K, K.Routing, R.MoEWeights, presets)


def old_side(src_dir: str) -> Side:
    """Import the flat `kernels` / `reference` packages of DIR (and refuse any other copy of them)."""
    if src_dir not in sys.path:
        sys.path.insert(0, src_dir)
    K = importlib.import_module("kernels")
    R = importlib.import_module("reference")
    for mod in (K, R):
        if not str(mod.__file__).startswith(str(src_dir)):
            raise ImportError(f"--baseline-src: expected {mod.__name__} from {src_dir}, got {mod.__file__}")
    return Side("old", K, importlib.import_module("kernels.metadata").Routing, R.MoEWeights, R.presets)


def bits(y: torch.Tensor) -> torch.Tensor:
    """The output's bit patterns (NaN == NaN when the bits agree, -0 != +0)."""
    return y.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[y.element_size()])


def compare_point(ctx, sides: tuple[Side, Side], key: str, tensors, x, ids, tw, zipf: bool) -> dict:
    """bitwise equality and new/old time at one point (module docstring); errors land in the record."""
    rec: dict = {"bitwise_equal": None, "error": None, "ms": {}}
    try:
        runs = {}
        for side in sides:
            spec = build_spec(side.presets, key, ctx.smoke)
            w = side.weights_cls(**tensors.fields)
            r = side.routing_cls(ids, tw)
            K = side.kernels
            runs[(side.name, "ids")] = lambda K=K, s=spec, w=w, r=r: K.fused_moe(s, w, x, routing=r)
            if not zipf:
                runs[(side.name, "router")] = lambda K=K, s=spec, w=w: K.fused_moe(s, w, x)
        outs, once = {}, {}
        for k_, fn in runs.items():
            outs[k_], once[k_] = ctx.timer.once(fn)
        modes = ("ids",) if zipf else ("ids", "router")
        rec["bitwise_equal_by_mode"] = {m: bool(torch.equal(bits(outs[("old", m)]), bits(outs[("new", m)])))
                                        for m in modes}  # fmt: skip
        rec["bitwise_equal"] = all(rec["bitwise_equal_by_mode"].values())
        del outs
        # GPU: each run as a CUDA-graph replay (decode points are otherwise dominated by host launch jitter),
        # ROUNDS interleaved rounds; a side's time is its lowest round, and the spread of its rounds (max/min - 1)
        # is the noise of this point: a difference inside it is not a regression. CPU: the checked call.
        graphs = {} if ctx.timer.cpu else {k_: capture_graph(fn) for k_, fn in runs.items()}
        rounds: dict[str, list[float]] = {}
        order = list(runs)
        for r in range(1 if ctx.timer.cpu else ctx.rounds):
            # odd rounds run the sides in reverse, so a clock ramp within a round favours neither side
            for side, mode in order if r % 2 == 0 else order[::-1]:
                g = graphs.get((side, mode))
                t = once[(side, mode)] if ctx.timer.cpu else ctx.timer(g[0].replay)
                rounds.setdefault(f"{side}_{mode}", []).append(t["ms"])
        del graphs
        rec["ms"] = {k_: min(v) for k_, v in rounds.items()}
        rec["rounds_ms"] = rounds
        ms = rec["ms"]
        # Paired estimate: each round times both sides back to back under the same clocks, so the median of
        # the per-round ratios cancels the drift between rounds that the lowest-of-rounds estimate keeps.
        rec["new_over_old_lowest"] = {m: ms[f"new_{m}"] / ms[f"old_{m}"] for m in modes}
        rec["new_over_old"] = {
            m: statistics.median(n / o for n, o in zip(rounds[f"new_{m}"], rounds[f"old_{m}"], strict=True))
            for m in modes
        }
        ratios = {
            m: [n / o for n, o in zip(rounds[f"new_{m}"], rounds[f"old_{m}"], strict=True)] for m in modes
        }
        rec["round_ratios"] = ratios
        rec["noise"] = {m: max(ratios[m]) / min(ratios[m]) - 1 for m in modes}  # spread of the paired ratios
        rec["slower"] = any(v > 1 + SLOWER_BY for v in rec["new_over_old"].values())
        rec["slower_than_noise"] = any(
            v > 1 + max(SLOWER_BY, rec["noise"][m]) for m, v in rec["new_over_old"].items()
        )
    except Exception as exc:
        rec["error"] = _err(exc)
    return rec
