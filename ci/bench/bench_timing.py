"""Timing and the device's ceilings, measured in the run that uses them.

    timer(fn)            -> {"ms": median ms, ...}    GPU: triton.testing.do_bench(return_mode="median")
    capture_graph(fn)    -> (CUDAGraph, static output)  one forward captured after a side-stream warm-up
    measure_ceilings(t)  -> {"copy_bw_Bps", "matmul_flops", ...}   what the floors divide by

GPU timing: one call first (compiles and autotunes outside the timed region), an estimate from 3 calls timed
with CUDA events, then do_bench: warm-up, then each repeat is timed with its own pair of CUDA events after
do_bench zeroes a 256 MB buffer, so L2 (50 MB on the H200) starts cold. Every point's working set is larger
than L2 anyway (the touched experts' weights are >= 199 MB at full size), so inputs are not rotated.
--cpu-smoke: time.perf_counter around one call: checks the plumbing, measures nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timer:
    cpu: bool  # --cpu-smoke: perf_counter, 1 call
    warmup_ms: float = 25.0
    rep_ms: float = 100.0  # raised per call so that at least min_reps repeats run
    min_reps: int = 25

    @staticmethod
    def once(fn) -> tuple[object, dict]:
        """(fn(), its perf_counter time): the CPU smoke's only timing, taken on the call whose output is checked."""
        t0 = time.perf_counter()
        y = fn()
        return y, {"ms": 1e3 * (time.perf_counter() - t0), "method": "perf_counter, 1 call (CPU stand-in)"}

    def __call__(self, fn) -> dict:
        if self.cpu:
            return self.once(fn)[1]
        import triton.testing

        fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(3):
            fn()
        end.record()
        end.synchronize()
        est = start.elapsed_time(end) / 3
        # do_bench sizes its repeat count from an estimate that includes its L2 flush (~0.1 ms): leave room for it
        rep = max(self.rep_ms, self.min_reps * (est + 0.2))
        ms = triton.testing.do_bench(fn, warmup=self.warmup_ms, rep=rep, return_mode="median")
        return {"ms": float(ms), "method": "triton.testing.do_bench median (CUDA events, L2 flushed)",
                "est_ms": round(est, 4), "rep_ms": round(rep, 1)}  # fmt: skip


def capture_graph(fn):
    """(graph, static output) of one fn() call. Warm-up on a side stream first (Triton compiles and allocator
    pools must not happen during capture), as torch.cuda.graphs documents; the graph owns its own memory pool."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    torch.cuda.synchronize()
    return graph, out


def measure_ceilings(timer: Timer, device: str) -> dict:
    """Device-to-device copy bandwidth (bytes read + written per second, 2 GiB uint8) and the bf16 8192^3 matmul
    rate on random data (zeros would let the tensor cores idle on some parts), both medians of this run.
    --cpu-smoke: the same measurements at 8 MiB and fp32 256^3 on the host, marked as a CPU stand-in."""
    cpu = device == "cpu"
    n_copy = (8 << 20) if cpu else (2 << 30)
    n = 256 if cpu else 8192
    dt = torch.float32 if cpu else torch.bfloat16
    copy_ms, mm_ms = _copy_ms(timer, device, n_copy), _matmul_ms(timer, device, n, dt)
    return {
        "source": "CPU stand-in (host copy and fp32 matmul; not a GPU ceiling)"
        if cpu
        else "measured on this GPU",
        "copy_bytes": n_copy,
        "copy_ms": copy_ms,
        "copy_bw_Bps": 2 * n_copy / (copy_ms * 1e-3),
        "matmul_n": n,
        "matmul_dtype": str(dt).replace("torch.", ""),
        "matmul_ms": mm_ms,
        "matmul_flops": 2 * n**3 / (mm_ms * 1e-3),
    }


def _copy_ms(timer: Timer, device: str, n: int) -> float:
    """Median time of dst.copy_(src) for n bytes (the buffers are freed on return)."""
    src = torch.ones(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return timer(lambda: dst.copy_(src))["ms"]


def _matmul_ms(timer: Timer, device: str, n: int, dtype: torch.dtype) -> float:
    """Median time of an n x n x n matmul of N(0, 1) data."""
    gen = torch.Generator(device=device).manual_seed(7)
    a = torch.randn((n, n), generator=gen, device=device, dtype=dtype)
    b = torch.randn((n, n), generator=gen, device=device, dtype=dtype)
    return timer(lambda: a @ b)["ms"]
