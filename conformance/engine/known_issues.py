"""Known limits of a backend, as data: the `known_issues` of a device-matrix row (data/device_matrix.json).

    crash_waiver(device, impl_name, err)   -> reason when the exception matches a known limit, else None
    fail_note(device, impl_name, case)     -> reason to append to a Fail's message, else None

Two kinds of entry, each with an `id`, a `reason` and an optional `not_for` list of implementation names:

    {"exception": "InterpreterError", "message": "All-NaN slice", ...}   a crash whose exception type (or a base
        class) has that name and whose message matches the regex: the stage is Waived with the reason
    {"on_fail": {"dtypes": [...], "scenarios": [...]}, ...}   a limit that gives wrong numbers without an
        exception (each key optional, all given keys must match): the
        Fail stays a Fail (the result is wrong on this device) and its message names the likely cause

`not_for` names implementations written around the limit (moe-cts's own kernels widen bf16 and avoid
autotune under the interpreter): a crash there is theirs, not the backend's.
"""

from __future__ import annotations

import re
from typing import Any

from moe_cts.conformance.engine.devices import Device, matrix_entry

ENTRY_KEYS = frozenset({"id", "exception", "message", "on_fail", "reason", "not_for"})
ON_FAIL_KEYS = frozenset({"dtypes", "scenarios"})


def _issues(device: Device) -> list[dict[str, Any]]:
    issues = list(matrix_entry(device).get("known_issues", ()))
    for issue in issues:
        unknown = set(issue) - ENTRY_KEYS
        if unknown:
            raise ValueError(f"device_matrix known_issues {issue.get('id')}: unknown keys {sorted(unknown)}; "
                             f"known {sorted(ENTRY_KEYS)}")  # fmt: skip
        if "reason" not in issue or ("exception" in issue) == ("on_fail" in issue):
            raise ValueError(f"device_matrix known_issues {issue.get('id')}: expected a reason and exactly "
                             "one of 'exception' or 'on_fail'")  # fmt: skip
    return issues


def _applies(issue: dict[str, Any], impl_name: str) -> bool:
    return impl_name not in issue.get("not_for", ())


def _type_names(err: BaseException) -> set[str]:
    return {t.__name__ for t in type(err).__mro__}


def crash_waiver(device: Device, impl_name: str, err: BaseException) -> str | None:
    """`[id] reason` of the first known issue whose exception name and message regex match `err`."""
    for issue in _issues(device):
        if "exception" not in issue or not _applies(issue, impl_name):
            continue
        if issue["exception"] in _type_names(err) and re.search(issue.get("message", ""), str(err)):
            return f"[{issue['id']}] {issue['reason']}"
    return None


def fail_note(device: Device, impl_name: str, case) -> str | None:
    """`[id] reason` of the first silent known issue (`on_fail`) whose match covers `case`."""
    for issue in _issues(device):
        on_fail = issue.get("on_fail")
        if on_fail is None or not _applies(issue, impl_name):
            continue
        unknown = set(on_fail) - ON_FAIL_KEYS
        if unknown:
            raise ValueError(
                f"device_matrix known_issues {issue['id']}: unknown on_fail keys {sorted(unknown)}"
            )
        dtype_ok = case.dtype in on_fail.get("dtypes", (case.dtype,))
        scenario_ok = case.scenario.name in on_fail.get("scenarios", (case.scenario.name,))
        if dtype_ok and scenario_ok:
            return f"[{issue['id']}] {issue['reason']}"
    return None
