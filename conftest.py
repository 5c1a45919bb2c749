"""Settings shared by ``pytest tests`` and ``pytest verify``: the one hypothesis profile registration.

Profiles (chosen with ``HYPOTHESIS_PROFILE``, default ``ci``):

- ``ci``: derandomised (seeded), 25 examples, no deadline — every run of a
  given commit draws the same examples;
- ``thorough``: random, 500 examples, no deadline — for a GPU machine or a
  long local run.

The Monte Carlo property tests of ``verify`` cap their examples further with
:func:`verify.testing.examples`. This file sits at the repository root so that
both test trees load it (pytest reads the conftest.py files of the rootdir and
of every directory above a test path).
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", derandomize=False, max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
