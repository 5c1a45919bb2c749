"""Exact finite-T attention moments (numeric.finite_t and its integrals, numeric.laplace; issue 6 part 1).

Checked three ways: against mpmath at 30 digits (the same Laplace integrals by
Gauss-Legendre panels, and closed forms at T = 2), against Monte Carlo with the
Gaussian scores of paper eq. (9) and with real tokens and weights (tolerances
from verify.stats: Student t, Bonferroni over each check's entries), and
through limits and inequalities. The tables are tested in test_tables.py.
"""

from __future__ import annotations

import bisect
import functools
import math

import mpmath as mp
import numpy as np
import pytest
from mpmath.calculus.quadrature import GaussLegendre

from numeric import finite_t as ft
from numeric import laplace
from numeric.blas import single_threaded_blas
from numeric.smoothing import TABLE
from verify import stats

BETA_C = math.sqrt(2.0)          # beta_c(q=1, p=0), Result 1


# --- mpmath references (30 digits) -----------------------------------------------

PANEL = mp.mpf(1.5)              # Gauss-Legendre panel width in units of x = log(u w)


@functools.lru_cache(maxsize=None)
def _legendre():
    with mp.workdps(30):
        return tuple(sorted(GaussLegendre(mp.mp).calc_nodes(3, mp.mp.prec)))   # 12 nodes on [-1, 1]


def _panels(lo, hi, width):
    """Composite 12-point Gauss-Legendre nodes and weights on [lo, lo + n width] (n = ceil)."""
    n = int(mp.ceil((hi - lo) / width))
    return [(lo + k * width + (x + 1) * width / 2, w * width / 2) for k in range(n) for x, w in _legendre()]


def _mp_smoothing(b, rs):
    """t -> (1 - L(e^t), L(e^t), {r: e^(rt) E[w^r e^(-e^t w)]}) by panels over z (b <= 1) or x = t + b z."""
    if b <= 1:
        nodes = _panels(mp.mpf(-13), 13 + rs[-1] * b, PANEL)
        weight = [w * mp.npdf(z) for z, w in nodes]
        growth = [mp.exp(b * z) for z, _ in nodes]

        def inner(t):
            ex = [mp.exp(t) * e for e in growth]
            small = [mp.exp(-y) for y in ex]
            g = [-mp.expm1(-y) if y < 1 else 1 - l for y, l in zip(ex, small)]
            M = {r: mp.fdot(weight, [y ** r * l for y, l in zip(ex, small)]) for r in rs}
            return mp.fdot(weight, g), mp.fdot(weight, small), M
        return inner
    nodes = _panels(mp.mpf(-54), mp.mpf(7.5), PANEL)                  # exactly 41 panels
    xs = [x for x, _ in nodes]
    norm = 1 / (b * mp.sqrt(2 * mp.pi))
    g = [w * norm * -mp.expm1(-mp.exp(x)) for x, w in nodes]
    small = [w * norm * mp.exp(-mp.exp(x)) for x, w in nodes]
    f = {r: [w * norm * mp.exp(r * x - mp.exp(x)) for x, w in nodes] for r in rs}

    def inner(t):
        lo, hi = bisect.bisect_left(xs, t - 14 * b), bisect.bisect_right(xs, t + 14 * b)
        gauss = [mp.exp(-((x - t) / b) ** 2 / 2) for x in xs[lo:hi]]
        G = mp.ncdf((t - mp.mpf(7.5)) / b) + mp.fdot(gauss, g[lo:hi])     # x > 7.5: g = 1, l = 0
        L = mp.ncdf((-54 - t) / b) + mp.fdot(gauss, small[lo:hi])       # x < -54: l = 1, g < 4e-24
        return G, L, {r: mp.fdot(gauss, f[r][lo:hi]) for r in rs}
    return inner


def mp_row_moments(b, T, all_moments=True):
    """E sum A^2, E sum A^3, E (sum A^2)^2 (or E sum A^2 alone) by the Laplace integrals at 30 digits.

    The representations of numeric.laplace (derived in derive.finite_t), evaluated independently:
    outer integral over t = log u by panels walked leftwards from where L^(T-1) < e^-120
    (found by bisection) until three panels add less than 1e-17 of the total.
    """
    with mp.workdps(30):
        b, rs = mp.mpf(b), ((2, 3, 4) if all_moments else (2,))
        inner = _mp_smoothing(b, rs)
        width = PANEL * max(1, b / mp.sqrt(2 * mp.log(T)))
        lo, hi = -mp.log(T) - 13 * b - 40, mp.log(4) + 6 + 13 * b
        for _ in range(30):
            mid = (lo + hi) / 2
            G, L, _ = inner(mid)
            dead = (T - 1) * (G if G < 0.5 else -mp.log(L)) > 120
            lo, hi = (lo, mid) if dead else (mid, hi)
        out, cross, a, quiet = {r: mp.mpf(0) for r in rs}, mp.mpf(0), hi - width, 0
        while quiet < 3:
            before = out[2]
            for t, w in [(a + (x + 1) * width / 2, wx * width / 2) for x, wx in _legendre()]:
                G, L, M = inner(t)
                log_L = mp.log1p(-G) if G < 0.5 else mp.log(L)
                decay = mp.exp((T - 1) * log_L)
                for r in rs:
                    out[r] += w * T / mp.gamma(r) * M[r] * decay
                if all_moments:
                    cross += w * T * (T - 1) / 6 * M[2] ** 2 * mp.exp((T - 2) * log_L)
            quiet = quiet + 1 if out[2] - before < mp.mpf(10) ** -17 * out[2] else 0
            a -= width
        return (out[2], out[3], out[4] + cross) if all_moments else out[2]


def mp_two_token(b, kind, rho=None):
    """T = 2 closed forms: A_1 = sigma(b D), D = z_1 - z_2 ~ N(0, 2), sigma the logistic function.

    ``kind`` r (number): 2 E sigma^r; "square": E (sigma^2 + (1 - sigma)^2)^2; "pair":
    2 E sigma(b D) sigma(b D') with corr(D, D') = rho (two rows, one Gaussian integral inside).
    """
    with mp.workdps(30):
        b, root2 = mp.mpf(b), mp.sqrt(2)
        nodes = _panels(mp.mpf(-13), mp.mpf(13), mp.mpf(1.5) / max(1, b * root2))
        sig = lambda u: 1 / (1 + mp.exp(-u))
        if kind == "square":
            return sum(w * mp.npdf(z) * (sig(b * root2 * z) ** 2 + sig(-b * root2 * z) ** 2) ** 2 for z, w in nodes)
        if kind != "pair":
            return 2 * sum(w * mp.npdf(z) * sig(b * root2 * z) ** kind for z, w in nodes)
        rho = mp.mpf(rho)
        weight = [w * mp.npdf(z) for z, w in nodes]
        private = [mp.exp(-b * root2 * mp.sqrt(1 - rho * rho) * e) for e, _ in nodes]
        total = mp.mpf(0)
        for (z, _), wz in zip(nodes, weight):
            shared = mp.exp(-b * root2 * rho * z)
            other = mp.fdot(weight, [1 / (1 + shared * e) for e in private])     # E_e sigma(b D')
            total += wz * sig(b * root2 * z) * other
        return 2 * total


@pytest.mark.parametrize("b, T", [(0.5, 64), (6.0, 4096)])
def test_row_moments_match_mpmath_laplace_integrals(b, T):
    """Spread (b < sqrt(2 ln T)) and condensed (b > sqrt(2 ln T)) rows, to 1e-11 relative."""
    y2, y3, y22 = mp_row_moments(b, T)
    got = laplace.row_moments(b, T, (2.0, 3.0), square=True)
    assert got[2.0] == pytest.approx(float(y2), rel=1e-11, abs=0)
    assert got[3.0] == pytest.approx(float(y3), rel=1e-11, abs=0)
    assert got["square"] == pytest.approx(float(y22), rel=1e-11, abs=0)


@pytest.mark.parametrize("b", [0.1, 0.9, 1.5, 4.0, 12.0])
def test_two_tokens_match_closed_forms(b):
    """T = 2: E sum A^r = 2 E sigma(b D)^r, also for non-integer r, and E (sum A^2)^2."""
    for r in (2, 3, 2.5):
        assert laplace.row_moments(b, 2, (float(r),))[float(r)] == pytest.approx(float(mp_two_token(b, r)), abs=1e-14)
    square = laplace.row_moments(b, 2, (), square=True)["square"]
    assert square == pytest.approx(float(mp_two_token(b, "square")), abs=1e-14)


@pytest.mark.parametrize("b, rho", [(0.8, 0.5), (2.0, 0.9)])
def test_pair_term_matches_two_token_closed_form(b, rho):
    assert laplace.pair_moment(b, rho, 2) == pytest.approx(float(mp_two_token(b, "pair", rho)), abs=1e-13)


# --- internal consistency of the pair quadratures --------------------------------

@pytest.mark.parametrize("T", [64, 4096])
def test_pair_at_rho_one_is_the_ipr(T):
    """Identical rows: the 2-D Laplace integral collapses to E sum A^2."""
    for b in (0.7, 3.0, 9.0):
        assert laplace.pair_moment(b, 1.0, T) == pytest.approx(laplace.row_moments(b, T)[2.0], rel=1e-11)


@pytest.mark.parametrize("b, rho", [(0.8, 0.35), (2.0, 0.06), (0.9, 0.3)])
def test_pair_quadratures_agree_where_both_apply(b, rho, monkeypatch):
    """Gauss-Hermite in the shared part vs the Gaussian-weighted lattice sum (b_c ~ 0.5)."""
    values = []
    for switch in (0.0, 10.0):
        monkeypatch.setattr(laplace, "BC_SWITCH", switch)
        values.append(laplace.pair_moment(b, rho, 4096))
    assert values[0] == pytest.approx(values[1], rel=1e-12)


def test_table_settings_agree_with_exact_settings():
    for T in (2, 64, 4096, 10**7):
        for b, rho in ((0.4, 0.5), (2.5, 0.9), (7.0, 0.3), (20.0, 0.97)):
            assert abs(laplace.row_moments(b, T, acc=TABLE)[2.0] - laplace.row_moments(b, T)[2.0]) < 1e-11
            assert abs(laplace.pair_moment(b, rho, T, TABLE) - laplace.pair_moment(b, rho, T)) < 1e-9


# --- Monte Carlo with the Gaussian scores of eq. (9) ------------------------------

def gaussian_score_moments(rng, beta, p, T, rows, samples, q=1.0):
    """Per-sample means of sum A^2, sum A^3, (sum A^2)^2 and sum_s A_ts A_t's over row pairs.

    Scores a_ts = sigma[(q-p) g_ts + sqrt(p(q-p)) (u_t + v_s) + p w] have exactly the
    covariance sigma^2 q_tk q_sl of eq. (9), sigma = beta sqrt(ln T); softmax by log-sum-exp.
    """
    sigma = beta * math.sqrt(math.log(T))
    g = rng.standard_normal((samples, rows, T))
    u = rng.standard_normal((samples, rows, 1))
    v = rng.standard_normal((samples, 1, T))
    w = rng.standard_normal((samples, 1, 1))
    a = sigma * ((q - p) * g + math.sqrt(p * (q - p)) * (u + v) + p * w)
    a -= a.max(axis=2, keepdims=True)
    A = np.exp(a)
    A /= A.sum(axis=2, keepdims=True)
    y2 = (A * A).sum(axis=2)
    column = A.sum(axis=1)
    pair = ((column * column).sum(axis=1) - y2.sum(axis=1)) / (rows * (rows - 1))
    return {"y2": y2.mean(axis=1), "y3": (A ** 3).sum(axis=2).mean(axis=1),
            "square": (y2 * y2).mean(axis=1), "pair": pair}


@pytest.mark.parametrize("T, rows, samples", [(64, 8, 4000), (512, 4, 1500), (4096, 4, 400)])
def test_moments_match_gaussian_score_monte_carlo(T, rows, samples):
    """Every moment, beta in {0.5, 1, sqrt 2, 2, 3}, p in {0, 0.5}: one check of 40 entries per T
    (verify.stats: Student t with samples - 1 dof, Bonferroni over the 40).

    The per-sample pair term is heavy-tailed (it hinges on the shared key scores
    v_s), so samples, not rows, carry the statistics: a few hundred at least.
    """
    rng = np.random.default_rng(T)
    theory, mean, se = [], [], []
    for beta in (0.5, 1.0, BETA_C, 2.0, 3.0):
        for p in (0.0, 0.5):
            mc = gaussian_score_moments(rng, beta, p, T, rows, samples)
            theory += [ft.ipr(beta, p=p, T=T), ft.ipr(beta, r=3, p=p, T=T), ft.ipr_square(beta, p=p, T=T),
                       ft.ipr_pair(beta, p=p, T=T)]
            for key in ("y2", "y3", "square", "pair"):
                mean.append(mc[key].mean())
                se.append(mc[key].std(ddof=1) / math.sqrt(samples))
    stats.assert_agrees(theory, np.array(mean), se=np.array(se), n=samples,
                        what=f"Y2, Y3, E Y2^2, Yp at T={T} (beta x p x moment)")


def _real_token_run(rng, beta, p, T, d, samples, table):
    """(beta, p, E sum A^2 per sample, the theory at each sample's row scales, own-token z-scores)."""
    scale = math.sqrt(beta * math.sqrt(math.log(T)) / d)
    measured, conditional, own = [], [], []
    for _ in range(samples):
        X = math.sqrt(p) * rng.standard_normal(d) + math.sqrt(1 - p) * rng.standard_normal((T, d))
        WQ, WK = scale * rng.standard_normal((d, d)), scale * rng.standard_normal((d, d))
        query = X @ WQ.T
        a = query @ (X @ WK.T).T / math.sqrt(d)
        z_own = (np.diag(a) - a.mean(axis=1)) / a.std(axis=1)
        a -= a.max(axis=1, keepdims=True)
        A = np.exp(a)
        A /= A.sum(axis=1, keepdims=True)
        measured.append((A * A).sum(axis=1).mean())
        row_scale = math.sqrt(1 - p) * np.linalg.norm(query @ WK, axis=1) / math.sqrt(d)
        conditional.append(table.at_b(row_scale).mean())
        own.append(z_own.mean())
    return beta, p, measured, conditional, own


def test_query_token_scores_like_any_key():
    """Real tokens X (d = 256) and weights W_Q, W_K ~ N(0, beta sqrt(ln T)/d) (DESIGN conventions).

    Given W and X_t, the scores of the other keys are exactly Gaussian with a
    row scale b_t = sqrt(q - p) |W_K^T W_Q X_t|/sqrt(d); only the query's own
    score a_tt = X_t^T W_K^T W_Q X_t/sqrt(d) could differ. So per sample E sum A^2
    minus the theory averaged over its measured b_t must average to 0 (no
    own-token effect), and the own score's z-score within its row too. Against
    the nominal theory (b_t -> its mean) the finite-d spread of b_t (relative sd
    0.07 within a sample at d = 256, more across samples) biases E sum A^2 by
    Jensen's inequality; that bias, |nominal - conditional|, is the allowance
    (0.003 at beta = 2, p = 0; measured E sum A^2 = 0.432 +- 0.003, nominal
    0.436, conditional 0.433). Each of the three claims is one check over the
    three (beta, p) (verify.stats, Student t with 39 dof, Bonferroni over 3).
    """
    rng = np.random.default_rng(7)
    T, d, samples = 256, 256, 40
    table = ft.Y2_table(T)
    with single_threaded_blas():                   # 256^3 products: one BLAS thread is faster
        results = [_real_token_run(rng, beta, p, T, d, samples, table)
                   for beta, p in ((1.0, 0.0), (2.0, 0.0), (2.0, 0.5))]
    measured, conditional, own = (np.array([r[k] for r in results]) for k in (2, 3, 4))
    nominal = np.array([ft.ipr(beta, p=p, T=T) for beta, p, *_ in results])
    se = lambda x: x.std(axis=1, ddof=1) / math.sqrt(samples)
    difference = measured - conditional
    stats.assert_agrees(0.0, difference.mean(axis=1), se=se(difference), n=samples,
                        what="E sum A^2 minus the theory at the measured row scales")
    stats.assert_agrees(nominal, measured.mean(axis=1), se=se(measured), n=samples,
                        allowance=np.abs(nominal - conditional.mean(axis=1)),
                        reason="finite d: the spread of the row scales b_t biases E sum A^2 (Jensen)",
                        what="E sum A^2 against the nominal theory")
    stats.assert_agrees(0.0, own.mean(axis=1), se=se(own), n=samples, what="z-score of the own-token score")


# --- limits and inequalities -------------------------------------------------------

@pytest.mark.parametrize("T", [2, 64, 4096, 10**7])
def test_uniform_attention_limit(T):
    """beta -> 0: A_ts = 1/T, so sum A^r = T^(1-r), the pair term 1/T, (sum A^2)^2 = 1/T^2."""
    beta = 1e-7
    assert ft.ipr(beta, T=T) == pytest.approx(1.0 / T, rel=1e-9)
    assert ft.ipr(beta, r=3, T=T) == pytest.approx(float(T) ** -2, rel=1e-9)
    assert ft.ipr_square(beta, T=T) == pytest.approx(float(T) ** -2, rel=1e-9)
    assert ft.ipr_pair(beta, p=0.5, T=T) == pytest.approx(1.0 / T, rel=1e-9)


@pytest.mark.parametrize("T", [2, 64, 4096])
def test_frozen_attention_limit(T):
    """beta -> oo: one key takes all the weight; the corrections are O(1/b)."""
    beta = 1e4
    for value in (ft.ipr(beta, T=T), ft.ipr(beta, r=3, T=T), ft.ipr_square(beta, T=T)):
        assert 0.99 < value < 1.0


def test_two_token_pair_tends_to_shared_argmax_probability():
    """T = 2, beta -> oo: both rows pick the same key with probability 1/2 + arcsin(rho)/pi."""
    for rho in (0.3, 0.8):
        values = [ft.ipr_pair(beta, p=rho, T=2) for beta in (1e2, 1e3, 1e4)]
        limit = 0.5 + math.asin(rho) / math.pi
        assert abs(values[-1] - limit) < 2e-4
        assert abs(values[2] - limit) < abs(values[1] - limit) < abs(values[0] - limit)


@pytest.mark.parametrize("T", [64, 4096])
def test_independent_rows_give_exactly_one_over_T(T):
    """p = 0: rows are independent, E A_ts A_t's = (1/T)^2 per key."""
    betas = np.array([0.3, 1.0, 2.0, 5.0])
    np.testing.assert_array_equal(ft.ipr_pair(betas, p=0.0, T=T), 1.0 / T)
    assert laplace.pair_moment(3.0, 1e-9, T) == pytest.approx(1.0 / T, rel=1e-7)


@pytest.mark.parametrize("T", [16, 512, 10**6])
def test_monotone_in_beta_and_ordered(T):
    """Y2, Y3, Yp increase with beta; T^(1-r) <= Y_r; Y2^2 <= E Y2^2; 1/T <= Yp <= Y2 (Cauchy-Schwarz)."""
    betas = np.linspace(0.05, 4.0, 25)
    y2, y3 = ft.ipr(betas, T=T), ft.ipr(betas, r=3, T=T)
    square, pair = ft.ipr_square(betas, T=T), ft.ipr_pair(betas, p=0.6, T=T)
    for values in (y2, y3, pair):
        assert np.all(np.diff(values) > 0)
    assert np.all(y2 >= 1.0 / T) and np.all(y3 >= float(T) ** -2)
    assert np.all(square >= y2 ** 2) and np.all(square <= y2)
    assert np.all(pair >= 1.0 / T) and np.all(pair <= ft.ipr(betas, p=0.6, T=T))


def test_depends_on_beta_q_p_only_through_b_and_rho():
    """Eq. (9): the row's log-weights scale as beta sqrt(q (q - p)) and the rows correlate as p/q, so
    (beta, q, p) = (1.3, 2, 0.5) and (2.6, 1, 0.25) are the same state: 1.3 sqrt(3) = 2.6 sqrt(0.75)."""
    T = 512
    beta_equiv = 2.6
    assert ft.ipr(1.3, q=2.0, p=0.5, T=T) == pytest.approx(ft.ipr(beta_equiv, q=1.0, p=0.25, T=T), rel=1e-13)
    assert ft.ipr_pair(1.3, q=2.0, p=0.5, T=T) == pytest.approx(ft.ipr_pair(beta_equiv, q=1.0, p=0.25, T=T), rel=1e-13)


def test_never_nan_or_overflow():
    betas = np.array([1e-300, 1e-12, 1e-3, 1.0, 1e3, 1e6, 1e300])
    with np.errstate(over="raise", invalid="raise"):
        for T in (2, 10**7):
            for values in (ft.ipr(betas, T=T), ft.ipr(betas, r=5, T=T), ft.ipr_square(betas, T=T),
                           ft.ipr_pair(betas[:-1], p=0.5, T=T)):
                assert np.all(np.isfinite(values)) and np.all((values > 0) & (values <= 1))


# --- the paper's asymptotics and its finite-size error (B.3) -----------------------

def test_approach_to_the_asymptotic_ipr():
    """|Y2(T) - max(0, 1 - beta_c/beta)| shrinks with T (B.3); how slowly: the mpmath values below."""
    for beta in (1.2, BETA_C, 2.0, 3.0):
        limit = max(0.0, 1.0 - BETA_C / beta)
        gaps = [abs(ft.ipr(beta, T=T) - limit) for T in (256, 4096, 65536, 10**7)]
        assert np.all(np.diff(gaps) < 0)


@pytest.mark.parametrize("beta, T, monte_carlo", [(2.0, 256, None), (BETA_C, 4096, None),
                                                  (2.0, 65536, (0.387, 0.004)), (BETA_C, 10**7, None)])
def test_ipr_at_practical_T_matches_mpmath(beta, T, monte_carlo):
    """E sum A^2 where issue 6, DESIGN and B.3 quote finite-size values, against mpmath at 30 digits.

    The mpmath values: 0.43619 at beta = 2, T = 256 (issue 6: 0.44); 0.21390 at
    beta_c, T = 4096 (DESIGN: "about 0.2", not eq. (4)'s 0); 0.38060 at beta = 2,
    T = 65536 (issue 6 quoted 0.37; its Monte Carlo with 4000 rows, 0.387 +- 0.004,
    checks the reference here); 0.15098 at beta_c, T = 1e7 (B.3: eq. (4) is approached slowly).
    """
    b = beta * math.sqrt(math.log(T))                  # b = beta sqrt(ln T q (q - p)) at q = 1, p = 0
    want = float(mp_row_moments(b, T, all_moments=False))
    assert ft.ipr(beta, T=T) == pytest.approx(want, rel=1e-11, abs=0)
    if monte_carlo is not None:
        stats.assert_agrees(want, monte_carlo[0], se=monte_carlo[1], what=f"Monte Carlo E sum A^2 at T={T}")


# --- bad input ----------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"T": 1}, "T must be"), ({"T": 64.5}, "T must be"), ({"T": None}, "T must be"), ({"T": True}, "T must be"),
    ({"T": "64"}, "T must be"), ({"T": 64, "r": 1}, "r must"), ({"T": 64, "r": 0.5}, "r must"),
    ({"T": 64, "r": float("nan")}, "r must"), ({"T": 64, "r": [2.0, 1.0]}, "r must"),
    ({"T": 64, "beta": 0.0}, "beta must be"), ({"T": 64, "beta": -1.0}, "beta must be"),
    ({"T": 64, "beta": float("inf")}, "beta must be"), ({"T": 64, "q": 0.0}, "q must be"),
    ({"T": 64, "p": 1.0}, "p must lie"), ({"T": 64, "p": -0.1}, "p must lie"),
    ({"T": 64, "p": float("nan")}, "p must be"),
])
def test_bad_input_raises_value_error_naming_the_parameter(kwargs, match):
    kwargs = {"beta": 1.0, **kwargs}
    beta = kwargs.pop("beta")
    with pytest.raises(ValueError, match=match):
        ft.ipr(beta, **kwargs)
    if "r" not in kwargs:
        with pytest.raises(ValueError, match=match):
            ft.ipr_pair(beta, **kwargs)
        with pytest.raises(ValueError, match=match):
            ft.ipr_square(beta, **kwargs)


def test_T_follows_the_one_sequence_length_rule():
    """numeric.validation.sequence_length: an integer-valued float is that integer (same values)."""
    assert ft.ipr(1.3, T=64.0) == ft.ipr(1.3, T=64)
    assert ft.ipr_pair(1.3, p=0.4, T=np.int64(64)) == ft.ipr_pair(1.3, p=0.4, T=64)


def test_orders_broadcast_with_beta():
    """r is vectorised like beta, q, p: each entry is the moment of its own order (eq. 2; r = 3 at T = 2 by the
    closed form 2 E sigma(b D)^3)."""
    got = ft.ipr(np.array([[0.5], [2.0]]), r=np.array([2.0, 3.0, 2.5]), T=64)
    assert got.shape == (2, 3)
    for i, beta in enumerate((0.5, 2.0)):
        for j, r in enumerate((2.0, 3.0, 2.5)):
            assert got[i, j] == ft.ipr(beta, r=r, T=64)
    b = float(ft.effective_b(1.7, 1.0, 0.0, 2))
    assert ft.ipr(1.7, r=[3.0], T=2)[0] == pytest.approx(float(mp_two_token(b, 3)), abs=1e-14)
