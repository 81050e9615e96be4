"""Bitwise snapshot of every kernel stage: proof that a refactor moved code without changing a bit.

    python ci/gpu/bitwise_snapshot.py --out before.pt                      # on the old code
    python ci/gpu/bitwise_snapshot.py --out after.pt --compare before.pt   # on the new code: exit 1 on any diff

    for case in CASES (scaled presets x fp32/fp16/bf16, shared experts on/off, swiglu_oai interleaved,
                       non-gated gelu / gelu_tanh / relu, expert biases, local experts, multi-chunk align):
        route(x) -> topk_ids, topk_weights, logits, scores
        align(ids) (one-chunk and multi-chunk tiles) -> sorted_ids, expert_of_block, inverse, counts, ...
        gate_up(x, ids) -> act   down(act, ids) -> out   shared_expert(x)   combine(out, w, kept, shared)
        fused_moe(x) -> y
    on cuda also QUANT_CASES (block fp8 concat and interleaved, MXFP4; weights quantized on the device from a
    seeded generator, so two runs on one GPU see the same codes): fused_moe(qspec, qweights, x) -> y
    saved as {"<case>/<stage>/<field>": tensor on the CPU} with torch.save; --compare checks equal keys,
    dtypes, shapes and bytes (torch.equal on the raw bits, so NaN == NaN and -0.0 != +0.0).

--device cpu (default) sets TRITON_INTERPRET=1 before triton is imported; --device cuda runs the compiled
kernels. Inputs are built on the CPU from fixed seeds and moved to the device, so both runs see the same
bits. A snapshot is only comparable with one taken on the same device kind (and Triton version).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

#: (T, seed) per case: T = 40 gives several BLOCK_M tiles at k = 2..8 and a partial last tile.
TOKENS = 40
#: Forced align tiles (BLOCK_N, SUB, BLOCK_S) for the multi-chunk path (T*k > 16 ids -> several chunks).
MULTI_CHUNK_TILES = (16, 16, 16)
BLOCK_M = 16


@dataclass(frozen=True)
class Case:
    name: str
    preset: str
    dtype: str
    changes: tuple[tuple[str, object], ...] = ()  # MoESpec.replace(**changes) on the scaled preset


def cases() -> list[Case]:
    out = []
    # -- every dtype on a plain softmax top-k layer and on the grouped sigmoid router with shared experts
    for dt in ("float32", "float16", "bfloat16"):
        out.append(Case(f"mixtral-{dt}", "mixtral-8x7b", dt))
        out.append(Case(f"deepseek-v3-{dt}", "deepseek-v3", dt))  # grouped top-k, correction bias, shared
    # -- shared experts with the sigmoid shared gate (Qwen2-MoE)
    out.append(Case("qwen2-shared-gate-bf16", "qwen2-57b-a14b", "bfloat16"))
    out.append(
        Case(
            "qwen2-no-shared-fp16",
            "qwen2-57b-a14b",
            "float16",
            (("n_shared_experts", 0), ("shared_gate", False)),
        )
    )
    # -- interleaved swiglu_oai with router and expert biases (gpt-oss)
    out.append(Case("gpt-oss-fp32", "gpt-oss-20b", "float32"))
    out.append(Case("gpt-oss-bf16", "gpt-oss-20b", "bfloat16"))
    # -- non-gated activations (plain Linear -> act -> Linear)
    for act in ("gelu", "gelu_tanh", "relu", "silu"):
        out.append(
            Case(f"nongated-{act}-fp32", "olmoe-1b-7b", "float32", (("gated", False), ("activation", act)))
        )
    out.append(Case("gated-gelu-bf16", "qwen3-30b-a3b", "bfloat16", (("activation", "gelu"),)))
    # -- expert parallelism: the align kernels' local-expert mask
    out.append(Case("local-experts-fp16", "mixtral-8x7b", "float16", (("local_experts", (0, 2, 3, 5)),)))
    out.append(
        Case("local-experts-deepseek-fp32", "deepseek-v2-lite", "float32", (("local_experts", (1, 4, 6)),))
    )
    return out


def _spec(case: Case):
    from moe_cts.reference import presets

    spec = presets.scaled(case.preset)
    changes = dict(case.changes)
    if changes.get("n_shared_experts") == 0:
        changes["shared_intermediate_size"] = 0
    return spec.replace(**changes) if changes else spec


def _put(snap: dict, prefix: str, **tensors) -> None:
    for name, t in tensors.items():
        if t is not None:
            snap[f"{prefix}/{name}"] = t.detach().to("cpu").clone()


def _meta_fields(meta) -> dict:
    names = ("expert_counts", "sorted_ids", "expert_of_block", "num_padded", "inverse", "routed_counts")
    return {n: getattr(meta, n) for n in names}


def run_case(case: Case, device: str, seed: int) -> dict:
    import torch

    from moe_cts import kernels
    from moe_cts.reference.spec import MoEWeights

    spec = _spec(case)
    dtype = getattr(torch, case.dtype)
    gen = torch.Generator().manual_seed(seed)
    w = MoEWeights.random(spec, generator=gen, dtype=torch.float64).map(lambda t: t.to(dtype).to(device))
    x = torch.randn((TOKENS, spec.hidden_size), generator=gen, dtype=torch.float64).to(dtype).to(device)
    snap: dict = {}
    p = case.name

    r = kernels.route(spec, w, x)
    _put(
        snap, f"{p}/route", topk_ids=r.topk_ids, topk_weights=r.topk_weights, logits=r.logits, scores=r.scores
    )
    ids = r.topk_ids
    _put(snap, f"{p}/align", **_meta_fields(kernels.align(spec, ids, BLOCK_M)))
    _put(snap, f"{p}/align_multi", **_meta_fields(kernels.align(spec, ids, BLOCK_M, tiles=MULTI_CHUNK_TILES)))
    stage_spec = spec.replace(local_experts=None)  # the stage twins compute every assignment
    act = kernels.gate_up(stage_spec, w, x, ids)
    down = kernels.down(stage_spec, w, act, ids)
    shared = kernels.shared_expert(spec, w, x) if spec.shared_width else None
    kept = torch.ones_like(ids, dtype=torch.bool)
    if spec.local_experts is not None:
        kept = torch.isin(ids, torch.tensor(spec.local_experts, dtype=ids.dtype, device=ids.device))
    y_comb = kernels.combine(spec, down, r.topk_weights, kept, shared)
    _put(snap, f"{p}/stages", gate_up=act, down=down, shared=shared, combine=y_comb)
    _put(snap, f"{p}/fused", y=kernels.fused_moe(spec, w, x))
    return snap


#: (name, preset, scheme, hidden = intermediate width): widths of whole 128-blocks (fp8) / MX blocks (MXFP4),
#: two K groups at least, so a scale read from the wrong block changes bits.
QUANT_CASES = (
    ("quant-fp8-block-deepseek", "deepseek-v3", "fp8_block", 256),
    ("quant-fp8-block-gpt-oss-interleaved", "gpt-oss-20b", "fp8_block", 256),
    ("quant-mxfp4-gpt-oss", "gpt-oss-20b", "mxfp4", 128),
)


def run_quant_case(name: str, preset: str, scheme: str, width: int, device: str, seed: int) -> dict:
    import torch
    from quant_bench import _base, quantized

    from moe_cts import kernels
    from moe_cts.reference import presets
    from moe_cts.reference.quant import QuantScheme

    spec = presets.scaled(preset).replace(hidden_size=width, intermediate_size=width)
    if spec.shared_width:
        spec = spec.replace(shared_intermediate_size=width)
    qspec = spec.replace(quant=getattr(QuantScheme, scheme)())
    gen = torch.Generator(device=device).manual_seed(seed)
    qw = quantized(qspec, _base(spec, torch.bfloat16, device, gen), gen)
    x = torch.randn((TOKENS, spec.hidden_size), generator=gen, device=device).to(torch.bfloat16)
    snap: dict = {}
    _put(snap, f"{name}/fused", y=kernels.fused_moe(qspec, qw, x))
    return snap


def compare(got: dict, want: dict) -> list[str]:
    """Differences as lines: missing / extra keys, dtype, shape or any differing bit."""
    import torch

    diffs = [f"missing {k}" for k in sorted(set(want) - set(got))]
    diffs += [f"extra {k}" for k in sorted(set(got) - set(want))]
    for k in sorted(set(got) & set(want)):
        a, b = got[k], want[k]
        if a.dtype != b.dtype or a.shape != b.shape:
            diffs.append(f"{k}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}")
        elif not torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8)):
            n = int((a.contiguous().view(torch.uint8) != b.contiguous().view(torch.uint8)).sum())
            diffs.append(f"{k}: {n} differing bytes")
    return diffs


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu (Triton interpreter) or cuda[:N]")
    ap.add_argument("--out", help="write the snapshot here (.pt)")
    ap.add_argument("--compare", help="compare with this snapshot; exit 1 on any difference")
    ap.add_argument("--seed", type=int, default=20260611)
    ap.add_argument("--only", help="run only cases whose name contains this")
    args = ap.parse_args(argv)
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported (kernels read it at import)
    import torch

    snap: dict = {}
    for i, case in enumerate(cases()):
        if args.only and args.only not in case.name:
            continue
        snap.update(run_case(case, args.device, args.seed + i))
        print(f"{case.name}: ok", flush=True)
    if args.device != "cpu":  # the interpreter runs these in tests/kernels (minutes per case here)
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        for i, qc in enumerate(QUANT_CASES):
            if args.only and args.only not in qc[0]:
                continue
            snap.update(run_quant_case(*qc, args.device, args.seed + 100 + i))
            print(f"{qc[0]}: ok", flush=True)
    print(f"{len(snap)} tensors, {sum(t.numel() for t in snap.values())} elements")
    if args.out:
        torch.save(snap, args.out)
    if args.compare:
        diffs = compare(snap, torch.load(args.compare))
        for line in diffs:
            print("DIFF", line)
        print(
            f"bitwise compare with {args.compare}: {'IDENTICAL' if not diffs else f'{len(diffs)} differences'}"
        )
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
