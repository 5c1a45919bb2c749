"""Shared test settings: hypothesis is derandomised (seeded) with a bounded number of examples.

HYPOTHESIS_PROFILE=thorough runs many more examples (for a GPU machine or a long local run).
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", derandomize=False, max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
