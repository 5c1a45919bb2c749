"""The finite-width derivation (derive.finite_width, issue 19): each step against an independent check.

References are never the derivation's own output: identities are checked on
explicit small cases (SymPy softmax of symbolic scores, mpmath/NumPy Monte
Carlo of explicit Gaussian keys) or against the infinite-width map they must
reduce to.
"""

import itertools
import math

import numpy as np
import pytest
import sympy

from derive import attention
from derive import finite_width as fw
from derive.symbols import p, q, sigma_v2

d, T = attention.d_sym, attention.T_sym


def test_infinite_width_limit_is_the_paper_map_eq_23():
    """d -> oo of the decomposition is eq. (23): sigma_v2 (p + (q - p) M), vanilla and gain-controlled."""
    for same, moment in ((True, fw.Y2), (False, fw.Yp)):
        for gain in (False, True):
            finite = fw.key_decomposition(same, gain)
            limit = sympy.limit(finite, d, sympy.oo)
            assert sympy.simplify(sigma_v2 * limit - attention.value_overlap(gain, same).subs(
                {sympy.Symbol("Y2", positive=True): moment, sympy.Symbol("Yp", positive=True): moment})) == 0


def test_first_order_in_one_over_d_is_the_selection_term_minus_k_moments():
    """d (finite - infinite) = (q - p)(W - k M) for vanilla attention: the O(1/d) term in closed form."""
    for same, moment in ((True, fw.Y2), (False, fw.Yp)):
        finite = fw.key_decomposition(same, False)
        infinite = sympy.limit(finite, d, sympy.oo)
        assert sympy.simplify(d * (finite - infinite) - (q - p) * (fw.W - fw.k_sym * moment)) == 0


def test_gain_control_uses_the_same_effective_moments():
    """(q - p)(M_eff - 1/T) with the M_eff of vanilla attention (so profiles need one pair of tables)."""
    eff = fw.effective_moments()
    for same, key, k in ((True, "Y2_eff", 1), (False, "Yp_eff", 2)):
        gain = fw.key_decomposition(same, True).subs(fw.k_sym, k)
        if same:
            gain = gain.subs(fw.W, fw.Z2)
        assert sympy.simplify(gain - (q - p) * (eff[key] - 1 / T)) == 0


def test_effective_moments_weights():
    eff = fw.effective_moments()
    assert sympy.simplify(eff["Y2_eff"] - ((1 - 1 / d) * fw.Y2 + fw.Z2 / d)) == 0
    assert sympy.simplify(eff["Yp_eff"] - ((1 - 2 / d) * fw.Yp + fw.W / d)) == 0


@pytest.mark.parametrize("n_keys,k", [(2, 1), (3, 2), (4, 2)])
def test_softmax_shift_identity_is_k(n_keys, k):
    """sum_{r,s} d/d zeta_r . (A_s zeta_s) = k sample by sample (explicit softmax of symbolic keys)."""
    assert fw.softmax_shift_identity(n_keys, k) == k


def _z2_monte_carlo(b, T, n, rng):
    z = rng.standard_normal((n, T))
    logits = b * z
    logits -= logits.max(1, keepdims=True)
    A = np.exp(logits)
    A /= A.sum(1, keepdims=True)
    m = (A * z).sum(1)
    return A, m


def test_z2_from_stein_matches_explicit_keys():
    """Z2 = Y2 + b^2 (1 - Y2 - 6 Y3 + 6 Y22), each moment and (sum A z)^2 measured on the same samples:
    the identity holds in expectation, so the two sides agree within Monte Carlo error."""
    rng = np.random.default_rng(1)
    expr = sympy.lambdify((fw.b2, fw.Y2, fw.Y3, fw.Y22), fw.selection_one_row())
    for b, T in ((0.5, 8), (1.5, 16), (3.0, 32)):
        A, m = _z2_monte_carlo(b, T, 400_000, rng)
        y2, y3, y22 = (A ** 2).sum(1), (A ** 3).sum(1), (A ** 2).sum(1) ** 2
        lhs = m ** 2
        rhs = expr(b * b, y2, y3, y22)
        diff = lhs - rhs                                    # mean zero if the identity holds
        assert abs(diff.mean()) < 5 * diff.std() / math.sqrt(diff.size)
        assert abs(diff.mean()) < 0.01 * lhs.mean() + 5 * diff.std() / math.sqrt(diff.size)


def test_z2_limits():
    """b -> 0: Z2 -> Y2 (= 1/T, uniform weights); the b^2 coefficient vanishes for a one-hot row (Y = 1)."""
    z2 = fw.selection_one_row()
    assert sympy.simplify(z2.subs(fw.b2, 0) - fw.Y2) == 0
    assert sympy.simplify(z2.subs({fw.Y2: 1, fw.Y3: 1, fw.Y22: 1}) - 1) == 0


def test_laplace_kernels_derivative():
    assert fw.laplace_kernels()[2] == 0


def test_pair_integrands_reduce_to_one_row_at_identical_rows():
    """Identical rows: S11 = S22 = S12 = b^2 and the named smoothings of one kernel product.

    With N_tt = N_tu = N_uu (all derivatives of f(t + l) f(t' + l) in l agree) the diagonal integrand is
    2N + 4 b^2 N_tt, the Laplacian of f(t + l)^2 along one direction plus the orthogonal key component.
    """
    first, second = fw.selection_pair_integrands()
    b2 = sympy.Symbol("b2", positive=True)
    N, Ntt, Ntu, Nuu, Pt, Qu = sympy.symbols("N N_tt N_tu N_uu P_t Q_u", real=True)
    one = first.subs({fw.S11: b2, fw.S22: b2, fw.S12: b2, Ntu: Ntt, Nuu: Ntt})
    assert sympy.simplify(one - (2 * N + 4 * b2 * Ntt)) == 0
    sym = second.subs({fw.S11: b2, fw.S22: b2, fw.S12: b2, Qu: Pt})
    assert sympy.simplify(sym - b2 * (N - Pt) ** 2) == 0


def test_pair_integrands_orthogonal_rows_have_no_cross_coupling():
    """S12 = 0: the distinct-key integrand is -N (S11 P_t + S22 Q_u); no N_tu term in the diagonal one."""
    first, second = fw.selection_pair_integrands()
    N, Pt, Qu, Ntu = sympy.symbols("N P_t Q_u N_tu", real=True)
    assert sympy.simplify(second.subs(fw.S12, 0) + N * (fw.S11 * Pt + fw.S22 * Qu)) == 0
    assert not first.subs(fw.S12, 0).has(Ntu)


def test_chain_mean_is_unbiased_and_covariance_adds_the_three_steps():
    mean, m21 = fw.chain_mean()
    assert mean == {"S11": 1, "S12": fw.rho, "S22": 1}
    eps = sympy.Symbol("eps", positive=True)
    n1, n2, n3 = fw.n_syms
    total = 1 / n1 + 1 / n2 + 1 / n3
    S = {"S11": 1, "S12": fw.rho, "S22": 1}
    idx = {"S11": (0, 0), "S12": (0, 1), "S22": (1, 1)}
    Sm = sympy.Matrix([[1, fw.rho], [fw.rho, 1]])
    for (a, b), cov in fw.chain_covariance().items():
        lead = sympy.series(cov.subs({n1: n1 / eps, n2: n2 / eps, n3: n3 / eps}), eps, 0, 2).removeO().subs(eps, 1)
        (i, j), (k, l) = idx[a], idx[b]
        expected = total * (Sm[i, k] * Sm[j, l] + Sm[i, l] * Sm[j, k])
        assert sympy.simplify(lead - expected) == 0, (a, b)
    assert sympy.simplify(m21 - (n2 * n3 + (n1 - 1) * n3 + (n1 - 1) * (n2 - 1)) / (n1 * n2 * n3)) == 0
    del S


def test_chain_covariance_matches_sampled_wishart_chain():
    """Exact Cov(S11, S11) and Cov(S12, S12) against a sampled chain tokens -> W_Q -> W_K (small n)."""
    rng = np.random.default_rng(3)
    n1, n2, n3, rho = 6, 4, 6, 0.5
    K = np.array([[1.0, rho], [rho, 1.0]])
    G = np.broadcast_to(K, (100_000, 2, 2))
    for n in (n1, n2, n3):
        X = rng.standard_normal((G.shape[0], n, 2)) @ np.swapaxes(np.linalg.cholesky(G), -1, -2)
        G = np.swapaxes(X, -1, -2) @ X / n
    draws = np.stack([G[:, 0, 0], G[:, 0, 1], G[:, 1, 1]], axis=1)
    cov = fw.chain_covariance()
    values = {fw.n_syms[0]: n1, fw.n_syms[1]: n2, fw.n_syms[2]: n3, fw.rho: rho}
    for (a, b), (i, j) in {("S11", "S11"): (0, 0), ("S12", "S12"): (1, 1), ("S11", "S22"): (0, 2)}.items():
        exact = float(cov[(a, b)].subs(values))
        x, y = draws[:, i] - draws[:, i].mean(), draws[:, j] - draws[:, j].mean()
        prod = x * y
        assert abs(prod.mean() - exact) < 5 * prod.std() / math.sqrt(prod.size), (a, b, prod.mean(), exact)


def test_covariance_from_factor_is_the_gram_of_the_bartlett_rows():
    S = fw.covariance_from_factor()
    m11, m21, m22 = sympy.symbols("m11 m21 m22", real=True)
    for values in itertools.product((0.7, 1.3), (-0.4, 0.2), (0.9,), (0.0, 0.6)):
        a, b, c, r = values
        C = np.array([[1.0, 0.0], [r, math.sqrt(1 - r * r)]])
        M = np.array([[a, 0.0], [b, c]])
        G = C @ M @ M.T @ C.T
        subs = {m11: a, m21: b, m22: c, fw.rho: r}
        assert abs(float(S["S11"].subs(subs)) - G[0, 0]) < 1e-12
        assert abs(float(S["S12"].subs(subs)) - G[0, 1]) < 1e-12
        assert abs(float(S["S22"].subs(subs)) - G[1, 1]) < 1e-12


def test_diagonal_selection_limits_and_normalized_effective_moment():
    """Z2_diag -> Y2 at b -> 0 and the b^2 term vanishes for a one-hot row (all Y = 1); normalized
    tokens: Y2_eff -> Y2 as d -> oo."""
    diag = fw.selection_diagonal_one_row()
    Y4 = sympy.Symbol("Y4", positive=True)
    assert sympy.simplify(diag.subs(fw.b2, 0) - fw.Y2) == 0
    assert sympy.simplify(diag.subs({fw.Y2: 1, fw.Y3: 1, Y4: 1}) - 1) == 0
    normalized = fw.normalized_effective_same()
    d = attention.d_sym
    assert sympy.limit(normalized, d, sympy.oo) == fw.Y2


@pytest.mark.parametrize("k", [1, 2, 3])
def test_normalized_key_density_is_the_law_of_the_rescaled_gaussian(k):
    """zeta = z/sqrt(D + a|z|^2), z ~ N(0, I_k): |zeta| < r0 exactly when |z|^2 < r0^2 D/(1 - a r0^2), so the
    derived radial density's mass in the ball of radius r0 is that chi-square probability (mpmath quadrature
    over the shell area 2 pi^(k/2)/Gamma(k/2) r^(k-1)), and its mass up to r0 = 0.999/sqrt(a) is 1. A density
    without the map's angular Jacobian (s/r)^(k-1) misses both at k >= 2 (checked)."""
    import mpmath
    from scipy.stats import chi2
    D, a = 1.3, 0.05
    density = fw.normalized_key_density().subs({fw.key_k: k, fw.key_D: D, fw.key_a: a})
    shell = 2 * mpmath.pi ** (k / 2) / mpmath.gamma(k / 2)

    def mass(expr, r0):
        f = sympy.lambdify(fw.key_r, expr, "mpmath")
        return float(mpmath.quad(lambda r: shell * r ** (k - 1) * f(r), [0, r0]))

    for r0 in (0.5, 1.5, 3.0):
        assert mass(density, r0) == pytest.approx(chi2.cdf(r0 * r0 * D / (1 - a * r0 * r0), k), abs=1e-12)
    assert mass(density, 0.999 / math.sqrt(a)) == pytest.approx(1.0, abs=1e-10)    # the rest: chi2 sf < 1e-300
    if k >= 2:
        s = fw.key_r * sympy.sqrt(D / (1 - a * fw.key_r ** 2))
        flat = density / (s / fw.key_r) ** (k - 1)
        assert abs(mass(flat, 1.5) - chi2.cdf(1.5 ** 2 * D / (1 - a * 1.5 ** 2), k)) > 0.01


@pytest.mark.parametrize("d", [4, 7, 40])
def test_sphere_projection_density_is_a_law_tending_to_the_normal(d):
    """The law of sqrt(d) x_1 for x uniform on the unit sphere integrates to 1 on |z| < sqrt(d), has variance 1,
    and at d = 10^8 is N(0, 1) to 1e-7 at z = 0, 1.3, 2.5."""
    import mpmath
    density, z = fw.sphere_projection_density()
    dsym = attention.d_sym
    f = sympy.lambdify(z, density.subs(dsym, d), "mpmath")
    half = mpmath.sqrt(d)
    assert float(mpmath.re(mpmath.quad(f, [-half, 0, half]))) == pytest.approx(1.0, abs=1e-12)
    assert float(mpmath.re(mpmath.quad(lambda x: x * x * f(x), [-half, 0, half]))) == pytest.approx(1.0, abs=1e-12)
    wide = sympy.lambdify(z, density.subs(dsym, sympy.Float(1e8)), "mpmath")
    for x in (0.0, 1.3, 2.5):
        assert float(wide(x)) == pytest.approx(math.exp(-x * x / 2) / math.sqrt(2 * math.pi), abs=1e-7)


@pytest.mark.parametrize("d", [6, 40])
def test_sphere_pair_density_is_a_law_whose_marginal_is_the_one_projection_law(d):
    """The law of sqrt(d) (x_1, x_2) integrates to 1 on the disc of radius sqrt(d), E z1^2 = 1 and E z1 z2 = 0,
    and its z2-marginal at z2 = 0.7 and 1.9 is sphere_projection_density there (mpmath quadrature)."""
    import mpmath
    density, z1, z2 = fw.sphere_pair_density()
    dsym = attention.d_sym
    f = sympy.lambdify((z1, z2), density.subs(dsym, d), "mpmath")
    one, z = fw.sphere_projection_density()
    g = sympy.lambdify(z, one.subs(dsym, d), "mpmath")
    half = mpmath.sqrt(d)

    def disc(h):
        return float(mpmath.re(mpmath.quad(lambda y: mpmath.quad(lambda x: h(x, y), [-mpmath.sqrt(d - y * y), 0,
                                                                                  mpmath.sqrt(d - y * y)]),
                                           [-half, 0, half])))
    assert disc(f) == pytest.approx(1.0, abs=1e-9)
    assert disc(lambda x, y: x * x * f(x, y)) == pytest.approx(1.0, abs=1e-9)
    assert disc(lambda x, y: x * y * f(x, y)) == pytest.approx(0.0, abs=1e-12)
    for y in (0.7, 1.9):
        edge = mpmath.sqrt(d - y * y)
        marginal = mpmath.quad(lambda x, y=y: f(x, y), [-edge, 0, edge])
        assert float(mpmath.re(marginal)) == pytest.approx(float(mpmath.re(g(y))), rel=1e-9)


def test_normalized_effective_pair_drops_the_diagonal_keys_coupling():
    """Two rows of fixed-norm tokens: Yp_eff - Yp = (W - W_diag)/d, which vanishes when every key is diagonal
    (one shared key: W = W_diag), and at d -> oo Yp_eff -> Yp; the Gaussian form differs by (W_diag - 2 Yp)/d."""
    normalized = fw.normalized_effective_pair()
    d = attention.d_sym
    assert sympy.simplify(normalized.subs(fw.W, fw.W_diag) - fw.Yp) == 0
    assert sympy.limit(normalized, d, sympy.oo) == fw.Yp
    gaussian = fw.effective_moments()["Yp_eff"]
    assert sympy.simplify(gaussian - normalized - (fw.W_diag - 2 * fw.Yp) / d) == 0


def test_normalized_chain_factor_against_sampled_unit_gram_chain():
    """The fixed-norm chain's factor: E[m21 | r, chi-squares] = r m11 and its variance as derived give
    E S12^2 = E m11^2 (m21_mean^2 + m21_variance) (E r^2 = 1/n1 for uniform directions, chi-square moments);
    a sampled chain (two random vectors of norm sqrt(n1) in R^n1, then W_Q and W_K of n2 and n3 rows) has
    E S11 = 1, E S12 = 0, that E S12^2 and E S11^2 = E m11^4 within 4 SE, and rejects the Gaussian tokens' chain
    (E S11^2 larger by about 2/n1: the query norm's fluctuation; at rho = 0 both chains share E S12^2)."""
    chain = fw.normalized_chain_factor()
    n1, n2, n3 = 12, 6, 10
    c2, c3 = chain["c"]
    cp2, cp3 = chain["cp"]
    moments = {chain["r"]: lambda k: sympy.Rational(1, n1) if k == 2 else None,
               c2: lambda k: sympy.rf(sympy.Rational(n2, 2), k) * 2 ** k,
               c3: lambda k: sympy.rf(sympy.Rational(n3, 2), k) * 2 ** k,
               cp2: lambda k: sympy.rf(sympy.Rational(n2 - 1, 2), k) * 2 ** k,
               cp3: lambda k: sympy.rf(sympy.Rational(n3 - 1, 2), k) * 2 ** k}
    moment = (chain["m11"] ** 2 * (chain["m21_mean"] ** 2 + chain["m21_variance"])).subs(
        dict(zip(fw.n_syms, (n1, n2, n3))))
    expected = sympy.Integer(0)
    for term in sympy.Add.make_args(sympy.expand(moment)):
        value = sympy.Integer(1)
        for base, power in term.as_powers_dict().items():
            value *= moments[base](int(power)) if base in moments else base ** power
        expected += value
    expected = float(expected)
    rng = np.random.default_rng(4)
    samples = 200000
    x = rng.normal(size=(samples, 2, n1))
    x *= math.sqrt(n1) / np.linalg.norm(x, axis=-1, keepdims=True)
    y = np.einsum("sij,skj->sik", x, rng.normal(size=(samples, n2, n1))) / math.sqrt(n1)
    u = np.einsum("sij,skj->sik", y, rng.normal(size=(samples, n3, n2))) / math.sqrt(n2)
    S = np.einsum("sik,sjk->sij", u, u) / n3
    se = lambda v: 4 * v.std() / math.sqrt(samples)
    square = float((chain["m11"] ** 4).subs(dict(zip(fw.n_syms, (n1, n2, n3)))).subs(
        {c2 ** 2: n2 * (n2 + 2), c3 ** 2: n3 * (n3 + 2)}))
    for value, target in ((S[:, 0, 0], 1.0), (S[:, 0, 1], 0.0), (S[:, 0, 1] ** 2, expected), (S[:, 0, 0] ** 2, square)):
        assert abs(value.mean() - target) < se(value), (value.mean(), target)
    gaussian = 1.0 + float(fw.chain_covariance()[("S11", "S11")].subs(dict(zip(fw.n_syms, (n1, n2, n3)))).subs(
        fw.rho, 0))
    assert abs((S[:, 0, 0] ** 2).mean() - gaussian) > se(S[:, 0, 0] ** 2), (gaussian, square)


def test_selection_pulls_against_explicit_keys():
    """X = E sum A z^2 - 1, J = E sum d/dl[A (1 - A)] b z and the row-scale pull, as derived in attention moments
    (Stein's lemma), against 400 000 rows of 6 explicit Gaussian keys at b = 1.3: each within 4 SE of the draws
    (the moments Y2, Y3, Y4, Y22 from the same draws), and J differs from X (so Xoff = J is an identity, not a
    relabelling)."""
    pulls = fw.selection_pulls()
    rng = np.random.default_rng(41)
    b, n, draws = 1.3, 6, 400_000
    z = rng.standard_normal((draws, n))
    A = np.exp(b * z - (b * z).max(1, keepdims=True))
    A /= A.sum(1, keepdims=True)
    Y = {k: (A ** k).sum(1) for k in (2, 3, 4)}
    moments = {fw.b2: b * b, fw.Y2: Y[2], fw.Y3: Y[3], fw.Y4: Y[4], fw.Y22: Y[2] ** 2}

    def formula(expr):
        f = sympy.lambdify(list(moments), expr, "numpy")
        return f(*moments.values())
    e = 1e-4

    def off_diagonal(scale):
        a = np.exp(b * scale * z - (b * scale * z).max(1, keepdims=True))
        a /= a.sum(1, keepdims=True)
        return (a * (1 - a)).sum(1)
    draws_of = {"X": (A * z * z).sum(1) - 1, "J": ((1 - 2 * A) * A * (1 - A) * b * z).sum(1),
                "scale": (off_diagonal(1 + e) - off_diagonal(1 - e)) / (2 * e)}
    for name, sample in draws_of.items():
        diff = sample - formula(pulls[name])
        assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(draws), name
    gap = draws_of["J"] - draws_of["X"]
    assert abs(gap.mean()) > 10 * gap.std() / math.sqrt(draws)
    assert sympy.simplify(pulls["Xoff"] - pulls["J"]) == 0


def test_common_direction_pull_against_explicit_normalized_keys():
    """Step 6 against explicit keys: rows of 8 normalized keys x = sqrt(rho) c + sqrt(1 - rho) g (|c|^2 = d, drawn
    through z = g.u, nu = c_hat.g and the chi-square of the rest) at d = 200, rho = 0.4, b = 2. The row's common
    share H = sum_s A_s eta_s (softmax of b kappa_s z_s) has mean (1 - rho)(3 rho - 1)/(4d) (no selection) +
    (key + z) X/d (selection), within 4 SE of 400 000 rows plus an O(1/d^2) allowance of 3/d^2; dropping the
    selection term ((key + z) = 0) is rejected."""
    c = fw.common_direction_coefficients()
    rho, d, b, n, draws = 0.4, 200, 2.0, 8, 400_000
    rng = np.random.default_rng(43)
    z, nu = rng.standard_normal((draws, n)), rng.standard_normal((draws, n))
    rest = rng.chisquare(d - 2, size=(draws, n))
    norm2 = rho + 2 * math.sqrt(rho * (1 - rho)) * nu / math.sqrt(d) + (1 - rho) * (z * z + nu * nu + rest) / d
    kappa = norm2 ** -0.5
    eta = kappa * (1 + math.sqrt((1 - rho) / rho) * nu / math.sqrt(d)) - 1
    l = b * kappa * z
    A = np.exp(l - l.max(1, keepdims=True))
    A /= A.sum(1, keepdims=True)
    H = (A * eta).sum(1)
    w = np.exp(b * z - (b * z).max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    X = float(((w * z * z).sum(1) - 1).mean())              # the row's pull under Gaussian scores (O(1) accuracy)
    coefficient = float((c["key"] + c["z"]).subs(fw.rho, rho))
    no_selection = (1 - rho) * (3 * rho - 1) / (4 * d)
    se = H.std() / math.sqrt(draws)
    allowance = 3.0 / d ** 2
    assert abs(H.mean() - (no_selection + coefficient * X / d)) < 4 * se + allowance
    assert abs(H.mean() - no_selection) > 4 * se + allowance
