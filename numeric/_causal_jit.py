"""numba kernel of the causal attention closure's pair loop (:class:`numeric.causal.Attention`, nested prefixes).

Imported only when a causal profile runs with the fused backend (numba is never
loaded by ``import numeric``). For every pair of rows t < u of every grid point
it computes, in one pass and without temporaries, what the NumPy path does with
whole arrays: the cross-class mean r_u from the prefix sums, the queries'
correlation rho_tu, the pair term Yp(b_t, rho_tu, n_t) from row t's Chebyshev
series in w by Clenshaw's recurrence (:class:`numeric.row_moments.PairRows`), Pi, and the derived
overlap ``attention_overlap`` (or its gain-controlled form) of
:mod:`numeric._generated_causal`, compiled here from the same generated source.
Rows run in parallel (``prange``); results equal the NumPy path to rounding.
:func:`width_pairs` adds the finite-width pair increments of :mod:`numeric.causal_width` the same way.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from . import _generated_causal as gen
from ._jit import _njit, inline, kernel

_overlap = _njit(gen.attention_overlap, inline="always")
_overlap_gain = _njit(gen.attention_overlap_gain, inline="always")
_pair_term = _njit(gen.pair_term, inline="always")


@kernel
def nested_overlaps(Q, C, qbar, pbar, n, kappa, coef, sigma_v2, gain, rotation, out):
    """Fill the off-diagonal of ``out`` (B, T, T) for nested causal prefixes (see module docstring).

    Q (B, T, T); C (B, T+1, T+1) prefix sums; qbar, pbar, kappa (B, T) per row; n (T,) key counts;
    coef (B * T, W) the Chebyshev coefficients of each row's Yp in 2w - 1; sigma_v2 (B,); rotation (T,) the factor
    c(u - t) of the queries' correlation by lag (RoPE; ones without it).
    """
    B, T = Q.shape[0], Q.shape[1]
    terms = coef.shape[1]
    for k in prange(B * T):
        b, t = k // T, k % T
        n_t = n[t]
        for u in range(t + 1, T):
            n_u = n[u]
            r_u = (C[b, t + 1, u + 1] - C[b, t + 1, t + 1]) / (n_t * (n_u - n_t))
            rho = Q[b, t, u] / math.sqrt(Q[b, t, t] * Q[b, u, u]) * rotation[u - t]
            rho = min(max(rho, 0.0), 1.0)
            root = math.sqrt(1.0 - rho)
            ku = kappa[b, t] * root
            y = 2.0 * (ku / (1.0 - root + ku)) - 1.0
            upper, lower = 0.0, 0.0                                 # Clenshaw: b_{k+1}, b_{k+2}
            for j in range(terms - 1, 0, -1):
                upper, lower = coef[k, j] + 2.0 * y * upper - lower, upper
            yp = coef[k, 0] + y * upper - lower
            yp = min(max(yp, 0.0), 1.0)
            pi = _pair_term(yp, n_t, n_u, n_t)
            if gain:
                value = _overlap_gain(qbar[b, t], pbar[b, t], r_u, 0.0, 0.0, pi, n_t, n_u, n_t, sigma_v2[b])
            else:
                value = _overlap(qbar[b, t], pbar[b, t], r_u, 0.0, 0.0, pi, n_t, n_u, n_t, sigma_v2[b])
            out[b, t, u] = value
            out[b, u, t] = value


@kernel
def width_pairs(Q, spread, x_b, rows, cols, coef, live, out):
    """Add the finite-width pair increments to ``out`` (B, P, P): spread[b, t] dYp_tu at (t, u) and (u, t) for
    every pair k = (rows[k], cols[k]) with ``live[k]`` (row t sees more than one key), what
    :meth:`numeric.causal_width.WidthTerms.add` does with whole arrays.

    dYp_tu is the Chebyshev series with coefficients coef[k] (K, n_b, n_rho) (:class:`numeric.causal_width.
    CausalLookup`) at row t's width coordinate x_b[b, t] and the queries' correlation rho_tu of Q (B, P, P),
    both clipped to [0, 1], times the tables' selection_scale(b_t), which the caller folds into ``spread``.
    Grid points run in parallel.
    """
    B, K = Q.shape[0], rows.shape[0]
    n_b, n_rho = coef.shape[1], coef.shape[2]
    for i in prange(B):
        basis_b = np.empty(n_b)
        basis_rho = np.empty(n_rho)
        for k in range(K):
            if not live[k]:
                continue
            t, u = rows[k], cols[k]
            rho = Q[i, t, u] / math.sqrt(Q[i, t, t] * Q[i, u, u])
            _chebyshev(2.0 * min(max(x_b[i, t], 0.0), 1.0) - 1.0, basis_b)
            _chebyshev(2.0 * min(max(rho, 0.0), 1.0) - 1.0, basis_rho)
            value = 0.0
            for j in range(n_b):
                inner = 0.0
                for m in range(n_rho):
                    inner += coef[k, j, m] * basis_rho[m]
                value += basis_b[j] * inner
            value *= spread[i, t]
            out[i, t, u] += value
            out[i, u, t] += value


@inline
def _chebyshev(x, basis):
    """basis[j] = T_j(x) for j < len(basis) by the three-term recurrence."""
    basis[0] = 1.0
    if basis.shape[0] > 1:
        basis[1] = x
    for j in range(2, basis.shape[0]):
        basis[j] = 2.0 * x * basis[j - 1] - basis[j - 2]
