"""The oracle reproduces transformers 5.x MoE blocks built from small random configs in float64.

Two checks per model:
- end to end (block(x) against moe_forward(spec, weights_from_hf(block), x)): ids equal; the output to
  <= 1e-10 where transformers computes everything in float64 (gpt-oss), else to the float32 accuracy of
  its router (Mixtral, Qwen2/3-MoE and OLMoE run the softmax in float32; DeepSeek-V2/V3 the whole router),
  with a bound derived below rather than picked;
- fed with the oracle's own float64 routing, the block's experts (and shared expert) agree to <= 1e-10.
Inputs are tokens whose routing has a clear margin, so float32 routing cannot flip an id.
transformers (the `test` extra) is required here, not skipped: these tests are acceptance item 2.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from refcheck import assert_close, assert_same_ints

from moe_cts.reference import MoESpec, MoEWeights, combine, moe_forward, spec_from_hf_config, weights_from_hf

pytestmark = pytest.mark.hf

H, I, T = 32, 16, 12
U32 = 2.0**-24  # float32 unit roundoff
MARGIN = 1e-3  # smallest accepted gap between the k-th and (k+1)-th key (and between kept / dropped groups)


def _block(model_type: str):
    from transformers import models as m

    cfgs = {
        "mixtral": (
            m.mixtral.MixtralConfig,
            m.mixtral.modeling_mixtral.MixtralSparseMoeBlock,
            dict(intermediate_size=I, num_local_experts=8, num_experts_per_tok=2),
        ),
        "qwen2_moe": (
            m.qwen2_moe.Qwen2MoeConfig,
            m.qwen2_moe.modeling_qwen2_moe.Qwen2MoeSparseMoeBlock,
            dict(
                moe_intermediate_size=I,
                shared_expert_intermediate_size=24,
                num_experts=8,
                num_experts_per_tok=4,
                norm_topk_prob=False,
            ),
        ),
        "qwen3_moe": (
            m.qwen3_moe.Qwen3MoeConfig,
            m.qwen3_moe.modeling_qwen3_moe.Qwen3MoeSparseMoeBlock,
            dict(moe_intermediate_size=I, num_experts=8, num_experts_per_tok=4, norm_topk_prob=True),
        ),
        "olmoe": (
            m.olmoe.OlmoeConfig,
            m.olmoe.modeling_olmoe.OlmoeSparseMoeBlock,
            dict(intermediate_size=I, num_experts=8, num_experts_per_tok=4, norm_topk_prob=False),
        ),
        "deepseek_v3": (
            m.deepseek_v3.DeepseekV3Config,
            m.deepseek_v3.modeling_deepseek_v3.DeepseekV3MoE,
            dict(
                moe_intermediate_size=I,
                n_routed_experts=16,
                num_experts_per_tok=4,
                n_group=4,
                topk_group=2,
                n_shared_experts=2,
                routed_scaling_factor=2.5,
                norm_topk_prob=True,
            ),
        ),
        "deepseek_v2": (
            m.deepseek_v2.DeepseekV2Config,
            m.deepseek_v2.modeling_deepseek_v2.DeepseekV2Moe,
            dict(
                moe_intermediate_size=I,
                n_routed_experts=16,
                num_experts_per_tok=3,
                n_group=4,
                topk_group=2,
                topk_method="group_limited_greedy",
                n_shared_experts=2,
                routed_scaling_factor=1.5,
            ),
        ),
        "gpt_oss": (
            m.gpt_oss.GptOssConfig,
            m.gpt_oss.modeling_gpt_oss.GptOssMLP,
            dict(intermediate_size=I, num_local_experts=8, num_experts_per_tok=4),
        ),
    }
    config_cls, block_cls, kw = cfgs[model_type]
    config = config_cls(hidden_size=H, **kw)
    config._experts_implementation = "eager"  # the experts' own forward, not a dispatched kernel
    block = block_cls(config).double().eval()
    _init(block, transposed=model_type == "gpt_oss")
    return config, block


def _init(block: torch.nn.Module, *, transposed: bool) -> None:
    """N(0, 1/fan_in) weights (fan_in = the contracted axis) so outputs are O(1); biases N(0, 0.25);
    DeepSeek's correction bias N(0, 0.01) so it moves selection without dominating it."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in list(block.named_parameters()) + list(block.named_buffers()):
            if "correction_bias" in name:
                std = 0.1
            elif p.dim() == 1 or name.endswith("bias"):
                std = 0.5
            else:  # gpt-oss experts are stored x @ W: the contracted axis is dim 1
                fan_in = p.shape[1] if transposed and p.dim() == 3 else p.shape[-1]
                std = fan_in**-0.5
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * std)


def _margins(spec: MoESpec, keys: np.ndarray) -> np.ndarray:
    """Per token: the gap between the k-th and (k+1)-th selection key (the oracle's float64 keys, in
    which experts of dropped groups are -inf)."""
    desc = -np.sort(-keys, axis=1)
    if spec.top_k == spec.num_experts:
        return np.full(len(keys), np.inf)
    return desc[:, spec.top_k - 1] - desc[:, spec.top_k]


def _group_margins(spec: MoESpec, keys: np.ndarray) -> np.ndarray:
    """Per token: the gap between the last kept and the first dropped group score."""
    g = -np.sort(-keys.reshape(len(keys), spec.n_group, -1), axis=-1)
    gscore = g[..., 0] if spec.group_score == "max" else g[..., 0] + g[..., 1]
    gs = -np.sort(-gscore, axis=1)
    return gs[:, spec.topk_group - 1] - gs[:, spec.topk_group]


def _clear_tokens(spec, weights, n: int) -> torch.Tensor:
    """n tokens from N(0, 1) whose routing has a margin >= MARGIN (float32 routing picks the same ids)."""
    g = torch.Generator().manual_seed(1)
    pool = torch.randn((16 * n, H), generator=g, dtype=torch.float64)
    r = moe_forward(spec, weights, pool).routing
    ok = _margins(spec, r.keys) >= MARGIN
    if spec.grouped:
        bias = weights.correction_bias.double().numpy() if spec.correction_bias else 0.0
        ok &= _group_margins(spec, r.scores + bias) >= MARGIN
    assert ok.sum() >= n, f"only {ok.sum()} of {len(pool)} tokens have a clear routing margin"
    return pool[torch.from_numpy(ok)][:n]


def _weight_bound(model_type: str, spec, weights, x, res) -> np.ndarray:
    """Bound on |y_hf - y_oracle| (T, H) from float32 routing weights.

    Logits: DeepSeek-V2/V3 form them in float32 (error <= H*u*sum_h |x_h r_eh| plus rounding of x and r);
    the others cast float64 logits to float32 (u*|z|). A logit error dz moves a softmax or sigmoid
    weight by a relative <= 2*max|dz| (softmax: dz_e - sum p dz), renormalizing doubles it, and the
    float32 softmax, sum and division add a few u. Then |dy| <= rel * sum_j |w_j| |eo_j|."""
    xa = x.abs().numpy()
    ra = weights.router.abs().double().numpy()
    if model_type.startswith("deepseek"):
        dz = (H + 2) * U32 * (xa @ ra.T).max(axis=1)
    else:
        dz = U32 * np.abs(res.routing.logits).max(axis=1)
    rel = 2 * (2 * dz + 8 * U32)
    mag = np.einsum("tk,tkh->th", np.abs(res.topk_weights), np.abs(res.expert_out))
    return rel[:, None] * mag


def _hf_forward(block, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        y = block(x[None])
    return (y[0] if isinstance(y, tuple) else y)[0]


def _hf_ids(block, x: torch.Tensor) -> np.ndarray:
    router = block.router if hasattr(block, "router") else block.gate
    with torch.no_grad():
        ids = router(x)[2]
    return np.sort(ids.numpy(), axis=1)  # DeepSeek returns them unsorted (topk sorted=False)


MODELS = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3", "gpt_oss"]


@pytest.fixture(scope="module", params=MODELS)
def model(request):
    config, block = _block(request.param)
    spec = MoESpec.from_hf_config(config)
    weights = MoEWeights.from_hf(block, spec)
    x = _clear_tokens(spec, weights, T)
    return request.param, block, spec, weights, x, moe_forward(spec, weights, x)


def test_oracle_chooses_the_same_experts_as_transformers(model):
    _, block, _, _, x, res = model
    assert_same_ints(np.sort(res.topk_ids, axis=1), _hf_ids(block, x), "topk_ids (as sets)")


def test_oracle_reproduces_the_transformers_block(model):
    model_type, block, spec, weights, x, res = model
    y_hf = _hf_forward(block, x).numpy()
    if model_type == "gpt_oss":  # all float64 in transformers
        assert_close(res.y, y_hf, "y", rtol=1e-10)
        return
    err, bound = np.abs(y_hf - res.y), _weight_bound(model_type, spec, weights, x, res)
    worst = np.unravel_index(np.argmax(err / bound), err.shape)
    assert (err <= bound).all(), (
        f"y: error {err[worst]:.3e} > float32-routing bound {bound[worst]:.3e} at {worst}"
    )
    # the bound must be able to fail: dropping one routed expert's contribution exceeds it everywhere
    missing = np.abs(res.topk_weights[:, -1, None] * res.expert_out[:, -1]).max(axis=1)
    assert (missing > bound.max(axis=1)).all()


def test_block_experts_fed_the_oracle_routing_agree_to_1e_10(model):
    _, block, spec, _, x, res = model
    ids = torch.from_numpy(res.topk_ids)
    with torch.no_grad():
        routed = block.experts(x, ids, torch.from_numpy(res.topk_weights)).numpy()
    assert_close(
        routed, combine(spec, res.expert_out, res.topk_weights, res.permutation.kept), "routed y", rtol=1e-10
    )


@pytest.mark.parametrize("model_type", ["qwen2_moe", "deepseek_v2", "deepseek_v3"])
def test_shared_expert_matches_transformers_to_1e_10(model_type):
    config, block = _block(model_type)
    spec = spec_from_hf_config(config)
    x = torch.randn((T, H), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        if model_type == "qwen2_moe":
            shared = torch.sigmoid(block.shared_expert_gate(x)) * block.shared_expert(x)
        else:
            shared = block.shared_experts(x)
    res = moe_forward(spec, weights_from_hf(block, spec), x)
    assert_close(shared.numpy(), res.shared_out, "shared_out", rtol=1e-10)


def test_deepseek_block_weights_are_read_without_a_spec_from_its_own_config():
    _, block = _block("deepseek_v3")
    w = weights_from_hf(block)
    assert torch.equal(w.correction_bias, block.gate.e_score_correction_bias)
    assert w.shared_w13.shape == (2 * 2 * I, H)  # two shared experts fused into one MLP of width 2I
