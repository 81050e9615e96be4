"""Reading compiled kernels' PTX in the AOT layout tests."""

from __future__ import annotations

import re


def async_copies(ptx: str) -> dict[str, int]:
    """cp.async instructions of a kernel by width in bytes ("0x10": 16): the pipeline's loads into shared memory."""
    widths = re.findall(r"cp\.async\.c[ag]\.shared\.global \[[^]]*\], \[[^]]*\], (0x[0-9a-f]+)", ptx)
    return {w: widths.count(w) for w in set(widths)}
