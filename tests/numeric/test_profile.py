"""Depth profiles and the critical residual strength (numeric.profile)."""

from unittest import mock

import mpmath
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import numeric
from derive.parameters import ARCHITECTURES as ARCHS
from tests import reference


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("beta, alpha_sa, sigma_b2, sigma_v2", [
    (0.3, 1.0, 0.0, 1.0), (1.0, 0.5, 0.1, 0.24), (1.5, 2.0, 0.0, 1.0), (2.5, 0.0, 0.3, 2.0),
    (np.sqrt(2.0), 1.0, 0.0, 1.0)])
def test_profile_equals_direct_algorithm(arch, beta, alpha_sa, sigma_b2, sigma_v2):
    """Compiled profiles equal the mpmath step-by-step algorithms (corrected) to 1e-12, 60 blocks."""
    got = numeric.cosine_profile(arch, 60, beta=beta, alpha_sa=alpha_sa, sigma_b2=sigma_b2, sigma_v2=sigma_v2,
                                 rho0=0.1)
    want = reference.profile(arch, 60, beta, rho0=0.1, alpha_sa=alpha_sa, sigma_b2=sigma_b2, sigma_v2=sigma_v2)
    assert got.shape == (61,)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_profile_broadcasts_over_parameters():
    betas = np.array([0.5, 1.0, 2.0])
    rho = numeric.cosine_profile("post-ln", 12, beta=betas, alpha_sa=np.array([[0.5], [1.5]]))
    assert rho.shape == (13, 2, 3)
    single = numeric.cosine_profile("post-ln", 12, beta=2.0, alpha_sa=1.5)
    np.testing.assert_allclose(rho[:, 1, 2], single, rtol=0, atol=0)


def _erf_mlp_residual(q, p, sigma_w2, sigma_b2, alpha_mlp, q_in, p_in):
    """reference.mlp_residual with an erf MLP: K(q, c) = (2/pi) asin(2c / (1 + 2q)) (Williams 1997)."""
    q1, p1 = sigma_w2 * q + sigma_b2, sigma_w2 * p + sigma_b2

    def kernel(c):
        return 2 / mpmath.pi * mpmath.asin(2 * c / (1 + 2 * q1))

    return (sigma_w2 * kernel(q1) + sigma_b2 + alpha_mlp**2 * q_in,
            sigma_w2 * kernel(p1) + sigma_b2 + alpha_mlp**2 * p_in)


def reference_profile(arch, depth, beta, activation="relu", **params):
    """tests.reference's step-by-step algorithm (mpmath, 40 digits), with the erf MLP kernel where asked."""
    if activation == "relu":
        return reference.profile(arch, depth, beta, **params)
    assert activation == "erf"
    with mock.patch.object(reference, "mlp_residual", _erf_mlp_residual):
        return reference.profile(arch, depth, beta, **params)


@given(arch=st.sampled_from(ARCHS), beta=st.floats(0.01, 20.0), alpha_sa=st.floats(0.01, 5.0),
       rho0=st.floats(0.0, 1.0), sigma_b2=st.floats(0.0, 1.0), sigma_v2=st.floats(0.05, 4.0),
       activation=st.sampled_from(["relu", "erf"]))
@example(arch="post-ln", beta=np.sqrt(2.0), alpha_sa=1.0, rho0=0.0, sigma_b2=0.0, sigma_v2=1.0, activation="relu")
@example(arch="pre-ln", beta=1e3, alpha_sa=0.01, rho0=0.999999, sigma_b2=0.0, sigma_v2=1.0, activation="relu")
@example(arch="gain-post-ln", beta=0.01, alpha_sa=1e-3, rho0=1.0, sigma_b2=0.0, sigma_v2=1.0, activation="relu")
@example(arch="gain-pre-ln", beta=20.0, alpha_sa=0.01, rho0=0.0, sigma_b2=0.0, sigma_v2=4.0, activation="erf")
def test_profile_equals_direct_algorithm_on_the_whole_domain(arch, beta, alpha_sa, rho0, sigma_b2, sigma_v2,
                                                             activation):
    """Over the whole valid domain (beta at beta_c, rho -> 1, large beta, small alpha_sa) the compiled profile
    equals the mpmath step-by-step algorithm to 1e-12: relu (arc-cosine kernel) and erf (arcsine kernel)."""
    got = numeric.cosine_profile(arch, 40, beta=beta, alpha_sa=alpha_sa, rho0=rho0, sigma_b2=sigma_b2,
                                 sigma_v2=sigma_v2, activation=activation)
    want = reference_profile(arch, 40, beta, activation, rho0=rho0, alpha_sa=alpha_sa, sigma_b2=sigma_b2,
                             sigma_v2=sigma_v2)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("arch, rho0, beta", [("gain-post-ln", 1.0, 3.0), ("gain-pre-ln", 0.2, 1.0),
                                              ("post-ln", 0.0, 1.0)])
def test_vanishing_signal_is_an_error(arch, rho0, beta):
    """alpha_sa = 0 with an attention output that is exactly 0 at T = oo: say so, no NaN."""
    with pytest.raises(ValueError, match="signal vanishes.*alpha_sa > 0"):
        numeric.cosine_profile(arch, 5, beta=beta, alpha_sa=0.0, rho0=rho0)


def test_q_stays_positive_for_pre_ln():
    from numeric.profile import iterate, prepare
    block, moments, values, depth, T, rho0 = prepare("pre-ln", 50, beta=np.linspace(0.1, 5, 20), T=None,
                                                      rho0=0.3, activation="relu", params={"alpha_sa": 0.0})
    run = iterate(block, moments, values, depth, T, rho0)
    assert np.all(run.q > 0)


#: (arch, betas, other parameters) where alpha_c is finite and > 0 at depth 60, eps = 0.01 (values checked in
#: the test): alpha_c ~ 7.3 (post-LN), 0.92 (pre-LN), 0.25 (gain-pre-LN) at the defaults; finite T and erf too.
BOUNDARY_CASES = [
    ("post-ln", [0.2, 0.8, 1.3, 3.0], {}),
    ("pre-ln", [0.2, 0.8, 1.3, 3.0], {}),
    ("gain-pre-ln", [0.2, 0.8, 1.3], {}),
    ("post-ln", [0.5, 1.0], {"T": 64}),
    ("pre-ln", [0.5, 1.2], {"activation": "erf", "sigma_b2": 0.1}),
]


@pytest.mark.parametrize("arch, betas, params", BOUNDARY_CASES)
def test_critical_alpha_is_the_rank_collapse_boundary(arch, betas, params):
    """The defining property: rho_L <= 1 - eps just above alpha_c, rho_L > 1 - eps just below it."""
    eps, depth, delta = 0.01, 60, 1e-5           # delta: 10 x the solver's default relative accuracy
    alpha_c = numeric.critical_alpha(arch, depth, beta=np.array(betas), eps=eps, **params)
    assert np.all(np.isfinite(alpha_c) & (alpha_c > 0)), alpha_c       # the check has a boundary to test
    above = numeric.cosine_profile(arch, depth, beta=np.array(betas), alpha_sa=alpha_c * (1 + delta), **params)[-1]
    below = numeric.cosine_profile(arch, depth, beta=np.array(betas), alpha_sa=alpha_c * (1 - delta), **params)[-1]
    assert np.all(above <= 1 - eps), (alpha_c, above)
    assert np.all(below > 1 - eps), (alpha_c, below)


def test_gain_post_ln_has_no_interior_boundary():
    """Gain-controlled post-LN: the skip carries the correlated signal and the attention output only
    decorrelates, so rho_L grows with alpha_sa and alpha_c is 0 (rank collapse avoided as alpha_sa -> 0+)
    or inf (not avoided at any alpha_sa). Both answers are checked against their definition."""
    eps, depth = 0.05, 60
    alphas = np.geomspace(1e-9, 1e6, 31)
    # beta = 3 > beta_c: condensed attention keeps tokens apart when the skip is weak; a strong skip
    # leaves the tokens to the MLP, which collapses them (rho_60 = 0.98 > 1 - eps)
    assert numeric.critical_alpha("gain-post-ln", depth, beta=3.0, eps=eps) == 0.0
    rho = numeric.cosine_profile("gain-post-ln", depth, beta=3.0, alpha_sa=alphas)[-1]
    assert rho[0] <= 1 - eps < rho[-1]
    assert np.all(np.diff(rho) >= -1e-12)                 # rho_L non-decreasing in alpha_sa: no interior root
    # beta = 0.8 < beta_c with an MLP bias: the attention output is 0 (spread), the MLP collapses the tokens
    assert numeric.critical_alpha("gain-post-ln", depth, beta=0.8, eps=eps, sigma_b2=0.1) == np.inf
    rho = numeric.cosine_profile("gain-post-ln", depth, beta=0.8, alpha_sa=alphas, sigma_b2=0.1)[-1]
    assert np.all(rho > 1 - eps)


def test_critical_alpha_relative_accuracy_and_scalar():
    a = numeric.critical_alpha("post-ln", 60, beta=1.0)
    b = numeric.critical_alpha("post-ln", 60, beta=1.0, rtol=1e-12)
    assert isinstance(a, float)
    assert abs(a - b) <= 1e-6 * b


def test_critical_alpha_zero_and_infinity():
    # beta above beta_c: attention itself keeps tokens apart at shallow depth
    assert numeric.critical_alpha("gain-post-ln", 2, beta=3.0) == 0.0
    # an MLP whose bias dominates collapses the tokens whatever alpha_sa is
    assert numeric.critical_alpha("post-ln", 60, beta=0.5, sigma_b2=50.0, alpha_mlp=0.0) == np.inf


@pytest.mark.parametrize("call, match", [
    (lambda: numeric.cosine_profile("post-ln", -1, beta=1.0), "depth"),
    (lambda: numeric.cosine_profile("post-ln", 2.5, beta=1.0), "depth"),
    (lambda: numeric.cosine_profile("post-ln", True, beta=1.0), "depth"),
    (lambda: numeric.cosine_profile("post-ln", 3, beta=0.0), "beta"),
    (lambda: numeric.cosine_profile("post-ln", 3, beta=-1.0), "beta"),
    (lambda: numeric.cosine_profile("post-ln", 3, beta=np.nan), "beta"),
    (lambda: numeric.cosine_profile("post-ln", 3, beta=1.0, sigma_w2=-2.0), "sigma_w2"),
    (lambda: numeric.cosine_profile("post-ln", 3, beta=1.0, sigma_b2=-0.1), "sigma_b2"),
    (lambda: numeric.cosine_profile("post-ln", 3, beta=1.0, alpha_sa=np.inf), "alpha_sa"),
    (lambda: numeric.cosine_profile("post-ln", 3, beta=1.0, rho0=1.5), "rho0"),
    (lambda: numeric.cosine_profile("mid-ln", 3, beta=1.0), "arch"),
    (lambda: numeric.cosine_profile("post-ln", 3, beta=1.0, activation="swish"), "activation"),
    (lambda: numeric.cosine_profile("post-ln", 3, beta=1.0, T=1), "T"),
    (lambda: numeric.cosine_profile("post-ln", 3, beta=1.0, T=100.5), "T"),
    (lambda: numeric.cosine_profile("post-ln", 3, beta=[]), "beta"),
    (lambda: numeric.critical_alpha("post-ln", 3, beta=1.0, eps=0.0), "eps"),
    (lambda: numeric.critical_alpha("post-ln", 3, beta=1.0, eps=1.0), "eps"),
    (lambda: numeric.critical_alpha("post-ln", 3, beta=1.0, sigma_q=1.0), "unknown parameter"),
])
def test_bad_input_names_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_custom_spec_compiles_and_matches_named():
    from derive.architectures import post_ln
    spec = post_ln("relu")
    got = numeric.cosine_profile(spec, 20, beta=1.2, alpha_sa=0.7)
    want = numeric.cosine_profile("post-ln", 20, beta=1.2, alpha_sa=0.7)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
