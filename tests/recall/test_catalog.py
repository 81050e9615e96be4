"""The fault catalog (conformance/data/faults.json): every applicable bug class has faults, every entry is
well-formed, and every mutation still applies to the kernels exactly once."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest

from moe_cts.conformance.impls.broken import BROKEN
from moe_cts.conformance.recall.catalog import Edit, load_catalog, parse_fault
from moe_cts.conformance.recall.mutate import StaleMutation, apply_edits, kernels_root, mutated_kernels

REPO = Path(__file__).resolve().parents[2]
CATALOG = load_catalog()
BUG_CLASSES = sorted(
    set(re.findall(r"^### (bug-\d\d-[a-z0-9-]+)$", (REPO / "docs/bugs.md").read_text(), re.M))
)
MUTATED = [f for f in CATALOG.faults if f.edits]


def test_the_catalog_holds_at_least_forty_faults() -> None:
    assert len(CATALOG.faults) >= 40, f"{len(CATALOG.faults)} faults, expected >= 40"


def test_every_bug_class_has_a_fault_or_a_reason() -> None:
    assert len(BUG_CLASSES) == 27
    covered = {f.bug for f in CATALOG.faults} | {d["bug"] for d in CATALOG.not_applicable}
    assert set(BUG_CLASSES) - covered == set()


def test_fault_anchors_exist_in_docs_bugs() -> None:
    unknown = {f.name: f.bug for f in CATALOG.faults if f.bug not in BUG_CLASSES}
    assert unknown == {}


def test_no_class_waits_for_kernels() -> None:
    # the quantized classes (03, 21-24) joined once the fp8 and MXFP4 kernels landed (catalog v10)
    waiting = {d["bug"] for d in CATALOG.not_applicable}
    assert waiting == set(), {b: _formats(b) for b in waiting}


QUANTIZED = ["bug-21-scale-layout", "bug-22-e8m0-scale-rounding", "bug-23-fp8-rounding-and-max",
             "bug-24-tiny-block-scales"]  # fmt: skip


@pytest.mark.parametrize("bug", QUANTIZED)
def test_quantized_classes_have_two_smoke_faults(bug) -> None:
    smoke = [f.name for f in CATALOG.faults if f.bug == bug and f.profile == "smoke"]
    assert len(smoke) >= 2, smoke


@pytest.mark.parametrize("bug", [*QUANTIZED, "bug-03-bias-before-dequant"])
def test_quantized_faults_run_on_quantized_cases(bug) -> None:
    # a quantized fault on a float case would survive by construction: the fp8 / MXFP4 kernels never run
    for f in (f for f in CATALOG.faults if f.bug == bug):
        assert f.cases and all(CATALOG.case(n).spec.quant is not None for n in f.cases), f.name


def _formats(anchor: str) -> str:
    text = (REPO / "docs/bugs.md").read_text()
    return re.search(rf"\| \[{anchor}\]\(#{anchor}\) \| [^|]+ \| ([^|]+) \|", text).group(1)


@pytest.mark.parametrize("fault", MUTATED, ids=[f.name for f in MUTATED])
def test_every_mutation_applies_exactly_once(fault) -> None:
    root = kernels_root()
    texts = {e.file: (root / e.file).read_text() for e in fault.edits}
    edited = apply_edits(texts, fault.edits)
    assert edited != texts


@pytest.mark.parametrize("name", [f.name for f in CATALOG.faults if f.kind == "broken"])
def test_broken_faults_expect_what_the_broken_table_says(name) -> None:
    f = CATALOG.by_name([name])[0]
    b = BROKEN[f.broken]
    assert (f.stage, f.outcome) == (b.stage, b.outcome)


def test_a_snippet_that_is_gone_is_stale_not_skipped() -> None:
    with pytest.raises(StaleMutation, match="occurs 0 times"):
        apply_edits({"a.py": "x = 1\n"}, [Edit("a.py", "y = 2", "y = 3")])


def test_a_snippet_that_occurs_twice_is_stale() -> None:
    with pytest.raises(StaleMutation, match="occurs 2 times"):
        apply_edits({"a.py": "x = 1\nx = 1\n"}, [Edit("a.py", "x = 1", "x = 2")])


def test_an_entry_without_edits_names_the_field() -> None:
    entry = {"name": "f", "bug": "bug-05-routed-scaling-factor", "kind": "mutation", "stage": "router",
             "profile": "smoke", "device": "interpreter", "checks": "router weights"}  # fmt: skip
    with pytest.raises(ValueError, match=r"'f'\.edits"):
        parse_fault(entry)


def test_a_mutated_copy_replaces_the_package_and_goes_away(tmp_path) -> None:
    root = kernels_root()
    before = importlib.import_module("moe_cts.kernels.target_info")  # loaded before: must come back as is
    combine_before = sys.modules.get("moe_cts.kernels.combine")  # None: re-imported lazily after
    edit = Edit("combine.py", "COMBINE_BLOCK_H = 1024", "COMBINE_BLOCK_H = 512")
    with mutated_kernels(root, [edit], tmp_path):
        mutated = importlib.import_module(
            "moe_cts.kernels.combine"
        )  # the package rebinds .combine to the function
        assert mutated.COMBINE_BLOCK_H == 512
        assert Path(mutated.__file__).is_relative_to(tmp_path)
        assert importlib.import_module("moe_cts.kernels.target_info") is not before
    assert sys.modules.get("moe_cts.kernels.combine") is combine_before
    assert importlib.import_module("moe_cts.kernels.target_info") is before
    real = importlib.import_module("moe_cts.kernels.combine")
    assert real.COMBINE_BLOCK_H == 1024
    assert Path(real.__file__).is_relative_to(root)


def test_a_gpu_recall_plans_the_tile_cases_of_the_table_its_device_reads() -> None:
    """On an H200 (sm_90) the recall's filler cases are cuda-sm90's bucket edges, as a certify run's there;
    without an arch they are the generic cuda table's (the recall's plan before session 27)."""
    from moe_cts.conformance.engine.tile_cases import tile_cases
    from moe_cts.conformance.recall.runner import plan

    fault = next(f for f in CATALOG.runnable("gpu", "gpu") if f.fill and f.kind == "broken")
    names = {c.name for c in plan(CATALOG, [fault], "gpu", "cuda", 500, "sm_90")[fault.name]}
    sm90 = {c.name for c in tile_cases("cuda", "sm_90")}
    generic = {c.name for c in tile_cases("cuda")}
    assert sm90 - generic, "cuda-sm90 has bucket edges of its own"
    assert sm90 <= names
    assert not (generic - sm90) & names
