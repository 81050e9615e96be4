"""The check of the sm90 cubin proof (conformance/aot/cubin.py) can fail, and its parameter count reads
the PTX entry. The GPU half itself runs only on an sm90 machine (python -m moe_cts.conformance.aot.matrix --run-cubin)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moe_cts.conformance.aot import cubin as aot_cubin
from moe_cts.reference import numpy_oracle


@pytest.fixture(scope="module")
def proof_case():
    case = aot_cubin.PROOF_CASE
    spec = aot_cubin._spec(case)
    weights, x = aot_cubin._case_tensors(case, spec)
    weights64 = weights.to(dtype=torch.float64)
    return spec, weights64, numpy_oracle.moe_forward(spec, weights64, x.to(torch.float64))


def _down(ref, weights64, act):
    ids, w = ref.routing.topk_ids, ref.routing.topk_weights
    w2 = weights64.w2.numpy()
    return sum(w[:, j, None] * np.einsum("ti,thi->th", act[:, j], w2[ids[:, j]]) for j in range(ids.shape[1]))


def test_the_oracle_rounded_to_bf16_passes_the_proof_bound(proof_case):
    spec, weights64, ref = proof_case
    y = torch.tensor(ref.y).to(torch.bfloat16).double().numpy()
    ratio, _ = aot_cubin._bound_ratio(spec, weights64, ref, y)
    assert ratio < 0.5, ratio


def test_a_zero_output_fails_the_proof_bound(proof_case):
    spec, weights64, ref = proof_case
    ratio, rms = aot_cubin._bound_ratio(spec, weights64, ref, np.zeros_like(ref.y))
    assert ratio > 1 and rms == 1.0, ratio


def test_a_dropped_last_k_tile_fails_the_proof_bound(proof_case):
    spec, weights64, ref = proof_case
    act = ref.gate_up.act.copy()
    act[..., -64:] = 0  # the last BLOCK_K = 64 columns of I = 256
    ratio, _ = aot_cubin._bound_ratio(spec, weights64, ref, _down(ref, weights64, act))
    assert ratio > 1, ratio


def test_the_parameter_count_reads_the_ptx_entry():
    ptx = ".visible .entry k(\n .param .u64 .ptr .global .align 1 k_param_0,\n .param .u32 k_param_1,\n .param .u64 k_param_2\n)"
    assert aot_cubin.entry_param_count(ptx, "k") == 3
    with pytest.raises(ValueError, match=r"no \.entry other"):
        aot_cubin.entry_param_count(ptx, "other")
