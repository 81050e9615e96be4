"""torch-eager whose route() returns bf16-rounded router weights, under each router_weights_dtype declaration
(the router-dtype convention of Capabilities)."""

from __future__ import annotations

import dataclasses

import torch

from moe_cts.conformance.impls.torch_eager import EagerRouting, TorchEagerImplementation


class _Bf16Weights(TorchEagerImplementation):
    declared = "float32"

    def capabilities(self):
        return dataclasses.replace(super().capabilities(), router_weights_dtype=self.declared)

    def run(self, inputs, stage, device=None, *, out=None):
        got = super().run(inputs, stage, device, out=out)
        if stage != "route":
            return got
        return EagerRouting(got.topk_ids, self.round_weights(got.topk_weights, inputs.x.dtype))


class Bf16DeclaresInput(_Bf16Weights):
    """Stores weights in the input dtype and says so: conformant."""

    name = "bf16-declares-input"
    declared = "input"

    def round_weights(self, w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return w.to(dtype)


class Bf16DeclaresFloat32(_Bf16Weights):
    """Rounds the weights to bf16 but hands them back in an fp32 tensor while declaring fp32: only the fp32
    bound can catch it."""

    name = "bf16-declares-float32"

    def round_weights(self, w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return w.to(torch.bfloat16).to(torch.float32)


class Bf16TensorDeclaresFloat32(_Bf16Weights):
    """Returns a bf16 tensor while declaring fp32: the dtype itself is wrong."""

    name = "bf16-tensor-declares-float32"

    def round_weights(self, w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return w.to(torch.bfloat16)
