"""The "triton" implementation: moe-cts's own kernels, through their public API only.

    stage     kernels call                                      output
    route     moe_cts.kernels.router.route(spec, w, x)                  metadata.Routing (ids int32, weights fp32)
    permute   moe_cts.kernels.align.permute(spec, ids)                  Permutation (counts, kept, order, offsets)
    gate_up   moe_cts.kernels.grouped_gemm.gate_up(spec, w, x, ids)     act (T, k, I)
    down      moe_cts.kernels.grouped_gemm.down(spec, w, act, ids)      expert_out (T, k, H)
    combine   moe_cts.kernels.combine.combine(spec, eo, tw, kept, so)   y (T, H)
    forward   moe_cts.kernels.moe.fused_moe(spec, w, x[, out=])         y (T, H)

Quantized cases (spec.quant set) run through the same API with inputs.qweights (codes + scales):

    stage     fp8 methods                                         mxfp4 (once kernels/mxfp4_moe.py exists)
    gate_up   moe_cts.kernels.fp8_moe.gate_up_fp8(spec, qw, x, ids)       mxfp4_moe.gate_up_mxfp4
    down      moe_cts.kernels.fp8_moe.down_fp8(spec, qw, act, ids)        mxfp4_moe.down_mxfp4
    forward   moe_cts.kernels.moe.fused_moe(spec, qw, x[, out=]) -> fused_moe_fp8 / fused_moe_mxfp4

    act is the activation before its requantization, in x.dtype (the eager quantized adapter's contract).

Capabilities come from moe_cts.kernels.capabilities.CAPABILITIES; a kernel module that is missing (not written
yet, or no Triton on this platform) makes its stage NotSupported rather than an error, and so does the plain
`cpu` device (Triton kernels need a GPU or TRITON_INTERPRET=1).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from moe_cts.conformance.engine.protocol import FORWARD, Capabilities
from moe_cts.reference.errors import NotSupportedError

#: why the plain `cpu` device runs no Triton kernel (data/device_matrix.json, backend "cpu")
CPU_REASON = (
    "device: the triton implementation needs a GPU (cuda:N, hip:N) or the Triton interpreter "
    "(--device interpreter); the plain cpu device runs PyTorch implementations only"
)

#: stage -> (module, function)
ENTRY = {
    "route": ("moe_cts.kernels.router", "route"),
    "permute": ("moe_cts.kernels.align", "permute"),
    "gate_up": ("moe_cts.kernels.grouped_gemm", "gate_up"),
    "down": ("moe_cts.kernels.grouped_gemm", "down"),
    "combine": ("moe_cts.kernels.combine", "combine"),
    FORWARD: ("moe_cts.kernels.moe", "fused_moe"),
}


#: (quant family, stage) -> (module, function) of the staged quantized GEMMs
QUANT_ENTRY = {
    ("fp8", "gate_up"): ("moe_cts.kernels.fp8_moe", "gate_up_fp8"),
    ("fp8", "down"): ("moe_cts.kernels.fp8_moe", "down_fp8"),
    ("mxfp4", "gate_up"): ("moe_cts.kernels.mxfp4_moe", "gate_up_mxfp4"),
    ("mxfp4", "down"): ("moe_cts.kernels.mxfp4_moe", "down_mxfp4"),
}


def _quant_family(spec) -> str | None:
    return None if spec.quant is None else "mxfp4" if spec.quant.method == "mxfp4" else "fp8"


def _resolve(stage: str, family: str | None = None):
    module, fn = QUANT_ENTRY[(family, stage)] if (family, stage) in QUANT_ENTRY else ENTRY[stage]
    try:
        return getattr(importlib.import_module(module), fn)
    except (ImportError, AttributeError) as err:
        raise NotSupportedError(f"{stage}: {module}.{fn} is not available ({err})") from err


def _quant_schemes() -> frozenset[str]:
    try:
        from moe_cts.kernels.capabilities import quant_schemes  # after TRITON_INTERPRET, as below
    except ImportError:
        return frozenset()
    return frozenset(quant_schemes())


def _table() -> dict[str, Any]:
    try:
        # moe_cts.kernels imports triton, which must come after TRITON_INTERPRET is set (select_device)
        from moe_cts.kernels.capabilities import CAPABILITIES
    except ImportError:
        return {}
    return CAPABILITIES


class TritonImplementation:
    name = "triton"

    def __init__(self, *, batch_invariant: bool = False, allow_tf32: bool = False):
        self.batch_invariant = batch_invariant
        self.allow_tf32 = allow_tf32

    def capabilities(self) -> Capabilities:
        t = _table()
        stages = {s for s in ENTRY if self._available(s)}
        if "fused_moe" not in t.get("stages", ()):
            stages.discard(FORWARD)
        routing = {"renormalize", "router_bias", "correction_bias", "grouped", "scaling"}
        flags = {
            "renormalize": "renormalize",
            "router_bias": "router_bias",
            "correction_bias": "correction_bias",
            "grouped": "grouped_topk",
            "scaling": "routed_scaling_factor",
        }
        routing = {r for r in routing if t.get(flags[r], False)}
        forward = self._available(FORWARD)
        return Capabilities(
            stages=frozenset(stages),
            dtypes=frozenset(t.get("dtypes", ())),
            layouts=frozenset(t.get("layouts", ())),
            gated_activations=frozenset(t.get("gated_activations", ())),
            nongated_activations=frozenset(t.get("nongated_activations", ())),
            scorings=frozenset(t.get("scoring", ())),
            routing=frozenset(routing),
            expert_bias=bool(t.get("expert_bias", False)),
            shared_experts=bool(t.get("shared_experts", False)),
            shared_gate=bool(t.get("shared_gate", False)),
            capacity_dropping=bool(t.get("capacity_dropping", False)),
            local_mask=bool(t.get("local_expert_mask", False)),
            deterministic=bool(t.get("deterministic", False)),
            batch_invariant=self.batch_invariant and bool(t.get("batch_invariant", False)),
            accepts_out=forward and "out" in inspect.signature(_resolve(FORWARD)).parameters,
            fp32_dot="tf32" if self.allow_tf32 else "ieee",
            quant_schemes=_quant_schemes(),
            weight_before_cast=bool(t.get("weight_before_cast", False)),
        )

    def _available(self, stage: str) -> bool:
        try:
            _resolve(stage)
        except NotSupportedError:
            return False
        return True

    def kernel_registry(self) -> str:
        """The module `certify --compile` compiles ahead of time for this implementation (aot/registry_ref.py)."""
        return "moe_cts.kernels.registry"

    def kernel_config(self) -> dict[str, Any]:
        try:
            from moe_cts.kernels.config import last_config, last_table  # after TRITON_INTERPRET, as above
        except ImportError:
            return {}
        cfg, table = last_config(), last_table()
        if cfg is None:
            return {}
        # "table": the target the tile table was tuned for; the engine checks it against the device (provenance.py)
        return cfg.to_dict() | ({"table": table} if table else {})

    def run(self, inputs, stage: str, device=None, *, out=None) -> Any:
        if getattr(device, "backend", None) == "cpu":
            raise NotSupportedError(CPU_REASON)
        caps = self.capabilities()
        why = caps.unsupported(inputs.spec, str(inputs.x.dtype).removeprefix("torch."))
        if why is None and stage not in caps.stages:
            why = f"stage: {stage} not exposed by the Triton kernels"
        if why:
            raise NotSupportedError(why)
        spec, w = inputs.spec, inputs.weights
        family = _quant_family(spec)
        if family is not None and stage in (FORWARD, "gate_up", "down"):
            return self._run_quant(inputs, stage, family, out)
        fn = _resolve(stage)
        tf32 = {"allow_tf32": True} if self.allow_tf32 else {}
        if stage == FORWARD:
            kw = {"out": out} if out is not None else {}
            return fn(spec, w, inputs.x, batch_invariant=self.batch_invariant, **kw, **tf32)
        if stage == "route":
            return fn(spec, w, inputs.x, **tf32)
        if stage == "permute":
            return fn(spec, inputs.topk_ids)
        if stage == "gate_up":
            return fn(spec, w, inputs.x, inputs.topk_ids, **tf32)
        if stage == "down":
            return fn(spec, w, inputs.act, inputs.topk_ids, **tf32)
        return fn(spec, inputs.expert_out, inputs.topk_weights, inputs.kept, inputs.shared_out)

    def _run_quant(self, inputs, stage: str, family: str, out) -> Any:
        """Quantized GEMM stages and the forward on inputs.qweights (module docstring)."""
        spec, qw = inputs.spec, inputs.qweights
        if stage == FORWARD:
            kw = {"out": out} if out is not None else {}
            return _resolve(FORWARD)(spec, qw, inputs.x, batch_invariant=self.batch_invariant, **kw)
        fn = _resolve(stage, family)
        if stage == "gate_up":
            return fn(spec, qw, inputs.x, inputs.topk_ids)
        return fn(spec, qw, inputs.act, inputs.topk_ids)
