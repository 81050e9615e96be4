"""Faults in the opt-in kernel paths (catalog field `env`): the swapped MXFP4 decode (MOE_CTS_MXFP4_DECODE) and the
fp8 operand swap (a tile table with swap_ab, MOE_CTS_TABLE=data:...). The smoke recall kills them
(test_recall_smoke.py); here: the environment is what takes them there. Without it the same mutations are
equivalent mutants, bit for bit the default kernels' outputs, so a kill means the opt-in path ran and was judged."""

from __future__ import annotations

import dataclasses

import pytest

from moe_cts.conformance.recall.catalog import CATALOG_PATH, environment, load_catalog, parse_fault
from moe_cts.conformance.recall.runner import run_recall

OPT_IN = [f for f in load_catalog().faults if f.env]


def test_the_opt_in_paths_have_faults_of_their_own():
    env = {k for f in OPT_IN for k, _ in f.env}
    assert env == {"MOE_CTS_MXFP4_DECODE", "MOE_CTS_MXFP4_ROW_GROUP", "MOE_CTS_TABLE"}
    assert len(OPT_IN) >= 5 and all(f.profile == "smoke" for f in OPT_IN)
    files = {e.file for f in OPT_IN for e in f.edits}
    # and the packed MXFP4 decode, which a target's default may replace (mxfp4_gemm.TARGET_DECODE): its fault pins it
    assert files == {"_mxfp4_swapped.py", "_fp8_gemm_kernels.py", "_mxfp4_packed.py"}
    assert {f.name for f in OPT_IN if ("MOE_CTS_MXFP4_DECODE", "packed") in f.env} == {
        "mxfp4-scale-of-previous-block"
    }
    assert all(f.impl_key != "triton" for f in OPT_IN)  # their control runs under the same environment


def test_without_its_environment_an_opt_in_fault_changes_no_output_bit():
    cat = load_catalog()
    names = ["mxfp4-swapped-gate-up-halves-swapped", "fp8-swap-gate-up-halves-swapped"]
    stripped = dataclasses.replace(
        cat, faults=tuple(dataclasses.replace(f, env=()) if f.name in names else f for f in cat.faults)
    )
    report = run_recall(names=names, catalog=stripped, jobs=2)
    assert report.control_failures == []
    assert {r.name: r.status for r in report.results} == dict.fromkeys(names, "equivalent")


def test_env_values_are_checked_and_data_files_resolved():
    base = {"name": "x", "bug": "bug-21-scale-layout", "checks": "c", "kind": "mutation", "stage": "gemm1",
            "profile": "smoke", "device": "interpreter", "edits": [{"file": "a.py", "old": "o", "new": "n"}]}  # fmt: skip
    f = parse_fault({**base, "env": {"MOE_CTS_TABLE": "data:recall-fp8-swap-ab.json"}})
    assert f.env == (("MOE_CTS_TABLE", str(CATALOG_PATH.parent / "recall-fp8-swap-ab.json")),)
    with pytest.raises(ValueError, match=r"env\.MOE_CTS_TABLE: expected a file of conformance/data"):
        parse_fault({**base, "env": {"MOE_CTS_TABLE": "data:nothing.json"}})
    with pytest.raises(ValueError, match=r"env\.PATH: expected a MOE_CTS_\* variable"):
        parse_fault({**base, "env": {"PATH": "/bin"}})


def test_the_environment_is_restored(monkeypatch):
    monkeypatch.setenv("MOE_CTS_MXFP4_DECODE", "packed")
    monkeypatch.delenv("MOE_CTS_TABLE", raising=False)
    import os

    with environment((("MOE_CTS_MXFP4_DECODE", "swapped"), ("MOE_CTS_TABLE", "/t.json"))):
        assert os.environ["MOE_CTS_MXFP4_DECODE"] == "swapped" and os.environ["MOE_CTS_TABLE"] == "/t.json"
    assert os.environ["MOE_CTS_MXFP4_DECODE"] == "packed" and "MOE_CTS_TABLE" not in os.environ
