"""Small helpers shared by the test modules of ``pytest verify``."""

from __future__ import annotations

from hypothesis import settings


def examples(ci: int) -> int:
    """Examples for a Monte Carlo property test: ``ci`` under the ``ci`` profile, the profile's number otherwise.

    A Monte Carlo example costs a batched forward pass, so the CI budget is
    set per test; ``thorough`` (a GPU machine) runs the profile's full number.
    """
    if settings.get_current_profile_name() == "ci":
        return ci
    return settings().max_examples
