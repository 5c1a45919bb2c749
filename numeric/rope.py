"""RoPE's attention moments at finite T: the hierarchical (tree) closure of :mod:`derive.rope`, computed.

A row of n keys with RoPE has scores of covariance b0^2 [(qbar - a) delta_ss' + a c(s - s')]
(b0^2 = beta^2 ln T Q_tt, ``a`` the key overlap that the rotation decorrelates, c the
correlation of :func:`correlation`). The pieces, in the order the theory uses them:

- :func:`correlation` — c(D) = (2/d_h) sum_i cos(D theta_i), the expression of
  :func:`derive.rope.correlation` (tests/numeric/test_rope.py evaluates that one);
- :func:`neighbour_means` — S(m), a key's mean correlation with its m nearest keys in a row
  of n (averaged over the row's keys), at the counts the tree reads;
- :func:`tree` — the level covariances C_k of the count-matched binary tree
  (:func:`derive.rope.level_covariance`) and its branchings;
- :func:`tree_ipr` — E sum_s A_s^2 of a tree field, exactly, by the recursion of
  :func:`derive.rope.tree_recursion` on a grid in y = ln tau (Gaussian smoothings by FFT),
  batched over rows; with one level it is the exchangeable finite-T IPR to ~1e-9;
- :func:`effective_width` — the width b_eff of the exchangeable row with the same IPR
  (inverting :class:`numeric.row_moments.RowMoments`' Y2(b, n)); the effective overlap
  is qbar - b_eff^2/b0^2;
- :func:`ipr`, :func:`effective_overlap`, :func:`pair` — one row of T keys and the
  encoder's pair term (the functions the RoPE attention layer's (q, p) map calls,
  :class:`derive.rope.RopeOverlap`, :class:`derive.rope.RopePair`);
- :class:`Rows` — the per-row widths of a causal stack (:mod:`numeric.causal`): the tree
  at anchor rows (geometric in n), the ratio of its width to the variance closure's
  interpolated in ln n between them.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from . import validation as check

#: Grid step in y = ln tau of the tree recursion (the exchangeable IPR is reproduced to ~1e-9 with it).
STEP = 0.05
#: Gaussian tails kept on the grid, in standard deviations.
TAILS = 8.0
#: Rows at which the causal theory evaluates the tree (more rows than this: anchors geometric in n).
ANCHORS = 24


def check_rope(theta, head_dim) -> tuple[float, int]:
    """RoPE's base theta (a finite number > 1) and head dimension (an even integer >= 2)."""
    if isinstance(theta, bool) or not isinstance(theta, (int, float, np.floating, np.integer)) \
            or not (math.isfinite(theta) and theta > 1):
        raise ValueError(f"rope theta must be a finite number > 1, got {theta!r}")
    if isinstance(head_dim, bool) or not isinstance(head_dim, (int, np.integer)) or head_dim < 2 or head_dim % 2:
        raise ValueError(f"rope head_dim must be an even integer >= 2, got {head_dim!r}")
    return float(theta), int(head_dim)


def rope_setting(rope) -> tuple[float, int]:
    """RoPE's (theta, head_dim) as one argument: a pair, checked by :func:`check_rope`."""
    if not isinstance(rope, (tuple, list)) or len(rope) != 2:
        raise ValueError(f"rope must be RoPE's (theta, head_dim), got {rope!r}")
    return check_rope(*rope)


def frequencies(head_dim: int, theta: float) -> np.ndarray:
    """theta_i = theta^(-2i/d_h), i = 0 .. d_h/2 - 1."""
    return theta ** (-np.arange(0, head_dim, 2) / head_dim)


def correlation(delta, head_dim: int, theta: float) -> np.ndarray:
    """c(D) = (2/d_h) sum_i cos(D theta_i) (derive.rope.correlation), broadcast over ``delta``."""
    theta, head_dim = check_rope(theta, head_dim)
    delta = np.asarray(delta, dtype=float)
    return np.cos(delta[..., None] * frequencies(head_dim, theta)).mean(axis=-1)


@lru_cache(maxsize=32)
def lags(T: int, head_dim: int, theta: float) -> np.ndarray:
    """c(0), c(1), ..., c(T - 1) (cached per T and RoPE)."""
    return correlation(np.arange(T), head_dim, theta)


@lru_cache(maxsize=256)
def neighbour_means(n: int, head_dim: int, theta: float, counts: tuple) -> np.ndarray:
    """S(m) at the neighbour counts m in ``counts`` (1 <= m <= n - 1): a key's mean correlation with its m nearest
    keys in a row of n, averaged over keys.

    Key s has s keys to its left and n - 1 - s to its right; its nearest m are the distances 1, 1, 2, 2, ... while
    both sides last, then one side's. With Cum(k) = sum_{D <= k} c(D), its sum is 2 Cum(m//2) + (m odd) c(m//2 + 1)
    for m <= 2 min(left, right), else Cum(m - short) + Cum(short), short = min(left, right). Each count costs O(n)
    (the tree reads ~log2 n of them).
    """
    c = lags(n, head_dim, theta)
    cum = np.concatenate([[0.0], np.cumsum(c[1:])])                       # Cum(k), k = 0 .. n - 1
    s = np.arange(n)
    short = np.minimum(s, n - 1 - s)
    out = np.empty(len(counts))
    for i, m in enumerate(counts):
        half = m // 2
        both = 2.0 * cum[half] + (c[min(half + 1, n - 1)] if m % 2 == 1 else 0.0)
        one = cum[np.clip(m - short, 0, n - 1)] + cum[short]
        out[i] = np.where(m <= 2 * short, both, one).sum() / n / m
    return out


def tree(n: int, head_dim: int, theta: float):
    """(C, r): the count-matched tree of a row of n >= 2 keys (derive.rope.level_covariance).

    C[k - 1] = C_k, k = 1 .. K (K = ceil(log2 n); C_K covers the whole row), relative to the rotated overlap;
    r[k - 1] the branching into level k (2, and n / 2^(K - 1) at the top).
    """
    K = max(1, math.ceil(math.log2(n)))
    sizes = [2**k - 1 for k in range(K)] + [n - 1]                              # m_0 = 0, ..., m_K = n - 1
    S = neighbour_means(n, head_dim, theta, tuple(sizes[1:]))
    sizes = np.array(sizes, dtype=float)
    totals = np.concatenate([[0.0], sizes[1:] * S])
    C = np.diff(totals) / np.diff(sizes)
    r = np.array([2.0] * (K - 1) + [n / 2 ** (K - 1)])
    return C, r


def level_variances(b0sq, iid, rotated, C):
    """Variances of the tree's levels 0 .. K (the top, common to the row, 0): level 0 b0^2 [iid + a (1 - C_1)],
    level k b0^2 a (C_k - C_(k+1)) (negative increments, from c's oscillation, are dropped)."""
    rotated = np.asarray(rotated, dtype=float)[..., None]
    steps = np.maximum(-np.diff(C), 0.0)                                    # C_k - C_(k+1), k = 1 .. K - 1
    first = np.asarray(iid, dtype=float)[..., None] + rotated * (1.0 - C[0])
    var = np.concatenate([first, rotated * steps, np.zeros(rotated.shape)], axis=-1)
    return np.asarray(b0sq, dtype=float)[..., None] * var


def tree_ipr(var, r, step: float = STEP) -> np.ndarray:
    """E sum_s A_s^2 of tree fields (derive.rope.tree_recursion), batched: ``var`` (P, L + 1), ``r`` (P, L).

    Level 0 is the per-key variable, level L the root; r[:, k - 1] is the branching into level k (r = 1 with
    variance 0 leaves a level out, so rows of different depth share one batch). f and m are tabulated on a grid
    in y = ln tau wide enough for every row's Gaussian tails; each Gaussian smoothing is one FFT product with
    the grid's ends held flat (f -> 1 and m -> 0 on the left, f, m -> 0 on the right).
    """
    var, r = np.atleast_2d(np.asarray(var, dtype=float)), np.atleast_2d(np.asarray(r, dtype=float))
    n = np.prod(r, axis=1)
    spread = math.sqrt(max(float(np.sum(var, axis=1).max()), 0.0))
    pad = TAILS * math.sqrt(max(float(var.max()), 0.0)) + 1.0
    lo = -math.log(float(n.max())) - TAILS * spread - 6.0 - pad
    hi = TAILS * spread + 5.0 + pad
    N = 2 ** math.ceil(math.log2((hi - lo) / step))
    y = lo + step * np.arange(N)
    omega2 = (2.0 * np.pi * np.fft.rfftfreq(N, d=step)) ** 2
    edge = int(math.ceil(pad / step))
    e = np.exp(np.minimum(y, 700.0))
    f = np.broadcast_to(np.exp(-e), (var.shape[0], N)).copy()
    m = np.broadcast_to(np.exp(2.0 * np.minimum(y, 350.0) - e), (var.shape[0], N)).copy()

    def smooth(a, variance):
        a[:, :edge] = a[:, edge:edge + 1]
        a[:, -edge:] = a[:, -edge - 1:-edge]
        spectrum = np.fft.rfft(a, axis=1) * np.exp(-0.5 * variance[:, None] * omega2[None, :])
        return np.fft.irfft(spectrum, n=N, axis=1)

    f, m = np.clip(smooth(f, var[:, 0]), 0.0, 1.0), smooth(m, var[:, 0])
    for k in range(1, var.shape[1]):
        rk = r[:, k - 1][:, None]
        power = f ** (rk - 1.0)
        m, f = rk * m * power, f * power
        f, m = np.clip(smooth(f, var[:, k]), 0.0, 1.0), smooth(m, var[:, k])
    return np.clip(m[:, edge:N - edge].sum(axis=1) * step, 0.0, 1.0)


@lru_cache(maxsize=1)
def _row_moments():
    from .row_moments import RowMoments
    return RowMoments()


def effective_width(y2, n, iterations: int = 32) -> np.ndarray:
    """b >= 0 with Y2_exchangeable(b, n) = y2 (Y2 increases with b; bisection in xi = b/(b + sqrt(2 ln n)))."""
    from .row_moments import _z
    y2, n = np.broadcast_arrays(np.asarray(y2, dtype=float), np.asarray(n, dtype=float))
    lo, hi = np.zeros(y2.shape), np.full(y2.shape, 1.0 - 1e-12)
    z = _z(np.maximum(n, 2.0))
    moments = _row_moments()
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        above = moments.y2(z * mid / (1.0 - mid), n) > y2
        hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
    xi = 0.5 * (lo + hi)
    return np.where(n >= 2, z * xi / (1.0 - xi), 0.0)


def row_width(b0sq, iid, rotated, n: int, head_dim: int, theta: float):
    """(Y2, b_eff) of rows of n keys: b0^2, iid = qbar - a and rotated = a arrays (broadcast), one n."""
    b0sq, iid, rotated = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (b0sq, iid, rotated)))
    shape = b0sq.shape
    if n < 2:
        return np.ones(shape), np.zeros(shape)
    C, r = tree(n, head_dim, theta)
    var = level_variances(b0sq.ravel(), iid.ravel(), rotated.ravel(), C)
    y2 = tree_ipr(var, np.broadcast_to(r, (var.shape[0], r.size)))
    return y2.reshape(shape), effective_width(y2, n).reshape(shape)


# --- one row of T keys: the encoder's moments --------------------------------------------------------------

def pair_mean(n: int, head_dim: int, theta: float) -> float:
    """c_bar_n: the mean of c(s - s') over the n(n - 1) ordered pairs of a row of n keys."""
    c = lags(n, head_dim, theta)
    D = np.arange(1, n)
    return float(2.0 * np.sum((n - D) * c[1:]) / (n * (n - 1))) if n > 1 else 1.0


def _state(beta, q, p, T):
    beta, q, p = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (beta, q, p)))
    p = np.clip(p, 0.0, q)
    return beta, q, p, beta**2 * math.log(T) * q


def ipr(beta, q, p, T, theta, head_dim):
    """E sum_s A_ts^2 of one row of T keys with RoPE (the tree closure): arrays broadcast."""
    theta, head_dim = check_rope(theta, head_dim)
    T = check.sequence_length(T, infinite=False)
    beta, q, p, b0sq = _state(beta, q, p, T)
    return row_width(b0sq, q - p, p, T, head_dim, theta)[0]


def effective_overlap(beta, q, p, T, theta, head_dim):
    """p_eff = q - b_eff^2/b0^2 (derive.rope.RopeOverlap): the key overlap of the exchangeable row with the
    RoPE row's IPR."""
    theta, head_dim = check_rope(theta, head_dim)
    T = int(T)
    beta, q, p, b0sq = _state(beta, q, p, T)
    _, b = row_width(b0sq, q - p, p, T, head_dim, theta)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(b0sq > 0, q - b**2 / b0sq, p)
    return np.clip(out, 0.0, q)


def pair(beta, q, p, T, theta, head_dim):
    """E sum_s A_ts A_t's (t != t') with RoPE (derive.rope.RopePair): the exchangeable pair term at the effective
    width and correlation (p/q) c(t - t'), averaged over the T(T - 1) ordered row pairs (weights T - |D|)."""
    from .tables import Yp_table
    theta, head_dim = check_rope(theta, head_dim)
    T = int(T)
    beta, q, p, b0sq = _state(beta, q, p, T)
    _, b = row_width(b0sq, q - p, p, T, head_dim, theta)
    c = lags(T, head_dim, theta)[1:]
    weights = 2.0 * (T - np.arange(1, T)) / (T * (T - 1))
    rho = np.clip((p / q)[..., None] * c, 0.0, 1.0)
    values = Yp_table(T).at(np.broadcast_to(b[..., None], rho.shape), rho)
    return values @ weights


# --- causal rows ------------------------------------------------------------------------------------------

def anchor_counts(n, count: int) -> np.ndarray:
    """The key counts at which per-row quantities are computed and then interpolated in ln n: every distinct count
    >= 2 of the rows' ``n``, or ``count`` of them geometric in n (with the largest)."""
    distinct = np.unique(np.asarray(n)[np.asarray(n) >= 2]).astype(int)
    if distinct.size > count:
        grid = np.unique(np.round(np.geomspace(distinct.min(), distinct.max(), count)).astype(int))
        distinct = np.unique(np.concatenate([grid, [distinct.max()]]))
    return distinct


class Rows:
    """Per-row widths of a masked attention layer with RoPE (numeric.causal.Attention calls it).

    Row t sees n_t keys [f_t, t]; its key overlaps weighted by the rotation, the mean over its key pairs of
    Q_ss' c(s - s') (``rotated_mean``), come from prefix sums of Q * c (exact, O(T^2)). The row's field is the
    tree of its n_t keys with the rotated amplitude a_t = rotated_mean / c_bar_(n_t) (so that its mean over pairs
    is the exact one) and i.i.d. part qbar - a_t; the tree's width relative to the variance closure's,
    b_eff^2 / (b0^2 (qbar - rotated_mean)), is computed at :data:`ANCHORS` rows and interpolated in ln n.
    """

    def __init__(self, T: int, first, n, theta: float, head_dim: int):
        self.theta, self.head_dim = check_rope(theta, head_dim)
        self.T, self.n = T, np.asarray(n, dtype=float)
        self.lags = lags(T, self.head_dim, self.theta)
        t = np.arange(T)
        self.C = self.lags[np.abs(t[:, None] - t[None, :])]                  # c(s - s') on the T x T grid
        self.cbar = np.array([pair_mean(int(k), self.head_dim, self.theta) for k in self.n])
        self.anchors = anchor_counts(self.n, ANCHORS)
        self.first = np.asarray(first)

    def rotated_mean(self, QC_prefix, D, lo, hi):
        """mean over each row's ordered key pairs s != s' of Q_ss' c(s - s') (prefix sums of Q * C, diagonal D)."""
        n = self.n
        square = QC_prefix[..., hi, hi] - QC_prefix[..., lo, hi] - QC_prefix[..., hi, lo] + QC_prefix[..., lo, lo]
        diag = D[..., hi] - D[..., lo]
        return np.where(n > 1, (square - diag) / np.maximum(n * (n - 1), 1.0), 0.0)

    def widths(self, b0sq, qbar, rotated_mean):
        """b_t of every row (..., T): the tree's effective width, anchors interpolated in ln n (module docstring)."""
        spread = np.maximum(qbar - rotated_mean, 0.0)
        a = np.where(self.cbar > 0, np.clip(rotated_mean / np.where(self.cbar > 0, self.cbar, 1.0), 0.0, qbar), 0.0)
        rows = np.array([np.nonzero(self.n == n)[0][0] for n in self.anchors])
        b0, q_, a_, sp = (np.take(x, rows, axis=-1) for x in (b0sq, qbar, a, spread))
        shape = b0.shape                                                     # (..., anchors)
        trees = [tree(int(n), self.head_dim, self.theta) for n in self.anchors]
        depth = max(C.size for C, _ in trees)
        var = np.zeros(shape + (depth + 1,))
        r = np.ones(shape + (depth,))
        for k, (C, branching) in enumerate(trees):
            levels = level_variances(b0[..., k], q_[..., k] - a_[..., k], a_[..., k], C)
            var[..., k, :levels.shape[-1]] = levels
            r[..., k, :branching.size] = branching
        y2 = tree_ipr(var.reshape(-1, depth + 1), r.reshape(-1, depth)).reshape(shape)
        b = effective_width(y2, np.broadcast_to(self.anchors.astype(float), shape))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio_at = np.where(b0 * sp > 0, b**2 / (b0 * sp), 1.0)
        x, xs = np.log(np.maximum(self.n, 1.0)), np.log(self.anchors.astype(float))
        flat = ratio_at.reshape(-1, xs.size)
        ratio = np.stack([np.interp(x, xs, row) for row in flat]).reshape(shape[:-1] + (self.T,))
        return np.where(self.n >= 2, np.sqrt(np.maximum(ratio * b0sq * spread, 0.0)), 0.0)
