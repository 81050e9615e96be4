"""junit.xml for CI systems: one testsuite per device, one testcase per case; with certify --compile, a
"moe-cts[compile]" testsuite with one testcase per (kernel, config, dtype, target)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from moe_cts.conformance.aot.matrix import config_label
from moe_cts.conformance.engine.results import Outcome

_SKIPPED = {Outcome.NOT_SUPPORTED.value, Outcome.WAIVED.value}


def render_junit(report: dict[str, Any]) -> bytes:
    root = ET.Element("testsuites", name="moe-cts")
    for dev in report["devices"]:
        cases = dev["cases"]
        bad = [c for c in cases if not c["conformant"]]
        suite = ET.SubElement(
            root,
            "testsuite",
            name=f"moe-cts[{dev['label']}]",
            tests=str(len(cases)),
            failures=str(sum(c["outcome"] == Outcome.FAIL.value for c in bad)),
            errors=str(sum(c["outcome"] != Outcome.FAIL.value for c in bad)),
            skipped=str(sum(c["outcome"] in _SKIPPED for c in cases)),
        )
        for c in cases:
            tc = ET.SubElement(
                suite,
                "testcase",
                classname=f"moe_cts.{c['source']}",
                name=c["case_id"],
                time=f"{c['duration_s']:.3f}",
            )
            text = f"{c['message']}\nreplay: {c['replay']}"
            if c["outcome"] == Outcome.FAIL.value:
                ET.SubElement(
                    tc, "failure", message=f"fail at stage {c['failing_stage']}", type="fail"
                ).text = text
            elif not c["conformant"]:
                ET.SubElement(tc, "error", message=c["outcome"], type=c["outcome"]).text = text
            elif c["outcome"] in _SKIPPED:
                ET.SubElement(tc, "skipped", message=f"{c['outcome']}: {c['message']}")
        for missing in dev["missing_must_pass"]:
            tc = ET.SubElement(suite, "testcase", classname="moe_cts.must_pass", name=missing)
            ET.SubElement(tc, "error", message="not run", type="missing")
    _compile_suite(root, report.get("compile"))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _compile_suite(root: ET.Element, section: dict[str, Any] | None) -> None:
    if not section:
        return

    recs = section.get("records", [])
    suite = ET.SubElement(
        root, "testsuite", name="moe-cts[compile]", tests=str(len(recs)),
        failures=str(sum(r["status"] == "fail" for r in recs)), errors="1" if section["verdict"] == "error" else "0",
        skipped=str(sum(r["status"] == "expected_rejection" for r in recs)),
    )  # fmt: skip
    for r in recs:
        name = f"{r['kernel']}[{config_label(r['config'])}] {r['dtype']} on {r['target']}"
        tc = ET.SubElement(suite, "testcase", classname=f"moe_cts.compile.{r['target']}", name=name,
                           time=f"{r.get('seconds', 0.0):.3f}")  # fmt: skip
        if r["status"] == "fail":
            ET.SubElement(tc, "failure", message=r["reason"][:200], type="compile_fail").text = r["reason"]
        elif r["status"] == "expected_rejection":
            ET.SubElement(tc, "skipped", message=r["reason"][:200])
    if section["verdict"] == "error":
        tc = ET.SubElement(suite, "testcase", classname="moe_cts.compile", name="compile tier")
        ET.SubElement(tc, "error", message="the compile tier did not run", type="error").text = section.get(
            "error"
        )


def write_junit(report: dict[str, Any], out: Path) -> Path:
    path = out / "junit.xml"
    path.write_bytes(render_junit(report))
    return path
