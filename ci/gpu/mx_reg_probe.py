"""Session 22 probe: an MXFP4 decode that lands in the MMA operand layout without a shared-memory round trip.

Standalone dense GEMMs out (16, N) fp32 = x (16, K) bf16 @ W.T, W MXFP4 as the reference stores it ((N, K/2)
codes, (N, K/32) E8M0 scales), one program per BLOCK_N columns: the widths of gpt-oss-120b's MXFP4 GEMMs at
T = 1 (4 experts' gate_up rows, 23,040; their down rows, 11,520) and at T = 16 (48 experts' gate_up rows).

    swar_rt  the production swar decode's structure (kernels/_mxfp4_swar.py): words as (NB, 4, BN), decoded,
             joined back to K order; the decoded tile reaches the dot through shared memory (TTGIR local_alloc)
    reg      words as (NB, BN, 4) with the 1-byte scales loaded as a (NB, BN, 4) broadcast, so the compiler
             lays the words out with the word index on lanes 0-1 and columns on lanes 2-4: after the decode
             the (BLOCK_K, BLOCK_N) tile is already mma.sync's B operand layout (kWidth 8, register order
             aside) and the dot takes it from registers. The x tile's columns are permuted within each
             8-group (k' = 2q + p holds k = 4p + q) so that each decoded word half-pair is one B register
    bf16     the same loop over bf16 weights (4x the bytes)

Not a kernel of the project: a measurement (docs/mxfp4.md, "Session 22"). Prints one line per case and a table.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import triton
import triton.language as tl

from moe_cts.kernels._mxfp4_decode import _scale_tile
from moe_cts.kernels._mxfp4_swar import _e2m1_pair_bits, _half_as_float


@triton.jit
def _pairs(r, sc):
    return tl.join(_half_as_float(r & 0xFFFF) * sc, _half_as_float(r >> 16) * sc)


@triton.jit
def _bits(r):
    return tl.join(r.to(tl.uint16), (r >> 16).to(tl.uint16))


@triton.jit
def swar_rt(x_ptr, w_ptr, s_ptr, o_ptr, K, swn, ssn,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    pid = tl.program_id(0)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    NB: tl.constexpr = BLOCK_K // 32
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    words = w_ptr.to(tl.pointer_type(tl.uint32))
    jb = tl.arange(0, NB)[:, None, None]
    jc = tl.arange(0, 4)[None, :, None]
    for k0 in range(0, K, BLOCK_K):
        x = tl.load(x_ptr + offs_m[:, None] * K + (k0 + tl.arange(0, BLOCK_K))[None, :])
        B = tl.load(words + offs_n[None, None, :] * swn + k0 // 8 + jb * 4 + jc)
        s = tl.load(s_ptr + offs_n[None, None, :] * ssn + k0 // 32 + jb)
        sc = _scale_tile(s, "bf16")
        t0 = _pairs(_e2m1_pair_bits(B, 0), sc)
        t1 = _pairs(_e2m1_pair_bits(B, 1), sc)
        t2 = _pairs(_e2m1_pair_bits(B, 2), sc)
        t3 = _pairs(_e2m1_pair_bits(B, 3), sc)
        v = tl.join(
            tl.join(t0, t1), tl.join(t2, t3)
        )  # (b, c, n, p, q0, q1): k = 32 b + 8 c + 4 p + 2 q1 + q0
        v = tl.permute(v, (0, 1, 3, 5, 4, 2))
        acc = tl.dot(x, tl.reshape(v, (BLOCK_K, BLOCK_N)), acc)
    tl.store(o_ptr + offs_m[:, None] * (tl.num_programs(0) * BLOCK_N) + offs_n[None, :], acc)


@triton.jit
def reg(x_ptr, w_ptr, s_ptr, o_ptr, K, swn, ssn,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    pid = tl.program_id(0)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    NB: tl.constexpr = BLOCK_K // 32
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    words = w_ptr.to(tl.pointer_type(tl.uint32))
    jb = tl.arange(0, NB)[:, None, None]
    jn = offs_n[None, :, None]
    jc = tl.arange(0, 4)[None, None, :]
    for k0 in range(0, K, BLOCK_K):
        x = tl.load(x_ptr + offs_m[:, None] * K + (k0 + tl.arange(0, BLOCK_K))[None, :])
        x = tl.reshape(
            tl.permute(tl.reshape(x, (BLOCK_M, BLOCK_K // 8, 2, 4)), (0, 1, 3, 2)), (BLOCK_M, BLOCK_K)
        )
        B = tl.load(words + jn * swn + k0 // 8 + jb * 4 + jc)
        s = tl.load(s_ptr + jn * ssn + k0 // 32 + jb + jc * 0)
        sc = _scale_tile(s, "bf16")
        v = tl.join(tl.join(_bits(_e2m1_pair_bits(B, 0)), _bits(_e2m1_pair_bits(B, 1))),
                    tl.join(_bits(_e2m1_pair_bits(B, 2)), _bits(_e2m1_pair_bits(B, 3))))  # fmt: skip
        v = tl.permute(v, (0, 2, 5, 4, 3, 1))  # (b, c, q1, q0, p, n): k' = 32 b + 8 c + 2 q + p
        w = tl.reshape(v, (BLOCK_K, BLOCK_N)).to(tl.bfloat16, bitcast=True)
        s2 = tl.join(sc, sc)
        s2 = tl.join(tl.join(s2, s2), tl.join(s2, s2))
        s2 = tl.reshape(tl.permute(s2, (0, 2, 5, 4, 3, 1)), (BLOCK_K, BLOCK_N))
        w = (w * tl.full([], 2.0**126, tl.bfloat16)) * s2
        acc = tl.dot(x, w, acc)
    tl.store(o_ptr + offs_m[:, None] * (tl.num_programs(0) * BLOCK_N) + offs_n[None, :], acc)


@triton.jit
def regp(x_ptr, w_ptr, s_ptr, o_ptr, K, swn, ssn,
         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    """reg on repacked words: within each 128-element step of a column the 4 x 4 words are stored word-major
    (word c of block b at 4 c + b), so a thread's 4 words (its c, every b) are one 16-byte vector and the
    compiler's natural layout for the (4 c + b, n) tile puts b in registers, c on lanes 0-1, n on lanes 2-4."""
    pid = tl.program_id(0)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    NB: tl.constexpr = BLOCK_K // 32
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    words = w_ptr.to(tl.pointer_type(tl.uint32))
    jw = tl.arange(0, 4 * NB)[:, None]  # 4 c + b
    for k0 in range(0, K, BLOCK_K):
        x = tl.load(x_ptr + offs_m[:, None] * K + (k0 + tl.arange(0, BLOCK_K))[None, :])
        x = tl.reshape(
            tl.permute(tl.reshape(x, (BLOCK_M, BLOCK_K // 8, 2, 4)), (0, 1, 3, 2)), (BLOCK_M, BLOCK_K)
        )
        B = tl.load(words + offs_n[None, :] * swn + k0 // 8 + jw)
        s = tl.load(s_ptr + offs_n[None, :] * ssn + k0 // 32 + jw % NB)
        sc = _scale_tile(s, "bf16")
        v = tl.join(tl.join(_bits(_e2m1_pair_bits(B, 0)), _bits(_e2m1_pair_bits(B, 1))),
                    tl.join(_bits(_e2m1_pair_bits(B, 2)), _bits(_e2m1_pair_bits(B, 3))))  # fmt: skip
        v = tl.reshape(v, (4, NB, BLOCK_N, 2, 2, 2))  # (c, b, n, p, q0, q1)
        v = tl.permute(v, (1, 0, 5, 4, 3, 2))  # (b, c, q1, q0, p, n): k' = 32 b + 8 c + 2 q + p
        w = tl.reshape(v, (BLOCK_K, BLOCK_N)).to(tl.bfloat16, bitcast=True)
        s2 = tl.join(sc, sc)
        s2 = tl.join(tl.join(s2, s2), tl.join(s2, s2))
        s2 = tl.reshape(
            tl.permute(tl.reshape(s2, (4, NB, BLOCK_N, 2, 2, 2)), (1, 0, 5, 4, 3, 2)), (BLOCK_K, BLOCK_N)
        )
        w = (w * tl.full([], 2.0**126, tl.bfloat16)) * s2
        acc = tl.dot(x, w, acc)
    tl.store(o_ptr + offs_m[:, None] * (tl.num_programs(0) * BLOCK_N) + offs_n[None, :], acc)


@triton.jit
def bf16(x_ptr, w_ptr, s_ptr, o_ptr, K, swn, ssn,
         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    pid = tl.program_id(0)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + offs_m[:, None] * K + offs_k[None, :])
        w = tl.load(w_ptr + offs_n[None, :] * swn + offs_k[:, None])
        acc = tl.dot(x, w, acc)
    tl.store(o_ptr + offs_m[:, None] * (tl.num_programs(0) * BLOCK_N) + offs_n[None, :], acc)


E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def decode(codes, scales):
    lut = torch.tensor(E2M1, device=codes.device)
    lo, hi = lut[(codes & 15).long()], lut[(codes >> 4).long()]
    v = torch.stack([lo, hi], -1).reshape(codes.shape[0], -1)
    s = torch.exp2(scales.float() - 127).repeat_interleave(32, 1)
    return v * s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    dev = "cuda"
    K = 2816
    shapes = {"gu_T1": 23040, "dn_T1": 11520, "gu_T16": 276480}
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(16, K, device=dev, generator=g).to(torch.bfloat16)
    copy = torch.empty(1 << 28, dtype=torch.uint8, device=dev)
    t_copy = triton.testing.do_bench(lambda: copy[: 1 << 27].copy_(copy[1 << 27 :]), warmup=20, rep=200)
    bw = 2 * (1 << 27) / t_copy / 1e9  # TB/s: bytes / ms / 1e9
    print(f"copy rate {bw:.3f} TB/s", flush=True)
    rows = []
    for name, N in shapes.items():
        codes = torch.randint(0, 256, (N, K // 2), device=dev, dtype=torch.uint8, generator=g)
        scales = torch.randint(118, 124, (N, K // 32), device=dev, dtype=torch.uint8, generator=g)
        wref = decode(codes, scales)
        ref = x.float() @ wref.T
        wb = wref.to(torch.bfloat16)
        mx_bytes = codes.numel() + scales.numel()
        # regp's layout: per column and 128-element step, word c of block b at 4 c + b (a 4 x 4 transpose)
        packed = (
            codes.view(torch.int32).view(N, K // 128, 4, 4).transpose(2, 3).contiguous().view(torch.uint8)
        )
        packed = packed.view(N, K // 2)
        for kern, bn, nw, ns in [
            ("swar_rt", 32, 4, 4), ("swar_rt", 64, 4, 4), ("reg", 32, 4, 4), ("reg", 64, 4, 4),
            ("regp", 32, 4, 4), ("regp", 32, 4, 3), ("regp", 32, 2, 4), ("regp", 64, 4, 4), ("regp", 64, 4, 3),
            ("regp", 64, 4, 5), ("regp", 128, 4, 3), ("regp", 128, 8, 4), ("regp", 64, 8, 4), ("bf16", 64, 4, 4),
        ]:  # fmt: skip
            fn = {"swar_rt": swar_rt, "reg": reg, "regp": regp, "bf16": bf16}[kern]
            w_arg, swn = (wb, K) if kern == "bf16" else (packed if kern == "regp" else codes, K // 8)
            out = torch.empty(16, N, device=dev)
            grid = (N // bn,)

            def run(fn=fn, grid=grid, w_arg=w_arg, scales=scales, out=out, swn=swn, bn=bn, nw=nw, ns=ns):
                fn[grid](x, w_arg, scales, out, K, swn, K // 32, BLOCK_M=16, BLOCK_N=bn, BLOCK_K=128,
                         num_warps=nw, num_stages=ns)  # fmt: skip

            try:
                run()
                torch.cuda.synchronize()
                err = ((out - ref).abs().max() / ref.abs().max()).item()
                ms = sorted(triton.testing.do_bench(run, warmup=25, rep=100) for _ in range(args.reps))
                med = ms[len(ms) // 2]
                nbytes = wb.numel() * 2 if kern == "bf16" else mx_bytes
                row = {"shape": name, "kernel": kern, "BN": bn, "warps": nw, "stages": ns, "ms": med,
                       "err": err, "TBps": nbytes / med / 1e9, "floor_pct": 100 * nbytes / med / 1e9 / bw}  # fmt: skip
            except Exception as e:  # a variant that fails to compile is a result
                row = {
                    "shape": name,
                    "kernel": kern,
                    "BN": bn,
                    "warps": nw,
                    "stages": ns,
                    "error": repr(e)[:300],
                }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n== summary ==")
    for name in shapes:
        rs = [r for r in rows if r["shape"] == name and "ms" in r]
        base = min((r["ms"] for r in rs if r["kernel"] == "swar_rt"), default=None)
        b16 = min((r["ms"] for r in rs if r["kernel"] == "bf16"), default=None)
        for r in rs:
            print(f"{name:7s} {r['kernel']:8s} BN{r['BN']:4d} w{r['warps']} s{r['stages']}  {r['ms']:.4f} ms"
                  f"  {r['floor_pct']:5.1f}% floor  x{base / r['ms']:.2f} vs swar_rt  bf16/this {b16 / r['ms']:.2f}"
                  f"  err {r['err']:.1e}")  # fmt: skip
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
