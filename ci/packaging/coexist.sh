#!/usr/bin/env bash
# moe-cts next to PyPI's `kernels` (Hugging Face's kernel hub) and `reference` in one environment: before the
# moe_cts namespace, installing either overwrote our kernels/__init__.py or reference/__init__.py, and
# uninstalling them deleted our files. Builds our wheel, installs the three (no dependencies: only the files and
# their owners matter), checks that each name resolves to its own package, uninstalls theirs and checks ours.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" -m pip wheel -q --no-deps -w "$work/dist" . >/dev/null
"$py" -m venv "$work/venv"
pip="$work/venv/bin/pip"
"$pip" install -q --disable-pip-version-check --no-deps "$work"/dist/moe_cts-*.whl kernels reference
check='
import importlib.util as u, pathlib, sys
ours = pathlib.Path(u.find_spec("moe_cts.kernels").origin).parent
assert (ours / "moe.py").is_file() and (ours.parent / "reference" / "spec.py").is_file(), ours
if sys.argv[1] == "both":
    hf = pathlib.Path(u.find_spec("kernels").origin).read_text()
    assert "moe" not in hf.split("\n", 1)[0].lower() and "fused_moe" not in hf, "kernels/__init__.py is ours"
    ref = u.find_spec("reference")
    assert ref is not None and "MoESpec" not in pathlib.Path(ref.origin).read_text(), "reference is ours"
else:
    assert u.find_spec("kernels") is None and u.find_spec("reference") is None
print("ok:", sys.argv[1], ours)
'
(cd "$work" && "$work/venv/bin/python" -c "$check" both)
"$pip" uninstall -q -y kernels reference
(cd "$work" && "$work/venv/bin/python" -c "$check" ours-only)
