"""Gauss-Hermite kernels (numeric.quadrature) and the NumPy forms of the activations they integrate,
against mpmath (tests/reference.py) and derive's SymPy definitions."""

import mpmath
import numpy as np
import pytest
import sympy

from derive.kernels import activation_function
from derive.layers import Activation
from derive.parameters import ACTIVATIONS
from numeric._generated import ACTIVATION_FUNCTIONS
from numeric.quadrature import _nodes, gaussian_kernel, nodes_for
from numeric.safe import KERNELS
from tests.reference import kernel_reference

#: (q, c, the documented absolute error bound of the module docstring for that q)
POINTS = [(1.0, 0.0, 1e-10), (1.0, 0.3, 1e-10), (1.0, -0.7, 1e-10), (0.01, 0.005, 1e-10), (0.5, -0.5, 1e-10),
          (2.0, 2.0, 1e-9), (4.0, 3.99, 1e-9), (6.25, 5.0, 1e-6), (12.0, 11.9, 1e-6), (25.0, 24.9, 1e-4),
          (100.0, 50.0, 3e-4)]

#: Gauss-Hermite error bound at q <= 4 per activation: the documented 1e-9 for a smooth phi; relu's kink
#: limits a polynomial rule to algebraic convergence (measured ~2e-4 at 96 nodes). numeric never integrates
#: relu this way (its kernel has a closed form); the bound still separates relu from any other function.
KERNEL_BOUNDS = {"relu": 5e-4}
SMOOTH_BOUND = 1e-9


@pytest.mark.parametrize("q, c, bound", POINTS)
def test_tanh_kernel_matches_mpmath(q, c, bound):
    """The accuracy documented in numeric.quadrature, against a 20-digit mpmath 2-D integral."""
    want = float(kernel_reference("tanh", q, c, dps=20))
    assert gaussian_kernel("tanh")(q, c) == pytest.approx(want, abs=bound)


def test_the_largest_rule_has_finite_nodes():
    """The ladder stops below the node count where NumPy's Gauss-Hermite weights overflow."""
    z, w = _nodes(nodes_for(np.inf))
    assert np.all(np.isfinite(z)) and np.all(np.isfinite(w)) and np.all(w >= 0)
    assert w.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_numpy_form_is_derives_definition(name):
    """numeric's generated NumPy phi and derive.layers.Activation.numpy_function equal the SymPy
    definition (evaluated by mpmath) for every activation: one definition, two compiled forms."""
    x = sympy.Symbol("x", real=True)
    exact = sympy.lambdify(x, activation_function(name)(x), "mpmath")
    points = np.linspace(-7.0, 7.0, 57)
    with mpmath.workdps(30):
        want = np.array([float(exact(mpmath.mpf(float(z)))) for z in points])
    np.testing.assert_allclose(ACTIVATION_FUNCTIONS[name](points), want, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(Activation(name).numpy_function()(points), want, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_every_activation_kernel_agrees_with_mpmath(name):
    """Gauss-Hermite on the NumPy form against the mpmath reference on derive's definition."""
    q, c = np.array([0.3, 1.0, 4.0, 1.0]), np.array([0.1, -0.5, 3.9, 1.0])
    want = [float(kernel_reference(name, a, b, dps=20)) for a, b in zip(q, c)]
    np.testing.assert_allclose(gaussian_kernel(name)(q, c), want, rtol=0, atol=KERNEL_BOUNDS.get(name, SMOOTH_BOUND))


def test_unknown_activation_is_a_value_error():
    with pytest.raises(ValueError, match="activation.*swish"):
        gaussian_kernel("swish")


def test_vectorised_and_registered():
    q = np.full((3, 4), 1.5)
    c = np.linspace(-1.5, 1.5, 12).reshape(3, 4)
    out = KERNELS["tanh"](q, c)
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out[1, 2], gaussian_kernel("tanh")(1.5, c[1, 2]), rtol=1e-14)
    assert np.all(np.diff(out.ravel()) > 0)  # increasing in the covariance c (Price: dK/dc = E tanh'tanh' > 0)


@pytest.mark.parametrize("name", ["gelu_new", "silu", "tanh"])
def test_large_calls_are_served_from_tiled_tables_equal_to_the_rule(name, monkeypatch):
    """A call of > BAND_POINTS points whose variances span several tiles (a batch of position-resolved points with
    differently shrunk streams) is served from the tiles' tables: the rule integrates only the tables' nodes and
    the probes, not the call's points; and the result equals the rule integrating every point."""
    from numeric import quadrature

    rng = np.random.default_rng(3)
    q = rng.uniform(0.04, 0.07, 6000)                      # ~6 tiles of 10 %
    c = q * rng.uniform(-1.0, 1.0, q.size)
    integrated, rule = [], quadrature._kernel_chunk
    monkeypatch.setattr(quadrature, "_kernel_chunk", lambda phi, z, w, q, c: integrated.append(q.size) or
                        rule(phi, z, w, q, c))
    quadrature._band_table.cache_clear()
    served = gaussian_kernel(name)(q, c)
    tiles = np.unique(np.floor(np.log(q) / quadrature.BAND_LOG_WIDTH)).size
    assert tiles * np.prod(quadrature.BAND_NODES) < sum(integrated) <= (tiles * np.prod(quadrature.BAND_NODES)
                                                                        + quadrature.BAND_CHECKS + tiles)
    monkeypatch.undo()
    direct = gaussian_kernel(name, nodes=nodes_for(q.max()))(q, c)        # a fixed rule skips the tables
    np.testing.assert_allclose(served, direct, rtol=0, atol=1e-10)
