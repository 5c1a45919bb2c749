"""Gradient norms (numeric.gradients): corrected Result 2, its properties and its regimes."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import numeric
from numeric import gradients


def test_asymptotic_bracket_is_the_variance_of_Y2():
    """Frozen phase: E[Y2 - 2Y3 + Y2^2] = m(1-m)/3 with m = beta_c/beta; zero at and below beta_c."""
    d, T = 256, 512
    beta = np.array([0.5, np.sqrt(2.0), 2.0, 2 * np.sqrt(2.0), 6.0])
    got = numeric.query_grad_sq_norm(beta, d=d, T=T, finite_T=False)
    m = np.minimum(1.0, np.sqrt(2.0) / beta)
    want = T * d**2 * beta * np.sqrt(np.log(T)) * m * (1 - m) / 3
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-12 * want.max())  # float sqrt(2) is 1 ulp off
    assert got[0] == 0.0 and got[1] < 1e-9 * got[3]


@given(beta=st.floats(0.1, 10.0), p=st.floats(0.0, 0.8), d=st.integers(1, 4096), T=st.integers(2, 10**6),
       finite_T=st.booleans())
def test_never_negative_never_nan(beta, p, d, T, finite_T):
    for fn in (numeric.query_grad_sq_norm, numeric.key_grad_sq_norm, numeric.value_grad_sq_norm):
        value = fn(beta, d=d, T=T, p=p, finite_T=finite_T)
        assert np.isfinite(value) and value >= 0


@given(beta=st.floats(0.1, 10.0), p=st.floats(0.0, 0.8), d=st.integers(1, 4096), k=st.integers(2, 16),
       T=st.integers(2, 10**6), finite_T=st.booleans())
def test_scales_exactly_as_d_squared(beta, p, d, k, T, finite_T):
    """Leading order in d: the norm is d^2 times a function of (beta, T, q, p, sigma_v2), for every d."""
    for fn in (numeric.query_grad_sq_norm, numeric.key_grad_sq_norm, numeric.value_grad_sq_norm):
        small, large = (fn(beta, d=w, T=T, p=p, finite_T=finite_T) for w in (d, k * d))
        assert large == pytest.approx(k * k * small, rel=1e-13, abs=1e-300)


def test_finite_T_gradient_is_positive_below_beta_c():
    """Finite T: attention is never exactly spread, so gradients vanish only gradually below beta_c."""
    beta = np.array([0.1, 0.5, 1.0, 1.4])
    finite = numeric.query_grad_sq_norm(beta, d=64, T=512)
    assert np.all(finite > 0) and np.all(np.diff(finite) > 0)
    assert np.all(numeric.query_grad_sq_norm(beta, d=64, T=512, finite_T=False) == 0)


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


def test_bracket_and_collapse_scale():
    """query = collapse_scale * beta * E[Y2 - 2Y3 + (sum A^2)^2], the bracket read from numeric's finite-T moments."""
    from numeric import finite_t
    beta, T, q, p = np.array([0.5, 1.0, 2.0, 3.0]), 512, 1.3, 0.4
    bracket = gradients.gradient_bracket(beta, T=T, q=q, p=p)
    want = (finite_t.ipr(beta, r=2, q=q, p=p, T=T) - 2 * finite_t.ipr(beta, r=3, q=q, p=p, T=T)
            + finite_t.ipr_square(beta, q=q, p=p, T=T))
    np.testing.assert_allclose(bracket, want, rtol=1e-12)
    scale = gradients.collapse_scale(d=64, T=T, q=q, p=p, sigma_v2=0.7)
    assert scale == pytest.approx(T * 64**2 * math.sqrt(math.log(T)) * 0.7 * q * (q - p) ** 2, rel=1e-15)
    np.testing.assert_allclose(numeric.query_grad_sq_norm(beta, d=64, T=T, q=q, p=p, sigma_v2=0.7),
                               scale * beta * bracket, rtol=1e-13)


def test_critical_beta_is_derives():
    import derive
    from derive.symbols import p, q
    for qq, pp in ((1.0, 0.0), (2.0, 0.5)):
        want = float(derive.critical_beta().subs({q: qq, p: pp}))
        assert gradients.critical_beta(qq, pp) == pytest.approx(want, rel=1e-15)


@pytest.fixture(scope="module")
def regimes_512():
    return gradients.gradient_regimes(512)


@pytest.mark.parametrize("q, p", [(1.0, 0.0), (1.0, 0.5), (2.0, 0.3)])
def test_asymptotic_regimes(q, p):
    """T -> oo: the bracket m(1-m)/3 peaks at m = 1/2 (beta = 2 beta_c, value 1/12); the norm beta m(1-m)/3 =
    beta_c (1 - beta_c/beta)/3 has no interior peak: it saturates at beta_c/3 and reaches half of it at 2 beta_c."""
    r = gradients.gradient_regimes(4096, q=q, p=p)
    beta_c = math.sqrt(2.0 / (q * (q - p)))
    assert r.beta_c == pytest.approx(beta_c, rel=1e-15)
    assert r.asymptotic_bracket_peak_beta == pytest.approx(2 * beta_c, rel=1e-6)
    assert r.asymptotic_bracket_peak == pytest.approx(1 / 12, rel=1e-12)
    assert r.asymptotic_norm_plateau == pytest.approx(beta_c / 3, rel=1e-9)
    assert r.asymptotic_norm_half_beta == pytest.approx(2 * beta_c, rel=1e-9)


def test_finite_T_regimes_at_T_512(regimes_512):
    """The numbers the issue asks for, at T = 512, q = 1, p = 0 (beta_c = sqrt 2)."""
    r = regimes_512
    assert r.vanishing_exponents[0.5] == pytest.approx(-0.4404, abs=1e-3)
    assert r.vanishing_exponents[0.8] == pytest.approx(-0.1429, abs=1e-3)
    assert r.bracket_peak_beta == pytest.approx(2.027, abs=2e-3)       # not 2 beta_c = 2.83
    assert r.bracket_peak == pytest.approx(0.0945, abs=1e-4)           # above 1/12
    assert r.norm_plateau == pytest.approx(0.406, abs=1e-3)            # below beta_c/3 = 0.471
    assert r.norm_half_beta == pytest.approx(2.156, abs=2e-3)


def test_finite_T_regimes_approach_the_asymptotic_ones_as_T_grows():
    """Peak, plateau and half point move towards 2 beta_c, beta_c/3 and 2 beta_c; the decay exponents
    towards derive.rem.finite_size_exponent (the mean IPR's power of T; the bracket ~ Y2 below beta_c)."""
    from derive import rem
    from derive.symbols import beta, p, q
    exponent = rem.finite_size_exponent()
    runs = [gradients.gradient_regimes(T) for T in (512, 10**5, 10**9)]
    beta_c = runs[0].beta_c
    for key, limit in (("bracket_peak_beta", 2 * beta_c), ("norm_plateau", beta_c / 3),
                       ("norm_half_beta", 2 * beta_c)):
        gaps = [abs(getattr(r, key) - limit) for r in runs]
        assert gaps[0] > gaps[1] > gaps[2] > 0, key
    for ratio in (0.5, 0.8):
        limit = float(exponent.subs({beta: ratio * beta_c, q: 1, p: 0}))
        values = [r.vanishing_exponents[ratio] for r in runs]
        assert all(v < 0 for v in values)
        assert abs(values[0] - limit) > abs(values[1] - limit) > abs(values[2] - limit), (ratio, values, limit)
    assert all(r.vanishing_exponents[0.5] < r.vanishing_exponents[0.8] for r in runs)


def test_full_norm_has_no_interior_peak_at_finite_T():
    """beta * bracket increases monotonically in beta (the bracket decays like 1/beta, not faster)."""
    beta = np.geomspace(0.1, 200.0, 120)
    for T in (64, 512, 8192):
        norm = numeric.query_grad_sq_norm(beta, d=1, T=T)
        assert np.all(np.diff(norm) > 0), T


def test_regimes_depend_on_beta_over_beta_c_only(regimes_512):
    """Every moment depends on b = (beta/beta_c) sqrt(2 ln T): regimes at p = 0.5 are those at p = 0, rescaled."""
    other = gradients.gradient_regimes(512, q=1.0, p=0.5)
    ratio = other.beta_c / regimes_512.beta_c
    assert other.bracket_peak == pytest.approx(regimes_512.bracket_peak, rel=1e-9)
    assert other.bracket_peak_beta == pytest.approx(ratio * regimes_512.bracket_peak_beta, rel=1e-6)
    assert other.norm_plateau == pytest.approx(ratio * regimes_512.norm_plateau, rel=1e-9)
    assert other.vanishing_exponents == pytest.approx(regimes_512.vanishing_exponents, rel=1e-9)


@pytest.mark.parametrize("kw, match", [(dict(T=3), "T"), (dict(T=512, p=1.0), "p"), (dict(T=512, q=-1.0), "q")])
def test_regimes_bad_input(kw, match):
    T = kw.pop("T")
    with pytest.raises(ValueError, match=match):
        gradients.gradient_regimes(T, **kw)
