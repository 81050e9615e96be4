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


def _layer(quant, device: str):
    """(spec, weights, x, routing): DeepSeek-V3 semantics (shared expert, grouped routing) at H 256, I 128."""
    spec = presets.scaled("deepseek-v3", hidden_size=256, intermediate_size=128)
    assert spec.shared_width == 128
    gen = torch.Generator(device=device).manual_seed(3)
    base = MoEWeights(**{
        n: (torch.randn(s, generator=gen, device=device) * 0.05).to(torch.bfloat16)
        for n, s in weight_shapes(spec).items()
    })  # fmt: skip
    weights = base
    if quant:
        spec = spec.replace(quant=QuantScheme.fp8_block())
        names = ("w13", "w2", "shared_w13", "shared_w2")
        weights = QuantizedMoEWeights(base=base, **{n: _fp8_block(getattr(base, n)) for n in names})
    T = 3
    x = torch.randn((T, spec.hidden_size), generator=gen, device=device).to(torch.bfloat16)
    ids = torch.rand((T, spec.num_experts), generator=gen, device=device).topk(spec.top_k, dim=1).indices
    w = torch.rand((T, spec.top_k), generator=gen, device=device)
    return spec, weights, x, Routing(ids.int(), w / w.sum(1, keepdim=True))


def test_the_late_fork_follows_the_table_unless_the_environment_forces_it(monkeypatch):
    from moe_cts.kernels import config as cfgmod

    table = cfgmod.load_table(cfgmod.current_table())
    monkeypatch.delenv(cfgmod.LATE_SHARED_ENV, raising=False)
    monkeypatch.setitem(table, "late_shared", ["fp8"])
    assert cfgmod.late_shared("fp8") and not cfgmod.late_shared("16bit")
    monkeypatch.setenv(cfgmod.LATE_SHARED_ENV, "0")
    assert not cfgmod.late_shared("fp8")
    monkeypatch.setenv(cfgmod.LATE_SHARED_ENV, "1")
    assert cfgmod.late_shared("16bit")
    monkeypatch.delitem(table, "late_shared")
    monkeypatch.delenv(cfgmod.LATE_SHARED_ENV)
    assert not cfgmod.late_shared("fp8")  # no key: the fork stays before the routed GEMM1


@pytest.mark.parametrize("quant", [None, "fp8_block"])
def test_the_late_fork_gives_the_same_bits(quant, monkeypatch):
    """Forking the shared expert after the routed GEMM1 changes when its kernels run (inline here, off a
    capture), never what they compute."""
    from moe_cts.kernels import config as cfgmod

    spec, weights, x, routing = _layer(quant, "cuda" if GPU else "cpu")
    outs = []
    for late in ("0", "1"):
        monkeypatch.setenv(cfgmod.LATE_SHARED_ENV, late)
        outs.append(fused_moe(spec, weights, x, routing=routing))
    assert bool(torch.isfinite(outs[0].float()).all()) and float(outs[0].float().abs().amax()) > 0
    assert torch.equal(outs[0].view(torch.int16), outs[1].view(torch.int16))


@pytest.mark.skipif(not GPU, reason="a CUDA graph needs a GPU")
@pytest.mark.parametrize("late", ["0", "1"])
@pytest.mark.parametrize("quant", [None, "fp8_block"])
def test_a_captured_forward_with_a_shared_expert_equals_the_eager_one_bitwise(quant, late, monkeypatch):
    from moe_cts.kernels import config as cfgmod

    monkeypatch.setenv(cfgmod.LATE_SHARED_ENV, late)  # the branch forked before / after the routed GEMM1
    spec, weights, x, routing = _layer(quant, "cuda")
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
