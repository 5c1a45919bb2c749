"""Column tables of the finite-T moments (numeric.columns): agree with the 2-D tables, fall back outside."""

import numpy as np
import pytest

import numeric
from numeric import finite_t as ft
from numeric.columns import ColumnMoments, _slope, column_moments

BETAS = np.array([0.01, 0.3, 0.8, 1.2, np.sqrt(2.0), 1.7, 2.5, 4.0, 8.0, 20.0])


def test_slope_stencils_are_exact_for_quartics():
    t = np.linspace(0.0, 1.0, 11)
    f = 3.0 - t + 2.0 * t**2 - 5.0 * t**3 + 0.7 * t**4
    np.testing.assert_allclose(_slope(f, 0.1), -1.0 + 4.0 * t - 15.0 * t**2 + 2.8 * t**3, atol=1e-12)


@pytest.mark.parametrize("T", [2, 512, 10**7])
def test_nodes_sit_at_their_coordinates(T):
    """The Newton inversion u(t) of the column coordinate converges: t(u(t)) = t to rounding."""
    columns = ColumnMoments(T, BETAS)
    u_hi = np.sqrt(1.0 - columns.p_lo)
    t = np.linspace(0.0, 1.0, 257)[:, None]
    np.testing.assert_allclose(columns._t_of_u(columns._u_of_t(t, u_hi)), np.broadcast_to(t, (257, BETAS.size)),
                               rtol=0, atol=1e-13)


def _points(columns, n, rng):
    """Random (beta, p) on the columns, p in each column's covered range [p_lo, 1]."""
    k = rng.integers(0, columns.betas.size, n)
    p_lo = columns.p_lo[k]
    return columns.betas[k], p_lo + (1.0 - p_lo) * rng.random(n) ** 0.5


@pytest.mark.parametrize("T", [64, 4096])
def test_columns_match_the_two_dimensional_tables(T):
    """Interpolation error of the columns < 1e-8 (measured ~2e-9), on top of the tables' < 1e-7."""
    columns = ColumnMoments(T, BETAS)
    assert columns.p_lo[-1] > 0.0 and columns.p_lo[0] == 0.0      # beta = 20 reaches b > B_PAIR_MAX at p = 0
    rng = np.random.default_rng(5)
    beta, p = _points(columns, 20000, rng)
    Y2, Yp = columns.bind(beta)
    q = np.ones_like(p)
    assert np.abs(Y2(beta, q, p) - ft.Y2_table(T).fast(beta, q, p)).max() < 1e-8
    assert np.abs(Yp(beta, q, p) - ft.Yp_table(T).fast(beta, q, p)).max() < 1e-8
    few = slice(0, 12)
    direct = np.array([ft.ipr_pair(b, p=x, T=T) for b, x in zip(beta[few], p[few])])
    assert np.abs(Yp(beta, q, p)[few] - direct).max() < 1e-7


def test_ends_of_a_column():
    """p = 1 (b = 0): uniform attention, 1/T; p = 0 on a column below B_PAIR_MAX: independent rows, Yp = 1/T."""
    T = 256
    columns = ColumnMoments(T, BETAS[:8])
    beta = columns.betas
    Y2, Yp = columns.bind(beta)
    ones = np.ones_like(beta)
    np.testing.assert_allclose(Y2(beta, ones, ones.copy()), 1.0 / T, rtol=1e-9)
    np.testing.assert_allclose(Yp(beta, ones, np.zeros_like(beta)), 1.0 / T, rtol=1e-8)


@pytest.mark.parametrize("case", ["q != 1", "p below the column", "p < 0", "other beta array", "beta off the grid",
                                  "scalar p"])
def test_uncovered_points_fall_back_to_the_tables(case):
    T = 64
    columns = ColumnMoments(T, BETAS)
    beta = np.repeat(BETAS, 3)
    q, p = np.ones_like(beta), np.full(beta.size, 0.5)
    bound = beta
    if case == "q != 1":
        q = np.full(beta.size, 1.3)
    elif case == "p below the column":
        p[-1] = columns.p_lo[-1] / 2                                     # beta = 20 covers p >= p_lo > 0
    elif case == "p < 0":
        p[0] = -0.01
    elif case == "other beta array":
        beta = beta.copy()
    elif case == "scalar p":
        p = 0.5
    else:
        bound = beta = np.repeat(BETAS * 1.01, 3)
    Y2, Yp = columns.bind(bound)
    np.testing.assert_array_equal(Y2(beta, q, p), ft.Y2_table(T).fast(beta, q, p))
    np.testing.assert_array_equal(Yp(beta, q, p), ft.Yp_table(T).fast(beta, q, p))


@pytest.mark.parametrize("extreme", [1e-310, 1e-8, 1e155])
def test_betas_beyond_the_column_range_fall_back(extreme):
    """Regression: a column's constants over/underflowed (NaN nodes, IndexError in the look-up) at extreme beta."""
    T = 8
    betas = np.array([1.0, extreme])
    Y2, Yp = column_moments(T, betas).bind(betas)
    q, p = np.ones(2), np.array([0.3, 0.3])
    np.testing.assert_array_equal(Yp(betas, q, p), ft.Yp_table(T).fast(betas, q, p))
    alpha = numeric.critical_alpha("post-ln", 3, beta=betas, T=T)
    np.testing.assert_allclose(alpha, [numeric.critical_alpha("post-ln", 3, beta=b, T=T) for b in betas], rtol=1e-5)


def test_nan_overlaps_are_not_looked_up_in_the_columns():
    """A NaN p is not 'in range': the call goes to the 2-D tables (no index from a NaN coordinate)."""
    beta = np.repeat(BETAS[:3], 2)
    bound = column_moments(64, beta).bind(beta)[0].__self__
    p = np.full(beta.size, 0.5)
    assert bound._covered(beta, np.ones_like(p), p)
    p[1] = np.nan
    assert not bound._covered(beta, np.ones_like(p), p)


def test_the_pair_call_reuses_the_look_up_only_for_the_same_overlaps():
    T = 64
    beta = np.repeat(BETAS[:8], 4)
    Y2, Yp = column_moments(T, beta).bind(beta)
    q = np.ones_like(beta)
    p1, p2 = np.full(beta.size, 0.2), np.full(beta.size, 0.7)
    Y2(beta, q, p1)
    np.testing.assert_allclose(Yp(beta, q, p2), ft.Yp_table(T).fast(beta, q, p2), atol=1e-8)
    np.testing.assert_allclose(Yp(beta, q, p1), ft.Yp_table(T).fast(beta, q, p1), atol=1e-8)
    assert column_moments(T, beta[::-1]) is column_moments(T, BETAS[:8])    # cached per distinct betas


@pytest.mark.parametrize("arch", ["post-ln", "pre-ln", "gain-post-ln"])
def test_finite_T_diagram_agrees_with_the_profiles(arch):
    """The diagram (column tables) against cosine_profile (2-D tables) point by point; its boundary against
    critical_alpha one beta at a time (2-D tables, scalar beta). Measured after 20 blocks: rho within 3.5e-10
    (the per-step table difference, < 1e-8, does not accumulate here); tolerance 1e-8."""
    betas, alphas = np.linspace(0.2, 3.0, 8), np.linspace(0.0, 2.0, 5)
    diagram = numeric.trainability_diagram(arch, 20, betas=betas, alphas=alphas, T=128)
    B, A = np.meshgrid(betas, np.maximum(alphas, 1e-12))
    rho = numeric.cosine_profile(arch, 20, beta=B, alpha_sa=A, T=128)[-1]
    np.testing.assert_allclose(diagram.rho, rho, atol=1e-8)
    one_by_one = [numeric.critical_alpha(arch, 20, beta=b, T=128) for b in betas]
    np.testing.assert_allclose(diagram.critical_alpha, one_by_one, rtol=1e-5)
