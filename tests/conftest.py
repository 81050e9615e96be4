"""Test-wide set-up: interpreter mode without a GPU, hypothesis profiles.

TRITON_INTERPRET must be set before triton is first imported, so this runs at conftest import time.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from moe_cts.conformance.engine.profiles import register_profiles

register_profiles()
