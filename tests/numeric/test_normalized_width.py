"""numeric.normalized_width: encoders at finite width with tokens of fixed norm (issue 19).

Every test reads the shipped normalized causal table (d, d_head) = (64, 32), n_max = 256 (128 < T <= 256).
"""

import numpy as np
import pytest

import numeric
from numeric import _generated_width as gen
from numeric.finite_width import common_direction, row_effective
from numeric.normalized_width import normalized_moments

D, D_HEAD = 64, 32


@pytest.mark.parametrize("T,beta,p", [(256, 1.0, 0.0), (200, 2.0, 0.3)])
def test_one_layer_is_the_direct_normalized_layer(T, beta, p):
    """The effective moments through eq. 23 give numeric.attention_overlaps(inputs="normalized") (the direct
    quadrature: steps 5-6 of derive.finite_width) within the tables' error (measured: q_out 3e-5, p_out 3e-4 at
    beta = 2, against a finite-width change of 0.05 in q_out); the Gaussian-token overlaps are rejected, and at
    p > 0 so are those without the common direction's share."""
    q = 1.0
    moments = normalized_moments(T, D, D_HEAD)
    beta_, p_ = np.array(beta), np.array(p)
    got = np.array(gen.attention_output(q, p, 1.0, float(T), moments.y2(beta_, q, p_), moments.yp(beta_, q, p_)),
                   dtype=float)
    direct = np.array(numeric.attention_overlaps(beta, q=q, p=p, T=T, d=D, d_head=D_HEAD, inputs="normalized"))
    tol = np.array([1e-4, 1e-3])
    assert np.all(np.abs(got - direct) <= tol), (got, direct)
    gaussian = np.array(numeric.attention_overlaps(beta, q=q, p=p, T=T, d=D, d_head=D_HEAD))
    assert np.any(np.abs(gaussian - direct) > 10 * tol)
    if p > 0:
        b2 = beta ** 2 * np.log(T) * q * (q - p)
        (dq, _), dp = common_direction(b2, p / q, D, (T, T), float(moments.yp(beta_, q, p_)))
        assert abs(dp) * q > 10 * tol[1] and abs(dq) * q > 10 * tol[0]


@pytest.mark.parametrize("p,rel", [(0.9, 0.03), (0.95, 0.05)])
def test_one_layer_near_rho_one_keeps_its_small_spread(p, rel):
    """Near rho = 1 an encoder layer's 1 - rho_out (1.6e-4 at p = 0.9, 1.8e-5 at 0.95; beta = 1, T = 256) is the
    small difference of a row's and a pair's moments: from the effective moments it is within ``rel`` of the
    direct layer's (measured 0.6 % and 2.4 %). With the tables of the increments themselves it was 67 % and
    140 % high (the pair table 28-71 % off at small b), and with Yp for Yp_eff in the common direction's pair
    term 8 % and 18 % high; the infinite-width layer is off by more than 10 ``rel``."""
    T, beta, q = 256, np.array(1.0), 1.0
    moments = normalized_moments(T, D, D_HEAD)
    q_out, p_out = gen.attention_output(q, p, 1.0, float(T), moments.y2(beta, q, np.array(p)),
                                        moments.yp(beta, q, np.array(p)))
    direct = numeric.attention_overlaps(1.0, q=q, p=p, T=T, d=D, d_head=D_HEAD, inputs="normalized")
    spread = 1.0 - direct[1] / direct[0]
    assert 1.0 - float(p_out) / float(q_out) == pytest.approx(spread, rel=rel)
    infinite = numeric.attention_overlaps(1.0, q=q, p=p, T=T)
    assert abs(1.0 - infinite[1] / infinite[0] - spread) > 10 * rel * spread


def test_entropy_collapse_reads_the_normalized_ipr():
    """The IPR entropy collapse reads (numeric.maps.ipr_function at (d, d_head, "normalized")) is the normalized
    row's E_xi Y2 (numeric.finite_width.row_effective) at the keys' cosine p/q, not the Gaussian tokens'."""
    from numeric.maps import ipr_function
    T, beta, q, p = 256, 1.6, 1.0, 0.4
    b2 = beta ** 2 * np.log(T) * q * (q - p)
    expected = row_effective(b2, T, D, D_HEAD, inputs="normalized", rho=p / q)[0]
    got = float(ipr_function(T, (D, D_HEAD, "normalized"))(np.array(beta), q, np.array(p), T))
    assert got == pytest.approx(expected, rel=2e-3)
    gaussian = float(ipr_function(T, (D, D_HEAD))(np.array(beta), q, np.array(p), T))
    assert abs(gaussian - expected) > 10 * 2e-3 * expected


def test_profile_and_diagram_read_the_normalized_moments():
    """A stack of bare attention layers: cosine_profile(d=, inputs="normalized") iterates the normalized layer's
    (q, p) map; trainability_diagram(inputs="normalized") at each grid point is that profile's final rho (within
    1e-7: the diagram reads the moments from per-beta columns, measured 5e-9 apart) and its boundary is
    critical_alpha(inputs="normalized") (the inputs reach every entry point), which differs from the
    Gaussian-token boundary."""
    from derive.layers import SelfAttention, Sequence
    T, beta = 256, 1.5
    moments = normalized_moments(T, D, D_HEAD)
    profile = numeric.cosine_profile(Sequence(SelfAttention()), 2, beta=beta, T=T, rho0=0.2, d=D, d_head=D_HEAD,
                                     inputs="normalized")
    q, p = 1.0, 0.2
    for block in (1, 2):
        b, q_, p_ = np.array(beta), np.array(q), np.array(p)
        q, p = (float(x) for x in gen.attention_output(q_, p_, 1.0, float(T), moments.y2(b, q_, p_),
                                                         moments.yp(b, q_, p_)))
        assert profile[block] == pytest.approx(p / q, rel=1e-9)
    kw = dict(T=T, d=D, d_head=D_HEAD, inputs="normalized", sigma_v2=4.0)
    betas, alphas = np.array([0.8, 2.0]), np.array([0.1, 0.6])
    diagram = numeric.trainability_diagram("pre-ln", 3, betas=betas, alphas=alphas, **kw)
    for i, alpha in enumerate(alphas):
        for j, b in enumerate(betas):
            rho = numeric.cosine_profile("pre-ln", 3, beta=b, alpha_sa=alpha, **kw)[-1]
            assert diagram.rho[i, j] == pytest.approx(rho, rel=1e-7)
    boundary = numeric.critical_alpha("pre-ln", 3, beta=betas, **kw)
    np.testing.assert_allclose(diagram.critical_alpha, boundary, rtol=1e-5)
    assert diagram.params["inputs"] == "normalized"
    gaussian = numeric.critical_alpha("pre-ln", 3, beta=betas, T=T, d=D, d_head=D_HEAD, sigma_v2=4.0)
    assert boundary[0] > 0 and abs(boundary[0] - gaussian[0]) > 1e-3 * gaussian[0]      # at beta = 2: alpha_c = 0


def test_columns_hold_the_normalized_moments():
    """The per-beta columns the kernels read (numeric.columns at (d, d_head, "normalized"), 128 cells) interpolate
    the normalized moments within 1e-6 (measured 1.6e-7) over each column's covered p, where the Gaussian tokens'
    differ by more than 1e-3; on a column that crosses b = B_MAX = 12 (beta = 20), where the tables' frozen-phase
    end puts a kink in b, within 1e-4 (measured 4.6e-5, the order of the tables' own error against the direct
    quadrature). A call they do not cover (p below a column's p_lo, q != 1) reads the moments themselves."""
    from numeric.columns import ColumnMoments
    T, betas = 256, np.array([0.05, 0.7, 1.4, 2.5, 4.0, 20.0])
    columns = ColumnMoments(T, betas, (D, D_HEAD, "normalized"))
    moments = normalized_moments(T, D, D_HEAD)
    assert columns.p_lo[-1] > 0.2 and np.all(columns.p_lo[:-1] == 0.0)    # beta = 20: b > B_PAIR_MAX at p = 0
    rng = np.random.default_rng(3)
    k = rng.integers(0, betas.size, 5000)
    beta, p = betas[k], columns.p_lo[k] + (1.0 - columns.p_lo[k]) * rng.random(5000)
    q = np.ones_like(p)
    Y2, Yp = columns.bind(beta)
    error = np.maximum(np.abs(Y2(beta, q, p) - moments.y2(beta, q, p)), np.abs(Yp(beta, q, p) - moments.yp(beta, q, p)))
    kink = beta == 20.0
    assert error[~kink].max() < 1e-6 and error[kink].max() < 1e-4
    gaussian = ColumnMoments(T, betas, (D, D_HEAD)).bind(beta)[0]
    assert np.abs(gaussian(beta, q, p) - moments.y2(beta, q, p)).max() > 1e-3
    for q_, p_ in ((q, np.zeros_like(p)), (np.full_like(p, 1.3), p)):
        Y2, Yp = columns.bind(beta)
        np.testing.assert_array_equal(Y2(beta, q_, p_), moments.y2(beta, q_, p_))
        np.testing.assert_array_equal(Yp(beta, q_, p_), moments.yp(beta, q_, p_))


def test_normalized_columns_have_their_own_cell_count_to_both_ends():
    """Normalized columns have NORMALIZED_CELLS cells (the kernels read that count from their header), and both
    ends of a column are read from its cells: p = 0 (the last cell's far edge, t = 1) and p = 1 (b = 0) give
    the moments themselves (1e-6), through the NumPy look-up and the fused kernel's (a one-layer pre-LN block
    at alpha_sa -> 0 reads Y2 and Yp at the input overlap rho0)."""
    from numeric import _jit as J
    from numeric import fused
    from numeric.columns import CELLS, NORMALIZED_CELLS, ColumnMoments
    T, betas = 256, np.array([0.7, 1.4, 2.5])
    columns = ColumnMoments(T, betas, (D, D_HEAD, "normalized"))
    assert columns.cells == NORMALIZED_CELLS < CELLS == ColumnMoments(T, betas, (D, D_HEAD)).cells
    assert columns._cells.shape[0] == columns.cells * betas.size
    assert fused._column_constants(columns)[J.N_CELLS] == columns.cells
    moments = normalized_moments(T, D, D_HEAD)
    Y2, Yp = columns.bind(betas)
    for p in (np.zeros(3), np.ones(3)):
        assert np.all(p >= columns.p_lo)
        np.testing.assert_allclose(Y2(betas, np.ones(3), p), moments.y2(betas, 1.0, p), rtol=0, atol=1e-6)
        np.testing.assert_allclose(Yp(betas, np.ones(3), p), moments.yp(betas, 1.0, p), rtol=0, atol=1e-6)
    kw = {"betas": betas, "alphas": np.array([0.0]), "T": T, "d": D, "d_head": D_HEAD, "inputs": "normalized"}
    for rho0 in (0.0, 1.0):
        runs = [numeric.trainability_diagram("pre-ln", 1, rho0=rho0, backend=backend, **kw).rho
                for backend in ("fused", "numpy")]
        np.testing.assert_allclose(runs[0], runs[1], rtol=0, atol=1e-9)


@pytest.mark.parametrize("arch", ["pre-ln", "post-ln"])
def test_fused_normalized_diagram_is_the_numpy_one(arch):
    """The fused kernels read normalized tokens' moments from the columns and hand a point they do not cover
    (beta = 20 below its column's p_lo: no 2-D table holds these moments) to the NumPy path, whose call then
    falls back as a whole to the moments themselves (a call the columns do not cover): rho within the columns'
    interpolation error (1e-6; measured 1e-7), the same phases (all three present) and boundary. With criterion
    "any" every point of the diagram runs the NumPy path; its boundary's root finder still runs the kernels."""
    betas, alphas = np.array([0.3, 1.0, 1.6, 2.5, 5.0, 20.0]), np.array([0.05, 0.3, 1.0, 3.0])
    kw = {"betas": betas, "alphas": alphas, "T": 256, "d": D, "d_head": D_HEAD, "inputs": "normalized",
          "sigma_v2": 4.0}
    for criterion in ("first", "any"):
        runs = {backend: numeric.trainability_diagram(arch, 6, backend=backend, criterion=criterion, **kw)
                for backend in ("fused", "numpy")}
        np.testing.assert_allclose(runs["fused"].rho, runs["numpy"].rho, rtol=0, atol=1e-6)
        assert np.array_equal(runs["fused"].phase, runs["numpy"].phase)
        assert set(np.unique(runs["numpy"].phase)) == {0, 1, 2}
        np.testing.assert_allclose(runs["fused"].critical_alpha, runs["numpy"].critical_alpha, rtol=1e-5)
