"""What the third-party adapters (liger.py, triton_kernels_moe.py) do around someone else's kernels: the
router a model runs before calling an experts op, and exact re-indexings of the case's weights.

    softmax_topk(x, weights, spec)   -> ids (T, k) int64, w (T, k) fp32      a transformers-style router
    rows_concat(t, spec)             -> t with the gate/up axis (dim -2 of w13, -1 of b13) as gate then up
    rows_interleaved(t, spec)        -> the same axis as gate, up alternating (gpt-oss)
    interpreter_env(device, name, v) -> set an environment knob before a package is first imported
    refuse_unless_forward(caps, inputs, stage, device, ...)   NotSupportedError before a launch, with the reason

The router is moe-cts code, not the third party's: it is what Mixtral/Qwen3-MoE compute in transformers
(fp32 logits, fp32 softmax over E, top-k, optional renormalization), so a verdict on such an adapter judges
the third party's experts op behind a router that matches the oracle's semantics:

    logits = x.float() @ router.float().T (+ router_bias)     (T, E) fp32
    scores = softmax(logits)                                  (T, E) fp32
    w, ids = topk(scores, k)                                  (T, k)
    w      = w / sum(w) (+1e-20)       if spec.renormalize
"""

from __future__ import annotations

import importlib
import os

import torch

from moe_cts.conformance.engine.protocol import FORWARD
from moe_cts.reference.errors import NotSupportedError
from moe_cts.reference.spec import MoESpec, MoEWeights


def softmax_topk(x: torch.Tensor, weights: MoEWeights, spec: MoESpec) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (T, k) int64 and weights (T, k) fp32 of a softmax top-k router (module docstring)."""
    logits = x.float() @ weights.router.float().T
    if spec.router_bias:
        logits = logits + weights.router_bias.float()
    scores = torch.softmax(logits, dim=-1)
    w, ids = torch.topk(scores, spec.top_k, dim=-1)
    if spec.renormalize:
        w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
    return ids, w


def rows_concat(t: torch.Tensor, spec: MoESpec, axis: int) -> torch.Tensor:
    """`t` with its gate/up axis (length 2I) reordered to gate rows then up rows. Exact (a gather)."""
    if spec.w13_layout == "concat":
        return t
    gate, up = (t.index_select(axis, _every_other(t, spec, start)) for start in (0, 1))
    return torch.cat([gate, up], dim=axis)


def rows_interleaved(t: torch.Tensor, spec: MoESpec, axis: int) -> torch.Tensor:
    """`t` with its gate/up axis (length 2I) reordered to gate, up alternating. Exact (a gather)."""
    if spec.w13_layout == "interleaved":
        return t
    I = spec.intermediate_size
    order = torch.stack([torch.arange(I), torch.arange(I) + I], dim=1).reshape(-1).to(t.device)
    return t.index_select(axis, order)


def _every_other(t: torch.Tensor, spec: MoESpec, start: int) -> torch.Tensor:
    return torch.arange(start, 2 * spec.intermediate_size, 2, device=t.device)


def refuse_unless_forward(
    caps, inputs, stage: str, device, *, one_forward: str, who: str, limit: str | None = None
) -> None:
    """NotSupportedError with the first reason a forward-only outside op cannot run this call, before any launch:
    outside its claims (caps), a stage other than the forward (one_forward says why: "X is one forward"), the
    adapter's own `limit` (a reason or None), a device its Triton code cannot run on (`who` names the code)."""
    why = caps.unsupported(inputs.spec, str(inputs.x.dtype).removeprefix("torch."))
    if why is None and stage != FORWARD:
        why = f"stage: {stage} not exposed ({one_forward})"
    why = why or limit or triton_device(device, who)
    if why:
        raise NotSupportedError(why)


def triton_device(device, who: str) -> str | None:
    """Why `who` (Triton code) cannot run on `device`, or None: the plain cpu device runs PyTorch only."""
    if getattr(device, "backend", None) == "cpu":
        return f"device: cpu runs PyTorch implementations only; {who} is Triton code: use a GPU or --device interpreter"
    return None


def interpreter_env(device, name: str, value: str) -> None:
    """Set `name` (a package's documented knob, read at its import) when running on the Triton interpreter.
    A package already imported keeps the value it read: the caller's kernel_config() says which applied."""
    if getattr(device, "backend", None) == "interpreter":
        os.environ.setdefault(name, value)


def optional_import(module: str, install_hint: str):
    """importlib.import_module(module), or NotSupportedError naming the package and how to install it."""
    from moe_cts.conformance.impls.checkout_path import unshadow_checkout

    unshadow_checkout()  # third-party packages may import Hugging Face's `kernels` (transformers >= 5.25)
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise NotSupportedError(f"{module.split('.')[0]}: not installed ({err}); {install_hint}") from err
