"""Exact finite-T attention moments as integrals, stated and checked by SymPy (issue 6).

Paper (Giorlandino & Goldt): B.1 (eq. 9, the score covariance), eq. (2) (the
IPR), eq. (22) (the pair term Yp); Result 1 is their T -> oo limit. Here T is
finite and the statements are exact; :mod:`numeric.finite_t` evaluates them.

1. Score model (:func:`score_model`, :func:`score_covariance`). With g, u, v, w
   i.i.d. N(0, 1) and sigma = beta sqrt(ln T),

       a_ts = sigma [(q - p) g_ts + sqrt(p (q - p)) (u_t + v_s) + p w]

   has Cov(a_ts, a_kl) = sigma^2 q_tk q_sl (eq. 9). In row t the terms u_t, w
   are common to every key and cancel in the softmax, leaving log-weights
   b z_s with z_s i.i.d. N(0, 1) and b^2 = beta^2 ln T q (q - p); two rows
   share v_s, so their log-weights have correlation rho = p/q
   (:func:`row_statistics`).

2. Laplace representations (:func:`ipr_integral`, :func:`ipr_square_integral`,
   :func:`ipr_pair_integral`). From x^-r = Gamma(r)^-1 int_0^oo u^(r-1) e^(-ux) du
   (:func:`gamma_identity`) applied to the row sum S = sum_s w_s, Fubini and
   the independence of the T weights, with L(u) = E e^(-u w) the Laplace
   transform of the log-normal weight w = e^(b z):

       E sum_s A^r      = T/Gamma(r) int_0^oo u^(r-1) E[w^r e^(-uw)] L(u)^(T-1) du,
       E (sum_s A^2)^2  = 1/Gamma(4) int_0^oo u^3 [T E(w^4 e^(-uw)) L^(T-1)
                                                  + T(T-1) (E w^2 e^(-uw))^2 L^(T-2)] du,
       E sum_s A_ts A_t's = T int int E[w w' e^(-uw - vw')] (E e^(-uw - vw'))^(T-1) du dv,

   the last with (w, w') = (e^(b z), e^(b z')), corr(z, z') = rho.

The checks (tests/derive/test_finite_t.py) let SymPy do each step: the Gamma
identity, the Fubini step per sample (:func:`fubini_integrand`), the uniform
limit b -> 0 (T^(1-r), 1/T^2, 1/T), T = 2 (the logistic form 2 E sigma(b(z1 - z2))^r),
independent rows rho = 0 (exactly 1/T) and identical rows rho = 1 (the IPR).
"""

from __future__ import annotations

from functools import lru_cache

import sympy

from .symbols import T, beta, p, q, r, rho

#: Laplace variables and the standard normal integration variables.
u = sympy.Symbol("u", positive=True)
v = sympy.Symbol("v", positive=True)
z = sympy.Symbol("z", real=True)
z2 = sympy.Symbol("z_2", real=True)
#: The row's log-weight scale b (:func:`effective_b` in the contract symbols).
b = sympy.Symbol("b", nonnegative=True)

_X = sympy.Symbol("x", positive=True)


def gaussian_density(var=z):
    """phi(var) = exp(-var^2/2)/sqrt(2 pi)."""
    return sympy.exp(-var ** 2 / 2) / sympy.sqrt(2 * sympy.pi)


def expectation(expr, var=z):
    """E over var ~ N(0, 1) of expr, as an unevaluated Integral."""
    return sympy.Integral(expr * gaussian_density(var), (var, -sympy.oo, sympy.oo))


# --- 1. the score model --------------------------------------------------------------

@lru_cache(maxsize=None)
def score_model():
    """a_ts for t, s in {1, 2, 3} as linear forms in the i.i.d. N(0, 1) sources g, u, v, w.

    Returns (scores, sources): scores[(t, s)] is the SymPy expression of
    a_ts / sigma, sources the tuple of source symbols.
    """
    idx = (1, 2, 3)
    g = {(t, s): sympy.Symbol(f"g_{t}{s}") for t in idx for s in idx}
    us = {t: sympy.Symbol(f"u_{t}") for t in idx}
    vs = {s: sympy.Symbol(f"v_{s}") for s in idx}
    w = sympy.Symbol("w")
    common = sympy.sqrt(p * (q - p))
    scores = {(t, s): (q - p) * g[(t, s)] + common * (us[t] + vs[s]) + p * w for t in idx for s in idx}
    return scores, tuple(g.values()) + tuple(us.values()) + tuple(vs.values()) + (w,)


def _covariance(x_expr, y_expr, sources):
    """Cov of two linear forms in i.i.d. unit-variance sources: the dot product of coefficients."""
    return sympy.expand(sum(sympy.diff(x_expr, s) * sympy.diff(y_expr, s) for s in sources))


def score_covariance(t, s, k, l):
    """Cov(a_ts, a_kl)/sigma^2 from the score model (to be compared with q_tk q_sl, eq. 9)."""
    scores, sources = score_model()
    return _covariance(scores[(t, s)], scores[(k, l)], sources)


def overlap(t, k):
    """q_tk of the mean-field overlap matrix: q on the diagonal, p off it."""
    return q if t == k else p


@lru_cache(maxsize=None)
def row_statistics():
    """(b^2, rho) of the softmax-relevant part of the scores, from the score model.

    Dropping the row-constant terms u_t, w (they cancel in the softmax) leaves
    x_ts = (q - p) g_ts + sqrt(p (q - p)) v_s; b^2 = sigma^2 Var x_ts with
    sigma^2 = beta^2 ln T, and rho = corr(x_ts, x_t's) for two rows t != t'.
    """
    scores, sources = score_model()
    keep = [s for s in sources if s.name.startswith(("g_", "v_"))]
    drop = {s: 0 for s in sources if s not in keep}
    x11, x21 = scores[(1, 1)].subs(drop), scores[(2, 1)].subs(drop)
    var = sympy.factor(_covariance(x11, x11, keep))
    cov = sympy.factor(_covariance(x11, x21, keep))
    return sympy.factor(beta ** 2 * sympy.log(T) * var), sympy.simplify(cov / var)


def effective_b():
    """b = beta sqrt(ln T q (q - p)), the scale of one row's log-weights (from :func:`row_statistics`)."""
    return sympy.sqrt(row_statistics()[0])


# --- 2. the Laplace representations ---------------------------------------------------

def gamma_identity(power=r, x=_X):
    """x^-power = Gamma(power)^-1 int_0^oo u^(power-1) e^(-u x) du, as an Eq with an unevaluated Integral."""
    integral = sympy.Integral(u ** (power - 1) * sympy.exp(-u * x), (u, 0, sympy.oo))
    return sympy.Eq(x ** -power, integral / sympy.gamma(power))


def weight(var=z, scale=b):
    """The log-normal attention weight e^(b z) (row-constant factors dropped)."""
    return sympy.exp(scale * var)


def laplace_transform(at=u, scale=b):
    """L(u) = E exp(-u e^(b z)): the Laplace transform of the log-normal weight."""
    return expectation(sympy.exp(-at * weight(z, scale)))


def weighted_transform(power, at=u, scale=b):
    """E[w^power e^(-u w)] for w = e^(b z)."""
    return expectation(weight(z, scale) ** power * sympy.exp(-at * weight(z, scale)))


def ipr_integral(power=r, scale=b, length=T):
    """E sum_s A_ts^power = T/Gamma(power) int_0^oo u^(power-1) E[w^power e^(-uw)] L(u)^(T-1) du."""
    integrand = u ** (power - 1) * weighted_transform(power, u, scale) * laplace_transform(u, scale) ** (length - 1)
    return length / sympy.gamma(power) * sympy.Integral(integrand, (u, 0, sympy.oo))


def ipr_square_integral(scale=b, length=T):
    """E (sum_s A_ts^2)^2: the diagonal s = s' (a fourth moment) plus the T(T-1) pairs s != s'."""
    L = laplace_transform(u, scale)
    diagonal = length * weighted_transform(4, u, scale) * L ** (length - 1)
    pairs = length * (length - 1) * weighted_transform(2, u, scale) ** 2 * L ** (length - 2)
    return sympy.Integral(u ** 3 * (diagonal + pairs), (u, 0, sympy.oo)) / sympy.gamma(4)


def pair_weights(scale=b, correlation=rho):
    """(w, w') = (e^(b z), e^(b z')) with z' = rho z + sqrt(1 - rho^2) z_2: two rows' weights of one key."""
    return weight(z, scale), weight(correlation * z + sympy.sqrt(1 - correlation ** 2) * z2, scale)


def _two_row_expectation(expr):
    return expectation(expectation(expr, z2), z)


def ipr_pair_integral(scale=b, correlation=rho, length=T):
    """E sum_s A_ts A_t's = T int int E[w w' e^(-uw - vw')] (E e^(-uw - vw'))^(T-1) du dv."""
    w1, w2 = pair_weights(scale, correlation)
    damp = sympy.exp(-u * w1 - v * w2)
    inner = _two_row_expectation(w1 * w2 * damp) * _two_row_expectation(damp) ** (length - 1)
    return length * sympy.Integral(inner, (u, 0, sympy.oo), (v, 0, sympy.oo))


# --- the exact steps SymPy checks -------------------------------------------------------

def gamma_identity_holds(power=r) -> bool:
    """SymPy integrates the Gamma-function identity for x > 0, Re(power) > 0."""
    eq = gamma_identity(power)
    return sympy.simplify(eq.rhs.doit(conds="none") - eq.lhs) == 0


def fubini_integrand(power, weights):
    """For explicit positive weights, T/Gamma(power) int u^(power-1) w_1^power e^(-u sum w) du.

    Integrated by SymPy, it is T w_1^power / (sum w)^power, i.e. T A_1^power: the
    representation is E[T A_1^power] = E sum_s A_s^power by exchangeability.
    """
    total = sum(weights)
    integral = sympy.integrate(u ** (power - 1) * weights[0] ** power * sympy.exp(-u * total),
                               (u, 0, sympy.oo), conds="none")
    return sympy.simplify(len(weights) * integral / sympy.gamma(power))


def uniform_limit(expr):
    """The representation at b = 0 (every weight 1, attention uniform), integrated by SymPy."""
    return sympy.simplify(expr.subs(b, 0).doit())


def two_token_ipr(power=r):
    """T = 2: Fubini gives 2 E[A_1^power] with A_1 = w_1/(w_1 + w_2) = sigma(b (z - z_2)), the logistic.

    Returns (the per-sample Laplace integral, 2 A_1^power, A_1, the logistic form of A_1).
    """
    w1, w2 = weight(z), weight(z2)
    share = w1 / (w1 + w2)
    return fubini_integrand(power, (w1, w2)), 2 * share ** power, share, 1 / (1 + sympy.exp(-b * (z - z2)))


def independent_rows_pair():
    """rho = 0: the pair integral factorises into T (int_0^oo -L'(u) L(u)^(T-1) du)^2 = 1/T.

    With L(0) = 1 and L(oo) = 0 (any Laplace transform of a positive weight),
    -L' L^(T-1) is the derivative of -L^T/T. Returns (derivative of that
    antiderivative minus the integrand, which SymPy must reduce to 0; the
    value T (L^T/T |_oo^0)^2).
    """
    L = sympy.Function("L")
    antiderivative = -L(u) ** T / T
    residual = sympy.simplify(sympy.diff(antiderivative, u) + sympy.diff(L(u), u) * L(u) ** (T - 1))
    one_row = antiderivative.subs(L(u), 0) - antiderivative.subs(L(u), 1)
    return residual, sympy.simplify(T * one_row ** 2)


def identical_rows_pair(power: int = 3):
    """rho = 1: w = w', so the pair integrand is a function f(u + v), and
    int int f(u + v) du dv = int_0^oo s f(s) ds is the IPR's u-integral at r = 2
    (Gamma(2) = 1). Checked for f(s) = s^power e^(-c s): returns (double, single).
    """
    c = sympy.Symbol("c", positive=True)
    s = sympy.Symbol("s", positive=True)
    f = lambda x: x ** power * sympy.exp(-c * x)
    double = sympy.integrate(f(u + v), (v, 0, sympy.oo), (u, 0, sympy.oo))
    single = sympy.integrate(s * f(s), (s, 0, sympy.oo))
    return sympy.simplify(double), sympy.simplify(single)
