"""RoPE's shift of the condensation threshold (derive.rope, numeric.rope), confirmed by Gaussian-score Monte Carlo.

A row of T keys with RoPE has scores of covariance b0^2 [(q - p) delta_ss' + p c(s - s')], c(D) =
(2/d_h) sum_i cos(D theta_i) (derive.rope.score_covariance). Such scores are sampled exactly as

    a_s = b0 [sqrt(q - p) z_s + sqrt(p) sqrt(2/d_h) sum_i (x_i cos(s theta_i) + y_i sin(s theta_i))],

z, x, y i.i.d. N(0, 1): the random trigonometric polynomial has covariance p c(s - s') by cos(A - B) =
cos A cos B + sin A sin B. Without RoPE the rotated part is the same for every key and cancels in the softmax:
the row is exchangeable with width b0 sqrt(q - p), and the threshold is beta_c = sqrt(2/(q (q - p))); with RoPE
it moves to sqrt(2)/q as T -> oo (derive.rope.critical_beta). At finite T the tree closure of numeric.rope
gives the IPR. The checks: the Monte Carlo IPR agrees with numeric.rope.ipr within its standard error at every
beta of a sweep across both thresholds, and the theory that ignores RoPE (the exchangeable row) is rejected by
the same test, so the measured shift is RoPE's and not noise.
"""

import math

import numpy as np
import pytest

from numeric import rope
from numeric.row_moments import RowMoments
from verify.montecarlo import Estimate
from verify.stats import assert_agrees

T, HEAD_DIM, THETA, Q, P = 256, 64, 1.0e4, 1.0, 0.5
BETAS = np.array([0.6, 1.0, 1.4, 1.8, 2.4])
SEEDS, ROWS = 12, 1500
#: The tree closure's declared accuracy at p/q <= 0.5 (derive.rope, docs): the IPR to a relative 3 %.
CLOSURE = 0.03
CLOSURE_REASON = "tree closure of the smooth rotated field: relative 3 % of the IPR at p/q <= 0.5 (derive.rope)"


def _ipr_samples(beta: float, p: float, *, rotary: bool, seed: int) -> np.ndarray:
    """Mean row IPR per seed (SEEDS,) of Gaussian scores with (rotary) or without RoPE's correlation."""
    rng = np.random.default_rng(seed)
    b0 = beta * math.sqrt(math.log(T) * Q)
    s = np.arange(T)
    angles = s[:, None] * rope.frequencies(HEAD_DIM, THETA)[None, :]          # (T, d_h/2)
    basis = np.concatenate([np.cos(angles), np.sin(angles)], axis=1) * math.sqrt(2.0 / HEAD_DIM)
    out = np.empty(SEEDS)
    for k in range(SEEDS):
        z = rng.standard_normal((ROWS, T))
        field = rng.standard_normal((ROWS, basis.shape[1])) @ basis.T if rotary else \
            rng.standard_normal((ROWS, 1)) * np.ones(T)
        scores = b0 * (math.sqrt(Q - p) * z + math.sqrt(p) * field)
        scores -= scores.max(axis=1, keepdims=True)
        weights = np.exp(scores)
        weights /= weights.sum(axis=1, keepdims=True)
        out[k] = (weights**2).sum(axis=1).mean()
    return out


def _exchangeable(beta, p):
    """Y2 of an exchangeable row of T keys with key overlap p: RoPE ignored."""
    return RowMoments().y2(np.asarray(beta) * math.sqrt(math.log(T) * Q * (Q - p)), T)


@pytest.fixture(scope="module")
def measured():
    return Estimate(np.stack([_ipr_samples(b, P, rotary=True, seed=1000 + i) for i, b in enumerate(BETAS)], axis=1))


def test_rope_ipr_matches_the_tree_closure(measured):
    theory = rope.ipr(BETAS, Q, P, T, THETA, HEAD_DIM)
    assert_agrees(theory, measured, allowance=CLOSURE * theory, reason=CLOSURE_REASON, what="RoPE row IPR")


def test_ignoring_rope_is_rejected(measured):
    """The exchangeable row (threshold sqrt(2/(q (q - p))) = 2 at p = 0.5) condenses later than the RoPE row
    measures: the same check as above fails for it."""
    wrong = _exchangeable(BETAS, P)
    with pytest.raises(AssertionError, match="disagree"):
        assert_agrees(wrong, measured, allowance=CLOSURE * wrong, reason=CLOSURE_REASON, what="RoPE ignored")


def test_rope_row_sits_between_the_exchangeable_rows_of_p_and_of_zero(measured):
    """The threshold moves from sqrt(2/(q(q - p))) toward sqrt(2)/q: the measured RoPE IPR exceeds the
    exchangeable row's at overlap p and stays below the row's at overlap 0 (the T -> oo limit), beyond k SE."""
    from verify.stats import critical

    k = critical(measured.n, 2 * BETAS.size)
    assert np.all(measured.mean - k * measured.se > _exchangeable(BETAS, P))
    assert np.all(measured.mean + k * measured.se < _exchangeable(BETAS, 0.0))


def test_exchangeable_sampler_is_the_row_moments_ipr():
    """The sampler without rotation reproduces the exchangeable Y2 (the check of the check)."""
    beta = 1.4
    samples = Estimate(_ipr_samples(beta, P, rotary=False, seed=7)[:, None])
    assert_agrees(_exchangeable([beta], P), samples, what="exchangeable row IPR")


def test_torch_rows_have_the_querys_random_spectrum():
    """One causal torch layer (d = 64, 2 heads of d_h = 32, theta = 1e4, tokens of fixed norm at p/q = 0.9,
    beta = 2, T = 512, 1024 seeds): the IPRs of rows T - 1 and T/2 - 1 agree with the field quadrature at the
    query's random spectrum (numeric.rope_field, spectrum="query": each row's field weights its frequencies by
    the query's energy there) within k SE (Bonferroni over the two) plus the declared finite-width allowance.
    The same tolerance rejects the mean spectrum (every row with covariance c(D), the Gaussian scores above) and
    the tree closure of numeric.rope. Measured: torch 0.1707 +- 0.0034 and 0.1966 +- 0.0037; query spectrum
    0.1697, 0.1982 (+- 0.0006); mean spectrum 0.1955, 0.2230 (7 SE high); tree 0.2316, 0.2538."""
    from numeric import rope_field
    from verify import stats
    from verify.width import masked_overlap_samples

    T, d, heads, p, beta = 512, 64, 2, 0.9, 2.0
    d_h = d // heads
    rows = (T - 1, T // 2 - 1)
    estimate = masked_overlap_samples(beta, rows=rows, T=T, d=d, seeds=1024, heads=heads, p=p, seed=5,
                                      normalized=True, rope=THETA, ipr=True, batch=64)
    mean, se = np.asarray(estimate.mean)[3:], np.asarray(estimate.se)[3:]

    def field(spectrum):
        return np.array([rope_field.field_ipr(beta, T=T, rope=(THETA, d_h), p=p, n=t + 1, spectrum=spectrum)[0]
                         for t in rows])

    query = field("query")
    tol = stats.tolerance(se, stats.finite_d_allowance(d, query), estimate.n, family=2)
    assert np.all(np.abs(query - mean) <= tol), (query, mean, se, tol)
    b0sq = beta * beta * math.log(T)
    tree = np.array([rope.row_width(b0sq, 1.0 - p, p, t + 1, d_h, THETA)[0] for t in rows])
    for wrong in (field("mean"), tree):
        assert np.any(np.abs(wrong - mean) > tol), (wrong, mean, tol)
