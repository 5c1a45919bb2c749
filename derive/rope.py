"""Rotary position embeddings (RoPE): what rotating queries and keys does to the scores of an attention row.

RoPE (Su et al. 2021; LLaMA, GPT-NeoX) rotates the query and the key of position t
by R_t = blockdiag_i rot(t theta_i), theta_i = theta_base^(-2i/d_h), i = 0 .. d_h/2 - 1,
before the dot product: a_ts = (R_t W_Q x_t) . (R_s W_K x_s) / sqrt(d_h), and
R_t^T R_s = R_(s-t). Values are not rotated.

**The score covariance** (:func:`score_covariance`, Wick's theorem over W_Q and W_K with
the rotations as deterministic tensors R1 = R_(s-t), R2 = R_(s'-t')):

    E[a_ts a_t's'] = sigma_Q^2 sigma_K^2 d^2 Q_tt' Q_ss' (1/d_h) sum_jk R1_jk R2_jk,

and (1/d_h) tr(R1^T R2) = c((s'-t') - (s-t)) with (:func:`rotation_trace`, :func:`correlation`)

    c(D) = (2/d_h) sum_i cos(D theta_i),      c(0) = 1.

Without RoPE c = 1 (eq. 9). For one row (t = t') the keys s, s' are correlated by
Q_ss' c(s - s'); for two rows t, t' the same key is seen with c(t - t').

**The threshold.** A row of n keys with overlaps q (diagonal) and p (off it) has scores
of covariance b0^2 [(q - p) delta_ss' + p c(s - s')]. The part p c is *not*
exchangeable: it is a random trigonometric polynomial in s. Its mean over the row's key
pairs, c_bar_n, goes to 0 as n -> oo for every theta_i not in 2 pi Z (:func:`pair_mean`,
:func:`pair_mean_limit`: the Fejer sum is bounded), so at T -> oo the REM of a row
sees (q, p c_bar) -> (q, 0): RoPE removes the inputs' correlation from the condensation
threshold, beta_c = sqrt(2/(q(q - p))) -> sqrt(2)/q (:func:`critical_beta`). At finite
T, replacing p by p c_bar (the variance closure) is exact to order beta^2
(:func:`second_order_ipr`) but overestimates the IPR at larger beta (by 3-12 % at
p/q = 0.5, T = 256; 20-47 % at p/q = 0.9; docs/errata.md): a smooth, low-rank field
of the same variance condenses less than i.i.d. scores.

**The hierarchical closure** (what sigprop uses at finite T): the row's scores are
replaced by a binary-tree (GREM, Derrida 1985) field whose level-k blocks are 2^k
consecutive keys, the level covariances chosen so that every key's mean covariance
with its nearest m_k = 2^k - 1 neighbours is the real one (:func:`level_covariance`,
count matching; the mean over all pairs, and so the order-beta^2 term, is kept). The
IPR of a tree field has an exact finite-n representation (:func:`inverse_square`,
:func:`tree_recursion`): with 1/Z^2 = int_0^oo tau e^(-tau Z) d tau and independent
sub-blocks,

    f_0(y) = E exp(-e^(y + s_0 z)),        m_0(y) = E e^(2(y + s_0 z)) exp(-e^(y + s_0 z)),
    f_k(y) = E f_(k-1)(y + s_k z)^(r_k),  m_k(y) = E r_k m_(k-1)(y + s_k z) f_(k-1)(y + s_k z)^(r_k - 1),
    E sum_s A_s^2 = int m_K(y) dy,

z ~ N(0, 1), s_k^2 the level variances, r_k the branchings (2, and n/2^(K-1) at the top).
With one level it is the exchangeable finite-T IPR exactly (numeric checks it to 1e-9).
:mod:`numeric.rope` computes it and reads off the *effective overlap* p_eff: the key
overlap at which the exchangeable theory has the same IPR. Gaussian-score Monte Carlo
with the exact Toeplitz covariance confirms it within standard errors at p/q <= 0.5
(T = 64-1024); at p/q = 0.9 it is 5-8 % high, at 0.99 up to 24 % (a tree has block
edges a smooth field does not), where the IPR's weight in the overlap map, q - p, is
small (verify/test_rope.py, docs/errata.md).

The encoder's (q, p) map with RoPE uses the moments :class:`RopeOverlap` (p_eff, which
Y2 is evaluated at) and :class:`RopePair` (the pair term with the rows' correlation
rho c(t - t')), both 0 at T = oo.
"""

from __future__ import annotations

from functools import lru_cache

import sympy

from . import gaussian as g
from .symbols import p, q

#: RoPE's base theta (10^4 in LLaMA-1/2, 5e5 in LLaMA-3), the head dimension d_h, a frequency index i,
#: a position difference D and the two relative positions of two scores.
theta_base = sympy.Symbol("theta", positive=True)
head_dim = sympy.Symbol("d_h", positive=True, integer=True)
i_freq = sympy.Symbol("i", integer=True, nonnegative=True)
D = sympy.Symbol("D", integer=True)
phi1, phi2 = sympy.symbols("phi_1 phi_2", real=True)
sigma_q2, sigma_k2 = sympy.symbols("sigma_Q2 sigma_K2", positive=True)

_d = sympy.Symbol("d", positive=True, integer=True)
_RANGES = {"t": None, "u": None, "s": None, "v": None, "a": _d, "b": _d, "e": _d, "f": _d,
           "j": head_dim, "k": head_dim, "l": head_dim, "m": head_dim}


def _score(row: str, col: str, rot: str, inner: tuple) -> g.IndexSum:
    """(1/sqrt(d_h)) sum_jk (W_Q x_row)_j R_jk (W_K x_col)_k, with deterministic R named ``rot``."""
    j, k, a, b = inner
    query = g.tensor("W_Q", j, a, ranges=_RANGES) * g.tensor("X", row, a, ranges=_RANGES)
    key = g.tensor("W_K", k, b, ranges=_RANGES) * g.tensor("X", col, b, ranges=_RANGES)
    rotated = query * g.tensor(rot, j, k, ranges=_RANGES) * key
    return rotated.summed_over(j, k, a, b).scaled(1 / sympy.sqrt(head_dim))


@lru_cache(maxsize=None)
def score_covariance() -> g.IndexSum:
    """E[a_ts a_us'] over W_Q, W_K (entries N(0, sigma_Q2), N(0, sigma_K2)) with rotations R1, R2 (Wick).

    One term: sigma_Q2 sigma_K2 d^2 / d_h Q_tu Q_ss' sum_jk R1_jk R2_jk (module docstring).
    """
    expr = _score("t", "s", "R1", ("j", "k", "a", "b")) * _score("u", "v", "R2", ("l", "m", "e", "f"))
    return g.contract(g.wick(expr, {"W_Q": sigma_q2, "W_K": sigma_k2}))


def rotation(angle) -> sympy.Matrix:
    """The 2 x 2 rotation by ``angle`` (one RoPE pair of coordinates)."""
    return sympy.Matrix([[sympy.cos(angle), -sympy.sin(angle)], [sympy.sin(angle), sympy.cos(angle)]])


@lru_cache(maxsize=None)
def block_trace() -> sympy.Expr:
    """tr(rot(phi_1 x)^T rot(phi_2 x)) of one pair of coordinates at frequency x: 2 cos((phi_2 - phi_1) x)."""
    x = sympy.Symbol("x", positive=True)
    return sympy.simplify((rotation(phi1 * x).T * rotation(phi2 * x)).trace()).subs(x, frequency())


def frequency() -> sympy.Expr:
    """theta_i = theta^(-2 i / d_h), the angle per position of pair i."""
    return theta_base ** (-2 * i_freq / head_dim)


@lru_cache(maxsize=None)
def rotation_trace() -> sympy.Expr:
    """(1/d_h) tr(R_phi1^T R_phi2) for the block-diagonal rotations: the pairs' traces summed (a SymPy Sum)."""
    return sympy.Sum(block_trace(), (i_freq, 0, head_dim / 2 - 1)) / head_dim


@lru_cache(maxsize=None)
def correlation() -> sympy.Expr:
    """c(D) = (2/d_h) sum_i cos(D theta_i): :func:`rotation_trace` at phi_2 - phi_1 = D."""
    expr = rotation_trace().subs({phi2: phi1 + D})
    return expr.replace(lambda e: isinstance(e, sympy.cos), lambda e: sympy.cos(sympy.expand(e.args[0])))


def covariance_factor(same_row: bool) -> sympy.Expr:
    """The position difference c is evaluated at: s' - s for one row (t = u), (s' - u) - (s - t) for two."""
    t, u, s, s2 = sympy.symbols("t u s s'", integer=True)
    return (s2 - t) - (s - t) if same_row else (s2 - u) - (s - t)


@lru_cache(maxsize=None)
def fejer_sum() -> sympy.Expr:
    """sum_{s, s' < n} cos((s - s') x) = |sum_s e^(i s x)|^2 = sin^2(n x/2) / sin^2(x/2), by SymPy."""
    n, s, x = sympy.Symbol("n", positive=True, integer=True), sympy.Symbol("s", integer=True), \
        sympy.Symbol("x", positive=True)
    geometric = sympy.summation(sympy.exp(sympy.I * s * x), (s, 0, n - 1))
    if isinstance(geometric, sympy.Piecewise):               # x not in 2 pi Z: the non-degenerate branch
        geometric = next(expr for expr, cond in geometric.args if cond == sympy.true)
    modulus = geometric * geometric.subs(x, -x)              # |G(x)|^2 = G(x) G(-x) for real x
    closed = sympy.sin(n * x / 2) ** 2 / sympy.sin(x / 2) ** 2
    check = sympy.simplify(sympy.expand((modulus - closed).rewrite(sympy.exp)))
    if check != 0:
        raise ValueError(f"the Fejer sum did not reduce to sin^2(nx/2)/sin^2(x/2): {modulus}")
    return closed


def pair_mean() -> sympy.Expr:
    """c_bar_n of one frequency x: the mean of cos((s - s') x) over the n(n - 1) ordered pairs s != s'."""
    n, x = sympy.Symbol("n", positive=True, integer=True), sympy.Symbol("x", positive=True)
    return (fejer_sum() - n) / (n * (n - 1)), n, x


@lru_cache(maxsize=None)
def pair_mean_limit() -> sympy.Expr:
    """lim_{n -> oo} c_bar_n = 0 for every frequency x not in 2 pi Z: the Fejer sum is at most 1/sin^2(x/2)."""
    mean, n, x = pair_mean()
    bound = (1 / sympy.sin(x / 2) ** 2 + n) / (n * (n - 1))        # |sin^2(nx/2)| <= 1
    limit = sympy.limit(bound, n, sympy.oo)
    if limit != 0:
        raise ValueError(f"the bound on the pair mean does not vanish: {limit}")
    return limit


@lru_cache(maxsize=None)
def critical_beta() -> sympy.Expr:
    """beta_c with RoPE as T -> oo: derive.critical_beta() with p -> p c_bar_oo = 0, i.e. sqrt(2)/q."""
    from .rem import critical_beta as plain
    return sympy.simplify(plain().subs(p, p * pair_mean_limit()))


@lru_cache(maxsize=None)
def second_order_ipr() -> sympy.Expr:
    """E sum_s A_s^2 to order beta^2 for a row of n keys with score covariance C (any): (1 + E Var_s(a))/n.

    Expanding the softmax, A_s = (1 + a_s - a_bar + O(a^2))/n, so sum_s A_s^2 = (1 + (1/n) sum_s (a_s - a_bar)^2)/n
    + O(a^3); with Gaussian scores E (1/n) sum_s (a_s - a_bar)^2 = (1 - 1/n)(mean diagonal of C - mean off-diagonal
    of C). Only the mean over the key pairs of C enters: the variance closure p -> p c_bar is exact here.
    Returned in the symbols n, C_diag, C_off (the means of C on and off the diagonal).
    """
    n = sympy.Symbol("n", positive=True, integer=True)
    eps = sympy.Symbol("epsilon", positive=True)
    for size in (2, 3, 4):                      # the expansion done by SymPy for small rows
        a = sympy.symbols(f"a0:{size}", real=True)
        Z = sum(sympy.exp(eps * x) for x in a)
        series = sympy.series(sum(sympy.exp(2 * eps * x) for x in a) / Z**2, eps, 0, 3).removeO()
        mean = sum(a) / size
        expected = (1 + eps**2 * sum((x - mean) ** 2 for x in a) / size) / size
        if sympy.simplify(sympy.expand(series - expected)) != 0:
            raise ValueError(f"unexpected second-order IPR for {size} keys: {series}")
    C_diag, C_off = sympy.symbols("C_diag C_off", real=True)
    return (1 + (1 - 1 / n) * (C_diag - C_off)) / n, n, C_diag, C_off


# --- the hierarchical (tree) closure ---------------------------------------------------------------------

@lru_cache(maxsize=None)
def inverse_square() -> sympy.Expr:
    """int_0^oo tau e^(-tau Z) d tau = 1/Z^2 (Z > 0): the Laplace identity behind the tree recursion."""
    tau, Z = sympy.Symbol("tau", positive=True), sympy.Symbol("Z", positive=True)
    return sympy.integrate(tau * sympy.exp(-tau * Z), (tau, 0, sympy.oo)), Z


def level_covariance() -> sympy.Expr:
    """C_k of the tree from the nearest-neighbour means S(m) (count matching; module docstring).

    A key's level-k block holds its 2^k - 1 nearest tree neighbours; their mean covariance in the tree is
    sum_{j <= k} 2^(j-1) C_j / (2^k - 1). Setting it to S(2^k - 1), the mean of the real correlation over a key's
    nearest 2^k - 1 neighbours, gives C_k = (m_k S_k - m_(k-1) S_(k-1)) / (m_k - m_(k-1)), m_k = 2^k - 1.
    """
    k = sympy.Symbol("k", positive=True, integer=True)
    S_k, S_prev = sympy.symbols("S_k S_prev", real=True)
    m_k, m_prev = 2**k - 1, 2 ** (k - 1) - 1
    return (m_k * S_k - m_prev * S_prev) / (m_k - m_prev), k, S_k, S_prev


def tree_recursion() -> dict:
    """The recursion of the tree field's IPR as SymPy Lambdas (module docstring): f_0, m_0 given the level-0
    standard deviation and a standard normal z; f_k, m_k from the previous level's values at y + s_k z."""
    y, z, s, r = sympy.symbols("y z s r", real=True)
    f_prev, m_prev = sympy.Function("f_prev"), sympy.Function("m_prev")
    x = y + s * z
    return {"f0": sympy.Lambda((y, z, s), sympy.exp(-sympy.exp(x))),
            "m0": sympy.Lambda((y, z, s), sympy.exp(2 * x - sympy.exp(x))),
            "fk": sympy.Lambda((y, z, s, r), f_prev(x) ** r),
            "mk": sympy.Lambda((y, z, s, r), r * m_prev(x) * f_prev(x) ** (r - 1))}


class RopeMoment(sympy.Function):
    """A RoPE attention moment of the layer input (beta, q, p), T and RoPE's (theta, d_h): numeric supplies the
    finite-T values (:mod:`numeric.rope`); at T = oo it evaluates to :meth:`asymptotic`."""

    nargs = 6

    @classmethod
    def eval(cls, beta, q_in, p_in, T, theta, dh):
        if T is sympy.S.Infinity:
            return cls.asymptotic(beta, q_in, p_in)
        return None

    @classmethod
    def asymptotic(cls, beta, q_in, p_in):
        return sympy.Integer(0)


class RopeOverlap(RopeMoment):
    """p_eff, the key overlap at which the exchangeable row has the IPR of the RoPE row (hierarchical
    closure); p c_bar_oo = 0 at T = oo (:func:`pair_mean_limit`)."""

    @classmethod
    def asymptotic(cls, beta, q_in, p_in):
        return p_in * pair_mean_limit()


class RopePair(RopeMoment):
    """E sum_s A_ts A_t's of two rows with RoPE: the exchangeable pair term at the effective width, the rows'
    correlation rho = p/q times c(t - t'), averaged over the row pairs; 0 at T = oo (B.2.2)."""


# --- finite width (issue 19): what RoPE changes in the O(1/d) terms ------------------------------------------

def _quadratic_form_product(name: str, first: str, second: str, inner: tuple, variance) -> g.IndexSum:
    """E[(w^T M1 w)(w^T M2 w)] over a Gaussian vector ``name`` (Wick), M1, M2 deterministic."""
    j, k, l, m = inner
    ranges = {**_RANGES, **{i: head_dim for i in inner}}
    w = lambda i: g.tensor(name, i, ranges=ranges)
    one = (w(j) * g.tensor(first, j, k, ranges=ranges) * w(k)).summed_over(j, k)
    two = (w(l) * g.tensor(second, l, m, ranges=ranges) * w(m)).summed_over(l, m)
    return g.contract(g.wick(one * two, {name: variance}))


def _traces(expr: g.IndexSum, D_value) -> sympy.Expr:
    """Read a contracted product of two rotations R1 = R2 = R_D as traces: R1[j,j] R2[l,l] -> (tr R_D)^2,
    R1[j,k] R2[j,k] -> tr(R_D^T R_D) = d_h, R1[j,k] R2[k,j] -> tr(R_D R_D) = tr R_2D; tr R_D = d_h c(D)."""
    c = lambda shift: correlation().subs(D, shift)
    total = sympy.Integer(0)
    for term in expr.terms:
        one, two = term.factors
        if one.idx[0] == one.idx[1]:
            value = (head_dim * c(D_value)) ** 2
        elif one.idx == two.idx:
            value = head_dim
        else:
            value = head_dim * c(2 * D_value)
        total += term.coeff * value
    return total


@lru_cache(maxsize=None)
def key_scale_covariance() -> tuple:
    """Cov(|W_K^T a|^2, |W_K^T b|^2) over W_K (d_h x d, entries N(0, sigma_K2)) for fixed a, b in R^(d_h): 2 d sigma_K2^2
    (a.b)^2 (Wick).

    With RoPE key s meets the query direction v = W_Q x_t rotated, a_s = R_(t-s) v, so its score scale
    |W_K^T a_s|^2 differs from key to key: each is d sigma_K2 |v|^2 (1 + O(1/sqrt d)), and two keys' scales are
    correlated by (a_s.a_s')^2 / |v|^4 (:func:`key_scale_correlation`). Without RoPE a_s = v for every key: the
    row shares one scale (the W_K step of the chain, derive.finite_width step 4). Returned in the symbols
    ``ab`` (a.b), ``aa``, ``bb``.
    """
    W = lambda i, a: g.tensor("W_K", i, a, ranges=_RANGES)
    vec = lambda name, i: g.tensor(name, i, ranges=_RANGES)
    one = (vec("a", "j") * W("j", "e") * W("k", "e") * vec("a", "k")).summed_over("j", "k", "e")
    two = (vec("b", "l") * W("l", "f") * W("m", "f") * vec("b", "m")).summed_over("l", "m", "f")
    second = g.contract(g.wick(one * two, {"W_K": sigma_k2}))
    first = g.contract(g.wick(one, {"W_K": sigma_k2})), g.contract(g.wick(two, {"W_K": sigma_k2}))
    ab, aa, bb = sympy.symbols("ab aa bb", real=True)
    read = lambda expr: sum((t.coeff * _dot_products(t, ab, aa, bb) for t in expr.terms), sympy.Integer(0))
    return sympy.factor(sympy.expand(read(second) - read(first[0]) * read(first[1]))), ab, aa, bb


def _dot_products(term: g.Term, ab, aa, bb) -> sympy.Expr:
    """A contracted term in the fixed vectors a, b: each shared index pair a_j a_j, a_j b_j, b_j b_j a dot product."""
    names = {}
    for factor in term.factors:
        names.setdefault(factor.idx[0], []).append(factor.name)
    value = sympy.Integer(1)
    for pair in names.values():
        value *= {("a", "a"): aa, ("b", "b"): bb}.get(tuple(sorted(pair)), ab)
    return value


@lru_cache(maxsize=None)
def key_scale_correlation() -> sympy.Expr:
    """kappa(D): the correlation of two keys' score scales at position difference D, averaged over the query
    direction v ~ N(0, I_(d_h)) (:func:`key_scale_covariance` with a.b = v^T R_D v, |a|^2 |b|^2 = |v|^4):

        kappa(D) = E (v^T R_D v)^2 / E |v|^4 = (d_h c(D)^2 + 1 + c(2 D)) / (d_h + 2),

    (Wick over v: (tr R)^2 + tr(R^T R) + tr(R R), with tr R_D = d_h c(D), tr R_D^2 = d_h c(2D); v's direction is
    independent of its norm). kappa(0) = 1; as |D| grows kappa falls to ~1/d_h: most of the W_K step's
    fluctuation becomes each key's own.
    """
    forms = _quadratic_form_product("v", "R1", "R2", ("j", "k", "l", "m"), sympy.Integer(1))
    ratio = _traces(forms, D) / _traces(forms, sympy.Integer(0))
    return sympy.simplify(ratio)

