"""Gradient norms (numeric.gradients): corrected Result 2, asymptotic form."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import numeric


def test_asymptotic_bracket_is_the_variance_of_Y2():
    """Frozen phase: E[Y2 - 2Y3 + Y2^2] = m(1-m)/3 with m = beta_c/beta; zero at and below beta_c."""
    d, T = 256, 512
    beta = np.array([0.5, np.sqrt(2.0), 2.0, 2 * np.sqrt(2.0), 6.0])
    got = numeric.query_grad_sq_norm(beta, d=d, T=T, finite_T=False)
    m = np.minimum(1.0, np.sqrt(2.0) / beta)
    want = T * d**2 * beta * np.sqrt(np.log(T)) * m * (1 - m) / 3
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-12 * want.max())  # float sqrt(2) is 1 ulp off
    assert got[0] == 0.0 and got[1] < 1e-9 * got[3]


@given(beta=st.floats(0.1, 10.0), p=st.floats(0.0, 0.8), d=st.integers(1, 4096), T=st.integers(2, 10**6))
def test_never_negative_never_nan(beta, p, d, T):
    for fn in (numeric.query_grad_sq_norm, numeric.key_grad_sq_norm, numeric.value_grad_sq_norm):
        value = fn(beta, d=d, T=T, p=p, finite_T=False)
        assert np.isfinite(value) and value >= 0


def test_scaling_with_d_and_sigma_v2():
    a = numeric.query_grad_sq_norm(3.0, d=128, T=512, finite_T=False)
    b = numeric.query_grad_sq_norm(3.0, d=256, T=512, finite_T=False, sigma_v2=2.0)
    assert b == pytest.approx(8 * a, rel=1e-14)


def test_key_equals_query_and_value_does_not_vanish():
    beta = np.array([0.5, 3.0])
    np.testing.assert_array_equal(numeric.key_grad_sq_norm(beta, d=64, T=256, finite_T=False),
                                  numeric.query_grad_sq_norm(beta, d=64, T=256, finite_T=False))
    v = numeric.value_grad_sq_norm(beta, d=64, T=256, p=0.2, finite_T=False)
    np.testing.assert_allclose(v[0], 256 * 64**2 * 0.2)  # spread attention: Y2 = 0, p remains


@pytest.mark.parametrize("kw, match", [
    (dict(d=0, T=10), "d"), (dict(d=2.5, T=10), "d"), (dict(d=8, T=1), "T"), (dict(d=8, T=10, p=1.0), "p"),
    (dict(d=8, T=10, sigma_v2=-1.0), "sigma_v2"), (dict(d=8, T=10, q=0.0), "q"),
])
def test_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        numeric.query_grad_sq_norm(1.0, finite_T=False, **kw)
