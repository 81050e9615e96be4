"""Print ';'-joined MXFP4 config dicts (compact JSON, no spaces) for quant_bench --mxfp4-configs: gpt-oss-120b's
default config at T on this device's table, with tile fields overridden per variant.

    python ci/gpu/mx_configs.py --tokens 512 --variants "gate_up.maxnreg=168,down.maxnreg=168;down.maxnreg=168"

Each variant is a ','-list of gemm.field=int or field=value (a top-level field: BLOCK_M=64, decode=swapped); an
empty variant is the default config written out. decode=swapped (or packed) sets BLOCK_K 128 in both GEMMs and
drops the default's register caps (a later gemm.maxnreg=... sets one); decode=swapped also bounds the tiles as
choose_config does for it (mxfp4_gemm.SWAPPED_ROWS; a later gemm.BLOCK_N=... overrides).
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
    ap.add_argument(
        "--variants", required=True, help="';'-separated variants of ','-separated gemm.field=int"
    )
    args = ap.parse_args()
    spec = presets.get("gpt-oss-120b").replace(quant=QuantScheme.mxfp4())
    base = mxfp4_gemm.choose_config(spec, torch.bfloat16, args.tokens, None).to_dict()
    base.pop("quant", None)
    out = []
    for variant in args.variants.split(";"):
        d = json.loads(json.dumps(base))
        for item in filter(None, variant.split(",")):
            key, value = item.split("=")
            if "." in key:
                gemm, field = key.split(".")
                d[gemm][field] = int(value)
            else:
                d[key] = int(value) if value.lstrip("-").isdigit() else value
                if key == "decode":  # the default's register caps are its decode's (mxfp4_gemm)
                    d["gate_up"]["maxnreg"] = d["down"]["maxnreg"] = 0
                if key == "decode" and value == "swapped":  # its table widths, as choose_config sets them
                    widths = mxfp4_gemm.swapped_block_n(d["gate_up"]["BLOCK_N"], d["down"]["BLOCK_N"])
                    d["gate_up"]["BLOCK_N"], d["down"]["BLOCK_N"] = widths
        if d.get("decode") in mxfp4_gemm.PACKED_DECODES:  # their BLOCK_K is the packing step
            for gemm in ("gate_up", "down"):
                d[gemm]["BLOCK_K"] = mxfp4_gemm.PACKED_BLOCK_K
        out.append(json.dumps(d, separators=(",", ":")))
    print(";".join(out))


if __name__ == "__main__":
    main()
