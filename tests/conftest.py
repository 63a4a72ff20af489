"""Test-wide settings: hypothesis profiles (fuzzing bounded in `make test`, deterministic in CI)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# `make test`: a bounded number of examples per property. CI: the same, derandomized, so a run's
# verdict does not depend on luck. HYPOTHESIS_PROFILE=deep for a long local fuzzing session.
settings.register_profile("default", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True, database=None)
settings.register_profile("deep", parent=settings.get_profile("default"), max_examples=5000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "default"))
