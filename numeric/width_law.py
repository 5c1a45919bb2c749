"""The law of the two attention rows' score covariance S at finite width: Gauss rules for its factors.

Rows t != t' of one attention layer see log-weights whose covariance is
S = b^2 C M M^T C^T (:mod:`derive.finite_width`, docs/design.md "Finite width"),
with b^2 = beta^2 ln T q (q - p), C = [[1, 0], [rho, sqrt(1 - rho^2)]] and

    M = L_1 L_2 L_3 / sqrt(n_1 n_2 n_3),   L_k = [[sqrt(c_k), 0], [z_k, sqrt(c'_k)]]   (Bartlett),

one factor per Wishart step of the chain token Gram (n_1 = d, Gaussian tokens) ->
queries W_Q x (n_2 = d_head) -> u = W_K^T W_Q x (n_3 = d); c_k ~ chi2(n_k),
c'_k ~ chi2(n_k - 1), z_k ~ N(0, 1), all independent. So

    m11^2 = prod c_k / n_k,   m22^2 = prod c'_k / n_k,
    m21 = (z_1 sqrt(c_2 c_3) + sqrt(c'_1) z_2 sqrt(c_3) + sqrt(c'_1 c'_2) z_3) / sqrt(n_1 n_2 n_3).

m11^2 is the row's own width factor xi (b_t^2 = b^2 xi, exact for one row). For
the quadratures, m21 is taken Gaussian with its exact variance
E V / (n_1 n_2 n_3) (:func:`m21_variance`), independent of m11 and m22; the
neglected dependence (through the shared c_2, c_3) changes moments at relative
O(1/n^2) of the O(1/n) effect.

:func:`product_rule` gives Gauss quadrature nodes and weights for a product of
independent chi2(n)/n factors: the exact density of its logarithm (a
convolution of log-chi-square densities on a fine grid) and the discretised
Stieltjes procedure with the Golub-Welsch eigenvalue step.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

#: Points per standard deviation of the narrowest factor on the fine grid of log xi.
_PER_SD = 24
#: Tail mass beyond the fine grid, per factor.
_TAIL = 1e-15


def _log_chi2_density(n: int, y: np.ndarray) -> np.ndarray:
    """Density of y = ln(c/n), c ~ chi2(n) (n >= 1): exp((n/2)(ln(n/2) + y) - (n/2) e^y - lnGamma(n/2))."""
    half = 0.5 * n
    return np.exp(half * (math.log(half) + y) - half * np.exp(y) - math.lgamma(half))


def _log_chi2_range(n: int) -> tuple[float, float, float]:
    """(lower, upper, sd) of ln(c/n) for c ~ chi2(n): quantiles at the fine grid's tail mass, and the sd."""
    from scipy import special, stats
    lo = math.log(stats.chi2.ppf(_TAIL, n) / n)
    hi = math.log(stats.chi2.isf(_TAIL, n) / n)
    return lo, hi, math.sqrt(float(special.polygamma(1, 0.5 * n)))


def log_product_density(dofs: tuple[int, ...]):
    """(y, density) of y = ln prod_k (c_k/n_k), c_k ~ chi2(n_k) independent (every n_k >= 1), on a fine grid."""
    ranges = [_log_chi2_range(n) for n in dofs]
    h = min(sd for _, _, sd in ranges) / _PER_SD
    density = None
    start = 0.0
    for n, (lo, hi, _) in zip(dofs, ranges):
        y = lo + h * np.arange(int(math.ceil((hi - lo) / h)) + 1)
        f = _log_chi2_density(n, y) * h
        density = f if density is None else np.convolve(density, f)
        start += lo
    y = start + h * np.arange(density.size)
    return y, density / (h * density.sum())


def gauss_rule(x: np.ndarray, w: np.ndarray, n: int):
    """n-point Gauss rule of the discrete measure sum_i w_i delta(x - x_i) (Stieltjes, then Golub-Welsch)."""
    w = w / w.sum()
    shift, scale = float(w @ x), math.sqrt(float(w @ (x - w @ x) ** 2)) or 1.0
    s = (x - shift) / scale
    alpha, beta = np.zeros(n), np.zeros(n)
    p_prev, p = np.zeros_like(s), np.ones_like(s)
    norm_prev = 1.0
    for k in range(n):
        norm = float(w @ (p * p))
        alpha[k] = float(w @ (s * p * p)) / norm
        beta[k] = norm / norm_prev if k else 0.0
        p_prev, p = p, (s - alpha[k]) * p - (beta[k] * p_prev if k else 0.0)
        norm_prev = norm
    jacobi = np.diag(alpha) + np.diag(np.sqrt(beta[1:]), 1) + np.diag(np.sqrt(beta[1:]), -1)
    nodes, vectors = np.linalg.eigh(jacobi)
    return shift + scale * nodes, vectors[0] ** 2


@lru_cache(maxsize=256)
def product_rule(dofs: tuple[int, ...], n: int):
    """(xi nodes, weights) of an n-point Gauss rule in ln xi for xi = prod_k chi2(n_k)/n_k.

    A factor with n_k = 0 (chi2(0) = 0, a rank-deficient Wishart step) makes xi = 0 exactly.
    """
    if any(k == 0 for k in dofs):
        return np.zeros(1), np.ones(1)
    y, density = log_product_density(tuple(sorted(dofs)))
    nodes, weights = gauss_rule(y, density, n)
    return np.exp(nodes), weights


def chain_dofs(d: int, d_head: int) -> tuple[int, int, int]:
    """Degrees of freedom of the three Wishart steps: tokens (d), queries (d_head), u = W_K^T W_Q x (d)."""
    return d, d_head, d


def m21_variance(dofs: tuple[int, int, int]) -> float:
    """E m21^2 = (n_2 n_3 + (n_1 - 1) n_3 + (n_1 - 1)(n_2 - 1)) / (n_1 n_2 n_3) (module docstring)."""
    n1, n2, n3 = dofs
    return (n2 * n3 + (n1 - 1) * n3 + (n1 - 1) * (n2 - 1)) / (n1 * n2 * n3)
