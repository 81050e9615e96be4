"""The two errors every part of moe-cts raises for what it will not compute.

    SpecError          the spec, weights or an input do not describe a valid MoE layer (a caller's mistake)
    NotSupportedError  a valid layer that an implementation does not claim (kernels, adapters, third parties)

Both live here, below everything else, so the kernels, the adapters and the harness share one class each and
match them by type, never by name.
"""

from __future__ import annotations

from typing import Any


class SpecError(ValueError):
    """A spec, weights or input tensor that does not describe a valid MoE layer.

    The message names the field and the expected value: ``top_k: expected 1 <= top_k <= num_experts (8), got 9``.
    """

    def __init__(self, field_name: str, expected: str, got: Any):
        self.field = field_name
        self.expected = expected
        self.got = got
        super().__init__(f"{field_name}: expected {expected}, got {got!r}")


class NotSupportedError(RuntimeError):
    """The implementation does not claim what the case needs; the message names the capability (and the target,
    for a kernel that a target cannot run). Raised before any kernel launch."""

    def __init__(self, message: str, *, field: str | None = None):
        # field: the spec field or argument at fault; defaults to the text before the first ':'
        self.field = field if field is not None else message.split(":", 1)[0]
        super().__init__(message)
