"""Gaussian smoothings of the bounded Laplace kernels, on whole grids of t = log u (finite-T moments).

With u = e^t every factor of the finite-T Laplace integrals (:mod:`numeric.laplace`,
the representations of the paper's eqs. 2 and 22 stated in :mod:`derive.finite_t`)
is a Gaussian smoothing, over z ~ N(0, 1), of a bounded function of x = t + b z = log(u w):

    u^r E[w^r e^(-uw)] = E f_r(t + b z),  f_r(x) = exp(r x - e^x)  (<= (r/e)^r),
    1 - L(e^t)         = E g(t + b z),    g(x)   = -expm1(-e^x),
    L(e^t)             = E l(t + b z),    l(x)   = exp(-e^x),

with w = e^(b z) a log-normal softmax weight and L(u) = E e^(-uw) its Laplace
transform. :func:`smooth` returns all three on a grid of t at once. For b <= 1
it is a trapezoid sum over z; for b > 1 over the sharp variable x (the kernels
are bounded and analytic in the strip |Im x| < pi/2, so spacing h costs
~ exp(-pi^2/h)), with the far left tail in closed form. The nodes are chosen
commensurate with the t grid, so each sum is one correlation of 1-D arrays.

:class:`Accuracy` fixes every discretisation choice of the integrals;
:data:`EXACT` (relative error ~1e-13, tested against mpmath) serves the direct
functions, :data:`TABLE` the table nodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

#: sqrt(2 pi), the Gaussian density's normaliser.
SQRT2PI = math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class Accuracy:
    """How finely the finite-T integrals (this module and :mod:`numeric.laplace`) are discretised.

    ``h``: spacing in the sharp variable x = log(u w) and base spacing of the
    one-row t grid (trapezoid error ~ exp(-pi^2/h)); ``h_pair``: base spacing of
    the pair grid (its kernel f_1 tolerates more); ``z_max``: half-width of
    Gaussian ranges; ``x_lo``: left end of x sums (beyond it the kernels are
    e^(r x) to relative e^x_lo, integrated in closed form); ``log_tail(T, r)``:
    log of the left-tail mass dropped from the one-row integral; ``pair_cut``:
    mass of the one-row density dropped on each side of the pair window;
    ``delta_tail + delta_per_be * b_e``: the largest |t - t'| kept (measured:
    the pair integrand's mass beyond 32 + 7.8 b_e is below 1e-14 for T in
    [2, 1e7], b <= 20); ``n_hermite``: Gauss-Hermite nodes for a small shared
    width b_c.
    """

    h: float
    h_pair: float
    z_max: float
    x_lo: float
    relative: bool
    tail: float
    delta_tail: float
    delta_per_be: float
    n_hermite: int

    def log_tail(self, T: int, r: float) -> float:
        """log of the one-row integral's dropped tail: relative to T^(1-r) or absolute."""
        return math.log(self.tail) + ((1.0 - r) * math.log(T) if self.relative else 0.0)

    def pair_cut(self, T: int) -> float:
        """One-row density mass dropped per side of the pair window (Yp >= 1/T)."""
        return self.tail / T if self.relative else self.tail


#: Direct functions: relative error ~1e-13 (tested against mpmath).
EXACT = Accuracy(h=0.2, h_pair=1.0 / 3.0, z_max=12.0, x_lo=-45.0, relative=True,
                 tail=1e-14, delta_tail=34.0, delta_per_be=9.0, n_hermite=24)
#: Table nodes: absolute error ~1e-10 at a fraction of the cost.
TABLE = Accuracy(h=0.3, h_pair=0.45, z_max=9.0, x_lo=-38.0, relative=False,
                 tail=1e-13, delta_tail=26.0, delta_per_be=7.0, n_hermite=12)

#: Smoothing widths above this sum over x instead of z.
B_SWITCH = 1.0
#: Largest z spacing of a Gaussian trapezoid sum (error ~ exp(-2 pi^2/h^2)).
H_Z = 0.25
#: Largest subdivision of a grid step for the z sum; beyond it (tiny b) a full array is used.
MAX_SUBDIVISION = 16


def grid(start: float, stop: float, step: float) -> np.ndarray:
    """start + step k up to the first point >= stop (exact spacing, unlike np.arange)."""
    return start + step * np.arange(int(math.ceil((stop - start) / step - 1e-9)) + 1)


def smooth(t0: float, dt: float, n: int, b: float, rs=(), acc: Accuracy = EXACT):
    """E_z of g, l and f_r (r in ``rs``) at x = t + b z, z ~ N(0, 1), on the grid t = t0 + dt i, i < n.

    Returns ``(G, L, {r: M_r})`` with G = 1 - L(e^t), L = L(e^t) and
    M_r = e^(rt) E[w^r exp(-e^t w)], each with its own relative accuracy
    (G and L are separate sums of positive terms, not 1 minus each other).
    The quadrature nodes are chosen commensurate with dt, so every node value
    is shared by many t and each sum is one correlation of 1-D arrays.
    """
    if b <= B_SWITCH:
        return _smooth_over_z(t0, dt, n, b, rs, acc)
    return _smooth_over_x(t0, dt, n, b, rs, acc)


def _kernels(x, rs):
    """g, l and f_r (r in ``rs``) at the points x; x is clipped where all are saturated."""
    r_top = max(max(rs, default=1.0), 1.0)
    x = np.minimum(x, min(40.0, 700.0 / r_top))
    ex = np.exp(x)
    small = np.exp(-ex)
    return -np.expm1(-ex), small, {r: np.exp(r * x) * small for r in rs}


def _correlate_every(values, weights, k):
    """out[i] = sum_j weights[j] values[k i + j] for every i with k i + len(weights) <= len(values)."""
    return np.correlate(values, weights, "valid")[::k]


def _smooth_over_z(t0, dt, n, b, rs, acc):
    """Trapezoid sum over z: for b <= 1 the kernels vary slowly in z.

    The z spacing is dt/(k b) for an integer k, so that t + b z runs over one
    grid of spacing dt/k; for very small b (k would be huge) the kernels are
    evaluated on the full (t, z) array instead.
    """
    r_top = max(max(rs, default=1.0), 1.0)
    h = min(H_Z, acc.h / b) if b > 0 else H_Z
    k = math.ceil(dt / (b * h) - 1e-9) if b > 0 else 0
    if k == 0 or k > MAX_SUBDIVISION:
        z = grid(-acc.z_max, acc.z_max + r_top * b, h)
        w = np.exp(-0.5 * z * z) * (h / SQRT2PI)
        g, small, f = _kernels(t0 + dt * np.arange(n)[:, None] + b * z[None, :], rs)
        return g @ w, small @ w, {r: f[r] @ w for r in rs}
    h = dt / (k * b)
    z = grid(-acc.z_max, acc.z_max + r_top * b, h)
    w = np.exp(-0.5 * z * z) * (h / SQRT2PI)
    g, small, f = _kernels(t0 + b * z[0] + (dt / k) * np.arange(k * (n - 1) + z.size), rs)
    return (_correlate_every(g, w, k), _correlate_every(small, w, k),
            {r: _correlate_every(f[r], w, k) for r in rs})


def _smooth_over_x(t0, dt, n, b, rs, acc):
    """Trapezoid sum over x = t + b z with the Gaussian weight phi((x - t)/b)/b.

    The kernels are sharp in x (width 1) and the Gaussian is wide (b > 1), so a
    sum over x resolves both with spacing <= acc.h (dt/k, so that every
    difference x - t lies on one grid and each sum is a correlation; when the
    grid of t is much coarser than the x range, a full (t, x) array is cheaper).
    Below acc.x_lo the kernels are e^(r x) to relative e^x_lo and their tails are
    closed forms (:func:`_tail_exp_gauss`, :func:`_tail_exp_cdf`).
    """
    r_top = max(max(rs, default=1.0), 1.0)
    k = math.ceil(dt / acc.h - 1e-9)
    h = dt / k
    x = grid(acc.x_lo, math.log(r_top) + 4.5, h)
    wx = np.full(x.size, h)
    wx[0] = 0.5 * h
    g, small, f = _kernels(x, rs)
    f1 = np.exp(x) * small * wx
    t = t0 + dt * np.arange(n)
    if k * (n - 1) < n * x.size:
        s = (acc.x_lo - t0 + h * np.arange(-k * (n - 1), x.size)) / b
        combine = lambda values, weights: _correlate_every(values, weights, k)[::-1]
    else:
        s = (x[None, :] - t[:, None]) / b
        combine = lambda values, weights: values @ weights
    tail = special.ndtr(-np.abs(s))
    below = np.where(s > 0, tail, 1.0 - tail)
    above = np.where(s > 0, 1.0 - tail, tail)
    dens = np.exp(-0.5 * s * s) / (b * SQRT2PI)
    G = combine(below, f1) + _tail_exp_cdf(t, b, acc.x_lo, upper=True)
    L = combine(above, f1) + _tail_exp_cdf(t, b, acc.x_lo, upper=False)
    M = {r: combine(dens, f[r] * wx) + _tail_exp_gauss(t, b, r, acc.x_lo) for r in rs}
    return G, L, M


def _tail_exp_gauss(t, b, r, x_lo):
    """int_-oo^x_lo e^(r y) phi((y - t)/b)/b dy, without overflow for any b.

    Equals exp(r t + r^2 b^2/2) Phi((x_lo - t - r b^2)/b); with B = (t - x_lo)/b + r b > 0
    it is rewritten as exp(r x_lo - (t - x_lo)^2/(2 b^2)) erfcx(B/sqrt 2)/2, free of
    cancellation.
    """
    B = (t - x_lo) / b + r * b
    pos = B > 0
    out = np.empty_like(t)
    out[pos] = (np.exp(r * x_lo - 0.5 * ((t[pos] - x_lo) / b) ** 2)
                * special.erfcx(B[pos] / math.sqrt(2.0)) / 2)
    out[~pos] = np.exp(r * t[~pos] + 0.5 * (r * b) ** 2 + special.log_ndtr(-B[~pos]))
    return out


def _tail_exp_cdf(t, b, x_lo, *, upper):
    """int_-oo^x_lo e^y Phi(+-(t - y)/b) dy (``upper``: +, the G tail; else -, the L tail).

    By parts: e^x_lo Phi(+-(t - x_lo)/b) +- int_-oo^x_lo e^y phi((y - t)/b)/b dy.
    """
    first = math.exp(x_lo) * special.ndtr((t - x_lo) / b if upper else (x_lo - t) / b)
    second = _tail_exp_gauss(t, b, 1.0, x_lo)
    return first + second if upper else np.maximum(first - second, 0.0)


def log_L(G, L):
    """log L from whichever of G = 1 - L and L is the accurate one."""
    with np.errstate(divide="ignore"):
        return np.where(G < 0.5, np.log1p(-np.minimum(G, 0.5)), np.log(np.maximum(L, 0.0)))
