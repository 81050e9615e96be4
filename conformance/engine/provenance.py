"""Config provenance: the tile table a kernel read must be the one tuned for the device it runs on.

    check(kernel_config, device) -> None | message
      table = kernel_config.get("table")       # what the implementation's table was tuned for:
                                                 "<backend>" or "<backend>@<target>[+<target>...]"
      table is None                            -> None   (nothing declared: a forced config, or an
                                                          implementation that reports no table)
      backend part != device.backend           -> "the tile table tuned for <table> ran on <backend>"
      targets named, device's not among them   -> the same (cuda@sm90 on an sm_80 device)

Two GPU models that load each other's tuned tables give different reduction orders and flipped outputs
(docs/bugs.md#bug-27-cross-device-config-drift); every row of the wrong table may still be numerically
conformant, so the bound cannot see it. An implementation that reports which table it read (the
`kernel_config()` key "table", as our Triton kernels do from the table's own `backend` field) lets one
device see it: the determinism stage fails on a mismatch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moe_cts.conformance.engine.devices import Device


def check(kernel_config: Mapping[str, Any], device: Device) -> str | None:
    table = kernel_config.get("table")
    if not table:
        return None
    backend, _, targets = str(table).partition("@")
    # target names as kernels/target_info.py writes them (sm90, gfx942); torch's device arch is sm_90 / gfx942
    arch = str(device.arch).replace("_", "")
    if backend == device.backend and (not targets or arch in targets.split("+")):
        return None
    return f"the tile table tuned for {table} ran on a {device.backend} device ({device.arch})"
