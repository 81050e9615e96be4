"""Print ';'-joined MXFP4 config dicts (compact JSON, no spaces) for quant_bench --mxfp4-configs: the default
config of gpt-oss-120b at T (on this device's table) with gate_up / down split_k set per pair.

    python ci/gpu/mx_split_configs.py --tokens 1 --pairs 1:1,1:4,2:4
"""

from __future__ import annotations

import argparse
import json

import torch

from moe_cts.kernels import mxfp4_gemm
from moe_cts.reference import presets
from moe_cts.reference.quant import QuantScheme


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=1)
    ap.add_argument("--pairs", default="1:1,1:2,1:4,2:2,2:4,4:4", help="gate_up:down split_k pairs")
    args = ap.parse_args()
    spec = presets.get("gpt-oss-120b").replace(quant=QuantScheme.mxfp4())
    base = mxfp4_gemm.choose_config(spec, torch.bfloat16, args.tokens, None).to_dict()
    base.pop("quant", None)
    out = []
    for pair in args.pairs.split(","):
        gu, dn = (int(v) for v in pair.split(":"))
        d = json.loads(json.dumps(base))
        d["gate_up"]["split_k"], d["down"]["split_k"] = gu, dn
        out.append(json.dumps(d, separators=(",", ":")))
    print(";".join(out))


if __name__ == "__main__":
    main()
