"""Finite width: the O(1/d) terms of one attention layer's output overlaps, derived (issue 19).

Setting (README, "Finite width: attention at long context"). Tokens x_s in R^d, s = 1..T, jointly
Gaussian with E x_s.x_s'/d = q (s = s'), p (s != s'), i.i.d. over features:
x_s = sqrt(p) c + sqrt(q - p) g_s with c, g_s i.i.d. N(0, I_d). One attention
layer with H heads of d_h = d/H features: scores a_ts = (W_Q x_t).(W_K x_s)/sqrt(d_h)
(entries of W_Q, W_K of variance beta sqrt(ln T)/d, paper eq. 6 and Result 1),
values W_V (variance sigma_v2/d; an output projection folds into sigma_v2).

Exact steps, each done below by SymPy:

1. W_V by Wick's theorem (as in :func:`derive.attention.value_overlap`, B.2.3)
   leaves sigma_v2 (1/d) sum_{s,s'} A_ts A_t's' x_s.x_s' -- with the tokens'
   *empirical* overlaps, not their means. Heads are exchangeable: each head's
   term has the same expectation, so heads enter only through d_h in the
   scores' law (step 4).
2. Row t's scores, up to a row constant that the softmax drops, are
   sqrt(q - p) u_t.g_s with u_t = W_K^T W_Q x_t / (sqrt(d_h)) (scaled): the softmax
   weights depend on the keys g_s (s != t, t') only through their projections
   zeta_s on the span of the k = 1 (t = t') or 2 (t != t') query directions.
   Splitting g_s = P zeta_s + g_s^perp and averaging g^perp (d - k features) by
   Wick's theorem (:func:`key_decomposition`):

       (1/d) E sum A_ts A_t's' x_s.x_s' = p + (q - p) [(1 - k/d) M + W/d],

   M = Y2 (t = t') or Yp (t != t'), W = E (sum_s A_ts zeta_s).(sum_s A_t's zeta_s).
   The cross terms sqrt(p (q - p)) c.(sum A g) vanish: given the query
   directions the zeta_s are i.i.d. N(0, I_k), so E[sum A zeta | u] is a function
   of the u's that W_Q -> -W_Q maps to minus itself while c stays
   (assumption A2 below). Gain control (A - 1/T) gives p -> 0 and every
   moment minus 1/T, with W -> W - k/T (:func:`softmax_shift_identity`), so the
   effective moments serve both kinds of attention (:func:`effective_moments`).
3. W for one row (k = 1) along its own query direction is
   Z2 = E (sum_s A_s z_s)^2 = Y2 + b^2 (1 - Y2 - 6 Y3 + 6 Y22) with b the row's
   width (:func:`selection_one_row`, Stein's lemma twice on the scores). For two
   rows, W is the Laplace integral of :func:`selection_pair_integrands` (Stein's
   lemma on zeta, then Price's theorem), evaluated by :mod:`numeric.two_rows`.
4. The scores' law. Given the query directions the scores are exactly Gaussian;
   their 2 x 2 covariance S is a chain of Wishart matrices: tokens (d degrees
   of freedom), W_Q (d_h), W_K (d). With Bartlett factors,
   S = b^2 C M M^T C^T (:func:`chain_factor`), E S = b^2 [[1, rho], [rho, 1]]
   and Cov(S_ij, S_kl) = (1/d + 1/d_h + 1/d)(S_ik S_jl + S_il S_jk) + O(1/n^2)
   (:func:`chain_covariance`). :mod:`numeric.finite_width` averages Y2, Z2, Yp
   and W over this law by Gauss quadrature: the score law's own finite-d_h
   correction, kept because it is large (T Yp from 1 to 1.6-4 at orthogonal
   inputs, d_h = 32-64, T >> d, sigma_a = 3-5; README "Finite width: attention
   at long context").

5. Normalized tokens (a LayerNorm or RMSNorm before attention, as in every real stack): |x_s|^2 = d q for
   every token, so A1's fluctuating norms are absent. For p = 0, x_s = z_s u_hat + x_s^perp with
   |x_s^perp|^2 = d - z_s^2: the diagonal keys give Y2 exactly (no z_s^2/d coupling), the distinct keys
   the same (Z2 - Z2_diag)/d, with Z2_diag = E sum_s A_s^2 z_s^2 = Y2 + 2 b^2 (2 Y2 - 5 Y3 + 3 Y4)
   (:func:`selection_diagonal_one_row`, Stein twice), so Y2_eff = Y2_sph + (Z2 - Z2_diag)/d
   (:func:`normalized_effective_same`). The scores' law changes twice: the query's norm no longer
   fluctuates (the chain keeps its d_h and d steps), and a key's projection z_s = sqrt(d) x_hat_s.u_hat is a
   coordinate of a uniform point on the sphere of radius sqrt(d), of density
   (1 - z^2/d)^((d - 3)/2) (:func:`sphere_projection_density`; kurtosis -6/(d + 2)), not N(0, 1): Y2_sph is
   the exact finite-n IPR under that law (:func:`numeric.finite_width.sphere_row`; at p > 0 the law of
   :func:`numeric.width_law.key_density`, a mixture over the rest of the key's norm). Two rows: the same split
   with k = 2 gives
   Yp_eff = Yp_sph + (W - W_diag)/d (:func:`normalized_effective_pair`), W_diag the diagonal keys' part of W;
   Yp_sph takes the keys' two projections from the sphere law (:func:`sphere_pair_density`), and the chain's
   first step is the query tokens' Gram matrix with unit diagonal (:func:`normalized_chain_factor`).

6. Normalized tokens at p > 0: the common direction. A key's scale kappa_s and its share of the common
   direction depend on its own fluctuations (:func:`normalized_key`), so two normalized keys' mean cosine is
   below rho and the softmax, which sees b z_s kappa_s, selects keys whose normalized common component is
   smaller. Expanding to second order in 1/sqrt(d) and applying Stein's lemma over the fluctuations
   (:func:`common_direction_coefficients`) times each row's pulls (:func:`selection_pulls`) gives the O(1/d)
   changes of q_out and p_out (:func:`common_direction_norm`, :func:`common_direction_pair`). A normalized
   key's k projections given the rest of its norm have the law :func:`normalized_key_density` (a radial change
   of variables of N(0, I_k)), which :func:`numeric.width_law.key_density` averages over that rest.

Assumptions, stated once:

- A1 the tokens are jointly Gaussian with the overlaps (q, p) (exact for the
  first layer of Gaussian inputs; in a stack, the input Gram matrix is taken
  to fluctuate like a Wishart matrix with d degrees of freedom);
- A2 W_Q is symmetric in law under W_Q -> -W_Q and independent of the tokens;
- A3 the query token itself and, for p_out, the other row's token are two of
  the T keys whose projections are not independent of the query directions;
  they are treated as the other keys (an O(1/(d T)) error);
- A4 in the quadrature (:func:`numeric.width_law.pair_rule`), the off-diagonal
  Bartlett entry m21 is Gaussian given the chi-squares (exact), with the one
  term of its variance that shares factors with both m11 and m22 replaced by
  its log-linear regression on them (relative O(1/n^2) of the effect).
"""

from __future__ import annotations

from functools import lru_cache

import sympy

from . import gaussian as g
from .attention import T_sym, d_sym
from .symbols import p, q, sigma_v2

#: Query directions of the rows: 1 for the norm (t = t'), 2 for the overlap (t != t').
k_sym = sympy.Symbol("k", positive=True, integer=True)
#: The effective moments' ingredients (symbols of numeric quantities).
Y2, Y3, Y22, Yp = (sympy.Symbol(n, positive=True) for n in ("Y2", "Y3", "Y22", "Yp"))
W, Z2 = sympy.Symbol("W", real=True), sympy.Symbol("Z2", positive=True)
#: A row's log-weight variance b^2 and the rows' score covariance S.
b2 = sympy.Symbol("b2", positive=True)
S11, S22 = sympy.Symbol("S11", positive=True), sympy.Symbol("S22", positive=True)
S12 = sympy.Symbol("S12", real=True)
rho = sympy.Symbol("rho", real=True)


# --- 2. projecting the keys on the query directions --------------------------------------

def _weights(row: str, col: str, gain: bool, ranges) -> g.IndexSum:
    """A_row,col, minus 1/T with gain control."""
    a = g.tensor("A", row, col, ranges=ranges)
    return a - g.scalar(1 / T_sym) if gain else a


@lru_cache(maxsize=None)
def key_decomposition(same_row: bool, gain: bool) -> sympy.Expr:
    """(1/d) E sum_{s,s'} A_ts A_t's' x_s.x_s' after splitting the keys (step 2 of the module docstring).

    x_s.x_s' = p |c|^2 + (q - p) (zeta_s.zeta_s' + g^perp_s.g^perp_s') + cross terms (zero by A2);
    c and g^perp (d - k features) are averaged by Wick's theorem, zeta_s.zeta_s' stays the factor Z.
    Returns an expression in p, q, d, k, T, the moment symbol (Y2 or Yp) and W (the mean of
    sum A_ts A_t's' Z_ss', or its gain-controlled form).
    """
    other = "t" if same_row else "u"
    ranges = {"t": T_sym, "u": T_sym, "s": T_sym, "v": T_sym, "i": d_sym, "j": d_sym - k_sym}
    weights = _weights("t", "s", gain, ranges) * _weights(other, "v", gain, ranges)
    common = (g.tensor("c", "i", ranges=ranges) * g.tensor("c", "i", ranges=ranges)).summed_over("i").scaled(p)
    perp = (g.tensor("G", "s", "j", ranges=ranges) * g.tensor("G", "v", "j", ranges=ranges)).summed_over("j")
    private = perp + g.IndexSum((g.Term(sympy.Integer(1), (g.Factor("Z", ("s", "v")),)),), ranges)
    expr = (weights * (common + private.scaled(q - p))).summed_over("s", "v").scaled(1 / d_sym)
    expr = g.contract(g.wick(expr, {"c": sympy.Integer(1), "G": sympy.Integer(1)}))
    return sympy.expand(_read(expr))


def _read(expr: g.IndexSum) -> sympy.Expr:
    """Attention moments of the terms without Z; the terms with Z summed into the symbol W."""
    plain = g.IndexSum(tuple(t for t in expr.terms if not any(f.name == "Z" for f in t.factors)), expr.ranges)
    with_z = [t for t in expr.terms if any(f.name == "Z" for f in t.factors)]
    total = g.attention_moments(plain)
    for term in with_z:
        total += term.coeff * _z_moment(term)
    return total


def _z_moment(term: g.Term) -> sympy.Expr:
    """E of one term holding Z_sv: sum A A' Z -> W; sum A Z (or A' Z) -> k (softmax shift identity); sum Z -> k T."""
    a_factors = [f for f in term.factors if f.name == "A"]
    if len(a_factors) == 2:
        return W
    if len(a_factors) == 1:
        return k_sym
    return k_sym * T_sym


@lru_cache(maxsize=None)
def softmax_shift_identity(T: int = 3, k: int = 2) -> sympy.Expr:
    """sum_{r,s} d/d zeta_r . (A_s zeta_s), simplified for T keys in k dimensions: the constant k.

    Stein's lemma over the Gaussian keys gives E sum_{r,s} A_s zeta_s.zeta_r = E[that divergence];
    it is k because the softmax is shift invariant (sum_r dA_s/dl_r = 0). Checked here with
    explicit symbolic keys and query vector (the identity holds sample by sample, for every T).
    """
    zeta = [[sympy.Symbol(f"z_{s}_{a}", real=True) for a in range(k)] for s in range(T)]
    v = [sympy.Symbol(f"v_{a}", real=True) for a in range(k)]
    logits = [sum(v[a] * zeta[s][a] for a in range(k)) for s in range(T)]
    norm = sum(sympy.exp(x) for x in logits)
    A = [sympy.exp(x) / norm for x in logits]
    divergence = sum(sympy.diff(A[s] * zeta[s][a], zeta[r][a]) for r in range(T) for s in range(T) for a in range(k))
    return sympy.simplify(divergence)


@lru_cache(maxsize=None)
def effective_moments() -> dict[str, sympy.Expr]:
    """Y2_eff and Yp_eff: the moments that replace Y2, Yp in the infinite-width overlap map (eq. 23).

    Read off :func:`key_decomposition`: vanilla attention gives p + (q - p) M_eff, and the gain-controlled
    form (q - p)(M_eff - 1/T) -- checked to hold with the same M_eff in tests/derive/test_finite_width.py.
    """
    same = key_decomposition(True, False)
    pair = key_decomposition(False, False)
    read = lambda expr, moment: sympy.collect(sympy.expand(sympy.cancel((expr - p) / (q - p))), [moment, W, Z2])
    return {"Y2_eff": read(same.subs({k_sym: 1, W: Z2}), Y2), "Yp_eff": read(pair.subs(k_sym, 2), Yp)}


def output_overlap(same_row: bool, gain: bool) -> sympy.Expr:
    """sigma_v2 times :func:`key_decomposition` with k and W named: q_out (same_row) or p_out, finite width."""
    expr = key_decomposition(same_row, gain)
    subs = {k_sym: 1, W: Z2} if same_row else {k_sym: 2}
    return sympy.expand(sigma_v2 * expr.subs(subs))


# --- 3. the key-selection term --------------------------------------------------------------

def _score_derivative(term: g.Term, row: str, col: str) -> g.IndexSum:
    """d/d a_{row,col} of a product of attention entries and scores (the softmax's eq. 29 for A)."""
    scores = [f for f in term.factors if f.name == "a"]
    rest = g.Term(term.coeff, tuple(f for f in term.factors if f.name != "a"), term.summed)
    out = list(g.derivative(rest, row, col).terms)
    out = [g.Term(t.coeff, tuple(sorted(t.factors + tuple(scores))), t.summed) for t in out]
    for k, f in enumerate(scores):
        others = scores[:k] + scores[k + 1:]
        deltas = (g.delta(f.idx[0], row), g.delta(f.idx[1], col))
        out.append(g.Term(term.coeff, tuple(sorted(rest.factors + tuple(others) + deltas)), term.summed))
    return g.IndexSum(tuple(out), {})


def _stein_once(expr: g.IndexSum, variance, fresh: tuple[str, str]) -> g.IndexSum:
    """Stein's lemma on the first score factor of every term (other score factors are differentiated too)."""
    out, ranges = [], dict(expr.ranges)
    k, l = fresh
    for term in expr.terms:
        scores = [f for f in term.factors if f.name == "a"]
        if not scores:
            out.append(term)
            continue
        a = scores[0]
        t, s = a.idx
        rest = list(term.factors)
        rest.remove(a)
        rest_term = g.Term(term.coeff, tuple(rest), term.summed)
        cov = (g.Factor("Q", (t, k)), g.Factor("Q", (s, l)))
        for d in _score_derivative(rest_term, k, l).terms:
            out.append(g.Term(d.coeff * variance, tuple(sorted(d.factors + cov)), d.summed | {k, l}))
        ranges.setdefault(k, ranges.get(t))
        ranges.setdefault(l, ranges.get(s))
    return g.IndexSum(tuple(out), ranges)


@lru_cache(maxsize=None)
def selection_one_row() -> sympy.Expr:
    """Z2 = E (sum_s A_s z_s)^2 for one row of i.i.d. scores a_s = b z_s, in attention moments.

    (sum A a)^2 has two score factors; Stein's lemma is applied twice (score covariance b^2 delta,
    eq. 9 at q = 1, p = 0 for the private part of one row), then divided by b^2.
    """
    ranges = {"t": T_sym, "s": T_sym, "v": T_sym}
    one = (g.tensor("A", "t", "s", ranges=ranges) * g.tensor("a", "t", "s", ranges=ranges)).summed_over("s")
    two = (g.tensor("A", "t", "v", ranges=ranges) * g.tensor("a", "t", "v", ranges=ranges)).summed_over("v")
    expr = _stein_once(one * two, b2, ("k", "l"))
    expr = _stein_once(expr, b2, ("m", "n"))
    expr = g.mean_field(g.contract(expr))
    return sympy.expand(g.attention_moments(expr).subs({q: 1, p: 0}) / b2)


@lru_cache(maxsize=None)
def selection_diagonal_one_row() -> sympy.Expr:
    """Z2_diag = E sum_s A_s^2 z_s^2: the diagonal (s = s') part of Z2, in attention moments.

    sum_s A_s^2 a_s^2 has two score factors on one key; Stein's lemma twice (as :func:`selection_one_row`),
    divided by b^2. For keys of fixed norm this part of the Gaussian key-selection term is absent (step 5).
    """
    ranges = {"t": T_sym, "s": T_sym}
    A, a = g.tensor("A", "t", "s", ranges=ranges), g.tensor("a", "t", "s", ranges=ranges)
    expr = _stein_once((A * A * a * a).summed_over("s"), b2, ("k", "l"))
    expr = _stein_once(expr, b2, ("m", "n"))
    expr = g.mean_field(g.contract(expr))
    return sympy.expand(g.attention_moments(expr).subs({q: 1, p: 0}) / b2)


#: The diagonal part of Z2 (a symbol of the numeric quantity).
Z2_diag = sympy.Symbol("Z2_diag", positive=True)


@lru_cache(maxsize=None)
def normalized_effective_same() -> sympy.Expr:
    """Y2_eff for tokens of fixed norm (step 5): the Gaussian Y2_eff of :func:`effective_moments` without the
    diagonal keys' norm coupling, (Z2_diag - Y2)/d: Y2 + (Z2 - Z2_diag)/d."""
    gaussian = effective_moments()["Y2_eff"]
    return sympy.expand(gaussian - (Z2_diag - Y2) / d_sym)


#: The diagonal keys' part of the two-row term W (a symbol of the numeric quantity).
W_diag = sympy.Symbol("W_diag", real=True)


@lru_cache(maxsize=None)
def normalized_effective_pair() -> sympy.Expr:
    """Yp_eff for tokens of fixed norm (step 5, two rows): the Gaussian Yp_eff of :func:`effective_moments`
    without the diagonal keys' norm coupling. A diagonal key carries |x_s|^2/d = 1 exactly instead of
    (|zeta_s|^2 + |g_perp|^2)/d (mean (1 - 2/d) + |zeta_s|^2/d), so (W_diag - 2 Yp)/d leaves:
    Yp + (W - W_diag)/d, with W_diag = E sum_s A_s A'_s |zeta_s|^2 the ``first`` integrand of
    :func:`selection_pair_integrands` and Yp under the sphere law (:func:`sphere_pair_density`)."""
    gaussian = effective_moments()["Yp_eff"]
    return sympy.expand(gaussian - (W_diag - 2 * Yp) / d_sym)


def sphere_pair_density() -> tuple[sympy.Expr, sympy.Symbol, sympy.Symbol]:
    """(density, z1, z2): the law of sqrt(d) (x_1, x_2) for x uniform on the unit sphere of R^d (a normalized
    key's projections on the two rows' query directions, step 5):
    Gamma(d/2)/(Gamma((d-2)/2) pi d) (1 - (z1^2 + z2^2)/d)^((d-4)/2) on z1^2 + z2^2 < d; its z2-marginal is
    :func:`sphere_projection_density` (tests/derive/test_finite_width.py)."""
    z1, z2 = sympy.symbols("z1 z2", real=True)
    norm = sympy.gamma(d_sym / 2) / (sympy.gamma((d_sym - 2) / 2) * sympy.pi * d_sym)
    return norm * (1 - (z1 ** 2 + z2 ** 2) / d_sym) ** ((d_sym - 4) / 2), z1, z2


@lru_cache(maxsize=None)
def normalized_chain_factor():
    """The chain's factor M for tokens of fixed norm (step 5, two rows): the first step is the two query
    tokens' Gram matrix with unit diagonal, Cholesky factor [[1, 0], [r, sqrt(1 - r^2)]] (r the cosine of two
    independent directions in R^(n_1)), followed by the Bartlett factors of the d_h and d steps as in
    :func:`chain_factor`. Returns the variables, M's entries and the mean and variance of m21 given r and the
    chi-squares (it is linear in z_2, z_3): what :func:`numeric.width_law.normalized_pair_rule` integrates."""
    r = sympy.Symbol("r", real=True)
    c = sympy.symbols("c_2 c_3", positive=True)
    cp = sympy.symbols("cp_2 cp_3", positive=True)
    z = sympy.symbols("z_2 z_3", real=True)
    first = sympy.Matrix([[1, 0], [r, sympy.sqrt(1 - r ** 2)]])
    L = [sympy.Matrix([[sympy.sqrt(c[k]), 0], [z[k], sympy.sqrt(cp[k])]]) for k in range(2)]
    M = sympy.expand(first * L[0] * L[1] / sympy.sqrt(n_syms[1] * n_syms[2]))
    m21 = M[1, 0]
    mean = m21.subs({z[0]: 0, z[1]: 0})
    variance = sympy.factor(sum(sympy.diff(m21, zk) ** 2 for zk in z))
    return {"r": r, "c": c, "cp": cp, "z": z, "m11": M[0, 0], "m21": m21, "m22": M[1, 1],
            "m21_mean": mean, "m21_variance": variance}


# --- 6. normalized tokens at p > 0: the common direction ---------------------------------------------

#: Bookkeeping parameter of the expansion: 1/sqrt(d); the input cosine rho in (0, 1) (positive, so that SymPy
#: combines its square roots; :data:`rho` is substituted at the end).
lam = sympy.Symbol("lambda", positive=True)
rho_in = sympy.Symbol("rho_in", positive=True)
#: The key's fluctuations: gamma (the common vector's norm, shared by all keys), nu (its private part along the
#: common direction), omega (the private part's norm), each N(0, 1); z its projection on the query direction.
gamma_, nu_, omega_, z_ = sympy.symbols("gamma nu omega z", real=True)


@lru_cache(maxsize=None)
def normalized_key():
    """(kappa, eta): a normalized key's scale and its common-direction share, to O(1/d) (step 6).

    With q = 1, x_s = sqrt(rho) c + sqrt(1 - rho) g_s and x_hat_s = kappa_s x_s of norm sqrt(d):
    |c|^2/d = 1 + sqrt(2) lam gamma, c_hat.g_s = nu, |g_s|^2/d = 1 + sqrt(2) lam omega + lam^2 (z^2 - 1) +
    lam^2 (nu^2 - 1) (the query direction's and the common direction's projections split off the chi-square),
    kappa_s = (|x_s|^2/d)^(-1/2), and x_hat_s.c_hat/sqrt(rho d) = 1 + eta_s. The key's score is b z kappa_s.
    """
    C = 1 + sympy.sqrt(2) * lam * gamma_
    G = 1 + sympy.sqrt(2) * lam * omega_ + lam ** 2 * (z_ ** 2 - 1) + lam ** 2 * (nu_ ** 2 - 1)
    common, private = sympy.sqrt(rho_in), sympy.sqrt(1 - rho_in)
    norm2 = rho_in * C + 2 * common * private * lam * nu_ * sympy.sqrt(C) + (1 - rho_in) * G
    kappa = norm2 ** sympy.Rational(-1, 2)
    eta = kappa * (sympy.sqrt(C) + private / common * lam * nu_) - 1
    return kappa, eta


def _to_second_order(expr) -> sympy.Expr:
    return sympy.expand(sympy.series(expr, lam, 0, 3).removeO())


def _gaussian_mean(expr, variables) -> sympy.Expr:
    """E over independent N(0, 1) ``variables`` of a polynomial in them."""
    out = sympy.Integer(0)
    for term in sympy.Add.make_args(sympy.expand(expr)):
        value = term
        for v in variables:
            k = sympy.degree(value, v)
            value = value.subs(v, 1) * (sympy.factorial2(k - 1) if k % 2 == 0 else 0) if k else value
        out += value
    return sympy.expand(out)


@lru_cache(maxsize=None)
def common_direction_coefficients() -> dict[str, sympy.Expr]:
    """The O(1/d) coefficients of the common direction's share for normalized tokens (step 6), times d:

    - ``cosine``: E x_hat_s.x_hat_s'/(rho d) - 1 for two keys without selection (the mean cosine of two
      normalized Gaussian tokens of correlation rho: -(1 - rho^2)/2);
    - ``z``: the coefficient of z^2 - 1 in E[eta | z] (a key far along the query direction has less room for
      the common one);
    - ``key``: sum over the key's own fluctuations k = nu, omega of d_k kappa d_k eta (Stein: the softmax
      selects keys of large kappa, i.e. of small raw norm, whose private part points away from c);
    - ``shared``: d_gamma kappa d_gamma eta (gamma rescales every score of a row alike).
    """
    kappa, eta = normalized_key()
    fluct = (gamma_, nu_, omega_)
    nu2, omega2, z2 = sympy.symbols("nu_2 omega_2 z_2", real=True)
    other = eta.subs({nu_: nu2, omega_: omega2, z_: z2})
    pair = _gaussian_mean(_to_second_order((1 + eta) * (1 + other)), fluct + (nu2, omega2))
    cosine = sympy.expand(pair.subs({z_ ** 2: 1, z2 ** 2: 1}) - 1)
    at0 = lambda e, v: sympy.diff(e, v).subs({v_: 0 for v_ in fluct})
    mean_eta = _gaussian_mean(_to_second_order(eta), fluct)
    coeff = lambda e: sympy.factor(sympy.expand(e).coeff(lam, 2))
    out = {"cosine": coeff(cosine), "z": sympy.factor(mean_eta.coeff(z_, 2).coeff(lam, 2)),
           "key": coeff(sum(_to_second_order(at0(kappa, v) * at0(eta, v)) for v in (nu_, omega_))),
           "shared": coeff(_to_second_order(at0(kappa, gamma_) * at0(eta, gamma_)))}
    return {name: sympy.factor(value.subs(rho_in, rho)) for name, value in out.items()}


#: Row moments of the selection terms below (symbols of numeric quantities): Y4 = E sum A^4.
Y4 = sympy.Symbol("Y4", positive=True)


def _one_row_stein(expr: g.IndexSum, times: int) -> sympy.Expr:
    """E of a one-row expression in A and scores a (score variance b2), by Stein's lemma ``times`` times."""
    for k in range(times):
        expr = _stein_once(expr, b2, (f"k{k}", f"l{k}"))
    return sympy.expand(g.attention_moments(g.mean_field(g.contract(expr))).subs({q: 1, p: 0}))


@lru_cache(maxsize=None)
def selection_pulls() -> dict[str, sympy.Expr]:
    """One row's selection moments of step 6 (Stein's lemma on the scores a = b z):

    - ``X`` = E sum_s A_s z_s^2 - 1 = E sum_s A_s (1 - A_s) b z_s (the pull of the weights A_s);
    - ``J`` = E sum_s d/dl_s[A_s (1 - A_s)] b z_s (the pull of the off-diagonal weights A_s (1 - A_s));
    - ``Xoff`` = E sum_s A_s (1 - A_s)(z_s^2 - 1);
    - ``scale`` = E d/de sum_s A_s (1 - A_s) at scores a (1 + e) (every score of the row rescaled).
    """
    ranges = {"t": T_sym, "s": T_sym, "v": T_sym}
    A, a = g.tensor("A", "t", "s", ranges=ranges), g.tensor("a", "t", "s", ranges=ranges)
    Av = g.tensor("A", "t", "v", ranges=ranges)
    one = lambda e, n: _one_row_stein(e.summed_over("s"), n)
    pull = one(A * a * a, 2) / b2 - 1
    weights = one(A * a, 1) - 3 * one(A * A * a, 1) + 2 * one(A * A * A * a, 1)
    square_pull = one(A * A * a, 1) - _one_row_stein((A * a).summed_over("s") * (Av * Av).summed_over("v"), 1)
    return {"X": sympy.expand(pull), "J": sympy.expand(weights),
            "Xoff": sympy.expand(pull - (selection_diagonal_one_row() - Y2)),
            "scale": sympy.expand(-2 * square_pull)}


#: Each row's pull X_t, X_u in a pair, and one row's J and scale pulls (symbols of numeric quantities).
X_t, X_u = sympy.symbols("X_t X_u", real=True)
J_pull, scale_pull = sympy.symbols("J scale", real=True)


@lru_cache(maxsize=None)
def common_direction_norm() -> sympy.Expr:
    """The change of q_out/(sigma_v2 q) for normalized tokens at input cosine rho (step 6), O(1/d), in the row's
    pulls J and scale of :func:`selection_pulls` (Xoff = J: the same Stein identity, tests/derive):

    q_out = Y2 + sum_{s != s'} A_s A_s' x_hat_s.x_hat_s'/d; the common direction's share of the off-diagonal
    sum is rho E sum_{s != s'} A_s A_s' (1 + eta_s)(1 + eta_s'), which differs from rho (1 - Y2) by
    rho (1 - Y2) cosine/d + 2 rho [key J + z Xoff + shared scale]/d (Stein over each key's fluctuations and
    over the shared gamma; :func:`common_direction_coefficients`)."""
    c = common_direction_coefficients()
    return sympy.expand(rho * ((1 - Y2) * c["cosine"] + 2 * ((c["key"] + c["z"]) * J_pull
                                                             + c["shared"] * scale_pull)) / d_sym)


@lru_cache(maxsize=None)
def common_direction_pair() -> sympy.Expr:
    """The change of p_out/(sigma_v2 q) for normalized tokens at input cosine rho (step 6), O(1/d), for rows
    of pulls X_t, X_u: rho (1 - Yp) cosine/d + rho (key + z)(X_t + X_u)/d (each row's weights A sum to 1, so
    the shared gamma does not select; terms of order Yp/d dropped)."""
    c = common_direction_coefficients()
    return sympy.expand(rho * ((1 - Yp) * c["cosine"] + (c["key"] + c["z"]) * (X_t + X_u)) / d_sym)


@lru_cache(maxsize=None)
def common_direction_per_spread() -> tuple[sympy.Expr, sympy.Expr]:
    """:func:`common_direction_norm` and :func:`common_direction_pair` divided by 1 - rho (every coefficient of
    :func:`common_direction_coefficients` carries that factor): the common direction's share as a change of the
    effective moments of rows that see the same keys (an encoder layer), since
    sigma_v2 (p + (q - p) Y2_eff) + sigma_v2 q dq = sigma_v2 (p + (q - p) (Y2_eff + dq/(1 - rho))) with
    rho = p/q; finite as rho -> 1."""
    return tuple(sympy.expand(sympy.cancel(expr / (1 - rho)))
                 for expr in (common_direction_norm(), common_direction_pair()))


def sphere_projection_density() -> tuple[sympy.Expr, sympy.Symbol]:
    """(density, z): the law of z = sqrt(d) x_1 for x uniform on the unit sphere of R^d (a normalized key's
    projection on a fixed direction, step 5): Gamma(d/2)/(Gamma((d-1)/2) sqrt(pi d)) (1 - z^2/d)^((d-3)/2)
    on |z| < sqrt(d); it integrates to 1 and tends to N(0, 1) as d -> oo (tests/derive/test_finite_width.py)."""
    z = sympy.Symbol("z", real=True)
    norm = sympy.gamma(d_sym / 2) / (sympy.gamma((d_sym - 1) / 2) * sympy.sqrt(sympy.pi * d_sym))
    return norm * (1 - z ** 2 / d_sym) ** ((d_sym - 3) / 2), z


#: A normalized key's law given the rest of its norm (step 6): the k projections' radius r, the rest D of the
#: key's squared norm (in units of d, the common direction's part included) and a = (1 - rho)/d.
key_r, key_D, key_a = sympy.symbols("r D a", positive=True)
key_k = sympy.Symbol("k", integer=True, positive=True)


@lru_cache(maxsize=None)
def normalized_key_density() -> sympy.Expr:
    """The radial density in R^k of a normalized key's k projections zeta on its rows' query directions, given
    the rest D of its squared norm (step 6; :func:`numeric.width_law.key_density` averages it over D).

    The key is z ~ N(0, I_k) on the query directions and the rest, so zeta = z/sqrt(D + a|z|^2): a radial
    map s = |z| -> r = |zeta|. Inverting it, s(r) = r sqrt(D/(1 - a r^2)), and the density is the Gaussian's
    at s(r) times the map's Jacobian s'(r) (s/r)^(k-1):

        p(zeta | D) = (2 pi)^(-k/2) D^(k/2) (1 - a r^2)^(-(k+2)/2) exp(-D r^2/(2 (1 - a r^2))),  a r^2 < 1.

    At D = 1, a -> 0 it is N(0, I_k) (tests/derive/test_finite_width.py checks the law of |zeta| against
    the chi distribution of |z|)."""
    s_ = sympy.Symbol("s", positive=True)
    (radius,) = sympy.solve(sympy.Eq(key_r, s_ / sympy.sqrt(key_D + key_a * s_ ** 2)), s_)
    jacobian = sympy.diff(radius, key_r) * (radius / key_r) ** (key_k - 1)
    gaussian = (2 * sympy.pi) ** (-key_k / 2) * sympy.exp(-radius ** 2 / 2)
    return sympy.powsimp(sympy.simplify(gaussian * jacobian), force=True)


# Laplace/Price form of the two-row selection term (numeric.two_rows evaluates it) ---------

_t, _u = sympy.symbols("t t_prime", real=True)
_f, _l = sympy.Function("f"), sympy.Function("l")
#: Price's theorem: E[F^(i)(t + l) G^(j)(t' + l')] is the (i, j)-th (t, t') derivative of the named smoothing.
_PRICE = {("f", 0, "f", 0): "N", ("f", 2, "f", 0): "N_tt", ("f", 1, "f", 1): "N_tu", ("f", 0, "f", 2): "N_uu",
          ("f", 1, "l", 0): "P_t", ("l", 0, "f", 1): "Q_u"}
#: A key that only one row sees (rows with different key sets): E f'(t + l) = F1_t (row 1), E f'(t' + l') = F2_u.
_PRICE_ONE = {("f", 1, "t"): "F1_t", ("f", 1, "u"): "F2_u"}


def laplace_kernels():
    """f(x) = exp(x - e^x) and l(x) = exp(-e^x): u w e^(-u w) and e^(-u w) at x = log(u w) (eq. 22's Laplace form).

    Returns (f, l, l' + f): SymPy shows l' = -f, which the integrands use (the last entry simplifies to 0).
    """
    x = sympy.Symbol("x", real=True)
    f, l = sympy.exp(x - sympy.exp(x)), sympy.exp(-sympy.exp(x))
    return f, l, sympy.simplify(sympy.diff(l, x) + f)


@lru_cache(maxsize=None)
def selection_pair_integrands() -> tuple[sympy.Expr, sympy.Expr]:
    """The two integrands of W = T int int first K^(T-1) + T (T-1) int int second K^(T-2) (dt dt').

    Two keys' log-weights are l = v.zeta, l' = v'.zeta with zeta ~ N(0, I_2) and Gram(v, v') = S.
    Diagonal keys: E[|zeta|^2 f(t + l) f(t' + l')] = 2 E[f f] + E[Laplacian_zeta (f f)] (Stein twice).
    Distinct keys: E[zeta f(t + l) l(t' + l')] . E[zeta l(t + l) f(t' + l')] with E[zeta h] = E[grad_zeta h]
    (Stein once), each factor averaged over its own key. Price's theorem names the averages
    (:data:`_PRICE`: N = E f f, P = E f l, Q = E l f and their t/t' derivatives); l' = -f
    (:func:`laplace_kernels`) turns the derivatives of l into -N.
    """
    z1, z2 = sympy.symbols("zeta_1 zeta_2", real=True)
    v1, v2, w1, w2 = sympy.symbols("v_1 v_2 w_1 w_2", real=True)
    x1, x2 = _t + v1 * z1 + v2 * z2, _u + w1 * z1 + w2 * z2
    both = _f(x1) * _f(x2)
    laplacian = sympy.diff(both, z1, 2) + sympy.diff(both, z2, 2)
    first = 2 * _price_named(both) + _price_named(laplacian)
    h1, h2 = _f(x1) * _l(x2), _l(x1) * _f(x2)
    second = sum(_price_named(sympy.diff(h1, z)) * _price_named(sympy.diff(h2, z)) for z in (z1, z2))
    gram = ((S11, (v1, v1), (v2, v2)), (S22, (w1, w1), (w2, w2)), (S12, (v1, w1), (v2, w2)))
    return _in_gram(sympy.expand(first), gram), _in_gram(sympy.expand(second), gram)


@lru_cache(maxsize=None)
def selection_mixed_integrands() -> tuple[sympy.Expr, sympy.Expr, sympy.Expr]:
    """The integrands of W's terms with keys that one row sees and the other does not (a causal or windowed mask).

    Row 1 sees its n shared keys and m1 of its own, row 2 the n and m2 of its own. A key of row 1 only
    enters row 1's normalisation through L1 = E l(t + l) and its numerator through E f(t + l); Stein once
    per key (E[zeta h] = E[grad_zeta h]) and Price's theorem give, for the key pairs (s, s') with s in row 1
    and s' in row 2,

        W = n int int first K^(n-1) L1^m1 L2^m2 + n (n-1) int int second K^(n-2) L1^m1 L2^m2
            + m1 n int int third K^(n-1) L1^(m1-1) L2^m2 + n m2 int int fourth K^(n-1) L1^m1 L2^(m2-1)
            + m1 m2 int int fifth K^n L1^(m1-1) L2^(m2-1)

    (first, second: :func:`selection_pair_integrands`), and Yp = n int int N K^(n-1) L1^m1 L2^m2.
    Returns (third: s own to row 1, s' shared; fourth: s shared, s' own to row 2; fifth: both own).
    """
    z1, z2 = sympy.symbols("zeta_1 zeta_2", real=True)
    v1, v2, w1, w2 = sympy.symbols("v_1 v_2 w_1 w_2", real=True)
    x1, x2 = _t + v1 * z1 + v2 * z2, _u + w1 * z1 + w2 * z2
    own1, own2 = _f(x1), _f(x2)
    shared1, shared2 = _f(x1) * _l(x2), _l(x1) * _f(x2)

    def pair(a, b):
        return sum(_price_named(sympy.diff(a, z)) * _price_named(sympy.diff(b, z)) for z in (z1, z2))

    gram = ((S11, (v1, v1), (v2, v2)), (S22, (w1, w1), (w2, w2)), (S12, (v1, w1), (v2, w2)))
    return tuple(_in_gram(sympy.expand(pair(a, b)), gram)
                 for a, b in ((own1, shared2), (shared1, own2), (own1, own2)))


def _kernel_factor(factor):
    """(kernel name, derivative order, side) of f(x), l(x) or a Subs(Derivative(...)) at x = t + l or t' + l'."""
    if isinstance(factor, sympy.Subs):
        derivative, point = factor.expr, factor.point[0]
        name, order = derivative.expr.func.__name__, derivative.derivative_count
    elif isinstance(factor, sympy.core.function.AppliedUndef):
        name, order, point = factor.func.__name__, 0, factor.args[0]
    else:
        return None
    return name, order, ("t" if point.has(_t) else "u")


def _price_named(expr) -> sympy.Expr:
    """Replace every product F^(i)(t + l) G^(j)(t' + l') by its Price name; l' = -f first."""
    out = sympy.Integer(0)
    for term in sympy.Add.make_args(sympy.expand(expr.doit())):
        coeff, kernels = sympy.Integer(1), {}
        for factor in sympy.Mul.make_args(term):
            info = _kernel_factor(factor)
            if info is None:
                coeff *= factor
                continue
            name, order, side = info
            if name == "l" and order == 1:            # l' = -f (laplace_kernels)
                coeff, name, order = -coeff, "f", 0
            if name == "l" and order > 1:
                raise ValueError(f"unexpected derivative of l in {term}")
            kernels[side] = (name, order)
        if len(kernels) == 1:                          # a key of one row only
            (side, kernel), = kernels.items()
            if kernel + (side,) not in _PRICE_ONE:
                raise ValueError(f"no named smoothing for the one-row kernel {kernel} in {term}")
            out += coeff * sympy.Symbol(_PRICE_ONE[kernel + (side,)], real=True)
            continue
        key = kernels["t"] + kernels["u"]
        if key not in _PRICE:
            raise ValueError(f"no named smoothing for the kernels {key} in {term}")
        out += coeff * sympy.Symbol(_PRICE[key] if key != ("f", 1, "f", 0) else "N_t", real=True)
    return out


def _in_gram(expr, gram) -> sympy.Expr:
    """Rewrite a quadratic form in the components of v, v' through their Gram matrix S (rotation invariance).

    ``gram``: (name, (a, b), (c, d)) with name = a b + c d; a term not of that form raises ValueError.
    """
    out = sympy.Integer(0)
    for name, (a, b), (c, d) in gram:
        coeff = expr.coeff(a * b) if a != b else expr.coeff(a, 2)
        other = expr.coeff(c * d) if c != d else expr.coeff(c, 2)
        if sympy.simplify(coeff - other) != 0:
            raise ValueError(f"not rotation invariant: {coeff} vs {other}")
        out += name * coeff
        expr = sympy.expand(expr - coeff * (a * b + c * d))
    if any(s.name.startswith(("v_", "w_")) for s in expr.free_symbols):
        raise ValueError(f"terms left after the Gram rewrite: {expr}")
    return sympy.expand(out + expr)


# --- 4. the law of the rows' score covariance: a chain of Wishart matrices --------------------

#: Degrees of freedom of the three Wishart steps: tokens (d), queries W_Q x (d_h), u = W_K^T W_Q x (d).
n_syms = sympy.symbols("n_1 n_2 n_3", positive=True)


@lru_cache(maxsize=None)
def chain_factor():
    """Bartlett factors of the chain: S = b2 C M M^T C^T, M = L_1 L_2 L_3 / sqrt(n_1 n_2 n_3).

    Each step k is a Wishart matrix W_2(n_k, previous)/n_k, i.e. previous^(1/2) L_k L_k^T previous^(1/2)T / n_k
    with L_k = [[sqrt(c_k), 0], [z_k, sqrt(c'_k)]], c_k ~ chi2(n_k), c'_k ~ chi2(n_k - 1), z_k ~ N(0, 1);
    C = [[1, 0], [rho, sqrt(1 - rho^2)]] is the Cholesky factor of the mean [[1, rho], [rho, 1]].
    Returns a dict: the Bartlett variables, M's entries m11, m21, m22 and the entries of S/b2.
    """
    c = sympy.symbols("c_1 c_2 c_3", positive=True)
    cp = sympy.symbols("cp_1 cp_2 cp_3", positive=True)
    z = sympy.symbols("z_1 z_2 z_3", real=True)
    L = [sympy.Matrix([[sympy.sqrt(c[k]), 0], [z[k], sympy.sqrt(cp[k])]]) for k in range(3)]
    M = sympy.expand(L[0] * L[1] * L[2] / sympy.sqrt(n_syms[0] * n_syms[1] * n_syms[2]))
    C = sympy.Matrix([[1, 0], [rho, sympy.sqrt(1 - rho ** 2)]])
    S = sympy.expand(C * M * M.T * C.T)
    return {"c": c, "cp": cp, "z": z, "m11": M[0, 0], "m21": M[1, 0], "m22": M[1, 1],
            "S11": S[0, 0], "S12": S[0, 1], "S22": S[1, 1]}


def _expect(expr, chain):
    """E over the independent Bartlett variables of a sum of monomials in them (half-integer powers of
    the chi-squares included): E c^a = 2^a Gamma(n/2 + a)/Gamma(n/2), E z^j = (j - 1)!! (j even) or 0."""
    laws = {}
    for k in range(3):
        laws[chain["c"][k]] = ("chi2", n_syms[k])
        laws[chain["cp"][k]] = ("chi2", n_syms[k] - 1)
        laws[chain["z"][k]] = ("normal", None)
    out = sympy.Integer(0)
    for term in sympy.Add.make_args(sympy.expand(expr)):
        powers = term.as_powers_dict()
        if any(laws.get(base, ("",))[0] == "normal" and power % 2 for base, power in powers.items()):
            continue                                           # an odd power of a centred normal: zero
        value = sympy.Integer(1)
        for base, power in powers.items():
            if base not in laws:
                value *= base ** power
            elif laws[base][0] == "normal":
                value *= sympy.factorial2(power - 1)
            else:
                half = laws[base][1] / 2
                value *= (2 ** power * sympy.rf(half, power) if power.is_integer
                          else 2 ** power * sympy.gamma(half + power) / sympy.gamma(half))
        out += value
    return sympy.factor(sympy.expand(out))


@lru_cache(maxsize=None)
def chain_mean():
    """E S/b2 (exactly [[1, rho], [rho, 1]]: each Wishart step is unbiased) and E m21^2 (quadrature's variance)."""
    chain = chain_factor()
    mean = {name: _expect(chain[name], chain) for name in ("S11", "S12", "S22")}
    return mean, _expect(chain["m21"] ** 2, chain)


@lru_cache(maxsize=None)
def chain_covariance():
    """Exact Cov(S_ij, S_kl)/b2^2 for the pairs (11,11), (11,12), (11,22), (12,12), (12,22), (22,22).

    At leading order in 1/n it is (1/n_1 + 1/n_2 + 1/n_3)(S_ik S_jl + S_il S_jk) with S the mean
    (tests/derive/test_finite_width.py): the three steps add their Wishart fluctuations.
    """
    chain = chain_factor()
    mean, _ = chain_mean()
    names = ("S11", "S12", "S22")
    out = {}
    for i, a in enumerate(names):
        for b in names[i:]:
            out[(a, b)] = sympy.factor(_expect(chain[a] * chain[b], chain) - mean[a] * mean[b])
    return out


@lru_cache(maxsize=None)
def covariance_from_factor() -> dict[str, sympy.Expr]:
    """S/b2 = C [[m11, 0], [m21, m22]] [[m11, 0], [m21, m22]]^T C^T in the entries of M (what the quadrature
    sums over)."""
    m11, m21, m22 = sympy.symbols("m11 m21 m22", real=True)
    M = sympy.Matrix([[m11, 0], [m21, m22]])
    C = sympy.Matrix([[1, 0], [rho, sympy.sqrt(1 - rho ** 2)]])
    S = sympy.expand(C * M * M.T * C.T)
    return {"S11": S[0, 0], "S12": S[0, 1], "S22": S[1, 1]}
