"""derive.rope: RoPE's score covariance, its correlation c(D), the Fejer limit and the moved threshold."""

import math

import numpy as np
import pytest
import sympy

from derive import rope
from derive.symbols import p, q
from verify.stats import assert_agrees


def _rotations(positions, head_dim, theta):
    """Block-diagonal RoPE rotations R_t (d_h x d_h), built directly from 2 x 2 blocks."""
    freqs = theta ** (-np.arange(0, head_dim, 2) / head_dim)
    out = []
    for t in positions:
        R = np.zeros((head_dim, head_dim))
        for i, f in enumerate(freqs):
            c, s = math.cos(t * f), math.sin(t * f)
            R[2 * i:2 * i + 2, 2 * i:2 * i + 2] = [[c, -s], [s, c]]
        out.append(R)
    return out


def test_correlation_is_the_normalised_trace_of_the_rotations():
    """c(D) of derive (a SymPy Sum) equals (1/d_h) tr(R_a^T R_b) of explicit rotation matrices, D = b - a."""
    head_dim, theta = 8, 100.0
    c = sympy.lambdify((rope.D,), rope.correlation().subs({rope.head_dim: head_dim, rope.theta_base: theta}).doit())
    for a, b in [(0, 0), (3, 7), (11, 2), (40, 41)]:
        Ra, Rb = _rotations([a, b], head_dim, theta)
        assert math.isclose(float(c(b - a)), np.trace(Ra.T @ Rb) / head_dim, rel_tol=1e-12, abs_tol=1e-12)


def test_score_covariance_matches_sampled_rotated_scores():
    """E[a_ts a_ts'] of rotated scores: Monte Carlo over W_Q, W_K gives sigma^4 d^2 Q_tt Q_ss' c(s' - s) within
    k SE (verify.stats; explicit rotations, both keys the same token so Q_ss' = 1), and the value without RoPE,
    Q_ss' = 1, is rejected by the same check."""
    rng = np.random.default_rng(0)
    d, head_dim, theta, n = 16, 8, 10.0, 20000
    x = rng.standard_normal(d)
    x *= math.sqrt(d) / np.linalg.norm(x)                     # Q_tt = |x|^2/d = 1, every key the same token
    R = _rotations([0, 0, 5], head_dim, theta)
    Wq = rng.standard_normal((n, head_dim, d)) / math.sqrt(d)
    Wk = rng.standard_normal((n, head_dim, d)) / math.sqrt(d)
    qv = np.einsum("njd,d->nj", Wq, x) @ R[0].T
    k1 = np.einsum("njd,d->nj", Wk, x) @ R[1].T                # key at relative position 0
    k2 = np.einsum("njd,d->nj", Wk, x) @ R[2].T                # the same key token at relative position 5
    prod = np.einsum("nj,nj->n", qv, k1) * np.einsum("nj,nj->n", qv, k2) / head_dim
    c5 = np.trace(R[1].T @ R[2]) / head_dim
    se = prod.std(ddof=1) / math.sqrt(n)
    assert_agrees(c5, prod.mean(), se, n=n, what="rotated score covariance")
    with pytest.raises(AssertionError):
        assert_agrees(1.0, prod.mean(), se, n=n, what="score covariance without RoPE")


def test_threshold_moves_to_sqrt2_over_q():
    beta_c = rope.critical_beta()
    assert sympy.simplify(beta_c - sympy.sqrt(2) / q) == 0
    assert p not in beta_c.free_symbols


def test_fejer_pair_mean_vanishes():
    mean, n, x = rope.pair_mean()
    value = float(mean.subs({n: 4000, x: 0.3}))
    brute = np.cos((np.arange(4000)[:, None] - np.arange(4000)[None, :]) * 0.3)
    assert math.isclose(value, (brute.sum() - 4000) / (4000 * 3999), rel_tol=1e-9, abs_tol=1e-12)
    assert rope.pair_mean_limit() == 0


def test_key_scale_covariance_is_wicks_and_matches_sampled_w_k():
    """Cov(|W_K^T a|^2, |W_K^T b|^2) = 2 d sigma_K2^2 (a.b)^2: the derived form, and 40 000 sampled W_K (d_h = 4,
    d = 6) within 4 SE; the same check rejects (a.b) in place of (a.b)^2."""
    expr, ab, aa, bb = rope.key_scale_covariance()
    d_sym = next(s for s in expr.free_symbols if s.name == "d")
    assert sympy.simplify(expr - 2 * d_sym * rope.sigma_k2 ** 2 * ab ** 2) == 0
    rng = np.random.default_rng(3)
    a, b = np.array([1.0, 0.5, -0.3, 0.2]), np.array([0.2, 1.0, 0.4, -0.6])
    W = rng.standard_normal((40_000, 4, 6))
    sa, sb = (np.einsum("nje,j->ne", W, a) ** 2).sum(-1), (np.einsum("nje,j->ne", W, b) ** 2).sum(-1)
    product = (sa - 6 * a @ a) * (sb - 6 * b @ b)
    predicted = float(expr.subs({ab: a @ b, aa: a @ a, bb: b @ b, d_sym: 6, rope.sigma_k2: 1}))
    se = product.std() / math.sqrt(product.size)
    assert abs(product.mean() - predicted) < 4 * se
    assert abs(product.mean() - 12 * abs(a @ b)) > 4 * se


def test_key_scale_correlation_matches_explicit_rotations():
    """kappa(D) = E (v^T R_D v)^2 / E|v|^4 over v ~ N(0, I): derive's closed form against 200 000 Gaussian v and
    explicit rotation matrices (within 4 SE at four lags), kappa(0) = 1, and the form without Wick's third
    pairing (tr R_D^2 dropped) rejected."""
    head_dim, theta = 8, 100.0
    kappa = sympy.lambdify((rope.D,), rope.key_scale_correlation().subs(
        {rope.head_dim: head_dim, rope.theta_base: theta}).doit())
    rng = np.random.default_rng(5)
    v = rng.standard_normal((200_000, head_dim))
    fourth = float(np.mean((v * v).sum(-1) ** 2))
    assert float(kappa(0)) == pytest.approx(1.0, abs=1e-12)
    for lag in (1, 3, 10, 40):
        R = _rotations([lag], head_dim, theta)[0]
        form = np.einsum("nj,jk,nk->n", v, R, v) ** 2 / fourth
        se = form.std() / math.sqrt(form.size)
        assert abs(form.mean() - float(kappa(lag))) < 4 * se + 1e-3 * form.mean(), lag
        c = np.trace(R) / head_dim
        without = (head_dim * c * c + 1.0) / (head_dim + 2.0)
        if lag == 3:
            assert abs(form.mean() - without) > 4 * se
