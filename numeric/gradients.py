"""Gradient norms of a self-attention layer at initialisation (paper Result 2, corrected).

For the loss L = sum_{t,i} G_ti S(X)_ti with G i.i.d. N(0, 1),

    E ||dL/dW_Q||_F^2 = T d^2 beta sqrt(ln T) sigma_v2 q (q - p)^2 E[Y2 - 2 Y3 + (sum_s A_ts^2)^2]

(:mod:`derive.jacobian`; the same for W_K; W_V: T d^2 (p + (q - p) Y2)).
The bracket is non-negative for every attention row. Asymptotically
(``finite_T=False``) the moments are those of the frozen REM, and the bracket
is m(1 - m)/3 = Var Y2 with m = beta_c/beta: zero below beta_c, largest at
beta = 2 beta_c. ``finite_T=True`` uses the exact finite-T moments
(:mod:`numeric.finite_t`), where gradients vanish only gradually below beta_c.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import validation as check
from .moments import parisi_m


def _positive_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _moments(beta, q, p, T, finite_T):
    if finite_T:
        from . import finite_t
        return (finite_t.ipr(beta, r=2, q=q, p=p, T=T), finite_t.ipr(beta, r=3, q=q, p=p, T=T),
                finite_t.ipr_square(beta, q=q, p=p, T=T))
    from ._generated import ipr_frozen, ipr_square_frozen
    m = parisi_m(beta, q, p)
    return ipr_frozen(2.0, m), ipr_frozen(3.0, m), ipr_square_frozen(m)


def _checked(beta, d, T, q, p, sigma_v2):
    beta = check.positive("beta", beta)
    d, T = _positive_int("d", d, 1), _positive_int("T", T, 2)
    q, p = check.positive("q", q), check.as_array("p", p)
    if np.any(p >= q) or np.any(p < -q):
        raise ValueError(f"p must satisfy -q <= p < q, got q={q!r}, p={p!r}")
    return beta, d, T, q, p, check.positive("sigma_v2", sigma_v2)


def _norm(which, beta, d, T, q, p, sigma_v2, finite_T):
    from . import _generated
    beta, d, T, q, p, sigma_v2 = _checked(beta, d, T, q, p, sigma_v2)
    y2, y3, y22 = _moments(beta, q, p, T, finite_T)
    out = getattr(_generated, f"grad_sq_norm_{which}")(beta, d, T, q, p, sigma_v2, y2, y3, y22)
    out = np.asarray(out, dtype=float)
    return float(out) if out.ndim == 0 else out


def query_grad_sq_norm(beta, *, d, T, q=1.0, p=0.0, sigma_v2=1.0, finite_T=True):
    """E ||dL/dW_Q||_F^2 (module docstring); vectorised over beta, q, p, sigma_v2."""
    return _norm("Q", beta, d, T, q, p, sigma_v2, finite_T)


def key_grad_sq_norm(beta, *, d, T, q=1.0, p=0.0, sigma_v2=1.0, finite_T=True):
    """E ||dL/dW_K||_F^2: equal to the query's at leading order in d."""
    return _norm("K", beta, d, T, q, p, sigma_v2, finite_T)


def value_grad_sq_norm(beta, *, d, T, q=1.0, p=0.0, sigma_v2=1.0, finite_T=True):
    """E ||dL/dW_V||_F^2 = T d^2 (p + (q - p) Y2): it never vanishes (not in the paper)."""
    return _norm("V", beta, d, T, q, p, sigma_v2, finite_T)
