"""ci/gpu/tune.py's candidate table (table_from_sweep): the sweep's best tiles replace a 16-bit row only where they
beat the row's own tiles, measured in the same run, by more than KEEP_WITHIN; rows without points stay; the result
passes the candidate check and records how each row was measured. Synthetic sweep records: no GPU here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import moe_cts.kernels.config as cfgmod

SCRIPT = Path(__file__).resolve().parents[2] / "ci" / "gpu" / "tune.py"


@pytest.fixture(scope="module")
def tune():
    spec = importlib.util.spec_from_file_location("tune", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


BASE = cfgmod.load_table("cuda-sm90")
ROWS = BASE["tables"]["16bit"]  # limits 8, 16, 32, 64, 192, null


def _records(tune, m, points, base_ms, cand_ms, cand_bm=64):
    """Records at bucket m: the base row's own tiles at base_ms per GEMM per point, one candidate at cand_ms."""
    i = tune.bucket_row(ROWS, m)
    row = ROWS[i]
    cand = {"BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3}
    out = []
    for preset, T in points:
        for kind in ("gate_up", "down"):
            common = {"preset": preset, "T": T, "m": m, "kernel": kind}
            out.append(
                {**common, "BLOCK_M": row["BLOCK_M"], "tile": dict(row[kind]), "ms": base_ms, "base": True}
            )
            out.append({**common, "BLOCK_M": cand_bm, "tile": tune.with_flags(cand, row[kind], cand_bm),
                        "ms": cand_ms, "base": False})  # fmt: skip
    return out


def test_a_faster_pair_replaces_the_row_and_the_record_says_how(tune):
    recs = _records(tune, 32, [("mixtral-8x7b", 128), ("qwen3", 256)], base_ms=1.0, cand_ms=0.9)
    table = tune.table_from_sweep(BASE, recs, {"device": "test"})
    cfgmod.check_table(table, "T:")
    row = table["tables"]["16bit"][2]
    assert row["max_tokens_per_expert"] == 32 and row["gate_up"]["BLOCK_N"] == 128 and row["gate_up"]["tma"]
    entry = table["tuned"]["rows_16bit"][2]
    assert entry["result"] == "replaced" and entry["base_ms"] == 4.0 and entry["best_ms"] == 3.6
    assert entry["points"] == [["mixtral-8x7b", 128], ["qwen3", 256]]
    assert table["tuned"]["device"] == "test" and table["tuned"]["previous"] == BASE["tuned"]
    others = [e["result"] for j, e in enumerate(table["tuned"]["rows_16bit"]) if j != 2]
    assert others == ["not measured"] * 5
    assert table["tables"]["16bit"][:2] == ROWS[:2] and table["tables"]["fp8"] == BASE["tables"]["fp8"]


def test_a_pair_within_the_noise_keeps_the_row(tune):
    recs = _records(tune, 128, [("deepseek-v3", 4096)], base_ms=1.0, cand_ms=0.99, cand_bm=128)
    table = tune.table_from_sweep(BASE, recs, {})
    assert table["tables"]["16bit"][4] == ROWS[4]
    assert table["tuned"]["rows_16bit"][4]["result"].startswith("kept: within 2%")


def test_a_tile_missing_at_one_point_cannot_win(tune):
    recs = _records(tune, 32, [("a", 1), ("b", 2)], base_ms=1.0, cand_ms=0.5)
    recs = [r for r in recs if r["base"] or r["preset"] == "a"]  # the candidate ran at one of the two points
    table = tune.table_from_sweep(BASE, recs, {})
    assert table["tables"]["16bit"][2] == ROWS[2]
    assert table["tuned"]["rows_16bit"][2]["result"].startswith("kept: within")  # the base pair won


def test_half_tail_flags_do_not_reach_a_block_m_below_32(tune):
    merged = ROWS[4]["gate_up"]
    assert merged["half_tail"] and merged["merge_tail"]
    tile = tune.with_flags(
        {"BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 1, "num_warps": 4, "num_stages": 3}, merged, 16
    )
    assert tile["tma"] and "half_tail" not in tile and "merge_tail" not in tile
    assert tune.with_flags({}, merged, 64)["merge_tail"]


def test_a_tile_over_the_tables_shared_memory_is_never_chosen(tune):
    """The H200 may run a tile that sm80 (a target of the cuda table) cannot hold: the table's limit decides."""
    recs = _records(tune, 32, [("a", 1)], base_ms=1.0, cand_ms=0.5)
    for r in recs:
        if not r["base"]:
            r["tile"]["num_stages"] = 6  # 6 x (64 + 256) x 64 x 2 B = 240 KiB for gate_up
    table = tune.table_from_sweep(BASE, recs, {}, limit=cfgmod.table_shared_limit("cuda-sm90"))
    row = table["tables"]["16bit"][2]
    assert row["gate_up"] == ROWS[2]["gate_up"]  # the faster 240 KiB gate_up took no part
    assert row["down"]["num_stages"] == 6  # its down (6 x 192 x 64 x 2 B = 144 KiB) fits, and won on its own
    cfgmod.check_table(table, "T:")
