"""Programmatic dependent launch (config.pdl(dtype class): the cuda-sm90 table's "pdl", _common.pdl_enter).

Where PDL is on, each kernel of the chain waits for the earlier ones before its first load, so the outputs are
those of serial launches: bitwise, eager and as a CUDA-graph replay, in both modes (wait first, then trigger;
wait and never trigger). GPU part: block fp8 through the conformance harness, and the 16-bit chain. Everywhere
else it must stay off: the interpreter, CUDA targets whose table does not set it, ROCm, and MOE_CTS_PDL=0 (CPU
part: the tile heuristic's view of each target, as the AOT compiler sets it).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from _moe_testlib import assert_within, forward_expected, make_inputs
from triton.backends.compiler import GPUTarget

import moe_cts.kernels
from moe_cts.kernels import Routing, fp8_gemm
from moe_cts.kernels import config as cfgmod
from moe_cts.kernels.registry import active_target
from moe_cts.reference.spec import MoESpec, SpecError

BF16 = torch.bfloat16


@pytest.mark.parametrize(
    ("target", "want"),
    [(GPUTarget("cuda", 90, 32), True), (GPUTarget("cuda", 80, 32), False), (GPUTarget("cuda", 100, 32), False),
     (GPUTarget("hip", "gfx942", 64), False)],
    ids=["sm90", "sm80", "sm100", "gfx942"],
)  # fmt: skip
def test_pdl_follows_the_targets_table_and_the_switch(target, want, monkeypatch) -> None:
    monkeypatch.delenv(cfgmod.PDL_ENV, raising=False)
    with active_target(target):
        # the sm90 table: fp8 waits, then triggers; the 16-bit chain waits and never triggers (docs/h200.md)
        assert cfgmod.pdl("fp8") == (cfgmod.PDL_WAIT_FIRST if want else cfgmod.PDL_OFF)
        assert cfgmod.pdl("16bit") == (cfgmod.PDL_AT_EXIT if want else cfgmod.PDL_OFF)
        assert cfgmod.pdl("fp32") == cfgmod.PDL_OFF
        monkeypatch.setenv(cfgmod.PDL_ENV, "exit")
        assert cfgmod.pdl("fp8") == (cfgmod.PDL_AT_EXIT if want else cfgmod.PDL_OFF)
        assert cfgmod.pdl("fp32") == cfgmod.PDL_OFF  # the mode does not turn a chain on
        monkeypatch.setenv(cfgmod.PDL_ENV, "0")
        assert cfgmod.pdl("fp8") == cfgmod.pdl("16bit") == cfgmod.PDL_OFF


def test_pdl_mode_comes_from_the_table_and_a_bad_one_is_named(monkeypatch) -> None:
    monkeypatch.delenv(cfgmod.PDL_ENV, raising=False)
    monkeypatch.setattr(cfgmod, "backend", lambda: "cuda")
    monkeypatch.setattr(cfgmod, "current_table", lambda: "t")
    for mode, want in (("exit", cfgmod.PDL_AT_EXIT), ("wait", cfgmod.PDL_WAIT_FIRST)):
        monkeypatch.setattr(cfgmod, "load_table", lambda _n, m=mode: {"pdl": {"fp8": m}})
        assert cfgmod.pdl("fp8") == want
        assert cfgmod.pdl("16bit") == cfgmod.PDL_OFF
    monkeypatch.setattr(cfgmod, "load_table", lambda _n: {"pdl": {"fp8": "launch"}})
    with pytest.raises(SpecError, match=r"pdl\.fp8"):
        cfgmod.pdl("fp8")


def test_pdl_is_off_on_the_interpreter() -> None:
    if not fp8_gemm.interpreting():
        pytest.skip("the interpreter's view")
    assert cfgmod.backend() == "interpreter" and not any(map(cfgmod.pdl, ("fp8", "16bit", "fp32")))


def _needs_pdl(dtype_class: str) -> None:
    if fp8_gemm.interpreting() or not torch.cuda.is_available() or not cfgmod.pdl(dtype_class):
        pytest.skip(f"a CUDA device whose table sets pdl for {dtype_class} (sm90: fp8)")


def _graph(fn):
    fn()  # compile outside the capture
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn()
    g.replay()
    torch.cuda.synchronize()
    return out.clone()


@pytest.mark.parametrize("T", [1, 40])
def test_pdl_launches_give_the_serial_bits_and_pass_the_oracle(T, monkeypatch) -> None:
    """The 16-bit chain in each mode, forced (grid dependency control needs sm90+; the sm90 table's is "exit")."""
    if fp8_gemm.interpreting() or not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("a CUDA device of sm90 or later")
    modes = {"wait": cfgmod.PDL_WAIT_FIRST, "exit": cfgmod.PDL_AT_EXIT, "0": cfgmod.PDL_OFF}
    monkeypatch.setattr(cfgmod, "pdl", lambda _cls: modes[os.environ[cfgmod.PDL_ENV]])
    spec = MoESpec(hidden_size=256, intermediate_size=128, num_experts=8, top_k=2, n_shared_experts=1,
                   shared_intermediate_size=128)  # fmt: skip
    inp = make_inputs(spec, BF16, T, seed=5)
    routing = Routing(inp.topk_ids, inp.topk_weights)
    fwd = lambda: moe_cts.kernels.fused_moe(spec, inp.weights, inp.x, routing=routing)
    got = {}
    for pdl in modes:
        monkeypatch.setenv(cfgmod.PDL_ENV, pdl)
        got[pdl] = (fwd().clone(), _graph(fwd))
    for pdl in ("wait", "exit"):
        for a, b in zip(got[pdl], got["0"]):
            assert torch.equal(a, b), f"PDL launches ({pdl}) changed the bits"
    want, bound = forward_expected(inp, np.ones(tuple(inp.topk_ids.shape), bool))
    assert_within(got["exit"][1], want, bound, "forward with PDL (graph)")


def test_block_fp8_with_pdl_gives_the_serial_bits_and_passes(monkeypatch) -> None:
    """Block fp8 with its quantize launches (eager, through the conformance harness): GEMM1's act codes and
    scales and every GEMM2 output keep their bits with PDL, and the case passes."""
    _needs_pdl("fp8")
    from test_fp8_moe import Fp8Launches, _case, _judge

    from moe_cts.conformance.engine.devices import select_device
    from moe_cts.conformance.engine.results import Outcome
    from moe_cts.reference.quant import QuantScheme

    case = _case(QuantScheme.fp8_block(), hidden_size=256, intermediate_size=256)
    launches = Fp8Launches(monkeypatch)
    got = launches.got
    for pdl in ("wait", "exit", "0"):
        launches.under(pdl)
        monkeypatch.setenv(cfgmod.PDL_ENV, pdl)
        r, _ = _judge(case, select_device("cuda:0"))
        assert r.outcome == Outcome.PASS, (
            f"MOE_CTS_PDL={pdl}: {r.outcome.value} at {r.failing_stage}: {r.message}"
        )
    for pdl in ("wait", "exit"):
        assert len(got[pdl]) == len(got["0"]) >= 1
        for i, (a, b) in enumerate(zip(got[pdl], got["0"])):
            assert torch.equal(a, b), f"launch {i}: PDL launches ({pdl}) changed the fp8 bits"
