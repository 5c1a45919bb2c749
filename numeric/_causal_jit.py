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
"""

from __future__ import annotations

import math

from numba import prange

from . import _generated_causal as gen
from ._jit import _njit, kernel

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
