"""The backward pass: E ||dL/dW||_F^2 for a self-attention layer, derived (paper B.4-B.5, corrected).

The loss is L = sum_{t,i} G_ti S(X)_ti with G i.i.d. N(0, 1) (what
:mod:`verify` measures by autograd), S(X)_t = sum_u A_tu W_V X_u, scores
a_ts = (W_Q X_t).(W_K X_s)/sqrt(d). By the chain rule

    dL/d(W_Q)_ab = (1/sqrt d) sum_{t,u,s} D_{tu,ts} g_tu X_tb k_sa,

with the softmax Jacobian D_{tu,ts} = dA_tu/da_ts = A_tu (delta_us - A_ts)
(eq. 29), g_tu = sum_i G_ti (W_V X_u)_i and the keys k_s = W_K X_s.
:func:`gradient_square_norm` builds the square of this index sum, averages G
and W_V exactly by Wick's theorem, averages W_K at leading order in d (the
key Gram matrix concentrates: the paper's "W_K W_K^T ~ d sigma_K^2 I"; A
depends on W_K only through the scores), contracts, and reads the result as
attention moments. Per attention row this is the trace of B.5, and

    tr = (q - p)^2 E[Y2 - 2 Y3 + (sum_s A_ts^2)^2],

with E[(sum A^2)^2] (``Y22``) kept distinct from (E sum A^2)^2. It is
non-negative by construction: Y2 - 2 Y3 + Y22 = sum_u A_u^2 (1 - A_u)^2 +
[(sum A^2)^2 - sum A^4] >= 0 for every attention row. The paper's term (4)
replaces the factorised E[(p + (q-p) Y2)^2] by p^2 + 2p(q-p)Y2 + p(q-p)Y2^2
(:func:`paper_trace_terms`), which makes its bracket in eq. (26) negative in
the frozen phase (see docs/errata.md).
"""

from __future__ import annotations

from functools import lru_cache

import sympy

from . import gaussian as g
from .symbols import beta, p, q, sigma_v2

d_sym = sympy.Symbol("d", positive=True, integer=True)
T_sym = sympy.Symbol("T", positive=True, integer=True)
sigma_k2 = sympy.Symbol("sigma_K2", positive=True)   # key (and query) entry variance
Y2, Y3, Y22, Yp = (sympy.Symbol(n, positive=True) for n in ("Y2", "Y3", "Y22", "Yp"))

_TOKEN, _FEATURE = T_sym, d_sym


def _ranges(*names: str) -> dict:
    """Token indices are t, u, s, v, w, x, y, z and their primes; the rest are features."""
    return {n: (_TOKEN if n[0] in "tusvwxyz" else _FEATURE) for n in names}


def _jacobian(t: str, u: str, s: str, ranges) -> g.IndexSum:
    """D_{tu,ts} = A_tu delta_us - A_tu A_ts (eq. 29)."""
    diagonal = g.IndexSum((g.Term(sympy.Integer(1), (g.Factor("A", (t, u)), g.delta(u, s))),), ranges)
    return diagonal - g.tensor("A", t, u, ranges=ranges) * g.tensor("A", t, s, ranges=ranges)


def _g(t: str, u: str, i: str, j: str, ranges) -> g.IndexSum:
    """g_tu = sum_{i,j} G_ti (W_V)_ij X_uj: the loss weight seen by attention entry A_tu."""
    return (g.tensor("G", t, i, ranges=ranges) * g.tensor("W_V", i, j, ranges=ranges)
            * g.tensor("X", u, j, ranges=ranges)).summed_over(i, j)


def _linear(weight: str, row: str, out: str, inner: str, ranges) -> g.IndexSum:
    """(W X_row)_out = sum_inner W_{out,inner} X_{row,inner} (a key or a query)."""
    return (g.tensor(weight, out, inner, ranges=ranges) * g.tensor("X", row, inner, ranges=ranges)).summed_over(inner)


def _query_gradient(prime: str, ranges) -> g.IndexSum:
    """sqrt(d) dL/d(W_Q)_ab with the summation indices of copy ``prime`` ("" or "'")."""
    t, u, s, i, j, c = (n + prime for n in ("t", "u", "s", "i", "j", "c"))
    body = _jacobian(t, u, s, ranges) * _g(t, u, i, j, ranges) * g.tensor("X", t, "b", ranges=ranges) \
        * _linear("W_K", s, "a", c, ranges)
    return body.summed_over(t, u, s)


def _key_gradient(prime: str, ranges) -> g.IndexSum:
    """sqrt(d) dL/d(W_K)_ac: the same chain with the roles of query and key exchanged."""
    t, u, s, i, j, b = (n + prime for n in ("t", "u", "s", "i", "j", "b"))
    body = _jacobian(t, u, s, ranges) * _g(t, u, i, j, ranges) * g.tensor("X", s, "c", ranges=ranges) \
        * _linear("W_Q", t, "a", b, ranges)
    return body.summed_over(t, u, s)


def _value_gradient(prime: str, ranges) -> g.IndexSum:
    """dL/d(W_V)_ij = sum_{t,u} G_ti A_tu X_uj (exact: A does not depend on W_V)."""
    t, u = "t" + prime, "u" + prime
    body = g.tensor("G", t, "i", ranges=ranges) * g.tensor("A", t, u, ranges=ranges) \
        * g.tensor("X", u, "j", ranges=ranges)
    return body.summed_over(t, u)


_INDICES = ("t", "u", "s", "i", "j", "c", "b", "a")
_ALL = _INDICES + tuple(n + "'" for n in _INDICES)


@lru_cache(maxsize=None)
def gradient_square_norm(weight: str = "W_Q") -> sympy.Expr:
    """E ||dL/dW||_F^2 for ``weight`` in W_Q, W_K, W_V as an expression in the attention moments.

    Symbols: d, T, q, p, sigma_v2, sigma_K2 (the entry variance of W_Q and W_K)
    and the moments Y2, Y3, Y22 (per row, averaged over rows).
    """
    ranges = _ranges(*_ALL)
    builders = {"W_Q": (_query_gradient, ("a", "b"), 1 / d_sym),
                "W_K": (_key_gradient, ("a", "c"), 1 / d_sym),
                "W_V": (_value_gradient, ("i", "j"), sympy.Integer(1))}
    if weight not in builders:
        raise ValueError(f"weight must be one of {sorted(builders)}, got {weight!r}")
    build, free, scale = builders[weight]
    square = (build("", ranges) * build("'", ranges)).summed_over(*free).scaled(scale)
    variances = {"G": sympy.Integer(1), "W_V": sigma_v2 / d_sym, "W_K": sigma_k2, "W_Q": sigma_k2}
    averaged = g.wick(square, variances)
    return sympy.factor(g.attention_moments(g.mean_field(g.contract(averaged))))


@lru_cache(maxsize=None)
def row_trace() -> sympy.Expr:
    """The per-row trace of B.5: sum_{s,u,s',u'} D_{tu,ts} D_{tu',ts'} q_ss' q_uu' in moments."""
    ranges = _ranges("t", "u", "s", "v", "w")
    expr = (_jacobian("t", "u", "s", ranges) * _jacobian("t", "v", "w", ranges)
            * g.tensor("Q", "s", "w", ranges=ranges) * g.tensor("Q", "u", "v", ranges=ranges))
    expr = expr.summed_over("u", "s", "v", "w")
    return sympy.factor(g.attention_moments(g.mean_field(g.contract(expr))))


def trace_terms() -> dict[int, sympy.Expr]:
    """The four terms of the B.5 expansion, each reduced to moments by the toolkit.

    Term k comes from the product of the k-th pieces of D D (diagonal x
    diagonal, diagonal x outer, outer x diagonal, outer x outer).
    """
    ranges = _ranges("t", "u", "s", "v", "w")
    diag = lambda u, s: g.IndexSum((g.Term(sympy.Integer(1), (g.Factor("A", ("t", u)), g.delta(u, s))),), ranges)
    outer = lambda u, s: g.tensor("A", "t", u, ranges=ranges) * g.tensor("A", "t", s, ranges=ranges)
    qq = g.tensor("Q", "s", "w", ranges=ranges) * g.tensor("Q", "u", "v", ranges=ranges)
    pieces = {1: (diag, diag), 2: (diag, outer), 3: (outer, diag), 4: (outer, outer)}
    out = {}
    for k, (left, right) in pieces.items():
        expr = (left("u", "s") * right("v", "w") * qq).summed_over("u", "s", "v", "w")
        out[k] = sympy.expand(g.attention_moments(g.mean_field(g.contract(expr))))
    return out


def paper_trace_terms() -> dict[int, sympy.Expr]:
    """The four terms as printed in B.5 (for comparison; term 4 is wrong)."""
    return {1: p**2 + (2 * p * (q - p) + (q - p) ** 2) * Y2,
            2: p**2 + 2 * p * (q - p) * Y2 + (q - p) ** 2 * Y3,
            3: p**2 + 2 * p * (q - p) * Y2 + (q - p) ** 2 * Y3,
            4: p**2 + 2 * p * (q - p) * Y2 + p * (q - p) * Y2**2}


def paper_bracket() -> sympy.Expr:
    """The bracket of Result 2 / eq. (26): q (q - p) [(q - p)(Y2 - 2 Y3) + p Y2^2]."""
    return q * (q - p) * ((q - p) * (Y2 - 2 * Y3) + p * Y2**2)


def query_gradient_norm(T=T_sym) -> sympy.Expr:
    """E ||dL/dW_Q||_F^2 with sigma_K^2 = beta sqrt(ln T)/d (Result 1's convention)."""
    return gradient_square_norm("W_Q").subs(sigma_k2, beta * sympy.sqrt(sympy.log(T_sym)) / d_sym).subs(T_sym, T)
