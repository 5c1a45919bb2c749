"""Causal self-attention: the overlaps of outputs whose rows see different sets of keys.

With a causal mask (:mod:`derive.masks`) row t of the attention matrix sees the
keys K_t = {s <= t}, n_t = t + 1 of them; with a sliding window the last W of
them. Averaging over W_V by Wick's theorem (:mod:`derive.gaussian`, as for the
encoder, B.2.3) gives, for two rows t <= u,

    (1/d) E_V[S(X)_t . S(X)_u] = sigma_v2 sum_{s in K_t} sum_{v in K_u} E[A_ts A_uv] Q_sv,

with Q_sv = X_s . X_v / d. The keys are no longer exchangeable across rows, but
within a row they are treated as exchangeable (the position-resolved closure:
a row sees its keys through their average norm and overlap). The two rows
share the n_s keys S = K_t & K_u (S = K_t for nested causal prefixes, possibly
empty for windows). E[A_ts A_uv] then takes one value on each class of key
pairs, and the classes' total weights follow from the rows' sums:

- t = u: s = v (n_t pairs) carries Y2 = E sum_s A_ts^2, s != v the rest, 1 - Y2;
- t < u: with the masses m_t = sum_{s in S} A_ts and m_u = sum_{v in S} A_uv of the
  shared keys (E m_t = n_s/n_t, E m_u = n_s/n_u: each row exchangeable over its
  keys), s = v in S carries the pair term Pi = E sum_{s in S} A_ts A_us, s != v in
  S carries E[m_t m_u] - Pi, S x (K_u - S) carries E[m_t (1 - m_u)], (K_t - S) x S
  carries E[(1 - m_t) m_u] and (K_t - S) x (K_u - S) carries E[(1 - m_t)(1 - m_u)].
  E[m_t m_u] = E m_t E m_u, exact for nested prefixes (m_t = 1).

Gain control subtracts each row's uniform average over its own keys, which
replaces A_ts by A_ts - 1/n_t (E A_ts = 1/n_t). :func:`value_overlap` returns
the result in the class means of Q: qbar and pbar (norms and overlaps of the
shared keys; of K_t for t = u), r_u (S x (K_u - S)), r_t ((K_t - S) x S) and r_o
((K_t - S) x (K_u - S)).

At beta -> 0 the softmax is uniform, Y2 = 1/n_t and Pi = n_s/(n_t n_u)
(:func:`uniform_moments`): for orthogonal inputs the outputs of causal rows t < u
have cosine sqrt(n_t/n_u), the law of uniform causal averaging
(tests/derive/test_causal.py). The pair term is Pi = (n_s/n_t)(n_s/n_u) Yp_{n_s}(b, rho):
each row restricted to the shared keys is its mass there times a softmax over
n_s keys, taken independent of that mass (:func:`pair_term`).
"""

from __future__ import annotations

from functools import lru_cache

import sympy

from . import gaussian as g
from .symbols import sigma_v2

#: Key counts of the two rows (n_t <= n_u) and of the keys they share, and the class means of the key overlaps.
n_t, n_u, n_s = sympy.symbols("n_t n_u n_s", positive=True, integer=True)
qbar, pbar, r_u, r_t, r_o = sympy.symbols("qbar pbar r_u r_t r_o", real=True)
#: The row's IPR, the pair term of the two rows on their shared keys, and the pair term of two rows of n_s keys.
Y2, Pi, Yp = sympy.symbols("Y2 Pi Yp", positive=True)

_d = sympy.Symbol("d", positive=True, integer=True)
_RANGES = {"t": None, "u": None, "s": None, "v": None, "i": _d, "j": _d, "l": _d}


@lru_cache(maxsize=None)
def wick_value_sum() -> g.IndexSum:
    """sigma_v2 sum_s sum_v A_ts A_uv Q_sv: (1/d) E_V[S_t . S_u] with W_V averaged by Wick's theorem."""
    def value(row, col, inner):
        wx = g.tensor("W_V", "i", inner, ranges=_RANGES) * g.tensor("X", col, inner, ranges=_RANGES)
        return (g.tensor("A", row, col, ranges=_RANGES) * wx).summed_over(col, inner)

    expr = (value("t", "s", "j") * value("u", "v", "l")).summed_over("i").scaled(1 / _d)
    return g.contract(g.wick(expr, {"W_V": sigma_v2 / _d}))


def _variance_factor() -> sympy.Expr:
    """The coefficient of the one term A_ts A_uv Q_sv of :func:`wick_value_sum` (checked to be that term)."""
    expr = wick_value_sum()
    if len(expr.terms) != 1:
        raise ValueError(f"expected one term A A Q after Wick's theorem, got {expr}")
    term = expr.terms[0]
    if sorted(f.name for f in term.factors) != ["A", "A", "Q"]:
        raise ValueError(f"expected the factors A, A, Q, got {term}")
    return term.coeff


def class_totals(same_row: bool, gain: bool) -> dict:
    """sum of E[B_ts B_uv] over each class of key pairs (B = A, or A - 1/n for gain control)."""
    if same_row:
        totals = {"same": Y2, "shared": 1 - Y2}
    else:
        m_t, m_u = n_s / n_t, n_s / n_u                   # E of the shared masses (module docstring)
        totals = {"same": Pi, "shared": m_t * m_u - Pi, "u_only": m_t * (1 - m_u), "t_only": (1 - m_t) * m_u,
                  "own": (1 - m_t) * (1 - m_u)}
    if gain:                                              # E[(A_ts - 1/n_t)(A_uv - 1/n_u)] = E[A A] - 1/(n_t n_u)
        sizes = class_sizes(same_row)
        other = n_t if same_row else n_u
        totals = {k: v - sizes[k] / (n_t * other) for k, v in totals.items()}
    return totals


def class_sizes(same_row: bool) -> dict:
    """How many key pairs (s, v) each class holds."""
    if same_row:
        return {"same": n_t, "shared": n_t * (n_t - 1)}
    return {"same": n_s, "shared": n_s * (n_s - 1), "u_only": n_s * (n_u - n_s), "t_only": (n_t - n_s) * n_s,
            "own": (n_t - n_s) * (n_u - n_s)}


#: The class means of Q: norms of the (shared) keys, their overlaps, and the three cross classes.
MEANS = {"same": qbar, "shared": pbar, "u_only": r_u, "t_only": r_t, "own": r_o}


@lru_cache(maxsize=None)
def value_overlap(same_row: bool, gain: bool) -> sympy.Expr:
    """(1/d) E[S_t . S_u] of a masked attention layer in the class means (module docstring).

    ``same_row``: the norm of row t (u = t); else the overlap of rows t < u. Each class contributes its
    total weight (:func:`class_totals`) times its mean overlap: the weight is spread evenly over its pairs.
    """
    totals = class_totals(same_row, gain)
    return sympy.factor(sympy.simplify(_variance_factor() * sum(totals[k] * MEANS[k] for k in totals)))


def nested(expr: sympy.Expr) -> sympy.Expr:
    """``expr`` for nested causal prefixes: the shared keys are all of row t's (n_s = n_t)."""
    return sympy.simplify(expr.subs(n_s, n_t))


def uniform_moments() -> dict:
    """Y2 and Pi of uniform rows (beta -> 0): every weight of row t is 1/n_t, of row u 1/n_u."""
    s = sympy.Symbol("s", integer=True)
    return {Y2: sympy.summation((1 / n_t) ** 2, (s, 1, n_t)), Pi: sympy.summation((1 / n_t) * (1 / n_u), (s, 1, n_s))}


def pair_term() -> sympy.Expr:
    """Pi of rows t < u on their n_s shared keys: (n_s/n_t)(n_s/n_u) Yp, Yp the pair term of two rows of n_s keys.

    Each row's weights on the shared keys are its mass there (E n_s/n_t, n_s/n_u) times a softmax over
    those n_s keys, which has the law of a row of n_s keys; the masses are taken independent of it.
    """
    return (n_s / n_t) * (n_s / n_u) * Yp
