"""From a checkout's root, `python -m ...` puts the root on sys.path, where our kernels/ answered `import kernels`
in place of Hugging Face's package, which transformers >= 5.25 imports (CI failed on it: ImportError
'CUDAProperties' from <checkout>/kernels/__init__.py). unshadow_checkout() drops that entry."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    # `python -c` from the checkout root puts '' first on sys.path, as `python -m pytest` puts the root there
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TRITON_INTERPRET": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_the_checkout_root_shadows_kernels_until_unshadowed():
    out = _run(
        "import importlib.util as u, sys\n"
        "before = u.find_spec('kernels').origin\n"
        "from moe_cts.conformance.impls.checkout_path import unshadow_checkout\n"
        "removed = unshadow_checkout()\n"
        "after = u.find_spec('kernels')\n"
        "print(before); print(removed); print(after.origin if after else None)\n"
        "import moe_cts.kernels, moe_cts.reference  # our parts still import by their namespaced names\n"
    )
    before, removed, after = out.splitlines()
    assert before == str(ROOT / "kernels" / "__init__.py")
    assert removed != "[]"
    assert after != before  # None, or Hugging Face's kernels where it is installed (transformers >= 5.25)


def test_a_module_already_imported_under_the_bare_name_is_dropped():
    out = _run(
        "import sys, kernels\n"
        "from moe_cts.conformance.impls.checkout_path import unshadow_checkout\n"
        "unshadow_checkout()\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] == 'kernels'))\n"
    )
    assert out == "[]"


@pytest.mark.hf
@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers not installed")
def test_the_transformers_adapter_imports_model_blocks_from_the_checkout_root():
    out = _run(
        "from moe_cts.conformance.impls.transformers_experts import _transformers\n"
        "t = _transformers()\n"
        "from transformers.models.mixtral import modeling_mixtral  # imports transformers.activations\n"
        "print(t.__version__)\n"
    )
    assert int(out.split(".")[0]) >= 5
