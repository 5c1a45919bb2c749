"""Tests of derive.kernels: Gaussian kernels of activations (paper B.6.2, eqs. 35-37).

Each closed form, derived by SymPy, is compared with its known published form
and with mpmath quadrature at 30 digits (tests/reference.py); every activation
of derive.parameters.ACTIVATIONS with Monte Carlo sampling of its definition.
"""

import pickle

import mpmath
import numpy as np
import pytest
import sympy
from scipy import integrate

from derive import kernels
from derive.kernels import (
    OpaqueKernel,
    TanhKernel,
    activation_function,
    gaussian_kernel,
    kernel_derivative,
    opaque_kernel,
)
from derive.parameters import ACTIVATIONS
from tests.reference import CONDITIONAL_MEANS, kernel_reference
from verify.stats import assert_agrees

q = sympy.Symbol("q", positive=True)
c = sympy.Symbol("c", real=True)
rho = c / q

CLOSED_FORMS = ("relu", "erf", "gelu", "identity")
VARIANCES = (sympy.Rational(1, 100), sympy.Integer(1), sympy.Integer(25))
CORRELATIONS = (-1, sympy.Rational(-7, 10), 0, sympy.Rational(3, 10), sympy.Rational(999, 1000), 1)
GRID = [(qq, qq * r) for qq in VARIANCES for r in CORRELATIONS]
DIGITS = 40


def high_precision(expr):
    """A SymPy number as an mpmath mpf at DIGITS digits."""
    with mpmath.workdps(DIGITS):
        return mpmath.mpf(str(sympy.N(expr, DIGITS)))


def assert_agree(value, expected, scale, rel):
    """|value - expected| <= rel * max(|expected|, scale): relative, absolute near 0."""
    with mpmath.workdps(DIGITS):
        value, expected = mpmath.mpf(value), mpmath.mpf(expected)
        bound = rel * max(abs(expected), mpmath.mpf(scale))
        assert abs(value - expected) <= bound, (value, expected)


def published_gelu(q_, c_):
    """Tsuchida et al. (2021), eq. for the GELU NNGP kernel with equal variances."""
    a2 = (1 + q_) ** 2
    return (c_ / 4 + c_ * sympy.asin(c_ / (1 + q_)) / (2 * sympy.pi)
            + (c_**2 + q_**2 * (a2 - c_**2)) / (2 * sympy.pi * a2 * sympy.sqrt(a2 - c_**2)))


# --- the closed forms against the 2-D Gaussian integral ---------------------


@pytest.mark.parametrize("activation", CLOSED_FORMS)
@pytest.mark.parametrize("q_value, c_value", GRID)
def test_closed_form_matches_mpmath_at_30_digits(activation, q_value, c_value):
    closed = gaussian_kernel(activation, q_value, c_value)
    reference = kernel_reference(activation, q_value, c_value, dps=30)
    assert_agree(reference, high_precision(closed), scale=q_value, rel=1e-25)


@pytest.mark.parametrize("activation, q_value, c_value", [
    ("relu", sympy.Rational(1, 100), sympy.Rational(-7, 1000)),
    ("erf", sympy.Integer(25), sympy.Rational(999, 40)),
    ("gelu", sympy.Integer(1), sympy.Rational(3, 10)),
])
def test_full_two_dimensional_quadrature_matches_closed_form(activation, q_value, c_value):
    reference = kernel_reference(activation, q_value, c_value, dps=20, method="quadrature")
    closed = high_precision(gaussian_kernel(activation, q_value, c_value))
    assert_agree(reference, closed, scale=q_value, rel=1e-18)


@pytest.mark.parametrize("activation", CLOSED_FORMS)
@pytest.mark.parametrize("m, s", [("0.7", "0.4"), ("-2.5", "3"), ("0.1", "0.01"), ("1.5", "0")])
def test_conditional_mean_of_the_reference_matches_1d_quadrature(activation, m, s):
    phi = sympy.lambdify(sympy.Symbol("x"), activation_function(activation)(sympy.Symbol("x")),
                         "mpmath")
    with mpmath.workdps(DIGITS):
        m, s = mpmath.mpf(m), mpmath.mpf(s)
        mean = CONDITIONAL_MEANS[activation](m, s)
        if s == 0:
            expected = phi(m)
        else:
            kink = -m / s
            expected = mpmath.quad(lambda z: phi(m + s * z) * mpmath.npdf(z),
                                   [-mpmath.inf, kink, mpmath.inf])
    assert_agree(mean, expected, scale=1, rel=1e-30)


def test_reference_accepts_floats_and_rejects_non_covariances():
    assert abs(kernel_reference("relu", 1.0, 0.0, dps=15) - 1 / (2 * mpmath.pi)) < 1e-14
    with pytest.raises(ValueError, match="c"):
        kernel_reference("relu", 1, 2)
    with pytest.raises(ValueError, match="q"):
        kernel_reference("relu", 0, 0)
    with pytest.raises(ValueError, match="method"):
        kernel_reference("relu", 1, 0, method="monte-carlo")


# --- each closed form against its known form -------------------------------


def test_relu_is_the_papers_arc_cosine_kernel():
    """Eq. (37): K = (q/2) f(rho), f(rho) = (sqrt(1-rho^2) + rho(pi - acos rho))/pi."""
    f = (sympy.sqrt(1 - rho**2) + rho * (sympy.pi - sympy.acos(rho))) / sympy.pi
    kernel = gaussian_kernel("relu", q, c)
    assert sympy.simplify((kernel - q / 2 * f).rewrite(sympy.asin)) == 0
    assert gaussian_kernel("relu", q, q) == q / 2
    assert sympy.simplify(gaussian_kernel("relu", q, 0) - q / (2 * sympy.pi)) == 0


def test_erf_is_williams_arcsine_kernel():
    kernel = gaussian_kernel("erf", q, c)
    assert sympy.simplify(kernel - 2 / sympy.pi * sympy.asin(2 * c / (1 + 2 * q))) == 0


def test_gelu_matches_tsuchida_et_al():
    kernel = gaussian_kernel("gelu", q, c)
    assert sympy.simplify(kernel - published_gelu(q, c)) == 0
    for q_value, c_value in GRID:
        assert_agree(high_precision(kernel.subs({q: q_value, c: c_value})),
                     high_precision(published_gelu(q_value, c_value)), scale=q_value, rel=1e-35)


def test_gelu_diagonal_and_independent_limit():
    """K(q, q) = E gelu(u)^2 and K(q, 0) = (E gelu(u))^2 = q^2 / (2 pi (1 + q))."""
    diagonal = (q / 4 + q * sympy.asin(q / (1 + q)) / (2 * sympy.pi)
                + q**2 / (sympy.pi * (1 + q) * sympy.sqrt(1 + 2 * q)))
    assert sympy.simplify(gaussian_kernel("gelu", q, q) - diagonal) == 0
    assert sympy.simplify(gaussian_kernel("gelu", q, 0) - q**2 / (2 * sympy.pi * (1 + q))) == 0


def test_identity_kernel_is_the_covariance():
    assert gaussian_kernel("identity", q, c) == c


@pytest.mark.parametrize("activation", CLOSED_FORMS)
def test_closed_forms_are_explicit(activation):
    kernel = gaussian_kernel(activation, q, c)
    assert not kernel.has(sympy.Integral, sympy.Derivative, OpaqueKernel)
    assert kernel.free_symbols <= {q, c}


# --- the derivative in c (Price's theorem; Poole et al.'s chi) -------------


@pytest.mark.parametrize("activation", CLOSED_FORMS)
def test_kernel_derivative_is_the_c_derivative(activation):
    derivative = kernel_derivative(activation, q, c)
    assert sympy.simplify(sympy.diff(gaussian_kernel(activation, q, c), c) - derivative) == 0


def test_relu_derivative_is_the_step_kernel():
    """dK/dc = E[H(u) H(v)] = (pi - acos rho)/(2 pi); chi = 1/2 at c = q."""
    derivative = kernel_derivative("relu", q, c)
    expected = (sympy.pi - sympy.acos(rho)) / (2 * sympy.pi)
    assert sympy.simplify((derivative - expected).rewrite(sympy.asin)) == 0
    assert kernel_derivative("relu", q, q) == sympy.Rational(1, 2)


def test_tanh_derivative_is_the_kernel_of_tanh_prime():
    derivative = kernel_derivative("tanh", q, c)
    assert str(derivative) == "tanh_prime_kernel(q, c)"
    h = sympy.Rational(1, 10**8)
    upper = kernel_reference("tanh", 1, sympy.Rational(1, 2) + h, dps=22)
    lower = kernel_reference("tanh", 1, sympy.Rational(1, 2) - h, dps=22)
    value = kernel_derivative("tanh", 1, sympy.Rational(1, 2)).evalf(22)
    assert_agree(value, (upper - lower) / (2 * h), scale=1, rel=1e-14)


# --- tanh: the opaque kernel -----------------------------------------------


def test_tanh_is_an_opaque_function_named_tanh_kernel():
    kernel = gaussian_kernel("tanh", q, c)
    assert kernel == TanhKernel(q, c)
    assert isinstance(kernel, OpaqueKernel)
    assert str(kernel) == "tanh_kernel(q, c)"
    assert opaque_kernel("tanh") is TanhKernel
    assert kernel.is_real


def test_tanh_evalf_matches_the_reference_at_30_digits():
    value = TanhKernel(1, sympy.Rational(3, 10)).evalf(30)
    reference = kernel_reference("tanh", 1, sympy.Rational(3, 10), dps=30)
    assert_agree(value, reference, scale=1, rel=1e-28)
    assert abs(value - sympy.Float("0.110668385547446333280429406552", 30)) < 1e-28


@pytest.mark.parametrize("q_value, c_value", [(1, sympy.Rational(3, 10)), (4, -3)])
def test_tanh_integral_rewrite_agrees_with_scipy(q_value, c_value):
    integral = TanhKernel(q_value, c_value).rewrite(sympy.Integral)
    assert isinstance(integral, sympy.Integral)
    (inner, _, _), (outer, _, _) = integral.limits
    integrand = sympy.lambdify((inner, outer), integral.function, "numpy")
    value, error = integrate.dblquad(integrand, -12, 12, -12, 12, epsabs=1e-13, epsrel=1e-12)
    evalf = TanhKernel(q_value, c_value).evalf(15)
    assert abs(value - float(evalf)) < 1e-10


def test_tanh_reference_is_odd_and_degenerate_limit():
    """K(q, -c) = -K(q, c) for odd phi; at c = q it is E tanh(u)^2 (a 1-D integral)."""
    diagonal = kernel_reference("tanh", 1, 1, dps=30)
    with mpmath.workdps(DIGITS):
        expected = mpmath.quad(lambda z: mpmath.tanh(z) ** 2 * mpmath.npdf(z),
                               [-mpmath.inf, 0, mpmath.inf])
        anti_diagonal = -kernel_reference("tanh", 1, -1, dps=30)
    assert_agree(diagonal, expected, scale=1, rel=1e-28)
    assert_agree(anti_diagonal, expected, scale=1, rel=1e-28)


def test_opaque_kernel_factory_for_a_new_activation():
    x = sympy.Symbol("x", real=True)
    softsign = opaque_kernel("softsign_test", sympy.Lambda(x, x / (1 + sympy.Abs(x))))
    assert softsign.__name__ == "softsign_test_kernel"
    assert opaque_kernel("softsign_test") is softsign
    value = softsign(2, 1).evalf(12)
    numeric = sympy.lambdify(x, x / (1 + sympy.Abs(x)), "numpy")

    def integrand(z2, z1):
        u = np.sqrt(2) * z1
        v = np.sqrt(2) * (z1 / 2 + np.sqrt(0.75) * z2)
        return numeric(u) * numeric(v) * np.exp(-(z1**2 + z2**2) / 2) / (2 * np.pi)

    expected, _ = integrate.dblquad(integrand, -12, 12, -12, 12, epsabs=1e-13)
    assert abs(float(value) - expected) < 1e-9


def test_opaque_kernels_pickle_and_lambdify_by_name():
    expr = TanhKernel(q, c) + kernel_derivative("tanh", q, c)
    assert pickle.loads(pickle.dumps(expr)) == expr
    numeric = sympy.lambdify((q, c), expr, modules=[
        {"tanh_kernel": np.multiply, "tanh_prime_kernel": np.add}, "numpy"])
    assert numeric(2.0, 3.0) == 11.0


# --- every activation: its kernel is E[phi(u) phi(v)] ------------------------

#: (q, c) points of the Monte Carlo check: positive and negative covariance, q on both sides of 1.
MONTE_CARLO_POINTS = ((1.3, 0.5), (0.6, -0.45))
SEEDS, PAIRS = 16, 50_000


def monte_carlo_kernel(phi, q_value, c_value, rng):
    """Per-seed means of phi(u) phi(v) over PAIRS draws of (u, v), Var = q, Cov = c: shape (SEEDS,)."""
    rho_value = c_value / q_value
    z1, z2 = rng.standard_normal((2, SEEDS, PAIRS))
    u = np.sqrt(q_value) * z1
    v = np.sqrt(q_value) * (rho_value * z1 + np.sqrt(1 - rho_value**2) * z2)
    return (phi(u) * phi(v)).mean(axis=1)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_has_a_kernel_that_sampling_confirms(activation):
    """For each name of the one list, gaussian_kernel (closed form, or tanh's opaque kernel
    evaluated by quadrature) is the mean of phi(u) phi(v) over sampled pairs with Cov(u, v) = c:
    the definition of K (eq. 35), with phi the activation's own SymPy definition."""
    x = sympy.Symbol("x", real=True)
    phi = sympy.lambdify(x, activation_function(activation)(x), modules=["scipy", "numpy"])
    rng = np.random.default_rng(ACTIVATIONS.index(activation))
    samples = np.array([monte_carlo_kernel(phi, a, b, rng) for a, b in MONTE_CARLO_POINTS])
    theory = [float(gaussian_kernel(activation, sympy.Float(a), sympy.Float(b)).evalf(15))
              for a, b in MONTE_CARLO_POINTS]
    assert_agrees(theory, samples.mean(axis=1), se=samples.std(axis=1, ddof=1) / np.sqrt(SEEDS), n=SEEDS,
                  what=f"K_{activation}(q, c) at (q, c) = {MONTE_CARLO_POINTS}")


def test_activation_functions_follow_the_conventions():
    """gelu is the exact x Phi(x), relu is max(0, x), erf is math.erf without rescaling."""
    gelu = activation_function("gelu")
    assert sympy.simplify(gelu(2) - 2 * (1 + sympy.erf(sympy.sqrt(2))) / 2) == 0
    assert activation_function("relu")(-3) == 0
    assert activation_function("relu")(3) == 3
    assert activation_function("erf")(1) == sympy.erf(1)


# --- errors, caching -------------------------------------------------------


@pytest.mark.parametrize("function", [
    lambda: gaussian_kernel("swish", q, c),
    lambda: kernel_derivative("swish", q, c),
    lambda: activation_function("swish"),
    lambda: opaque_kernel("swish"),
])
def test_unknown_activation_is_a_value_error_naming_the_parameter(function):
    with pytest.raises(ValueError) as error:
        function()
    message = str(error.value)
    assert "activation" in message and "swish" in message
    assert all(name in message for name in ACTIVATIONS)


def test_derivations_are_cached():
    gaussian_kernel("erf", q, c)
    hits = kernels._price_expansion.cache_info().hits
    assert gaussian_kernel("erf", sympy.Integer(2), sympy.Integer(1)) == 2 * sympy.asin(
        sympy.Rational(2, 5)) / sympy.pi
    assert kernels._price_expansion.cache_info().hits == hits + 1
