"""kernels/streams.py: the shared expert on a side branch while a CUDA graph is captured, inline otherwise.
A captured forward with a shared expert (bf16 and block fp8, DeepSeek-V3 semantics) must give the eager
forward's bits: the branch changes when the kernels run, never what they compute."""

from __future__ import annotations

import pytest
import torch
from _moe_testlib import INTERPRET

from moe_cts.kernels import streams
from moe_cts.kernels.metadata import Routing
from moe_cts.kernels.moe import fused_moe
from moe_cts.reference import presets
from moe_cts.reference.quant import QuantScheme
from moe_cts.reference.qweights import QuantizedMoEWeights, QuantTensor
from moe_cts.reference.spec import MoEWeights, weight_shapes

GPU = torch.cuda.is_available() and not INTERPRET


def test_off_a_capture_the_side_work_runs_inline():
    branch = streams.SideBranch(torch.device("cuda" if GPU else "cpu"))
    with branch:
        y = torch.ones(2) + 1
    branch.join()
    assert branch.side is None and y.tolist() == [2.0, 2.0]


def _fp8_block(t: torch.Tensor) -> QuantTensor:
    """(…, N, K) -> e4m3fn codes with an fp32 scale per 128 x 128 block (N, K multiples of 128)."""
    *lead, N, K = t.shape
    b = t.float().reshape(*lead, N // 128, 128, K // 128, 128)
    s = (b.abs().amax(dim=(-3, -1)) / 448.0).clamp(min=1e-12)
    q = (b / s[..., :, None, :, None]).to(torch.float8_e4m3fn).view(torch.uint8).reshape(t.shape)
    return QuantTensor(q.contiguous(), s.contiguous(), "e4m3fn", (128, 128), "float32")


@pytest.mark.skipif(not GPU, reason="a CUDA graph needs a GPU")
@pytest.mark.parametrize("quant", [None, "fp8_block"])
def test_a_captured_forward_with_a_shared_expert_equals_the_eager_one_bitwise(quant):
    spec = presets.scaled("deepseek-v3", hidden_size=256, intermediate_size=128)
    assert spec.shared_width == 128
    gen = torch.Generator(device="cuda").manual_seed(3)
    base = MoEWeights(**{
        n: (torch.randn(s, generator=gen, device="cuda") * 0.05).to(torch.bfloat16)
        for n, s in weight_shapes(spec).items()
    })  # fmt: skip
    weights = base
    if quant:
        spec = spec.replace(quant=QuantScheme.fp8_block())
        names = ("w13", "w2", "shared_w13", "shared_w2")
        weights = QuantizedMoEWeights(base=base, **{n: _fp8_block(getattr(base, n)) for n in names})
    T = 3
    x = torch.randn((T, spec.hidden_size), generator=gen, device="cuda").to(torch.bfloat16)
    ids = torch.rand((T, spec.num_experts), generator=gen, device="cuda").topk(spec.top_k, dim=1).indices
    w = torch.rand((T, spec.top_k), generator=gen, device="cuda")
    routing = Routing(ids.int(), w / w.sum(1, keepdim=True))
    eager = fused_moe(spec, weights, x, routing=routing)
    # a forward that wrote nothing (or NaN) would compare equal to itself: the output must be finite, nonzero
    assert bool(torch.isfinite(eager.float()).all()) and float(eager.float().abs().amax()) > 0
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # compiles and allocator pools before the capture (torch.cuda.graphs)
        fused_moe(spec, weights, x, routing=routing)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    before = streams._side_stream.cache_info().currsize + streams._side_stream.cache_info().hits
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fused_moe(spec, weights, x, routing=routing)
    graph.replay()
    torch.cuda.synchronize()
    assert streams._side_stream.cache_info().currsize + streams._side_stream.cache_info().hits > before
    assert torch.equal(out.view(torch.int16), eager.view(torch.int16))
