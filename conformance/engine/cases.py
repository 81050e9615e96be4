"""Conformance cases: a frozen `Case` fully determines its inputs, and its id replays it bit for bit.

    case = Case(spec, num_tokens=17, dtype="bfloat16", scenario=Scenario.make("zipf", s=1.2), seed=7)
    case.case_id                 -> "c1-eNqr..."   (url-safe base64 of zlib-compressed canonical JSON)
    Case.from_id(case.case_id)   == case
    case.build_inputs(device)    -> CaseInputs(x (T, H) dtype, weights MoEWeights dtype), same bits everywhere

Inputs are drawn in float32 on the CPU from torch.Generator(seed) (weights first, then x, then the
scenario's choices), cast to the case dtype, then moved: no device RNG, so every device sees the same bits.
Every linear map gets N(0, 1/fan_in) entries, so activations and outputs are of order 1.

The must-pass list is data (data/must_pass.json), versioned and hashed into every report.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import torch

from moe_cts.conformance.engine.scenarios import Scenario
from moe_cts.reference.spec import MoESpec, MoEWeights, weight_shapes

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DISTRIBUTIONS = ("normal", "uniform", "outliers")
ID_PREFIX = "c1-"
_DEFAULT_SPEC = {
    f.name: f.default for f in dataclasses.fields(MoESpec) if f.default is not dataclasses.MISSING
}
_FAN_IN_SCALE = {"correction_bias": 0.1, "router_bias": 0.5, "b13": 0.5, "b2": 0.5}


@dataclass(frozen=True)
class CaseInputs:
    """Inputs of one case on one device. Stage feeds (None unless the runner sets them) carry the oracle's
    output of the previous stage, rounded to the storage dtype, so each stage is judged alone."""

    spec: MoESpec
    x: torch.Tensor  # (T, H) case dtype
    weights: MoEWeights  # every tensor in the case dtype
    topk_ids: torch.Tensor | None = None  # (T, k) int32: ids the stage must use (route output accepted)
    topk_weights: torch.Tensor | None = None  # (T, k) float32
    act: torch.Tensor | None = None  # (T, k, I) case dtype: input of the down projection
    expert_out: torch.Tensor | None = None  # (T, k, H) case dtype: input of combine
    kept: torch.Tensor | None = None  # (T, k) bool
    shared_out: torch.Tensor | None = None  # (T, H) case dtype
    qweights: Any = None  # QuantizedMoEWeights when spec.quant is set (quant_cases.py), else None

    @property
    def dtype(self) -> torch.dtype:
        return self.x.dtype

    @property
    def device(self) -> torch.device:
        return self.x.device

    def with_feeds(self, **feeds: torch.Tensor | None) -> CaseInputs:
        return dataclasses.replace(self, **feeds)


@dataclass(frozen=True)
class Case:
    spec: MoESpec
    num_tokens: int  # T
    dtype: str = "float32"  # "float32" | "float16" | "bfloat16": x and every weight
    scenario: Scenario = field(default_factory=lambda: Scenario("uniform"))  # routing scenario
    distribution: str = "normal"  # values of x: normal | uniform (same variance) | outliers (1% x20)
    seed: int = 0  # 64-bit data seed
    name: str = ""  # must-pass cases only

    def __post_init__(self) -> None:
        if isinstance(self.scenario, (str, list, tuple, dict)):
            object.__setattr__(self, "scenario", Scenario.from_json(self.scenario))
        checks = [
            (isinstance(self.spec, MoESpec), "spec", "a MoESpec", type(self.spec).__name__),
            (_is_int(self.num_tokens) and self.num_tokens >= 0, "num_tokens", "an int >= 0", self.num_tokens),
            (self.dtype in DTYPES, "dtype", f"one of {tuple(DTYPES)}", self.dtype),
            (
                self.distribution in DISTRIBUTIONS,
                "distribution",
                f"one of {DISTRIBUTIONS}",
                self.distribution,
            ),
            (_is_int(self.seed) and 0 <= self.seed < 2**64, "seed", "an int in [0, 2**64)", self.seed),
            (isinstance(self.name, str), "name", "a str", self.name),
        ]
        for ok, fname, want, got in checks:
            if not ok:
                raise ValueError(f"Case.{fname}: expected {want}, got {got!r}")

    # -- identity
    def to_json(self) -> dict[str, Any]:
        spec = {k: v for k, v in self.spec.to_dict().items() if _DEFAULT_SPEC.get(k, object()) != v}
        d: dict[str, Any] = {
            "spec": spec,
            "T": self.num_tokens,
            "dtype": self.dtype,
            "scenario": self.scenario.to_json(),
            "dist": self.distribution,
            "seed": self.seed,
        }
        if self.name:
            d["name"] = self.name
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Case:
        return cls(
            spec=MoESpec.from_dict(d["spec"]),
            num_tokens=d["T"],
            dtype=d.get("dtype", "float32"),
            scenario=Scenario.from_json(d.get("scenario", "uniform")),
            distribution=d.get("dist", "normal"),
            seed=d.get("seed", 0),
            name=d.get("name", ""),
        )

    @functools.cached_property
    def case_id(self) -> str:
        """Compact, printable, url-safe; `Case.from_id` inverts it exactly."""
        raw = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()
        return ID_PREFIX + base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")

    @classmethod
    def from_id(cls, case_id: str) -> Case:
        if not isinstance(case_id, str) or not case_id.startswith(ID_PREFIX):
            raise ValueError(f"case_id: expected a string starting with {ID_PREFIX!r}, got {case_id!r}")
        body = case_id[len(ID_PREFIX) :]
        try:
            raw = zlib.decompress(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            return cls.from_json(json.loads(raw))
        except (ValueError, KeyError, zlib.error) as err:
            raise ValueError(f"case_id: not a valid moe-cts case id ({err}): {case_id!r}") from err

    def __str__(self) -> str:
        s = self.spec
        label = self.name or f"H{s.hidden_size}-I{s.intermediate_size}-E{s.num_experts}-k{s.top_k}"
        return f"{label}-T{self.num_tokens}-{self.dtype}-{self.scenario}"

    def params(self) -> dict[str, Any]:
        """Flat summary for reports."""
        s = self.spec
        return {
            "name": self.name,
            "H": s.hidden_size,
            "I": s.intermediate_size,
            "E": s.num_experts,
            "k": s.top_k,
            "T": self.num_tokens,
            "dtype": self.dtype,
            "scenario": str(self.scenario),
            "distribution": self.distribution,
            "seed": self.seed,
            "scoring": s.scoring,
            "grouped": s.grouped,
            "renormalize": s.renormalize,
            "routed_scaling_factor": s.routed_scaling_factor,
            "router_bias": s.router_bias,
            "correction_bias": s.correction_bias,
            "activation": s.activation,
            "gated": s.gated,
            "layout": s.w13_layout,
            "expert_bias": s.expert_bias,
            "shared": s.shared_width,
            "shared_gate": s.shared_gate,
            "capacity_factor": s.capacity_factor,
            "local_experts": None if s.local_experts is None else len(s.local_experts),
            "preset": s.name,
            "quant": None if s.quant is None else s.quant.method,
        }

    # -- inputs
    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def build_tensors(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x and the weight tensors in float32 on the CPU, before the cast (scenario applied)."""
        g = torch.Generator().manual_seed(self.seed)
        tensors = self.draw_weights(g)
        return self.draw_x(g, tensors), tensors

    def draw_weights(self, g: torch.Generator) -> dict[str, torch.Tensor]:
        """The weight tensors (float32, CPU), drawn first from the case generator: they do not depend on T."""
        spec = self.spec
        tensors: dict[str, torch.Tensor] = {}
        fan_in = {
            "router": spec.hidden_size,
            "w13": spec.hidden_size,
            "w2": spec.intermediate_size,
            "shared_w13": spec.hidden_size,
            "shared_w2": max(spec.shared_width, 1),
            "shared_gate": spec.hidden_size,
        }
        for name, shape in weight_shapes(spec).items():
            t = torch.randn(shape, generator=g, dtype=torch.float32)
            tensors[name] = t * (_FAN_IN_SCALE.get(name, 1.0) / math.sqrt(fan_in.get(name, 1)))
        return tensors

    def draw_x(self, g: torch.Generator, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """x from g after the weights, then the scenario (it edits x and the router tensors in place)."""
        x = _draw_x(self.distribution, (self.num_tokens, self.spec.hidden_size), g)
        self.scenario.apply(self.spec, tensors, x, g, self.torch_dtype)
        return x

    def build_inputs(self, device: torch.device | str = "cpu") -> CaseInputs:
        x, tensors = self.build_tensors()
        dt = self.torch_dtype
        if self.spec.quant is not None:  # codes + scales beside the weights (quant_cases.py)
            from moe_cts.conformance.engine.quant_cases import quantized_inputs
            from moe_cts.conformance.engine.quant_device import device_quantized_inputs, use_device_path

            dynamic = self.spec.quant.activation_scale != "static"
            # on a GPU the weights are quantized there (quant_device.py: the same bits, seconds not minutes)
            build = device_quantized_inputs if dynamic and use_device_path(device, None) else quantized_inputs
            xq, wq, qw = build(self.spec, x, tensors, dt, device)
            return CaseInputs(spec=self.spec, x=xq, weights=wq, qweights=qw)
        w = MoEWeights(**{k: v.to(dt).to(device) for k, v in tensors.items()}).validate(self.spec)
        return CaseInputs(spec=self.spec, x=x.to(dt).to(device), weights=w)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _draw_x(distribution: str, shape: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    if distribution == "uniform":  # same variance as N(0, 1)
        return (torch.rand(shape, generator=g) * 2.0 - 1.0) * math.sqrt(3.0)
    x = torch.randn(shape, generator=g)
    if distribution == "outliers":  # activation outliers: 1% of entries 20x larger
        x = torch.where(torch.rand(shape, generator=g) < 0.01, 20.0 * x, x)
    return x
