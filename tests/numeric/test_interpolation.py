"""numeric.interpolation: the Chebyshev resampling and Hermite cells behind the finite-T tables are exact
where they must be (polynomials of their degree) and look up the right cell."""

import numpy as np
import pytest

from numeric import interpolation as ip


def test_lobatto_points_are_the_extrema_of_the_chebyshev_polynomial():
    x = ip.lobatto(9, 0.0, 1.0)
    assert x[0] == 0.0 and x[-1] == 1.0 and np.all(np.diff(x) > 0)
    np.testing.assert_allclose(np.abs(np.polynomial.chebyshev.chebval(2 * x - 1, [0] * 8 + [1])), 1.0, rtol=1e-12)


def test_chebyshev_resampling_reproduces_polynomials_and_their_slopes():
    f = np.polynomial.Polynomial([0.3, -1.0, 2.0, 0.5, -0.7, 0.1])
    nodes = ip.lobatto(9, 0.0, 1.0)
    fine = np.linspace(0.0, 1.0, 33)
    values = np.stack([f(nodes), 2.0 * f(nodes)], axis=-1)          # two columns at once
    value, slope = ip.cheb_resample(values, fine)
    np.testing.assert_allclose(value, np.stack([f(fine), 2.0 * f(fine)], -1), atol=1e-13)
    np.testing.assert_allclose(slope, np.stack([f.deriv()(fine), 2.0 * f.deriv()(fine)], -1), atol=1e-11)


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_cubic_cells_are_exact_for_cubics(scale):
    f = np.polynomial.Polynomial([1.0, -2.0, 0.5, 3.0])
    n = 17
    grid = np.linspace(0.0, 1.0, n)
    cells = ip.cubic_cells(f(grid), f.deriv()(grid), 1.0 / (n - 1))
    x = np.random.default_rng(1).uniform(0.0, 1.0 / scale, 200)
    i, s = ip.cell_inplace(x.copy(), n, scale)
    assert np.all((i >= 0) & (i <= n - 2)) and np.all((s >= 0) & (s <= 1))
    np.testing.assert_allclose(grid[i] + s / (n - 1), scale * x, atol=1e-14)  # the point's cell and place
    np.testing.assert_allclose(ip.horner_inplace(cells[i].T, s), f(scale * x), atol=1e-12)


def test_bicubic_cells_are_exact_for_bicubics():
    f = lambda x, w: (1 + x - 2 * x**3) * (0.5 - w + w**2 + 0.3 * w**3)
    fx = lambda x, w: (1 - 6 * x**2) * (0.5 - w + w**2 + 0.3 * w**3)
    fw = lambda x, w: (1 + x - 2 * x**3) * (-1 + 2 * w + 0.9 * w**2)
    fxw = lambda x, w: (1 - 6 * x**2) * (-1 + 2 * w + 0.9 * w**2)
    nx, nw = 9, 5
    X, W = np.meshgrid(np.linspace(0, 1, nx), np.linspace(0, 1, nw), indexing="ij")
    cells = ip.bicubic_cells(f(X, W), fx(X, W), fw(X, W), fxw(X, W), 1.0 / (nx - 1), 1.0 / (nw - 1))
    rng = np.random.default_rng(2)
    x, w = rng.uniform(0, 1, 100), rng.uniform(0, 1, 100)
    i, s = ip.cell_inplace(x.copy(), nx)
    j, v = ip.cell_inplace(w.copy(), nw)
    gathered = cells.reshape(-1, 16)[i * (nw - 1) + j].T
    np.testing.assert_allclose(ip.bicubic(gathered, s, v), f(x, w), atol=1e-12)


def test_the_last_point_lies_in_the_last_cell():
    i, s = ip.cell_inplace(np.array([0.0, 1.0, 1.5]), 5)
    np.testing.assert_array_equal(i, [0, 3, 3])
    np.testing.assert_array_equal(s, [0.0, 1.0, 1.0])
