"""Exact attention moments at finite sequence length T (issue 6, part 1).

The paper's Result 1 (eq. 4) is the T -> oo limit of E sum_s A_ts^2; at the T
people use it is far off (B.3). Here the moments of softmax rows over T
jointly Gaussian scores with the covariance of eq. (9) are computed exactly.

Score model (B.1, eq. 9): Cov(a_ts, a_kl) = beta^2 ln T q_tk q_sl with q_tt = q,
q_ts = p, i.e. a_ts = sigma[(q-p) g_ts + sqrt(p(q-p)) (u_t + v_s) + p w] with
g, u, v, w i.i.d. N(0, 1) and sigma = beta sqrt(ln T). In the softmax of row t
the terms u_t and w cancel, so the row's weights are w_s = exp(b z_s) with
z_s i.i.d. N(0, 1) and

    b = beta sqrt(ln T q (q - p)),

and two rows t != t' see log-weights b x_s, b x'_s with corr(x_s, x'_s) = rho = p/q
(the shared v_s). Every moment depends on (b, T) or (b, rho, T) only.

Exact representations (:mod:`derive.finite_t` states them symbolically). With
the Gamma-function identity x^-r = Gamma(r)^-1 int_0^oo u^(r-1) e^(-ux) du and
L(u) = E e^(-uw), the Laplace transform of the log-normal weight,

    E sum_s A_ts^r     = T/Gamma(r) int u^(r-1) E[w^r e^(-uw)] L(u)^(T-1) du,
    E (sum_s A^2)^2    = E sum_s A^4 + T(T-1)/Gamma(4) int u^3 (E w^2 e^(-uw))^2 L(u)^(T-2) du,
    E sum_s A_ts A_t's = T int int E[w w' e^(-uw - vw')] (E e^(-uw - vw'))^(T-1) du dv.

Numerics. With u = e^t every factor is a Gaussian smoothing, over z, of a
bounded function of x = t + b z = log(u w):

    u^r E[w^r e^(-uw)] = E f_r(t + b z),  f_r(x) = exp(r x - e^x)  (<= (r/e)^r),
    1 - L(e^t)         = E g(t + b z),    g(x)   = -expm1(-e^x),
    L(e^t)             = E l(t + b z),    l(x)   = exp(-e^x),

and L^(T-1) = exp((T-1) log1p(-(1 - L))): nothing overflows, and 1 - L ~ 1/T
keeps its relative accuracy. The smoothing is a trapezoid sum over z for
b <= 1 and, for b > 1, over the sharp variable x (the kernels are bounded and
analytic in the strip |Im x| < pi/2, so spacing h costs ~ exp(-pi^2/h)), with
the far left tail in closed form. The outer t (and t, t') integrals are
trapezoid sums on grids of spacing h max(1, b/sqrt(2 ln T)): the integrand
varies on the scale 1 below the condensation (b < sqrt(2 ln T), paper eq. 15)
and on b/sqrt(2 ln T) above it. The pair term splits each row's log-weight
into a shared and a private Gaussian (x = sqrt(rho) c + sqrt(1 - rho) e), so
its 2-D integrand is a c-average of products of one-row smoothings
(:func:`_pair_moment`). The direct functions use :data:`EXACT` (relative
error ~1e-13, checked against mpmath at 30 digits in
tests/numeric/test_finite_t.py); table nodes use the cheaper :data:`TABLE`.

Domain: T an integer >= 2, beta > 0, q > 0, 0 <= p < q (p < 0, possible down
to -q/(T-1), would need anti-correlated rows in the pair term; it is rejected).

Fast versions. Y2 depends on (b, T) only and Yp on (b, rho, T): :func:`Y2_table`
and :func:`Yp_table` interpolate them per T (Chebyshev in xi = b/(b + sqrt(2 ln T)),
and for Yp in a stretched sqrt(1 - rho)), resampled onto fine cubic-Hermite
grids so that a call costs O(1) per point.
"""

from __future__ import annotations

import ctypes
import glob
import math
import numbers
import os
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.polynomial import chebyshev
from scipy import special

from . import validation as check

_SQRT2PI = math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class Accuracy:
    """How finely the integrals are discretised.

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
#: Shared widths up to this use Gauss-Hermite nodes in c; above, a lattice sum.
BC_SWITCH = 0.5
#: Largest subdivision of a grid step for the z sum; beyond it (tiny b) a full array is used.
MAX_SUBDIVISION = 16


def _grid(start: float, stop: float, step: float) -> np.ndarray:
    """start + step k up to the first point >= stop (exact spacing, unlike np.arange)."""
    return start + step * np.arange(int(math.ceil((stop - start) / step - 1e-9)) + 1)


def _z_star(T: int) -> float:
    """sqrt(2 ln T): the REM's condensation point in b (paper eq. 15 with b = beta sqrt(q(q-p) ln T))."""
    return math.sqrt(2.0 * math.log(T))


# --- Gaussian smoothing of the kernels f_r, g, l -------------------------------

def _smooth(t0: float, dt: float, n: int, b: float, rs=(), acc: Accuracy = EXACT):
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
        z = _grid(-acc.z_max, acc.z_max + r_top * b, h)
        w = np.exp(-0.5 * z * z) * (h / _SQRT2PI)
        g, small, f = _kernels(t0 + dt * np.arange(n)[:, None] + b * z[None, :], rs)
        return g @ w, small @ w, {r: f[r] @ w for r in rs}
    h = dt / (k * b)
    z = _grid(-acc.z_max, acc.z_max + r_top * b, h)
    w = np.exp(-0.5 * z * z) * (h / _SQRT2PI)
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
    x = _grid(acc.x_lo, math.log(r_top) + 4.5, h)
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
    dens = np.exp(-0.5 * s * s) / (b * _SQRT2PI)
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


def _log_L(G, L):
    """log L from whichever of G = 1 - L and L is the accurate one."""
    with np.errstate(divide="ignore"):
        return np.where(G < 0.5, np.log1p(-np.minimum(G, 0.5)), np.log(np.maximum(L, 0.0)))


# --- one row: E sum_s A^r and E (sum_s A^2)^2 ----------------------------------

def _t_step(b: float, T: int, base: float) -> float:
    """Outer grid spacing: ``base`` below condensation, scaled by b/sqrt(2 ln T) above."""
    return base * max(1.0, b / _z_star(T))


def _row_grid(b: float, T: int, r_low: float, r_high: float, acc: Accuracy, base: float):
    """The t = log u grid that holds all but the dropped tails of the one-row integrals.

    Left: the integrand is below T M_r(t)/Gamma(r) <= T e^(r t + r^2 b^2/2) (and its
    mass beyond z = z_max is negligible), so t < (log_tail - ln T)/r - min(r b^2/2,
    z_max b) is dropped. Right: f_r(x) is negligible for x > ln r + 4.5, so t beyond
    that + z_max b; and for large T, L^(T-1) < e^-800 once (T-1) 0.63 Phi(t/b) > 800
    (g >= 1 - 1/e for x >= 0).
    """
    left = (acc.log_tail(T, r_low) - math.log(T)) / r_low - min(0.5 * r_high * b * b, acc.z_max * b)
    right = math.log(r_high) + 4.5 + acc.z_max * b
    p_cut = 800.0 / ((1.0 - math.exp(-1.0)) * (T - 1))
    if p_cut < 0.5:
        right = min(right, b * float(special.ndtri(1.0 - p_cut)) + 4.5)
    dt = _t_step(b, T, base)
    return _grid(left, right, dt), dt


def _row_moments(b: float, T: int, rs=(2.0,), square: bool = False, acc: Accuracy = EXACT) -> dict:
    """{r: E sum_s A^r} for one row of T weights e^(b z) (and ``"square"``: E (sum A^2)^2).

    Trapezoid sums over t = log u of T/Gamma(r) M_r(t) L^(T-1) (the r-th moment) and of
    T(T-1)/6 M_2(t)^2 L^(T-2) (the off-diagonal part of (sum A^2)^2).
    """
    need = sorted(set(rs) | ({2.0, 4.0} if square else set()))
    t, dt = _row_grid(b, T, need[0], need[-1], acc, acc.h)
    G, L, M = _smooth(t[0], dt, t.size, b, need, acc)
    log_L = _log_L(G, L)
    decay = np.exp((T - 1) * log_L)
    moments = {r: T / math.gamma(r) * dt * float(M[r] @ decay) for r in need}
    out = {r: moments[r] for r in rs}
    if square:
        cross = T * (T - 1) / 6.0 * dt * float(M[2.0] ** 2 @ np.exp((T - 2) * log_L))
        out["square"] = moments[4.0] + cross
    return out


# --- two rows: E sum_s A_ts A_t's ----------------------------------------------

@lru_cache(maxsize=256)
def _pair_window(b: float, T: int, acc: Accuracy):
    """[t_a, t_b]: the t-range outside which the pair integrand has negligible mass.

    Integrating the pair integrand over t' leaves at most the one-row density
    D(t) = T M_1(t) L(t)^(T-1) (it integrates to E sum_s A_ts = 1, and
    E e^(-uw - vw') <= L(u)); the window keeps all but ``acc.pair_cut(T)`` of D
    on each side. Cached: a table evaluates many rho at one b.
    """
    t, dt = _row_grid(b, T, 1.0, 1.0, acc, acc.h_pair)
    G, L, M = _smooth(t[0], dt, t.size, b, (1.0,), acc)
    density = T * M[1.0] * np.exp((T - 1) * _log_L(G, L)) * dt
    cut = acc.pair_cut(T)
    inside = (np.cumsum(density) >= cut) & (np.cumsum(density[::-1])[::-1] >= cut)
    keep = np.flatnonzero(inside)
    return float(t[max(keep[0] - 1, 0)]), float(t[min(keep[-1] + 1, t.size - 1)])


def _pair_sum(T: int, numerator, one_minus_K, K, area: float) -> float:
    """T area sum(numerator K^(T-1)), with log K from the accurate one of 1 - K and K."""
    return T * area * float(np.sum(numerator * np.exp((T - 1) * _log_L(one_minus_K, K))))


def _pair_small_shared(b_c, b_e, T, t_a, t_b, step, acc) -> float:
    """Pair integral on a (t, t') grid, Gauss-Hermite nodes c_k for the shared part (b_c small).

    The smoothings at width b_e are evaluated at t_i + b_c c_k; each 2-D array is
    then one matrix product over k.
    """
    t = _grid(t_a, t_b, step)
    c, w = np.polynomial.hermite_e.hermegauss(acc.n_hermite)
    w = w / _SQRT2PI
    rows = [_smooth(t[0] + b_c * ck, step, t.size, b_e, (1.0,), acc) for ck in c]
    F = np.array([M[1.0] for _, _, M in rows])
    G = np.array([G for G, _, _ in rows])
    L = np.array([L for _, L, _ in rows])
    numerator = F.T @ (w[:, None] * F)
    one_minus_K = (w @ G)[:, None] + L.T @ (w[:, None] * G)
    K = L.T @ (w[:, None] * L)
    return _pair_sum(T, numerator, one_minus_K, K, step * step)


def _pair_large_shared(b_c, b_e, T, t_a, t_b, d_along, d_delta, acc) -> float:
    """Pair integral in sheared coordinates (t', delta = t - t') when b_c is large.

    The shared c shifts t and t' together, i.e. it smooths along t' at fixed
    delta with a Gaussian of width b_c; the private part makes the integrand
    narrow in delta (width max(1, b_e)) but smooth along t'. On a lattice of
    spacing lam (with delta on the same lattice) the smoothing is one matrix
    product of the (Toeplitz) Gaussian weights with lattice products such as
    F(s + delta) F(s). Lattice points beyond the window (by more than the
    Gaussian's reach) carry the limits of (F, G, L): (0, 0, 1) on the left,
    (0, 1, 0) on the right.
    """
    m_delta = int(math.ceil(d_delta / (0.5 * b_c)))
    lam = d_delta / m_delta
    m_along = max(1, int(round(d_along / lam)))
    along = _grid(t_a, t_b, m_along * lam)
    J = int(math.ceil(min(t_b - t_a, acc.delta_tail + acc.delta_per_be * b_e) / d_delta))
    spread = int(math.ceil(acc.z_max * b_c / lam))
    n_lat = m_along * (along.size - 1) + 2 * spread + 1
    G, L, M = _smooth(t_a - spread * lam, lam, n_lat, b_e, (1.0,), acc)
    pad = J * m_delta
    F = np.pad(M[1.0], pad)
    G = np.pad(G, pad, constant_values=(0.0, 1.0))
    L = np.pad(L, pad, constant_values=(1.0, 0.0))
    there = [np.lib.stride_tricks.sliding_window_view(a, 2 * pad + 1)[:, ::m_delta] for a in (F, G, L)]
    here = [a[pad:pad + n_lat, None] for a in (F, G, L)]
    products = np.concatenate([there[0] * here[0], there[1] + there[2] * here[1], there[2] * here[2]], axis=1)
    offsets = np.arange(-spread - m_along * (along.size - 1), n_lat - spread) * (lam / b_c)
    kernel = np.exp(-0.5 * offsets ** 2) * (lam / (b_c * _SQRT2PI))
    gauss = np.lib.stride_tricks.sliding_window_view(kernel, n_lat)[::m_along][::-1]
    numerator, one_minus_K, K = np.split(gauss @ products, 3, axis=1)
    return _pair_sum(T, numerator, one_minus_K, K, m_along * lam * d_delta)


@lru_cache(maxsize=1)
def _openblas_thread_setter():
    """openblas_set_num_threads_local of numpy's bundled OpenBLAS (>= 0.3.27), or None."""
    here = os.path.dirname(np.__file__)
    candidates = glob.glob(os.path.join(here + ".libs", "*openblas*")) + glob.glob(os.path.join(here, ".dylibs", "*openblas*"))
    for path in candidates:
        try:
            setter = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        setter.restype, setter.argtypes = ctypes.c_int, [ctypes.c_int]
        return setter
    return None


@contextmanager
def _single_threaded_blas():
    """Run the pair term's mid-sized matrix products on one BLAS thread (this thread only).

    Measured on a busy 2-core host: a 60 x 400 x 900 product takes 9 ms on two
    OpenBLAS threads and 1.3 ms on one, and a Yp table 18 s instead of 2.7 s.
    Without numpy's bundled OpenBLAS this does nothing.
    """
    setter = _openblas_thread_setter()
    if setter is None:
        yield
        return
    previous = setter(1)
    try:
        yield
    finally:
        setter(previous)


def _pair_moment(b: float, rho: float, T: int, acc: Accuracy = EXACT) -> float:
    """E sum_s A_ts A_t's for log-weights b x_s, b x'_s with corr(x, x') = rho in [0, 1].

    Writing x = sqrt(rho) c + sqrt(1 - rho) e (c shared, e private), the 2-D
    Laplace integrand (module docstring) factorises given c: with
    b_c = b sqrt(rho), b_e = b sqrt(1 - rho) and F = M_1, G, L the one-row
    smoothings at width b_e,

        E[u w v w' e^(-uw - vw')] = E_c[F(t + b_c c) F(t' + b_c c)],
        1 - E e^(-uw - vw')      = E_c[G(t + b_c c) + L(t + b_c c) G(t' + b_c c)].
    """
    if rho == 0.0 or b == 0.0:
        return 1.0 / T
    b_c, b_e = b * math.sqrt(rho), b * math.sqrt(max(1.0 - rho, 0.0))
    t_a, t_b = _pair_window(b, T, acc)
    d_delta = _t_step(b_e, T, acc.h_pair)
    with _single_threaded_blas():
        if b_c <= BC_SWITCH:
            return _pair_small_shared(b_c, b_e, T, t_a, t_b, d_delta, acc)
        return _pair_large_shared(b_c, b_e, T, t_a, t_b, _t_step(b, T, acc.h_pair), d_delta, acc)


# --- public API: direct (accurate) moments --------------------------------------

def sequence_length(T) -> int:
    """An integer T >= 2 (an integral float is accepted); else ValueError."""
    if T is None:
        raise ValueError("T must be an integer >= 2 for the finite-T theory, got None")
    return check.sequence_length(T)


def _order(r) -> float:
    """The moment order r: one finite real number > 1 (a 0-d array is accepted)."""
    if isinstance(r, bool) or np.ndim(r) != 0 or not isinstance(np.asarray(r).item(), numbers.Real):
        raise ValueError(f"r must be a finite real number > 1, got {r!r}")
    r = float(np.asarray(r).item())
    if not math.isfinite(r) or r <= 1:
        raise ValueError(f"r must be a finite real number > 1, got {r!r}")
    return r


def _state(beta, q, p):
    """Check beta > 0, q > 0, 0 <= p < q and broadcast them."""
    beta = check.positive("beta", beta)
    q = check.positive("q", q)
    p = check.as_array("p", p)
    try:
        beta, q, p = np.broadcast_arrays(beta, q, p)
    except ValueError:
        raise ValueError(f"beta, q, p do not broadcast together: {beta.shape}, {q.shape}, {p.shape}") from None
    if np.any(p < 0) or np.any(p >= q):
        raise ValueError(f"p must lie in [0, q) (overlap of distinct tokens, below the norm q), got p={p!r}, q={q!r}")
    return beta, q, p


def effective_b(beta, q, p, T):
    """b = beta sqrt(ln T q (q - p)): the spread of one row's log-weights (module docstring).

    b = oo (beyond float range) is the frozen-attention limit, which every
    moment function handles.
    """
    q = np.asarray(q)
    with np.errstate(over="ignore"):
        return np.asarray(beta) * math.sqrt(math.log(T)) * np.sqrt(q) * np.sqrt(q - np.asarray(p))


def _scalar(out: np.ndarray):
    return float(out) if out.ndim == 0 else out


#: Widths beyond this are extrapolated in 1/b (Richardson from B_CAP and 2 B_CAP).
B_CAP = 1e6


def _beyond_cap(compute):
    """compute(b, ...) for any b: beyond B_CAP the moments are c0 + c1/b + O(1/b^2).

    Every moment tends to its frozen-attention limit with an O(1/b) correction
    (the chance that the top two log-weights lie within O(1) of each other), so
    Y(b) = 2 Y(2B) - Y(B) + 2B (Y(B) - Y(2B))/b to O(1/B^2) ~ 1e-12 (kept in
    [0, 1], where every moment lies); this keeps beta -> oo free of overflow.
    """
    def wrapped(b, *rest):
        b = float(b)
        if b <= B_CAP:
            return compute(b, *rest)
        near, far = compute(B_CAP, *rest), compute(2 * B_CAP, *rest)
        return min(max(2 * far - near + 2 * B_CAP * (near - far) / b, 0.0), 1.0)
    return wrapped


def _per_unique(keys: np.ndarray, compute) -> np.ndarray:
    """compute(key) once per distinct row of ``keys`` (shape (..., k)), broadcast back."""
    flat = keys.reshape(-1, keys.shape[-1])
    unique, inverse = np.unique(flat, axis=0, return_inverse=True)
    values = np.array([compute(*row) for row in unique])
    return values[inverse.reshape(-1)].reshape(keys.shape[:-1])


def ipr(beta, *, r=2, q=1.0, p=0.0, T):
    """E sum_s A_ts^r for one attention row at finite T (paper eq. 2; eq. 4 is its T -> oo limit).

    Exact (Gamma-function/Laplace representation, module docstring), relative
    error ~1e-13. Vectorised over beta, q, p (broadcast); T an integer >= 2, r > 1.
    """
    r, T = _order(r), sequence_length(T)
    beta, q, p = _state(beta, q, p)
    b = effective_b(beta, q, p, T)
    out = _per_unique(b[..., None], _beyond_cap(lambda bb: _row_moments(bb, T, (r,))[r]))
    return _scalar(out)


def ipr_square(beta, *, q=1.0, p=0.0, T):
    """E (sum_s A_ts^2)^2 for one attention row at finite T (kept distinct from (E Y2)^2).

    E sum_s A^4 plus T(T-1)/6 int u^3 (E w^2 e^(-uw))^2 L^(T-2) du (module docstring).
    """
    T = sequence_length(T)
    beta, q, p = _state(beta, q, p)
    b = effective_b(beta, q, p, T)
    out = _per_unique(b[..., None], _beyond_cap(lambda bb: _row_moments(bb, T, (), square=True)["square"]))
    return _scalar(out)


def ipr_pair(beta, *, q=1.0, p=0.0, T):
    """E sum_s A_ts A_t's for two rows t != t' at finite T (paper eq. 22; Yp -> 0 as T -> oo).

    The rows' log-weights are b x_s, b x'_s with corr(x, x') = rho = p/q; exactly
    1/T at p = 0 (independent rows), Y2 as rho -> 1.
    """
    T = sequence_length(T)
    beta, q, p = _state(beta, q, p)
    keys = np.stack(np.broadcast_arrays(effective_b(beta, q, p, T), p / q), axis=-1)
    out = _per_unique(keys, _beyond_cap(lambda bb, rho: _pair_moment(bb, float(rho), T)))
    return _scalar(out)


# --- tables: fast Y2(b, T) and Yp(b, rho, T) -----------------------------------

#: Chebyshev-Lobatto nodes of Y2 in xi = b/(b + sqrt(2 ln T)) on [0, 1] (b = oo included).
N_Y2 = 97
#: Largest b the Yp table covers; beyond it ipr_pair_fast computes directly.
B_PAIR_MAX = 40.0
#: Points of the fine grids the Chebyshev interpolants are resampled on (cubic Hermite cells).
FINE_1D = 4097
FINE_2D = (513, 257)


def _pair_xi_nodes(T: int) -> int:
    """Chebyshev-Lobatto nodes of Yp in xi: the crossover near b = sqrt(2 ln T) sharpens with T."""
    return 41 if T <= 1000 else 49 if T <= 100_000 else 57


def _pair_w_nodes(b: float) -> int:
    """Chebyshev-Lobatto nodes of Yp in w at width b: the structure near rho = 1 sharpens with b."""
    return 13 if b <= 2.5 else 17 if b <= 6.0 else 21 if b <= 12.0 else 25 if b <= 25.0 else 33


def _lobatto(n: int, lo: float, hi: float) -> np.ndarray:
    """n Chebyshev-Lobatto points on [lo, hi], increasing."""
    return lo + (hi - lo) * (1.0 - np.cos(np.pi * np.arange(n) / (n - 1))) / 2.0


def _b_of_xi(xi, scale):
    """b = scale xi/(1 - xi), with xi = 1 -> b = oo."""
    xi = np.asarray(xi, dtype=float)
    with np.errstate(divide="ignore"):
        return np.where(xi < 1.0, scale * xi / np.maximum(1.0 - xi, 0.0), np.inf)


def _stretch(b):
    """kappa(b) of the rho-coordinate w: sqrt(1 - rho) = w/(w + kappa (1 - w)).

    The pair term varies in sqrt(1 - rho) on the scale ~1/b near rho = 1 (where
    the private width b sqrt(1 - rho) is ~1); this map magnifies that end by kappa.
    """
    x = (1.0 + np.asarray(b, dtype=float)) / 2.0
    return x / np.log(x + np.sqrt(x * x + 1.0))  # sinh(a)/a, a = arcsinh(x) (x >= 1/2: no cancellation)


def _rho_of_w(w, b):
    kappa = _stretch(b)
    return 1.0 - (w / (w + kappa * (1.0 - w))) ** 2


def _w_of_rho(rho, b):
    """The inverse of :func:`_rho_of_w` (a new array; rho in [0, 1])."""
    u = np.sqrt(np.maximum(1.0 - rho, 0.0))
    ku = _stretch(b)
    ku *= u
    u -= ku
    np.subtract(1.0, u, out=u)     # 1 - u + kappa u
    return np.divide(ku, u, out=ku)


def _cheb_resample(values: np.ndarray, fine: np.ndarray):
    """Interpolate ``values`` (rows at Chebyshev-Lobatto points of [0, 1]) at ``fine``.

    Returns the interpolating polynomial and its derivative at ``fine``
    (in [0, 1]), for every column of ``values``.
    """
    n = values.shape[0]
    coef = np.linalg.solve(chebyshev.chebvander(2.0 * _lobatto(n, 0.0, 1.0) - 1.0, n - 1),
                           values.reshape(n, -1))
    x = 2.0 * fine - 1.0
    value = chebyshev.chebvander(x, n - 1) @ coef
    slope = chebyshev.chebvander(x, n - 2) @ (2.0 * chebyshev.chebder(coef))
    shape = (fine.size,) + values.shape[1:]
    return value.reshape(shape), slope.reshape(shape)


_HERMITE = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0],
                     [-3.0, 3.0, -2.0, -1.0], [2.0, -2.0, 1.0, 1.0]])


def _cubic_cells(value, slope, h):
    """Per-cell cubic coefficients (c0..c3 in the local s in [0, 1]) from values and slopes."""
    data = np.stack([value[:-1], value[1:], h * slope[:-1], h * slope[1:]], axis=-1)
    return data @ _HERMITE.T


def _bicubic_cells(f, fx, fw, fxw, hx, hw):
    """Per-cell bicubic coefficients a[i, j, m, n] of s^m v^n from corner values and derivatives."""
    corners = lambda a: np.stack([np.stack([a[:-1, :-1], a[:-1, 1:]], -1),
                                  np.stack([a[1:, :-1], a[1:, 1:]], -1)], -2)
    top = np.concatenate([corners(f), corners(fw) * hw], axis=-1)
    bottom = np.concatenate([corners(fx) * hx, corners(fxw) * hx * hw], axis=-1)
    data = np.concatenate([top, bottom], axis=-2)
    return _HERMITE @ data @ _HERMITE.T


def _cell_inplace(x, n: int, scale: float = 1.0):
    """Cell index i in [0, n-2] and local coordinate s in [0, 1] of scale * x, x >= 0, on n points of [0, 1].

    x is overwritten by s (the look-ups' hot path allocates no temporary here).
    """
    x *= scale * (n - 1)
    np.minimum(x, n - 1, out=x)
    i = x.astype(np.intp)
    np.minimum(i, n - 2, out=i)
    x -= i
    return i, x


def _bicubic(a, s, v):
    """sum_m s^m sum_n a[4 m + n] v^n for gathered cells a (16, n): Horner in v, then in s."""
    out = _horner_inplace(a[12:16], v)
    for m in (2, 1, 0):
        out *= s
        out += _horner_inplace(a[4 * m: 4 * m + 4], v)
    return out


def _horner_inplace(c, s):
    """sum_m c[m] s^m for the four cubic coefficients c[0..3], with one temporary."""
    out = c[3] * s
    out += c[2]
    out *= s
    out += c[1]
    out *= s
    out += c[0]
    return out


class Y2Table:
    """Fast E sum_s A_ts^2 at one T: a function of b = beta sqrt(ln T q (q - p)) only.

    Built once (``N_Y2`` evaluations at :data:`TABLE` accuracy, well under 1 s):
    Chebyshev interpolation in xi = b/(b + sqrt(2 ln T)) on [0, 1], which covers
    b = 0 (Y2 = 1/T) to b = oo (Y2 = 1), resampled onto ``FINE_1D`` cubic
    Hermite cells. Tested against :func:`ipr` to < 1e-8 absolute.
    """

    def __init__(self, T: int):
        self.T = sequence_length(T)
        self.scale = _z_star(self.T)
        b = _b_of_xi(_lobatto(N_Y2, 0.0, 1.0), self.scale)
        nodes = np.array([1.0 if np.isinf(bb) else 1.0 / self.T if bb == 0 else
                          _row_moments(bb, self.T, acc=TABLE)[2.0] for bb in b])
        value, slope = _cheb_resample(nodes, np.linspace(0.0, 1.0, FINE_1D))
        self._cells = np.ascontiguousarray(_cubic_cells(value, slope, 1.0 / (FINE_1D - 1)))  # (cells, 4)

    def at_b(self, b):
        """Y2 at effective widths b >= 0 (array)."""
        shape = np.shape(b)
        b = np.ravel(np.asarray(b, dtype=float))
        with np.errstate(invalid="ignore"):
            xi = np.divide(b, b + self.scale)                             # b = oo -> nan, set to 1 below
        xi[np.isinf(b)] = 1.0
        i, s = _cell_inplace(xi, FINE_1D)
        coeffs = np.take(self._cells, i, axis=0).T   # one gather of whole cells
        return np.clip(_horner_inplace(coeffs, s), 0.0, 1.0, out=s).reshape(shape)

    def fast(self, beta, q, p):
        """Y2 without input checks, for block maps whose inputs are already validated."""
        return self.at_b(_unchecked_state(beta, q, p, self.T)[0])

    def __call__(self, beta, q, p, T=None):
        """Y2(beta, q, p) at this table's T (``T``, if given, must match)."""
        b, _ = _fast_state(beta, q, p, self.T if T is None else T, self.T)
        return _scalar(self.at_b(b))


class YpTable:
    """Fast E sum_s A_ts A_t's (t != t') at one T: a function of (b, rho = p/q) only.

    Built once: Chebyshev-Lobatto nodes in xi = b/(b + sqrt(2 ln T)) on
    [0, xi(B_PAIR_MAX)] and, at each, in w on [0, 1] (sqrt(1 - rho) =
    w/(w + kappa(b)(1 - w)), :func:`_stretch`; more nodes at larger b). The edges are
    known (b = 0 or rho = 0: 1/T; rho = 1: Y2), the interior is
    :func:`_pair_moment` at :data:`TABLE` accuracy. Resampled onto ``FINE_2D``
    bicubic Hermite cells. Points with b > B_PAIR_MAX are computed directly.
    """

    def __init__(self, T: int):
        self.T = sequence_length(T)
        self.scale = _z_star(self.T)
        self.xi_max = B_PAIR_MAX / (B_PAIR_MAX + self.scale)
        b = _b_of_xi(_lobatto(_pair_xi_nodes(self.T), 0.0, self.xi_max), self.scale)
        fine_x, fine_w = (np.linspace(0.0, 1.0, n) for n in FINE_2D)
        rows = [_cheb_resample(self._w_nodes(float(bb)), fine_w) for bb in b]
        f_x0, fw_x0 = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
        f, fx = _cheb_resample(f_x0, fine_x)
        fw, fxw = _cheb_resample(fw_x0, fine_x)
        cells = _bicubic_cells(f, fx, fw, fxw, 1.0 / (FINE_2D[0] - 1), 1.0 / (FINE_2D[1] - 1))
        self._cells = np.ascontiguousarray(cells.reshape(-1, 16))   # row m*4 + n: a[m, n] of s^m v^n

    def _w_nodes(self, b: float) -> np.ndarray:
        """Yp at the Chebyshev-Lobatto nodes in w at width b (edges from their limits)."""
        w = _lobatto(_pair_w_nodes(b), 0.0, 1.0)
        values = np.full(w.size, 1.0 / self.T)
        if b > 0:
            values[0] = float(Y2_table(self.T).at_b(b))
            values[1:-1] = [_pair_moment(b, float(rho), self.T, TABLE) for rho in _rho_of_w(w[1:-1], b)]
        return values

    def at(self, b, rho):
        """Yp at effective widths b >= 0 and correlations rho in [0, 1] (arrays, broadcast)."""
        b, rho = np.broadcast_arrays(np.asarray(b, dtype=float), np.asarray(rho, dtype=float))
        inside = b <= B_PAIR_MAX
        if np.all(inside):
            return self._interpolate(b, rho)
        out = np.empty(b.shape)
        out[inside] = self._interpolate(b[inside], rho[inside])
        keys = np.stack([b[~inside], rho[~inside]], axis=-1)
        out[~inside] = _per_unique(keys, _beyond_cap(lambda bb, rr: _pair_moment(bb, float(rr), self.T)))
        return out

    def _interpolate(self, b, rho):
        shape = np.shape(b)
        b, rho = np.ravel(b), np.ravel(rho)
        i, s = _cell_inplace(np.divide(b, b + self.scale), FINE_2D[0], 1.0 / self.xi_max)
        j, v = _cell_inplace(_w_of_rho(rho, b), FINE_2D[1])
        i *= FINE_2D[1] - 1
        i += j
        out = _bicubic(np.take(self._cells, i, axis=0).T, s, v)   # one gather of whole cells (fast)
        return np.clip(out, 0.0, 1.0, out=out).reshape(shape)

    def fast(self, beta, q, p):
        """Yp without input checks, for block maps whose inputs are already validated."""
        b, rho = _unchecked_state(beta, q, p, self.T)
        if np.all(b <= B_PAIR_MAX):
            return self._interpolate(np.asarray(b), np.asarray(rho))
        return self.at(b, rho)

    def __call__(self, beta, q, p, T=None):
        """Yp(beta, q, p) at this table's T (``T``, if given, must match)."""
        b, rho = _fast_state(beta, q, p, self.T if T is None else T, self.T)
        return _scalar(self.at(b, rho))


#: p may exceed q, or fall below 0, by this relative rounding in depth iterations.
_ROUNDING = 1e-12


def _fast_state(beta, q, p, T, table_T):
    """(b, rho) for the fast functions: beta > 0, q > 0, 0 <= p <= q (p = q: uniform attention).

    Depth iterations reach rho -> 1, so p = q is allowed here (b = 0, the
    uniform-attention limit); p outside [0, q] by more than relative rounding
    raises ValueError.
    """
    if sequence_length(T) != table_T:
        raise ValueError(f"T={T} does not match this table's T={table_T}")
    beta = check.positive("beta", beta)
    q = check.positive("q", q)
    p = check.as_array("p", p)
    beta, q, p = np.broadcast_arrays(beta, q, p)
    if np.any(p < -_ROUNDING * q) or np.any(p > q * (1.0 + _ROUNDING)):
        raise ValueError(f"p must lie in [0, q] (overlap of distinct tokens), got p={p!r}, q={q!r}")
    p = np.clip(p, 0.0, q)
    return effective_b(beta, q, p, table_T), p / q


def _unchecked_state(beta, q, p, T: int):
    """(b, rho) for 0 <= p <= q up to rounding, as a block map feeds them (clipped, not checked)."""
    gap = np.maximum(q - p, 0.0)
    with np.errstate(over="ignore"):
        b = beta * np.sqrt(np.log(T) * q * gap)
    return b, np.clip(p / q, 0.0, 1.0)


def Y2_table(T) -> Y2Table:
    """The :class:`Y2Table` for sequence length T, built on first use and cached."""
    return _cached_table(Y2Table, sequence_length(T))


def Yp_table(T) -> YpTable:
    """The :class:`YpTable` for sequence length T, built on first use and cached."""
    return _cached_table(YpTable, sequence_length(T))


@lru_cache(maxsize=64)
def _cached_table(kind, T: int):
    return kind(T)


def ipr2_fast(beta, q, p, T):
    """E sum_s A_ts^2 from the cached table for T (drop-in moment function f(beta, q, p, T))."""
    return Y2_table(sequence_length(T))(beta, q, p)


def ipr_pair_fast(beta, q, p, T):
    """E sum_s A_ts A_t's (t != t') from the cached table for T (f(beta, q, p, T))."""
    return Yp_table(sequence_length(T))(beta, q, p)
