"""The capability table and the tile-config data: what the kernels claim, and configs every backend can load."""

from __future__ import annotations

import pytest
import torch

import moe_cts.kernels.config as cfgmod
from moe_cts.kernels.capabilities import CAPABILITIES, NotSupportedError, check_supported
from moe_cts.reference.spec import MoESpec, SpecError

ALL = cfgmod.all_configs()
ELEM_BYTES = cfgmod.ELEM_BYTES


def _id(entry) -> str:
    backend, dc, bucket, _ = entry
    return f"{backend}-{dc}-{bucket}"


@pytest.mark.parametrize("entry", ALL, ids=[_id(e) for e in ALL])
def test_every_table_entry_fits_its_backends_shared_memory(entry) -> None:
    backend, dc, _, cfg = entry
    limit = cfgmod.table_shared_limit(backend)
    gate_up = cfg.gate_up.smem_bytes(cfg.BLOCK_M, ELEM_BYTES[dc], n_b=2)  # gate and up tiles
    down = cfg.down.smem_bytes(cfg.BLOCK_M, ELEM_BYTES[dc], n_b=1)
    if limit is None:  # the interpreter: no shared memory, only a sanity bound on the table entry
        limit = 1 << 30
    assert max(gate_up, down) <= limit, (
        f"{_id(entry)}: {gate_up} / {down} B > {limit} B (docs/bugs.md#bug-13-lds-overflow)"
    )


@pytest.mark.parametrize("entry", [e for e in ALL if e[0] == "hip"], ids=_id)
def test_hip_entries_use_wavefront_agnostic_warp_counts(entry) -> None:
    cfg = entry[3]
    assert {cfg.gate_up.num_warps, cfg.down.num_warps} <= {4, 8}


def test_every_backend_has_both_dtype_classes_and_an_unbounded_last_row() -> None:
    for backend in cfgmod.BACKENDS:
        table = cfgmod.load_table(backend)
        assert set(table["batch_invariant"]) == {"fp32", "16bit"}  # fp8 uses the 16bit row
        assert {"fp32", "16bit"} <= set(table["tables"]) <= {"fp32", "16bit", "fp8"}
        assert all(rows[-1]["max_tokens_per_expert"] is None for rows in table["tables"].values())


@pytest.mark.parametrize("backend", cfgmod.BACKENDS)
def test_batch_invariant_choice_does_not_depend_on_the_token_count(backend) -> None:
    def pick(T: int) -> cfgmod.TileConfig:
        return cfgmod.choose(
            dtype=torch.bfloat16,
            num_tokens=T,
            top_k=8,
            num_experts=256,
            hidden_size=7168,
            intermediate_size=2048,
            batch_invariant=True,
            backend_name=backend,
        )

    assert pick(1) == pick(4096) == pick(50_000)


def test_decode_and_prefill_pick_different_tiles_on_cuda() -> None:
    def pick(T: int) -> cfgmod.TileConfig:
        return cfgmod.choose(
            dtype=torch.bfloat16,
            num_tokens=T,
            top_k=2,
            num_experts=8,
            hidden_size=4096,
            intermediate_size=14336,
            backend_name="cuda",
        )

    assert pick(1).BLOCK_M == 16 and pick(4096).BLOCK_M == 128


def test_tiles_shrink_to_tiny_layers_but_not_below_sixteen() -> None:
    cfg = cfgmod.choose(
        dtype=torch.float32,
        num_tokens=4,
        top_k=2,
        num_experts=4,
        hidden_size=20,
        intermediate_size=5,
        backend_name="cuda",
    )
    assert (cfg.gate_up.BLOCK_N, cfg.gate_up.BLOCK_K, cfg.down.BLOCK_N, cfg.down.BLOCK_K) == (16, 32, 32, 16)


def test_a_bad_forced_config_is_rejected_naming_the_field() -> None:
    bad = {"BLOCK_M": 24, "gate_up": {"BLOCK_N": 64, "BLOCK_K": 64}, "down": {"BLOCK_N": 64, "BLOCK_K": 64}}
    with pytest.raises(SpecError, match="BLOCK_M"):
        cfgmod.as_config(bad)


def test_a_register_cap_is_a_cuda_launch_option_in_range(monkeypatch) -> None:
    """GemmTile.maxnreg: ptxas's cap, passed as Triton's `maxnreg` launch option on CUDA only (HIP's and the
    interpreter's options have no such field); out of [0, 255] it is a SpecError naming the field."""
    tile = {"BLOCK_N": 64, "BLOCK_K": 64}
    for bad in (-1, 256, 1.5, True):
        with pytest.raises(SpecError, match=r"config\.down\.maxnreg.*\[0, 255\]"):
            cfgmod.as_config({"BLOCK_M": 64, "gate_up": tile, "down": {**tile, "maxnreg": bad}})
    capped = cfgmod.GemmTile(64, 64, num_warps=4, num_stages=3, maxnreg=168)
    monkeypatch.setattr(cfgmod, "backend", lambda: "interpreter")
    assert capped.launch_options() == {"num_warps": 4, "num_stages": 3}
    monkeypatch.setattr(cfgmod, "backend", lambda: "cuda")
    assert capped.launch_options() == {"num_warps": 4, "num_stages": 3, "maxnreg": 168}
    assert "maxnreg" not in cfgmod.GemmTile(64, 64).launch_options()
    monkeypatch.setattr(cfgmod, "backend", lambda: "hip")
    assert "maxnreg" not in capped.launch_options()


@pytest.mark.parametrize("entry", [e for e in ALL if e[3].gate_up.maxnreg or e[3].down.maxnreg], ids=_id)
def test_register_caps_sit_in_cuda_tables_and_leave_room_for_another_program(entry) -> None:
    """A cap exists to fit more programs per SM (65,536 registers): at least two programs of the tile's
    threads fit under it, and only CUDA tables carry one."""
    backend, _, _, cfg = entry
    assert backend.startswith("cuda")
    for t in (cfg.gate_up, cfg.down):
        if t.maxnreg:
            assert 2 * 32 * t.num_warps * t.maxnreg <= 65536


def test_capability_table_declares_what_the_kernels_do() -> None:
    assert CAPABILITIES["capacity_dropping"] is False
    assert CAPABILITIES["deterministic"] is True and CAPABILITIES["batch_invariant"] is True
    assert CAPABILITIES["local_expert_mask"] is True
    assert set(CAPABILITIES["dtypes"]) == {"float32", "float16", "bfloat16"}
    assert {"gate_up", "down", "shared_expert", "combine", "fused_moe"} <= set(CAPABILITIES["stages"])


def test_capacity_dropping_raises_not_supported_naming_the_field() -> None:
    spec = MoESpec(hidden_size=8, intermediate_size=8, num_experts=4, top_k=2, capacity_factor=1.25)
    with pytest.raises(NotSupportedError, match="capacity_factor") as err:
        check_supported(spec)
    assert err.value.field == "capacity_factor"


# ------------------------------------------------------------------------------------- per-target tables
def test_sm90_reads_its_own_table_and_other_cuda_targets_the_shared_one() -> None:
    assert cfgmod.table_for("cuda", "sm90") == "cuda-sm90"
    assert cfgmod.table_for("cuda", "sm80") == cfgmod.table_for("cuda", "sm100") == "cuda"
    assert cfgmod.table_for("hip", "gfx942") == "hip"
    assert cfgmod.table_targets("cuda-sm90") == ("sm90",)
    assert cfgmod.table_targets("cuda") == ("sm80", "sm100")
    # each table is checked against the smallest shared memory of the targets that read it
    assert cfgmod.table_shared_limit("cuda-sm90") == 232448
    assert cfgmod.table_shared_limit("cuda") == cfgmod.SMEM_LIMIT_BYTES["cuda"] == 166912


def test_the_sm90_table_holds_pipelines_over_sm80s_shared_memory_and_reports_its_target() -> None:
    pick = dict(dtype=torch.bfloat16, num_tokens=4096, top_k=2, num_experts=8, hidden_size=4096,
                intermediate_size=14336)  # fmt: skip
    sm90 = cfgmod.choose(**pick, backend_name="cuda-sm90")
    assert cfgmod.last_table() == "cuda@sm90"
    need = sm90.down.smem_bytes(sm90.BLOCK_M, 2, n_b=1)
    assert cfgmod.SMEM_LIMIT_BYTES["cuda"] < need <= cfgmod.table_shared_limit("cuda-sm90")
    shared = cfgmod.choose(**pick, backend_name="cuda")
    assert cfgmod.last_table() == "cuda" and shared != sm90


@pytest.mark.parametrize("name", cfgmod.TABLES)
def test_every_table_names_its_backend_and_known_targets(name) -> None:
    from moe_cts.kernels import target_info

    table = cfgmod.load_table(name)
    assert table["backend"] in cfgmod.BACKENDS and name.split("-")[0] == table["backend"]
    assert all(target_info.get(t).backend == table["backend"] for t in table.get("targets", ()))


def test_the_fill_rule_narrows_block_n_only_where_the_grid_leaves_sms_idle(monkeypatch) -> None:
    """config.fill_grid (the sm90 table's "fill"): gpt-oss-120b at T = 1 has 4 tiles of 16 slots x 45 column
    tiles = 180 programs per GEMM, under 1.5 per SM of a 132-SM H200 (198), so both GEMMs go to BLOCK_N 32;
    DeepSeek-V3's gate_up at T = 1 (8 tiles x 32 = 256 programs) stays; T = 2 (8 tiles, 360 programs), a
    device with few SMs' worth of work already, and no GPU keep the row. The rule has no bucket: a shared
    expert (one expert, T rows) fills at T = 16 and 512, not at 8192."""
    rule = cfgmod.load_table("cuda-sm90")["fill"]
    row = cfgmod.TileConfig.from_dict(
        {"BLOCK_M": 16, "gate_up": {"BLOCK_N": 64, "BLOCK_K": 128}, "down": {"BLOCK_N": 64, "BLOCK_K": 128}}
    )
    H = I = 2880  # gpt-oss-120b: E 128, k 4

    def fill(T, sms=132, cfg=row, E=128, k=4):
        f = cfgmod.fill_grid(cfg, rule, T * k, E, H, I, sm_count=sms)
        return f.gate_up.BLOCK_N, f.down.BLOCK_N

    assert fill(1) == (32, 32)
    assert fill(2) == (64, 64)
    assert fill(1, sms=80) == (64, 64)  # 180 programs >= 1.5 x 80
    ds = cfgmod.fill_grid(row, rule, 8, 256, 7168, 2048, sm_count=132)  # DeepSeek-V3 routed, T = 1
    assert (ds.gate_up.BLOCK_N, ds.down.BLOCK_N) == (64, 64)
    assert fill(1, sms=1000) == (32, 32)  # never below min_block_n
    assert fill(512) == (64, 64)  # 248 tiles x 45: full
    with monkeypatch.context() as mp:  # DeepSeek-V3's shared expert in bf16: rows of m <= 16 and m > 64
        mp.setattr(cfgmod, "_sm_count", lambda: 132)
        pick = dict(dtype=torch.bfloat16, top_k=1, num_experts=1, hidden_size=7168, intermediate_size=2048)
        shared = [cfgmod.choose(num_tokens=T, backend_name="cuda-sm90", **pick) for T in (16, 512, 8192)]
    assert [(f.gate_up.BLOCK_N, f.down.BLOCK_N) for f in shared] == [(32, 32), (32, 128), (128, 256)]
    with monkeypatch.context() as mp:  # a rule with a bucket keeps larger m as written
        mp.setitem(rule, "max_tokens_per_expert", 8)
        assert cfgmod.fill_grid(row, rule, 16, 1, 7168, 2048, sm_count=132) == row
    with monkeypatch.context() as mp:  # no GPU: nothing to fill
        mp.setattr(cfgmod, "_sm_count", lambda: None)
        assert fill(1, sms=None) == (64, 64)
    assert cfgmod.fill_grid(row, None, 4, 128, H, I, sm_count=132) == row
    # the AOT tables tier compiles the narrowest tiles the rule can reach
    filled = [e for e in ALL if e[2].endswith("filled")]
    assert filled and all(e[0] == "cuda-sm90" and rule["min_block_n"] == e[3].gate_up.BLOCK_N for e in filled)


def test_batch_invariant_rows_never_fill(monkeypatch) -> None:
    pick = dict(dtype=torch.bfloat16, num_tokens=1, top_k=4, num_experts=128, hidden_size=2880,
                intermediate_size=2880)  # fmt: skip

    with monkeypatch.context() as mp:
        mp.setattr(cfgmod, "_sm_count", lambda: 132)
        assert cfgmod.choose(**pick, backend_name="cuda-sm90").gate_up.BLOCK_N == 32
        inv = cfgmod.choose(**pick, backend_name="cuda-sm90", batch_invariant=True)
    assert inv == cfgmod.choose(**pick, backend_name="cuda-sm90", batch_invariant=True)
    assert (
        cfgmod.load_table("cuda-sm90")["batch_invariant"]["16bit"]["gate_up"]["BLOCK_N"]
        == inv.gate_up.BLOCK_N
    )
