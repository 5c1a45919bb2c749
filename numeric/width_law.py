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

m11^2 is the row's own width factor xi (b_t^2 = b^2 xi, exact for one row).
Given the chi-squares, m21 is exactly Gaussian with variance

    v = A/n_1 + (c'_1/n_1)(c_3/n_3)/n_2 + G/n_3,   A = (c_2/n_2)(c_3/n_3),   G = (c'_1/n_1)(c'_2/n_2),

and m11^2 = (c_1/n_1) A, m22^2 = G (c'_3/n_3): A ties the second row's tail to the
first row's width, G to its own. :func:`pair_rule` integrates over
(c_1/n_1, A, G, c'_3/n_3, z) exactly (Gauss rules of each product law, Gauss-Hermite
in z), with the middle term of v (weight 1/n_2, the only one sharing a factor with
both A and G) replaced by its log-linear regression on A and G. Taking m21
Gaussian with its mean variance and independent of m11, m22 instead
underestimates the two-row pair term by 4-10 % at d = 64, d_h = 32 and T >= 64 in
the condensed phase (the tail of S12 = b^2 m11 m21 is heavier than that).

:func:`product_rule` gives Gauss quadrature nodes and weights for a product of
independent chi2(n)/n factors: the exact density of its logarithm (a
convolution of log-chi-square densities on a fine grid) and the discretised
Stieltjes procedure with the Golub-Welsch eigenvalue step.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from . import _generated_width

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
    """E m21^2 = (n_2 n_3 + (n_1 - 1) n_3 + (n_1 - 1)(n_2 - 1)) / (n_1 n_2 n_3) (derived:
    :func:`derive.finite_width.chain_mean`, generated into :mod:`numeric._generated_width`)."""
    return float(_generated_width.m21_variance(*(float(n) for n in dofs)))


def _scaled_rule(dofs: tuple[int, ...], norms: tuple[int, ...], n: int):
    """Gauss rule of prod_k chi2(dofs_k)/norms_k (a factor with dofs_k = 0 is exactly 0)."""
    x, w = product_rule(tuple(dofs), n)
    return x * math.prod(k / m for k, m in zip(dofs, norms)), w


@lru_cache(maxsize=64)
def pair_rule(dofs: tuple[int, int, int], nodes: tuple[int, int, int, int, int] = (3, 5, 5, 3, 8)):
    """Quadrature points (m11, m21, m22, weight), flattened, of the chain's Bartlett factor (module docstring).

    ``nodes``: Gauss nodes for c_1/n_1, A, G, c'_3/n_3 and z.
    """
    n1, n2, n3 = dofs
    a1, wa1 = _scaled_rule((n1,), (n1,), nodes[0])
    A, wA = _scaled_rule((n2, n3), (n2, n3), nodes[1])
    G, wG = _scaled_rule((n1 - 1, n2 - 1), (n1, n2), nodes[2])
    g3, wg3 = _scaled_rule((n3 - 1,), (n3,), nodes[3])
    z, wz = np.polynomial.hermite_e.hermegauss(nodes[4])
    wz = wz / wz.sum()
    mid_mean = (n1 - 1) / (n1 * n2)                  # E (c'_1/n_1)(c_3/n_3)/n_2
    # log-linear regression of ln c_3 on ln A and of ln c'_1 on ln G (variances of log-chi2 ~ 2/n)
    slope_a = (1.0 / n3) / (1.0 / n2 + 1.0 / n3)
    slope_g = (1.0 / max(n1 - 1, 1)) / (1.0 / max(n1 - 1, 1) + 1.0 / max(n2 - 1, 1))
    grids = np.meshgrid(a1, A, G, g3, z, indexing="ij")
    weights = np.einsum("a,b,c,d,e->abcde", wa1, wA, wG, wg3, wz).ravel()
    a1_, A_, G_, g3_, z_ = (g.ravel() for g in grids)
    with np.errstate(divide="ignore"):
        shape_a = np.exp(slope_a * np.log(A_ / A_.mean())) if n2 and n3 else 1.0
        shape_g = np.exp(slope_g * np.log(np.where(G_ > 0, G_ / max(G_.mean(), 1e-300), 1.0)))
    mid = mid_mean * _normalised(shape_a * shape_g, weights)
    v = A_ / n1 + mid + G_ / n3
    return np.sqrt(a1_ * A_), z_ * np.sqrt(v), np.sqrt(G_ * g3_), weights


def normalized_pair_rule(dofs: tuple[int, int, int], nodes: tuple[int, int, int, int, int] = (3, 4, 3, 3, 8),
                         rho: float = 0.0):
    """Quadrature points (m11, m21, m22, weight) of the chain's factor S/b2 = M M^T for tokens of fixed norm at
    input cosine ``rho`` (the mean's Cholesky factor is inside M: use ``covariance_from_factor`` with rho = 0).

    The first step is the two query tokens' Gram matrix with unit diagonal: its Cholesky factor
    [[1, 0], [c, sqrt(1 - c^2)]] with c = (rho + s r)/sqrt(1 + 2 rho s r), s = sqrt(1 - rho^2), the cosine of
    the normalized tokens, r the cosine of two independent directions in R^(n_1), of density
    (1 - r^2)^((n_1 - 3)/2) (Gauss-Jacobi nodes), in place of C L_1/sqrt(n_1)
    (:func:`derive.finite_width.normalized_chain_factor` at rho = 0; both rows' norms are fixed at every rho).
    Then, with r read as c,

        m11^2 = A,   m22^2 = (1 - r^2) (c'_2/n_2)(c'_3/n_3),   m21 = r sqrt(A) + sqrt(v) z,
        v = (1 - r^2) ((c_3/n_3)/n_2 + (c'_2/n_2)/n_3),   A = (c_2/n_2)(c_3/n_3),

    exactly Gaussian in z given the rest; c_3/n_3 in v is replaced by its log-linear regression on A, as in
    :func:`pair_rule`. ``nodes``: Gauss nodes for r, A, c'_2/n_2, c'_3/n_3 and z.
    """
    return _normalized_pair_rule(tuple(dofs), tuple(nodes), round(float(rho), 12))


@lru_cache(maxsize=64)
def _normalized_pair_rule(dofs, nodes, rho: float):
    from scipy import special
    n1, n2, n3 = dofs
    alpha = 0.5 * (n1 - 3)
    r, wr = special.roots_jacobi(nodes[0], alpha, alpha)
    wr = wr / wr.sum()
    s = math.sqrt(max(1.0 - rho * rho, 0.0))
    r = (rho + s * r) / np.sqrt(1.0 + 2.0 * rho * s * r)         # the normalized query tokens' cosine
    A, wA = _scaled_rule((n2, n3), (n2, n3), nodes[1])
    g2, wg2 = _scaled_rule((n2 - 1,), (n2,), nodes[2])
    g3, wg3 = _scaled_rule((n3 - 1,), (n3,), nodes[3])
    z, wz = np.polynomial.hermite_e.hermegauss(nodes[4])
    wz = wz / wz.sum()
    grids = np.meshgrid(r, A, g2, g3, z, indexing="ij")
    weights = np.einsum("a,b,c,d,e->abcde", wr, wA, wg2, wg3, wz).ravel()
    r_, A_, g2_, g3_, z_ = (g.ravel() for g in grids)
    slope_a = (1.0 / n3) / (1.0 / n2 + 1.0 / n3)
    c3 = _normalised(np.exp(slope_a * np.log(A_ / A_.mean())), weights)     # E[c_3/n_3 | A], mean 1
    v = (1.0 - r_ * r_) * (c3 / n2 + g2_ / n3)
    return np.sqrt(A_), r_ * np.sqrt(A_) + z_ * np.sqrt(v), np.sqrt((1.0 - r_ * r_) * g2_ * g3_), weights


#: Gauss nodes of each of nu and the chi-square in :func:`key_density`'s mixture.
N_KEY_LAW = 16
#: Radial grid of :func:`key_density`'s table.
KEY_LAW_POINTS = 4001


def key_density(d: int, rho: float, k: int):
    """(r, density): the law of the k projections zeta = kappa z of a normalized key on its rows' query
    directions (:func:`derive.finite_width.normalized_key`, step 6) at input cosine rho, as a radial density in
    R^k tabulated on r in [0, min(sqrt(d/(1 - rho)), 14)]. Given the rest of the key's norm,
    D = (sqrt(rho) + sqrt(1 - rho) nu/sqrt(d))^2 + (1 - rho) R/d (nu ~ N(0, 1) along the common direction,
    R ~ chi2(d - k - 1)), zeta = z/sqrt(D + a|z|^2) with z ~ N(0, I_k) and a = (1 - rho)/d, whose density
    p(zeta | D) is derived in :func:`derive.finite_width.normalized_key_density` (generated:
    ``_generated_width.normalized_key_density``); it is averaged over D by Gauss rules (:data:`N_KEY_LAW`
    nodes each). At rho = 0 it is the sphere law (1 - r^2/d)^((d - k - 2)/2); as d -> oo, N(0, I_k)."""
    return _key_density(int(d), round(float(rho), 12), int(k))


@lru_cache(maxsize=64)
def _key_density(d: int, rho: float, k: int):
    a = (1.0 - rho) / d
    r = np.linspace(0.0, min(math.sqrt(1.0 / a), 14.0), KEY_LAW_POINTS)
    nu, w_nu = np.polynomial.hermite_e.hermegauss(N_KEY_LAW)
    R, w_R = product_rule((d - k - 1,), N_KEY_LAW)
    D = (math.sqrt(rho) + math.sqrt((1.0 - rho) / d) * nu[:, None]) ** 2 + (1.0 - rho) * (d - k - 1) * R[None, :] / d
    weight = (w_nu / w_nu.sum())[:, None] * w_R[None, :]
    inside = a * r * r < 1.0 - 1e-9                     # at the edge the density vanishes faster than any power
    density = np.zeros_like(r)
    for D_i, w_i in zip(D.ravel(), weight.ravel()):
        density[inside] += w_i * _generated_width.normalized_key_density(k, D_i, a, r[inside])
    return r, density


def _normalised(x, w):
    """x divided by its weighted mean (so the regression keeps E mid exactly)."""
    return x / float(np.sum(w * x))
