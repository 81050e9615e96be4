"""Issue 13 acceptance: full-size DeepSeek-V3 block fp8 and gpt-oss-120b MXFP4 against the float64 oracle.

    python ci/gpu/quant_fullsize.py --out DIR [--tokens 1,16,128,512,4096] [--presets deepseek-v3,gpt-oss-120b]
    TRITON_INTERPRET=1 python ci/gpu/quant_fullsize.py --cpu-smoke --out DIR     # scaled presets, interpreter

    case        Case(preset spec + QuantScheme, T, bfloat16, seed): the quantized must-pass cases' inputs
                (quant_cases.py: adversarial block exponents, snapped x), built by quant_large.py a slice of
                experts at a time (no float64 copy of the 256 experts), codes kept across T
    judge       run_case (timeouts, crash capture): the routed experts pass SAMPLE_EXPERTS_ABOVE, so
                sampled_experts.py judges it: the Triton forward on the whole batch, the oracle on sampled
                rows over sub-problems of the experts they route to (end_to_end and memory only)
    table       preset, T, rows judged, experts touched, max err/bound, verdict, seconds; results.jsonl in DIR

--cpu-smoke lowers the thresholds (sampled_experts.SAMPLE_EXPERTS_ABOVE, SUB_BYTES) on scaled presets so
the same path runs on the interpreter in seconds.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from moe_cts.conformance.engine import sampled_experts
from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.devices import select_device
from moe_cts.conformance.engine.runner import run_case
from moe_cts.conformance.impls.registry import get_implementation
from moe_cts.reference import presets
from moe_cts.reference.quant import QuantScheme

SCHEMES = {"deepseek-v3": QuantScheme.fp8_block(), "gpt-oss-120b": QuantScheme.mxfp4()}
#: scaled shapes of --cpu-smoke: fp8 128 x 128 blocks need H, I multiples of 128 (2 x 1 blocks); MXFP4 32
SMOKE = {"deepseek-v3": (256, 128), "gpt-oss-120b": (64, 64)}
SMOKE_TOKENS = (1, 16)
SEED = 13
TIMEOUT_S = 3000.0
NOTE = re.compile(r"(\d+) of \d+ rows judged, (\d+) of (\d+) experts touched")


def spec_of(name: str, smoke: bool):
    if smoke:
        H, I = SMOKE[name]
        spec = presets.scaled(name, hidden_size=H, intermediate_size=I, num_experts=32)
    else:
        spec = presets.get(name)
    return spec.replace(quant=SCHEMES[name])


def row_of(name: str, T: int, result, seconds: float) -> dict:
    e2e = next((v for v in result.stages if v.stage == "end_to_end"), None)
    m = NOTE.search(e2e.message if e2e else "")
    return {
        "preset": name,
        "T": T,
        "rows": int(m.group(1)) if m else None,
        "experts": f"{m.group(2)}/{m.group(3)}" if m else None,
        "max_ratio": None if e2e is None else e2e.max_ratio,
        "verdict": result.outcome.value,
        "seconds": round(seconds, 1),
        "message": result.message or (e2e.message if e2e else ""),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument(
        "--tokens", default=None, help="comma-separated T (default 1,16,128,512,4096; smoke 1,16)"
    )
    ap.add_argument("--presets", default=",".join(SCHEMES))
    ap.add_argument("--cpu-smoke", action="store_true")
    ap.add_argument("--timeout", type=float, default=TIMEOUT_S)
    ap.add_argument("--max-groups", type=int, default=None, help="sub-problems per case (sampled_experts)")
    a = ap.parse_args(argv)
    default = SMOKE_TOKENS if a.cpu_smoke else (1, 16, 128, 512, 4096)
    tokens = [int(t) for t in a.tokens.split(",")] if a.tokens else list(default)
    if a.cpu_smoke:  # the sampled-experts path on scaled presets: several sub-problems of a few experts
        sampled_experts.SAMPLE_EXPERTS_ABOVE = 1000
        sampled_experts.SUB_BYTES = 12 * sampled_experts.FLOAT64_COPIES * 8 * 3 * 256 * 128
    if a.max_groups:  # fewer sub-problems: fewer rows judged, less host time per case
        sampled_experts.MAX_GROUPS = a.max_groups
    device = select_device("interpreter" if a.cpu_smoke else "auto")
    impl = get_implementation("triton")
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with open(a.out / "results.jsonl", "a") as log:
        for name in a.presets.split(","):
            spec = spec_of(name, a.cpu_smoke)
            for T in tokens:
                case = Case(spec, T, "bfloat16", seed=SEED, name=f"{name}-{spec.quant.method}-T{T}")
                t0 = time.perf_counter()
                result = run_case(impl, case, device, timeout_s=a.timeout)
                row = row_of(name, T, result, time.perf_counter() - t0)
                row["case_id"], row["device"] = case.case_id, str(device)
                log.write(json.dumps(row) + "\n")
                log.flush()
                rows.append(row)
                print(_line(row), flush=True)
    bad = [r for r in rows if r["verdict"] != "pass"]
    for r in bad:
        print(f"{r['preset']} T={r['T']}: {r['message'][:400]}", file=sys.stderr)
    return 1 if bad else 0


def _line(r: dict) -> str:
    ratio = "-" if r["max_ratio"] is None else f"{r['max_ratio']:.3f}"
    return (
        f"{r['preset']:<14} T={r['T']:<5} rows {r['rows']!s:>4}  experts {r['experts']!s:>8}  "
        f"max err/bound {ratio:>6}  {r['verdict']:<10} {r['seconds']:>7.1f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
