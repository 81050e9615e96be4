"""fp8 diagnostics on the GPU (issue 13): the fp8 MMA's accumulation error, the staged gemm2 of the quantized
must-pass cases taken apart, and an fp8 tile sweep at DeepSeek-V3 width.

    python ci/gpu/fp8_diag.py --out DIR [--parts acc,cases,sweep]

acc     one (64, K) x (K, 64) tile of random e4m3fn values, tl.dot chained over BLOCK_K tiles
        (acc = tl.dot(a, b, acc)) and promoted per tile (acc += tl.dot(a, b)), against the float64 product:
        max |err| / sum|a||b| and max |err| / (sqrt(K) sum|a||b|) per K; the same values as bf16 operands
cases   each named must-pass case's gemm2 stage on the GPU: the kernel's requantized codes against the oracle's
        (flips), the kernel output against float64 of the kernel's own codes (accumulation), against the oracle
        and its bound (the verdict); arrays to DIR/<case>.npz
sweep   fused_moe in block fp8 at DeepSeek-V3 width (ids given), the table and a few tile configs per T,
        CUDA-graph replays timed with do_bench (median, L2 flushed)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import triton
import triton.language as tl


@triton.jit
def _probe(a_ptr, b_ptr, c_ptr, K, BK: tl.constexpr, CHAIN: tl.constexpr):
    m = tl.arange(0, 64)
    n = tl.arange(0, 64)
    k = tl.arange(0, BK)
    acc = tl.zeros((64, 64), dtype=tl.float32)
    for k0 in range(0, K, BK):
        a = tl.load(a_ptr + m[:, None] * K + (k0 + k)[None, :])
        b = tl.load(b_ptr + n[None, :] * K + (k0 + k)[:, None])
        if CHAIN:
            acc = tl.dot(a, b, acc)
        else:
            acc += tl.dot(a, b)
    tl.store(c_ptr + m[:, None] * 64 + n[None, :], acc)


def part_acc() -> list[dict]:
    rows = []
    g = torch.Generator(device="cuda").manual_seed(0)
    for sign in ("mixed", "positive"):
        for K in (32, 64, 128, 256, 1024, 4096, 7168):
            a = torch.randn((64, K), generator=g, device="cuda")
            b = torch.randn((64, K), generator=g, device="cuda")
            if sign == "positive":
                a, b = a.abs(), b.abs()
            a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn)
            exact = a8.double() @ b8.double().T
            mag = a8.double().abs() @ b8.double().abs().T
            for dtype in ("fp8", "bf16"):
                for chain in (True, False):
                    for bk in (64, 128):
                        if K % bk:
                            continue
                        c = torch.empty((64, 64), device="cuda", dtype=torch.float32)
                        aa, bb = (
                            (a8, b8) if dtype == "fp8" else (a8.to(torch.bfloat16), b8.to(torch.bfloat16))
                        )
                        _probe[(1,)](aa, bb, c, K, BK=bk, CHAIN=chain, num_warps=4)
                        rel = ((c.double() - exact).abs() / mag).max().item()
                        rows.append({"sign": sign, "K": K, "dtype": dtype, "chain": chain, "BK": bk,
                                     "max_err_over_mag": rel, "over_sqrtK": rel / math.sqrt(K),
                                     "log2": math.log2(rel) if rel > 0 else None})  # fmt: skip
    print(
        f"{'sign':8s} {'K':>5s} {'dt':4s} {'chain':5s} {'BK':>3s} {'max|err|/mag':>12s} {'log2':>6s} {'/sqrtK':>9s}"
    )
    for r in rows:
        print(f"{r['sign']:8s} {r['K']:5d} {r['dtype']:4s} {r['chain']!s:5s} {r['BK']:3d} "
              f"{r['max_err_over_mag']:12.3e} {r['log2'] or float('-inf'):6.1f} {r['over_sqrtK']:9.2e}")  # fmt: skip
    return rows


def part_cases(names: list[str], out: Path, device: str = "cuda:0") -> list[dict]:
    from moe_cts.conformance.engine import quant_tolerance, runner, sandbox
    from moe_cts.conformance.engine.compare import compare
    from moe_cts.conformance.engine.devices import select_device
    from moe_cts.conformance.engine.must_pass import must_pass_cases
    from moe_cts.conformance.impls.registry import get_implementation
    from moe_cts.kernels.fp8_gemm import quantize_rows
    from moe_cts.reference import numpy_quant

    dev = select_device(device)
    impl = get_implementation("triton")
    cases = {c.name: c for c in must_pass_cases()}
    res = []
    for name in names:
        case = cases[name]
        s = runner._Session(impl, case, dev)
        oracle = numpy_quant.gate_up(s.spec, s.qw, s.x, s.ids)
        act = s.rounded(oracle.act)
        T, k, I = act.shape
        ref, e_eo = quant_tolerance.down_bounds(s.model, s.spec, s.qw, s.qv, sandbox.as_np(act), s.ids)
        got = sandbox.as_np(s.call("down", s.inputs.with_feeds(topk_ids=s.ids_tensor(s.ids), act=act)))
        cmp = compare(got, s.stored(ref), e_eo, mask=s.kept[..., None] & s.mask(2), floor=s.model.tiny)
        # the kernel's own requantization of act, and the oracle's
        aq_gpu, sa_gpu = quantize_rows(s.spec, act.reshape(T * k, I), s.qw.a2_scale)
        aq_val = aq_gpu.float().double().cpu().numpy()
        gs = s.spec.quant.act_group if s.spec.quant.method == "fp8_block" else I
        sa = np.repeat(sa_gpu.double().cpu().numpy(), gs, axis=1)[:, :I]
        kern_act = (aq_val * sa).reshape(T, k, I)
        a_np = sandbox.as_np(act).reshape(T * k, I)
        ora_act = numpy_quant.quantize_act(s.spec, a_np, s.qw.a2_scale).reshape(T, k, I)
        flips = int((kern_act != ora_act).sum())
        # float64 GEMM2 of the kernel's own requantized act: what's left is accumulation and storage
        from moe_cts.reference import numpy_oracle as npo

        own = npo.down(s.spec, s.qv.val, kern_act, s.ids)
        kept = s.kept[..., None] & np.ones_like(got, bool)
        err_acc = np.abs(got - own)[kept]
        bound = (e_eo + s.model.tiny)[kept]
        ratio = np.abs(got - ref)[kept] / bound
        i = int(np.argmax(ratio))
        rec = {
            "case": name, "max_ratio": cmp.max_ratio, "p99": cmp.p99_ratio, "rms": cmp.rms_ratio, "bias_z": cmp.bias_z, "act_flips": flips,
            "act_elems": int(kern_act.size), "worst": {"got": float(got[kept][i]), "ref": float(ref[kept][i]),
            "own": float(own[kept][i]), "bound": float(bound[i]), "err_vs_own": float(err_acc[i])},
            "max_err_vs_own_over_bound": float((err_acc / bound).max()),
        }  # fmt: skip
        np.savez_compressed(out / f"{name}.npz", got=got, ref=ref, bound=e_eo, own=own, kern_act=kern_act,
                            ora_act=ora_act, act=a_np, kept=s.kept)  # fmt: skip
        print(json.dumps(rec))
        res.append(rec)
    return res


def part_sweep(tokens: list[int]) -> list[dict]:
    """Block fp8 at DeepSeek-V3 width, ids given: the table's config and candidates per bucket, each forward a
    CUDA-graph replay timed like quant_bench.py (do_bench median, L2 flushed), our bf16 path beside it."""
    here = Path(__file__).resolve().parent
    sys.path[:0] = [str(here), str(here.parent / "bench")]
    from bench_timing import Timer, capture_graph
    from quant_bench import _base, quantized, routing

    from moe_cts.kernels import fused_moe
    from moe_cts.kernels.config import last_config
    from moe_cts.reference import presets
    from moe_cts.reference.quant import QuantScheme

    spec = presets.get("deepseek-v3")
    qspec = spec.replace(quant=QuantScheme.fp8_block())
    gen = torch.Generator(device="cuda").manual_seed(0)
    base = _base(spec, torch.bfloat16, "cuda", gen)
    qw = quantized(qspec, base, gen)
    timer = Timer(cpu=False, warmup_ms=10, rep_ms=40)

    def tile(bn, bk, w, st, gm=8):
        return {"BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": gm, "num_warps": w, "num_stages": st}

    cands = {
        "small": [  # m = T k / E <= 8: decode
            (16, tile(64, 128, 4, 4, 1), tile(64, 128, 4, 4, 1)),
            (16, tile(32, 128, 4, 6, 1), tile(64, 128, 4, 6, 1)),
            (16, tile(64, 128, 4, 8, 1), tile(64, 128, 4, 8, 1)),
            (16, tile(128, 128, 4, 4, 1), tile(128, 128, 4, 4, 1)),
        ],
        "mid": [
            (32, tile(128, 128, 8, 4), tile(128, 128, 8, 4)),
            (16, tile(128, 128, 4, 6), tile(128, 128, 4, 6)),
            (64, tile(128, 128, 4, 4), tile(128, 128, 4, 4)),
        ],
        "large": [
            (64, tile(256, 128, 8, 3), tile(128, 128, 4, 4)),
            (64, tile(128, 128, 4, 4), tile(128, 128, 4, 4)),
            (64, tile(256, 128, 8, 2), tile(256, 128, 8, 2)),
            (128, tile(128, 128, 8, 2), tile(128, 128, 8, 2)),
        ],
    }

    def replay_ms(fn) -> float:
        g = capture_graph(fn)
        try:
            return timer(g[0].replay)["ms"]
        finally:
            del g

    res = []
    for T in tokens:
        x = torch.randn((T, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
        r = routing(spec, T, "cuda", gen)
        m = T * spec.top_k / spec.num_experts
        group = "small" if m <= 8 else "mid" if m <= 32 else "large"
        bf = replay_ms(lambda x=x, r=r: fused_moe(spec, base, x, routing=r))
        dq = replay_ms(lambda x=x, r=r: fused_moe(qspec, qw, x, routing=r))
        default = last_config().to_dict()
        print(
            f"T={T} bf16 {bf:.3f} ms | fp8 table {dq:.3f} ms ({bf / dq:.2f}x)  {json.dumps(default)}",
            flush=True,
        )
        res.append({"T": T, "bf16_ms": bf, "fp8_table_ms": dq, "table": default})
        for bm, gu, dn in cands[group]:
            cfg = {"BLOCK_M": bm, "gate_up": gu, "down": dn}
            try:
                ms = replay_ms(lambda cfg=cfg, x=x, r=r: fused_moe(qspec, qw, x, routing=r, config=cfg))
            except Exception as e:  # a config that does not compile or fit is recorded, the sweep goes on
                ms = None
                print("  error", type(e).__name__, str(e)[:200])
            print(f"  {ms if ms is None else round(ms, 3)} ms  bf16/fp8 {bf / ms if ms else 0:.2f}  {json.dumps(cfg)}",
                  flush=True)  # fmt: skip
            res.append({"T": T, "cfg": cfg, "ms": ms, "bf16_ms": bf})
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--parts", default="acc,cases,sweep")
    ap.add_argument("--cases", default="quant-deepseek-v3-fp8-block,quant-mixtral-fp8-per-tensor")
    ap.add_argument("--tokens", default="1,16,128,512,4096")
    ap.add_argument("--device", default="cuda:0")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = args.parts.split(",")
    doc = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "triton": triton.__version__,
    }
    print(json.dumps(doc), flush=True)
    for p, fn in (
        ("acc", part_acc),
        ("cases", lambda: part_cases(args.cases.split(","), out, args.device)),
        ("sweep", lambda: part_sweep([int(t) for t in args.tokens.split(",")])),
    ):
        if p in parts:
            try:
                doc[p] = fn()
            except Exception as e:  # one part's failure is recorded; the others still run
                import traceback

                traceback.print_exc()
                doc[p] = {"error": f"{type(e).__name__}: {e}"}
            (out / "fp8_diag.json").write_text(json.dumps(doc, indent=1, default=str))


if __name__ == "__main__":
    main()
