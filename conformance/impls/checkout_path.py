"""Keep a checkout's top-level folders from shadowing PyPI packages of the same name.

moe-cts's three parts live in a checkout as the folders kernels/, reference/ and conformance/, and install as
moe_cts.kernels, moe_cts.reference and moe_cts.conformance (pyproject's package-dir map). `python -m ...` puts
the working directory first on sys.path, so from a checkout's root `import kernels` finds *our*
kernels/__init__.py instead of Hugging Face's `kernels` (the hub of compiled kernels). transformers >= 5.25
depends on that package and imports it from `transformers.activations`, so every model block then fails with

    ImportError: cannot import name 'CUDAProperties' from 'kernels' (<checkout>/kernels/__init__.py)

(measured: the README's `python -m pytest` on CI with transformers 5.25.0 and kernels 0.19.1).

    unshadow_checkout():
        ours = folder of moe_cts.kernels's __init__.py       # <checkout>/kernels in an editable install
        for entry in sys.path:
            if entry/kernels/__init__.py is ours: drop entry # nothing of ours is imported through it
        drop sys.modules "kernels", "kernels.*" loaded from ours

Nothing of moe-cts imports through the checkout root (ruff bans the bare names), so dropping it loses nothing;
a wheel install has no such entry and this is a no-op.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

#: the checkout folders that are also top-level package names on PyPI (Hugging Face `kernels`, `reference`)
SHADOWING = ("kernels", "reference", "conformance")


def _ours() -> dict[str, Path]:
    """Each part's folder as installed: <checkout>/<name> in an editable install, site-packages/moe_cts/<name>
    from a wheel. find_spec, not import: moe_cts.kernels imports triton, which must see TRITON_INTERPRET first."""
    return {
        name: Path(
            next(iter(importlib.util.find_spec(f"moe_cts.{name}").submodule_search_locations))
        ).resolve()
        for name in SHADOWING
    }


def unshadow_checkout() -> list[str]:
    """Remove the sys.path entries through which a moe-cts part imports under its bare folder name, and any
    module already imported that way; return the entries removed (empty outside a checkout's root)."""
    ours = _ours()
    removed = []
    for entry in list(sys.path):
        root = Path(entry or os.getcwd())
        try:
            hit = any((root / name).resolve() == folder for name, folder in ours.items())
        except OSError:  # an unreadable or vanished entry cannot shadow anything
            continue
        if hit:
            sys.path.remove(entry)
            removed.append(entry)
    for key in [k for k in sys.modules if k.split(".")[0] in SHADOWING]:
        origin = getattr(sys.modules[key], "__file__", None)
        if origin and any(Path(origin).resolve().is_relative_to(f) for f in ours.values()):
            del sys.modules[key]
    return removed
