"""Quantization schemes of a MoE layer: `QuantScheme`, the optional `MoESpec.quant` field.

A scheme says how expert weights are stored and how activations are quantized; docs/semantics.md section 5
has the formulas. Every quantized GEMM is, with (bn, bk) the weight block and g the K-group:

    W[n, k]   = elem(q_w[n, k]) * s_w[n // bn, k // bk]                 (the exact dequantized weight)
    s_x[r, g] = scale(max(amax(x[r, group g]), amax_eps))               (dynamic; static: one given scalar)
    x'[r, k]  = RTNE_sat(x[r, k] / s_x[r, k // bk]) * s_x[r, k // bk]    (fp8 activations only)
    y[r, n]   = sum_g s_x[r, g] * s_w[n // bn, g] * sum_{k in g} q_x[r, k] * q_w[n, k]  ( = x' @ W.T )
    epilogue  : dequant -> + bias -> * router weight (fp32) -> cast

    method           weights (block bn x bk)          activations (groups along K)       scale format
    fp8_per_tensor   one scale per expert (N x K)      one scale per GEMM input            fp32
    fp8_per_token    one scale per output row (1 x K)  one scale per row (token)           fp32
    fp8_block        bn x bk blocks (128 x 128)        1 x bk groups (1 x 128)             fp32 | ue8m0
    mxfp4            e2m1, 1 x 32 blocks               none: bf16 / fp16                   ue8m0 (E8M0 codes)

Real models: DeepSeek-V3/R1 fp8_block fp32 scales; DeepSeek-V3.1/V4 fp8_block ue8m0; gpt-oss mxfp4 (bf16
activations on Hopper); fp8_per_tensor / fp8_per_token are the common w8a8 checkpoints (e.g. Mixtral FP8).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from moe_cts.reference import formats
from moe_cts.reference.errors import SpecError

QUANT_METHODS = ("fp8_per_tensor", "fp8_per_token", "fp8_block", "mxfp4")
ACTIVATION_SCALES = ("dynamic", "static", "none")
ACTIVATION_DTYPES = ("fp8", "bfloat16", "float16")
SCALE_FORMATS = ("fp32", "ue8m0")
#: where activations are requantized: before GEMM1, and after the activation function before GEMM2
QUANT_POINTS = ("gemm1", "gemm2")
#: the only epilogue order the reference computes (vllm PR 31962; docs/bugs.md#bug-02-router-weight-after-cast and #bug-03-bias-before-dequant are the others)
EPILOGUE = ("dequant", "bias", "router_weight", "cast")
#: the amax floors real code uses on zero groups: none (DeepSeek inference/kernel.py: 0/0 = NaN),
#: 1e-10 (vLLM, SGLang), 1e-4 (DeepEP); any finite float > 0 is accepted
AMAX_EPS_CHOICES = (None, 1e-10, 1e-4)


def _req(cond: bool, name: str, expected: str, got: Any) -> None:
    if not cond:
        raise SpecError(f"quant.{name}", expected, got)


@dataclass(frozen=True)
class QuantScheme:
    """How one MoE layer's experts are quantized (module docstring). Validated on construction; build one
    with the method constructors (`QuantScheme.fp8_block()`, `QuantScheme.mxfp4()`, ...)."""

    method: str  # one of QUANT_METHODS
    fp8_format: str = "e4m3fn"  # fp8 flavour of fp8 weights and of quantized activations
    activation_scale: str = "dynamic"  # dynamic (amax in the oracle) | static (given scalars) | none
    activation_dtype: str = "fp8"  # fp8 (w8a8) | bfloat16 | float16 (weight-only; activations unquantized)
    weight_block: tuple[int, int] | None = None  # (bn, bk): fp8_block (128, 128) by default, mxfp4 (1, 32)
    act_group: int | None = None  # fp8_block: activation group along K; must equal weight_block[1]
    scale_format: str = "fp32"  # fp32 scales, or powers of two (ue8m0) rounded by scale_rounding
    scale_rounding: str = "ceil"  # ue8m0 only: formats.SCALE_ROUNDINGS (the producer's mode)
    amax_eps: float | None = 1e-10  # amax floor on dynamic groups; None = no floor (zero group -> 0/0 = NaN)
    quantize_inputs: tuple[str, ...] = (
        QUANT_POINTS  # subset of QUANT_POINTS where activations are requantized
    )
    epilogue: tuple[str, ...] = EPILOGUE  # declared epilogue order; only EPILOGUE is valid

    def __post_init__(self) -> None:
        for name in ("weight_block", "quantize_inputs", "epilogue"):  # JSON gives lists
            v = getattr(self, name)
            if isinstance(v, list):
                object.__setattr__(self, name, tuple(v))
        m = self.method
        _req(m in QUANT_METHODS, "method", f"one of {QUANT_METHODS}", m)
        _req(
            self.fp8_format in formats.FP8_FORMATS,
            "fp8_format",
            f"one of {formats.FP8_FORMATS}",
            self.fp8_format,
        )
        _req(
            self.activation_scale in ACTIVATION_SCALES,
            "activation_scale",
            f"one of {ACTIVATION_SCALES}",
            self.activation_scale,
        )
        _req(
            self.activation_dtype in ACTIVATION_DTYPES,
            "activation_dtype",
            f"one of {ACTIVATION_DTYPES}",
            self.activation_dtype,
        )
        _req(self.scale_format in SCALE_FORMATS, "scale_format", f"one of {SCALE_FORMATS}", self.scale_format)
        _req(
            self.scale_rounding in formats.SCALE_ROUNDINGS,
            "scale_rounding",
            f"one of {formats.SCALE_ROUNDINGS}",
            self.scale_rounding,
        )
        _req(self.epilogue == EPILOGUE, "epilogue", f"{EPILOGUE} (the reference order)", self.epilogue)
        eps = self.amax_eps
        _req(
            eps is None
            or (
                isinstance(eps, (int, float)) and not isinstance(eps, bool) and math.isfinite(eps) and eps > 0
            ),
            "amax_eps",
            "None or a finite float > 0 (1e-10 vLLM/SGLang, 1e-4 DeepEP)",
            eps,
        )
        self._check_activations()
        self._check_blocks()

    def _check_activations(self) -> None:
        a8 = self.activation_dtype == "fp8"
        if self.method == "mxfp4":
            _req(
                not a8,
                "activation_dtype",
                "bfloat16 or float16 for mxfp4 (fp8 x mx needs sm100/gfx950)",
                "fp8",
            )
        _req(
            self.quantize_inputs == (QUANT_POINTS if a8 else ()),
            "quantize_inputs",
            f"{QUANT_POINTS if a8 else ()} when activation_dtype is {self.activation_dtype!r}",
            self.quantize_inputs,
        )
        allowed = (
            ("none",)
            if not a8
            else ("dynamic", "static")
            if self.method == "fp8_per_tensor"
            else ("dynamic",)
        )
        _req(
            self.activation_scale in allowed,
            "activation_scale",
            f"one of {allowed} for method {self.method!r} with activation_dtype {self.activation_dtype!r}",
            self.activation_scale,
        )
        _req(
            self.activation_scale == "dynamic" or self.amax_eps in (None, 1e-10),
            "amax_eps",
            "the default (it applies to dynamic activation scales only)",
            self.amax_eps,
        )

    def _check_blocks(self) -> None:
        wb, m = self.weight_block, self.method
        if m in ("fp8_per_tensor", "fp8_per_token"):
            _req(wb is None, "weight_block", f"None for {m} (the scale covers a whole expert / row)", wb)
            _req(self.act_group is None, "act_group", f"None for {m}", self.act_group)
            _req(self.scale_format == "fp32", "scale_format", f"'fp32' for {m}", self.scale_format)
        ok = (
            isinstance(wb, tuple)
            and len(wb) == 2
            and all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in wb)
        )
        if m == "fp8_block":
            _req(ok, "weight_block", "a pair of ints >= 1 (bn, bk), e.g. (128, 128)", wb)
            if self.activation_dtype == "fp8":
                _req(
                    self.act_group == wb[1],
                    "act_group",
                    f"weight_block[1] ({wb[1]}): groups must align with K blocks",
                    self.act_group,
                )
            else:
                _req(
                    self.act_group is None,
                    "act_group",
                    "None when activations are not quantized",
                    self.act_group,
                )
        if m == "mxfp4":
            _req(wb == (1, 32), "weight_block", "(1, 32) (OCP MX: 32 elements along K per E8M0 scale)", wb)
            _req(
                self.act_group is None,
                "act_group",
                "None for mxfp4 (activations are not quantized)",
                self.act_group,
            )
            _req(
                self.scale_format == "ue8m0",
                "scale_format",
                "'ue8m0' for mxfp4 (E8M0 scales)",
                self.scale_format,
            )
        if self.scale_format == "fp32":
            _req(
                self.scale_rounding == "ceil",
                "scale_rounding",
                "'ceil' (unused) when scale_format is 'fp32'",
                self.scale_rounding,
            )

    # -- derived
    @property
    def weight_format(self) -> str:
        """Element format of the stored weight codes."""
        return "e2m1" if self.method == "mxfp4" else self.fp8_format

    @property
    def quantizes_activations(self) -> bool:
        return self.activation_dtype == "fp8"

    def block_for(self, n: int, k: int) -> tuple[int, int]:
        """(bn, bk) of the weight scale blocks of an (n, k) matrix."""
        if self.method == "fp8_per_tensor":
            return (n, k)
        if self.method == "fp8_per_token":
            return (1, k)
        return self.weight_block

    # -- constructors and serialization
    @classmethod
    def fp8_per_tensor(cls, **kw: Any) -> QuantScheme:
        return cls(method="fp8_per_tensor", **kw)

    @classmethod
    def fp8_per_token(cls, **kw: Any) -> QuantScheme:
        return cls(method="fp8_per_token", **kw)

    @classmethod
    def fp8_block(cls, block: tuple[int, int] = (128, 128), **kw: Any) -> QuantScheme:
        group = block[1] if kw.get("activation_dtype", "fp8") == "fp8" else None  # weight-only: no groups
        return cls(method="fp8_block", weight_block=tuple(block), act_group=group, **kw)

    @classmethod
    def mxfp4(cls, activation_dtype: str = "bfloat16", scale_rounding: str = "ceil") -> QuantScheme:
        return cls(
            method="mxfp4",
            activation_dtype=activation_dtype,
            activation_scale="none",
            weight_block=(1, 32),
            scale_format="ue8m0",
            scale_rounding=scale_rounding,
            quantize_inputs=(),
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name in ("weight_block", "quantize_inputs", "epilogue"):
            d[name] = None if d[name] is None else list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> QuantScheme:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        _req(not unknown, "fields", f"only {sorted(known)}", unknown)
        return cls(**d)

    @classmethod
    def from_hf(cls, qc: Mapping[str, Any] | Any) -> QuantScheme:
        """A transformers `quantization_config` (dict or object) -> QuantScheme.

        {quant_method: fp8, fmt: e4m3, activation_scheme: dynamic, weight_block_size: [128, 128]}  DeepSeek-V3
        ... plus scale_fmt: ue8m0                                                                 DeepSeek-V3.1/V4
        {quant_method: fp8, activation_scheme: static|dynamic} (no weight_block_size)             per-tensor w8a8
        {quant_method: mxfp4}                                                                     gpt-oss
        """
        get = (lambda k: qc.get(k)) if isinstance(qc, Mapping) else (lambda k: getattr(qc, k, None))
        method = get("quant_method")
        if method == "mxfp4":
            return cls.mxfp4()
        if method != "fp8":
            raise SpecError("config.quantization_config.quant_method", "'fp8' or 'mxfp4'", method)
        fmt = get("fmt") or "e4m3"
        fmts = {"e4m3": "e4m3fn", "e4m3fn": "e4m3fn", "e4m3fnuz": "e4m3fnuz", "e5m2": "e5m2"}
        if fmt not in fmts:
            raise SpecError("config.quantization_config.fmt", f"one of {sorted(fmts)}", fmt)
        act = get("activation_scheme") or "dynamic"
        if act not in ("dynamic", "static"):
            raise SpecError("config.quantization_config.activation_scheme", "'dynamic' or 'static'", act)
        block = get("weight_block_size")
        scale_fmt = get("scale_fmt") or "fp32"
        if scale_fmt not in ("fp32", "ue8m0"):
            raise SpecError("config.quantization_config.scale_fmt", "None, 'fp32' or 'ue8m0'", scale_fmt)
        if block is None:
            return cls.fp8_per_tensor(fp8_format=fmts[fmt], activation_scale=act)
        if act != "dynamic":
            raise SpecError(
                "config.quantization_config.activation_scheme", "'dynamic' with weight_block_size", act
            )
        return cls.fp8_block(tuple(block), fp8_format=fmts[fmt], scale_format=scale_fmt)


def check_spec(spec: Any) -> None:
    """The combinations of a MoESpec and its QuantScheme that the reference refuses (SpecError)."""
    q = spec.quant
    if isinstance(q, Mapping):
        q = QuantScheme.from_dict(q)
        object.__setattr__(spec, "quant", q)
    if not isinstance(q, QuantScheme):
        raise SpecError("quant", "None, a QuantScheme or its dict", type(q).__name__)
    if q.method == "fp8_per_tensor" and q.activation_scale == "dynamic":
        # one amax over the whole GEMM input: which rows a rank computes changes every scale
        _req(
            spec.capacity_factor is None and spec.local_experts is None,
            "activation_scale",
            "'static' when capacity_factor or local_experts is set (a dynamic per-tensor amax depends on the rows computed)",
            q.activation_scale,
        )
    if q.method == "mxfp4":
        for f in ("hidden_size", "intermediate_size", "shared_intermediate_size"):
            v = getattr(spec, f)
            _req(
                v % 32 == 0,
                "weight_block",
                f"(1, 32) dividing {f} ({v}): MX blocks are never partial",
                q.weight_block,
            )
