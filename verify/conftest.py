"""Settings of ``pytest verify``: hypothesis profiles, the device, and the CUDA-only checks.

- Hypothesis profiles: ``ci`` (default; derandomised, bounded examples, no
  deadline) and ``thorough`` (many random examples, for a GPU machine or a long
  run), chosen with ``HYPOTHESIS_PROFILE``. The names and settings match
  tests/conftest.py, so loading both in one session changes nothing. The
  Monte Carlo property tests cap their examples with
  :func:`verify.testing.examples`.
- The device: ``--device cpu|cuda|auto`` or ``$SIGPROP_DEVICE`` (default CPU);
  ``cuda`` without CUDA is an error (:func:`verify.torch_view.resolve_device`).
- Tests marked ``cuda`` use larger T and d; they run when CUDA is present and
  are skipped with the reason "no CUDA" otherwise.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", derandomize=False, max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser):
    parser.addoption("--device", default=None,
                     help="device for the Monte Carlo checks: cpu, cuda, cuda:N or auto "
                          "(default $SIGPROP_DEVICE or cpu)")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def device(pytestconfig):
    """The resolved torch device for every measurement of the session."""
    from verify.torch_view import resolve_device
    return resolve_device(pytestconfig.getoption("device"))
