"""fp8 w8a8 fused MoE (kernels/fp8_moe.py) against the float64 oracle under the quantized tolerance model.

Each scheme x fp8 flavour x scale format runs as a conformance case through the triton adapter
(conformance/engine/runner.run_case: gemm1, gemm2, end to end, determinism, all judged by
quant_tolerance.py) on the edge grid quant_cases.py builds: H = 200 and I = 136 (no multiple of 128), a
zero and a tiny activation group, a tiny and an all-zero weight block, subnormal weight elements, and
saturating static scales. Broken variants of the same kernels (a scale from the neighbouring block, a
dropped K tile) must fail the same check.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import torch
from _moe_testlib import DEVICE

from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.protocol import FORWARD
from moe_cts.conformance.engine.results import Outcome
from moe_cts.conformance.engine.runner import run_case
from moe_cts.conformance.impls.registry import get_implementation
from moe_cts.kernels import config as cfgmod
from moe_cts.kernels import fp8_gemm, fp8_moe, target_info
from moe_cts.kernels.config import GemmTile, TileConfig
from moe_cts.kernels.moe import fused_moe
from moe_cts.reference import formats
from moe_cts.reference.errors import NotSupportedError
from moe_cts.reference.quant import QuantScheme
from moe_cts.reference.spec import MoESpec

BASE = MoESpec(hidden_size=200, intermediate_size=136, num_experts=6, top_k=2, renormalize=True)
JUDGED = {"gemm1", "gemm2", "end_to_end"}


@pytest.fixture(scope="module")
def device():
    from moe_cts.conformance.engine.devices import select_device

    return select_device("interpreter" if fp8_gemm.interpreting() else "cuda:0")


def _case(q: QuantScheme, dtype: str = "bfloat16", seed: int = 7, **spec) -> Case:
    return Case(BASE.replace(quant=q, **spec), 11, dtype, seed=seed)


# ----------------------------------------------------------------------------------------------- the grid
GRID = [
    # per tensor: one scale per GEMM input and per expert; static scales at half the amax saturate
    ("per_tensor-e4m3fn", _case(QuantScheme.fp8_per_tensor())),
    ("per_tensor-e4m3fnuz", _case(QuantScheme.fp8_per_tensor(fp8_format="e4m3fnuz"), "float16")),
    ("per_tensor-static-saturating", _case(QuantScheme.fp8_per_tensor(activation_scale="static"))),
    # per token x per channel
    ("per_token-e4m3fn-bias", _case(QuantScheme.fp8_per_token(), expert_bias=True)),
    ("per_token-e4m3fnuz", _case(QuantScheme.fp8_per_token(fp8_format="e4m3fnuz"), "float32")),
    # block 128 x 128 / 1 x 128: zero and tiny groups, tiny and zero weight blocks
    ("block-e4m3fn-fp32", _case(QuantScheme.fp8_block())),
    ("block-e4m3fn-ue8m0", _case(QuantScheme.fp8_block(scale_format="ue8m0"))),
    ("block-e4m3fnuz-fp32", _case(QuantScheme.fp8_block(fp8_format="e4m3fnuz"), "float16")),
    ("block-e4m3fnuz-ue8m0-floor", _case(QuantScheme.fp8_block(fp8_format="e4m3fnuz", scale_format="ue8m0",
                                                                scale_rounding="floor"))),
    # layouts and biases: gpt-oss style interleaved swiglu_oai with biases
    ("block-interleaved-swiglu_oai-bias", _case(QuantScheme.fp8_block(), activation="swiglu_oai",
                                                w13_layout="interleaved", expert_bias=True)),
]  # fmt: skip


def _judge(case: Case, device, impl=None):
    r = run_case(impl or get_implementation("triton"), case, device)
    ran = {v.stage for v in r.stages}
    return r, ran


def forward(case: Case, device) -> None:
    """One forward of the case through the registry's Triton implementation: no oracle, no stage calls (tests
    that compare configs' bits launch by launch judge one of them with _judge)."""
    get_implementation("triton").run(case.build_inputs(device.torch_device), FORWARD, device)


class Fp8Launches:
    """Records, per key, what the fp8 forward's GEMMs hand on: GEMM1's act codes (as floats) and scales
    (fp8_moe._gemm1) and every GEMM2 output (fp8_moe.launch_fp8_down), so that runs under two configs can be
    compared bitwise launch by launch (tests of tile variants that must not change a bit)."""

    def __init__(self, monkeypatch) -> None:
        self.got: dict = {}
        self.key = None
        real_gemm1, real_down = fp8_moe._gemm1, fp8_moe.launch_fp8_down

        def gemm1(*a, **kw):
            aq, sa = real_gemm1(*a, **kw)
            self.got[self.key] += [aq.float().clone(), sa.clone()]
            return aq, sa

        def down(spec, aq, sa, w, bias, out, *a, **kw):
            real_down(spec, aq, sa, w, bias, out, *a, **kw)
            self.got[self.key].append(out.clone())

        monkeypatch.setattr(fp8_moe, "_gemm1", gemm1)
        monkeypatch.setattr(fp8_moe, "launch_fp8_down", down)

    def under(self, key) -> None:
        """Record the launches that follow under `key`."""
        self.key = key
        self.got[key] = []


def _rejection(fmt: str) -> str | None:
    """Why this run's target cannot run fp8 flavour fmt (e4m3fnuz on CUDA, e4m3fn on sm80), or None."""
    return target_info.fp8_rejection(*target_info.device_target(DEVICE), fmt)


@pytest.mark.parametrize("case", [c for _, c in GRID], ids=[n for n, _ in GRID])
def test_each_scheme_matches_the_oracle_on_the_edge_grid(case, device):
    r, ran = _judge(case, device)
    if _rejection(case.spec.quant.fp8_format) is not None:  # the target's rejection, before any launch
        assert r.outcome == Outcome.NOT_SUPPORTED and case.spec.quant.fp8_format in r.message, r.message
        return
    assert r.outcome == Outcome.PASS, f"{r.outcome.value} at {r.failing_stage}: {r.message}"
    assert ran >= JUDGED, ran


def test_the_unfused_requantization_path_matches_too(device):
    """BLOCK_N = 32, neither a multiple nor half of the 128 group (half pairs: test_persistent.py): GEMM1 writes
    fp32 act and quantize_rows requantizes it."""
    tile = GemmTile(BLOCK_N=32, BLOCK_K=128, GROUP_M=1, num_warps=4, num_stages=1)
    cfg = TileConfig(BLOCK_M=16, gate_up=tile, down=tile)
    case = _case(QuantScheme.fp8_block(scale_format="ue8m0"), seed=3)
    assert not fp8_gemm.fused_requant(case.spec, tile)
    with cfgmod.forced(cfg):
        r, _ = _judge(case, device)
    assert r.outcome == Outcome.PASS, f"{r.outcome.value} at {r.failing_stage}: {r.message}"


@pytest.mark.parametrize(
    "layout, inter",
    [("concat", 144), ("concat", 256), ("interleaved", 144)],
    ids=["concat", "concat-scalar", "il"],
)
def test_descriptor_weights_give_the_pointer_bits(layout, inter, device, monkeypatch):
    """GemmTile.tma (weight tiles through tensor descriptors: TMA on sm90+) in the block scheme: the same bits
    as the pointer loads (each K tile's product is exact before its scales), and PASS. H 192: rows of whole
    16-byte units, so both GEMMs take descriptors. I 256 (two whole 128-row weight blocks) lets GEMM1 take one
    scalar scale per half and K group (SW_SCALAR); I 144 gathers a scale per column."""
    case = _case(QuantScheme.fp8_block(), hidden_size=192, intermediate_size=inter, w13_layout=layout,
                 activation="swiglu_oai" if layout == "interleaved" else "silu", expert_bias=layout == "interleaved")  # fmt: skip
    assert fp8_gemm.scalar_weight_scales(case.spec, 128, 128, inter) == (inter == 256)
    descs = []
    real_w13, real_w2 = fp8_gemm.w13_desc, fp8_gemm.weight_desc

    def spy_w13(*a, **kw):
        descs.append(real_w13(*a, **kw))
        return descs[-1]

    def spy_w2(*a, **kw):
        descs.append(real_w2(*a, **kw))
        return descs[-1]

    monkeypatch.setattr(fp8_gemm, "w13_desc", spy_w13)
    monkeypatch.setattr(fp8_gemm, "weight_desc", spy_w2)
    launches = Fp8Launches(monkeypatch)
    tiles = {
        t: GemmTile(BLOCK_N=128, BLOCK_K=128, GROUP_M=1, num_warps=4, num_stages=2, tma=t)
        for t in (False, True)
    }
    for tma in (False, True):
        launches.under(tma)
        with cfgmod.forced(TileConfig(BLOCK_M=16, gate_up=tiles[tma], down=tiles[tma])):
            forward(case, device)
    assert len(descs) >= 2 and all(d is not None for d in descs), descs  # GEMM1s and GEMM2s, each run
    launches.under("judged")  # the descriptor config also against the oracle, every stage
    with cfgmod.forced(TileConfig(BLOCK_M=16, gate_up=tiles[True], down=tiles[True])):
        r, _ = _judge(case, device)
    assert r.outcome == Outcome.PASS, f"descriptors: {r.outcome.value} at {r.failing_stage}: {r.message}"
    pointers, descriptors = launches.got[False], launches.got[True]
    assert len(pointers) == len(descriptors) >= 3
    for i, (a, b) in enumerate(zip(pointers, descriptors)):
        assert torch.equal(a, b), f"launch {i}: descriptor and pointer weights differ"


SWAP_CASES = [  # (scheme, I, GEMM2 BLOCK_N, GEMM1 swapped)
    pytest.param(QuantScheme.fp8_block(), 256, 64, True, id="scalar-scales"),
    pytest.param(QuantScheme.fp8_block(), 144, 64, False, id="column-scales"),  # GEMM1 gathers per column
    pytest.param(QuantScheme.fp8_block(), 256, 256, True, id="gemm2-column-scales"),  # 256 rows span 2 blocks
    pytest.param(QuantScheme.fp8_per_token(), 256, 64, False, id="per-token"),  # no K groups: one scaling
]


@pytest.mark.parametrize(("scheme", "inter", "down_n", "gemm1_swapped"), SWAP_CASES)
def test_the_operand_swap_passes_and_runs_where_it_applies(scheme, inter, down_n, gemm1_swapped, device,
                                                            monkeypatch):  # fmt: skip
    """GemmTile.swap_ab (the weight box as the dot's first operand, fp8 wgmma at BLOCK_M 16 on sm90) at the
    decode row's shape (BLOCK_M 16, GEMM1 32 columns = 64 weight rows, GEMM2 64 rows): PASS against the oracle,
    and the swapped K loops ran: GEMM2 always, GEMM1 with scalar weight scales only (block scheme, I a
    multiple of the 128-row weight block)."""
    case = _case(scheme, hidden_size=192, intermediate_size=inter)
    modes = []
    real = fp8_gemm.w_mode
    monkeypatch.setattr(fp8_gemm, "w_mode", lambda *a: modes.append(real(*a)) or modes[-1])
    gu = GemmTile(BLOCK_N=32, BLOCK_K=128, GROUP_M=1, num_warps=4, num_stages=2, tma=True, swap_ab=True)
    dn = dataclasses.replace(gu, BLOCK_N=down_n)
    with cfgmod.forced(TileConfig(BLOCK_M=16, gate_up=gu, down=dn)):
        r, ran = _judge(case, device)
    assert r.outcome == Outcome.PASS, f"{r.outcome.value} at {r.failing_stage}: {r.message}"
    assert ran >= JUDGED, ran
    swapped, plain = fp8_gemm.K.W_BOX_A.value, fp8_gemm.K.W_BOX.value
    assert set(modes) == ({swapped} if gemm1_swapped else {swapped, plain}), modes


def test_the_operand_swap_gives_the_unswapped_bits_on_the_interpreter(device, monkeypatch):
    """The interpreter sums both dots in fp32 in the same order: the swapped loops give the unswapped bits launch
    by launch (GEMM1's codes and scales, GEMM2's output), so any difference is the swap's indexing or scaling.
    On a GPU the swapped dot is fp8 wgmma and the unswapped one fp16 mma.sync, other sums: PASS is checked
    there (above)."""
    if not fp8_gemm.interpreting():
        pytest.skip("bits compared on the interpreter only (other MMA instructions on a GPU)")
    case = _case(QuantScheme.fp8_block(), hidden_size=192, intermediate_size=256, seed=5)
    launches = Fp8Launches(monkeypatch)
    for swap in (False, True):
        gu = GemmTile(BLOCK_N=32, BLOCK_K=128, GROUP_M=1, num_warps=4, num_stages=2, tma=True, swap_ab=swap)
        launches.under(swap)
        with cfgmod.forced(TileConfig(BLOCK_M=16, gate_up=gu, down=dataclasses.replace(gu, BLOCK_N=64))):
            forward(case, device)
    plain, swapped = launches.got[False], launches.got[True]
    assert len(plain) == len(swapped) >= 3
    for i, (a, b) in enumerate(zip(plain, swapped)):
        assert torch.equal(a, b), f"launch {i}: swapped and unswapped operands differ"


def test_a_register_cap_gives_the_uncapped_bits(device, monkeypatch):
    """GemmTile.maxnreg (the sm90 fp8 m > 32 row's GEMM2: ptxas's cap, so 3 programs share an SM) changes only
    register allocation: the same bits launch by launch, and PASS. On the interpreter the cap is not a launch
    option (config.GemmTile.launch_options), so this runs the same code twice there."""
    case = _case(QuantScheme.fp8_block(), hidden_size=256, intermediate_size=256)
    launches = Fp8Launches(monkeypatch)
    tiles = {cap: GemmTile(BLOCK_N=128, BLOCK_K=128, GROUP_M=8, num_warps=4, num_stages=3, maxnreg=cap)
             for cap in (0, 168)}  # fmt: skip
    for cap, tile in tiles.items():
        launches.under(cap)
        with cfgmod.forced(TileConfig(BLOCK_M=64, gate_up=tile, down=tile)):
            forward(case, device)
    launches.under("judged")
    with cfgmod.forced(TileConfig(BLOCK_M=64, gate_up=tiles[168], down=tiles[168])):
        r, _ = _judge(case, device)
    assert r.outcome == Outcome.PASS, f"{r.outcome.value} at {r.failing_stage}: {r.message}"
    assert len(launches.got[0]) == len(launches.got[168]) >= 3
    for i, (a, b) in enumerate(zip(launches.got[0], launches.got[168])):
        assert torch.equal(a, b), f"launch {i}: the register cap changed the bits"


# ----------------------------------------------------------------------------------------------- broken variants
def _rolled_scales(real):
    def weight_operands(qt, dev):
        codes, scales, bn = real(qt, dev)
        return codes, torch.roll(scales, 1, dims=-1).contiguous(), bn  # the neighbouring K block's scale

    return weight_operands


def _dropped_k_tile(real):
    def launch(spec, xq, sx, *args, **kw):
        return real(spec, xq[:, : xq.shape[1] - 64], sx, *args, **kw)  # the kernel never sees the last 64 K

    return launch


@pytest.mark.parametrize(
    "patch",
    [("weight_operands", _rolled_scales), ("launch_fp8_gate_up", _dropped_k_tile)],
    ids=["scale-from-the-wrong-block", "dropped-k-tile"],
)
def test_a_broken_variant_fails_the_same_check(patch, device, monkeypatch):
    name, make = patch
    monkeypatch.setattr(fp8_moe, name, make(getattr(fp8_moe, name)))
    r, _ = _judge(_case(QuantScheme.fp8_block()), device)
    assert r.outcome == Outcome.FAIL and r.failing_stage == "gemm1", f"{r.outcome.value}: {r.message}"
    gemm1 = next(v for v in r.stages if v.stage == "gemm1")
    assert gemm1.max_ratio > 10, gemm1.message


# ----------------------------------------------------------------------------------------------- fp8 arithmetic
@pytest.mark.parametrize("fmt", ["e4m3fn", "e4m3fnuz", "e5m2"])
def test_rounding_to_fp8_is_rtne_with_saturation_on_every_code_and_midpoint(fmt):
    """quantize_rows with a static scale 1: the kernel's fp32 rounding equals formats.round_to exactly."""
    if _rejection(fmt) is not None:
        pytest.skip(_rejection(fmt))
    f = formats.get(fmt)
    vals = np.unique(formats.decode(fmt, np.arange(256)))
    vals = vals[np.isfinite(vals)]
    mids = (vals[1:] + vals[:-1]) / 2
    probe = np.concatenate(
        [vals, mids, np.nextafter(mids, np.inf, dtype=np.float32), [f.max * 1.03, 1e30, -1e30]]
    )
    x = torch.tensor(probe, dtype=torch.float32).reshape(1, -1)
    spec = BASE.replace(quant=QuantScheme.fp8_per_tensor(fp8_format=fmt, activation_scale="static"))
    q, s = fp8_gemm.quantize_rows(spec, x.to(DEVICE), 1.0)
    want = formats.round_to(fmt, x.double().numpy())
    np.testing.assert_array_equal(q.cpu().double().numpy(), want)
    assert float(s.max()) == 1.0


@pytest.mark.parametrize("rounding", ["ceil", "floor", "threshold_1p75"])
def test_ue8m0_group_scales_equal_the_reference_powers_of_two(rounding):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 384, generator=g) * torch.logspace(-12, 6, 8).reshape(8, 1)
    x[0, 128:256] = 0.0  # a zero group: amax_eps floors it
    x[1, :128] = 448.0 * 2.0**-5  # amax exactly at a power-of-two boundary of the ceil rounding
    q = QuantScheme.fp8_block(scale_format="ue8m0", scale_rounding=rounding)
    spec = BASE.replace(hidden_size=384, quant=q)
    _, s = fp8_gemm.quantize_rows(spec, x.to(DEVICE))
    s = s.cpu()
    amax = np.maximum(np.abs(x.double().numpy()).reshape(8, 3, 128).max(axis=2), q.amax_eps)
    np.testing.assert_array_equal(s.double().numpy(), formats.ue8m0_scale(amax, "e4m3fn", rounding))


@pytest.mark.parametrize(
    "scheme",
    [QuantScheme.fp8_block(), QuantScheme.fp8_block(scale_format="ue8m0"), QuantScheme.fp8_per_token()],
    ids=["block-fp32", "block-ue8m0", "per-token"],
)
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the zero row: 0 / 0
@pytest.mark.parametrize(
    "programs", [1, fp8_gemm.QUANT_PROGRAMS], ids=["rows-per-program", "row-per-program"]
)
def test_quantize_rows_tiles_of_rows_equal_the_oracle_row_by_row(scheme, programs, monkeypatch):
    """quantize_rows_kernel takes up to QUANT_ROWS (one pass) or QUANT_ROWS_LOOP rows per program, one on
    small grids: a row count that is no multiple of either, rows of very different magnitudes side by side and a zero row (NaN scale in the
    oracle, as DeepSeek's kernel) must give the oracle's codes and scales exactly, row by row."""
    from moe_cts.reference import numpy_quant

    g = torch.Generator().manual_seed(11)
    R, K = 37, 200  # K = 200: a ragged last 128-group
    x = torch.randn(R, K, generator=g) * torch.logspace(-20, 10, R).reshape(R, 1)
    x[5] = 0.0
    spec = BASE.replace(hidden_size=K, quant=dataclasses.replace(scheme, amax_eps=None))
    monkeypatch.setattr(fp8_gemm, "QUANT_PROGRAMS", programs)  # 1: as many rows per program as allowed
    q, s = fp8_gemm.quantize_rows(spec, x.to(DEVICE))
    xs = x.double().numpy()
    want_s = numpy_quant.act_scales(spec, xs, None)
    np.testing.assert_array_equal(s.cpu().double().numpy(), want_s)
    want_q = numpy_quant.quantize_act(spec, xs, None)
    got_s = np.repeat(want_s, K if want_s.shape[1] == 1 else scheme.act_group, axis=1)[:, :K]
    got = q.cpu().double().numpy() * got_s
    np.testing.assert_array_equal(got, want_q)
    assert np.isnan(got[5]).all() and np.isfinite(np.delete(got, 5, axis=0)).all()


# ----------------------------------------------------------------------------------------------- dispatch and targets
def test_fused_moe_delegates_an_fp8_spec_to_fused_moe_fp8():
    case = _case(QuantScheme.fp8_per_token(), seed=2)
    inp = case.build_inputs()
    x = inp.x.to(DEVICE)
    y = fused_moe(case.spec, inp.qweights, x)
    torch.testing.assert_close(y, fp8_moe.fused_moe_fp8(case.spec, inp.qweights, x), rtol=0, atol=0)


def test_mxfp4_without_its_module_is_not_supported_naming_the_method(monkeypatch):
    monkeypatch.setitem(sys.modules, "moe_cts.kernels.mxfp4_moe", None)  # import fails as if absent
    spec = MoESpec(hidden_size=64, intermediate_size=64, num_experts=4, top_k=2, quant=QuantScheme.mxfp4())
    with pytest.raises(NotSupportedError, match="mxfp4"):
        fused_moe(spec, None, torch.zeros((2, 64), dtype=torch.bfloat16))


REJECTED = [
    (("cuda", 80), "e4m3fn", "sm80"),
    (("cuda", 86), "e4m3fn", "cuda:86"),
    (("cuda", 90), "e4m3fnuz", "sm90"),
    (("cuda", 100), "e4m3fnuz", "sm100"),
    (("cuda", 89), "e4m3fnuz", "cuda:89"),
]


@pytest.mark.parametrize("target,fmt,name", REJECTED, ids=[f"{n}-{f}" for _, f, n in REJECTED])
def test_a_target_that_cannot_run_the_flavour_is_rejected_before_any_launch(target, fmt, name, monkeypatch):
    case = _case(QuantScheme.fp8_block(fp8_format=fmt), seed=2)
    inp = case.build_inputs()
    launches = []
    monkeypatch.setattr(target_info, "device_target", lambda dev: target)
    monkeypatch.setattr(fp8_moe, "quantize_rows", lambda *a, **k: launches.append(a))
    with pytest.raises(NotSupportedError, match=f"{name}.*|.*{name}") as err:
        fp8_moe.fused_moe_fp8(case.spec, inp.qweights, inp.x)
    assert fmt in str(err.value) and "fp8_format" in str(err.value) and not launches


@pytest.mark.parametrize("target", [("cuda", 90), ("cuda", 89), ("hip", "gfx942"), ("hip", "gfx90a")])
def test_targets_with_an_fp8_dot_accept_e4m3fn(target):
    assert target_info.fp8_rejection(*target, "e4m3fn") is None


def test_the_rejection_table_agrees_with_the_measured_fp8_compile_outcomes():
    from moe_cts.conformance.aot import plan as aot_plan

    flavours = aot_plan.load_targets()["fp8_flavours"]
    for name in target_info.GPU_TARGETS:
        rejected = {dt.removeprefix("float8_") for dt, row in flavours.items() if row[name] == "rejected"}
        measured = {f for f in target_info.FP8_REJECTED[name] if f"float8_{f}" in flavours}
        assert measured == rejected, name


def test_the_triton_adapter_claims_the_fp8_schemes_and_mxfp4_only_with_its_module():
    import importlib.util

    caps = get_implementation("triton").capabilities()
    assert {"fp8_per_tensor", "fp8_per_token", "fp8_block"} <= caps.quant_schemes
    has_mx = importlib.util.find_spec("moe_cts.kernels.mxfp4_moe") is not None
    assert ("mxfp4" in caps.quant_schemes) == has_mx
