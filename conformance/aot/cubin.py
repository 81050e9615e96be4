"""Proof that the AOT path makes working code: GEMM cubins built on a CPU for sm90, run on a Hopper GPU.

python -m moe_cts.conformance.aot.matrix --build-sm90 DIR   (any machine, no GPU used: CUDA_VISIBLE_DEVICES is cleared)
    case  = a Mixtral-like layer at test size (H 512, I 256, E 8, k 2, T 512, bf16, 128-row tiles)
    for the gate_up and down launches of fused_moe(case) captured on meta tensors:
        DIR/<kernel>.cubin / .ptx / .json  built by triton.compile for GPUTarget("cuda", 90, 32)
    DIR/manifest.json: case, signature, constexprs, shared bytes, warps, parameter count, triton version
python -m moe_cts.conformance.aot.matrix --run-cubin DIR    (on an sm90 GPU)
    fused_moe(case) with the oracle's routing, its two GEMM launches served from DIR's cubins through
    the CUDA driver API (cuModuleLoadData + cuLaunchKernel, ctypes: independent of the local triton),
    the other stages JIT-compiled as usual; y is compared with the float64 oracle
    (|y - y64| <= 4 u_bf16 * sum_j w_j |act_j| @ |w2_e|^T per element: act, the per-assignment outputs
    and y are each rounded to bf16 once; a zero output or a dropped K tile exceeds it by ~4x and more)
python -m moe_cts.conformance.aot.matrix --prove-sm90 DIR   both halves, the build in a subprocess without a GPU
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from moe_cts.conformance.aot import registry_ref

PROOF_KERNELS = ("gate_up_kernel", "down_kernel")
PROOF_CASE = {
    "preset": "mixtral-8x7b",
    "hidden_size": 512,
    "intermediate_size": 256,
    "num_experts": 8,
    "num_tokens": 512,
    "dtype": "bfloat16",
    "seed": 20260611,
    # The cuda.json large row: 128-row tiles, 8 warps, so that sm90 gets wgmma (checked in the PTX).
    "config": {
        "BLOCK_M": 128,
        "gate_up": {"BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 16, "num_warps": 8, "num_stages": 3},
        "down": {"BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 16, "num_warps": 8, "num_stages": 3},
    },
}
U_BF16 = 2.0**-8


def _spec(case: dict[str, Any]):
    from moe_cts.reference import presets

    return presets.scaled(
        case["preset"],
        hidden_size=case["hidden_size"],
        intermediate_size=case["intermediate_size"],
        num_experts=case["num_experts"],
    )


def entry_param_count(ptx: str, name: str) -> int:
    """Parameters of the kernel entry in the PTX: the non-constexpr arguments plus the scratch pointers
    this triton version appends (global, and profile from 3.5 on)."""
    m = re.search(rf"\.entry\s+{re.escape(name)}\s*\(([^)]*)\)", ptx)
    if m is None:
        raise ValueError(f"no .entry {name} in the PTX")
    return len(re.findall(r"\.param\b", m.group(1)))


# ----------------------------------------------------------------------------------------------------------
# Build half (CPU)


def build_sm90(out_dir: Path | str, case: dict[str, Any] = PROOF_CASE) -> dict[str, Any]:
    if "triton" not in sys.modules:
        os.environ.pop("TRITON_INTERPRET", None)  # kernels and triton read it at import
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("--build-sm90 needs TRITON_INTERPRET unset before triton is imported")
    import torch
    import triton
    from triton.backends.compiler import GPUTarget

    from moe_cts.conformance.aot.worker import compile_source, cuda_resources

    reg = registry_ref.registry()
    active_target, capture, jit_function, materialize_arg = (
        reg.active_target,
        reg.capture,
        reg.jit_function,
        reg.materialize_arg,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = GPUTarget("cuda", 90, 32)
    spec = _spec(case)
    launches = capture(
        spec, case["num_tokens"], getattr(torch, case["dtype"]), target=target, config=case["config"]
    )
    manifest: dict[str, Any] = {"case": case, "target": "sm90", "triton": triton.__version__, "kernels": {}}
    for launch in launches:
        if launch.kernel not in PROOF_KERNELS or launch.kernel in manifest["kernels"]:
            continue
        fn = jit_function(launch.kernel)
        with active_target(target):
            src, options = compile_source(
                fn, [materialize_arg(a) for a in launch.args], launch.kwargs, target
            )
            ck = triton.compile(src, target=target, options=options)
        (out / f"{launch.kernel}.cubin").write_bytes(ck.asm["cubin"])
        (out / f"{launch.kernel}.ptx").write_text(ck.asm["ptx"])
        meta = ck.metadata._asdict()
        arg_names = fn.arg_names
        manifest["kernels"][launch.kernel] = {
            "name": meta["name"],
            "cubin": f"{launch.kernel}.cubin",
            "signature": dict(src.signature),
            "constexprs": {arg_names[k[0]]: v for k, v in src.constants.items() if len(k) == 1},
            "shared": int(meta["shared"]),
            "num_warps": int(meta["num_warps"]),
            "global_scratch_size": int(meta.get("global_scratch_size") or 0),
            "global_scratch_align": int(meta.get("global_scratch_align") or 1),
            "n_params": entry_param_count(ck.asm["ptx"], meta["name"]),
            "wgmma": "wgmma.mma_async" in ck.asm["ptx"],
            **cuda_resources(ck.asm["cubin"]),
        }
    missing = set(PROOF_KERNELS) - set(manifest["kernels"])
    if missing:
        raise RuntimeError(f"fused_moe launched none of {sorted(missing)} for the proof case")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, default=repr))
    return manifest


# ----------------------------------------------------------------------------------------------------------
# Run half (GPU)


class CudaDriver:
    """The few CUDA driver API calls that load a cubin and launch it (ctypes on libcuda)."""

    MAX_DYNAMIC_SHARED = 8  # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES

    def __init__(self) -> None:
        self.lib = ctypes.CDLL("libcuda.so.1")

    def check(self, rc: int, what: str) -> None:
        if rc != 0:
            name = ctypes.c_char_p()
            self.lib.cuGetErrorName(rc, ctypes.byref(name))
            raise RuntimeError(f"{what} failed: CUDA error {rc} {name.value.decode() if name.value else ''}")

    def load(self, cubin: bytes, name: str, shared: int) -> ctypes.c_void_p:
        module, func = ctypes.c_void_p(), ctypes.c_void_p()
        self.check(
            self.lib.cuModuleLoadData(ctypes.byref(module), ctypes.c_char_p(cubin)), "cuModuleLoadData"
        )
        self.check(
            self.lib.cuModuleGetFunction(ctypes.byref(func), module, name.encode()), "cuModuleGetFunction"
        )
        if shared > 48 * 1024:  # above 48 KiB a kernel must opt in to dynamic shared memory
            self.check(
                self.lib.cuFuncSetAttribute(func, self.MAX_DYNAMIC_SHARED, shared), "cuFuncSetAttribute"
            )
        return func

    def launch(self, func, grid, threads: int, shared: int, stream: int, params: list[Any]) -> None:
        holders = (ctypes.c_void_p * len(params))(
            *[ctypes.cast(ctypes.byref(p), ctypes.c_void_p) for p in params]
        )
        g = tuple(grid) + (1,) * (3 - len(grid))
        rc = self.lib.cuLaunchKernel(
            func, *map(ctypes.c_uint, g), ctypes.c_uint(threads), ctypes.c_uint(1), ctypes.c_uint(1),
            ctypes.c_uint(shared), ctypes.c_void_p(stream), holders, None,
        )  # fmt: skip
        self.check(rc, "cuLaunchKernel")


def _c_value(ty: str, value: Any):
    if ty.startswith("*"):
        return ctypes.c_uint64(value.data_ptr() if value is not None else 0)
    if ty in ("i1", "u1"):
        return ctypes.c_int8(int(value))
    if ty in ("i32", "u32"):
        return ctypes.c_int32(int(value))
    if ty in ("i64", "u64"):
        return ctypes.c_int64(int(value))
    if ty == "fp32":
        return ctypes.c_float(float(value))
    raise TypeError(f"unsupported kernel parameter type {ty}")


class CubinServer:
    """Replaces JITFunction.run for the proof kernels: their launches run the saved cubins."""

    def __init__(self, directory: Path, manifest: dict[str, Any]) -> None:
        self.dir, self.manifest, self.cuda = directory, manifest, CudaDriver()
        self.funcs: dict[str, Any] = {}
        self.launched: list[str] = []

    def __call__(self, fn, args, grid, kwargs) -> None:
        import inspect

        import torch

        entry = self.manifest["kernels"][fn.__name__]
        bound = inspect.signature(fn.fn).bind(*args, **{k: v for k, v in kwargs.items() if k in fn.arg_names})
        for name, want in entry["constexprs"].items():
            got = bound.arguments.get(name)
            if got != want and not (isinstance(want, str) and str(got) == want):
                raise RuntimeError(
                    f"{fn.__name__}: launch has {name}={got!r}, the cubin was built for {want!r}"
                )
        if fn.__name__ not in self.funcs:
            cubin = (self.dir / entry["cubin"]).read_bytes()
            self.funcs[fn.__name__] = self.cuda.load(cubin, entry["name"], entry["shared"])
        grid = grid(kwargs) if callable(grid) else grid
        params = [
            _c_value(ty, bound.arguments[n]) for n, ty in entry["signature"].items() if ty != "constexpr"
        ]
        n_blocks = int(torch.tensor(grid).prod())
        scratch = None
        if entry["global_scratch_size"]:
            scratch = torch.empty(n_blocks * entry["global_scratch_size"], dtype=torch.uint8, device="cuda")
        extra = entry["n_params"] - len(params)
        params += [
            ctypes.c_uint64(scratch.data_ptr() if (scratch is not None and i == 0) else 0)
            for i in range(extra)
        ]
        stream = torch.cuda.current_stream().cuda_stream
        self.cuda.launch(
            self.funcs[fn.__name__], grid, 32 * entry["num_warps"], entry["shared"], stream, params
        )
        self.launched.append(fn.__name__)


def _case_tensors(case: dict[str, Any], spec):
    import torch

    from moe_cts.reference.spec import MoEWeights, weight_shapes

    g = torch.Generator().manual_seed(case["seed"])
    dt = getattr(torch, case["dtype"])
    scale = {"router": spec.hidden_size, "w13": spec.hidden_size, "w2": spec.intermediate_size}
    tensors = {
        name: (torch.randn(shape, generator=g, dtype=torch.float64) / scale.get(name, 1) ** 0.5).to(dt)
        for name, shape in weight_shapes(spec).items()
    }
    x = torch.randn((case["num_tokens"], spec.hidden_size), generator=g, dtype=torch.float64).to(dt)
    return MoEWeights(**tensors), x


def _bound_ratio(spec, weights64, ref, y) -> tuple[float, float]:
    """(max |y - y64| / (4 u mag), relative RMS error): mag = sum_j w_j |act_j| @ |w2_e|^T."""
    import numpy as np

    ids, w = ref.routing.topk_ids, np.abs(ref.routing.topk_weights)
    act = np.abs(ref.gate_up.act)  # (T, k, I)
    w2 = np.abs(weights64.w2.numpy())  # (E, H, I)
    mag = np.zeros_like(ref.y)
    for e in range(w2.shape[0]):  # one expert at a time: w2[ids] would be a (T, k, H, I) array
        t, j = np.nonzero(ids == e)
        np.add.at(mag, t, (w[t, j, None] * act[t, j]) @ w2[e].T)
    err = np.abs(y - ref.y)
    ratio = float(np.max(err / (4 * U_BF16 * mag + 1e-30)))
    rms = float(np.sqrt(np.mean(err**2)) / np.sqrt(np.mean(ref.y**2)))
    return ratio, rms


def run_cubin(directory: Path | str) -> dict[str, Any]:
    import torch
    from triton.runtime.jit import JITFunction

    from moe_cts.kernels import fused_moe
    from moe_cts.kernels.metadata import Routing
    from moe_cts.reference import numpy_oracle

    directory = Path(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    case = manifest["case"]
    if not torch.cuda.is_available() or torch.version.hip:
        raise RuntimeError("--run-cubin needs a CUDA GPU (the cubins are sm90)")
    cap = torch.cuda.get_device_capability()
    spec = _spec(case)
    weights, x = _case_tensors(case, spec)
    weights64 = weights.to(dtype=torch.float64)
    ref = numpy_oracle.moe_forward(spec, weights64, x.to(torch.float64))
    dev = torch.device("cuda")
    routing = Routing(
        topk_ids=torch.tensor(ref.routing.topk_ids, dtype=torch.int32, device=dev),
        topk_weights=torch.tensor(ref.routing.topk_weights, dtype=torch.float32, device=dev),
    )
    wd, xd = weights.to(device=dev), x.to(dev)
    server, original = CubinServer(directory, manifest), JITFunction.run

    def run(self, *args, grid, warmup, **kwargs):
        if self.fn.__name__ in manifest["kernels"]:
            return server(self, args, grid, kwargs)
        return original(self, *args, grid=grid, warmup=warmup, **kwargs)

    JITFunction.run = run
    try:
        y_cubin = fused_moe(spec, wd, xd, config=case["config"], routing=routing)
        torch.cuda.synchronize()
    finally:
        JITFunction.run = original
    y_jit = fused_moe(spec, wd, xd, config=case["config"], routing=routing)
    ratio, rms = _bound_ratio(spec, weights64, ref, y_cubin.double().cpu().numpy())
    result = {
        "device": torch.cuda.get_device_name(),
        "capability": f"sm{cap[0]}{cap[1]}",
        "built_with_triton": manifest["triton"],
        "cubin_launches": server.launched,
        "wgmma_in_ptx": {k: v["wgmma"] for k, v in manifest["kernels"].items()},
        "max_error_over_bound": ratio,
        "relative_rms_error": rms,
        "max_abs_diff_vs_local_jit": float((y_cubin.float() - y_jit.float()).abs().max()),
        "pass": ratio <= 1.0 and sorted(set(server.launched)) == sorted(PROOF_KERNELS),
    }
    (directory / "run_result.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m moe_cts.conformance.aot.matrix", description=__doc__.split("\n")[0]
    )
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--build-sm90", metavar="DIR", help="compile the GEMM cubins for sm90 on this CPU")
    g.add_argument("--run-cubin", metavar="DIR", help="load DIR's cubins on an sm90 GPU and check them")
    g.add_argument("--prove-sm90", metavar="DIR", help="both: build without a GPU, then run")
    a = p.parse_args(argv)
    if a.build_sm90:
        manifest = build_sm90(a.build_sm90)
        print(
            json.dumps(
                {
                    k: {f: v[f] for f in ("shared", "registers", "wgmma")}
                    for k, v in manifest["kernels"].items()
                }
            )
        )
        return 0
    if a.prove_sm90:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        env.pop("TRITON_INTERPRET", None)
        subprocess.run(
            [sys.executable, "-m", "moe_cts.conformance.aot.matrix", "--build-sm90", a.prove_sm90],
            env=env,
            check=True,
        )
    result = run_cubin(a.run_cubin or a.prove_sm90)
    print(json.dumps(result, indent=1))
    return 0 if result["pass"] else 1
