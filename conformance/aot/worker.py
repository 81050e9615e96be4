"""AOT compile worker: compiles captured kernel launches for a target on the CPU, in its own process.

    python -m moe_cts.conformance.aot.worker JOBS.json RESULTS.jsonl     (run by moe_cts.conformance.aot.matrix, never by hand)

    for job in JOBS:                              # job = {id, target{backend, arch, warp_size, asm}, launch}
        fake active driver -> job's target        # in-kernel tl.target_info checks see the compile target
        fresh TRITON_CACHE_DIR                    # a cached binary would hide a compile for another target
        signature, constexprs, attrs = Triton's own launch binder on meta tensors   (what a GPU run compiles)
        triton.compile(ASTSource(...), target)
        RESULTS += {id, ok, error, shared, static_shared, registers, spill_bytes, matrix_found, seconds,
                    ptxas_registers, ptxas_notes}         # the last two from ptxas's own log (CUDA)

One line per job, flushed at once: if the compiler kills this process, the parent sees which job did it,
records a Fail for it and starts a new worker on the rest. TRITON_INTERPRET must be unset here (the parent
clears it): under the interpreter triton.jit builds no compilable kernel and kernels prune GPU code paths.
Works with triton 3.6 and 3.9 (same binder and compile API; checked on both wheels).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from moe_cts.conformance.aot import registry_ref


def gpu_target(t: dict[str, Any]):
    from triton.backends.compiler import GPUTarget

    return GPUTarget(t["backend"], t["arch"], t["warp_size"])


def jit_function(kernel: str):
    if kernel.startswith("probe:"):
        from moe_cts.conformance.aot import probe as aot_probe

        return getattr(aot_probe, kernel.removeprefix("probe:"))
    registered = registry_ref.registry().jit_function

    return registered(kernel)


def compile_source(fn, args: list[Any], kwargs: dict[str, Any], target):
    """(ASTSource, options) exactly as JITFunction.run would build them for these arguments on `target`."""
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(
        backend, kwargs, bound_args, specialization, options
    )
    return ASTSource(fn, signature, constexprs, attrs), options.__dict__


def _cuobjdump() -> str | None:
    import triton.backends.nvidia as nv

    bundled = Path(nv.__file__).parent / "bin" / "cuobjdump"
    return str(bundled) if bundled.exists() else shutil.which("cuobjdump")


def cuda_resources(cubin: bytes) -> dict[str, Any]:
    """REG, static SHARED, and spills from `cuobjdump --dump-resource-usage`. ptxas puts spilled registers
    in the STACK frame (LOCAL stays 0: gate_up 128x128 on sm80 reads REG:32 STACK:3632), and Triton kernels
    have no local arrays, so spill bytes = max(STACK, LOCAL)."""
    tool = _cuobjdump()
    if tool is None:
        return {"resource_error": "cuobjdump not found"}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    found = {k: int(v) for k, v in re.findall(r"\b(REG|SHARED|LOCAL|STACK):(\d+)", out)}
    return {
        "registers": found.get("REG"),
        "static_shared": found.get("SHARED", 0),
        "spill_bytes": max(found.get("STACK", 0), found.get("LOCAL", 0)),
        "stack_bytes": found.get("STACK", 0),
    }


# ptxas's performance notes, e.g. "ptxas info    : (C7515) Potential Performance Loss: wgmma.mma_async
# instructions are serialized due to ...": a kernel that compiles and computes right but runs its MMAs one at a
# time (docs/aot.md). The tool's name in the prefix varies by toolkit ("ptxas", "ptxas-blackwell").
_NOTE = re.compile(r"\((C\d{4})\) Potential Performance Loss: (.*)")
_USED = re.compile(r"Used (\d+) registers")


def ptxas_findings(log: str) -> dict[str, Any]:
    """From ptxas -v's log of one kernel: {ptxas_registers, ptxas_notes: ["C7515: text", ...]}; {} when the
    log has no compile in it (a Triton that does not print it, or a cached binary)."""
    if "Compiling entry function" not in log:
        return {}
    used = _USED.search(log)
    return {
        "ptxas_registers": int(used.group(1)) if used else None,
        "ptxas_notes": [f"{code}: {text.strip()}" for code, text in _NOTE.findall(log)],
    }


def amd_resources(amdgcn: str) -> dict[str, Any]:
    """VGPR / SGPR / AGPR counts and spills from the amdhsa kernel metadata in the amdgcn text."""

    def field(name: str) -> int | None:
        m = re.search(rf"\.{name}:\s+(\d+)", amdgcn)
        return int(m.group(1)) if m else None

    vgpr_spill, sgpr_spill = field("vgpr_spill_count"), field("sgpr_spill_count")
    return {
        "registers": field("vgpr_count"),
        "sgprs": field("sgpr_count"),
        "agprs": field("agpr_count"),
        "static_shared": field("group_segment_fixed_size") or 0,
        "spill_bytes": 4 * ((vgpr_spill or 0) + (sgpr_spill or 0)),
        "vgpr_spills": vgpr_spill,
        "sgpr_spills": sgpr_spill,
    }


def compile_job(job: dict[str, Any], keep_dir: str | None = None) -> dict[str, Any]:
    """Compile one job; never raises for a compiler error (it is returned as the result)."""
    import triton

    reg = registry_ref.registry()
    Launch, active_target, materialize_arg = reg.Launch, reg.active_target, reg.materialize_arg

    t = job["target"]
    target = gpu_target(t)
    launch = Launch.from_json(job["launch"])
    result: dict[str, Any] = {"id": job["id"], "ok": False}
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    with tempfile.TemporaryDirectory(prefix="moe-cts-aot-") as cache:
        os.environ["TRITON_CACHE_DIR"] = cache
        try:
            fn = jit_function(launch.kernel)
            log = io.StringIO()
            # TRITON_DUMP_PTXAS_LOG (main sets it) has Triton print ptxas -v's log to stdout, where the
            # results file is not: it is caught here, and nothing reaches the parent's pipe
            with active_target(target), contextlib.redirect_stdout(log):
                src, options = compile_source(
                    fn, [materialize_arg(a) for a in launch.args], launch.kwargs, target
                )
                ck = triton.compile(src, target=target, options=options)
        except Exception as err:  # a compiler error is a result to record, not a crash of the run
            lines = [ln for ln in str(err).splitlines() if ln.strip()]
            result["error"] = f"{type(err).__name__}: {' | '.join(lines[-3:])[:600]}"
            result["seconds"] = time.perf_counter() - start
            result["cpu_seconds"] = _cpu_seconds() - cpu_start
            return result
    result["seconds"] = time.perf_counter() - start
    result["cpu_seconds"] = _cpu_seconds() - cpu_start
    asm_text = ck.asm.get(t["asm"], "")
    if isinstance(asm_text, bytes):
        asm_text = asm_text.decode(errors="replace")
    result.update(
        ok=True,
        shared=int(ck.metadata.shared),
        num_warps=ck.metadata.num_warps,
        num_stages=ck.metadata.num_stages,
        matrix_found=sorted(name for name, pat in t["matrix_patterns"].items() if pat in asm_text),
        triton=triton.__version__,
    )
    if t["backend"] == "cuda":
        result.update(cuda_resources(ck.asm["cubin"]), **ptxas_findings(log.getvalue()))
    else:
        result.update(amd_resources(asm_text))
    if keep_dir is not None:
        save_binary(ck, Path(keep_dir) / f"{job['id']}")
    return result


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (ptxas, the AMD linker): on a shared machine
    wall time says little about the cost of a compile."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def save_binary(ck, stem: Path) -> None:
    """The binary, its assembly and the metadata JSON beside it (moe_cts.conformance.aot.cubin reads them)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    for ext, data in ck.asm.items():
        if ext == "source":
            continue
        mode = "wb" if isinstance(data, bytes) else "w"
        with open(f"{stem}.{ext}", mode) as f:
            f.write(data)
    meta = {k: v for k, v in ck.metadata._asdict().items() if _jsonable(v)}
    Path(f"{stem}.json").write_text(json.dumps(meta, indent=1, default=str))


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v, default=str)
        return True
    except (TypeError, ValueError):
        return False


def main(argv: list[str]) -> int:
    jobs_path, results_path = argv[0], argv[1]
    keep_dir = argv[2] if len(argv) > 2 else None
    if os.environ.get("TRITON_INTERPRET") == "1":
        print(
            "moe_cts.conformance.aot.worker: TRITON_INTERPRET=1 is set; AOT compilation needs it unset",
            file=sys.stderr,
        )
        return 2
    os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"  # read at each compile (triton.knobs), caught by compile_job
    jobs = json.loads(Path(jobs_path).read_text())
    with open(results_path, "a") as out:
        for job in jobs:
            out.write(json.dumps(compile_job(job, keep_dir)) + "\n")
            out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
