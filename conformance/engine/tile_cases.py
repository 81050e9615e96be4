"""Cases that run every row of a backend's tile table (kernels/configs/<backend>.json) at its bucket edges.

The Triton kernels pick a tile row from m = ceil(T * k / E), the mean tokens per expert (kernels/config.py):
the first row with m <= max_tokens_per_expert. A row that only large batches reach is never run by small
must-pass cases, and real kernels returned garbage under one config only
(docs/bugs.md#bug-25-config-miscompiles-on-one-target, docs/bugs.md#bug-12-bad-tuned-config-small-m).
So for every dtype class and every row of the backend's table there are cases at both ends of its bucket:

    name              m = ceil(T k / E)                           row chosen
    tile-<dc>-m<lo>   lo = 1, or the previous row's limit + 1     the row, at its smallest batch
    tile-<dc>-m<hi>   hi = its limit; the open last row:          the row, at its largest batch
                      BLOCK_M + 1 (a full M tile and a tail; at least lo + 1)

The fp8 class (a backend's fp8 x fp8 table) runs as bf16 cases in block fp8 (QuantScheme.fp8_block(): partial
128-blocks at these widths). With E = 4, k = 2 (T = 2 m) and H = 168, I = 152: not multiples of 16 and past every table's BLOCK_K
and BLOCK_N (128), so each GEMM has at least two K tiles with a masked tail and two N tiles, and, past the
largest case of a row, a full M tile and a tail per expert (m is the mean load of the 4 experts). Each case runs
through run_case like a must-pass case (a poisoned out= buffer where the implementation accepts one), on every
implementation: they are plain shapes, so a non-tiled implementation just runs them too.

    tile_cases(backend, arch=None, table=None) -> list[Case]
        backend: interpreter | cpu (the interpreter's table) | cuda | hip; arch: torch's name of the device
        ("sm_90", "gfx942"); table: a table given as data (a certificate's candidate), else device_table's
    device_table(backend, arch) -> dict    the table that device's kernels read (kernels/config.py table_for):
        the candidate of MOE_CTS_TABLE where it applies, else the shipped table naming the device's target
        (cuda-sm90 on sm_90), else the backend's. Without arch: the backend's table.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from moe_cts.conformance.engine.cases import Case
from moe_cts.reference.quant import QuantScheme
from moe_cts.reference.spec import MoESpec

#: kernels/configs, read as data (importing moe_cts.kernels would import Triton and fix the kernels
#: package before the recall's mutated copy replaces it)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "kernels" / "configs"
#: the table that a backend's kernels read; the plain cpu device has none, it runs the interpreter's shapes
TABLE_OF = {"interpreter": "interpreter", "cpu": "interpreter", "cuda": "cuda", "hip": "hip"}
#: kernels/config.py's TABLE_ENV (the name is repeated, not imported: see CONFIG_DIR; a test keeps them equal)
TABLE_ENV = "MOE_CTS_TABLE"
DTYPE_OF_CLASS = {"16bit": "bfloat16", "fp32": "float32", "fp8": "bfloat16"}
#: the quantization of each dtype class's cases (None: float weights)
QUANT_OF_CLASS = {"fp8": QuantScheme.fp8_block()}
E, K = 4, 2
HIDDEN, INTERMEDIATE = 168, 152
SEED = 5000


@functools.cache
def _table(name: str) -> dict[str, Any]:
    return json.loads((CONFIG_DIR / f"{name}.json").read_text())


def bucket_edges(rows: list[dict[str, Any]]) -> list[int]:
    """The m values that run every row at both ends of its bucket [lo, hi]: lo = previous limit + 1,
    hi = its limit, or BLOCK_M + 1 for the open last row (a full M tile and a tail per expert)."""
    out, lo = set(), 1
    for r in rows:
        hi = r["max_tokens_per_expert"]
        out |= {lo, hi if hi is not None else max(lo + 1, int(r["BLOCK_M"]) + 1)}
        if hi is None:
            break
        lo = hi + 1
    return sorted(out)


def device_table(backend: str, arch: str | None = None) -> dict[str, Any]:
    """The table a device reads (module docstring). The candidate is only read here: kernels/config.py checks
    it (certify --table checks it before any case)."""
    name = TABLE_OF.get(backend, backend)
    # kernels/target_info.py's target names: torch's "sm_90" is "sm90"; the interpreter's target is its own
    target = "interpreter" if name == "interpreter" else (str(arch).replace("_", "") if arch else None)
    path = os.environ.get(TABLE_ENV)
    if path:
        try:
            candidate = json.loads(Path(path).expanduser().read_text())
        except (OSError, ValueError) as e:  # one sentence naming the variable, not a traceback in collection
            raise ValueError(
                f"{TABLE_ENV}: expected a readable tile table JSON file, got {path} ({e})"
            ) from None
        if candidate.get("backend") == name and target in candidate.get("targets", (target,)):
            return candidate
    for stem in sorted(f.stem for f in CONFIG_DIR.glob("*.json")):
        table = _table(stem)
        if table["backend"] == name and target in table.get("targets", ()):
            return table
    return _table(name)


def tile_cases(backend: str, arch: str | None = None, table: dict[str, Any] | None = None) -> list[Case]:
    """Cases at both ends of every row's bucket, per dtype class of the device's table (module docstring)."""
    table = table if table is not None else device_table(backend, arch)
    spec = MoESpec(
        hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_experts=E, top_k=K, renormalize=True
    )
    out = []
    for i, (dc, rows) in enumerate(sorted(table["tables"].items())):
        for m in bucket_edges(rows):
            T = -(-m * E // K)  # ceil(T k / E) == m
            s = spec.replace(quant=QUANT_OF_CLASS[dc]) if dc in QUANT_OF_CLASS else spec
            out.append(Case(s, T, DTYPE_OF_CLASS[dc], seed=SEED + 1000 * i + m, name=f"tile-{dc}-m{m}"))
    return out
