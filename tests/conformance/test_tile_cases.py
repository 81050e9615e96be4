"""Every row of every shipped tile table (kernels/configs/*.json) is chosen by some tile case, at both ends
of its bucket, and the tile cases join every profile's must-pass run (engine/tile_cases.py)."""

from __future__ import annotations

import json

import pytest
import torch

from moe_cts.conformance.engine.must_pass import must_pass_cases, must_pass_for
from moe_cts.conformance.engine.tile_cases import CONFIG_DIR, DTYPE_OF_CLASS, bucket_edges, tile_cases
from moe_cts.kernels import config as cfgmod

BACKENDS = ("interpreter", "cuda", "hip")


def _chosen_row(backend: str, case) -> tuple[str, int]:
    """(dtype class, index of the table row that kernels/config.py picks for the case)."""
    table = cfgmod.load_table(backend)
    dtype = torch.float8_e4m3fn if case.spec.quant is not None else getattr(torch, case.dtype)
    dc = cfgmod.dtype_class(dtype)
    rows = table["tables"][dc]
    s = case.spec
    cfg = cfgmod.choose(dtype=dtype, num_tokens=case.num_tokens, top_k=s.top_k,
                        num_experts=s.num_experts, hidden_size=s.hidden_size,
                        intermediate_size=s.intermediate_size, backend_name=backend)  # fmt: skip
    # the bucket's row by its limit (two rows may hold the same tiles: sm90's m <= 64 and m > 192)
    m = cfgmod.tokens_per_expert(case.num_tokens * s.top_k, s.num_experts)
    i = next(
        i for i, r in enumerate(rows) if r["max_tokens_per_expert"] is None or m <= r["max_tokens_per_expert"]
    )
    assert cfgmod._row_config(rows[i]) == cfg, (
        f"{case.name}: the chosen config {cfg} is not row {i}'s (shrunk?)"
    )
    return dc, i


# (backend, torch's device arch, the table that device reads): sm_90 reads cuda-sm90, whose buckets differ
DEVICES = [(b, None, b) for b in BACKENDS] + [("cuda", "sm_90", "cuda-sm90"), ("cuda", "sm_80", "cuda")]


@pytest.mark.parametrize("backend,arch,name", DEVICES)
def test_every_table_row_is_chosen_at_both_ends_of_its_bucket(backend, arch, name):
    table = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    hits: dict[tuple[str, int], list[int]] = {}
    for case in tile_cases(backend, arch):
        hits.setdefault(_chosen_row(name, case), []).append(case.num_tokens)
    for dc, rows in table["tables"].items():
        for i in range(len(rows)):
            assert (dc, i) in hits, f"{name} {dc} row {i} is chosen by no tile case"
            if len(rows) > 1:
                assert len(hits[(dc, i)]) == 2, f"{name} {dc} row {i}: expected 2 edge cases"


def test_bucket_edges_are_each_limit_and_the_next_m():
    rows = [{"max_tokens_per_expert": 8, "BLOCK_M": 16}, {"max_tokens_per_expert": None, "BLOCK_M": 32}]
    assert bucket_edges(rows) == [1, 8, 9, 33]
    assert bucket_edges([{"max_tokens_per_expert": None, "BLOCK_M": 64}]) == [1, 65]


@pytest.mark.parametrize("profile", ["smoke", "quick", "full"])
@pytest.mark.parametrize("backend", ["interpreter", "cpu", "cuda"])
def test_tile_cases_join_every_profile(profile, backend):
    ids = {c.case_id for c in must_pass_for(profile, backend)}
    assert {c.case_id for c in tile_cases(backend)} <= ids


def test_tile_case_names_are_unique_and_apart_from_the_curated_list():
    curated = {c.name for c in must_pass_cases()}
    for backend in BACKENDS:
        names = [c.name for c in tile_cases(backend)]
        assert len(names) == len(set(names)) and not set(names) & curated
        assert {c.dtype for c in tile_cases(backend)} <= set(DTYPE_OF_CLASS.values())
