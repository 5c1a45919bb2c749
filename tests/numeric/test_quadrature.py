"""Gauss-Hermite kernels (numeric.quadrature) against mpmath 2-D Gaussian integrals."""

import numpy as np
import pytest

from derive.kernels import kernel_reference
from numeric.quadrature import gaussian_kernel
from numeric.safe import KERNELS

#: (q, c, the documented absolute error bound of the module docstring for that q)
POINTS = [(1.0, 0.0, 1e-10), (1.0, 0.3, 1e-10), (1.0, -0.7, 1e-10), (0.01, 0.005, 1e-10), (0.5, -0.5, 1e-10),
          (2.0, 2.0, 1e-9), (4.0, 3.99, 1e-9), (6.25, 5.0, 1e-6), (12.0, 11.9, 1e-6), (25.0, 24.9, 1e-4),
          (100.0, 50.0, 3e-4)]


@pytest.mark.parametrize("q, c, bound", POINTS)
def test_tanh_kernel_matches_mpmath(q, c, bound):
    """The accuracy documented in numeric.quadrature, against a 20-digit mpmath 2-D integral."""
    want = float(kernel_reference("tanh", q, c, dps=20))
    assert gaussian_kernel("tanh")(q, c) == pytest.approx(want, abs=bound)


def test_node_ladder():
    from numeric.quadrature import nodes_for
    assert nodes_for(1.0) < nodes_for(3.0) < nodes_for(50.0) <= 350


@pytest.mark.parametrize("name", ["erf", "gelu"])
def test_smooth_closed_forms_agree_with_quadrature(name):
    """A cross-check of the quadrature on activations whose kernels are known in closed form."""
    q, c = np.array([0.3, 1.0, 4.0]), np.array([0.1, -0.5, 3.9])
    want = [float(kernel_reference(name, a, b, dps=20)) for a, b in zip(q, c)]
    np.testing.assert_allclose(gaussian_kernel(name)(q, c), want, rtol=0, atol=1e-10)


def test_vectorised_and_registered():
    q = np.full((3, 4), 1.5)
    c = np.linspace(-1.5, 1.5, 12).reshape(3, 4)
    out = KERNELS["tanh"](q, c)
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out[1, 2], gaussian_kernel("tanh")(1.5, c[1, 2]), rtol=1e-14)
    assert np.all(np.diff(out.ravel()) > 0)  # increasing in the covariance c (Price: dK/dc = E tanh'tanh' > 0)


def test_diagonal_is_the_second_moment():
    q = 2.0
    want = float(kernel_reference("tanh", q, q, dps=20))
    assert gaussian_kernel("tanh")(q, q) == pytest.approx(want, abs=1e-9)
