"""Warp-specialized grouped GEMMs with TMA activation rows against the table's tiles (a GPU diagnostic, not a test).

    python ci/gpu/ws_probe.py --out DIR [--points deepseek-v3:4096,...]

Question (issue 15, T >= 2048 at 75% of the floor): does Triton's Hopper warp specialization (`tl.range(...,
warp_specialize=True)`: a producer warp group issuing TMA copies, two consumer warp groups of 64 rows each running
wgmma) make the bf16 grouped GEMMs faster where they are compute-bound? Hopper's automatic warp specialization
needs every operand through a descriptor (a pointer gather of rows in the loop does not compile), so the
probe's kernels read their activation rows in slot order:

    GEMM1  x_slots[s] = x[sorted_ids[s] // k]  (one gather pass, timed apart: "gather")
           act[a] = silu(x_slots @ w13[e, gate].T) * (x_slots @ w13[e, up].T)    a = sorted_ids[s]
    GEMM2  act_slots[s] = act[sorted_ids[s]]   (what GEMM1 would write if it stored rows in slot order)
           out[a] = (act_slots @ w2[e].T) * route_w[a]

Per point: the table's m > 32 row (BLOCK_M 128, half tails) and the same without half tails, then each variant;
do_bench medians (L2 flushed), each GEMM alone; the outputs compared bitwise with the table's (same K order per
element: the bits should match). The probe's kernels have no half tails, no bias, concat SiLU only. Routed experts,
random top-k ids (quant_bench.routing). JSON lines in DIR/ws.jsonl, a table at the end.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch
import triton
import triton.language as tl
import triton.testing

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

from quant_bench import routing  # noqa: E402
from tune import routed  # noqa: E402

import moe_cts.kernels  # noqa: E402
from moe_cts.kernels.config import GemmTile  # noqa: E402
from moe_cts.kernels.grouped_gemm import launch_down, launch_gate_up  # noqa: E402
from moe_cts.reference.spec import MoEWeights, weight_shapes  # noqa: E402


@triton.jit
def _coords(num_m_blocks, N, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    pid = tl.program_id(0)
    per_group = GROUP_M * tl.cdiv(N, BLOCK_N)
    first_m = (pid // per_group) * GROUP_M
    gsize = tl.minimum(num_m_blocks - first_m, GROUP_M)
    return first_m + (pid % per_group) % gsize, (pid % per_group) // gsize


@triton.jit
def gate_up_ws_kernel(x_ptr, w13_ptr, act_ptr, sorted_ids_ptr, expert_of_block_ptr, num_padded_ptr,
                      num_assignments, I, H, P, E, num_m_blocks, stride_act_a,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                      WS: tl.constexpr, STAGES: tl.constexpr):  # fmt: skip
    # no early return: Hopper's warp specialization pass asserts on a branch around its loop (triton 3.9)
    a_desc = tl.make_tensor_descriptor(x_ptr, shape=[P, H], strides=[H, 1], block_shape=[BLOCK_M, BLOCK_K])
    w_desc = tl.make_tensor_descriptor(
        w13_ptr, shape=[E, 2, I, H], strides=[2 * I * H, I * H, H, 1], block_shape=[1, 2, BLOCK_N, BLOCK_K]
    )
    pid_m, pid_n = _coords(num_m_blocks, I, BLOCK_N, GROUP_M)
    expert = tl.load(expert_of_block_ptr + pid_m)
    live = (pid_m * BLOCK_M < tl.load(num_padded_ptr)) & (expert >= 0)
    expert = tl.maximum(expert, 0)
    acc = tl.zeros((BLOCK_M, 2 * BLOCK_N), dtype=tl.float32)
    for k in tl.range(0, tl.where(live, tl.cdiv(H, BLOCK_K), 0), warp_specialize=WS, num_stages=STAGES):
        a = a_desc.load([pid_m * BLOCK_M, k * BLOCK_K])
        w = w_desc.load([expert, 0, pid_n * BLOCK_N, k * BLOCK_K]).reshape(2 * BLOCK_N, BLOCK_K)
        acc = tl.dot(a, w.T, acc)
    g, u = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N)), (0, 2, 1)))
    act = g * tl.sigmoid(g) * u
    ids = tl.load(sorted_ids_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    row_ok = (ids < num_assignments) & live
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ptrs = act_ptr + ids.to(tl.int64)[:, None] * stride_act_a + offs_n[None, :]
    tl.store(ptrs, act.to(act_ptr.dtype.element_ty), mask=row_ok[:, None] & (offs_n[None, :] < I))


@triton.jit
def down_ws_kernel(a_ptr, w2_ptr, out_ptr, rw_ptr, sorted_ids_ptr, expert_of_block_ptr, num_padded_ptr,
                   num_assignments, H, I, P, E, num_m_blocks, stride_out_a,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                   WS: tl.constexpr, STAGES: tl.constexpr):  # fmt: skip
    a_desc = tl.make_tensor_descriptor(a_ptr, shape=[P, I], strides=[I, 1], block_shape=[BLOCK_M, BLOCK_K])
    w_desc = tl.make_tensor_descriptor(
        w2_ptr, shape=[E, H, I], strides=[H * I, I, 1], block_shape=[1, BLOCK_N, BLOCK_K]
    )
    pid_m, pid_n = _coords(num_m_blocks, H, BLOCK_N, GROUP_M)
    expert = tl.load(expert_of_block_ptr + pid_m)
    live = (pid_m * BLOCK_M < tl.load(num_padded_ptr)) & (expert >= 0)
    expert = tl.maximum(expert, 0)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in tl.range(0, tl.where(live, tl.cdiv(I, BLOCK_K), 0), warp_specialize=WS, num_stages=STAGES):
        a = a_desc.load([pid_m * BLOCK_M, k * BLOCK_K])
        w = w_desc.load([expert, pid_n * BLOCK_N, k * BLOCK_K]).reshape(BLOCK_N, BLOCK_K)
        acc = tl.dot(a, w.T, acc)
    ids = tl.load(sorted_ids_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    row_ok = (ids < num_assignments) & live
    acc = acc * tl.load(rw_ptr + ids, mask=row_ok, other=0.0)[:, None]
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ptrs = out_ptr + ids.to(tl.int64)[:, None] * stride_out_a + offs_n[None, :]
    tl.store(ptrs, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & (offs_n[None, :] < H))


# (label, BLOCK_N, num_warps, WS, stages); BLOCK_M 128, BLOCK_K 64, GROUP_M 8
GU = [("ws bn64 s4", 64, 4, True, 4), ("ws bn128 s3", 128, 4, True, 3), ("ws bn128 s4", 128, 4, True, 4),
      ("tmaA bn128 w8 s4", 128, 8, False, 4)]  # fmt: skip
DN = [("ws bn128 s4", 128, 4, True, 4), ("ws bn128 s5", 128, 4, True, 5), ("ws bn256 s3", 256, 4, True, 3),
      ("tmaA bn256 w8 s4", 256, 8, False, 4)]  # fmt: skip
TABLE_GU = GemmTile(128, 64, 8, 8, 4, tma=True, half_tail=True)
TABLE_DN = GemmTile(256, 64, 8, 8, 4, tma=True, half_tail=True)

OUT: list[dict] = []


def emit(log, rec):
    OUT.append(rec)
    log.write(json.dumps(rec) + "\n")
    log.flush()
    print(json.dumps(rec)[:300], flush=True)


def bench(fn) -> float:
    return float(triton.testing.do_bench(fn, warmup=25, rep=150, return_mode="median"))


def _ws_info(compiled) -> str:
    """How the compiled kernel was specialized: warp_specialize partitions and their warps (TTGIR)."""
    try:
        ir = compiled.asm["ttgir"]
    except Exception:
        return "?"
    parts = re.findall(r"partition\d+\([^)]*\) num_warps\((\d+)\)", ir)
    regs = re.findall(r"requestedRegisters = array<i32: ([0-9, ]+)>", ir)
    return f"ws={'ttg.warp_specialize' in ir} parts={parts} regs={regs} n_regs={getattr(compiled, 'n_regs', '?')}"


def point(log, name: str, T: int) -> None:
    spec = routed(name)
    E, k, H, I = spec.num_experts, spec.top_k, spec.hidden_size, spec.intermediate_size
    gen = torch.Generator(device="cuda").manual_seed(0)
    w = MoEWeights(**{
        n: torch.randn(s, generator=gen, device="cuda", dtype=torch.bfloat16).div_(s[-1] ** 0.5)
        for n, s in weight_shapes(spec).items()
    })  # fmt: skip
    x = torch.randn((T, H), generator=gen, device="cuda", dtype=torch.bfloat16)
    r = routing(spec, T, "cuda", gen)
    twf = r.topk_weights.reshape(-1).float().contiguous()
    meta = moe_cts.kernels.align(spec, r.topk_ids, 128)
    P, nmb, A = meta.sorted_ids.numel(), meta.num_blocks, T * k
    act = torch.empty((A, I), device="cuda", dtype=torch.bfloat16)
    out = torch.empty((A, H), device="cuda", dtype=torch.bfloat16)
    base = {"preset": name, "T": T, "m": -(-A // E)}

    def gu(tile):
        return lambda: launch_gate_up(x, w.w13, None, act, meta, gated=True, interleaved=False, activation="silu",
                                      tile=tile)  # fmt: skip

    def dn(tile):
        return lambda: launch_down(act, w.w2, None, out, meta, tile=tile, route_weights=twf)

    ref = {}
    for kind, fn_of, tab in (("gate_up", gu, TABLE_GU), ("down", dn, TABLE_DN)):
        for label, tile in (("table", tab), ("table no half tail", GemmTile(*[getattr(tab, f) for f in
                            ("BLOCK_N", "BLOCK_K", "GROUP_M", "num_warps", "num_stages")], tma=True))):  # fmt: skip
            ms = bench(fn_of(tile))
            ref.setdefault(kind, ms)
            emit(log, {**base, "kernel": kind, "variant": label, "ms": ms, "vs_table": ref[kind] / ms})
    torch.cuda.synchronize()
    gu(TABLE_GU)()
    act_ref = act.clone()
    dn(TABLE_DN)()
    out_ref = out.clone()

    valid = meta.sorted_ids < A
    src = torch.where(valid, meta.sorted_ids // k, 0).long()
    x_slots = torch.empty((P, H), device="cuda", dtype=torch.bfloat16)
    emit(log, {**base, "kernel": "gate_up", "variant": "gather x_slots",
               "ms": bench(lambda: torch.index_select(x, 0, src, out=x_slots))})  # fmt: skip
    act_slots = act_ref[torch.where(valid, meta.sorted_ids, 0).long()].contiguous()

    def gu_ws(bn, nw, ws, st):
        grid = (nmb * triton.cdiv(I, bn),)
        return lambda: gate_up_ws_kernel[grid](x_slots, w.w13, act, meta.sorted_ids, meta.expert_of_block,
                                               meta.num_padded, A, I, H, P, E, nmb, act.stride(0), BLOCK_M=128,
                                               BLOCK_N=bn, BLOCK_K=64, GROUP_M=8, WS=ws, STAGES=st, num_warps=nw)  # fmt: skip

    def dn_ws(bn, nw, ws, st):
        grid = (nmb * triton.cdiv(H, bn),)
        return lambda: down_ws_kernel[grid](act_slots, w.w2, out, twf, meta.sorted_ids, meta.expert_of_block,
                                            meta.num_padded, A, H, I, P, E, nmb, out.stride(0), BLOCK_M=128,
                                            BLOCK_N=bn, BLOCK_K=64, GROUP_M=8, WS=ws, STAGES=st, num_warps=nw)  # fmt: skip

    for kind, variants, make, dst, want in (
        ("gate_up", GU, gu_ws, act, act_ref),
        ("down", DN, dn_ws, out, out_ref),
    ):
        for label, *tile in variants:
            dst.zero_()
            f = make(*tile)
            try:
                ck = f()
                torch.cuda.synchronize()
                same = bool(torch.equal(dst, want))
                ms = bench(f)
                emit(log, {**base, "kernel": kind, "variant": label, "ms": ms, "vs_table": ref[kind] / ms,
                           "same_bits": same, "ir": _ws_info(ck)})  # fmt: skip
            except Exception as err:  # record, go on
                emit(
                    log,
                    {**base, "kernel": kind, "variant": label, "error": f"{type(err).__name__}: {err}"[:300]},
                )
    for kind, fn_of, tab in (("gate_up", gu, TABLE_GU), ("down", dn, TABLE_DN)):  # drift check
        ms = bench(fn_of(tab))
        emit(log, {**base, "kernel": kind, "variant": "table again", "ms": ms, "vs_table": ref[kind] / ms})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--points", default="deepseek-v3:4096,E128k8H4096I1536:4096,gpt-oss-120b:4096,"
                    "qwen2-57b-a14b:2048,E128k8H4096I1536:2048,deepseek-v3:2048,qwen2-57b-a14b:4096,"
                    "mixtral-8x7b:4096,gpt-oss-120b:2048,mixtral-8x7b:2048")  # fmt: skip
    args = ap.parse_args(argv)
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(Path(args.out) / "ws.jsonl", "w") as log:
        for p in args.points.split(","):
            name, T = p.rsplit(":", 1)
            try:
                point(log, name, int(T))
            except Exception as err:
                emit(log, {"preset": name, "T": int(T), "error": f"{type(err).__name__}: {err}"[:300]})
            torch.cuda.empty_cache()  # the point's tensors died with its frame
            print(f"-- {p} done at {time.time() - t0:.0f} s", flush=True)
    print("== summary ==")
    for r in OUT:
        if "ms" in r:
            print(f"{r['preset'][:16]:16s} {r['T']:5d} {r['kernel']:8s} {r['variant']:20s} {r['ms']:7.3f} "
                  f"x{r.get('vs_table', float('nan')):.3f} {'' if r.get('same_bits', True) else 'OTHER BITS'} "
                  f"{r.get('ir', '')[:90]}")  # fmt: skip
        else:
            print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
