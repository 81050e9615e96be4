"""Environment variables set for a block and restored after it.

    with setenv({"OMP_NUM_THREADS": "1"}):   # spawned workers and lazily read knobs see the values inside
        ...                                  # on exit each named variable is back as it was (unset if it was)

Only the named variables are restored: what other code sets inside the block stays (unlike
unittest.mock.patch.dict, which puts the whole of os.environ back).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping


@contextlib.contextmanager
def setenv(values: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
