"""Helpers shared by every kernel launcher: interpreter detection, input validation before launch."""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from moe_cts.reference.spec import SpecError

try:  # grid dependency control (Triton >= 3.3); traced only under PDL, which only CUDA sm90+ tables set
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # pragma: no cover (a Triton build without the CUDA extras: PDL stays off)
    gdc_launch_dependents = gdc_wait = None

#: True under the Triton CPU interpreter. Kernels upcast bf16 right after each load when it is set,
#: because the interpreter computes bf16 arithmetic on raw 16-bit patterns
#: (docs/bugs.md#facts-triton-interpreter, triton #11584). The GPU build prunes the branch.
INTERPRET = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1")

#: Whether host (cpu) tensors may reach a launch: only under the interpreter. On a GPU build Triton refuses them
#: at the launch ("Pointer argument (at 0) cannot be accessed from Triton (cpu tensor?)"), after the forward's
#: earlier launches ran, so `require_tensor(..., launch=True)` names the field first. Tests monkeypatch it.
HOST_TENSORS_LAUNCH = INTERPRET.value

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def dot_acc(a, b, acc, INPUT_PRECISION: tl.constexpr):
    """acc + a @ b, (M, K) x (K, N) -> (M, N) fp32: tl.dot on GPUs; under the interpreter a broadcast
    product summed over K, because the interpreter's tl.dot is the host BLAS (numpy's matmul), whose fp32
    results depend on a row's position in the tile (measured: OpenBLAS 0.3.31 in numpy 2.4.6 on an AMD EPYC,
    thousands of differing elements between a row computed alone and inside a 32-row tile). A token's
    bits would then change with the batch around it and no batch-invariance claim could hold there. The
    sum runs over K the same way for every row, so each row's bits depend on its own data only."""
    if INTERPRET:
        return acc + tl.sum(a[:, :, None] * b[None, :, :], axis=1)
    else:
        return tl.dot(a, b, acc, input_precision=INPUT_PRECISION)


@triton.jit
def pdl_enter(PDL: tl.constexpr):
    """First statement of a kernel launched with programmatic dependent launch (PDL; config.pdl() gives the
    mode, config.PDL_WAIT_FIRST or PDL_AT_EXIT):

        PDL_WAIT_FIRST: gdc_wait()               # every earlier kernel of the stream has finished
                        gdc_launch_dependents()  # the next kernel may launch; its programs wait in gdc_wait
        PDL_AT_EXIT:    gdc_wait()               # no trigger: the next kernel launches when every program of
                                                 # this one has exited, ahead of the grid's completion

    Why: at decode sizes a forward is a chain of short kernels, and each launch's latency sat between them
    (about 2-3 us per kernel boundary in a CUDA graph on the H200, ci/gpu/perf_probe.py stack13). Under PDL the
    next kernel's programs are already resident when this one ends. An early trigger also places them early,
    on the SMs that are free while this kernel's last wave runs, several to an SM: the 16-bit chain at
    Mixtral-8x7B T = 1 (GEMM1 in 1.7 waves) took x1.47 the serial time that way, and at exit it is x0.995
    (docs/h200.md, session 21). Nothing is read or written before the wait, so the values are those of a
    serial launch. Without PDL (other targets, the interpreter) nothing is traced."""
    if PDL == 3:  # config.PDL_AT_EXIT (a literal: a jit function reads no module constant)
        gdc_wait()
    elif PDL:
        gdc_wait()
        gdc_launch_dependents()


def pdl_options(pdl: int) -> dict:
    """Launch options of a kernel whose PDL constexpr is `pdl` (config.pdl()'s mode): launch_pdl only when
    set (HIP's and the interpreter's options have no such field)."""
    return {"launch_pdl": True} if pdl else {}


def require_tensor(
    name: str,
    t: torch.Tensor,
    *,
    shape: tuple[int, ...] | None = None,
    dtype: torch.dtype | tuple[torch.dtype, ...] | None = None,
    device: torch.device | None = None,
    launch: bool = False,
) -> None:
    """Raise SpecError naming `name` unless t has the shape, dtype and device asked for. `launch`: t is the
    tensor a launcher takes its device from (x, act, ids), so it must be on a device the kernels can read: a GPU,
    or the host under the interpreter."""
    if not isinstance(t, torch.Tensor):
        raise SpecError(name, "a torch.Tensor", type(t).__name__)
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise SpecError(f"{name}.shape", str(tuple(shape)), tuple(t.shape))
    if dtype is not None:
        dtypes = dtype if isinstance(dtype, tuple) else (dtype,)
        if t.dtype not in dtypes:
            raise SpecError(f"{name}.dtype", " or ".join(map(str, dtypes)), t.dtype)
    if device is not None and t.device != device:
        raise SpecError(f"{name}.device", str(device), str(t.device))
    if launch and t.device.type == "cpu" and not HOST_TENSORS_LAUNCH:
        raise SpecError(
            f"{name}.device", "a GPU device (cpu tensors run only under TRITON_INTERPRET=1)", "cpu"
        )


@triton.jit
def trans_tile(w):
    """w.T of a (N, K) weight tile read through a tensor descriptor, as the (K, N) operand of a dot. On the
    interpreter the transposed numpy view is copied into row-major order (flattened and reshaped): numpy sums
    and multiplies a transposed view in another order, a few ulp apart, and the descriptor path must give the
    pointer path's bits. On GPUs it is a view (the MMA reads the K-major tile from shared memory)."""
    t = w.T
    if INTERPRET:
        K: tl.constexpr = t.shape[0]
        N: tl.constexpr = t.shape[1]
        t = tl.reshape(tl.reshape(t, (K * N,)), (K, N))
    return t
