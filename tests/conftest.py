"""Suite-wide settings: hypothesis runs the same cases on every CI run (``HYPOTHESIS_PROFILE=long`` for more).

The default ``ci`` profile is derandomized and has no example database, so a failure in CI is reproducible
and a pass means the same thing every time; ``scripts/fuzz.sh`` runs the random, much longer ``long`` one.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "long",
    derandomize=False,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
