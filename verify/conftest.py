"""Settings of ``pytest verify``: the device and the CUDA-only checks.

- Hypothesis profiles (``ci``, ``thorough``, ``HYPOTHESIS_PROFILE``) are
  registered once for the whole repository, in the root conftest.py. The
  Monte Carlo property tests cap their examples with
  :func:`verify.testing.examples`.
- The device: ``--device cpu|cuda|auto`` or ``$SIGPROP_DEVICE`` (default CPU);
  ``cuda`` without CUDA is an error (:func:`verify.torch_view.resolve_device`).
- Tests marked ``cuda`` use larger T and d; they run when CUDA is present and
  are skipped with the reason "no CUDA" otherwise.
"""

from __future__ import annotations

import pytest
import torch


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
