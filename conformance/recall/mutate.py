"""Source mutations: a scratch copy of the moe_cts.kernels package with exact text replacements, imported under
the package's own name for the duration of one fault.

    root = kernels_root()                         the real package folder (read before any swap)
    with mutated_kernels(root, edits, tmp):       copy root -> tmp/kernels, apply each edit once,
        ...                                       drop moe_cts.kernels* from sys.modules, import the copy
    # afterwards moe_cts.kernels* is dropped again; the next import loads the real package

    apply_edits(text_by_file, edits)              pure: StaleMutation unless each `old` occurs exactly once

The copy is imported as `moe_cts.kernels` itself (a spec whose search path is the copy), so every
`from moe_cts.kernels.x import y` inside the kernels and every lazy import of the Triton implementation
resolve into it. Triton keys its compile cache by source, so a mutated kernel compiles separately on a GPU;
the interpreter simply runs the new source.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from moe_cts.conformance.recall.catalog import Edit

PACKAGE = "moe_cts.kernels"


class StaleMutation(ValueError):
    """A catalog edit whose `old` snippet does not occur exactly once: the kernels changed under the catalog."""


def kernels_root() -> Path:
    """Folder of the installed moe_cts.kernels (the editable checkout's kernels/, or the wheel's copy)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{PACKAGE}: expected an importable package")
    return Path(next(iter(spec.submodule_search_locations)))


def apply_edits(texts: dict[str, str], edits: Sequence[Edit]) -> dict[str, str]:
    """texts: file -> source. Returns the edited copies; each edit's `old` must occur exactly once in the
    current text of its file (edits apply in order)."""
    out = dict(texts)
    for e in edits:
        if e.file not in out:
            raise StaleMutation(f"edit.file: expected a file of kernels/, got {e.file!r}")
        n = out[e.file].count(e.old)
        if n != 1:
            first = e.old.strip().splitlines()[0] if e.old.strip() else ""
            raise StaleMutation(f"{e.file}: `{first}` occurs {n} times, expected exactly once")
        if e.old == e.new:
            raise StaleMutation(f"{e.file}: edit changes nothing (old == new)")
        out[e.file] = out[e.file].replace(e.old, e.new)
    return out


def write_mutated_copy(root: Path, edits: Sequence[Edit], dest: Path) -> Path:
    """Copy root to dest/kernels (no __pycache__) and apply edits; returns the copy's folder."""
    pkg = dest / "kernels"
    shutil.copytree(root, pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    files = sorted({e.file for e in edits})
    texts = {f: (pkg / f).read_text() for f in files if (pkg / f).is_file()}
    for f, text in apply_edits(texts, edits).items():
        (pkg / f).write_text(text)
    return pkg


def _drop_kernels() -> None:
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    parent = sys.modules.get("moe_cts")
    if parent is not None and hasattr(parent, "kernels"):
        delattr(parent, "kernels")
    importlib.invalidate_caches()


def import_from(pkg: Path) -> None:
    """Import the package folder `pkg` as moe_cts.kernels (replacing any loaded one)."""
    _drop_kernels()
    spec = importlib.util.spec_from_file_location(
        PACKAGE, pkg / "__init__.py", submodule_search_locations=[str(pkg)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"{pkg}: not a package")
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        _drop_kernels()
        raise
    parent = sys.modules.get("moe_cts")
    if parent is not None:
        parent.kernels = module


@contextlib.contextmanager
def mutated_kernels(root: Path, edits: Sequence[Edit], tmp: Path) -> Iterator[Path]:
    """moe_cts.kernels is the mutated copy inside the block. After it, the real package's modules that were
    loaded before come back as the same objects (code and tests that imported them keep patching and reading
    the modules the rest of the process uses); the others are re-imported lazily."""
    saved = {m: mod for m, mod in sys.modules.items() if m == PACKAGE or m.startswith(PACKAGE + ".")}
    pkg = write_mutated_copy(root, edits, tmp)
    import_from(pkg)
    try:
        yield pkg
    finally:
        _drop_kernels()
        sys.modules.update(saved)
        parent = sys.modules.get("moe_cts")
        if parent is not None and PACKAGE in saved:
            parent.kernels = saved[PACKAGE]
