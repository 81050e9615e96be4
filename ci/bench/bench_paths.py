"""The forwards timed at one point, all on the same x, weights, top-k ids and weights.

    path         what runs
    ours         moe_cts.kernels.fused_moe(spec, w, x, routing=Routing(ids, tw))     ids given
    ours_router  moe_cts.kernels.fused_moe(spec, w, x)                                router included (router points)
    vllm         vllm_peer.vllm_forward(x, w13, w2, ids, tw, tuned=True, ...)         what vLLM runs on this device
    gmm          torch._grouped_mm: sort slots by expert, grouped GEMM w13, act, grouped GEMM w2, weight, sum

Each path runs eager and, on a GPU, as replays of a CUDA graph holding one forward ("<path>_graph").
Before a path is timed its output is compared with ours (ids given): relative Frobenius error <= MAX_REL, and
ours must be finite and nonzero; a path that fails is reported and not timed.
"""

from __future__ import annotations

import math
import sys
import traceback

import torch
from bench_timing import Timer, capture_graph

MAX_REL = 2e-2  # bf16 outputs of different summation orders differ by ~1e-3 relative; a wrong path by ~1


def grouped_mm_forward(spec, w, x, ids, tw):
    """y (T, H) with torch._grouped_mm; no host synchronization (counts by scatter_add_, not bincount)."""
    T, k, I, E = ids.shape[0], spec.top_k, spec.intermediate_size, spec.num_experts
    flat = ids.reshape(-1).long()
    order = torch.argsort(flat, stable=True)
    counts = torch.zeros(E, dtype=torch.int32, device=x.device).scatter_add_(
        0, flat, torch.ones_like(ids).view(-1)
    )
    offs = torch.cumsum(counts, 0, dtype=torch.int32)
    h = torch._grouped_mm(x[order // k], w.w13.transpose(1, 2), offs=offs)
    e_sorted = flat[order]
    if w.b13 is not None:
        h = h + w.b13[e_sorted]
    if spec.activation == "swiglu_oai":
        g, u = (h[:, 0::2], h[:, 1::2]) if spec.w13_layout == "interleaved" else (h[:, :I], h[:, I:])
        g, u = g.clamp(max=spec.swiglu_limit), u.clamp(-spec.swiglu_limit, spec.swiglu_limit)
        a = ((u + 1) * g * torch.sigmoid(spec.swiglu_alpha * g)).to(x.dtype)
    else:
        a = torch.nn.functional.silu(h[:, :I]) * h[:, I:]
    o = torch._grouped_mm(a, w.w2.transpose(1, 2), offs=offs)
    if w.b2 is not None:
        o = o + w.b2[e_sorted]
    y = torch.zeros((T, spec.hidden_size), dtype=torch.float32, device=x.device)
    y.index_add_(0, order // k, o.float() * tw.reshape(-1)[order, None])
    return y.to(x.dtype)


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    """||y - ref|| / ||ref|| in float64; inf when ref is zero or anything is not finite."""
    n = float(ref.double().norm())
    d = float((y.double() - ref.double()).norm())
    v = d / n if n > 0 else math.inf
    return v if math.isfinite(v) else math.inf


def forwards(ctx, spec, w, x, ids, tw, routing_obj, zipf: bool) -> dict:
    """{path: zero-argument forward} for one point (module docstring)."""
    import moe_cts.kernels as K

    fns = {"ours": lambda: K.fused_moe(spec, w, x, routing=routing_obj)}
    if not zipf:  # the router would not produce Zipf ids: ours_router only at router points
        fns["ours_router"] = lambda: K.fused_moe(spec, w, x)
    if ctx.peer is not None:
        act = "swigluoai" if spec.activation == "swiglu_oai" else "silu"
        vp = ctx.peer
        fns["vllm"] = lambda: vp.vllm_forward(
            x, w.w13, w.w2, ids, tw, tuned=True, b13=w.b13, b2=w.b2, activation=act
        )
    if hasattr(torch, "_grouped_mm"):
        fns["gmm"] = lambda: grouped_mm_forward(spec, w, x, ids, tw)
    return fns


def _err(exc: BaseException) -> str:
    traceback.print_exc(file=sys.stderr)
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]


def time_path(fn, ref: torch.Tensor | None, timer: Timer) -> tuple[dict, torch.Tensor | None]:
    """Run, check against ref (None: fn is ours itself), time: ({"ms", "check_rel", "error", ...}, output).
    On the CPU the checked call is the timed one (the interpreter is slow; the time means nothing)."""
    rec: dict = {"ms": None, "error": None}
    y = None
    try:
        y, once = timer.once(fn)
        if ref is None:
            ok = bool(torch.isfinite(y).all()) and float(y.double().norm()) > 0
            rec["check"] = "finite and nonzero" if ok else "FAILED: ours is not finite or is all zero"
        else:
            rec["check_rel"] = rel_err(y, ref)
            ok = rec["check_rel"] <= MAX_REL
        if not ok:
            rec["error"] = f"output check failed ({rec.get('check_rel', rec.get('check'))}): not timed"
            return rec, y
        rec.update(once if timer.cpu else timer(fn))
    except Exception as exc:  # one path that cannot run here leaves a gap, not a stopped table
        rec["error"] = _err(exc)
    return rec, y


def time_graph(fn, ref: torch.Tensor, timer: Timer) -> dict:
    """One fn() captured in a CUDA graph; the static output is NaN-filled, replayed, checked, then replays timed."""
    rec: dict = {"ms": None, "error": None}
    graph = None
    try:
        graph, out = capture_graph(fn)
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        rec["check_rel"] = rel_err(out, ref)
        if rec["check_rel"] > MAX_REL:
            rec["error"] = f"replay output check failed (rel {rec['check_rel']:.2e}): not timed"
        else:
            rec.update(timer(graph.replay))
    except Exception as exc:
        rec["error"] = "graph: " + _err(exc)
    finally:
        del graph
        torch.cuda.synchronize()
    return rec


def run_paths(ctx, fns: dict) -> dict:
    """{path: record} eager, then {path + "_graph": record} on a GPU (skipped with a reason on the CPU)."""
    recs: dict = {}
    recs["ours"], ref = time_path(fns["ours"], None, ctx.timer)
    if recs["ours"]["error"]:  # nothing to check the others against
        return {"ours": recs["ours"]}
    for name, fn in fns.items():
        if name != "ours":
            recs[name] = time_path(fn, ref, ctx.timer)[0]
    for name, fn in fns.items():
        if ctx.timer.cpu or ctx.no_graph:
            recs[name + "_graph"] = {"ms": None, "error": None, "skipped": "no CUDA graphs on the CPU smoke run"
                                     if ctx.timer.cpu else "--no-graph"}  # fmt: skip
        elif recs[name]["error"]:
            recs[name + "_graph"] = {"ms": None, "error": None, "skipped": "eager path failed"}
        else:
            recs[name + "_graph"] = time_graph(fn, ref, ctx.timer)
    return recs
