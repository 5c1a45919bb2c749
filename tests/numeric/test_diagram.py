"""Trainability diagrams (numeric.diagram): phases agree with critical_alpha and beta_c."""

import csv

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import numeric
from numeric.diagram import ENTROPY_COLLAPSE, RANK_COLLAPSE, TRAINABLE

BETAS = np.linspace(0.1, 2.5, 25)
#: Up to 6: alpha_c = 3.14 at depth 30 (defaults), so every phase occurs on the grid.
ALPHAS = np.linspace(0.0, 6.0, 31)


@pytest.fixture(scope="module")
def diagram():
    return numeric.trainability_diagram("post-ln", 30, betas=BETAS, alphas=ALPHAS, eps=0.01)


def test_shapes(diagram):
    assert diagram.phase.shape == diagram.rho.shape == (len(ALPHAS), len(BETAS))
    assert diagram.critical_alpha.shape == (len(BETAS),)
    np.testing.assert_array_equal(diagram.betas, BETAS)


def test_entropy_collapse_above_beta_c_of_orthogonal_tokens(diagram):
    """Fig. 1(c): phase 2 exactly where beta > beta_c(q=1, p=0) = sqrt(2)."""
    above = BETAS > np.sqrt(2.0)
    assert np.all(diagram.phase[:, above] == ENTROPY_COLLAPSE)
    assert np.all(diagram.phase[:, ~above] != ENTROPY_COLLAPSE)


def test_rank_collapse_boundary_is_critical_alpha(diagram):
    below = BETAS <= np.sqrt(2.0)
    for j in np.nonzero(below)[0]:
        a_c = diagram.critical_alpha[j]
        assert ALPHAS[0] < a_c < ALPHAS[-1]                     # both sides of the boundary are on the grid
        column = diagram.phase[:, j]
        np.testing.assert_array_equal(column[ALPHAS > a_c * (1 + 1e-6)], TRAINABLE)
        np.testing.assert_array_equal(column[ALPHAS < a_c * (1 - 1e-6)], RANK_COLLAPSE)
    # both are bisections to relative accuracy 1e-6 (the diagram's starts from its grid bracket)
    np.testing.assert_allclose(diagram.critical_alpha, numeric.critical_alpha("post-ln", 30, beta=BETAS),
                               rtol=2e-6, atol=0)


def test_rho_matches_profile(diagram):
    i, j = 7, 5
    want = numeric.cosine_profile("post-ln", 30, beta=BETAS[j], alpha_sa=ALPHAS[i])[-1]
    assert diagram.rho[i, j] == pytest.approx(want, abs=1e-15)


@given(st.permutations(list(range(6))), st.permutations(list(range(5))))
def test_invariant_to_grid_order(perm_b, perm_a):
    betas, alphas = np.linspace(0.5, 2.0, 6), np.linspace(0.2, 2.2, 5)
    base = numeric.trainability_diagram("pre-ln", 20, betas=betas, alphas=alphas)
    shuffled = numeric.trainability_diagram("pre-ln", 20, betas=betas[perm_b], alphas=alphas[perm_a])
    np.testing.assert_array_equal(shuffled.phase, base.phase[np.ix_(perm_a, perm_b)])
    np.testing.assert_array_equal(shuffled.rho, base.rho[np.ix_(perm_a, perm_b)])


def test_stricter_criterion_marks_more_entropy_collapse():
    """'any': a later layer condenses though the first does not, when rho falls with depth
    (beta_c(q, p) = sqrt(2/(q(q-p))) falls with it): correlated inputs, a decorrelating erf MLP."""
    kw = dict(betas=np.linspace(0.5, 5.0, 46), alphas=np.linspace(0.5, 3.0, 6), rho0=0.8, activation="erf",
              sigma_w2=10.0)
    first = numeric.trainability_diagram("pre-ln", 20, criterion="first", **kw)
    strict = numeric.trainability_diagram("pre-ln", 20, criterion="any", **kw)
    assert np.all(strict.phase[first.phase == ENTROPY_COLLAPSE] == ENTROPY_COLLAPSE)
    assert (strict.phase == ENTROPY_COLLAPSE).sum() > (first.phase == ENTROPY_COLLAPSE).sum()


def test_csv(tmp_path, diagram):
    path = tmp_path / "d.csv"
    diagram.to_csv(path)
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == diagram.phase.size
    row = rows[3 * len(BETAS) + 4]
    assert float(row["beta"]) == BETAS[4] and float(row["alpha_sa"]) == ALPHAS[3]
    assert int(row["phase"]) == diagram.phase[3, 4] and row["phase_name"] == "rank collapse"
    assert float(row["rho"]) == diagram.rho[3, 4]


def test_plot_shows_the_phases_and_the_boundary(diagram):
    """What the drawing shows: the phase image over the grid's extent (alpha up, beta across) and the
    alpha_c line, which is numeric.critical_alpha at the grid's betas."""
    import matplotlib.pyplot as plt
    fig = diagram.plot()
    try:
        ax = fig.axes[0]
        image = ax.images[0]
        np.testing.assert_array_equal(np.asarray(image.get_array()), diagram.phase)
        assert image.origin == "lower"
        np.testing.assert_array_equal(image.get_extent(), [BETAS[0], BETAS[-1], ALPHAS[0], ALPHAS[-1]])
        line = ax.get_lines()[0]
        np.testing.assert_array_equal(line.get_xdata(), BETAS)
        np.testing.assert_allclose(line.get_ydata(), numeric.critical_alpha("post-ln", 30, beta=BETAS), rtol=2e-6)
    finally:
        plt.close(fig)


def test_summary_counts_each_phase_by_its_definition(diagram):
    """The summary's counts against the phases' definitions at T = oo, p = 0: entropy collapse where
    beta > beta_c = sqrt 2, rank collapse where not and rho_30 > 1 - eps (rho from cosine_profile)."""
    summary = diagram.summary()
    rho = numeric.cosine_profile("post-ln", 30, beta=BETAS, alpha_sa=np.maximum(ALPHAS, 1e-12)[:, None])[-1]
    entropy = np.broadcast_to(BETAS > np.sqrt(2.0), rho.shape)
    rank = ~entropy & (rho > 1 - 0.01)
    assert summary["phases"] == {"trainable": int((~entropy & ~rank).sum()), "rank collapse": int(rank.sum()),
                                 "entropy collapse": int(entropy.sum())}
    assert min(summary["phases"].values()) > 0                  # every phase occurs: the counts are tested
    assert summary["grid"] == [len(ALPHAS), len(BETAS)] and summary["arch"] == "post-ln" and summary["depth"] == 30


def test_alpha_grid_from_zero_where_gain_control_needs_no_skip():
    """Regression: the boundary search started at the raw grid value alpha_sa = 0, where the T -> oo
    gain-controlled attention output vanishes, and raised; it must read 0 as alpha_sa -> 0+ like the grid."""
    betas, alphas = np.linspace(0.05, 3.0, 12), np.linspace(0.0, 4.0, 9)
    diagram = numeric.trainability_diagram("gain-post-ln", 30, betas=betas, alphas=alphas)
    np.testing.assert_allclose(diagram.critical_alpha, numeric.critical_alpha("gain-post-ln", 30, beta=betas),
                               rtol=1e-5)
    assert np.any(diagram.critical_alpha == 0.0)


@pytest.mark.parametrize("kw, match", [
    (dict(betas=[], alphas=[1.0]), "betas"),
    (dict(betas=[1.0], alphas=[]), "alphas"),
    (dict(betas=[[1.0, 2.0]], alphas=[1.0]), "betas"),
    (dict(betas=[0.0, 1.0], alphas=[1.0]), "betas"),
    (dict(betas=[1.0], alphas=[-1.0]), "alphas"),
    (dict(betas=[1.0], alphas=[1.0], eps=2.0), "eps"),
    (dict(betas=[1.0], alphas=[1.0], criterion="all"), "criterion"),
    (dict(betas=[1.0], alphas=[1.0], beta=1.0), "betas= and alphas="),
])
def test_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        numeric.trainability_diagram("post-ln", 5, **kw)
