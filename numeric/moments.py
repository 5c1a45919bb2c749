"""Attention moments: the IPR E sum_s A_ts^r, the pair term and E (sum A^2)^2.

``T=None`` is the paper's asymptotic theory (Result 1, eq. 4): below
beta_c(q, p) = sqrt(2/(q(q-p))) attention is spread and every moment
vanishes; above it the row is a frozen REM whose largest weights are a
Poisson–Dirichlet(m) sequence with Parisi parameter m = beta_c/beta. The
frozen-phase formulas in m are generated from :mod:`derive.rem` into
:mod:`numeric._generated`. Writing m = min(1, beta_c/beta) makes every moment
continuous through beta_c (m = 1 gives 0) without evaluating beta_c itself,
which diverges as p -> q.

A finite integer ``T`` gives the exact finite-T theory (:mod:`numeric.finite_t`).
"""

from __future__ import annotations

import numpy as np

from . import validation as check


def parisi_m(beta, q, p):
    """m = min(1, beta_c(q, p)/beta), computed as sqrt(2/max(x, 2)) with x = beta^2 q (q - p) (eq. 15).

    Written without beta_c itself, which diverges as p -> q; x <= 0 (p >= q)
    gives m = 1, spread attention.
    """
    with np.errstate(over="ignore"):  # beta^2 = inf for beta > 1e154: m = 0, the fully frozen limit
        x = beta * beta * q * (q - p)
    return np.sqrt(2.0 / np.maximum(x, 2.0))


def _frozen(name):
    from . import _generated
    return getattr(_generated, name)


def ipr2_asymptotic(beta, q, p, T=None):
    """Y2 = max(0, 1 - beta_c/beta) (eq. 4) as a block-map moment function."""
    return _frozen("ipr2_frozen")(parisi_m(beta, q, p))


def ipr_pair_asymptotic(beta, q, p, T=None):
    """E sum_s A_ts A_t's -> 0 as T -> oo (B.2.2)."""
    return 0.0


def ipr2_finite(beta, q, p, T):
    """Y2 at finite T from the cached table (block-map moment function; inputs already checked)."""
    from .tables import Y2_table
    return Y2_table(int(T)).fast(beta, q, p)


def ipr_pair_finite(beta, q, p, T):
    """Yp at finite T from the cached table (block-map moment function; inputs already checked)."""
    from .tables import Yp_table
    return Yp_table(int(T)).fast(beta, q, p)


def _scalar(x):
    return float(x) if np.ndim(x) == 0 else x


def ipr(beta, *, r=2, q=1.0, p=0.0, T=None):
    """E sum_s A_ts^r of one attention row (eq. 2; eq. 4 for r = 2 at T = oo)."""
    beta, r = check.positive("beta", beta), check.interval("r", r, 1.0, np.inf, closed=False)
    T = check.sequence_length(T)
    q, p = check.overlaps(q, p, T)
    if T is None:
        return _scalar(_frozen("ipr_frozen")(r, parisi_m(beta, q, p)))
    from . import finite_t
    return _scalar(finite_t.ipr(beta, r=r, q=q, p=p, T=T))


def ipr_pair(beta, *, q=1.0, p=0.0, T=None):
    """E sum_s A_ts A_t's for two rows t != t' (eq. 22); 0 at T = oo."""
    beta = check.positive("beta", beta)
    T = check.sequence_length(T)
    q, p = check.overlaps(q, p, T)
    if T is None:
        return _scalar(np.zeros(np.broadcast(beta, q, p).shape))
    from . import finite_t
    return _scalar(finite_t.ipr_pair(beta, q=q, p=p, T=T))


def ipr_square(beta, *, q=1.0, p=0.0, T=None):
    """E (sum_s A_ts^2)^2, kept distinct from (E sum_s A_ts^2)^2 (B.5)."""
    beta = check.positive("beta", beta)
    T = check.sequence_length(T)
    q, p = check.overlaps(q, p, T)
    if T is None:
        return _scalar(_frozen("ipr_square_frozen")(parisi_m(beta, q, p)))
    from . import finite_t
    return _scalar(finite_t.ipr_square(beta, q=q, p=p, T=T))
