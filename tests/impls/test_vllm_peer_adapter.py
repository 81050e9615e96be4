"""The vllm-peer adapter (conformance/impls/vllm_peer.py): vLLM's Triton fused_experts from a standalone file named by
MOE_CTS_VLLM_PEER. CI has no such file, so a stand-in peer in torch (the same API, the oracle's arithmetic in fp32)
checks the glue: the row order each activation needs, the ids and weights, the config it records, and that the
judge passes a right peer and fails one with gate and up swapped. With MOE_CTS_VLLM_PEER set (the project's
../shared/peer), the last test certifies the real file on the interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from moe_cts.conformance.engine import known_issues
from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.devices import select_device
from moe_cts.conformance.engine.results import Outcome
from moe_cts.conformance.engine.runner import run_case
from moe_cts.conformance.impls import vllm_peer
from moe_cts.reference.errors import NotSupportedError
from moe_cts.reference.spec import MoESpec

FAKE = """
import torch
VLLM_VERSION = "fake"
CALLS = []
SWAP = {swap}

def pick_config(x, w13, w2, top_k, *, tuned, table=None):
    return {{"BLOCK_SIZE_M": 16}}, ("tuned" if tuned else "default")

def vllm_forward(x, w13, w2, topk_ids, topk_weights, config=None, tuned=False, *, b13=None, b2=None,
                 activation="silu"):
    CALLS.append(dict(w13=w13, ids=topk_ids, tw=topk_weights, config=config, b13=b13, activation=activation))
    T, k = topk_ids.shape
    I = w2.shape[2]
    y = torch.zeros(T, w2.shape[1], dtype=torch.float32)
    for t in range(T):
        for j in range(k):
            e = int(topk_ids[t, j])
            h = w13[e].float() @ x[t].float() + (b13[e].float() if b13 is not None else 0)
            if activation == "silu":
                g, u = h[:I], h[I:]
                if SWAP:
                    g, u = u, g
                a = torch.nn.functional.silu(g) * u
            else:
                g, u = h[0::2].clamp(max=7.0), h[1::2].clamp(-7.0, 7.0)
                a = (u + 1) * g * torch.sigmoid(1.702 * g)
            o = w2[e].float() @ a + (b2[e].float() if b2 is not None else 0)
            y[t] += topk_weights[t, j] * o
    return y.to(x.dtype)
"""


@pytest.fixture
def fake_peer(tmp_path, monkeypatch):
    """fake_peer(swap=False) -> the loaded stand-in module, named by MOE_CTS_VLLM_PEER (a folder: its vllm_peer.py)."""

    def make(swap: bool = False):
        folder = tmp_path / ("swapped" if swap else "right")
        folder.mkdir()
        (folder / "vllm_peer.py").write_text(textwrap.dedent(FAKE.format(swap=swap)))
        monkeypatch.setenv(vllm_peer.PEER_ENV, str(folder))
        return vllm_peer.peer()

    return make


SILU = MoESpec(hidden_size=32, intermediate_size=24, num_experts=6, top_k=2, renormalize=True,
               w13_layout="interleaved", expert_bias=True)  # fmt: skip
OAI = MoESpec(hidden_size=32, intermediate_size=24, num_experts=6, top_k=3, renormalize=True, router_bias=True,
              activation="swiglu_oai", w13_layout="concat", expert_bias=True)  # fmt: skip


def test_without_the_variable_every_case_is_not_supported_and_says_why(monkeypatch):
    monkeypatch.delenv(vllm_peer.PEER_ENV, raising=False)
    impl = vllm_peer.VllmPeer()
    caps = impl.capabilities()
    assert caps.stages == frozenset() and "MOE_CTS_VLLM_PEER is not set" in caps.notes["vllm-peer"]
    interp = select_device("interpreter")
    inputs = Case(SILU, 4, seed=1).build_inputs(interp.torch_device)
    with pytest.raises(NotSupportedError, match="MOE_CTS_VLLM_PEER is not set"):
        impl.run(inputs, "forward", interp)
    monkeypatch.setenv(vllm_peer.PEER_ENV, "/nonexistent/vllm_peer.py")
    assert "no file at" in vllm_peer.VllmPeer().capabilities().notes["vllm-peer"]


@pytest.mark.parametrize(
    "spec,act,gate_rows", [(SILU, "silu", "first half"), (OAI, "swigluoai", "even rows")]
)
def test_each_activation_gets_the_row_order_vllm_reads(fake_peer, spec, act, gate_rows):
    mod = fake_peer()
    interp = select_device("interpreter")
    inputs = Case(spec, 5, seed=2).build_inputs(interp.torch_device)
    impl = vllm_peer.VllmPeer()
    impl.run(inputs, "forward", interp)
    call = mod.CALLS[-1]
    w13, I = inputs.weights.w13, spec.intermediate_size
    gate = w13[:, 0::2] if spec.w13_layout == "interleaved" else w13[:, :I]
    got_gate = call["w13"][:, :I] if gate_rows == "first half" else call["w13"][:, 0::2]
    assert torch.equal(got_gate, gate) and call["activation"] == act
    assert call["ids"].dtype == torch.int32 and call["tw"].dtype == torch.float32
    assert call["b13"] is not None and call["b13"].shape == (spec.num_experts, 2 * I)
    assert impl.kernel_config() == {"kind": "vllm-peer", "vllm": "fake", "config": {"BLOCK_SIZE_M": 16},
                                    "config_source": "default"}  # fmt: skip


@pytest.mark.parametrize("spec", [SILU, OAI], ids=["silu", "swiglu_oai"])
def test_the_judge_passes_a_right_peer(fake_peer, spec):
    fake_peer()
    result = run_case(vllm_peer.VllmPeer(), Case(spec, 9, seed=4), select_device("interpreter"))
    assert result.outcome == Outcome.PASS, result.message


def test_the_judge_fails_a_peer_with_gate_and_up_swapped(fake_peer):
    fake_peer(swap=True)
    result = run_case(vllm_peer.VllmPeer(), Case(SILU, 9, seed=4), select_device("interpreter"))
    assert result.outcome == Outcome.FAIL and result.failing_stage == "end_to_end", result.message


def test_other_swiglu_constants_are_not_supported(fake_peer):
    fake_peer()
    spec = OAI.replace(swiglu_limit=10.0)
    interp = select_device("interpreter")
    with pytest.raises(NotSupportedError, match="swiglu_limit"):
        vllm_peer.VllmPeer().run(Case(spec, 3, seed=1).build_inputs(interp.torch_device), "forward", interp)


def test_the_bf16_waiver_on_the_interpreter_is_the_peers_alone():
    interp = select_device("interpreter")
    bf16 = Case(SILU, 5, dtype="bfloat16", seed=3)
    reason = known_issues.fail_waiver(interp, "vllm-peer", bf16)
    assert reason is not None and "interpreter-vllm-bf16-dot" in reason and "11584" in reason
    assert known_issues.fail_waiver(interp, "vllm-peer", Case(SILU, 5, seed=3)) is None
    assert known_issues.fail_waiver(interp, "triton", bf16) is None


@pytest.mark.skipif(
    not os.environ.get(vllm_peer.PEER_ENV), reason="MOE_CTS_VLLM_PEER names no vLLM peer file"
)
def test_the_real_peer_passes_what_the_interpreter_can_compute(tmp_path):
    """fp32 and fp16 execute and pass; bf16 is waived (interpreter-vllm-bf16-dot), so the run is VOID, as Liger's."""
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "moe_cts.conformance.cli.app", "certify", "--impl", "vllm-peer",
                        "--device", "interpreter", "--out", str(out)], capture_output=True, text=True, timeout=900)  # fmt: skip
    import json

    report = json.loads((out / "report.json").read_text())
    outcomes = {(c["outcome"], c["params"]["dtype"]) for c in report["devices"][0]["cases"]}
    assert ("pass", "float32") in outcomes and ("pass", "float16") in outcomes, p.stdout[-2000:]
    assert {o for o, _ in outcomes} <= {"pass", "not_supported", "waived"}, p.stdout[-2000:]


def test_capabilities_read_the_version_without_importing_the_file(tmp_path, monkeypatch):
    """The file imports Triton; capabilities() runs in processes (certify's parent, `moe-cts list`) that must not
    import it before the device sets TRITON_INTERPRET."""
    (tmp_path / "vllm_peer.py").write_text('VLLM_VERSION = "9.9.9"\nraise RuntimeError("imported")\n')
    monkeypatch.setenv(vllm_peer.PEER_ENV, str(tmp_path))
    assert vllm_peer.VllmPeer().capabilities().notes["source"].endswith("(vLLM 9.9.9)")
