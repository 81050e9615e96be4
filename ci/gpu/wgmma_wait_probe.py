"""Where Triton waits for a promoted fp8 wgmma (session 19; CPU, AOT for sm90, no GPU needed).

    python ci/gpu/wgmma_wait_probe.py            # prints each variant's warp_group_dot / wait lines and SASS order

Three K loops of one 64 x 128 fp8 tile (A through pointers, B through a tensor descriptor, 4 stages):
    plain    acc += tl.dot(a, w) * s                  (the block scheme's promotion)
    defer    d = tl.dot(a, w); acc += d_prev * s_prev; d_prev = d      (scale the previous step's partial)
    two      two dots of half the columns, then both promotions
In each, the TTGIR has `ttng.warp_group_dot_wait {pendings = 0}` right after every dot: a dot whose result is not
its own loop-carried accumulator is not kept in flight, so the MMA idles while the warp group scales (triton 3.9;
triton 3.6's AOT shows the same). Only another program on the SM fills that gap: kernels/configs/cuda-sm90.json's
fp8 GEMM2 runs three per SM (GemmTile.maxnreg).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

BM, BN, BK = 64, 128, 128


@triton.jit
def plain(a_ptr, w_desc, s_ptr, o_ptr, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    rm, rk, rn = tl.arange(0, BM), tl.arange(0, BK), tl.arange(0, BN)
    a_ptrs = a_ptr + rm[:, None] * K + rk[None, :]
    acc = tl.zeros((BM, BN), tl.float32)
    for kk in range(0, tl.cdiv(K, BK)):
        a = tl.load(a_ptrs)
        w = w_desc.load([0, kk * BK]).T
        s = tl.load(s_ptr + kk * BM + rm)
        acc += tl.dot(a, w) * s[:, None]
        a_ptrs += BK
    tl.store(o_ptr + rm[:, None] * BN + rn[None, :], acc)


@triton.jit
def defer(a_ptr, w_desc, s_ptr, o_ptr, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    rm, rk, rn = tl.arange(0, BM), tl.arange(0, BK), tl.arange(0, BN)
    a_ptrs = a_ptr + rm[:, None] * K + rk[None, :]
    acc = tl.zeros((BM, BN), tl.float32)
    d_prev = tl.zeros((BM, BN), tl.float32)
    s_prev = tl.zeros((BM,), tl.float32)
    for kk in range(0, tl.cdiv(K, BK)):
        a = tl.load(a_ptrs)
        w = w_desc.load([0, kk * BK]).T
        s = tl.load(s_ptr + kk * BM + rm)
        d = tl.dot(a, w)
        acc += d_prev * s_prev[:, None]
        d_prev, s_prev = d, s
        a_ptrs += BK
    acc += d_prev * s_prev[:, None]
    tl.store(o_ptr + rm[:, None] * BN + rn[None, :], acc)


@triton.jit
def two(a_ptr, w_desc, s_ptr, o_ptr, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    rm, rk, rn = tl.arange(0, BM), tl.arange(0, BK), tl.arange(0, BN // 2)
    a_ptrs = a_ptr + rm[:, None] * K + rk[None, :]
    acc1 = tl.zeros((BM, BN // 2), tl.float32)
    acc2 = tl.zeros((BM, BN // 2), tl.float32)
    for kk in range(0, tl.cdiv(K, BK)):
        a = tl.load(a_ptrs)
        w1 = w_desc.load([0, kk * BK]).T
        w2 = w_desc.load([BN // 2, kk * BK]).T
        s = tl.load(s_ptr + kk * BM + rm)
        d1 = tl.dot(a, w1)
        d2 = tl.dot(a, w2)
        acc1 += d1 * s[:, None]
        acc2 += d2 * s[:, None]
        a_ptrs += BK
    tl.store(o_ptr + rm[:, None] * BN + rn[None, :], acc1)
    tl.store(o_ptr + rm[:, None] * BN + BN // 2 + rn[None, :], acc2)


def _sass_order(cubin: bytes) -> str:
    """The cubin's wgmma / wait / FFMA / branch sequence, runs counted (cuobjdump bundled with Triton)."""
    import triton.backends.nvidia as nv

    tool = Path(nv.__file__).parent / "bin" / "cuobjdump"
    tool = str(tool) if tool.exists() else shutil.which("cuobjdump")
    if tool is None:
        return "(no cuobjdump)"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True).stdout
    ops = []
    for line in sass.splitlines():
        m = re.search(r"\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", line)
        if m and m.group(1) in ("QGMMA", "WARPGROUP", "FFMA", "BRA"):
            if ops and ops[-1][0] == m.group(1):
                ops[-1][1] += 1
            else:
                ops.append([m.group(1), 1])
    return " ".join(f"{n}x{op}" for op, n in ops)


def main() -> int:
    for fn in (plain, defer, two):
        box = BN // 2 if fn is two else BN
        sig = {"a_ptr": "*fp8e4nv", "w_desc": f"tensordesc<fp8e4nv[{box}, {BK}]>", "s_ptr": "*fp32",
               "o_ptr": "*fp32", "K": "i32", "BM": "constexpr", "BN": "constexpr", "BK": "constexpr"}  # fmt: skip
        src = ASTSource(fn=fn, signature=sig, constexprs={"BM": BM, "BN": BN, "BK": BK})
        ck = triton.compile(src, target=GPUTarget("cuda", 90, 128), options={"num_warps": 4, "num_stages": 4})
        loop = ck.asm["ttgir"][ck.asm["ttgir"].find("scf.for") :]
        print(f"== {fn.__name__} (triton {triton.__version__}, sm90)")
        for line in loop.splitlines():
            if "warp_group_dot" in line:
                op = "wait" if "dot_wait" in line else "dot"
                pend = re.search(r"pendings = (\d+)", line)
                print(f"   {op}" + (f" pendings={pend.group(1)}" if pend else ""))
        print("   SASS:", _sass_order(ck.asm["cubin"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
