"""Hypothesis profiles, registered once and chosen by MOE_CTS_PROFILE (tox sets it).

profile   derandomized   examples   database          use
ci        yes            small      none              every push, on the interpreter
nightly   no             thousands  shared directory  random search for new failures
cert      yes            fixed      none              certification runs: same cases every time
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]


def register_profiles() -> None:
    settings.register_profile(
        "ci", derandomize=True, max_examples=12, deadline=None, database=None, suppress_health_check=_SLOW_OK
    )
    settings.register_profile(
        "nightly",
        max_examples=2000,
        deadline=None,
        database=DirectoryBasedExampleDatabase(
            os.environ.get("MOE_CTS_HYPOTHESIS_DB", ".hypothesis/examples")
        ),
        suppress_health_check=_SLOW_OK,
    )
    settings.register_profile(
        "cert",
        derandomize=True,
        max_examples=200,
        deadline=None,
        database=None,
        suppress_health_check=_SLOW_OK,
    )
    settings.load_profile(os.environ.get("MOE_CTS_PROFILE", "ci"))
