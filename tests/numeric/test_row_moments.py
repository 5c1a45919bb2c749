"""numeric.row_moments: the shipped interpolants of Y2(b, n) and Yp(b, rho, n) against the quadratures."""

import numpy as np
import pytest

from numeric import laplace, row_moments
from numeric.interpolation import lobatto
from numeric.smoothing import EXACT, TABLE


@pytest.fixture(scope="module")
def moments():
    return row_moments.RowMoments()


def test_y2_between_nodes_matches_the_quadrature(moments):
    """Random (b, n) off the nodes, n up to 10^5: relative error below 1e-7 (measured: ~3e-9)."""
    rng = np.random.default_rng(11)
    n = np.unique(np.exp(rng.uniform(np.log(2), np.log(1e5), 25)).astype(int))
    b = rng.uniform(0.02, 12.0, n.size)
    exact = np.array([laplace.row_moments(bb, int(nn), acc=EXACT)[2.0] for bb, nn in zip(b, n)])
    np.testing.assert_allclose(moments.y2(b, n), exact, rtol=1e-7)


def test_pair_term_between_nodes_matches_the_quadrature(moments):
    """Random (b, rho, n) off the nodes: relative error below 5e-6 (measured: ~6e-7)."""
    rng = np.random.default_rng(12)
    n = np.exp(rng.uniform(np.log(2), np.log(3e4), 12)).astype(int)
    b, rho = rng.uniform(0.05, 9.0, n.size), rng.uniform(0.0, 0.98, n.size)
    exact = np.array([laplace.pair_moment(bb, rr, int(nn), EXACT) for bb, rr, nn in zip(b, rho, n)])
    rows = moments.pair(b, n)
    np.testing.assert_allclose(rows.at(np.arange(n.size), rho), exact, rtol=5e-6)


def test_limits(moments):
    """One key: all weight on it. b = 0: uniform rows, Y2 = Yp = 1/n. rho = 1: the two rows coincide, Yp = Y2."""
    assert moments.y2(3.0, 1) == 1.0
    assert moments.pair(np.array([3.0]), np.array([1])).at(np.array([0]), np.array([0.3]))[0] == 1.0
    n = np.array([2, 17, 1000])
    np.testing.assert_allclose(moments.y2(np.zeros(3), n), 1.0 / n, rtol=1e-9)
    rows = moments.pair(np.array([0.0, 2.0, 2.0]), n)
    np.testing.assert_allclose(rows.at(np.arange(3), np.array([0.5, 0.0, 0.0])), 1.0 / n, rtol=1e-9)
    np.testing.assert_allclose(rows.at(np.arange(3)[1:], np.array([1.0, 1.0])), moments.y2(2.0, n[1:]), rtol=2e-8)


def test_shipped_nodes_are_the_quadratures_of_this_grid():
    """Three node values recomputed now equal the shipped ones (a changed quadrature or grid shows here)."""
    shipped = row_moments._shipped()
    ns = row_moments.node_n()
    for i, j in ((3, 10), (17, 25), (30, 5)):
        n = float(ns[i])
        b = float(row_moments._b(lobatto(row_moments.NODES["xi_y2"], 0.0, 1.0)[j], n))
        assert shipped["y2"][i, j] == pytest.approx(laplace.row_moments(b, n, acc=TABLE)[2.0], rel=1e-12)
        b = float(row_moments._b(lobatto(row_moments.NODES["xi_yp"], 0.0, float(row_moments._xi_max(n)))[j], n))
        w = lobatto(row_moments.NODES["w"], 0.0, 1.0)
        row = row_moments._pair_row(b, n, w, laplace.pair_moment, TABLE)
        np.testing.assert_allclose(shipped["yp"][i, j], row, rtol=1e-12)


def test_lagrange_basis_is_exact_on_polynomials():
    x = np.linspace(0.0, 1.0, 13)
    nodes = lobatto(9, 0.0, 1.0)
    poly = lambda z: 3 * z**8 - z**5 + 0.5 * z - 2
    np.testing.assert_allclose(row_moments.lagrange(x, 9) @ poly(nodes), poly(x), atol=1e-12)


def test_per_row_tables_give_the_direct_moments(moments):
    """The causal state's route (lambda contracted once per row's key count, then a batch of points) gives the
    moments of the direct route, row by row: a row misaligned with its table would show here."""
    rng = np.random.default_rng(13)
    n = np.array([1.0, 2.0, 7.0, 40.0, 300.0])
    b = rng.uniform(0.0, 6.0, (4, n.size))
    direct = moments.y2(b, np.broadcast_to(n, b.shape))
    np.testing.assert_allclose(moments.y2(b, n, moments.y2_table(n)), direct, rtol=1e-13)
    rho = rng.uniform(0.0, 1.0, b.size)
    batched = moments.pair_rows(b, n, moments.pair_table(n)).at(np.arange(b.size), rho)
    single = moments.pair(b.ravel(), np.tile(n, 4)).at(np.arange(b.size), rho)
    np.testing.assert_allclose(batched, single, rtol=1e-13)
    assert np.all(batched[np.tile(n, 4) == 1.0] == 1.0) and np.ptp(batched) > 0.1
