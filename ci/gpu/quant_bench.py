"""Quantized kernels on the GPU at full model size (issue 13): speed against our bf16 path in the same run, the
T = 50,000 fp8 run, and run-to-run bitwise equality.

    python ci/gpu/quant_bench.py --out DIR                 # H200: DeepSeek-V3 block fp8, gpt-oss-120b MXFP4
    python ci/gpu/quant_bench.py --cpu-smoke --out DIR     # interpreter, scaled presets: checks the plumbing

    point      ids given (uniform random top-k, the same for both paths), each path a CUDA-graph replay timed with
               bench_timing.Timer (do_bench median, L2 flushed), in ROUNDS alternating rounds (bf16, quantized,
               bf16, ...): ms_bf16 / ms_q are the medians of the rounds, speedup the median of the rounds' ratios.
               One median per path drifted by up to 5-9% between consecutive points on the H200 at T = 4096
               (session 12: the same fp8 tiles 6.75 and 6.95 ms a minute apart), so one pair of medians is not
               a ratio to report; alternating rounds see the same drift on both sides.
    floor      touched experts' weight bytes (bf16: 2 B/param; fp8: 1 B + fp32 block scales; MXFP4: 0.5 B + 1 B per
               32) / copy bandwidth measured in this run
    speedup    bf16 ms / quantized ms

Weights are random codes quantized on the device (fp8: per 128x128 block amax; MXFP4: random nibbles with E8M0
scales near 2^-6): the speed and the fault checks do not depend on the values. Accuracy against the float64
oracle is the conformance suite's job (`moe-cts certify`: the quantized must-pass cases).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

# --cpu-smoke runs the kernels on the interpreter: TRITON_INTERPRET must be set before triton and the kernels
# are imported (they read it at import), not in main()
if "--cpu-smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_timing import Timer, capture_graph, measure_ceilings

from moe_cts.kernels import Routing, fused_moe
from moe_cts.reference import presets
from moe_cts.reference.quant import QuantScheme
from moe_cts.reference.qweights import QuantizedMoEWeights, QuantTensor
from moe_cts.reference.spec import MoEWeights, weight_shapes

TOKENS = (1, 16, 128, 512, 4096)
#: alternating timing rounds per point (module docstring)
ROUNDS = 5
FP8_MAX = 448.0


def _base(spec, dtype, dev, gen) -> MoEWeights:
    """Float weights at full size on the device (the bf16 path's, and the quantized path's router/biases)."""
    shapes = weight_shapes(spec)
    w = {
        n: (torch.randn(s, generator=gen, device=dev, dtype=torch.float32) * 0.02).to(dtype)
        for n, s in shapes.items()
    }
    return MoEWeights(**w)


def _fp8_block(t: torch.Tensor) -> QuantTensor:
    """(…, N, K) float -> e4m3fn codes with fp32 scales per 128 x 128 block (N, K multiples of 128 here)."""
    *lead, N, K = t.shape
    b = t.float().reshape(*lead, N // 128, 128, K // 128, 128)
    s = (b.abs().amax(dim=(-3, -1)) / FP8_MAX).clamp(min=1e-12)
    q = (b / s[..., :, None, :, None]).to(torch.float8_e4m3fn).view(torch.uint8).reshape(t.shape)
    return QuantTensor(q.contiguous(), s.contiguous(), "e4m3fn", (128, 128), "float32")


def _mxfp4(t: torch.Tensor, gen) -> QuantTensor:
    *lead, N, K = t.shape
    codes = torch.randint(0, 256, (*lead, N, K // 2), generator=gen, device=t.device, dtype=torch.uint8)
    scales = torch.randint(119, 124, (*lead, N, K // 32), generator=gen, device=t.device, dtype=torch.uint8)
    return QuantTensor(codes, scales, "e2m1", (1, 32), "e8m0")


def quantized(spec, base: MoEWeights, gen) -> QuantizedMoEWeights:
    names = [n for n in ("w13", "w2", "shared_w13", "shared_w2") if getattr(base, n) is not None]
    mx = spec.quant.method == "mxfp4"
    qts = {n: (_mxfp4(getattr(base, n), gen) if mx else _fp8_block(getattr(base, n))) for n in names}
    return QuantizedMoEWeights(base=base, **qts)  # base keeps the router and biases; its experts are not read


def weight_bytes(spec, touched: int, kind: str) -> float:
    per = (spec.w13_rows * spec.hidden_size + spec.hidden_size * spec.intermediate_size) * touched
    return {"bf16": 2.0, "fp8": 1.0 + 4.0 / (128 * 128), "mxfp4": 0.5 + 1.0 / 32}[kind] * per


def routing(spec, T, dev, gen) -> Routing:
    ids = torch.rand((T, spec.num_experts), generator=gen, device=dev).topk(spec.top_k, dim=1).indices.int()
    w = torch.rand((T, spec.top_k), generator=gen, device=dev)
    return Routing(ids, (w / w.sum(1, keepdim=True)).float())


def bench_preset(name, qscheme, kind, tokens, timer, ceil, dev, cpu, config=None) -> list[dict]:
    spec = presets.scaled(name) if cpu else presets.get(name)
    if cpu:  # the scaled preset's widths are not whole 128-blocks / MX blocks
        w = 128 if kind == "fp8" else 64
        spec = spec.replace(hidden_size=w, intermediate_size=w)
        if spec.shared_width:
            spec = spec.replace(shared_intermediate_size=w)
    qspec = spec.replace(quant=qscheme)
    gen = torch.Generator(device=dev).manual_seed(0)
    base = _base(spec, torch.bfloat16, dev, gen)
    qw = quantized(qspec, base, gen)
    rows = []
    for T in tokens:
        x = torch.randn((T, spec.hidden_size), generator=gen, device=dev).to(torch.bfloat16)
        r = routing(spec, T, dev, gen)
        touched = int(torch.unique(r.topk_ids).numel())
        rec = {"preset": name, "kind": kind, "T": T, "touched": touched, "config": config}
        try:
            fb = lambda x=x, r=r: fused_moe(spec, base, x, routing=r)
            fq = lambda x=x, r=r: fused_moe(qspec, qw, x, routing=r, config=config)
            y1, y2 = fq(), fq()
            rec["finite"] = bool(torch.isfinite(y1.float()).all())
            rec["bitwise_repeat"] = bool(torch.equal(y1.view(torch.int16), y2.view(torch.int16)))
            if cpu:
                rec["ms_bf16"], rec["ms_q"] = timer.once(fb)[1]["ms"], timer.once(fq)[1]["ms"]
                rec["speedup"] = rec["ms_bf16"] / rec["ms_q"]
            else:
                gb, gq = capture_graph(fb), capture_graph(fq)
                rounds = [(timer(gb[0].replay)["ms"], timer(gq[0].replay)["ms"]) for _ in range(ROUNDS)]
                del gb, gq
                rec["rounds_ms"] = [[round(b, 5), round(q, 5)] for b, q in rounds]
                rec["ms_bf16"] = statistics.median(b for b, _ in rounds)
                rec["ms_q"] = statistics.median(q for _, q in rounds)
                rec["speedup"] = statistics.median(b / q for b, q in rounds)
            for k_, ms in (("bf16", rec["ms_bf16"]), (kind, rec["ms_q"])):
                floor = (
                    weight_bytes(spec, touched, "bf16" if k_ == "bf16" else kind) / ceil["copy_bw_Bps"] * 1e3
                )
                rec[f"pct_floor_{'bf16' if k_ == 'bf16' else 'q'}"] = 100 * floor / ms
        except Exception as e:  # a point's failure is recorded; the run goes on
            rec["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        rows.append(rec)
        print(json.dumps(rec), flush=True)
    return rows


def _ratio_range(r: dict) -> str:
    """'rounds 1.28-1.31 ' (the lowest and highest per-round speedup), '' without rounds (CPU smoke)."""
    ratios = [b / q for b, q in r.get("rounds_ms", [])]
    return f"rounds {min(ratios):.2f}-{max(ratios):.2f} " if ratios else ""


def fifty_thousand(timer, dev, cpu) -> dict:
    """T = 50,000 at DeepSeek-V3 width in block fp8: runs without fault, every row finite."""
    spec = presets.get("deepseek-v3")
    if cpu:
        spec = presets.scaled("deepseek-v3").replace(
            hidden_size=128, intermediate_size=128, shared_intermediate_size=128
        )
    T = 64 if cpu else 50_000
    qspec = spec.replace(quant=QuantScheme.fp8_block())
    gen = torch.Generator(device=dev).manual_seed(1)
    base = _base(spec, torch.bfloat16, dev, gen)
    qw = quantized(qspec, base, gen)
    x = torch.randn((T, spec.hidden_size), generator=gen, device=dev).to(torch.bfloat16)
    t0 = time.perf_counter()
    try:
        y = fused_moe(qspec, qw, x)  # the router too
        if not cpu:
            torch.cuda.synchronize()
        return {
            "T": T,
            "finite_rows": int(torch.isfinite(y.float()).all(dim=1).sum()),
            "s": time.perf_counter() - t0,
        }
    except Exception as e:
        return {"T": T, "error": f"{type(e).__name__}: {str(e)[:300]}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cpu-smoke", action="store_true")
    ap.add_argument("--kinds", default="fp8,mxfp4", help="which quantized paths (fp8, mxfp4)")
    ap.add_argument("--tokens", help="comma-separated T (default 1,16,128,512,4096)")
    ap.add_argument("--no-50k", action="store_true", help="skip the T = 50,000 fp8 run")
    ap.add_argument(
        "--mxfp4-configs",
        default="default",
        help="';'-separated MXFP4 configs to time: default (the heuristic), a weight decode (packed, swar, native, fp32), "
        'or a config dict as JSON, e.g. \'{"decode": "swar", "BLOCK_M": 16, "gate_up": {...}, "down": {...}}\'',
    )
    args = ap.parse_args()
    cpu = args.cpu_smoke
    if cpu:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    dev = "cpu" if cpu else "cuda"
    timer = Timer(cpu=cpu, warmup_ms=10, rep_ms=40)
    ceil = measure_ceilings(timer, dev)
    tokens = (1, 5) if cpu else TOKENS
    if args.tokens:
        tokens = tuple(int(t) for t in args.tokens.split(","))
    kinds = args.kinds.split(",")
    meta = {"device": "cpu" if cpu else torch.cuda.get_device_name(), "torch": torch.__version__,
            "triton": __import__("triton").__version__, "ceilings": ceil}  # fmt: skip
    rows = []
    if "fp8" in kinds:
        rows += bench_preset("deepseek-v3", QuantScheme.fp8_block(), "fp8", tokens, timer, ceil, dev, cpu)
    if "mxfp4" in kinds:
        for d in args.mxfp4_configs.split(";"):  # Mxfp4Config fields (kernels/mxfp4_gemm.py choose_config)
            cfg = None if d == "default" else json.loads(d) if d.lstrip().startswith("{") else {"decode": d}
            rows += bench_preset(
                "gpt-oss-120b", QuantScheme.mxfp4(), "mxfp4", tokens, timer, ceil, dev, cpu, cfg
            )
    big = None if args.no_50k else fifty_thousand(timer, dev, cpu)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "quant_bench.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "t50k": big}, indent=1)
    )
    print(
        f"{meta['device']} | torch {meta['torch']} | triton {meta['triton']} | copy {ceil['copy_bw_Bps'] / 1e9:.0f} GB/s"
    )
    print(
        f"{'preset':13s} {'kind':5s} {'T':>5s} {'bf16 ms':>8s} {'q ms':>8s} {'speedup':>7s} {'%fl bf16':>8s} {'%fl q':>6s} bits config"
    )
    for r in rows:
        if "error" in r:
            print(f"{r['preset']:13s} {r['kind']:5s} {r['T']:>5d} ERROR {r['error']}")
            continue
        print(f"{r['preset']:13s} {r['kind']:5s} {r['T']:>5d} {r['ms_bf16']:8.3f} {r['ms_q']:8.3f} {r['speedup']:7.2f} "
              f"{r['pct_floor_bf16']:7.1f}% {r['pct_floor_q']:5.1f}% {'same' if r['bitwise_repeat'] else 'DIFFER'}"
              f"{'' if r['finite'] else ' NONFINITE'} {_ratio_range(r)}{r['config'] or ''}")  # fmt: skip
    print("T=50k fp8 DeepSeek-V3 width:", json.dumps(big))


if __name__ == "__main__":
    main()
