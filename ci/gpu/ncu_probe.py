"""One forward of a named case between cudaProfilerStart / Stop, for Nsight Compute (a GPU diagnostic).

    ncu --profile-from-start off --clock-control none --section SpeedOfLight ... \\
        python ci/gpu/ncu_probe.py CASE [CASE ...]

CASE is kind:preset:T with kind bf16 | fp8 (block fp8) | mxfp4, e.g. fp8:deepseek-v3:4096. Each case is run
once outside the profiled range first (compiles, caches), then once inside it, ids given (the router is not
profiled). The kernel names tell the cases apart in ncu's report.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "bench")]

from perf_probe import _quant_preset  # noqa: E402
from quant_bench import _base, routing  # noqa: E402

from moe_cts.kernels import fused_moe  # noqa: E402
from moe_cts.reference import presets  # noqa: E402
from moe_cts.reference.quant import QuantScheme  # noqa: E402

SCHEMES = {"bf16": None, "fp8": QuantScheme.fp8_block, "mxfp4": QuantScheme.mxfp4}


def main(cases: list[str]) -> int:
    for case in cases:
        kind, preset, T = case.split(":")
        scheme = SCHEMES[kind]
        if scheme is None:  # bf16: the weights as built, nothing quantized
            spec, gen = presets.get(preset), torch.Generator(device="cuda").manual_seed(0)
            qspec, qw = spec, _base(spec, torch.bfloat16, "cuda", gen)
        else:
            spec, qspec, gen, _, qw = _quant_preset(preset, scheme())
        x = torch.randn((int(T), spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
        r = routing(spec, int(T), "cuda", gen)
        fused_moe(qspec, qw, x, routing=r)
        torch.cuda.synchronize()
        torch.cuda.profiler.start()
        fused_moe(qspec, qw, x, routing=r)
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()
        print(f"profiled {case}", flush=True)
        del qw
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
