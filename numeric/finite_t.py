"""Exact attention moments at finite sequence length T (issue 6, part 1): the checked public functions.

The paper's Result 1 (eq. 4) is the T -> oo limit of E sum_s A_ts^2; at the T
people use it is far off (B.3). Here the moments of softmax rows over T
jointly Gaussian scores with the covariance of eq. (9) are computed exactly:

- :func:`ipr` — E sum_s A_ts^r of one row (eq. 2),
- :func:`ipr_square` — E (sum_s A_ts^2)^2 (B.5; kept distinct from (E Y2)^2),
- :func:`ipr_pair` — E sum_s A_ts A_t's of two rows t != t' (eq. 22),

to relative error ~1e-13 (checked against mpmath at 30 digits in
tests/numeric/test_finite_t.py). Every moment depends on the state only through
b = beta sqrt(ln T q (q - p)) (:func:`effective_b`) and rho = p/q.

Where the pieces live:

- :mod:`numeric.laplace` — the Gamma-function/Laplace representations of the
  moments (stated symbolically in :mod:`derive.finite_t`) as quadratures in
  (b, rho, T), and the reduction of a checked state (beta, q, p) to (b, rho);
- :mod:`numeric.smoothing` — the Gaussian smoothings those integrals are made
  of, and their discretisation settings (:class:`~numeric.smoothing.Accuracy`);
- :mod:`numeric.tables` — the fast interpolated Y2(b, T) and Yp(b, rho, T) the
  block maps use (:func:`Y2_table`, :func:`Yp_table`, :func:`ipr2_fast`,
  :func:`ipr_pair_fast`, re-exported here), cached per T;
- :mod:`numeric.interpolation` — the Chebyshev and cubic-Hermite interpolation
  behind the tables;
- :mod:`numeric.blas` — one BLAS thread for the pair term's matrix products.

Domain: T an integer >= 2 (:func:`numeric.validation.sequence_length`), beta > 0,
q > 0, 0 <= p < q (p < 0, possible down to -q/(T-1), would need anti-correlated
rows in the pair term; it is rejected), r > 1.
"""

from __future__ import annotations

import math

from . import validation as check
from .laplace import effective_b, finite_state, pair_term, plain, row_moment, row_square
from .tables import Y2_table, Y2Table, Yp_table, YpTable, ipr2_fast, ipr_pair_fast

__all__ = ["Y2Table", "Y2_table", "YpTable", "Yp_table", "effective_b", "ipr", "ipr2_fast", "ipr_pair",
           "ipr_pair_fast", "ipr_square"]


def ipr(beta, *, r=2, q=1.0, p=0.0, T):
    """E sum_s A_ts^r for one attention row at finite T (paper eq. 2; eq. 4 is its T -> oo limit).

    Exact (Gamma-function/Laplace representation, :mod:`numeric.laplace`),
    relative error ~1e-13. Vectorised over beta, q, p and r (broadcast).
    """
    T = check.sequence_length(T, infinite=False)
    r = check.interval("r", r, 1.0, math.inf, closed=False)
    b, _ = finite_state(beta, q, p, T)
    return plain(row_moment(b, r, T))


def ipr_square(beta, *, q=1.0, p=0.0, T):
    """E (sum_s A_ts^2)^2 for one attention row at finite T (kept distinct from (E Y2)^2, B.5).

    E sum_s A^4 plus T(T-1)/6 int u^3 (E w^2 e^(-uw))^2 L^(T-2) du (:mod:`numeric.laplace`).
    """
    T = check.sequence_length(T, infinite=False)
    b, _ = finite_state(beta, q, p, T)
    return plain(row_square(b, T))


def ipr_pair(beta, *, q=1.0, p=0.0, T):
    """E sum_s A_ts A_t's for two rows t != t' at finite T (paper eq. 22; Yp -> 0 as T -> oo).

    The rows' log-weights are b x_s, b x'_s with corr(x, x') = rho = p/q; exactly
    1/T at p = 0 (independent rows), Y2 as rho -> 1.
    """
    T = check.sequence_length(T, infinite=False)
    b, rho = finite_state(beta, q, p, T)
    return plain(pair_term(b, rho, T))
