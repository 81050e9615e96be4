"""Known limits of a backend, as data: the `known_issues` of a device-matrix row (data/device_matrix.json).

    crash_waiver(device, impl_name, err)   -> reason when the exception matches a known limit, else None
    fail_waiver(device, impl_name, case)   -> reason when a Fail is a known artifact of the device, else None
    fail_note(device, impl_name, case)     -> reason to append to a Fail's message, else None

Two kinds of entry, each with an `id`, a `reason` and an optional `not_for` list of implementation names:

    {"exception": "InterpreterError", "message": "All-NaN slice", ...}   a crash whose exception type (or a base
        class) has that name and whose message matches the regex: the stage is Waived with the reason
    {"on_fail": {"dtypes": [...], "scenarios": [...]}, ...}   a limit that gives wrong numbers without an
        exception (each key optional, all given keys must match): the
        Fail stays a Fail (the result is wrong on this device) and its message names the likely cause;
        with `"waive": true` and `only_for` (implementations known, from their source, to hit the limit on
        every such case: Liger keeps bf16 tl.dot operands on purpose) the Fail is Waived with the reason

`not_for` names implementations written around the limit (moe-cts's own kernels widen bf16 and avoid
autotune under the interpreter): a crash there is theirs, not the backend's. `only_for` restricts an entry
to the implementations it names.
"""

from __future__ import annotations

import re
from typing import Any

from moe_cts.conformance.engine.devices import Device, matrix_entry

ENTRY_KEYS = frozenset({"id", "exception", "message", "on_fail", "reason", "not_for", "only_for", "waive"})
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
        if issue.get("waive") and not (issue.get("on_fail") is not None and issue.get("only_for")):
            raise ValueError(f"device_matrix known_issues {issue.get('id')}: 'waive' needs 'on_fail' and a "
                             "non-empty 'only_for' (a waived Fail must name the implementations it covers)")  # fmt: skip
    return issues


def _applies(issue: dict[str, Any], impl_name: str) -> bool:
    only = issue.get("only_for")
    return impl_name not in issue.get("not_for", ()) and (only is None or impl_name in only)


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


def fail_waiver(device: Device, impl_name: str, case) -> str | None:
    """`[id] reason` of the first `on_fail` issue with `"waive": true` whose match covers `case`."""
    return _on_fail(device, impl_name, case, waive=True)


def fail_note(device: Device, impl_name: str, case) -> str | None:
    """`[id] reason` of the first silent known issue (`on_fail`, not waived) whose match covers `case`."""
    return _on_fail(device, impl_name, case, waive=False)


def _on_fail(device: Device, impl_name: str, case, *, waive: bool) -> str | None:
    for issue in _issues(device):
        on_fail = issue.get("on_fail")
        if on_fail is None or not _applies(issue, impl_name) or bool(issue.get("waive")) != waive:
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
