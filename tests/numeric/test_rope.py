"""numeric.rope: RoPE's correlation, pair means and the tree closure's exactness where it must be exact."""

import math

import numpy as np
import pytest
import sympy

from derive import rope as derived
from numeric import rope
from numeric.row_moments import RowMoments


def test_correlation_is_derives_expression():
    head_dim, theta = 16, 1.0e4
    expr = derived.correlation().subs({derived.head_dim: head_dim, derived.theta_base: theta}).doit()
    c = sympy.lambdify((derived.D,), expr)
    D = np.array([0, 1, 7, 100, 1234])
    np.testing.assert_allclose(rope.correlation(D, head_dim, theta), [float(c(int(k))) for k in D], rtol=1e-12)


def test_pair_mean_is_the_mean_over_ordered_pairs():
    n, head_dim, theta = 50, 8, 500.0
    c = rope.correlation(np.arange(n)[:, None] - np.arange(n)[None, :], head_dim, theta)
    assert math.isclose(rope.pair_mean(n, head_dim, theta), (c.sum() - n) / (n * (n - 1)), rel_tol=1e-12)


@pytest.mark.parametrize("n", [2, 9, 40])
def test_neighbour_means_are_the_mean_over_each_keys_nearest_keys(n):
    """S(m), the closed form over left and right runs of each key's neighbours, is the brute-force mean over
    keys s of c(D) summed over the m smallest distances D = |s - r| (r != s), divided by m, at every count m."""
    head_dim, theta = 8, 50.0
    c = rope.correlation(np.arange(n), head_dim, theta)
    distances = [np.sort(np.abs(s - np.delete(np.arange(n), s))) for s in range(n)]
    brute = [np.mean([c[d[:m]].sum() for d in distances]) / m for m in range(1, n)]
    np.testing.assert_allclose(rope.neighbour_means(n, head_dim, theta, tuple(range(1, n))), brute, rtol=1e-12,
                               atol=1e-15)


def test_one_level_tree_is_the_exchangeable_row():
    """A tree with only the per-key level (no rotated part) is an exchangeable row: its IPR is Y2(b, n)."""
    n, b = 256, np.array([0.3, 1.0, 2.0, 3.5])
    var = np.stack([b**2, np.zeros_like(b)], axis=1)
    r = np.full((b.size, 1), float(n))
    np.testing.assert_allclose(rope.tree_ipr(var, r), RowMoments().y2(b, n), rtol=2e-4)


def test_rope_ipr_lies_between_the_exchangeable_rows():
    """With RoPE the row condenses more than the exchangeable row of overlap p, less than that of overlap 0."""
    T, beta = 256, np.array([0.8, 1.5, 2.2])
    y2 = RowMoments().y2
    with_rope = rope.ipr(beta, 1.0, 0.5, T, 1.0e4, 64)
    assert np.all(with_rope > y2(beta * math.sqrt(math.log(T) * 0.5), T))
    assert np.all(with_rope < y2(beta * math.sqrt(math.log(T)), T))


@pytest.mark.parametrize("theta, head_dim", [(1.0, 8), (float("nan"), 8), (1e4, 7), (1e4, 0), (1e4, True)])
def test_bad_rope_parameters_are_refused(theta, head_dim):
    with pytest.raises(ValueError, match="rope"):
        rope.check_rope(theta, head_dim)
