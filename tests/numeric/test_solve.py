"""The one root finder: exact on functions with known roots, bounded, and its inputs checked."""

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import brentq

import numeric
from numeric import solve


def test_smallest_alpha_on_known_roots():
    """gap = c/alpha - 1 has its root at c: 0 where c -> 0, inf beyond alpha_max, else c to rtol."""
    c = np.array([1e-13, 0.3, 7.0, 5e6])
    alpha = solve.smallest_alpha(lambda a, c: c / a - 1.0, c.shape, rtol=1e-9, alpha_max=1e6, args=(c,))
    assert alpha[0] == 0.0 and alpha[3] == math.inf
    np.testing.assert_allclose(alpha[1:3], c[1:3], rtol=2e-9)
    assert np.all(c[1:3] / alpha[1:3] - 1.0 <= 0)                 # the returned end is on the passing side


def test_smallest_alpha_uses_a_given_bracket():
    c = np.array([2.0, 3.0])
    calls = []

    def gap(a, c):
        calls.append(a.size)
        return c / a - 1.0

    alpha = solve.smallest_alpha(gap, c.shape, rtol=1e-6, alpha_max=10.0, args=(c,), bracket=([1.9, 2.9], [2.1, 3.1]))
    np.testing.assert_allclose(alpha, c, rtol=1e-6)
    assert sum(calls) < 40                                          # a tight bracket needs few evaluations


@pytest.mark.parametrize("kw, message", [(dict(rtol=0), "rtol"), (dict(rtol=-1e-3), "rtol"),
                                         (dict(rtol=float("nan")), "rtol"), (dict(rtol=0.9), "rtol"),
                                         (dict(alpha_max=-1), "alpha_max"), (dict(alpha_max=float("nan")), "alpha_max"),
                                         (dict(alpha_max=0), "alpha_max")])
def test_critical_alpha_checks_rtol_and_alpha_max(kw, message):
    """rtol = nan returned 16.0 (answer 7.30) and alpha_max = -1 returned inf, silently; now ValueError."""
    with pytest.raises(ValueError, match=message):
        numeric.critical_alpha("post-ln", 60, beta=1.0, **kw)


def test_critical_alpha_with_rtol_zero_fails_fast_instead_of_hanging():
    """rtol = 0 never returned; in a child process with a time limit, it must now raise at once."""
    code = ("import numeric\ntry:\n    numeric.critical_alpha('post-ln', 60, beta=1.0, rtol=0)\n"
            "except ValueError as e:\n    print('ValueError', e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("ValueError rtol")


def test_critical_alpha_agrees_with_brent_at_the_finest_tolerance():
    """At rtol = 1e-15 (bounded iterations) alpha_c equals Brent's root of rho_L(alpha) - (1 - eps)."""
    def gap(alpha):
        return numeric.cosine_profile("post-ln", 60, beta=1.0, alpha_sa=alpha)[-1] - 0.99

    expected = brentq(gap, 1.0, 20.0, xtol=1e-14, rtol=1e-15)
    got = numeric.critical_alpha("post-ln", 60, beta=1.0, rtol=1e-15)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got == pytest.approx(7.30, abs=0.005)                    # the independent number


def test_critical_alpha_beyond_alpha_max_is_inf():
    assert numeric.critical_alpha("post-ln", 60, beta=1.0, alpha_max=2.0) == math.inf


def test_increasing_root():
    assert solve.increasing_root(lambda x: x**3 - 2.0, 0.0, 5.0, rtol=1e-12) == pytest.approx(2 ** (1 / 3), rel=1e-11)
    with pytest.raises(ValueError, match="no sign change"):
        solve.increasing_root(lambda x: x + 1.0, 0.0, 5.0)


def test_points_that_pass_at_zero_are_not_bracketed():
    """gain-pre-LN at beta = 2 avoids rank collapse for every alpha_sa > 0 (alpha_c = 0) while beta = 1 needs
    0.25: growing the bracket of the first point ran alpha_sa to 1e6 and overflowed the map."""
    alpha = numeric.critical_alpha("gain-pre-ln", 60, beta=[1.0, 2.0])
    assert alpha[1] == 0.0 and 0.2 < alpha[0] < 0.3
    assert numeric.cosine_profile("gain-pre-ln", 60, beta=1.0, alpha_sa=alpha[0] * 1.001)[-1] <= 0.99
    assert numeric.cosine_profile("gain-pre-ln", 60, beta=1.0, alpha_sa=alpha[0] * 0.999)[-1] > 0.99


def test_smallest_alpha_converges_superlinearly_and_brackets_from_either_side():
    """Chandrupatla's steps: far fewer evaluations than bisection (40 halvings for 1e-12 from [0.5, 1]), and
    a given bracket whose lower end already passes, or whose upper end still fails, is moved."""
    c = np.array([0.7, 0.05, 40.0])
    calls = []

    def gap(a, c):
        calls.append(a.size)
        return np.log(c / a)                    # decreasing, root at c
    alpha = solve.smallest_alpha(gap, c.shape, rtol=1e-12, alpha_max=1e3, args=(c,),
                                 bracket=([0.5, 0.2, 1.0], [1.0, 0.4, 2.0]))
    np.testing.assert_allclose(alpha, c, rtol=1e-12)
    assert np.all(gap(alpha, c) <= 0)
    assert len(calls) < 30


def test_a_critical_alpha_does_not_import_scipy_optimize():
    code = ("import sys, numeric; numeric.critical_alpha('post-ln', 10, beta=[1.0, 2.0]); "
            "print('scipy.optimize' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]
