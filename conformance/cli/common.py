"""What every moe-cts command shares: the consoles, the usage-error exit, and the checks of devices and
implementations, so that each command words the same mistake the same way.

Exit codes: 0 conformant / valid, 1 not conformant / not valid (also an interrupted run), 2 usage error or a
void run.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from moe_cts.conformance.engine.devices import select_device
from moe_cts.conformance.impls.registry import load_implementation

console = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class Profile(str, enum.Enum):
    smoke = "smoke"
    quick = "quick"
    full = "full"


def usage_error(msg: str) -> typer.Exit:
    """Print one sentence to stderr and return the exit to raise (code 2)."""
    err.print(f"moe-cts: {msg}", markup=False, soft_wrap=True)
    return typer.Exit(2)


def check_devices(names: list[str]) -> list[str]:
    """Resolve "auto" and check every device exists, before any subprocess starts (exit 2 otherwise)."""
    out = []
    for n in names:
        try:
            d = select_device(n)
        except ValueError as e:
            raise usage_error(device_error(e)) from None
        out.append(d.arg)
    return out


def device_error(e: Exception) -> str:
    """The one wording of a bad device in every command."""
    text = str(e).rstrip(".")
    return f"{text}."


def check_impl(impl: str) -> Any:
    """The loaded implementation; exit 2 with one sentence when `impl` names none."""
    try:
        return load_implementation(impl)
    except (ValueError, ImportError, AttributeError) as e:
        raise usage_error(f"unknown implementation {impl!r}: {e}") from None


def check_out_dir(arg: str | Path) -> Path:
    """--out must be a directory this user can write (created if missing); exit 2 with one sentence if not."""
    if not str(arg).strip():
        raise usage_error("--out is empty: give a directory for the report, for example --out moe-cts-out.")
    out = Path(arg)
    if out.exists() and not out.is_dir():
        raise usage_error(
            f"--out {out} is an existing file, not a directory: give a directory for the report."
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise usage_error(
            f"--out {out} cannot be created ({e.strerror}): give a writable directory."
        ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise usage_error(f"--out {out} is not writable by this user: give a writable directory.")
    return out
