"""AOT compile plan: which scenarios each tier compiles, and the deduplicated compile jobs they capture.

scenarios(tier, targets)   -> [Scenario]   pure data, cheap (reads the config tables and presets)
plan(scenarios, target)    -> [job]        in a subprocess without TRITON_INTERPRET:
    for s in scenarios: launches = moe_cts.kernels.registry.capture(preset, T, dtype, target, config | heuristic)
    one job per distinct compile (Triton's launch binder: signature, constexprs, specializations, options);
    a job keeps every scenario that asked for it in `origins`

tier      what it compiles (each table row on the targets that read its table: cuda-sm90 on sm90, cuda on the
          other CUDA targets)
default   per dtype class: the decode row, the largest row and the batch-invariant row of the table
          (fp32; 16-bit in fp16); the heuristic's choices for Mixtral-8x7B, Qwen2-57B and DeepSeek-V3
          at T in {1, 512} (Mixtral also 16, DeepSeek also 4096) in bf16; the GEMMs with both fp8 flavours. Every kernel, each dtype, each
          config family: the CI tier.
full      every table row for every dtype of its class, and the heuristic's choices for every preset
          at T in {1, 16, 128, 512, 4096} and every dtype; the fp8 GEMMs.
tables    the GEMM kernels only, every table row once per dtype class: guards the tables' shared memory.

default and full also compile the MXFP4 layer (gpt-oss-120b, MXFP4_TOKENS, bf16 and fp16: both scale
placements of kernels/_mxfp4_gemm_kernels.py), its opt-in swapped decode in bf16 at MXFP4_TOKENS, and its opt-in
tl.dot_scaled variant in bf16 at the largest T.
The fp8 w8a8 layer compiles in both e4m3 flavours at TABLE_TOKENS, and at T = 1 on decode tiles with the opt-in
operand swap (FP8_SWAP_TILES).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from moe_cts.conformance.aot import registry_ref

TARGETS_PATH = Path(__file__).parents[1] / "data" / "aot_targets.json"
TIERS = ("default", "full", "tables")
DTYPES = ("float32", "float16", "bfloat16")
FP8 = ("float8_e4m3fn", "float8_e4m3fnuz")
CLASS_DTYPES = {"fp32": ("float32",), "16bit": ("float16", "bfloat16"), "fp8": ("bfloat16",)}
#: fp8 table rows compile through the fp8 w8a8 kernels (block fp8 e4m3fn, the CUDA flavour: the fp8 table
#: is cuda.json's; sm80 rejects it as data, like the fp8-moe scenario)
CLASS_QUANT = {"fp8": "fp8_block:e4m3fn"}
#: The spec the table configs are compiled with: forced configs do not depend on the shape, and Mixtral's
#: H and I (4096, 14336) are multiples of every block, as in most real models.
TABLE_PRESET = "mixtral-8x7b"
TABLE_TOKENS = 512
#: Presets and token counts whose heuristic choices the default tier compiles: the H100 acceptance presets,
#: which between them hit the decode, mid and large rows, the grouped router, the shared expert and its
#: gate; DeepSeek-V3 also at T = 4096, where T*k passes one alignment chunk (the multi-chunk kernels); Mixtral
#: also at T = 16, the one-launch alignment (one token takes align.slot_meta's tiles, no alignment launch).
DEFAULT_PRESETS = {"mixtral-8x7b": (1, 16, 512), "qwen2-57b-a14b": (1, 512), "deepseek-v3": (1, 512, 4096)}
FULL_TOKENS = (1, 16, 128, 512, 4096)
#: MXFP4 scenarios (kernels/mxfp4_moe.py): gpt-oss-120b at these T, in bf16 (scale on the weights) and fp16
#: (scale on the fp32 partial of each 32-block): both SCALE_AT variants of both MXFP4 GEMMs
MXFP4_PRESET = "gpt-oss-120b"
MXFP4_TOKENS = {"default": (1, 512), "full": FULL_TOKENS}
MXFP4_DTYPES = ("bfloat16", "float16")
#: The fp8 w8a8 MoE (kernels/fp8_moe.py) is compiled for DeepSeek-V3 block fp8 in both e4m3 flavours; the
#: targets that refuse a flavour are expected rejections (aot_targets.json fp8_flavours, target_info.FP8_REJECTED).
FP8_MOE_PRESET = "deepseek-v3"
FP8_MOE_FLAVOURS = ("e4m3fn", "e4m3fnuz")
#: the decode-size tiles with the operand swap: 64 weight rows per GEMM (GEMM1's 32 columns are 64 gate and up
#: rows) and a warpgroup, so that sm90 can take wgmma
_SWAP_TILE = {"BLOCK_K": 128, "GROUP_M": 1, "num_warps": 4, "num_stages": 5, "tma": True, "swap_ab": True}
FP8_SWAP_TILES = {
    "BLOCK_M": 16,
    "gate_up": {**_SWAP_TILE, "BLOCK_N": 32},
    "down": {**_SWAP_TILE, "BLOCK_N": 64},
}
#: Fields of a target row that come from moe_cts.kernels.target_info (never from the JSON file).
HARDWARE_FIELDS = ("backend", "arch", "warp_size", "shared_limit_bytes")


def load_targets() -> dict[str, Any]:
    """aot_targets.json with each target's hardware facts (backend, arch, warp_size, shared_limit_bytes)
    filled in from moe_cts.kernels.target_info, the one table of them; the JSON keeps the compile-side data
    (assembly kind, matrix-instruction patterns, fp8 compile outcomes, scalar_ok)."""
    from moe_cts.kernels import target_info

    data = json.loads(TARGETS_PATH.read_text())
    for name, row in data["targets"].items():
        facts = target_info.get(name)
        clash = sorted(set(row) & set(HARDWARE_FIELDS))
        if clash:
            raise ValueError(
                f"{TARGETS_PATH.name} targets.{name}: {clash} belong in kernels/target_info.py, not here"
            )
        row.update(
            backend=facts.backend,
            arch=facts.arch,
            warp_size=facts.warp_size,
            shared_limit_bytes=facts.shared_limit_bytes,
        )
    return data


def target_names() -> tuple[str, ...]:
    return tuple(load_targets()["targets"])


@dataclass(frozen=True)
class Scenario:
    origin: str  # what asked for it: "table:cuda/16bit/m<=8", "heuristic:deepseek-v3@T=512", "fp8", ...
    preset: str  # moe_cts.reference.presets name (full size: capture uses meta tensors, no memory)
    num_tokens: int
    dtype: str  # torch dtype name of x and the weights
    targets: tuple[str, ...]
    config: dict[str, Any] | None = None  # forced TileConfig dict; None = the heuristic (target's table)
    batch_invariant: bool = False
    kernels: tuple[str, ...] | None = None  # keep only these kernels' launches (None = all)
    fp8: tuple[str, ...] = ()  # also compile the matrix kernels with their operands retyped to these
    # "mxfp4": the preset with QuantScheme.mxfp4(activation_dtype=dtype);
    # "fp8_block:<fp8_format>": the preset under QuantScheme.fp8_block(fp8_format=...)
    quant: str | None = None
    # False: the router's select in its own launch (router_select_kernel: forced token tiles), not inside
    # the logits launch as GPUs run it by default (kernels/router.py FUSED_SELECT)
    fused_select: bool = True
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _by_backend(targets: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    info = load_targets()["targets"]
    out: dict[str, tuple[str, ...]] = {}
    for name in targets:
        out.setdefault(info[name]["backend"], ())
        out[info[name]["backend"]] += (name,)
    return out


def _table_rows(table: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(dtype class, bucket, config dict) of every row of a table, in table order."""
    table_configs = registry_ref.registry().table_configs

    return [(dc, bucket, cfg) for b, dc, bucket, cfg in table_configs() if b == table]


def _tables(backend: str, tnames: tuple[str, ...]) -> list[tuple[str, tuple[str, ...]]]:
    """(table, the targets of tnames that read it) for a backend's targets. A registry with `table_targets`
    (ours: cuda-sm90 is read by sm90 alone) splits them; one without it has one table per backend."""
    reg = registry_ref.registry()
    names = list(dict.fromkeys(b for b, *_ in reg.table_configs()))
    if not hasattr(reg, "table_targets"):
        return [(backend, tnames)] if backend in names else []
    out = []
    for name in names:
        reads = tuple(t for t in tnames if t in reg.table_targets(name))
        if reads:
            out.append((name, reads))
    return out


def _gemm_kernels() -> tuple[str, ...]:
    KERNELS = registry_ref.registry().KERNELS

    return tuple(name for name, info in KERNELS.items() if info.matrix)


def _table_plan(tier: str, table: str) -> list[tuple[str, str, dict[str, Any], tuple[str, ...]]]:
    """(dtype class, bucket, config, dtypes) to compile. default: the decode row, the largest row and the
    batch-invariant row of each class, 16-bit rows in fp16 (the presets' heuristic choices add bf16)."""
    rows = _table_rows(table)
    out = []
    for dc, bucket, cfg in rows:
        family = [r for r in rows if r[0] == dc and r[1] != "batch_invariant"]
        if (
            tier == "default"
            and bucket != "batch_invariant"
            and (dc, bucket, cfg) not in (family[0], family[-1])
        ):
            continue
        dtypes = {"full": CLASS_DTYPES[dc], "tables": CLASS_DTYPES[dc][-1:], "default": CLASS_DTYPES[dc][:1]}[
            tier
        ]
        out.append((dc, bucket, cfg, dtypes))
    return out


def scenarios(tier: str, targets: tuple[str, ...]) -> list[Scenario]:
    if tier not in TIERS:
        raise ValueError(f"tier: expected one of {TIERS}, got {tier!r}")
    from moe_cts.reference import presets

    out: list[Scenario] = []
    for backend, tnames in _by_backend(targets).items():
        for table, readers in _tables(backend, tnames):
            for dc, bucket, cfg, dtypes in _table_plan(tier, table):
                for dt in dtypes:
                    quant = CLASS_QUANT.get(dc)
                    out.append(
                        Scenario(
                            origin=f"table:{table}/{dc}/{bucket}",
                            preset=FP8_MOE_PRESET if quant else TABLE_PRESET,
                            num_tokens=TABLE_TOKENS,
                            dtype=dt,
                            targets=readers,
                            config=cfg,
                            kernels=_gemm_kernels() if tier == "tables" and not quant else None,
                            quant=quant,
                        )
                    )
        if tier == "tables":
            continue
        plan = DEFAULT_PRESETS if tier == "default" else dict.fromkeys(presets.names(), FULL_TOKENS)
        dtypes = ("bfloat16",) if tier == "default" else DTYPES
        for name, tokens in plan.items():
            for T in tokens:
                for dt in dtypes:
                    out.append(
                        Scenario(
                            origin=f"heuristic:{name}@T={T}",
                            preset=name,
                            num_tokens=T,
                            dtype=dt,
                            targets=tnames,
                            meta={"preset": name, "T": T},
                        )
                    )
        out += _quant_scenarios(tier, tnames)
        if "router_select_kernel" in registry_ref.registry().KERNELS:
            # ours: the separate select launch (forced token tiles), DeepSeek-V3's grouped top-k at E 256
            out.append(Scenario(
                origin="router:separate-select",
                preset="deepseek-v3",
                num_tokens=1,
                dtype="bfloat16",
                targets=tnames,
                kernels=("router_select_kernel",),
                fused_select=False,
            ))  # fmt: skip
        out.append(
            Scenario(
                origin="fp8",
                preset=TABLE_PRESET,
                num_tokens=TABLE_TOKENS,
                dtype="bfloat16",
                targets=tnames,
                kernels=_gemm_kernels(),
                fp8=FP8,
            )
        )
    return out


def _quant_scenarios(tier: str, tnames: tuple[str, ...]) -> list[Scenario]:
    """The quantized families in their own operands: MXFP4 (gpt-oss-120b, both scale placements, the opt-in
    swapped decode, on tile-major codes too, and the opt-in tl.dot_scaled variant) and fp8 w8a8 (DeepSeek-V3 block fp8 in each e4m3 flavour)."""
    out: list[Scenario] = []
    for T in MXFP4_TOKENS[tier]:
        for dt in MXFP4_DTYPES:
            out.append(
                Scenario(
                    origin=f"mxfp4:{MXFP4_PRESET}@T={T}",
                    preset=MXFP4_PRESET,
                    num_tokens=T,
                    dtype=dt,
                    targets=tnames,
                    quant="mxfp4",
                    meta={"preset": MXFP4_PRESET, "T": T, "quant": "mxfp4"},
                )
            )
        out.append(  # the opt-in swapped decode (bf16 only: it builds bf16 weights)
            Scenario(
                origin=f"mxfp4-swapped:{MXFP4_PRESET}@T={T}",
                preset=MXFP4_PRESET,
                num_tokens=T,
                dtype="bfloat16",
                targets=tnames,
                config={"decode": "swapped"},
                quant="mxfp4",
                meta={"preset": MXFP4_PRESET, "T": T, "quant": "mxfp4", "decode": "swapped"},
            )
        )
    T = MXFP4_TOKENS[tier][0]
    out.append(  # the opt-in tile-major codes (row_group) at a decode size, where they were written to help
        Scenario(
            origin=f"mxfp4-swapped-rows64:{MXFP4_PRESET}@T={T}",
            preset=MXFP4_PRESET,
            num_tokens=T,
            dtype="bfloat16",
            targets=tnames,
            config={"decode": "swapped", "row_group": 64},
            quant="mxfp4",
            meta={"preset": MXFP4_PRESET, "T": T, "quant": "mxfp4", "decode": "swapped", "row_group": 64},
        )
    )
    out.append(  # the opt-in tl.dot_scaled variant; bf16 only: fp16 is refused on sm80 (mxfp4_gemm.py)
        Scenario(
            origin=f"mxfp4-dot_scaled:{MXFP4_PRESET}@T={MXFP4_TOKENS[tier][-1]}",
            preset=MXFP4_PRESET,
            num_tokens=MXFP4_TOKENS[tier][-1],
            dtype="bfloat16",
            targets=tnames,
            config={"dot": "dot_scaled"},
            quant="mxfp4",
            meta={
                "preset": MXFP4_PRESET,
                "T": MXFP4_TOKENS[tier][-1],
                "quant": "mxfp4",
                "dot": "dot_scaled",
            },
        )
    )
    for fmt in FP8_MOE_FLAVOURS:  # the fp8 w8a8 kernels in their own fp8 operands
        out.append(
            Scenario(
                origin=f"fp8-moe:{fmt}",
                preset=FP8_MOE_PRESET,
                num_tokens=TABLE_TOKENS,
                dtype="bfloat16",
                targets=tnames,
                quant=f"fp8_block:{fmt}",
            )
        )
        out.append(  # the opt-in operand swap (GemmTile.swap_ab) on a decode-size tile: fp8 wgmma on sm90
            Scenario(
                origin=f"fp8-moe-swap_ab:{fmt}",
                preset=FP8_MOE_PRESET,
                num_tokens=1,
                dtype="bfloat16",
                targets=tnames,
                config=FP8_SWAP_TILES,
                quant=f"fp8_block:{fmt}",
            )
        )
    return out


# ----------------------------------------------------------------------------------------------------------
# Planning (runs in the subprocess)


def _retyped(launch, names: tuple[str, ...], dtype: str):
    reg = registry_ref.registry()
    Launch, jit_function = reg.Launch, reg.jit_function

    arg_names = jit_function(launch.kernel).arg_names
    args = list(launch.args)
    for n in names:
        i = arg_names.index(n)
        if args[i] is None:  # a descriptor the launch did not use
            continue
        if "tensor_desc" in args[i]:
            args[i] = {**args[i], "tensor_desc": {**args[i]["tensor_desc"], "tensor": dtype}}
        else:
            args[i] = {**args[i], "tensor": dtype}
    return Launch(launch.kernel, tuple(args), launch.kwargs)


def _data_dtype(launch) -> str:
    """The dtype a record is filed under: the first fp8 tensor argument's (its flavour decides expected
    rejections), else the first floating one's, 'int' for index kernels."""
    for a in launch.args:
        if isinstance(a, dict) and a.get("tensor", "").startswith("float8"):
            return a["tensor"]
    for a in launch.args:
        if isinstance(a, dict) and a.get("tensor", "").startswith(("float", "bfloat")):
            return a["tensor"]
    return "int"


def _scenario_launches(s: dict[str, Any], target):
    import torch

    reg = registry_ref.registry()
    KERNELS, capture = reg.KERNELS, reg.capture
    from moe_cts.reference import presets

    spec = presets.get(s["preset"])
    if s.get("quant") == "mxfp4":
        from moe_cts.reference.quant import QuantScheme

        spec = spec.replace(quant=QuantScheme.mxfp4(activation_dtype=s["dtype"]))
    elif (s.get("quant") or "").startswith("fp8"):
        from moe_cts.reference.quant import QuantScheme

        method, fmt = s["quant"].split(":")
        spec = spec.replace(quant=getattr(QuantScheme, method)(fp8_format=fmt))
    # only ours knows fused_select (router_select_kernel); another registry's capture never gets it
    separate = {} if s.get("fused_select", True) else {"fused_select": False}
    launches = capture(
        spec,
        s["num_tokens"],
        getattr(torch, s["dtype"]),
        target=target,
        config=s["config"],
        batch_invariant=s["batch_invariant"],
        **separate,
    )
    if s["kernels"] is not None:
        launches = [ln for ln in launches if ln.kernel in s["kernels"]]
    if s["fp8"]:
        launches = [
            _retyped(ln, KERNELS[ln.kernel].fp8_operands, f8)
            for ln in launches
            if KERNELS[ln.kernel].fp8_operands
            for f8 in s["fp8"]
        ]
    return launches


def _compile_key(launch, target) -> str:
    """Two launches with equal keys compile to the same binary: Triton's own launch binder gives the
    signature (argument types), the constexprs, the divisibility / ==1 specializations and the options."""
    from moe_cts.conformance.aot.worker import compile_source, jit_function

    reg = registry_ref.registry()
    active_target, materialize_arg = reg.active_target, reg.materialize_arg

    with active_target(target):
        src, options = compile_source(
            jit_function(launch.kernel), [materialize_arg(a) for a in launch.args], launch.kwargs, target
        )
    return json.dumps(
        [launch.kernel, src.signature, sorted(map(repr, src.constants.items())), repr(src.attrs), options],
        sort_keys=True,
        default=repr,
    )


def plan(scenario_dicts: list[dict[str, Any]], target_name: str) -> list[dict[str, Any]]:
    """The compile jobs of one target."""
    from moe_cts.conformance.aot.worker import gpu_target

    info = load_targets()["targets"][target_name]
    target = gpu_target(info)
    jobs: dict[str, dict[str, Any]] = {}
    for s in scenario_dicts:
        if target_name not in s["targets"]:
            continue
        for launch in _scenario_launches(s, target):
            job = jobs.setdefault(
                _compile_key(launch, target),
                {
                    "kernel": launch.kernel,
                    "target_name": target_name,
                    "target": info,
                    "dtype": _data_dtype(launch),
                    "config": dict(launch.kwargs),
                    "launch": launch.to_json(),
                    "origins": [],
                    "presets": [],
                },
            )
            if s["origin"] not in job["origins"]:
                job["origins"].append(s["origin"])
            if s["meta"] and s["meta"] not in job["presets"]:
                job["presets"].append(s["meta"])
    return list(jobs.values())


def main(argv: list[str]) -> int:
    """python -m moe_cts.conformance.aot.plan SCENARIOS.json TARGET[,TARGET...] JOBS.json"""
    scenario_dicts = json.loads(Path(argv[0]).read_text())
    jobs = [job for t in argv[1].split(",") for job in plan(scenario_dicts, t)]
    Path(argv[2]).write_text(json.dumps(jobs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
