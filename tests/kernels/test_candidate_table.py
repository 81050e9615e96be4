"""A candidate tile table (MOE_CTS_TABLE, kernels/config.py): every field is checked with an error naming it,
the devices it names read it and no shipped table, and a device it does not apply to refuses to run rather
than read the shipped table under the candidate's name."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import moe_cts.kernels.config as cfgmod
from moe_cts.conformance.engine import tile_cases as tc
from moe_cts.kernels import target_info
from moe_cts.reference.spec import SpecError


def _shipped(name: str) -> dict:
    return copy.deepcopy(cfgmod.load_table(name))


@pytest.fixture
def candidate(tmp_path, monkeypatch):
    """candidate(table) -> path: the table written to a file that MOE_CTS_TABLE names."""

    def put(table: dict):
        path = tmp_path / "candidate.json"
        path.write_text(json.dumps(table))
        monkeypatch.setenv(cfgmod.TABLE_ENV, str(path))
        return path

    return put


@pytest.mark.parametrize("name", cfgmod.TABLES)
def test_every_shipped_table_passes_the_candidate_check(name):
    assert cfgmod.check_table(_shipped(name), f"{name}:") is not None


def _set(path: str, value):
    """An edit of a table: the dotted path (list indices as ints) set to value; value DROP deletes the key."""

    def edit(table):
        *head, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node = table
        for p in head:
            node = node[p]
        if value is DROP:
            del node[last]
        else:
            node[last] = value
        return table

    return edit


DROP = object()
# (the table edited, the field the error names); the base is the sm90 table: limits of 227 KiB, a fill rule, pdl
BAD = [
    (_set("backend", "metal"), "backend"),
    (_set("targets", ["gfx942"]), "targets"),
    (_set("targets", []), "targets"),
    (_set("tables.fp32", DROP), "tables"),
    (_set("tables.16bit", []), "tables.16bit"),
    (_set("tables.16bit.1.max_tokens_per_expert", 4), "tables.16bit[1].max_tokens_per_expert"),
    (_set("tables.16bit.5.max_tokens_per_expert", 4096), "tables.16bit[5].max_tokens_per_expert"),
    (_set("tables.16bit.0.max_tokens_per_expert", None), "tables.16bit[0].max_tokens_per_expert"),
    (_set("tables.16bit.5.gate_up.swap_ab", 1), "tables.16bit[5].gate_up.swap_ab"),
    (_set("tables.16bit.5.down.BLOCK_N", 96), "tables.16bit[5].down.BLOCK_N"),
    (_set("tables.16bit.0.BLOCK_M", 8), "tables.16bit[0].BLOCK_M"),
    (_set("tables.16bit.5.gate_up.num_stages", 8), "tables.16bit[5].gate_up"),  # 384 KiB of shared memory
    (_set("tables.16bit.5.gate_up.pipeline", 3), "tables.16bit[5]"),  # an unknown tile field
    (_set("batch_invariant.fp32", DROP), "batch_invariant"),
    (_set("batch_invariant.16bit.down.num_warps", 0), "batch_invariant.16bit.down.num_warps"),
    (_set("fill.min_block_n", 24), "fill"),
    (_set("pdl.fp8", "launch"), "pdl.fp8"),
    (_set("tunned", "typo"), "tunned"),
]


@pytest.mark.parametrize("edit,field", BAD, ids=[f for _, f in BAD])
def test_a_wrong_field_is_named_with_what_was_expected(edit, field):
    with pytest.raises(SpecError) as e:
        cfgmod.check_table(edit(_shipped("cuda-sm90")), "T:")
    assert e.value.field == f"T:{field}", str(e.value)
    assert "expected" in str(e.value)


def test_shared_memory_is_checked_against_the_targets_that_read_the_table():
    """gfx950's 160 KiB LDS: the sm90 table's m > 192 row (192 KiB) fits Hopper and not an AMD target."""
    t = _shipped("cuda-sm90")
    big = t["tables"]["16bit"][-1]
    amd = {
        "backend": "hip",
        "tables": {"16bit": [big], "fp32": [big]},
        "batch_invariant": t["batch_invariant"],
    }
    with pytest.raises(SpecError, match=r"T:tables\.16bit\[0\]\.(gate_up|down).*shared memory"):
        cfgmod.check_table(amd, "T:")
    cfgmod.check_table(t, "T:")  # the same row on sm90 alone


def test_a_candidate_for_sm90_is_read_by_sm90_only(candidate):
    t = _shipped("cuda-sm90")
    t["tables"]["16bit"][-1]["down"]["num_stages"] = 3
    candidate(t)
    assert cfgmod.tables() == (*cfgmod.TABLES, cfgmod.CANDIDATE)
    assert cfgmod.table_for("cuda", "sm90") == cfgmod.CANDIDATE
    assert cfgmod.table_for("cuda", "sm80") == "cuda"
    assert cfgmod.table_targets(cfgmod.CANDIDATE) == ("sm90",)
    assert cfgmod.table_targets("cuda-sm90") == ()  # the shipped sm90 table is read by nobody now
    assert set(cfgmod.table_targets("cuda")) == {"sm80", "sm100"}
    entries = [e for e in cfgmod.all_configs() if e[0] == cfgmod.CANDIDATE]
    assert any(cfg.down.num_stages == 3 for *_, cfg in entries)
    # the engine's own reading of the tables (tile_cases.py, no kernels import) agrees per target
    for name, target in target_info.TARGETS.items():
        arch = target.device_arch
        assert tc.device_table(target.backend, arch) == cfgmod.load_table(
            cfgmod.table_for(target.backend, name)
        )


def test_a_backend_wide_candidate_takes_every_target_of_its_backend(candidate):
    candidate(_shipped("cuda"))
    assert cfgmod.table_for("cuda", "sm90") == cfgmod.CANDIDATE
    assert set(cfgmod.table_targets(cfgmod.CANDIDATE)) == {"sm80", "sm90", "sm100"}
    assert cfgmod.table_targets("cuda") == cfgmod.table_targets("cuda-sm90") == ()
    assert cfgmod.table_targets("hip") == ("gfx90a", "gfx942", "gfx950")


def test_the_interpreter_chooses_from_its_candidate_and_reads_an_edit(candidate):
    t = _shipped("interpreter")
    t["tables"]["16bit"][-1]["gate_up"]["BLOCK_K"] = 32
    path = candidate(t)
    kw = dict(
        dtype=torch.bfloat16, num_tokens=64, top_k=2, num_experts=4, hidden_size=256, intermediate_size=256
    )
    assert cfgmod.current_table() == cfgmod.CANDIDATE
    assert cfgmod.choose(**kw).gate_up.BLOCK_K == 32
    assert cfgmod.last_table() == "interpreter"  # what it was tuned for: provenance checks it as before
    t["tables"]["16bit"][-1]["gate_up"]["BLOCK_K"] = 16
    path.write_text(json.dumps(t, indent=1))  # another size: read again
    assert cfgmod.choose(**kw).gate_up.BLOCK_K == 16


def test_a_candidate_for_another_device_refuses_to_run_here(candidate):
    """On the interpreter a cuda candidate must not quietly leave the interpreter's shipped table in charge."""
    candidate(_shipped("cuda-sm90"))
    with pytest.raises(
        SpecError, match=r"MOE_CTS_TABLE: expected a table this device reads \(backend 'interpreter'"
    ):
        cfgmod.current_table()


@pytest.mark.parametrize(
    "content,why", [(None, "readable"), ("{not json", "in JSON"), ('{"backend": "cuda"}', "tables")]
)
def test_an_unreadable_or_incomplete_candidate_is_named(tmp_path, monkeypatch, content, why):
    path = tmp_path / "t.json"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv(cfgmod.TABLE_ENV, str(path))
    with pytest.raises(SpecError, match=rf"MOE_CTS_TABLE.*{why}"):
        cfgmod.load_table(cfgmod.CANDIDATE)


def test_the_engine_and_the_kernels_name_the_same_variable():
    assert tc.TABLE_ENV == cfgmod.TABLE_ENV


def test_the_engines_reading_of_a_bad_candidate_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(cfgmod.TABLE_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match=r"^MOE_CTS_TABLE: expected a readable tile table JSON file"):
        tc.device_table("interpreter")
