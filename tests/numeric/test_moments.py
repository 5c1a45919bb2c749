"""Asymptotic attention moments (numeric.moments) against derive.rem at 30 digits."""

import numpy as np
import pytest
import sympy

import numeric
from derive import rem


def _mp(expr, **values):
    table = {s: sympy.Float(values[s.name], 30) for s in expr.free_symbols}
    return float(sympy.N(expr.subs(table), 30))


@pytest.mark.parametrize("r", [2, 3, 2.5, 7.3])
@pytest.mark.parametrize("b, q0, p0", [(0.5, 1.0, 0.0), (1.5, 1.0, 0.0), (3.0, 1.0, 0.5), (2.0, 2.0, 0.5),
                                      (np.sqrt(2.0), 1.0, 0.0), (40.0, 1.0, 0.9)])
def test_ipr_matches_derive(r, b, q0, p0):
    want = _mp(rem.ipr(sympy.nsimplify(r)), beta=b, q=q0, p=p0)
    assert numeric.ipr(b, r=r, q=q0, p=p0) == pytest.approx(want, rel=1e-13, abs=1e-15)


def test_ipr_square_matches_derive_and_differs_from_square():
    for b in (1.6, 2.5, 6.0):
        want = _mp(rem.ipr_square(), beta=b, q=1.0, p=0.0)
        assert numeric.ipr_square(b) == pytest.approx(want, rel=1e-13)
        assert numeric.ipr_square(b) > numeric.ipr(b) ** 2


def test_ipr_is_continuous_at_beta_c_and_vanishes_below():
    """At q = 2, p = 1 beta_c = sqrt(2/(q(q-p))) = 1 exactly in binary: the moment is 0 at and below it,
    O(delta) above."""
    assert numeric.ipr(1.0, q=2.0, p=1.0) == 0.0
    assert numeric.ipr(1.0 - 1e-12, q=2.0, p=1.0) == 0.0
    assert numeric.ipr(1.0 + 1e-9, q=2.0, p=1.0) == pytest.approx(1e-9, rel=1e-6)
    assert numeric.ipr_square(1.0, q=2.0, p=1.0) == 0.0
    assert 0.0 <= numeric.ipr(np.sqrt(2.0)) < 1e-15  # float sqrt(2) lies one ulp above beta_c


def test_ipr_limits_and_no_overflow():
    big = numeric.ipr(np.array([1e3, 1e8, 1e300]), r=200.0)
    assert np.all(np.isfinite(big)) and np.all(big <= 1.0)
    assert numeric.ipr(1e8) == pytest.approx(1.0, abs=1e-7)
    near_collapse = numeric.ipr(5.0, q=1.0, p=1.0 - 1e-15)
    assert near_collapse == 0.0


def test_pair_term_vanishes_asymptotically_and_broadcasts():
    out = numeric.ipr_pair(np.array([0.5, 2.0, 5.0]), p=0.3)
    np.testing.assert_array_equal(out, 0.0)


@pytest.mark.parametrize("call, match", [
    (lambda: numeric.ipr(0.0), "beta"), (lambda: numeric.ipr(1.0, r=1.0), "r"), (lambda: numeric.ipr(1.0, r=0.5), "r"),
    (lambda: numeric.ipr(1.0, q=1.0, p=1.0), "p"), (lambda: numeric.ipr(1.0, q=-1.0), "q"),
    (lambda: numeric.ipr(np.inf), "beta"), (lambda: numeric.ipr(1.0, T=1), "T"),
    (lambda: numeric.ipr_square(1.0, p=2.0), "p"), (lambda: numeric.ipr_pair(-1.0), "beta"),
    (lambda: numeric.ipr(1.0, p=-0.1), "p/q"), (lambda: numeric.ipr(1.0, p=-0.3, T=5), "p/q"), (lambda: numeric.ipr(1.0, p=-0.1, T=5), "p must lie in \\[0, q\\)"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
