"""The self-attention layer's overlap map, derived with the Wick/Stein toolkit.

Paper B.2.3 (eqs. 20-23): averaging over W_V (entries N(0, sigma_v2/d)),

    (1/d) E[S(X)_t . S(X)_t'] = sigma_v2 E sum_{s,u} A_ts A_t'u q_su,

and with the mean-field overlaps q_su = q delta_su + p (1 - delta_su) and rows
of A summing to one this is sigma_v2 (p + (q - p) M), with M = E sum_s A_ts^2
for t = t' (the IPR Y2) and M = E sum_s A_ts A_t's for t != t' (the pair
term Yp). Gain-controlled attention subtracts (1/T) sum_s W_V X_s and gives
sigma_v2 (q - p) (M - 1/T). None of this is typed in: :func:`value_overlap`
builds the index sums and lets :mod:`derive.gaussian` do the algebra.

The moments enter the block maps as the SymPy functions :class:`Y2` and
:class:`Yp` of the layer's *input* state (beta, q, p) and the sequence length
T. At ``T = oo`` they evaluate to the paper's asymptotic theory (Result 1:
Y2 from the frozen REM, :func:`derive.rem.ipr`; Yp -> 0, B.2.2); at finite T
they stay symbolic and :mod:`numeric` supplies the finite-T values.
"""

from __future__ import annotations

from functools import lru_cache

import sympy

from . import gaussian as g
from .symbols import h, p, q, sigma_v2

T_sym = sympy.Symbol("T", positive=True, integer=True)
d_sym = sympy.Symbol("d", positive=True, integer=True)
sigma_a2 = sympy.Symbol("sigma_a2", positive=True)

_RANGES = {"t": T_sym, "u": T_sym, "s": T_sym, "v": T_sym, "i": d_sym, "j": d_sym, "l": d_sym}


def _value_sum(row: str, col: str, out: str, inner: str, gain: bool) -> g.IndexSum:
    """sum_col (A_row,col - [gain]/T) (W_V)_out,inner X_col,inner  — one output entry S(X)_row,out."""
    wx = g.tensor("W_V", out, inner, ranges=_RANGES) * g.tensor("X", col, inner, ranges=_RANGES)
    weighted = g.tensor("A", row, col, ranges=_RANGES) * wx
    if gain:
        weighted = weighted - wx.scaled(1 / T_sym)
    return weighted.summed_over(col, inner)


@lru_cache(maxsize=None)
def value_overlap(gain: bool, same_token: bool) -> sympy.Expr:
    """(1/d) E_V[S(X)_t . S(X)_t'] in terms of attention moments (eqs. 20-22).

    ``same_token`` selects t = t' (the norm q_S) or t != t' (the overlap p_S).
    Returns an expression in q, p, sigma_v2, T and the moment symbols Y2 or Yp.
    """
    other = "t" if same_token else "u"
    prod = (_value_sum("t", "s", "i", "j", gain) * _value_sum(other, "v", "i", "l", gain))
    expr = prod.summed_over("i").scaled(1 / d_sym)
    expr = g.wick(expr, {"W_V": sigma_v2 / d_sym})
    expr = g.mean_field(g.contract(expr))
    return sympy.factor(g.attention_moments(expr))


@lru_cache(maxsize=None)
def stein_relation() -> sympy.Expr:
    """d/dh E log Z_t(beta, h) = E[sum_s a_ts A_ts] by Stein's lemma (eq. 11).

    With the score covariance of eq. (9) (sigma_a2 q_tk q_sl) and the softmax
    derivative of eq. (29) this reduces to h sigma_a2 q (q - p) (1 - Y2), the
    identity behind eq. (12).
    """
    ranges = {"t": T_sym, "s": T_sym}
    expr = (g.tensor("a", "t", "s", ranges=ranges) * g.tensor("A", "t", "s", ranges=ranges)).summed_over("s")
    expr = g.stein(expr, sigma_a2, h=h)
    expr = g.mean_field(g.contract(expr))
    return sympy.factor(g.attention_moments(expr))


class AttentionMoment(sympy.Function):
    """An attention moment as a function of the layer input (beta, q, p) and T.

    Subclasses evaluate themselves at ``T = oo`` to the asymptotic theory and
    stay unevaluated at finite T (numeric supplies those values).
    """

    nargs = 4

    @classmethod
    def eval(cls, beta, q_in, p_in, T):
        if T is sympy.S.Infinity:
            return cls.asymptotic(beta, q_in, p_in)
        return None

    @classmethod
    def asymptotic(cls, beta, q_in, p_in):
        raise NotImplementedError


class Y2(AttentionMoment):
    """E sum_s A_ts^2, the inverse participation ratio of one row (eqs. 2, 4)."""

    @classmethod
    def asymptotic(cls, beta, q_in, p_in):
        from . import rem
        from .symbols import beta as b, p as pp, q as qq
        return rem.ipr(2).subs({b: beta, qq: q_in, pp: p_in}, simultaneous=True)


class Yp(AttentionMoment):
    """E sum_s A_ts A_t's for t != t', the overlap of two rows (eq. 22).

    Asymptotically zero (B.2.2): two rows see scores correlated by rho = p/q < 1,
    and the frozen Gibbs measures of two such REMs do not overlap as T -> oo.
    """

    @classmethod
    def asymptotic(cls, beta, q_in, p_in):
        return sympy.Integer(0)


def attention_map(beta, q_in, p_in, T, sigma_v2_value, gain: bool, moments: dict | None = None):
    """(q_S, p_S) of a self-attention layer fed with overlaps (q_in, p_in) (eq. 23).

    ``moments`` may name expressions to use for "Y2" and "Yp" (default: the
    functions :class:`Y2`, :class:`Yp` of the input state).
    """
    moments = moments or {"Y2": Y2(beta, q_in, p_in, T), "Yp": Yp(beta, q_in, p_in, T)}
    table = {q: q_in, p: p_in, sigma_v2: sigma_v2_value, T_sym: T,
             sympy.Symbol("Y2", positive=True): moments["Y2"],
             sympy.Symbol("Yp", positive=True): moments["Yp"]}
    return tuple(_at(value_overlap(gain, same), T).subs(table, simultaneous=True) for same in (True, False))


def _at(expr, T):
    """``expr`` ready for T: expanded when T = oo, so that 1/T terms vanish instead of giving oo/oo."""
    return sympy.expand(expr) if T is sympy.oo else expr
