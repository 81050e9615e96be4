"""Where the forward's time goes, and tile candidates for the quantized paths (a GPU diagnostic, not a test).

    python ci/gpu/perf_probe.py --out DIR [--parts profile,fp8,mxfp4,bf16]

profile   torch.profiler (CUPTI kernel records) of eager calls, per kernel mean device microseconds:
          route() at T = 1 for the wide-E presets; the ids-given bf16 forward where vLLM led in session 6
          (Qwen2-57B / Qwen3-235B / Mixtral T = 512, DeepSeek-V3 T = 2048); the fp8 and MXFP4 forwards at
          decode and at T = 4096
fp8       block fp8 at DeepSeek-V3 width, ids given: the table's row and candidates per T (CUDA-graph
          replays, do_bench median, L2 flushed; our bf16 path in the same run)
mxfp4     the same for gpt-oss-120b MXFP4 (tiles, decodes, dot_scaled)
fill      the sm90 table's fill rule at T = 1 (bf16, five presets) and MXFP4 T = 1 / 16, against the row as written
fp8dec    block fp8 at T = 1 / 16 / 128 with gate_up BLOCK_N 128 (act quantized in GEMM1's epilogue)
bf16      the 16-bit forward at the mid-size points under the table row and BLOCK_M 128 candidates
          (sm90-only 4-stage tiles included: recorded as such, not for the shared cuda table)
stages8   the fp8 decode row at 5 / 4 / 3 stages against its 6 (DeepSeek-V3 with its shared expert, T = 1 / 16 /
          128), the bf16 row at 3 stages in the same run
stages16  the 16-bit decode row at 2 and 3 pipeline stages against its 4 (five peer presets, T = 1 / 16)
side10    the shared expert on a side branch of the captured graph against the serial order (DeepSeek-V3
          block fp8 / bf16, Qwen2-57B bf16, T = 1 / 16 / 128), outputs compared bitwise
fill10    the fill rule's warps and the rule past its bucket (shared experts), block fp8 / bf16 DeepSeek-V3
          and bf16 Qwen2-57B at T = 1 .. 512
ab8       the block fp8 half of ab (T = 1 / 16 / 128 / 512 / 4096), with each kernel of one T = 1 forward
ab        the GEMM kernels against a baseline copy of their modules (--baseline DIR holding
          old_grouped_gemm_kernels.py / old_fp8_gemm_kernels.py, e.g. `git show REV:kernels/...`), in one
          process: outputs bitwise equal? graph-replay times of both (bf16 presets and block fp8, ids given)
decode    T = 1 with the router: CUPTI kernel records of the whole forward per preset, and the one-program
          alignment alone (graph replays) under each warp count
sweep90   sm90-only tiles (shared memory over sm80's 163 KiB) for the BLOCK_M 128 row at T = 2048 / 4096
bf16dec   the 16-bit decode row against narrower / deeper tiles at T = 1
dec10     decode launches (session 10): each kernel of one forward in launch order (block fp8 and bf16
          DeepSeek-V3, MXFP4 gpt-oss-120b, T = 1), graph replays of the table against the shared expert's
          metadata built by launches (the old dense_meta), the fill rule down to BLOCK_N 16, and fp8 decode
          tiles (T = 1 / 16); fp8 kernel records at T = 4096
tma11     weight tiles through tensor descriptors (TMA) against the table's pointer loads: bf16 peer presets and
          block fp8 DeepSeek-V3 at T = 1 .. 4096, outputs compared bitwise
fp8s11    block fp8 with scalar weight scales per tile half (the table) against pointer loads and BLOCK_M 128
          tiles, DeepSeek-V3 with its shared expert at T = 1 .. 4096, bf16 in the same run
pers12    persistent GEMMs (GemmTile.persistent 1 / 2 programs per SM, both GEMMs or GEMM2 alone) against the
          table's one program per tile: bf16 peer presets at T = 128 .. 4096, block fp8 DeepSeek-V3 at T = 128 /
          512 / 4096, outputs compared bitwise
pair12    block fp8 GEMM1 tiles of 64 columns in pairs (activation quantized in GEMM1's epilogue) against
          unpaired ones, DeepSeek-V3 at T = 128 .. 4096; pers12's winners re-timed (Qwen2-57B, Qwen3-235B-like)
dec16     after Nsight Compute (session 16): block fp8 decode GEMM2 tiles that fill whole waves, wider GEMM1
          tiles (T = 1 / 16), and the m > 32 row with 8 warps (T = 4096); DeepSeek-V3 with its shared expert
slot16    one token without the alignment launch (align.slot_meta) against align's launch: bf16 peer presets,
          block fp8 DeepSeek-V3, MXFP4 gpt-oss-120b at T = 1
down16    block fp8 GEMM2 with 8 warps in the m > 32 row at T = 2048 / 4096
router17  the router's logits split at T = 1 / 16 (one or two dot steps per split, 32-expert tiles) against the
          table's, with / without the router beside the ids-given forward, the five peer presets
drop18    upper bounds of launch fusion at T = 1 / 16: the forward with the combine (block fp8: and the quantize
          launches) replaced by no-ops, bf16 peer presets, block fp8 DeepSeek-V3, MXFP4 gpt-oss-120b
hw18      the fp8 rounding left to the store's cast (CUDA sm89+) against the arithmetic rounding, block fp8
          DeepSeek-V3 with its shared expert at T = 1 .. 4096 (bf16 in the same rounds)
dec18     one token: narrower combine programs, and block fp8 GEMM1 BLOCK_N 64 at 4 warps in the decode row
router    the fused select against the separate select launch (graph replays of route and of the forward
          with the router, against the ids-given forward; routing outputs compared)

Every record is one JSON line in DIR/probe.jsonl; a compact table goes to stdout at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib.util
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from unittest import mock

import torch
import triton
import triton.language as tl

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "bench")]

from bench_timing import Timer, capture_graph  # noqa: E402
from quant_bench import _base, quantized, routing  # noqa: E402
from tune import routed  # noqa: E402

import moe_cts.kernels  # noqa: E402
from moe_cts.kernels import fused_moe  # noqa: E402
from moe_cts.kernels.config import last_config  # noqa: E402
from moe_cts.kernels.mxfp4_pack import tile_major  # noqa: E402
from moe_cts.reference import presets  # noqa: E402
from moe_cts.reference.quant import QuantScheme  # noqa: E402

OUT: list[dict] = []
LOG = None


def emit(rec: dict) -> None:
    OUT.append(rec)
    LOG.write(json.dumps(rec) + "\n")
    LOG.flush()
    print(json.dumps(rec)[:400], flush=True)


def _device_us(e) -> float:
    return getattr(e, "device_time", None) or getattr(e, "cuda_time", 0.0)


def _kernel_events(fn, iters: int) -> list:
    """The CUPTI kernel records of iters eager calls of fn (after one warm call), in launch order."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    ev = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA and _device_us(e)]
    return sorted(ev, key=lambda e: e.time_range.start)


def kernel_us(fn, iters: int = 20) -> dict[str, float]:
    """Mean device microseconds per call of each kernel fn launches (eager; CUPTI records)."""
    out: dict[str, float] = defaultdict(float)
    for e in _kernel_events(fn, iters):
        out[e.name[:60]] += _device_us(e) / iters
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def c(bm, gu, dn, **kw):
    """A forced config: BLOCK_M, the two GEMM tiles, and (MXFP4) decode / dot keys."""
    return {"BLOCK_M": bm, "gate_up": gu, "down": dn, **kw}


def tile(bn, bk, w, st, gm=8):
    return {"BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": gm, "num_warps": w, "num_stages": st}


def replay_ms(timer, fn) -> float:
    g = capture_graph(fn)
    try:
        return timer(g[0].replay)["ms"]
    finally:
        del g


def bf16_inputs(name: str, T: int, gen):
    spec = routed(name)
    base = _base(spec, torch.bfloat16, "cuda", gen)
    x = torch.randn((T, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
    return spec, base, x


def _profile_route(timer, name, gen) -> None:
    spec, base, x = bf16_inputs(name, 1, gen)
    r = routing(spec, 1, "cuda", gen)
    emit({"part": "profile", "what": "route", "preset": name, "T": 1,
          "kernels": kernel_us(lambda: moe_cts.kernels.route(spec, base, x)),
          "route_graph_ms": replay_ms(timer, lambda: moe_cts.kernels.route(spec, base, x)),
          "fwd_ids_graph_ms": replay_ms(timer, lambda: fused_moe(spec, base, x, routing=r)),
          "fwd_router_graph_ms": replay_ms(timer, lambda: fused_moe(spec, base, x))})  # fmt: skip


def _profile_fwd(timer, what, name, T, spec, weights, x, r) -> None:
    def fn():
        return fused_moe(spec, weights, x, routing=r)

    k = kernel_us(fn)
    emit({"part": "profile", "what": what, "preset": name, "T": T, "kernels": k, "sum_us": sum(k.values()),
          "graph_ms": replay_ms(timer, fn), "config": last_config().to_dict()})  # fmt: skip


def part_profile(timer) -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    for name in ("deepseek-v3", "E128k8H4096I1536", "gpt-oss-120b"):
        _profile_route(timer, name, gen)
    for name, T in (
        ("qwen2-57b-a14b", 512),
        ("E128k8H4096I1536", 512),
        ("mixtral-8x7b", 512),
        ("deepseek-v3", 2048),
    ):
        spec, base, x = bf16_inputs(name, T, gen)
        _profile_fwd(timer, "bf16 fwd ids", name, T, spec, base, x, routing(spec, T, "cuda", gen))
        base = None  # the next preset's weights need the memory
    for name, scheme, Ts in (
        ("deepseek-v3", QuantScheme.fp8_block(), (1, 4096)),
        ("gpt-oss-120b", QuantScheme.mxfp4(), (1, 16, 4096)),
    ):
        spec = presets.get(name)
        qspec = spec.replace(quant=scheme)
        qw = quantized(qspec, _base(spec, torch.bfloat16, "cuda", gen), gen)
        for T in Ts:
            x = torch.randn((T, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
            _profile_fwd(
                timer, f"{scheme.method} fwd ids", name, T, qspec, qw, x, routing(spec, T, "cuda", gen)
            )
        qw = None


def sweep(part, timer, spec, qspec, weights_b, weights_q, T, cands, gen) -> None:
    x = torch.randn((T, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
    r = routing(spec, T, "cuda", gen)
    bf = replay_ms(timer, lambda: fused_moe(spec, weights_b, x, routing=r))
    q = replay_ms(timer, lambda: fused_moe(qspec, weights_q, x, routing=r))
    emit({"part": part, "T": T, "cfg": "table", "ms": q, "bf16_ms": bf, "speedup": bf / q,
          "table": last_config().to_dict() if hasattr(last_config(), "to_dict") else None})  # fmt: skip
    ref = fused_moe(qspec, weights_q, x, routing=r)
    for cfg in cands:
        rec = {"part": part, "T": T, "cfg": cfg, "bf16_ms": bf}
        try:
            y = fused_moe(qspec, weights_q, x, routing=r, config=cfg)
            # same inputs, another tile: must agree to the quantized path's own rounding, never be wild
            rec["rel_diff"] = float((y.float() - ref.float()).norm() / ref.float().norm().clamp(min=1e-30))
            rec["ms"] = replay_ms(
                timer, lambda cfg=cfg: fused_moe(qspec, weights_q, x, routing=r, config=cfg)
            )
            rec["speedup"] = bf / rec["ms"]
        except Exception as e:  # a config that does not compile or fit is recorded, the sweep goes on
            rec["error"] = f"{type(e).__name__}: {str(e)[:200]}"
        emit(rec)


def _quant_preset(name: str, scheme):
    """(spec, quantized spec, generator, bf16 weights, quantized weights) of a full-size preset on the GPU."""
    spec = presets.get(name)
    qspec = spec.replace(quant=scheme)
    gen = torch.Generator(device="cuda").manual_seed(0)
    base = _base(spec, torch.bfloat16, "cuda", gen)
    return spec, qspec, gen, base, quantized(qspec, base, gen)


def part_fp8(timer) -> None:
    """Block fp8 tiles for the one-dot gate_up kernel (session 8): its B tile is twice BLOCK_N wide."""
    spec, qspec, gen, base, qw = _quant_preset("deepseek-v3", QuantScheme.fp8_block())

    cands = {
        4096: [c(128, tile(64, 128, 8, 4), tile(128, 128, 8, 4)), c(128, tile(64, 128, 8, 5), tile(128, 128, 8, 5)),
               c(64, tile(128, 128, 8, 3), tile(128, 128, 4, 4)), c(64, tile(64, 128, 4, 6), tile(128, 128, 4, 6)),
               c(64, tile(64, 128, 4, 4), tile(128, 128, 8, 4)), c(128, tile(32, 128, 4, 4), tile(64, 128, 4, 4))],
        512: [c(32, tile(64, 128, 4, 4), tile(128, 128, 4, 4)), c(32, tile(128, 128, 4, 5), tile(128, 128, 4, 5)),
              c(64, tile(64, 128, 4, 4), tile(128, 128, 4, 4))],
        1: [c(16, tile(16, 128, 4, 6, 1), tile(64, 128, 4, 6, 1)), c(16, tile(64, 128, 4, 6, 1), tile(64, 128, 4, 6, 1)),
            c(16, tile(32, 128, 2, 6, 1), tile(32, 128, 2, 6, 1)), c(16, tile(32, 128, 4, 4, 1), tile(32, 128, 4, 4, 1))],
    }  # fmt: skip
    for T, cs in cands.items():
        sweep("fp8", timer, spec, qspec, base, qw, T, cs, gen)


def part_mxfp4(timer) -> None:
    spec, qspec, gen, base, qw = _quant_preset("gpt-oss-120b", QuantScheme.mxfp4())

    small = [
        c(16, tile(32, 128, 4, 4, 1), tile(32, 128, 4, 4, 1)),
        c(16, tile(32, 128, 4, 6, 1), tile(64, 128, 4, 6, 1)),
        c(16, tile(32, 256, 4, 3, 1), tile(64, 256, 4, 3, 1)),
        c(16, tile(64, 128, 8, 4, 1), tile(64, 128, 8, 4, 1)),
        c(16, tile(32, 128, 2, 6, 1), tile(32, 128, 2, 6, 1)),
        c(16, tile(64, 256, 8, 3, 1), tile(128, 256, 8, 3, 1)),
        c(16, tile(32, 128, 4, 4, 1), tile(64, 128, 4, 4, 1), dot="dot_scaled"),
        c(16, tile(64, 128, 4, 4, 1), tile(64, 128, 4, 4, 1), dot="dot_scaled"),
        c(16, tile(32, 128, 4, 4, 1), tile(64, 128, 4, 4, 1), decode="native"),
    ]
    large = [
        c(64, tile(64, 128, 4, 4), tile(128, 128, 4, 4)),
        c(64, tile(64, 128, 8, 3), tile(128, 128, 8, 3)),
        c(128, tile(64, 128, 8, 3), tile(128, 128, 8, 3)),
        c(64, tile(64, 128, 4, 4), tile(128, 128, 4, 4), dot="dot_scaled"),
        c(128, tile(128, 128, 8, 3), tile(128, 128, 8, 3), dot="dot_scaled"),
    ]
    for T, cs in ((1, small), (16, small), (4096, large)):
        sweep("mxfp4", timer, spec, qspec, base, qw, T, cs, gen)


def part_fp8dec(timer) -> None:
    """Block fp8 at decode sizes (DeepSeek-V3, T = 1 / 16 / 128: one table bucket): gate_up BLOCK_N 128 lets
    GEMM1's epilogue quantize the act per 128-group (no fp32 act workspace, no second quantize launch), against
    the table's BLOCK_N 32 row; kernel records of both at T = 1."""
    spec, qspec, gen, base, qw = _quant_preset("deepseek-v3", QuantScheme.fp8_block())
    cands = [
        c(16, tile(128, 128, 4, 4, 1), tile(64, 128, 4, 6, 1)),
        c(16, tile(128, 128, 4, 5, 1), tile(64, 128, 4, 6, 1)),
        c(16, tile(128, 128, 8, 4, 1), tile(64, 128, 4, 6, 1)),
        c(16, tile(128, 128, 4, 3, 1), tile(32, 128, 2, 6, 1)),
        c(16, tile(32, 128, 2, 6, 1), tile(32, 128, 2, 6, 1)),
    ]
    for T in (1, 16, 128):
        sweep("fp8dec", timer, spec, qspec, base, qw, T, cands, gen)
    x = torch.randn((1, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
    r = routing(spec, 1, "cuda", gen)
    for cfg in (None, cands[0]):
        emit({"part": "profile", "what": f"fp8 {'table' if cfg is None else 'BN128'}", "preset": "deepseek-v3",
              "T": 1, "cfg": cfg, "kernels": kernel_us(lambda cfg=cfg, x=x, r=r: fused_moe(qspec, qw, x, routing=r, config=cfg))})  # fmt: skip


def part_bf16(timer) -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)

    cands = [
        c(128, tile(128, 64, 8, 3), tile(128, 64, 8, 3)),  # the cuda table's large row
        c(128, tile(64, 64, 8, 4), tile(128, 64, 8, 4)),
        c(128, tile(128, 64, 8, 4), tile(256, 64, 8, 4)),  # vLLM's H200 row shape (sm90 smem only)
        c(64, tile(128, 64, 8, 4), tile(128, 64, 8, 4)),
        c(128, tile(64, 64, 4, 4), tile(128, 64, 4, 4)),
    ]
    for name, T in (("qwen2-57b-a14b", 512), ("E128k8H4096I1536", 512), ("mixtral-8x7b", 512),
                    ("qwen2-57b-a14b", 2048), ("deepseek-v3", 2048)):  # fmt: skip
        _bf16_point(timer, name, T, cands, gen)


def _bf16_point(timer, name, T, cands, gen) -> None:
    spec, base, x = bf16_inputs(name, T, gen)
    r = routing(spec, T, "cuda", gen)
    ms = replay_ms(timer, lambda: fused_moe(spec, base, x, routing=r))
    emit({"part": "bf16", "preset": name, "T": T, "cfg": "table", "ms": ms, "table": last_config().to_dict()})
    for cfg in cands:
        rec = {"part": "bf16", "preset": name, "T": T, "cfg": cfg, "table_ms": ms}
        try:
            rec["ms"] = replay_ms(timer, lambda cfg=cfg: fused_moe(spec, base, x, routing=r, config=cfg))
            rec["vs_table"] = ms / rec["ms"]
        except Exception as e:
            rec["error"] = f"{type(e).__name__}: {str(e)[:200]}"
        emit(rec)


PEER_PRESETS = ("mixtral-8x7b", "qwen2-57b-a14b", "deepseek-v3", "E128k8H4096I1536", "gpt-oss-120b")


@contextlib.contextmanager
def _baseline_kernels(base_dir: Path):
    """The launchers' kernel modules swapped for the baseline copies (same signatures) inside the block."""
    from moe_cts.kernels import fp8_gemm, grouped_gemm

    mods = {}
    for name in ("old_grouped_gemm_kernels", "old_fp8_gemm_kernels"):
        spec = importlib.util.spec_from_file_location(name, base_dir / f"{name}.py")
        mods[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mods[name])
    saved = grouped_gemm.K, fp8_gemm.K
    grouped_gemm.K, fp8_gemm.K = mods["old_grouped_gemm_kernels"], mods["old_fp8_gemm_kernels"]
    try:
        yield
    finally:
        grouped_gemm.K, fp8_gemm.K = saved


def _ab_point(timer, part, name, T, spec, weights, x, r, base_dir) -> None:
    def fn():
        return fused_moe(spec, weights, x, routing=r)

    new = fn()
    cfg = last_config().to_dict()
    ms_new = replay_ms(timer, fn)
    with _baseline_kernels(base_dir):
        old = fn()
        ms_old = replay_ms(timer, fn)
    same = bool(torch.equal(new.view(torch.int16), old.view(torch.int16)))
    emit({"part": part, "preset": name, "T": T, "bitwise_equal": same, "ms": ms_new, "baseline_ms": ms_old,
          "speedup": ms_old / ms_new, "max_abs_diff": float((new.float() - old.float()).abs().max()),
          "config": cfg})  # fmt: skip


def part_ab(timer, base_dir: Path) -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    for name in PEER_PRESETS:
        spec = routed(name)
        base = _base(spec, torch.bfloat16, "cuda", gen)
        for T in (1, 16, 512, 2048, 4096):
            x = torch.randn((T, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
            _ab_point(timer, "ab-bf16", name, T, spec, base, x, routing(spec, T, "cuda", gen), base_dir)
        base = None
        torch.cuda.empty_cache()
    part_ab8(timer, base_dir, tokens=(1, 16, 512, 4096))


def part_ab8(timer, base_dir: Path, tokens=(1, 16, 128, 512, 4096)) -> None:
    """The block fp8 half of part ab: DeepSeek-V3 with its shared expert, ids given; at T = 1 also each
    kernel of one forward under both modules."""
    spec, qspec, gen, base, qw = _quant_preset("deepseek-v3", QuantScheme.fp8_block())
    del base  # the bf16 weights are not timed here; their memory goes back
    for T in tokens:
        x = torch.randn((T, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
        r = routing(spec, T, "cuda", gen)
        _ab_point(timer, "ab-fp8", "deepseek-v3", T, qspec, qw, x, r, base_dir)
        if T == 1:
            fwd = lambda x=x, r=r: fused_moe(qspec, qw, x, routing=r)
            rec = {"part": "dec10", "kind": "fp8", "preset": "deepseek-v3", "T": 1, "cfg": "new kernels"}
            emit({**rec, "ms": replay_ms(timer, fwd), "launches": _launches(fwd)})
            with _baseline_kernels(base_dir):
                emit(
                    {
                        **rec,
                        "cfg": "baseline kernels",
                        "ms": replay_ms(timer, fwd),
                        "launches": _launches(fwd),
                    }
                )


def _decode_point(timer, name, gen) -> None:
    align_mod = importlib.import_module("moe_cts.kernels.align")  # the module: kernels.align is the function

    spec, base, x = bf16_inputs(name, 1, gen)
    r = routing(spec, 1, "cuda", gen)
    emit({"part": "decode", "what": "fwd router", "preset": name, "T": 1,
          "kernels": kernel_us(lambda: fused_moe(spec, base, x)),
          "fwd_ids_graph_ms": replay_ms(timer, lambda: fused_moe(spec, base, x, routing=r)),
          "fwd_router_graph_ms": replay_ms(timer, lambda: fused_moe(spec, base, x)),
          "route_graph_ms": replay_ms(timer, lambda: moe_cts.kernels.route(spec, base, x))})  # fmt: skip
    bm = last_config().BLOCK_M
    saved = align_mod._one_chunk_tiles, align_mod.ONE_CHUNK_WARPS
    try:
        for label, warps, old in (("old 128/1024 w8", 8, True), ("w1", 1, False), ("w2", 2, False),
                                  ("w4", 4, False), ("w8", 8, False)):  # fmt: skip
            align_mod.ONE_CHUNK_WARPS = warps
            align_mod._one_chunk_tiles = (lambda n, p, t: (t[1], t[2], 8)) if old else saved[0]
            ms = replay_ms(timer, lambda: moe_cts.kernels.align(spec, r.topk_ids, bm))
            emit({"part": "decode", "what": f"align {label}", "preset": name, "T": 1, "ms": ms})
    finally:
        align_mod._one_chunk_tiles, align_mod.ONE_CHUNK_WARPS = saved


def _router_ab_point(timer, name, T, gen) -> None:
    router_mod = importlib.import_module("moe_cts.kernels.router")
    spec, base, x = bf16_inputs(name, T, gen)
    r = routing(spec, T, "cuda", gen)
    rec = {"part": "router-ab", "preset": name, "T": T,
           "ids_ms": replay_ms(timer, lambda: fused_moe(spec, base, x, routing=r))}  # fmt: skip
    saved = router_mod.FUSED_SELECT
    try:
        outs = {}
        for fused in (True, False):
            router_mod.FUSED_SELECT = fused
            outs[fused] = moe_cts.kernels.route(spec, base, x)
            rec[f"fwd_ms_{'fused' if fused else 'separate'}"] = replay_ms(
                timer, lambda: fused_moe(spec, base, x)
            )
            rec[f"route_ms_{'fused' if fused else 'separate'}"] = replay_ms(
                timer, lambda: moe_cts.kernels.route(spec, base, x)
            )
        a, b = outs[True], outs[False]
        rec["ids_equal"] = bool(torch.equal(a.topk_ids, b.topk_ids))
        rec["logits_equal"] = bool(torch.equal(a.logits, b.logits))
        rec["w_max_rel"] = float(((a.topk_weights - b.topk_weights).abs() / b.topk_weights.abs()).max())
    finally:
        router_mod.FUSED_SELECT = saved
    for k in ("fused", "separate"):
        rec[f"overhead_{k}"] = rec[f"fwd_ms_{k}"] / rec["ids_ms"] - 1
    emit(rec)


def part_router(timer) -> None:
    """The fused select against the separate launch, same process: graph replays and their outputs."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    for name in PEER_PRESETS:
        for T in (1, 16, 512):
            _router_ab_point(timer, name, T, gen)
        torch.cuda.empty_cache()


def part_decode(timer) -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    for name in PEER_PRESETS:
        _decode_point(timer, name, gen)
        torch.cuda.empty_cache()


def part_bf16dec(timer) -> None:
    """The 16-bit decode row (m <= 8) against narrower / deeper tiles at T = 1 (the one-dot gate_up)."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    cands = [
        c(16, tile(32, 128, 4, 4, 1), tile(64, 128, 4, 4, 1)),
        c(16, tile(32, 128, 4, 4, 1), tile(32, 128, 4, 4, 1)),
        c(16, tile(64, 128, 4, 3, 1), tile(64, 128, 4, 3, 1)),
        c(16, tile(32, 256, 4, 3, 1), tile(64, 256, 4, 3, 1)),
        c(16, tile(64, 128, 4, 6, 1), tile(64, 128, 4, 6, 1)),
    ]
    for name in PEER_PRESETS:
        _bf16_point(timer, name, 1, cands, gen)
        torch.cuda.empty_cache()


def part_fill(timer) -> None:
    """The sm90 table's fill rule (config.fill_grid) at T = 1: the heuristic's choice ("table", BLOCK_N halved
    where the grid is under 2 programs per SM) against the m <= 8 row as written (BLOCK_N 64 in both GEMMs)
    and the 32-wide tiles, bf16 on the five peer presets and MXFP4 gpt-oss-120b (T = 1 and 16)."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    row = c(16, tile(64, 128, 4, 4, 1), tile(64, 128, 4, 4, 1))
    cands = [
        row,
        c(16, tile(32, 128, 4, 4, 1), tile(64, 128, 4, 4, 1)),
        c(16, tile(32, 128, 4, 4, 1), tile(32, 128, 4, 4, 1)),
    ]
    for name in PEER_PRESETS:
        _bf16_point(timer, name, 1, cands, gen)
        torch.cuda.empty_cache()
    spec, qspec, gen, base, qw = _quant_preset("gpt-oss-120b", QuantScheme.mxfp4())
    for T in (1, 16):
        sweep("fill-mxfp4", timer, spec, qspec, base, qw, T, cands, gen)


def part_sweep90(timer) -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    cands = [
        c(128, tile(128, 64, 8, 4), tile(128, 64, 8, 4)),
        c(128, tile(128, 64, 8, 4), tile(256, 64, 8, 4)),
        c(128, tile(64, 64, 8, 5), tile(256, 64, 8, 4)),
        c(128, tile(128, 64, 8, 5), tile(256, 64, 8, 3)),
        c(128, tile(64, 64, 4, 5), tile(128, 64, 4, 5)),
    ]
    for T in (4096, 2048):
        for name in PEER_PRESETS:
            _bf16_point(timer, name, T, cands, gen)
            torch.cuda.empty_cache()


def _launches(fn, iters: int = 5) -> list[list]:
    """Each kernel of one call of fn, in launch order: [name, device us, us since the previous kernel's end]."""
    ev = _kernel_events(fn, iters)
    out, end = [], None
    for e in ev[-(len(ev) // iters) :]:  # the last call's kernels
        gap = 0.0 if end is None else e.time_range.start - end
        out.append([e.name[:40], round(_device_us(e), 2), round(gap, 2)])
        end = e.time_range.end
    return out


@contextlib.contextmanager
def _fill_rule(**keys):
    """The sm90 table's fill rule with `keys` replaced inside the block (the cached table dict, restored after)."""
    from moe_cts.kernels import config as cfgmod

    rule = cfgmod.load_table("cuda-sm90")["fill"]
    old = dict(rule)
    rule.update(keys)
    try:
        yield
    finally:
        rule.clear()
        rule.update(old)


@contextlib.contextmanager
def _old_dense_meta():
    """dense_meta built by launches (session 9's five tiny kernels) inside the block."""
    import moe_cts.kernels.grouped_gemm as gg

    keep = gg._dense_slots
    gg._dense_slots = lambda P, device: None
    try:
        yield
    finally:
        gg._dense_slots = keep


def part_dec10(timer) -> None:
    spec, qspec, gen, base, qw = _quant_preset("deepseek-v3", QuantScheme.fp8_block())
    fp8_cands = [
        c(16, tile(32, 128, 2, 8, 1), tile(32, 128, 2, 8, 1)),
        c(16, tile(32, 128, 1, 6, 1), tile(32, 128, 1, 6, 1)),
        c(16, tile(32, 128, 2, 4, 1), tile(32, 128, 2, 4, 1)),
        c(16, tile(16, 128, 2, 8, 1), tile(32, 128, 2, 8, 1)),
    ]
    for T in (1, 16):
        x = torch.randn((T, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
        r = routing(spec, T, "cuda", gen)
        for kind, sp, w in (("fp8", qspec, qw), ("bf16", spec, base)):

            def fwd(cfg=None, sp=sp, w=w, x=x, r=r):
                return fused_moe(sp, w, x, routing=r, config=cfg)

            rec = {"part": "dec10", "kind": kind, "preset": "deepseek-v3", "T": T, "cfg": "table"}
            rec["ms"] = replay_ms(timer, fwd)
            rec["table"] = last_config().to_dict()
            if T == 1:
                rec["launches"] = _launches(fwd)
            emit(rec)
            with _old_dense_meta():
                emit({"part": "dec10", "kind": kind, "preset": "deepseek-v3", "T": T, "cfg": "old dense_meta",
                      "ms": replay_ms(timer, fwd), "table_ms": rec["ms"]})  # fmt: skip
            with _fill_rule(min_block_n=16):
                ms = replay_ms(timer, fwd)
                emit({"part": "dec10", "kind": kind, "preset": "deepseek-v3", "T": T, "cfg": "fill min 16",
                      "ms": ms, "table_ms": rec["ms"], "vs_table": rec["ms"] / ms,
                      "launches": _launches(fwd) if T == 1 else None})  # fmt: skip
            for cfg in fp8_cands if kind == "fp8" else ():
                r2 = {
                    "part": "dec10",
                    "kind": kind,
                    "preset": "deepseek-v3",
                    "T": T,
                    "cfg": cfg,
                    "table_ms": rec["ms"],
                }
                try:
                    r2["ms"] = replay_ms(timer, lambda cfg=cfg: fwd(cfg))
                    r2["vs_table"] = rec["ms"] / r2["ms"]
                except Exception as e:
                    r2["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                emit(r2)
    x = torch.randn((4096, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
    r = routing(spec, 4096, "cuda", gen)
    emit({"part": "profile", "what": "fp8 T=4096", "preset": "deepseek-v3", "T": 4096,
          "kernels": kernel_us(lambda: fused_moe(qspec, qw, x, routing=r), iters=5)})  # fmt: skip
    base = qw = None
    torch.cuda.empty_cache()
    spec, qspec, gen, base, qw = _quant_preset("gpt-oss-120b", QuantScheme.mxfp4())
    x = torch.randn((1, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
    r = routing(spec, 1, "cuda", gen)
    for kind, sp, w in (("mxfp4", qspec, qw), ("bf16", spec, base)):
        fwd = lambda sp=sp, w=w: fused_moe(sp, w, x, routing=r)
        emit({"part": "dec10", "kind": kind, "preset": "gpt-oss-120b", "T": 1, "cfg": "table",
              "ms": replay_ms(timer, fwd), "launches": _launches(fwd)})  # fmt: skip


def _variants(timer, rec: dict, fwd, variants: dict, ctx, launches=()) -> None:
    """One record per variant: fwd's graph-replay ms under `ctx(**keys)`, vs_table = the first variant's ms over
    this one's; kernel records for the labels in `launches`. A variant that fails is recorded, the rest run."""
    table_ms = None
    for label, keys in variants.items():
        with ctx(**keys):
            r = {**rec, "cfg": label}
            try:
                r["ms"] = replay_ms(timer, fwd)
                r["config"] = last_config().to_dict()
                table_ms = table_ms or r["ms"]
                r["vs_table"] = table_ms / r["ms"]
                if label in launches:
                    r["launches"] = _launches(fwd)
            except Exception as e:
                r["error"] = f"{type(e).__name__}: {str(e)[:200]}"
            emit(r)


FILL10 = {
    "table": {},
    "no warps": {"max_warps": 0},
    "any bucket": {"max_tokens_per_expert": 1_000_000},
    "any bucket, 8 warps/SM": {"max_tokens_per_expert": 1_000_000, "warps_per_sm": 8},
}


def part_fill10(timer) -> None:
    """The fill rule's warps (session 10) and the rule past its bucket (the shared expert's one-expert GEMMs at
    T = 16 .. 512): graph replays of block fp8 and bf16 DeepSeek-V3 with its shared expert, and bf16
    Qwen2-57B (shared width 20480), under each FILL10 variant; kernel records at T = 1."""
    spec, qspec, gen, base, qw = _quant_preset("deepseek-v3", QuantScheme.fp8_block())
    for T in (1, 16, 128, 512):
        x = torch.randn((T, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
        r = routing(spec, T, "cuda", gen)
        for kind, sp, w in (("fp8", qspec, qw), ("bf16", spec, base)):
            fwd = lambda sp=sp, w=w, x=x, r=r: fused_moe(sp, w, x, routing=r)
            rec = {"part": "fill10", "kind": kind, "preset": "deepseek-v3", "T": T}
            launches = ("table", "no warps") if T == 1 and kind == "fp8" else ()
            _variants(timer, rec, fwd, FILL10, _fill_rule, launches)
    base = qw = None
    torch.cuda.empty_cache()
    spec = presets.get("qwen2-57b-a14b")
    base = _base(spec, torch.bfloat16, "cuda", gen)
    for T in (1, 16, 128):
        x = torch.randn((T, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
        r = routing(spec, T, "cuda", gen)
        fwd = lambda x=x, r=r: fused_moe(spec, base, x, routing=r)
        rec = {"part": "fill10", "kind": "bf16", "preset": "qwen2-57b-a14b", "T": T}
        _variants(timer, rec, fwd, FILL10, _fill_rule)


def part_side10(timer) -> None:
    """The shared expert on a side branch of the captured graph against the serial order (streams.ENABLED
    off): graph replays of block fp8 and bf16 DeepSeek-V3 and bf16 Qwen2-57B at T = 1 / 16 / 128, outputs of
    both graphs compared bitwise."""
    from moe_cts.kernels import streams

    def point(kind, name, T, sp, w, x, r) -> None:
        fwd = lambda: fused_moe(sp, w, x, routing=r)
        outs, ms = {}, {}
        for on in (True, False):
            streams.ENABLED = on
            try:
                g, outs[on] = capture_graph(fwd)
                g.replay()
                ms[on] = timer(g.replay)["ms"]
            finally:
                streams.ENABLED = True
        emit({"part": "side10", "kind": kind, "preset": name, "T": T, "cfg": "side branch", "ms": ms[True],
              "serial_ms": ms[False], "vs_table": ms[False] / ms[True],
              "bitwise_equal": bool(torch.equal(outs[True].view(torch.int16), outs[False].view(torch.int16)))})  # fmt: skip

    spec, qspec, gen, base, qw = _quant_preset("deepseek-v3", QuantScheme.fp8_block())
    for T in (1, 16, 128):
        x = torch.randn((T, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
        r = routing(spec, T, "cuda", gen)
        point("fp8", "deepseek-v3", T, qspec, qw, x, r)
        point("bf16", "deepseek-v3", T, spec, base, x, r)
    base = qw = None
    torch.cuda.empty_cache()
    spec = presets.get("qwen2-57b-a14b")
    base = _base(spec, torch.bfloat16, "cuda", gen)
    for T in (1, 16, 128):
        x = torch.randn((T, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
        point("bf16", "qwen2-57b-a14b", T, spec, base, x, routing(spec, T, "cuda", gen))


def _decode_row(dc: str, **gemm_keys):
    """The sm90 table's first `dc` row (m <= 8) with gemm_keys set in both GEMM tiles inside the block (the
    fill rule still applies): _sm90_rows of that row alone."""
    return _sm90_rows(dc, slice(0, 1), **gemm_keys)


STAGES16 = {"table": {}, "2 stages": {"num_stages": 2}, "3 stages": {"num_stages": 3}}


def part_stages16(timer) -> None:
    """The 16-bit decode row's pipeline depth (session 10): at BLOCK_N 64 its 4 stages hold 144 KiB of shared
    memory in GEMM1 (one program per SM), where vLLM's tuned Qwen2 row runs 2. Graph replays, ids given, the
    five peer presets (routed) at T = 1 and 16 and DeepSeek-V3 with its shared expert at T = 1, under each
    STAGES16 variant of the row (the fill rule applied on top)."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    points = [(name, routed(name), (1, 16)) for name in PEER_PRESETS]
    points.append(("deepseek-v3 full", presets.get("deepseek-v3"), (1,)))
    for name, spec, Ts in points:
        base = _base(spec, torch.bfloat16, "cuda", gen)
        for T in Ts:
            x = torch.randn((T, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
            r = routing(spec, T, "cuda", gen)
            fwd = lambda spec=spec, base=base, x=x, r=r: fused_moe(spec, base, x, routing=r)
            rec = {"part": "stages16", "kind": "bf16", "preset": name, "T": T}
            _variants(timer, rec, fwd, STAGES16, lambda **k: _decode_row("16bit", **k))
        base = None
        torch.cuda.empty_cache()


STAGES8 = {
    "table": {},
    "5 stages": {"num_stages": 5},
    "4 stages": {"num_stages": 4},
    "3 stages": {"num_stages": 3},
}


def part_stages8(timer) -> None:
    """The fp8 decode row's pipeline depth (6 stages: three 60 KiB programs per SM leave no room for a shared
    expert program beside them): block fp8 DeepSeek-V3 with its shared expert at T = 1 / 16 / 128 under each
    STAGES8 variant, and the bf16 forward under the 16-bit row at 4 and 3 stages in the same run."""
    spec, qspec, gen, base, qw = _quant_preset("deepseek-v3", QuantScheme.fp8_block())
    for T in (1, 16, 128):
        x = torch.randn((T, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
        r = routing(spec, T, "cuda", gen)
        for kind, sp, w, dc, variants in (
            ("fp8", qspec, qw, "fp8", STAGES8),
            ("bf16", spec, base, "16bit", {"table": {}, "3 stages": {"num_stages": 3}}),
        ):
            fwd = lambda sp=sp, w=w, x=x, r=r: fused_moe(sp, w, x, routing=r)
            rec = {"part": "stages8", "kind": kind, "preset": "deepseek-v3", "T": T}
            _variants(timer, rec, fwd, variants, lambda dc=dc, **k: _decode_row(dc, **k))


@contextlib.contextmanager
def _sm90_rows(dc: str, which: slice = slice(None), _gemms=("gate_up", "down"), **gemm_keys):
    """The rows `which` (default every row) of the sm90 table's `dc` class with gemm_keys set in both GEMM tiles
    inside the block (the cached table dict, restored after); the fill rule still applies."""
    from moe_cts.kernels import config as cfgmod

    rows = cfgmod.load_table("cuda-sm90")["tables"][dc][which]
    old = [{g: dict(row[g]) for g in ("gate_up", "down")} for row in rows]
    for row in rows:
        for g in _gemms:
            row[g].update(gemm_keys)
    try:
        yield
    finally:
        for row, saved in zip(rows, old):
            for g, v in saved.items():
                row[g].clear()
                row[g].update(v)


def _bits_variants(timer, rec: dict, fwd, variants: dict, dc: str) -> None:
    """One record per variant (label: (sm90 row keys, forced config or None)): graph-replay ms, vs_table, and
    whether its output has the first variant's bits (same tiles: the weight path alone changed)."""
    first = None
    for label, (keys, cfg) in variants.items():
        r = {**rec, "cfg": label}
        try:
            with _sm90_rows(dc, **keys):
                out = fwd(cfg).clone()
                r["config"] = last_config().to_dict()
                r["ms"] = replay_ms(timer, lambda cfg=cfg: fwd(cfg))
            if first is None:
                first = (out, r["ms"])
            r["vs_table"] = first[1] / r["ms"]
            r["bitwise_equal"] = bool(torch.equal(out, first[0]))
            r["finite"] = bool(torch.isfinite(out).all())
        except Exception as e:
            r["error"] = f"{type(e).__name__}: {str(e)[:200]}"
        emit(r)


TMA11 = {"table": ({}, None), "tma": ({"tma": True}, None)}


def part_tma11(timer) -> None:
    """Weight tiles through tensor descriptors (GemmTile.tma: TMA copies on sm90) against the pointer loads of the
    same table rows (session 11). bf16: the five peer presets (routed) at T = 1 .. 4096; block fp8 at
    DeepSeek-V3 width with its shared expert at T = 1 .. 4096 (and bf16 there, for the fp8 / bf16 ratio).
    Graph replays, ids given; outputs compared bitwise with the table's. (Larger fp8 tiles with descriptors,
    BLOCK_M 128 / gate_up 128 at 8 warps, took 1.5-5x the table's time in the first run: not kept.)"""
    gen = torch.Generator(device="cuda").manual_seed(0)
    for name in PEER_PRESETS:
        spec = routed(name)
        base = _base(spec, torch.bfloat16, "cuda", gen)
        for T in (1, 16, 128, 512, 2048, 4096):
            x = torch.randn((T, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
            r = routing(spec, T, "cuda", gen)
            fwd = lambda cfg, spec=spec, base=base, x=x, r=r: fused_moe(spec, base, x, routing=r, config=cfg)
            _bits_variants(
                timer, {"part": "tma11", "kind": "bf16", "preset": name, "T": T}, fwd, TMA11, "16bit"
            )
        base = None
        torch.cuda.empty_cache()
    spec, qspec, gen, base, qw = _quant_preset("deepseek-v3", QuantScheme.fp8_block())
    for T in (1, 16, 128, 512, 4096):
        x = torch.randn((T, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
        r = routing(spec, T, "cuda", gen)
        fwd8 = lambda cfg, x=x, r=r: fused_moe(qspec, qw, x, routing=r, config=cfg)
        _bits_variants(
            timer, {"part": "tma11", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd8, TMA11, "fp8"
        )
        fwd16 = lambda cfg, x=x, r=r: fused_moe(spec, base, x, routing=r, config=cfg)
        _bits_variants(timer, {"part": "tma11", "kind": "bf16", "preset": "deepseek-v3 full", "T": T}, fwd16,
                       TMA11, "16bit")  # fmt: skip


def _fp8_large(bm, gu_bn, gu_w, gu_st, dn_bn, dn_w, dn_st):
    """A forced block fp8 config with descriptor weights (BLOCK_K 128: one scale group per K tile)."""
    return c(
        bm, {**tile(gu_bn, 128, gu_w, gu_st), "tma": True}, {**tile(dn_bn, 128, dn_w, dn_st), "tma": True}
    )


FP8S11 = {
    "table": ({}, None),
    "pointers": ({"tma": False}, None),
    "bm128 w8 s4": ({}, _fp8_large(128, 64, 8, 4, 128, 8, 4)),
    "bm128 w8 s5": ({}, _fp8_large(128, 64, 8, 5, 128, 8, 5)),
    "bm64 w4 s3": ({}, _fp8_large(64, 64, 4, 3, 128, 4, 3)),
}


def part_fp8s11(timer) -> None:
    """Block fp8 with one weight scale per tile half and K group (SW_SCALAR: 221 -> 175 registers at the m > 32
    row on sm90, AOT triton 3.9), session 11: the table (descriptors + scalar scales) against its pointer loads
    (the gate_up pointer loop keeps per-column scales) and BLOCK_M 128 tiles the freed registers allow
    (206 registers, no spill), at DeepSeek-V3 width with its shared expert; bf16 in the same run."""
    spec, qspec, gen, base, qw = _quant_preset("deepseek-v3", QuantScheme.fp8_block())
    for T in (1, 16, 128, 512, 4096):
        x = torch.randn((T, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
        r = routing(spec, T, "cuda", gen)
        fwd8 = lambda cfg, x=x, r=r: fused_moe(qspec, qw, x, routing=r, config=cfg)
        variants = FP8S11 if T >= 512 else {k: FP8S11[k] for k in ("table", "pointers")}
        _bits_variants(timer, {"part": "fp8s11", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd8, variants,
                       "fp8")  # fmt: skip
        fwd16 = lambda cfg, x=x, r=r: fused_moe(spec, base, x, routing=r, config=cfg)
        _bits_variants(timer, {"part": "fp8s11", "kind": "bf16", "preset": "deepseek-v3 full", "T": T}, fwd16,
                       {"table": ({}, None)}, "16bit")  # fmt: skip


PERS12 = {
    "table": ({}, None),
    "p1": ({"persistent": 1}, None),
    "p2": ({"persistent": 2}, None),
    "p1 down": ({"persistent": 1, "_gemms": ("down",)}, None),
    "p2 down": ({"persistent": 2, "_gemms": ("down",)}, None),
}


def _bf16_points(names, tokens, seed: int = 0):
    """(name, T, fwd, fwd_router) per routed preset `name` (its bf16 weights at full size on the GPU, built once
    and freed after its points) and T, inputs drawn from one generator in that order: fwd(cfg) is the forward
    with the ids given and config cfg (None: the table's), fwd_router(cfg) the same with our router."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    for name in names:
        spec = routed(name)
        base = _base(spec, torch.bfloat16, "cuda", gen)
        for T in tokens:
            x = torch.randn((T, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
            r = routing(spec, T, "cuda", gen)
            yield (name, T, lambda cfg, spec=spec, base=base, x=x, r=r: fused_moe(spec, base, x, routing=r, config=cfg),
                   lambda cfg, spec=spec, base=base, x=x: fused_moe(spec, base, x, config=cfg))  # fmt: skip
        base = None
        torch.cuda.empty_cache()


def _fp8_points(tokens):
    """(T, fwd) at DeepSeek-V3 width with its shared expert, ids given: fwd(cfg) runs its block fp8 weights
    (config cfg, None: the table's), fwd("bf16") the bf16 weights they were quantized from (the fp8 / bf16
    ratio in the same rounds)."""
    spec, qspec, gen, base, qw = _quant_preset("deepseek-v3", QuantScheme.fp8_block())
    for T in tokens:
        x = torch.randn((T, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
        r = routing(spec, T, "cuda", gen)

        def fwd(cfg, x=x, r=r):
            if cfg == "bf16":
                return fused_moe(spec, base, x, routing=r)
            return fused_moe(qspec, qw, x, routing=r, config=cfg)

        yield T, fwd


def part_pers12(timer) -> None:
    """Persistent GEMMs (GemmTile.persistent: n programs per SM walk the tiles in a loop Triton flattens with the
    K loop), session 12: the table's rows one program per tile against 1 and 2 programs per SM, in both GEMMs
    and in GEMM2 alone, graph replays, ids given, outputs compared bitwise. bf16: the five peer presets (routed)
    at T = 128 .. 4096; block fp8 at DeepSeek-V3 width with its shared expert at T = 128 / 512 / 4096 (bf16
    there too, for the fp8 / bf16 ratio)."""
    for name, T, fwd, _ in _bf16_points(PEER_PRESETS, (128, 512, 2048, 4096)):
        _bits_variants(
            timer, {"part": "pers12", "kind": "bf16", "preset": name, "T": T}, fwd, PERS12, "16bit"
        )
    for T, fwd in _fp8_points((128, 512, 4096)):
        _bits_variants(timer, {"part": "pers12", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd, PERS12,
                       "fp8")  # fmt: skip
        # PERS12's variants force no config: the bf16 forward reads its rows with the variant's keys
        _bits_variants(timer, {"part": "pers12", "kind": "bf16", "preset": "deepseek-v3 full", "T": T},
                       lambda _cfg, fwd=fwd: fwd("bf16"), PERS12, "16bit")  # fmt: skip


def _rounds_variants(timer, rec: dict, fwd, variants: dict, dc: str, rounds: int = 5) -> None:
    """Like _bits_variants, but each variant's forward is captured once (under its sm90 row keys) and the
    graphs are replayed in `rounds` alternating rounds (v1, v2, ..., v1, v2, ...): ms = the median over the
    rounds, vs_table = the median of the rounds' ratios to the first variant, bitwise_equal against the first
    variant of the same dtype (labels "fp8 ..." / "bf16 ...", else the first). One median per variant drifted
    5-9% between consecutive points at T = 4096 (session 12); alternating rounds see the drift on both sides."""
    graphs, outs = {}, {}
    align_mod = importlib.import_module("moe_cts.kernels.align")
    for label, (keys, cfg) in variants.items():
        keys = dict(keys)
        # "_slots" 0: align at T = 1 (the old launch); "_patch": (object, attribute, value) set while captured
        patches = [(align_mod, "SLOT_META_MAX_TOKENS", keys.pop("_slots", align_mod.SLOT_META_MAX_TOKENS))]
        patches += keys.pop("_patch", ())
        try:
            with contextlib.ExitStack() as stack:
                # "_env" is read at launch (capture) time, e.g. MOE_CTS_PDL
                stack.enter_context(mock.patch.dict(os.environ, keys.pop("_env", {})))
                for o, n, v in patches:
                    stack.enter_context(mock.patch.object(o, n, v))
                # "_fill": keys of the sm90 table's fill rule replaced while captured
                stack.enter_context(_fill_rule(**keys.pop("_fill", {})))
                # "_rows": (start, stop) of the table rows the keys go to (default every row)
                rows = slice(*keys.pop("_rows", (None, None)))
                # "_down": keys set in GEMM2's tile only, after the others
                down_keys = keys.pop("_down", {})
                row_dc = keys.pop("_dc", dc)
                stack.enter_context(
                    _sm90_rows(row_dc, rows, _gemms=keys.pop("_gemms", ("gate_up", "down")), **keys)
                )
                if down_keys:
                    stack.enter_context(_sm90_rows(row_dc, rows, _gemms=("down",), **down_keys))
                outs[label] = fwd(cfg).clone()
                graphs[label] = capture_graph(lambda cfg=cfg: fwd(cfg))
        except Exception as e:
            emit({**rec, "cfg": label, "error": f"{type(e).__name__}: {str(e)[:200]}"})
    if not graphs:
        return
    ms = {label: [] for label in graphs}
    for _ in range(rounds):
        for label, g in graphs.items():
            ms[label].append(timer(g[0].replay)["ms"])
    first = next(iter(graphs))
    # bits compare within a dtype: labels "fp8 ..." / "bf16 ..." against the first label of their dtype
    dtype_of = lambda label: label.split()[0] if label.split()[0] in ("fp8", "bf16") else ""
    same_dtype = {}
    for label in graphs:
        same_dtype.setdefault(dtype_of(label), label)
    for label in graphs:
        ratios = [a / b for a, b in zip(ms[first], ms[label])]
        emit({**rec, "cfg": label, "ms": statistics.median(ms[label]), "rounds_ms": ms[label],
              "vs_table": statistics.median(ratios), "vs_table_range": [min(ratios), max(ratios)],
              "bitwise_equal": bool(torch.equal(outs[label], outs[same_dtype[dtype_of(label)]]))})  # fmt: skip
    graphs.clear()


def part_pair12(timer) -> None:
    """Session 12. (1) Block fp8 GEMM1 tiles of 64 columns in pairs (GemmTile.paired, the sm90 fp8 m > 32 row:
    the activation quantized in GEMM1's epilogue, no fp32 act workspace, no quantize_rows launch) against the
    same row unpaired, DeepSeek-V3 with its shared expert at T = 2048 / 4096, alternating rounds, bits
    compared; bf16 in the same rounds (the fp8 / bf16 ratio). (2) The persistent rows of pers12 that won
    (Qwen2-57B, Qwen3-235B-like at T = 2048 / 4096) in alternating rounds."""
    for T, fwd in _fp8_points((2048, 4096)):
        variants = {"fp8 table": ({}, None), "fp8 unpaired": ({"paired": False}, None), "bf16": ({}, "bf16")}
        _rounds_variants(timer, {"part": "pair12", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd, variants,
                         "fp8")  # fmt: skip
    torch.cuda.empty_cache()
    variants = {k: PERS12[k] for k in ("table", "p1", "p2")}
    for name, T, fwd, _ in _bf16_points(("qwen2-57b-a14b", "E128k8H4096I1536"), (2048, 4096), seed=1):
        _rounds_variants(timer, {"part": "pair12", "kind": "bf16", "preset": name, "T": T}, fwd, variants,
                         "16bit")  # fmt: skip


#: half tails (GemmTile.half_tail) on every row whose BLOCK_M allows it (BLOCK_M >= 32: rows 1 ..)
HALF13 = {"table": ({}, None), "half": ({"which": slice(1, None), "half_tail": True}, None)}


def part_half13(timer) -> None:
    """Session 13. Half tail tiles (GemmTile.half_tail: an expert's last M tile whose second half is pad only
    runs as BLOCK_M / 2 rows) against the table's full tiles, in alternating rounds of graph replays, ids given,
    bits compared. bf16: the five peer presets (routed) at T = 128 .. 4096. Block fp8 at DeepSeek-V3 width with
    its shared expert at T = 512 .. 4096, bf16 with and without half tails in the same rounds (the fp8 / bf16
    ratio), and BLOCK_M 128 fp8 tiles at 8 warps with half tails (x0.91 without them in session 11)."""
    for name, T, fwd, _ in _bf16_points(PEER_PRESETS, (128, 512, 2048, 4096)):
        _rounds_variants(timer, {"part": "half13", "kind": "bf16", "preset": name, "T": T}, fwd, HALF13,
                         "16bit", rounds=3)  # fmt: skip
    half = {"which": slice(1, None), "half_tail": True}
    bm128 = _fp8_large(128, 64, 8, 4, 128, 8, 4)
    bm128 = {**bm128, "gate_up": {**bm128["gate_up"], "paired": True, "half_tail": True},
             "down": {**bm128["down"], "half_tail": True}}  # fmt: skip
    for T, fwd in _fp8_points((512, 2048, 4096)):
        variants = {
            "fp8 table": ({}, None),
            "fp8 half": (half, None),
            "fp8 bm128 half": ({}, bm128),
            "bf16 table": ({"_dc": "16bit"}, "bf16"),
            "bf16 half": ({**half, "_dc": "16bit"}, "bf16"),
        }
        _rounds_variants(timer, {"part": "half13", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd,
                         variants, "fp8", rounds=3)  # fmt: skip


def part_stack13(timer) -> None:
    """Session 13, a question before any code: what would DeepSeek-V3's shared expert cost at decode sizes as one
    more routed expert (E + 1 experts, k + 1 slots per token, the shared expert's id for every token) instead of
    one-expert GEMMs on a side branch? Block fp8, graph replays, ids given, alternating rounds at T = 1 and 16:
    the table's forward with its shared expert, the routed experts alone, and a random E = 257, k = 9 layer of
    the same widths (the stacked layout's work: the same launches as the routed forward, 9 experts per token);
    bf16 with its shared expert in the same rounds (the fp8 / bf16 ratio)."""
    from moe_cts.reference.spec import MoESpec

    gen = torch.Generator(device="cuda").manual_seed(1)
    sspec = MoESpec(hidden_size=7168, intermediate_size=2048, num_experts=257, top_k=9,
                    quant=QuantScheme.fp8_block())  # fmt: skip
    sbase = _base(sspec, torch.bfloat16, "cuda", gen)
    sqw = quantized(sspec, sbase, gen)
    # the quantized path reads the router and biases of its base, never its experts: keep views, free 22 GB
    thin = dataclasses.replace(
        sbase, w13=sbase.w13[:1].expand_as(sbase.w13), w2=sbase.w2[:1].expand_as(sbase.w2)
    )
    sqw = dataclasses.replace(sqw, base=thin)
    sbase = thin = None
    torch.cuda.empty_cache()
    spec, qspec, gen, base, qw = _quant_preset("deepseek-v3", QuantScheme.fp8_block())
    assert (spec.hidden_size, spec.intermediate_size, spec.num_experts + 1, spec.top_k + 1) == (
        7168,
        2048,
        257,
        9,
    )
    rspec = routed("deepseek-v3").replace(quant=QuantScheme.fp8_block())
    rbase = dataclasses.replace(base, shared_w13=None, shared_w2=None, shared_gate=None)
    rqw = dataclasses.replace(qw, base=rbase, shared_w13=None, shared_w2=None)
    for T in (1, 16):
        x = torch.randn((T, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
        r = routing(spec, T, "cuda", gen)
        ids = torch.cat(
            [r.topk_ids, torch.full((T, 1), spec.num_experts, dtype=torch.int32, device="cuda")], 1
        )
        ws = torch.cat([r.topk_weights, torch.ones((T, 1), dtype=torch.float32, device="cuda")], 1)
        rs = type(r)(ids.contiguous(), ws.contiguous())

        def fwd(cfg, x=x, r=r, rs=rs):
            if cfg == "bf16":
                return fused_moe(spec, base, x, routing=r)
            if cfg == "routed":
                return fused_moe(rspec, rqw, x, routing=r)
            if cfg == "stacked":
                return fused_moe(sspec, sqw, x, routing=rs)
            return fused_moe(qspec, qw, x, routing=r)

        variants = {
            "fp8 table": ({}, None),
            "fp8 routed only": ({}, "routed"),
            "fp8 E257 k9": ({}, "stacked"),
            "bf16 table": ({"_dc": "16bit"}, "bf16"),
        }
        _rounds_variants(timer, {"part": "stack13", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd,
                         variants, "fp8", rounds=5)  # fmt: skip
        for label, cfg in (("fp8 table", None), ("fp8 routed only", "routed"), ("fp8 E257 k9", "stacked")):
            if T == 1:  # each kernel's time (torch.profiler), in launch order
                emit({"part": "stack13", "kind": "fp8", "preset": "deepseek-v3", "T": T, "cfg": f"{label} kernels",
                      "launches": _launches(lambda cfg=cfg: fwd(cfg))})  # fmt: skip


def part_dec13(timer) -> None:
    """Session 13: block fp8 GEMM2 at decode sizes (DeepSeek-V3 with its shared expert, T = 1 / 16; the m <= 8
    row's GEMM2 moved 117 MB in 35.8 us at T = 1, 77% of the copy rate, in stack13): the row against a
    persistent GEMM2 (1 .. 4 programs per SM walking its 1792 short tiles: the next tile's loads overlap this
    tile's end) and wider GEMM2 tiles, alternating rounds of graph replays, ids given, bits compared."""
    row0 = {"which": slice(0, 1), "_gemms": ("down",)}
    variants = {"table": ({}, None)}
    for n in (1, 2, 4, 8):
        variants[f"down p{n}"] = ({**row0, "persistent": n}, None)
    variants["down bn64 w4"] = ({**row0, "BLOCK_N": 64, "num_warps": 4}, None)
    variants["down s3"] = ({**row0, "num_stages": 3}, None)
    variants["down p2 s3"] = ({**row0, "num_stages": 3, "persistent": 2}, None)
    for T, fwd in _fp8_points((1, 16)):
        _rounds_variants(timer, {"part": "dec13", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd, variants,
                         "fp8", rounds=5)  # fmt: skip


def part_dec15(timer) -> None:
    """Session 15: the block fp8 decode row (m <= 8) with fewer warps per program, so more programs (and their
    loads) fit on an SM beside the shared expert's branch: GEMM2 streamed 117 MB in 35.9 us at T = 1 (77% of the
    copy rate, stack13), GEMM1 at 93%. DeepSeek-V3 with its shared expert at T = 1 / 16, alternating rounds of
    graph replays, ids given, bits compared (a warp count changes the MMA's K order per thread: other bits are
    possible)."""
    row0 = {"which": slice(0, 1)}
    down = {**row0, "_gemms": ("down",)}
    variants = {
        "table": ({}, None),
        "down w1": ({**down, "num_warps": 1}, None),
        "down w1 s7": ({**down, "num_warps": 1, "num_stages": 7}, None),
        "down s7": ({**down, "num_stages": 7}, None),
        "down bn16 w1": ({**down, "num_warps": 1, "BLOCK_N": 16}, None),
        "gate_up w1": ({**row0, "_gemms": ("gate_up",), "num_warps": 1}, None),
        "both w1": ({**row0, "num_warps": 1}, None),
        "bf16": ({"_dc": "16bit"}, "bf16"),  # the fp8 / bf16 ratio in the same rounds
    }
    for T, fwd in _fp8_points((1, 16)):
        _rounds_variants(timer, {"part": "dec15", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd, variants,
                         "fp8", rounds=5)  # fmt: skip


def part_dec16(timer) -> None:
    """Session 16, after Nsight Compute (docs/measured/h200-session16/ncu.txt). At T = 1 the block fp8 GEMM2
    (1792 programs of 16 x 32, 2 warps, 5 stages; 9 per SM by shared memory) ran 1.51 waves at 62% of the DRAM
    peak, GEMM1 (512 programs, 0.78 waves) at 76%. Candidates: GEMM2 tiles whose grid fills whole waves (6
    stages: 7 per SM, 1.94 waves; BLOCK_N 64 / 128 with 3 stages: 0.97 / 0.85 waves), wider GEMM1 tiles; at
    T = 4096 the m > 32 row with 8 warps (two warp groups, so one's scale FMAs can overlap the other's wgmma).
    DeepSeek-V3 with its shared expert, alternating rounds of graph replays, ids given, bits compared."""
    row0 = {"which": slice(0, 1)}
    down, gate_up = {**row0, "_gemms": ("down",)}, {**row0, "_gemms": ("gate_up",)}
    variants = {
        "fp8 table": ({}, None),
        "fp8 down s6": ({**down, "num_stages": 6}, None),
        "fp8 down bn64 s3": ({**down, "BLOCK_N": 64, "num_stages": 3}, None),
        "fp8 down bn64 w4 s3": ({**down, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}, None),
        "fp8 down bn64 w4 s4": ({**down, "BLOCK_N": 64, "num_warps": 4, "num_stages": 4}, None),
        "fp8 down bn128 w4 s3": ({**down, "BLOCK_N": 128, "num_warps": 4, "num_stages": 3}, None),
        "fp8 gate_up bn64 w4 s3": ({**gate_up, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}, None),
        "fp8 gate_up s6": ({**gate_up, "num_stages": 6}, None),
        "bf16": ({"_dc": "16bit"}, "bf16"),  # the fp8 / bf16 ratio in the same rounds
    }
    for T, fwd in _fp8_points((1, 16)):
        _rounds_variants(timer, {"part": "dec16", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd, variants,
                         "fp8", rounds=5)  # fmt: skip
    row2 = {"which": slice(2, 3)}
    variants = {
        "fp8 table": ({}, None),
        "fp8 w8": ({**row2, "num_warps": 8}, None),
        "fp8 down w8": ({**row2, "_gemms": ("down",), "num_warps": 8}, None),
        "fp8 gate_up w8": ({**row2, "_gemms": ("gate_up",), "num_warps": 8}, None),
        "fp8 down bn256 w8": ({**row2, "_gemms": ("down",), "BLOCK_N": 256, "num_warps": 8}, None),
        "bf16": ({"_dc": "16bit"}, "bf16"),
    }
    for T, fwd in _fp8_points((4096,)):
        _rounds_variants(timer, {"part": "dec16", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd, variants,
                         "fp8", rounds=5)  # fmt: skip


def part_slot16(timer) -> None:
    """Session 16: one token without the alignment launch (align.slot_meta: one tile per assignment from views
    and cached constants) against align's launch (SLOT_META_MAX_TOKENS = 0), alternating rounds of graph
    replays, ids given, bits compared (they must be equal): bf16 on the five peer presets, block fp8 at
    DeepSeek-V3 width with its shared expert (bf16 there too, the fp8 / bf16 ratio), MXFP4 gpt-oss-120b at
    T = 1."""
    slots = {"slots": ({}, None), "align": ({"_slots": 0}, None)}
    for name, T, fwd, _ in _bf16_points(PEER_PRESETS, (1,)):
        _rounds_variants(timer, {"part": "slot16", "kind": "bf16", "preset": name, "T": T}, fwd, slots, "16bit",
                         rounds=5)  # fmt: skip
    for T, fwd in _fp8_points((1,)):
        variants = {"fp8 slots": ({}, None), "fp8 align": ({"_slots": 0}, None),
                    "bf16 slots": ({"_dc": "16bit"}, "bf16"), "bf16 align": ({"_dc": "16bit", "_slots": 0}, "bf16")}  # fmt: skip
        _rounds_variants(timer, {"part": "slot16", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd, variants,
                         "fp8", rounds=5)  # fmt: skip
    torch.cuda.empty_cache()
    spec, qspec, gen, _, qw = _quant_preset("gpt-oss-120b", QuantScheme.mxfp4())
    x = torch.randn((1, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
    r = routing(spec, 1, "cuda", gen)
    fwd = lambda cfg: fused_moe(qspec, qw, x, routing=r, config=cfg)
    _rounds_variants(timer, {"part": "slot16", "kind": "mxfp4", "preset": "gpt-oss-120b", "T": 1}, fwd, slots,
                     "16bit", rounds=5)  # fmt: skip


def part_down16(timer) -> None:
    """Session 16: block fp8 GEMM2 with 8 warps in the m > 32 row (two warp groups; dec16: x1.016 at T = 4096)
    at T = 2048 / 4096, DeepSeek-V3 with its shared expert, bf16 in the same rounds."""
    row2 = {"which": slice(2, 3), "_gemms": ("down",)}
    variants = {"fp8 table": ({}, None), "fp8 down w8": ({**row2, "num_warps": 8}, None),
                "bf16": ({"_dc": "16bit"}, "bf16")}  # fmt: skip
    for T, fwd in _fp8_points((2048, 4096)):
        _rounds_variants(timer, {"part": "down16", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd, variants,
                         "fp8", rounds=5)  # fmt: skip


def _router_tile(block_e=None, steps=None):
    """router.logits_tile_for with BLOCK_E and / or the dot steps per H split forced (BLOCK_H from its tile-bytes
    rule for 2-byte operands: part router17 routes bf16 only): a T-independent tile like the table's, so still
    batch invariant."""
    import triton

    from moe_cts.kernels import router as rmod

    real = rmod.logits_tile_for

    def tile_for(E, H, x_dtype, w_dtype):
        lt = real(E, H, x_dtype, w_dtype)
        be = block_e or lt.BLOCK_E
        bh = max(16, min(128, rmod.ROUTER_TILE_BYTES // (be * 2)))
        h_chunk = (steps or lt.H_CHUNK // lt.BLOCK_H) * bh
        return rmod.LogitsTile(
            lt.BLOCK_T, be, bh, h_chunk, triton.cdiv(H, h_chunk), lt.num_warps, lt.num_stages
        )

    return ((rmod, "logits_tile_for", tile_for),)


def part_router17(timer) -> None:
    """Session 17: the router's logits split at decode. The table's split is capped so that the partial logits'
    traffic stays within x's bytes (gpt-oss-120b: 8 splits of 3 dot steps, 16 programs); candidates with one or
    two steps per split (more programs, a shorter chain of loads before the select), and 32-expert tiles. The
    forward with our router under each against the ids-given forward, T = 1 and 16, the five peer presets;
    alternating rounds of graph replays."""
    router = {
        "ids": ({}, "ids"),
        "bf16 router": ({}, "router"),
        "bf16 router 1 step": ({"_patch": _router_tile(steps=1)}, "router"),
        "bf16 router 2 steps": ({"_patch": _router_tile(steps=2)}, "router"),
        "bf16 router E32 1 step": ({"_patch": _router_tile(block_e=32, steps=1)}, "router"),
    }
    for name, T, fwd_ids, fwd_router in _bf16_points(PEER_PRESETS, (1, 16)):
        fwd = lambda cfg, a=fwd_ids, b=fwd_router: a(None) if cfg == "ids" else b(None)
        _rounds_variants(timer, {"part": "router17", "kind": "bf16 router", "preset": name, "T": T}, fwd, router,
                         "16bit", rounds=7)  # fmt: skip


def _memo_launch(fn):
    """fn (quantize_rows) run once per (spec, input shape, dtype) and its outputs returned after that: a variant
    captured under it has no quantize launch (the GEMMs read the first call's codes: timing only)."""
    memo = {}

    def once(spec, t, *a, **kw):
        key = (id(spec), tuple(t.shape), t.dtype)
        if key not in memo:
            memo[key] = fn(spec, t, *a, **kw)
        return memo[key]

    return once


def _drop_variants(kind: str) -> dict:
    """Upper bounds of launch fusion (session 18): the forward with the combine and / or the fp8 quantize launches
    replaced by no-ops (their outputs wrong, their time gone)."""
    from moe_cts.kernels import fp8_moe, moe, mxfp4_moe

    skip = lambda *a, **k: None
    no_combine = [
        (moe, "launch_combine", skip),
        (fp8_moe, "launch_combine", skip),
        (mxfp4_moe, "launch_combine", skip),
    ]
    if kind != "fp8":
        return {f"{kind} table": ({}, None), f"{kind} no combine": ({"_patch": no_combine}, None)}
    return {
        "fp8 table": ({}, None),
        "fp8 no combine": ({"_patch": no_combine}, None),
        "fp8 no quantize": ({"_patch": [(fp8_moe, "quantize_rows", _memo_launch(fp8_moe.quantize_rows))]}, None),
        "fp8 no combine, no quantize": (
            {"_patch": [*no_combine, (fp8_moe, "quantize_rows", _memo_launch(fp8_moe.quantize_rows))]}, None),
        "bf16 table": ({"_dc": "16bit"}, "bf16"),
        "bf16 no combine": ({"_dc": "16bit", "_patch": no_combine}, "bf16"),
    }  # fmt: skip


def part_drop18(timer) -> None:
    """Session 18: what the decode chain's small launches cost, as upper bounds: the forward with the combine (and
    for block fp8 the quantize_rows launches) replaced by no-ops, alternating rounds of graph replays, ids given.
    bf16: the five peer presets at T = 1 / 16; block fp8 at DeepSeek-V3 width with its shared expert (bf16 in the
    same rounds) at T = 1 / 16; MXFP4 gpt-oss-120b at T = 1 / 16. Outputs of the no-op variants are wrong."""
    for name, T, fwd, _ in _bf16_points(PEER_PRESETS, (1, 16)):
        _rounds_variants(timer, {"part": "drop18", "kind": "bf16", "preset": name, "T": T}, fwd,
                         _drop_variants("bf16"), "16bit", rounds=5)  # fmt: skip
    for T, fwd in _fp8_points((1, 16)):
        _rounds_variants(timer, {"part": "drop18", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd,
                         _drop_variants("fp8"), "fp8", rounds=5)  # fmt: skip
    spec, qspec, gen, _, qw = _quant_preset("gpt-oss-120b", QuantScheme.mxfp4())
    for T in (1, 16):
        x = torch.randn((T, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
        r = routing(spec, T, "cuda", gen)
        fwd = lambda cfg, x=x, r=r: fused_moe(qspec, qw, x, routing=r, config=cfg)
        _rounds_variants(timer, {"part": "drop18", "kind": "mxfp4", "preset": "gpt-oss-120b", "T": T}, fwd,
                         _drop_variants("mxfp4"), "16bit", rounds=5)  # fmt: skip


def part_hw18(timer) -> None:
    """Session 18: the fp8 rounding left to the store's cast (fp8_gemm.hw_round, CUDA sm89+) against the
    arithmetic rounding (MOE_CTS_FP8_HW_ROUND=0): block fp8 at DeepSeek-V3 width with its shared expert, ids
    given, T = 1 .. 4096, alternating rounds of graph replays, bits compared; bf16 in the same rounds (the fp8 /
    bf16 ratio); the quantize kernels' CUPTI records at T = 4096 both ways."""
    from moe_cts.kernels import fp8_gemm

    off = {fp8_gemm.HW_ROUND_ENV: "0"}
    variants = {
        "fp8 cast rounds": ({}, None),
        "fp8 arithmetic": ({"_env": off}, None),
        "bf16": ({"_dc": "16bit"}, "bf16"),
    }
    for T, fwd in _fp8_points((1, 16, 128, 512, 2048, 4096)):
        _rounds_variants(timer, {"part": "hw18", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd, variants,
                         "fp8", rounds=7 if T >= 2048 else 5)  # fmt: skip
        if T == 4096:
            for label, env in (("cast rounds", {}), ("arithmetic", off)):
                with mock.patch.dict(os.environ, env):
                    k = {
                        n: v
                        for n, v in kernel_us(lambda f=fwd: f(None), iters=5).items()
                        if "quantize" in n or "gate_up" in n
                    }
                emit({"part": "hw18-kernels", "kind": label, "preset": "deepseek-v3", "T": T, "kernels": k})


def part_dec18(timer) -> None:
    """Session 18, one token: narrower combine programs (COMBINE_BLOCK_H 256 / 128 instead of 1024: 28 / 56
    programs instead of 7 at H = 7168) and, for block fp8, GEMM1 BLOCK_N 64 at 4 warps in the decode row
    (session 16: x1.014 at T = 1, x0.993 at T = 16). Alternating rounds of graph replays, ids given, bits
    compared: bf16 peer presets at T = 1, block fp8 DeepSeek-V3 with its shared expert at T = 1 / 16 (bf16 in the
    same rounds), MXFP4 gpt-oss-120b at T = 1."""
    combine = importlib.import_module("moe_cts.kernels.combine")  # the package's `combine` is the function

    def cb(n):
        return [(combine, "COMBINE_BLOCK_H", n)]

    bf16 = {"bf16 table": ({}, None), "bf16 combine 256": ({"_patch": cb(256)}, None),
            "bf16 combine 128": ({"_patch": cb(128)}, None)}  # fmt: skip
    for name, T, fwd, _ in _bf16_points(PEER_PRESETS, (1,)):
        _rounds_variants(timer, {"part": "dec18", "kind": "bf16", "preset": name, "T": T}, fwd, bf16, "16bit",
                         rounds=7)  # fmt: skip
    gu64 = {"_gemms": ("gate_up",), "BLOCK_N": 64, "num_warps": 4}
    fp8 = {"fp8 table": ({}, None), "fp8 combine 256": ({"_patch": cb(256)}, None),
           "fp8 combine 128": ({"_patch": cb(128)}, None), "fp8 gate_up 64 w4": (dict(gu64), None),
           "fp8 gate_up 64 w4, combine 128": ({**gu64, "_patch": cb(128)}, None),
           "bf16 table": ({"_dc": "16bit"}, "bf16"), "bf16 combine 128": ({"_dc": "16bit", "_patch": cb(128)}, "bf16")}  # fmt: skip
    for T, fwd in _fp8_points((1, 16)):
        _rounds_variants(timer, {"part": "dec18", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd, fp8, "fp8",
                         rounds=7)  # fmt: skip
    spec, qspec, gen, _, qw = _quant_preset("gpt-oss-120b", QuantScheme.mxfp4())
    x = torch.randn((1, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
    r = routing(spec, 1, "cuda", gen)
    mx = {"mxfp4 table": ({}, None), "mxfp4 combine 128": ({"_patch": cb(128)}, None)}
    _rounds_variants(timer, {"part": "dec18", "kind": "mxfp4", "preset": "gpt-oss-120b", "T": 1},
                     lambda cfg: fused_moe(qspec, qw, x, routing=r, config=cfg), mx, "16bit", rounds=7)  # fmt: skip


def part_swap25(timer) -> None:
    """Session 25: the fp8 operand swap (GemmTile.swap_ab) in the block fp8 decode row. Its tiles (BLOCK_M 16,
    2 warps, GEMM1 32 columns, GEMM2 32 rows) are mma.sync on fp16-widened fp8 tiles on sm90; swapped, the
    weight box is wgmma's A (64 rows: 4 warps, GEMM2 64 rows) and the dot stays fp8 (AOT: 154 / 149
    instructions per K step against 273 / 212). DeepSeek-V3 with its shared expert at T = 1 .. 16, 9
    alternating rounds of graph replays, ids given. The swapped dots sum in another order than the widened
    mma.sync ones: other bits than the table (both within the oracle's bound: test_fp8_moe.py)."""
    row = {"_rows": (0, 1)}
    w4 = {"num_warps": 4, "swap_ab": True}
    fp8 = {"fp8 table": ({}, None),
           "fp8 swap both, down 64": ({**row, **w4, "_down": {"BLOCK_N": 64}}, None),
           "fp8 swap gate_up": ({**row, "_gemms": ("gate_up",), **w4}, None),
           "fp8 swap down 64": ({**row, "_gemms": ("down",), **w4, "BLOCK_N": 64}, None),
           "fp8 table w4": ({**row, "num_warps": 4}, None),
           "fp8 table w4, down 64": ({**row, "num_warps": 4, "_down": {"BLOCK_N": 64}}, None),
           "bf16 table": ({"_dc": "16bit"}, "bf16")}  # fmt: skip
    for T, fwd in _fp8_points((1, 2, 4, 8, 16)):
        _rounds_variants(timer, {"part": "swap25", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd, fp8, "fp8",
                         rounds=9)  # fmt: skip


def part_occ19(timer) -> None:
    """Session 19: one more program per SM for the promotion-bound fp8 GEMMs. Triton waits for each K tile's
    wgmma before its fp32 promotion (a dot whose result is not its own loop-carried accumulator is not kept
    async: TTGIR warp_group_dot_wait pendings = 0 right after it), so the MMA idles while its warp group scales;
    other programs on the SM fill that gap. The m > 32 row holds 2 per SM (4 stages: 96 KiB of shared memory;
    233 / 174 registers); 3 stages and maxnreg 168 fit 3 (AOT, triton 3.9: GEMM1 168 B of spill around its
    loops, GEMM2 16-24 B). Block fp8 DeepSeek-V3 with its shared expert at T = 512 / 2048 / 4096 (bf16 in the
    same rounds). Alternating rounds of graph replays, ids given, bits compared."""
    r3 = {"num_stages": 3, "maxnreg": 168}
    fp8 = {"fp8 table": ({}, None), "fp8 down s3 r168": ({"_gemms": ("down",), **r3}, None),
           "fp8 gate_up s3 r168": ({"_gemms": ("gate_up",), **r3}, None), "fp8 both s3 r168": (dict(r3), None),
           "fp8 both s3": ({"num_stages": 3}, None), "bf16 table": ({"_dc": "16bit"}, "bf16")}  # fmt: skip
    # one token: GEMM2 runs 1.51 waves of 16-step programs at 62% of the DRAM peak (session 16's profile), GEMM1
    # 76%; persistent programs (the K loop flattened with the tile walk) keep the pipeline full across tiles
    dec = {"fp8 table": ({}, None), "fp8 down pers 4": ({"_gemms": ("down",), "persistent": 4}, None),
           "fp8 down pers 7": ({"_gemms": ("down",), "persistent": 7}, None),
           "fp8 gate_up pers 4": ({"_gemms": ("gate_up",), "persistent": 4}, None),
           "fp8 both pers 4": ({"persistent": 4}, None), "bf16 table": ({"_dc": "16bit"}, "bf16")}  # fmt: skip
    for T, fwd in _fp8_points((1, 16, 512, 2048, 4096)):
        _rounds_variants(timer, {"part": "occ19", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd,
                         dec if T <= 16 else fp8, "fp8", rounds=7)  # fmt: skip


def part_occ19b(timer) -> None:
    """part_occ19's winners on the fp8 m > 32 row alone (the last row: the m <= 32 row's GEMM1, a 256-wide dot,
    lost x0.73 at T = 512 under the cap): GEMM2, or both GEMMs, at 3 stages and maxnreg 168, T = 2048 / 4096 /
    8192, 9 alternating rounds."""
    r3 = {"num_stages": 3, "maxnreg": 168, "_rows": (-1, None)}
    fp8 = {"fp8 table": ({}, None), "fp8 down s3 r168": ({"_gemms": ("down",), **r3}, None),
           "fp8 both s3 r168": (dict(r3), None), "bf16 table": ({"_dc": "16bit"}, "bf16")}  # fmt: skip
    for T, fwd in _fp8_points((2048, 4096, 8192)):
        _rounds_variants(timer, {"part": "occ19b", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd, fp8, "fp8",
                         rounds=9)  # fmt: skip


def part_dec19(timer) -> None:
    """Session 19, block fp8 decode row (m <= 8): GEMM2's 1,792 programs at T = 1 run 1.51 waves (shared memory:
    9 per SM at 5 stages of 6 KiB; session 16's profile, 62% of the DRAM peak). Shallower pipelines fit the
    grid in one wave (2 stages: 14 per SM; BLOCK_N 16 at 2-3 stages: 3,584 programs, up to 28 per SM).
    DeepSeek-V3 with its shared expert at T = 1 / 16, 9 alternating rounds of graph replays, ids given."""
    row = {"_rows": (0, 1)}
    dn = {**row, "_gemms": ("down",)}
    fp8 = {"fp8 table": ({}, None), "fp8 down s2": ({**dn, "num_stages": 2}, None),
           "fp8 down s3": ({**dn, "num_stages": 3}, None),
           "fp8 down bn16 s2": ({**dn, "num_stages": 2, "BLOCK_N": 16}, None),
           "fp8 down bn16 s3": ({**dn, "num_stages": 3, "BLOCK_N": 16}, None),
           "fp8 gate_up s3": ({**row, "_gemms": ("gate_up",), "num_stages": 3}, None),
           "bf16 table": ({"_dc": "16bit"}, "bf16")}  # fmt: skip
    for T, fwd in _fp8_points((1, 16)):
        _rounds_variants(timer, {"part": "dec19", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd, fp8, "fp8",
                         rounds=9)  # fmt: skip


def part_occ19c(timer) -> None:
    """GEMM1 of the fp8 m > 32 row at 3 programs per SM: paired (168-176 B spilled under maxnreg 168) or
    unpaired (one 64-column tile per program, the fp32 act requantized by quantize_rows: 24 B spilled; AOT,
    triton 3.9), against the table (GEMM2 already at 3 stages / maxnreg 168). T = 2048 / 4096 / 8192, 9 rounds."""
    gu = {"_gemms": ("gate_up",), "_rows": (-1, None)}
    cap = {"num_stages": 3, "maxnreg": 168}
    fp8 = {"fp8 table": ({}, None), "fp8 gate_up s3 r168": ({**gu, **cap}, None),
           "fp8 gate_up unpaired s3 r168": ({**gu, **cap, "paired": False}, None),
           "fp8 gate_up unpaired": ({**gu, "paired": False}, None), "bf16 table": ({"_dc": "16bit"}, "bf16")}  # fmt: skip
    for T, fwd in _fp8_points((2048, 4096, 8192)):
        _rounds_variants(timer, {"part": "occ19c", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd, fp8, "fp8",
                         rounds=9)  # fmt: skip


def _bm_row(bm, gu_bn, dn_bn, w, st, gm_dn=8, half=True):
    t = {"BLOCK_K": 64, "GROUP_M": 8, "num_warps": w, "num_stages": st, "tma": True, "half_tail": half}
    return {
        "BLOCK_M": bm,
        "gate_up": {**t, "BLOCK_N": gu_bn},
        "down": {**t, "BLOCK_N": dn_bn, "GROUP_M": gm_dn},
    }


def part_mid19(timer) -> None:
    """Session 19, bf16 where the 16-bit m > 32 row (BLOCK_M 128, 8 warps, 4 stages of 48 KiB: one program per SM)
    leaves the floor furthest at T = 512 (Mixtral-8x7B 64%, Qwen2-57B 86%; session 17's peer run). Forced
    configs against the table: BLOCK_M 128 tiles of 128 x 128 (gate_up BLOCK_N 64) at 3 stages, two programs per SM
    (100 / 113 registers, 96 KiB; AOT triton 3.9), in both GEMMs or GEMM2 alone; the m <= 32 row (BLOCK_M 64, 4
    warps). The five peer presets at T = 512 / 2048 / 4096, 5 alternating rounds of graph replays, ids given."""
    two = _bm_row(128, 64, 128, 8, 3)
    dn2 = {**_bm_row(128, 128, 128, 8, 3), "gate_up": _bm_row(128, 128, 256, 8, 4)["gate_up"]}
    bm64 = {"BLOCK_M": 64,
            "gate_up": {"BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 4, "num_stages": 4, "tma": True},
            "down": {"BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 1, "num_warps": 4, "num_stages": 4, "tma": True}}  # fmt: skip
    variants = {"bf16 table": ({}, None), "bf16 2/SM 128x128 s3": ({}, two), "bf16 down 2/SM": ({}, dn2),
                "bf16 bm64 row": ({}, bm64)}  # fmt: skip
    for name, T, fwd, _ in _bf16_points(PEER_PRESETS, (512, 2048, 4096)):
        _rounds_variants(timer, {"part": "mid19", "kind": "bf16", "preset": name, "T": T}, fwd, variants, "16bit",
                         rounds=5)  # fmt: skip


def part_mix26(timer) -> None:
    """Session 26 (written without a device), issue 15's slower points beside vLLM: Mixtral-8x7B at T = 1 (1.01x in
    session 22's peer run) and T = 128 (1.03x). T = 1 reads the m <= 8 row, whose 3 stages (from 4, session 10's
    stages16: DeepSeek-V3 with its shared expert x1.18) cost Mixtral x0.92 then: the row at 4 and 5 stages (vLLM's
    H200 table has BLOCK_N 128, BLOCK_K 128, 5 stages at M = 1). T = 128 (m = 32) reads the BLOCK_M 64 row at
    BLOCK_K 64 and 4 warps; vLLM's table has BLOCK_M 64, BLOCK_N 128, BLOCK_K 128, 8 warps, 4 stages there. AOT
    (triton 3.9, sm90, Mixtral T = 128): the table's row 96 / 103 registers at 96 KiB; BLOCK_K 128 at 8 warps and
    4 stages 64 / 64 registers at 192 KiB; at 4 warps and 3 stages 128 / 112 at 144 KiB; no spills. 7 alternating
    rounds of graph replays, ids given."""
    row = {"BLOCK_M": 64,
           "gate_up": {"BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 8, "num_warps": 8, "num_stages": 4, "tma": True},
           "down": {"BLOCK_N": 128, "BLOCK_K": 128, "GROUP_M": 1, "num_warps": 8, "num_stages": 4, "tma": True}}  # fmt: skip
    w4s3 = {"BLOCK_M": 64, **{g: {**row[g], "num_warps": 4, "num_stages": 3} for g in ("gate_up", "down")}}
    at_1 = {"bf16 table": ({}, None), "bf16 m<=8 s4": ({"num_stages": 4, "_rows": (0, 1)}, None),
            "bf16 m<=8 s5": ({"num_stages": 5, "_rows": (0, 1)}, None)}  # fmt: skip
    at_128 = {"bf16 table": ({}, None), "bf16 bk128 w8 s4": ({}, row), "bf16 bk128 w4 s3": ({}, w4s3)}
    for name, T, fwd, _ in _bf16_points(("mixtral-8x7b",), (1, 128)):
        _rounds_variants(timer, {"part": "mix26", "kind": "bf16", "preset": name, "T": T}, fwd,
                         at_1 if T == 1 else at_128, "16bit", rounds=7)  # fmt: skip


@triton.jit
def _read_codes(words_ptr, experts_ptr, out_ptr, stride_e, stride_row, STEPS, BLOCK_R: tl.constexpr,
                GROUP: tl.constexpr, TILES: tl.constexpr):  # fmt: skip
    """part_reads28: one program reads the code words of BLOCK_R rows of one expert over STEPS K steps (16 words a
    row a step), as the swapped decode's K loop does, and XORs them; rows at r * stride_row (GROUP 1) or in
    tile-major groups (stride_row a group's stride)."""
    pid = tl.program_id(0)
    e = tl.load(experts_ptr + pid // TILES).to(tl.int64)
    r = (pid % TILES) * BLOCK_R + tl.arange(0, BLOCK_R)
    if GROUP == 1:
        rows = words_ptr + e * stride_e + r * stride_row
    else:
        rows = words_ptr + e * stride_e + (r // GROUP) * stride_row + (r % GROUP) * 16
    j = tl.arange(0, 16)
    acc = tl.zeros((BLOCK_R, 16), tl.int32)
    for kk in range(0, STEPS):
        acc ^= tl.load(rows[:, None] + (kk * 16 * GROUP + j)[None, :])
    tl.store(out_ptr + pid * BLOCK_R + tl.arange(0, BLOCK_R), tl.xor_sum(acc, axis=1))


def part_reads28(timer) -> None:
    """Session 28 (written without a device), the access shape alone: gpt-oss-120b's gate_up codes (128 experts,
    5,760 rows, 23 K steps of 64 bytes) read by programs of 128 rows as the swapped decode's K loop reads them,
    no decode, row-major against tile-major groups of 64 rows, for 4 / 54 / 128 experts touched (T = 1 / 16 /
    large). GB/s of code bytes read (quant_bench's copy rate of the same call is the ceiling). If tile-major reads
    faster here, the access shape is a limit of the MXFP4 GEMMs; if not, tiles28's result is the decode's."""
    E, R, steps, BR = 128, 5760, 23, 128
    gen = torch.Generator(device="cuda").manual_seed(28)
    flat = torch.randint(
        -(2**31), 2**31 - 1, (E, R, steps * 16), dtype=torch.int32, device="cuda", generator=gen
    )
    tiled = tile_major(flat.view(E, R, steps, 16), 64)  # the packed copy's arrangement, on int32 words
    for touched in (4, 54, 128):
        experts = torch.randperm(E, device="cuda", generator=gen)[:touched].to(torch.int32)
        grid, tiles = (touched * (R // BR),), R // BR
        res = {}
        for name, words, group in (("row-major", flat, 1), ("tile-major 64", tiled, 64)):
            out = torch.empty(grid[0] * BR, dtype=torch.int32, device="cuda")
            fn = functools.partial(
                _read_codes[grid], words, experts, out, words.stride(0), words.stride(1), steps, BLOCK_R=BR,
                GROUP=group, TILES=tiles, num_warps=4, num_stages=3,
            )  # fmt: skip
            ms = timer(fn)["ms"]
            res[name] = out.clone()
            gbs = touched * R * steps * 64 / (ms * 1e-3) / 1e9
            emit({"part": "reads28", "what": name, "touched": touched, "ms": ms, "GBps": round(gbs, 1)})
        emit({"part": "reads28", "what": "same xor", "touched": touched,
              "equal": bool(torch.equal(res["row-major"], res["tile-major 64"]))})  # fmt: skip


def part_tiles28(timer) -> None:
    """Session 28 (written without a device): the packed MXFP4 decodes on tile-major codes (Mxfp4Config.row_group,
    mxfp4_pack.pack_codes(group=...)). Row-major, a program's K step reads 64 bytes in each of its 64-128 weight
    rows, rows 1440 bytes apart at gpt-oss-120b's width; bf16 weights give the same tiles 256 bytes per row and
    stream at 68-99% of the copy rate where MXFP4 stays at 23-53% (session 27). Grouped, the step is one run of
    row_group x 64 bytes. gpt-oss-120b at T = 1, 16, 128, 512, 7 alternating rounds of graph replays, ids given;
    every swapped row group must give the row-major swapped bits (same arithmetic, same order); the packed decode
    (other bits: another K order) row-major and at row group 64."""
    spec, qspec, gen, _, qw = _quant_preset("gpt-oss-120b", QuantScheme.mxfp4())
    sw = {"decode": "swapped"}
    variants = {"mxfp4 swapped": ({}, sw), "mxfp4 swapped g32": ({}, {**sw, "row_group": 32}),
                "mxfp4 swapped g64": ({}, {**sw, "row_group": 64}),
                "mxfp4 swapped g128": ({}, {**sw, "row_group": 128}),
                "mxfp4 packed": ({}, {"decode": "packed"}),
                "mxfp4 packed g64": ({}, {"decode": "packed", "row_group": 64})}  # fmt: skip
    for T in (1, 16, 128, 512):
        x = torch.randn((T, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
        r = routing(spec, T, "cuda", gen)
        fwd = lambda cfg, x=x, r=r: fused_moe(qspec, qw, x, routing=r, config=cfg)
        _rounds_variants(timer, {"part": "tiles28", "kind": "mxfp4", "preset": "gpt-oss-120b", "T": T}, fwd,
                         variants, "16bit", rounds=7)  # fmt: skip


def part_big20(timer) -> None:
    """Session 20, bf16 at T >= 2048 (issue 15: 75% of the floor): BLOCK_M 256 tiles of 256 x 128 (gate_up BLOCK_N
    64, its B tile 128 wide; down BLOCK_N 128) at 8 warps, against the table's BLOCK_M 128 row of 128 x 256. The
    same tile area and shared memory per stage (48 KiB), but each weight tile feeds twice the rows, so an
    expert's weights cross L2 -> SM half as often where it holds hundreds of rows (Mixtral-8x7B m = 1024 / 2048,
    Qwen2-57B 256 / 512 at T = 2048 / 4096). AOT (triton 3.9, sm90): 176 / 199 registers, no spill, 192 KiB at 4
    stages, 144 KiB at 3; 16 warps cannot hold a 256 x 256 accumulator (ptxas: 128 registers per thread). The
    five peer presets, 5 alternating rounds of graph replays, ids given."""
    variants = {"bf16 table": ({}, None), "bf16 bm256 s4": ({}, _bm_row(256, 64, 128, 8, 4)),
                "bf16 bm256 s3": ({}, _bm_row(256, 64, 128, 8, 3))}  # fmt: skip
    for name, T, fwd, _ in _bf16_points(PEER_PRESETS, (2048, 4096)):
        _rounds_variants(timer, {"part": "big20", "kind": "bf16", "preset": name, "T": T}, fwd, variants, "16bit",
                         rounds=5)  # fmt: skip


def part_fill20(timer) -> None:
    """Session 20: the fill rule's min_block_n 16 at decode sizes. At T <= 8 it narrows only one-expert launches:
    DeepSeek-V3's shared GEMM1 (I 2048; fp8 BLOCK_N 32 -> 16, 64 -> 128 programs; bf16 64 -> 16) while the routed
    grids hold >= 1.5 programs per SM already. late20 had block fp8 T = 1 at x1.010 [1.009-1.011] and T = 16 at
    x0.984: here T = 1 / 2 / 4 / 8 (the m <= 8 bucket), block fp8 and bf16 each against its own table, 9
    alternating rounds of graph replays, ids given."""
    fill16 = {"_fill": {"min_block_n": 16}}
    variants = {"fp8 table": ({}, None), "fp8 fill16": (fill16, None), "bf16 table": ({"_dc": "16bit"}, "bf16"),
                "bf16 fill16": ({"_dc": "16bit", **fill16}, "bf16")}  # fmt: skip
    for T, fwd in _fp8_points((1, 2, 4, 8)):
        _rounds_variants(timer, {"part": "fill20", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd, variants,
                         "fp8", rounds=9)  # fmt: skip


def _balanced(spec, T: int, gen):
    """Routing with exactly T k / E rows per expert (token t takes experts (t k + j) mod E, j < k: distinct, k <= E),
    weights drawn as routing() draws them."""
    from moe_cts.kernels.metadata import Routing

    k, E = spec.top_k, spec.num_experts
    ids = ((torch.arange(T, device="cuda")[:, None] * k + torch.arange(k, device="cuda")[None, :]) % E).int()
    w = torch.rand((T, k), generator=gen, device="cuda")
    return Routing(ids, (w / w.sum(1, keepdim=True)).float())


def part_bal20(timer) -> None:
    """Session 20, after Nsight Compute (ncu-bf16-t4096.txt): DeepSeek-V3's bf16 gate_up at T = 4096 moved 18.9 GB
    from DRAM (80% of its peak, L2 at 98%, hit rate 27%) for 15.0 GB of weights. Where an expert's rows span two
    M tiles (m ~ 128 = BLOCK_M: about half the experts), both tiles stream its weights, and the second read misses
    L2 when the tiles drift apart. The question before any kernel work: how much faster is the same forward
    when every expert holds exactly m = T k / E rows (one full tile at m = 128, no tails)? Random ids (the peer
    bench's draw) against balanced ids, the table's config, and random ids with half tails off; the m ~ 128
    points (DeepSeek-V3 and gpt-oss-120b T = 4096, Qwen3-235B-like T = 2048) and DeepSeek-V3 T = 2048 (m = 64).
    5 alternating rounds of graph replays, ids given."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    for name, tokens in (
        ("deepseek-v3", (2048, 4096)),
        ("gpt-oss-120b", (4096,)),
        ("E128k8H4096I1536", (2048,)),
    ):
        spec = routed(name)
        base = _base(spec, torch.bfloat16, "cuda", gen)
        for T in tokens:
            x = torch.randn((T, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
            r, rb = routing(spec, T, "cuda", gen), _balanced(spec, T, gen)

            def fwd(cfg, spec=spec, base=base, x=x, r=r, rb=rb):
                if cfg == "balanced":
                    return fused_moe(spec, base, x, routing=rb)
                return fused_moe(spec, base, x, routing=r, config=cfg)

            variants = {"random ids": ({}, None), "balanced ids": ({}, "balanced"),
                        "random ids, no half tails": ({"half_tail": False, "_rows": (-1, None)}, None)}  # fmt: skip
            _rounds_variants(timer, {"part": "bal20", "kind": "bf16", "preset": name, "T": T}, fwd, variants,
                             "16bit", rounds=5)  # fmt: skip
        base = None
        torch.cuda.empty_cache()


def part_merge20(timer) -> None:
    """Session 20: merged half tails (GemmTile.merge_tail) in the 16-bit m > 32 row: an expert's half tail runs in
    its previous tile's program, so its weights stream once (bal20: balanced ids were x1.16-1.28 at m ~ 128).
    AOT (triton 3.9, sm90): 254-255 registers, 224 KiB of shared memory at 4 stages (168 KiB at 3), GEMM2 spills
    8 B. Both GEMMs, GEMM1 alone, both at 3 stages, against the table; the five peer presets at T = 512 / 2048 /
    4096, 5 alternating rounds of graph replays, ids given, bits compared."""
    last = {"_rows": (-1, None), "merge_tail": True}
    variants = {"bf16 table": ({}, None), "bf16 merge": (last, None),
                "bf16 merge gate_up": ({**last, "_gemms": ("gate_up",)}, None),
                "bf16 merge s3": ({**last, "num_stages": 3}, None)}  # fmt: skip
    for name, T, fwd, _ in _bf16_points(PEER_PRESETS, (512, 2048, 4096)):
        _rounds_variants(timer, {"part": "merge20", "kind": "bf16", "preset": name, "T": T}, fwd, variants, "16bit",
                         rounds=5)  # fmt: skip


def _pdl_mode(mode: int) -> list:
    """A "_patch" that sets config.pdl() to `mode` for every dtype class (the 16-bit chain has no table entry)."""
    from moe_cts.kernels import config as cfgmod

    return [(cfgmod, "pdl", lambda _dc: mode)]


def part_pdl21b(timer) -> None:
    """Session 21, after pdl21 (at commit f03916f; removed with the launch-first mode it timed, which changed
    nothing: 16-bit PDL in either order x0.68 at Mixtral-8x7B T = 1 and x1.03 at gpt-oss-120b T = 1). When a kernel triggers while the one before it still runs (GEMM1 in 1.7
    waves at Mixtral T = 1), the next kernel's programs are placed on the SMs that are free then, perhaps many
    per SM, and stream from few SMs. config.PDL_AT_EXIT (no trigger: the next kernel launches when every program
    has exited, before the grid's completion) keeps the placement of a serial launch. 5 alternating rounds of
    graph replays, ids given, bits compared: block fp8 DeepSeek-V3 with its shared expert at T = 1 / 2 / 4 / 8 /
    16 (bf16 in the same rounds), the five peer presets in bf16 at T = 1 / 16 / 512."""
    for T, fwd in _fp8_points((1, 2, 4, 8, 16)):
        variants = {"fp8 table": ({}, None), "fp8 at exit": ({"_env": {"MOE_CTS_PDL": "exit"}}, None),
                    "fp8 no pdl": ({"_env": {"MOE_CTS_PDL": "0"}}, None),
                    "bf16 table": ({"_dc": "16bit"}, "bf16"),
                    "bf16 at exit": ({"_dc": "16bit", "_patch": _pdl_mode(3)}, "bf16")}  # fmt: skip
        _rounds_variants(timer, {"part": "pdl21b", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd, variants,
                         "fp8", rounds=5)  # fmt: skip
    variants = {"bf16 table": ({}, None), "bf16 wait first": ({"_patch": _pdl_mode(1)}, None),
                "bf16 at exit": ({"_patch": _pdl_mode(3)}, None)}  # fmt: skip
    for name, T, fwd, _ in _bf16_points(PEER_PRESETS, (1, 16, 512)):
        _rounds_variants(timer, {"part": "pdl21b", "kind": "bf16", "preset": name, "T": T}, fwd, variants, "16bit",
                         rounds=5)  # fmt: skip


def part_pdl21c(timer) -> None:
    """Session 21, after the 16-bit chain went to PDL at exit: the bf16 forward at DeepSeek-V3 width with its shared
    expert (quant_bench's baseline) at exit against serial launches, beside block fp8, T = 1 and 4096, 9
    alternating rounds of graph replays, ids given."""
    variants = {"fp8 table": ({}, None), "bf16 table": ({"_dc": "16bit"}, "bf16"),
                "bf16 no pdl": ({"_dc": "16bit", "_env": {"MOE_CTS_PDL": "0"}}, "bf16")}  # fmt: skip
    for T, fwd in _fp8_points((1, 4096)):
        _rounds_variants(timer, {"part": "pdl21c", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd, variants,
                         "fp8", rounds=9)  # fmt: skip


PDL13 = {"pdl": ({}, None), "no pdl": ({"_env": {"MOE_CTS_PDL": "0"}}, None)}


def part_pdl13(timer) -> None:
    """Session 13: programmatic dependent launch (the sm90 table's "pdl": each kernel of the chain waits for the
    earlier ones in gdc_wait, and the next one launches early) against serial launches (MOE_CTS_PDL=0), in
    alternating rounds of graph replays, bits compared. bf16: the five peer presets (routed) at T = 1, 16 and 4096
    with the ids given and at T = 1 with the router; block fp8 at DeepSeek-V3 width with
    its shared expert at T = 1, 16, 4096, and bf16 there (the fp8 / bf16 ratio)."""
    for name, T, fwd, fwd_router in _bf16_points(PEER_PRESETS, (1, 16, 4096)):
        _rounds_variants(timer, {"part": "pdl13", "kind": "bf16", "preset": name, "T": T}, fwd, PDL13, "16bit",
                         rounds=3)  # fmt: skip
        if T == 1:
            _rounds_variants(timer, {"part": "pdl13", "kind": "bf16 router", "preset": name, "T": T}, fwd_router,
                             PDL13, "16bit", rounds=3)  # fmt: skip
    for T, fwd in _fp8_points((1, 16, 4096)):
        variants = {**PDL13, "bf16 pdl": ({"_dc": "16bit"}, "bf16"),
                    "bf16 no pdl": ({"_dc": "16bit", "_env": {"MOE_CTS_PDL": "0"}}, "bf16")}  # fmt: skip
        _rounds_variants(timer, {"part": "pdl13", "kind": "fp8", "preset": "deepseek-v3", "T": T}, fwd, variants,
                         "fp8", rounds=5)  # fmt: skip


def _warm_clocks(seconds: float = 1.0) -> None:
    """Busy the GPU before the first timed point: a device call starts at idle clocks (345 MHz on the H200) and
    session 10's first points came out 5-7% slower than the same code timed later in the run (dec10, ab8,
    fill10: the table row measured first)."""
    a = torch.randn((4096, 4096), device="cuda", dtype=torch.bfloat16)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(20):
            a @ a
        torch.cuda.synchronize()


def main() -> int:
    global LOG
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--parts", default="profile,fp8,mxfp4,bf16")
    ap.add_argument("--baseline", type=Path, help="folder of the baseline kernel modules (part ab)")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    LOG = open(a.out / "probe.jsonl", "a")  # noqa: SIM115 (module-level log, closed at exit)
    timer = Timer(cpu=False, warmup_ms=10, rep_ms=40)
    _warm_clocks()
    parts = {"profile": part_profile, "fp8": part_fp8, "mxfp4": part_mxfp4, "bf16": part_bf16,
             "ab": lambda t: part_ab(t, a.baseline), "decode": part_decode, "sweep90": part_sweep90,
             "bf16dec": part_bf16dec, "router": part_router,
             "fp8dec": part_fp8dec, "fill": part_fill, "dec10": part_dec10,
             "ab8": lambda t: part_ab8(t, a.baseline), "fill10": part_fill10,
             "side10": part_side10, "stages16": part_stages16,
             "stages8": part_stages8, "tma11": part_tma11, "fp8s11": part_fp8s11,
             "pers12": part_pers12, "pair12": part_pair12, "half13": part_half13,
             "stack13": part_stack13, "dec13": part_dec13, "dec15": part_dec15,
             "pdl13": part_pdl13, "dec16": part_dec16, "slot16": part_slot16, "down16": part_down16,
             "router17": part_router17, "drop18": part_drop18, "hw18": part_hw18, "dec18": part_dec18,
             "occ19": part_occ19, "occ19b": part_occ19b,
             "dec19": part_dec19,
             "occ19c": part_occ19c,
             "mid19": part_mid19, "big20": part_big20, "mix26": part_mix26, "swap25": part_swap25,
             "tiles28": part_tiles28, "reads28": part_reads28,
             "fill20": part_fill20,
             "bal20": part_bal20,
             "merge20": part_merge20,
             "pdl21b": part_pdl21b,
             "pdl21c": part_pdl21c}  # fmt: skip
    for p in a.parts.split(","):
        try:
            parts[p](timer)
        except Exception as e:  # one part's failure does not lose the others
            emit({"part": p, "error": f"{type(e).__name__}: {str(e)[:500]}"})
        torch.cuda.empty_cache()
    print("\n== summary ==")
    for r in OUT:
        if r.get("part", "").startswith("ab-"):
            print(f"{r['part']} {r['preset']} T={r['T']} equal={r['bitwise_equal']} new {r['ms']:.4f} "
                  f"old {r['baseline_ms']:.4f} x{r['speedup']:.3f}")  # fmt: skip
        elif r.get("part") == "router-ab":
            print(f"router {r['preset']} T={r['T']} ids {r['ids_ms']:.4f} fused {r['fwd_ms_fused']:.4f} "
                  f"({r['overhead_fused'] * 100:+.1f}%) separate {r['fwd_ms_separate']:.4f} "
                  f"({r['overhead_separate'] * 100:+.1f}%) route {r['route_ms_fused'] * 1e3:.1f} / "
                  f"{r['route_ms_separate'] * 1e3:.1f} us ids={r['ids_equal']} logits={r['logits_equal']} "
                  f"w {r['w_max_rel']:.1e}")  # fmt: skip
        elif r.get("part") == "reads28":
            print(f"reads28 {r['touched']} experts {r['what']}: "
                  + (f"{r['ms'] * 1000:.1f} us {r['GBps']} GB/s" if "ms" in r else f"equal={r['equal']}"))  # fmt: skip
        elif r.get("part") == "decode" and "ms" in r:
            print(f"decode {r['preset']} {r['what']} {r['ms'] * 1000:.1f} us")
        elif r.get("part") in ("profile", "decode", "hw18-kernels"):
            top = ", ".join(f"{k[:28]} {v:.1f}" for k, v in list(r.get("kernels", {}).items())[:6])
            extra = {k: round(v, 4) for k, v in r.items() if k.endswith("_ms")}
            print(f"profile {r.get('what')} {r.get('preset')} T={r.get('T')} {extra} | {top}")
        elif r.get("part") in (
            "dec10",
            "fill10",
            "side10",
            "stages16",
            "stages8",
            "tma11",
            "fp8s11",
            "pers12",
            "pair12",
            "half13",
            "stack13",
            "dec13",
            "pdl13",
            "dec15",
            "dec16",
            "slot16",
            "down16",
            "router17",
            "drop18",
            "hw18",
            "dec18",
            "occ19",
            "occ19b",
            "dec19",
            "occ19c",
            "mid19",
            "big20",
            "fill20",
            "bal20",
            "merge20",
            "swap25",
            "mix26",
            "tiles28",
        ):
            cfg = r.get("cfg")
            cs = cfg if isinstance(cfg, str) else json.dumps(cfg, separators=(",", ":"))
            bits = {True: " same-bits", False: " BITS DIFFER"}.get(r.get("bitwise_equal"), "")
            print(f"{r['part']} {r.get('kind')} {r.get('preset')} T={r.get('T')} {r.get('ms', float('nan')):.4f} ms "
                  f"x{r.get('vs_table', 1.0):.3f}{bits} {r.get('error', '')[:60]} {cs[:120]}")  # fmt: skip
            for name, us, gap in r.get("launches") or ():
                print(f"      {us:7.2f} us  gap {gap:5.2f}  {name}")
        elif "ms" in r or "error" in r:
            cfg = r.get("cfg")
            cs = cfg if isinstance(cfg, str) else json.dumps(cfg, separators=(",", ":"))
            ms = r.get("ms")
            print(f"{r.get('part')} {r.get('preset', '')} T={r.get('T')} {'-' if ms is None else f'{ms:.3f}'} ms "
                  f"x{r.get('speedup', r.get('vs_table', 0)):.2f} {r.get('error', '')[:60]} {cs[:150]}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
