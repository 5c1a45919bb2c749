"""numeric.safe.common_norm: the equal-variance kernel at the geometric mean of two tokens' unequal variances."""

import math

import numpy as np
import pytest

from numeric._generated import ACTIVATION_FUNCTIONS
from numeric.quadrature import _nodes
from numeric.safe import KERNELS, NORM_SPREAD, NORM_SPREAD_ERROR_PER_DELTA2, common_norm

SMOOTH = ("gelu", "gelu_new", "silu", "tanh", "erf")
VARIANCES = (0.05, 0.3, 1.0, 3.0, 10.0)
CORRELATIONS = (-0.5, 0.0, 0.3, 0.7, 0.95, 0.999)


def unequal_kernel(phi, a, b, rho, nodes=300):
    """E[phi(u) phi(v)], Var u = a, Var v = b, corr rho: a 2-D Gauss-Hermite integral, independent of common_norm."""
    z, w = _nodes(nodes)
    u = phi(math.sqrt(a) * z)[:, None]
    v = phi(math.sqrt(b) * (rho * z[:, None] + math.sqrt(1.0 - rho**2) * z[None, :]))
    return float(w @ (u * v) @ w)


def worst_cosine_error(name, spread):
    """Largest error, as a cosine, of K(sqrt(ab), c) against the unequal-variance kernel at b = a (1 + spread)."""
    phi, worst = ACTIVATION_FUNCTIONS[name], 0.0
    for a in VARIANCES:
        b = a * (1.0 + spread * (1 - 1e-9))          # at the limit, not past it by rounding
        d = np.array([a, b])
        g = common_norm(d, name)[0, 1]
        scale = math.sqrt(unequal_kernel(phi, a, a, 1.0) * unequal_kernel(phi, b, b, 1.0))
        for rho in CORRELATIONS:
            c = rho * math.sqrt(a * b)
            worst = max(worst, abs(unequal_kernel(phi, a, b, rho) - float(KERNELS[name](g, c))) / scale)
    return worst


@pytest.mark.parametrize("name", SMOOTH)
def test_geometric_mean_error_is_second_order_and_within_the_declared_bound(name):
    """At NORM_SPREAD the error is below NORM_SPREAD_ERROR_PER_DELTA2 delta^2 (delta = ln(1 + spread)/2), and it
    falls as delta^2: halving the spread divides it by ~4 (a first-order error, e.g. from taking one token's
    variance instead of the geometric mean, would divide it by ~2)."""
    delta2 = (math.log1p(NORM_SPREAD) / 2) ** 2
    at_limit = worst_cosine_error(name, NORM_SPREAD)
    assert at_limit <= NORM_SPREAD_ERROR_PER_DELTA2 * delta2
    half = worst_cosine_error(name, NORM_SPREAD / 2)
    assert 3.5 < at_limit / half < 4.5


def test_spread_beyond_the_limit_is_refused_by_name():
    common_norm(np.array([[1.0, 1.0 + 0.99 * NORM_SPREAD]]), "Activation(gelu)")
    with pytest.raises(ValueError, match=r"Activation\(gelu\).*equal norm.*10 %"):
        common_norm(np.array([[1.0, 1.0 + 1.01 * NORM_SPREAD]]), "Activation(gelu)")
