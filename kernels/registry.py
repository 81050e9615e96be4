"""Every top-level @triton.jit kernel of kernels/_*_kernels.py, and the exact launches the launchers make.

The AOT compile matrix (conformance/aot/matrix.py) needs, per kernel, the ASTSource signature and constexprs that a
real launch would compile. Writing them by hand would drift from the launchers, so they are captured instead:

    launches = capture(spec, num_tokens, dtype, target=GPUTarget("hip", "gfx942", 64), config=cfg)
      # runs moe_cts.kernels.fused_moe on "meta" tensors (shapes and strides only, no memory), with
      # JITFunction.run replaced by a recorder: every kernel[grid](...) call is kept as a Launch
      # (kernel name, argument descriptions, constexpr and option keywords); nothing is compiled or run.

    Launch.args  : one JSON-able description per non-constexpr argument, in parameter order (tensors as
                   dtype/shape/stride); launchers pass them by keyword, positional_form() orders them
    Launch.kwargs: the constexpr keywords plus num_warps / num_stages, as the launcher passed them

`KERNELS` lists the kernels by name; tests/aot/test_registry.py fails when a kernel in a _*_kernels.py file is
missing here, or when no captured scenario launches it. Names with a leading underscore are @triton.jit
device helpers (inlined into the kernels), not kernels.

Capture needs the compiled-kernel path of Triton: it raises if TRITON_INTERPRET=1 (under the interpreter the
launchers pick interpreter tile sizes and triton.jit builds no JITFunction). moe_cts.conformance.aot.matrix runs it in a
subprocess without that variable.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from triton.tools.tensor_descriptor import TensorDescriptor

from moe_cts.reference.spec import MoESpec, MoEWeights, weight_shapes

KERNEL_DIR = Path(__file__).parent


@dataclass(frozen=True)
class KernelInfo:
    module: str  # import path of the _*_kernels.py module that defines it
    op: str  # the public op whose launcher launches it
    matrix: bool  # a GEMM whose tiles must use the matrix units (a scalar fallback is a Fail)
    fp8_operands: tuple[str, ...] = ()  # pointer args retyped to an fp8 flavour for the fp8 compile check


KERNELS: dict[str, KernelInfo] = {
    # matrix=False as for the single-kernel router before: the router tiles are not the config tables' (which
    # the tables tier compiles for every matrix kernel), and an fp32 ieee dot may use FMA on NVIDIA
    "router_logits_kernel": KernelInfo("moe_cts.kernels._router_kernels", "route", matrix=False),
    "router_select_kernel": KernelInfo("moe_cts.kernels._router_kernels", "route", matrix=False),
    "align_one_chunk_kernel": KernelInfo("moe_cts.kernels._align_kernels", "align", matrix=False),
    "chunk_hist_kernel": KernelInfo("moe_cts.kernels._align_kernels", "align", matrix=False),
    "chunk_scan_kernel": KernelInfo("moe_cts.kernels._align_kernels", "align", matrix=False),
    "chunk_scatter_kernel": KernelInfo("moe_cts.kernels._align_kernels", "align", matrix=False),
    "pad_fill_kernel": KernelInfo("moe_cts.kernels._align_kernels", "align", matrix=False),
    "gate_up_kernel": KernelInfo(
        "moe_cts.kernels._grouped_gemm_kernels",
        "gate_up",
        matrix=True,
        fp8_operands=("x_ptr", "w13_ptr", "w13_desc"),
    ),
    "down_kernel": KernelInfo(
        "moe_cts.kernels._grouped_gemm_kernels",
        "down",
        matrix=True,
        fp8_operands=("a_ptr", "w2_ptr", "w2_desc"),
    ),
    "row_gate_kernel": KernelInfo("moe_cts.kernels._grouped_gemm_kernels", "shared_expert", matrix=False),
    "combine_kernel": KernelInfo("moe_cts.kernels._combine_kernels", "combine", matrix=False),
    "mx_gate_up_kernel": KernelInfo("moe_cts.kernels._mxfp4_gemm_kernels", "fused_moe_mxfp4", matrix=True),
    "mx_down_kernel": KernelInfo("moe_cts.kernels._mxfp4_gemm_kernels", "fused_moe_mxfp4", matrix=True),
    # fp8 w8a8 (kernels/fp8_moe.py): operands are fp8 already, so no retyping; captured with a quantized spec
    "quantize_rows_kernel": KernelInfo("moe_cts.kernels._fp8_quant_kernels", "fused_moe_fp8", matrix=False),
    "fp8_gate_up_kernel": KernelInfo("moe_cts.kernels._fp8_gemm_kernels", "fused_moe_fp8", matrix=True),
    "fp8_down_kernel": KernelInfo("moe_cts.kernels._fp8_gemm_kernels", "fused_moe_fp8", matrix=True),
}


def declared_kernels() -> dict[str, str]:
    """{kernel name: module} of every top-level @triton.jit function without a leading underscore in
    kernels/_*_kernels.py, read from the source (no import, so it works under the interpreter too)."""
    found = {}
    for path in sorted(KERNEL_DIR.glob("_*_kernels.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_") and _is_jit(node):
                found[node.name] = f"moe_cts.kernels.{path.stem}"
    return found


def _is_jit(node: ast.FunctionDef) -> bool:
    for dec in node.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(target, ast.Attribute) and target.attr in ("jit", "autotune", "heuristics"):
            return True
    return False


def jit_function(name: str):
    """The JITFunction object of a registered kernel."""
    if name not in KERNELS:
        raise KeyError(f"kernel {name!r} is not in moe_cts.kernels.registry.KERNELS")
    return getattr(importlib.import_module(KERNELS[name].module), name)


# ----------------------------------------------------------------------------------------------------------
# Launch capture


@dataclass(frozen=True)
class Launch:
    kernel: str
    args: tuple[Any, ...]  # describe_arg() of each positional argument
    kwargs: dict[str, Any] = field(default_factory=dict)  # constexpr keywords, num_warps, num_stages
    grid: tuple[int, ...] | None = None  # programs launched (None if the grid was a callable that failed)

    def to_json(self) -> dict[str, Any]:
        grid = list(self.grid) if self.grid is not None else None
        return {"kernel": self.kernel, "args": list(self.args), "kwargs": dict(self.kwargs), "grid": grid}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Launch:
        grid = tuple(d["grid"]) if d.get("grid") is not None else None
        return cls(kernel=d["kernel"], args=tuple(d["args"]), kwargs=dict(d["kwargs"]), grid=grid)


def describe_arg(a: Any) -> Any:
    """A JSON-able stand-in for one kernel argument; materialize_arg() turns it back into one."""
    if isinstance(a, torch.Tensor):
        return {
            "tensor": str(a.dtype).removeprefix("torch."),
            "shape": list(a.shape),
            "stride": list(a.stride()),
        }
    if isinstance(a, TensorDescriptor):
        return {"tensor_desc": describe_arg(a.base), "shape": list(a.shape), "stride": list(a.strides),
                "block_shape": list(a.block_shape)}  # fmt: skip
    if a is None or isinstance(a, (bool, int, float, str)):
        return a
    raise TypeError(f"kernel argument of type {type(a).__name__} cannot be described for AOT compilation")


def materialize_arg(d: Any) -> Any:
    """A meta tensor (data_ptr 0: 16-byte aligned, like every CUDA/HIP allocation) or the scalar itself."""
    if isinstance(d, dict) and "tensor" in d:
        return torch.empty_strided(d["shape"], d["stride"], dtype=getattr(torch, d["tensor"]), device="meta")
    if isinstance(d, dict) and "tensor_desc" in d:
        return TensorDescriptor(materialize_arg(d["tensor_desc"]), d["shape"], d["stride"], d["block_shape"])
    return d


def _grid(grid: Any, kwargs: dict[str, Any]) -> tuple[int, ...] | None:
    if callable(grid):
        try:
            grid = grid(kwargs)
        except Exception:  # a grid lambda that reads launch-time values it cannot see here
            return None
    return tuple(int(g) for g in grid)


def positional_form(fn, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Launchers pass arguments by keyword; a Launch keeps the non-constexpr ones positionally, in the
    kernel's parameter order (as Launch.args and the AOT worker's binder expect), and the constexprs and
    launch options as keywords. Raises TypeError naming a non-constexpr parameter that was not given."""
    kwargs = dict(kwargs)
    positional = list(args)
    for param in fn.params[len(args) :]:
        if param.is_constexpr:
            continue
        if param.name not in kwargs:
            raise TypeError(f"{fn.fn.__name__}: argument {param.name!r} was not given")
        positional.append(kwargs.pop(param.name))
    return positional, kwargs


@contextlib.contextmanager
def _recording(launches: list[Launch]) -> Iterator[None]:
    from triton.runtime.jit import JITFunction

    original = JITFunction.run

    def record(self, *args, grid, warmup, **kwargs):
        name = self.fn.__name__
        if name not in KERNELS:
            raise KeyError(
                f"launcher launched {name!r}, which moe_cts.kernels.registry.KERNELS does not list"
            )
        args, kwargs = positional_form(self, args, kwargs)
        launches.append(Launch(name, tuple(describe_arg(a) for a in args), kwargs, _grid(grid, kwargs)))

    JITFunction.run = record
    try:
        yield
    finally:
        JITFunction.run = original


class FakeDriver:
    """Stands in for Triton's active driver during capture and AOT compilation: get_current_target() is
    the compile target. Launchers read the warp size from it, and in-kernel tl.target_info checks
    (is_hip, cuda_capability_geq) read it at compile time: on a CPU machine they would otherwise see no
    driver and answer False for every target (docs/bugs.md#facts-aot-target-checks)."""

    def __init__(self, target) -> None:
        self.target = target

    def get_current_target(self):
        return self.target

    def get_current_device(self) -> int:
        return 0

    def is_active(self) -> bool:
        return True


@contextlib.contextmanager
def active_target(target) -> Iterator[None]:
    """Make `target` (a triton GPUTarget) the active driver's target, and make the tile heuristic read
    its backend's table (torch.version.hip cannot be faked)."""
    from triton.runtime.driver import driver

    from moe_cts.kernels import config as cfgmod
    from moe_cts.kernels import target_info

    previous = getattr(driver, "_active", None), cfgmod.backend, cfgmod.current_table, cfgmod.current_target
    name = next(
        (
            t.name
            for t in target_info.TARGETS.values()
            if (t.backend, t.arch) == (target.backend, target.arch)
        ),
        None,
    )
    driver.set_active(FakeDriver(target))
    cfgmod.backend = lambda: target.backend
    # the table the target's device reads: cuda-sm90 for sm90, as on the device
    cfgmod.current_table = lambda: cfgmod.table_for(target.backend, name)
    # and the target's own defaults (mxfp4_gemm.TARGET_DECODE: swapped on sm90)
    cfgmod.current_target = lambda: name
    _clear_launcher_caches()
    try:
        yield
    finally:
        # reset_active() would look for a real GPU driver and raise on a CPU
        driver._active, cfgmod.backend, cfgmod.current_table, cfgmod.current_target = previous
        _clear_launcher_caches()


def _clear_launcher_caches() -> None:
    """Forget what the moe_cts.kernels modules cached (functools caches: config tables, local masks): the next
    capture may be for another target. The prefix is the package's since the moe_cts namespace move."""
    import sys

    for name, module in list(sys.modules.items()):
        if name.startswith("moe_cts.kernels.") and module is not None:
            for value in list(vars(module).values()):
                if callable(getattr(value, "cache_clear", None)):
                    value.cache_clear()


def meta_weights(spec: MoESpec, dtype: torch.dtype) -> MoEWeights:
    return MoEWeights(
        **{
            name: torch.empty(shape, dtype=dtype, device="meta")
            for name, shape in weight_shapes(spec).items()
        }
    )


def meta_qweights(spec: MoESpec, dtype: torch.dtype):
    """QuantizedMoEWeights of an MXFP4 spec on the meta device: packed e2m1 codes (..., N, K/2) and E8M0
    scale codes (..., N, K/32); base holds the router and biases in `dtype`."""
    from moe_cts.reference.qweights import QuantizedMoEWeights, QuantTensor

    base = meta_weights(spec, dtype)

    def qt(shape):
        *lead, n, k = shape
        codes = torch.empty((*lead, n, k // 2), dtype=torch.uint8, device="meta")
        scales = torch.empty((*lead, n, k // 32), dtype=torch.uint8, device="meta")
        return QuantTensor(codes, scales, "e2m1", (1, 32), "e8m0")

    shapes = weight_shapes(spec)
    fields = {n: qt(shapes[n]) for n in ("w13", "w2", "shared_w13", "shared_w2") if n in shapes}
    return QuantizedMoEWeights(base=base, **fields)


def meta_fp8_qweights(spec: MoESpec):
    """QuantizedMoEWeights of meta tensors: uint8 codes and fp32 scales in spec.quant's blocks."""
    from moe_cts.reference.qweights import QUANT_FIELDS, QuantizedMoEWeights, QuantTensor

    base = meta_weights(spec, torch.float32)
    q = spec.quant
    qts = {}
    for name in QUANT_FIELDS:
        w = getattr(base, name)
        if w is None:
            continue
        *lead, N, K = w.shape
        bn, bk = q.block_for(N, K)
        codes = torch.empty(w.shape, dtype=torch.uint8, device="meta")
        scales = torch.empty((*lead, -(-N // bn), -(-K // bk)), dtype=torch.float32, device="meta")
        qts[name] = QuantTensor(codes, scales, q.fp8_format, (bn, bk), "float32")
    static = 1.0 if q.activation_scale == "static" else None
    return QuantizedMoEWeights(base=base, a13_scale=static, a2_scale=static, **qts)


def capture(
    spec: MoESpec,
    num_tokens: int,
    dtype: torch.dtype,
    *,
    target: Any,
    config: Any = None,
    batch_invariant: bool = False,
    fused_select: bool = True,
) -> list[Launch]:
    """The kernel launches of one fused_moe forward on `target` (a triton GPUTarget), module docstring.
    config=None lets the launchers' heuristic choose, reading the target backend's table; fused_select=False
    routes with the separate select launch (kernels/router.py FUSED_SELECT).

    Launchers' functools caches are cleared around it (active_target), so one process can capture for
    several targets."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError(
            "moe_cts.kernels.registry.capture needs TRITON_INTERPRET unset (compiled-kernel launch path)"
        )
    from moe_cts.kernels.moe import fused_moe

    launches: list[Launch] = []
    x = torch.empty((num_tokens, spec.hidden_size), dtype=dtype, device="meta")
    if spec.quant is None:
        weights = meta_weights(spec, dtype)
    elif spec.quant.method == "mxfp4":
        weights = meta_qweights(spec, dtype)
    else:
        weights = meta_fp8_qweights(spec)
    router = importlib.import_module("moe_cts.kernels.router")
    saved, router.FUSED_SELECT = router.FUSED_SELECT, fused_select  # False: the separate select launch
    try:
        # fused_moe dispatches quantized specs (kernels/moe.py)
        with _recording(launches), active_target(target):
            fused_moe(spec, weights, x, config=config, batch_invariant=batch_invariant)
    finally:
        router.FUSED_SELECT = saved
    return launches


def table_targets(table: str) -> tuple[str, ...]:
    """Targets (kernels/target_info.py names) that read a table (config.table_targets)."""
    from moe_cts.kernels.config import table_targets as targets

    return targets(table)


def table_configs() -> list[tuple[str, str, str, dict[str, Any]]]:
    """(table, dtype class, bucket, config dict) of every GPU table entry (kernels/configs/*.json but the
    interpreter's)."""
    from moe_cts.kernels.config import all_configs, load_table

    return [
        (b, dc, bucket, cfg.to_dict())
        for b, dc, bucket, cfg in all_configs()
        if load_table(b)["backend"] != "interpreter"
    ]
