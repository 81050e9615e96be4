"""QuantScheme and MoESpec.quant: valid schemes build and round-trip through JSON, bad fields and bad
combinations raise SpecError naming the field, transformers quantization_configs map to the right scheme,
and a spec without quant serializes (and gets case ids) exactly as before the field existed."""

from __future__ import annotations

import json

import pytest

from moe_cts.conformance.engine.cases import Case
from moe_cts.reference import MoESpec, QuantScheme, SpecError

BASE = dict(hidden_size=8, intermediate_size=4, num_experts=4, top_k=2)

# Computed on the main checkout before MoESpec had a quant field (moe_cts at f996f36).
OLD_CASE_ID = (
    "c1-eNptjs0Kg0AMhN9lzl6qQkueo7dSZHGjhro_7K5gK757Iy300lvmY2YyG66gpoKVXEDwITkzQ3V5RlYwzMGUplaSe_YmSQDdsHgZ1Im7YmYLOusRuQdtmMRa9l2Wl-"
    "YvFcQXTo6tmMJf2lZQw2QS247XyKlk0Enh4n66PV6GJH7UGVlGF8QeMz6x_60lxO4Bqvf9DT8NSWI"
)


# ----------------------------------------------------------------------------------------------- unchanged
def test_a_spec_without_quant_has_no_quant_key():
    assert "quant" not in MoESpec(**BASE).to_dict()


def test_case_ids_of_unquantized_specs_are_unchanged():
    spec = MoESpec(8, 4, 4, 2, scoring="sigmoid", n_shared_experts=1, shared_intermediate_size=4)
    case = Case(spec=spec, num_tokens=3, seed=7)
    assert case.case_id == OLD_CASE_ID
    assert Case.from_id(OLD_CASE_ID) == case


# ----------------------------------------------------------------------------------------------- valid schemes
SCHEMES = [
    QuantScheme.fp8_per_tensor(),
    QuantScheme.fp8_per_tensor(activation_scale="static"),
    QuantScheme.fp8_per_token(fp8_format="e4m3fnuz"),
    QuantScheme.fp8_block(),
    QuantScheme.fp8_block((2, 4), scale_format="ue8m0", amax_eps=1e-4),
    QuantScheme.fp8_block((128, 128), amax_eps=None, fp8_format="e5m2"),
    QuantScheme.fp8_block(
        (128, 128), activation_dtype="bfloat16", activation_scale="none", quantize_inputs=()
    ),
    QuantScheme(
        method="fp8_block",
        weight_block=(128, 128),
        activation_dtype="float16",
        activation_scale="none",
        quantize_inputs=(),
    ),
    QuantScheme.mxfp4(),
    QuantScheme.mxfp4(activation_dtype="float16", scale_rounding="floor"),
    QuantScheme.mxfp4(scale_rounding="threshold_1p75"),
]


@pytest.mark.parametrize("q", SCHEMES, ids=lambda q: q.method)
def test_quantized_specs_round_trip_through_json_and_case_ids(q):
    spec = MoESpec(hidden_size=64, intermediate_size=32, num_experts=4, top_k=2, quant=q)
    back = MoESpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back == spec and back.quant == q
    case = Case(spec=spec, num_tokens=5)
    assert Case.from_id(case.case_id) == case


def test_a_quant_dict_becomes_a_scheme():
    spec = MoESpec(**BASE, quant={"method": "fp8_per_token"})
    assert spec.quant == QuantScheme.fp8_per_token()


# ----------------------------------------------------------------------------------------------- refused
BAD = [
    # (field named in the error, scheme keywords)
    ("quant.method", dict(method="int4")),
    ("quant.fp8_format", dict(method="fp8_block", weight_block=(128, 128), act_group=128, fp8_format="e4m3")),
    ("quant.weight_block", dict(method="fp8_block")),
    ("quant.weight_block", dict(method="fp8_block", weight_block=(128, 0), act_group=0)),
    ("quant.weight_block", dict(method="fp8_per_tensor", weight_block=(128, 128))),
    ("quant.act_group", dict(method="fp8_block", weight_block=(128, 128), act_group=64)),
    ("quant.act_group", dict(method="fp8_per_token", act_group=128)),
    (
        "quant.activation_scale",
        dict(method="fp8_block", weight_block=(128, 128), act_group=128, activation_scale="static"),
    ),
    ("quant.activation_scale", dict(method="fp8_per_token", activation_scale="none")),
    ("quant.activation_dtype", dict(method="mxfp4", weight_block=(1, 32), scale_format="ue8m0")),
    ("quant.activation_dtype", dict(method="fp8_per_token", activation_dtype="int8")),
    ("quant.quantize_inputs", dict(method="fp8_per_token", quantize_inputs=("gemm1",))),
    (
        "quant.quantize_inputs",
        dict(
            method="mxfp4",
            weight_block=(1, 32),
            scale_format="ue8m0",
            activation_dtype="bfloat16",
            activation_scale="none",
        ),
    ),
    ("quant.scale_format", dict(method="fp8_per_token", scale_format="ue8m0")),
    (
        "quant.scale_format",
        dict(
            method="mxfp4",
            weight_block=(1, 32),
            activation_dtype="bfloat16",
            activation_scale="none",
            quantize_inputs=(),
        ),
    ),
    (
        "quant.scale_format",
        dict(method="fp8_block", weight_block=(128, 128), act_group=128, scale_format="e8m0"),
    ),
    (
        "quant.scale_rounding",
        dict(method="fp8_block", weight_block=(128, 128), act_group=128, scale_rounding="floor"),
    ),
    (
        "quant.scale_rounding",
        dict(
            method="fp8_block",
            weight_block=(128, 128),
            act_group=128,
            scale_format="ue8m0",
            scale_rounding="nearest",
        ),
    ),
    ("quant.amax_eps", dict(method="fp8_per_token", amax_eps=0.0)),
    ("quant.amax_eps", dict(method="fp8_per_token", amax_eps=float("nan"))),
    ("quant.amax_eps", dict(method="fp8_per_tensor", activation_scale="static", amax_eps=1e-4)),
    ("quant.epilogue", dict(method="fp8_per_token", epilogue=("bias", "dequant", "router_weight", "cast"))),
    ("quant.epilogue", dict(method="fp8_per_token", epilogue=("dequant", "bias", "cast", "router_weight"))),
]


@pytest.mark.parametrize(("field", "kw"), BAD, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD)])
def test_invalid_schemes_name_the_field(field, kw):
    with pytest.raises(SpecError) as err:
        QuantScheme(**kw)
    assert err.value.field == field, str(err.value)


@pytest.mark.parametrize(
    ("field", "spec_kw"),
    [
        (
            "quant.weight_block",
            dict(hidden_size=48, intermediate_size=32, quant=QuantScheme.mxfp4()),
        ),  # 48 % 32
        ("quant.weight_block", dict(hidden_size=64, intermediate_size=40, quant=QuantScheme.mxfp4())),
        (
            "quant.activation_scale",
            dict(hidden_size=8, intermediate_size=4, capacity_factor=1.0, quant=QuantScheme.fp8_per_tensor()),
        ),
        (
            "quant.activation_scale",
            dict(
                hidden_size=8, intermediate_size=4, local_experts=(0, 1), quant=QuantScheme.fp8_per_tensor()
            ),
        ),
        ("quant", dict(hidden_size=8, intermediate_size=4, quant="fp8")),
        (
            "quant.fields",
            dict(hidden_size=8, intermediate_size=4, quant={"method": "fp8_per_token", "bits": 8}),
        ),
    ],
)
def test_bad_spec_and_scheme_combinations_name_the_field(field, spec_kw):
    with pytest.raises(SpecError) as err:
        MoESpec(num_experts=4, top_k=2, **spec_kw)
    assert err.value.field == field, str(err.value)


def test_static_per_tensor_scales_allow_capacity_and_expert_parallelism():
    q = QuantScheme.fp8_per_tensor(activation_scale="static")
    MoESpec(**BASE, capacity_factor=1.0, local_experts=(0, 1), quant=q)


# ----------------------------------------------------------------------------------------------- transformers
DEEPSEEK_V3 = {
    "model_type": "deepseek_v3",
    "hidden_size": 7168,
    "moe_intermediate_size": 2048,
    "n_routed_experts": 256,
    "num_experts_per_tok": 8,
    "n_group": 8,
    "topk_group": 4,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "routed_scaling_factor": 2.5,
    "hidden_act": "silu",
    "quantization_config": {
        "quant_method": "fp8",
        "fmt": "e4m3",
        "activation_scheme": "dynamic",
        "weight_block_size": [128, 128],
    },
}
GPT_OSS_20B = {
    "model_type": "gpt_oss",
    "hidden_size": 2880,
    "intermediate_size": 2880,
    "num_local_experts": 32,
    "num_experts_per_tok": 4,
    "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": ["router", "embed_tokens"]},
}


def test_deepseek_v3_quantization_config_is_block_fp8_with_fp32_scales():
    q = MoESpec.from_hf_config(DEEPSEEK_V3).quant
    assert (q.method, q.fp8_format, q.weight_block, q.act_group) == ("fp8_block", "e4m3fn", (128, 128), 128)
    assert (q.scale_format, q.activation_scale, q.quantize_inputs) == ("fp32", "dynamic", ("gemm1", "gemm2"))


def test_ue8m0_scale_fmt_gives_power_of_two_scales_rounded_up():
    cfg = {**DEEPSEEK_V3, "quantization_config": {**DEEPSEEK_V3["quantization_config"], "scale_fmt": "ue8m0"}}
    q = MoESpec.from_hf_config(cfg).quant
    assert (q.scale_format, q.scale_rounding) == ("ue8m0", "ceil")


def test_gpt_oss_quantization_config_is_mxfp4_with_bf16_activations():
    spec = MoESpec.from_hf_config(GPT_OSS_20B)
    assert spec.quant == QuantScheme.mxfp4()
    assert (spec.quant.weight_format, spec.quant.weight_block, spec.quant.activation_dtype) == (
        "e2m1",
        (1, 32),
        "bfloat16",
    )


def test_a_config_without_quantization_config_stays_unquantized():
    cfg = {k: v for k, v in DEEPSEEK_V3.items() if k != "quantization_config"}
    assert MoESpec.from_hf_config(cfg).quant is None


@pytest.mark.parametrize(
    ("field", "qc"),
    [
        ("config.quantization_config.quant_method", {"quant_method": "gptq"}),
        ("config.quantization_config.fmt", {"quant_method": "fp8", "fmt": "e3m4"}),
        (
            "config.quantization_config.activation_scheme",
            {"quant_method": "fp8", "activation_scheme": "static", "weight_block_size": [128, 128]},
        ),
        (
            "config.quantization_config.scale_fmt",
            {"quant_method": "fp8", "scale_fmt": "e4m3", "weight_block_size": [128, 128]},
        ),
    ],
)
def test_unsupported_quantization_configs_name_the_field(field, qc):
    with pytest.raises(SpecError) as err:
        MoESpec.from_hf_config({**DEEPSEEK_V3, "quantization_config": qc})
    assert err.value.field == field


def test_per_tensor_fp8_config_reads_the_activation_scheme():
    q = MoESpec.from_hf_config(
        {**DEEPSEEK_V3, "quantization_config": {"quant_method": "fp8", "activation_scheme": "static"}}
    ).quant
    assert (q.method, q.activation_scale) == ("fp8_per_tensor", "static")
