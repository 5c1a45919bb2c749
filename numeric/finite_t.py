"""Exact attention moments at finite sequence length T (issue 6, part 1).

The paper's Result 1 (eq. 4) is the T -> oo limit of E sum_s A_ts^2; at the T
people use it is far off (B.3). Here the moments of one softmax row over T
jointly Gaussian scores with the covariance of eq. (9) are computed exactly.

Score model (B.1, eq. 9): Cov(a_ts, a_kl) = beta^2 ln T q_tk q_sl with q_tt = q,
q_ts = p, i.e. a_ts = sigma[(q-p) g_ts + sqrt(p(q-p)) (u_t + v_s) + p w] with
g, u, v, w i.i.d. N(0, 1) and sigma = beta sqrt(ln T). In the softmax of row t
the terms u_t and w cancel, so the row's weights are w_s = exp(b z_s) with
z_s i.i.d. N(0, 1) and

    b = beta sqrt(ln T q (q - p)),

and two rows t != t' see log-weights b x_s, b x'_s with corr(x_s, x'_s) = rho = p/q
(the shared v_s). Everything below depends on (b, T) or (b, rho, T) only.

Exact representations (derive.finite_t states them symbolically). With the
Gamma-function identity x^-r = Gamma(r)^-1 int_0^oo u^(r-1) e^(-u x) du and
L(u) = E e^(-u w), the Laplace transform of the log-normal weight,

    E sum_s A_ts^r   = T/Gamma(r) int u^(r-1) E[w^r e^(-uw)] L(u)^(T-1) du,
    E (sum_s A^2)^2  = E sum_s A^4 + T(T-1)/Gamma(4) int u^3 (E w^2 e^(-uw))^2 L(u)^(T-2) du,
    E sum_s A_ts A_t's = T int int E[w w' e^(-uw - vw')] (E e^(-uw - vw'))^(T-1) du dv.

Numerics. With u = e^t every factor becomes a Gaussian smoothing, over z, of a
bounded function of x = t + b z = log(u w):

    u^r E[w^r e^(-uw)] = E f_r(t + b z),  f_r(x) = exp(r x - e^x)  (<= (r/e)^r),
    1 - L(e^t)         = E g(t + b z),    g(x)   = -expm1(-e^x),
    L(e^t)             = E l(t + b z),    l(x)   = exp(-e^x),

and L^(T-1) = exp((T-1) log1p(-(1 - L))), so nothing overflows and the small
1 - L ~ 1/T keeps its relative accuracy. The smoothing is a trapezoid sum over
z for b <= 1 and, for b > 1, over the sharp variable x (whose kernels f_r, g, l
are bounded and analytic in the strip |Im x| < pi/2, so a spacing h gives an
error ~ exp(-pi^2/h)), with the far left tail x < X_LO in closed form. The
outer t (and t, t') integrals are trapezoid sums on grids of spacing
0.2 max(1, b/sqrt(2 ln T)): the integrand varies on the scale 1 below the
condensation (b < sqrt(2 ln T), paper eq. 15) and b/sqrt(2 ln T) above it.
All of it is float64; accuracy against mpmath at 30 digits is tested in
tests/numeric/test_finite_t.py.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

#: Half-width of the z (and shared-c) range; P(|z| > 12) = 3.6e-33.
Z_MAX = 12.0
#: Spacing in the sharp variable x = log(u w): trapezoid error ~ exp(-pi^2/H_X).
H_X = 0.2
#: Largest z spacing for a Gaussian trapezoid sum (error ~ exp(-2 pi^2/h^2)).
H_Z = 0.25
#: Smoothing widths above this integrate over x instead of z.
B_SWITCH = 1.0
#: Left end of the x grid; below it f_r(x) = e^(r x) to relative 3e-20.
X_LO = -45.0
#: Relative size of the neglected left tail of the outer integrals.
TAIL_EPS = 1e-16

_SQRT2PI = math.sqrt(2.0 * math.pi)


# --- Gaussian smoothing of the kernels f_r, g, l -------------------------------

def _grid(start: float, stop: float, step: float) -> np.ndarray:
    """start + step * k up to and including the first point >= stop (exact spacing, unlike arange)."""
    return start + step * np.arange(int(math.ceil((stop - start) / step)) + 1)


def _smooth(t: np.ndarray, b: float, rs=()):
    """E_z of g, l and f_r (r in ``rs``) at x = t + b z, z ~ N(0, 1), for every t.

    Returns ``(G, L, {r: M_r})`` with G = 1 - L(e^t), L = L(e^t) and
    M_r = e^(rt) E[w^r exp(-e^t w)], each with its own relative accuracy
    (G and L are computed separately, not as 1 minus the other).
    """
    t = np.asarray(t, dtype=float)
    if b <= B_SWITCH:
        return _smooth_over_z(t, b, rs)
    return _smooth_over_x(t, b, rs)


def _smooth_over_z(t, b, rs):
    """Trapezoid sum over z: for b <= 1 the kernels vary slowly in z."""
    r_top = max(rs, default=1.0)
    h = H_Z if b * H_Z <= H_X else H_X / b
    z = _grid(-Z_MAX, Z_MAX + r_top * b, h)
    w = np.exp(-0.5 * z * z) * (h / _SQRT2PI)
    x = np.minimum(t[:, None] + b * z[None, :], 700.0)
    ex = np.exp(x)
    G = -np.expm1(-ex) @ w
    L = np.exp(-ex) @ w
    M = {r: np.exp(r * x - ex) @ w for r in rs}
    return G, L, M


def _smooth_over_x(t, b, rs):
    """Trapezoid sum over x = t + b z with Gaussian weight phi((x - t)/b)/b.

    The kernels are sharp in x (width 1) and the Gaussian is wide (b > 1), so
    the sum over x resolves both with spacing H_X. Below X_LO the kernels are
    e^(r x) to relative e^X_LO and the tail integrals are closed forms
    (:func:`_tail_exp_gauss`, :func:`_tail_exp_cdf`).
    """
    r_top = max(max(rs, default=1.0), 1.0)
    x = _grid(X_LO, math.log(r_top) + 4.5, H_X)
    wx = np.full(x.size, H_X)
    wx[0] = 0.5 * H_X
    ex = np.exp(x)
    f1 = np.exp(x - ex) * wx
    s = (x[None, :] - t[:, None]) / b
    G = special.ndtr(-s) @ f1 + _tail_exp_cdf(t, b, upper=True)
    L = special.ndtr(s) @ f1 + _tail_exp_cdf(t, b, upper=False)
    dens = np.exp(-0.5 * s * s) / (b * _SQRT2PI)
    M = {r: dens @ (np.exp(r * x - ex) * wx) + _tail_exp_gauss(t, b, r) for r in rs}
    return G, L, M


def _tail_exp_gauss(t, b, r):
    """int_-oo^X_LO e^(r y) phi((y - t)/b)/b dy, without overflow for any b.

    Equals exp(r t + r^2 b^2/2) Phi((X_LO - t - r b^2)/b); with B = (t - X_LO)/b + r b
    > 0 it is rewritten as exp(r X_LO - (t - X_LO)^2/(2 b^2)) erfcx(B/sqrt 2)/2,
    which has no cancellation.
    """
    B = (t - X_LO) / b + r * b
    pos = B > 0
    out = np.empty_like(t)
    Bp = B[pos]
    out[pos] = np.exp(r * X_LO - 0.5 * ((t[pos] - X_LO) / b) ** 2) * special.erfcx(Bp / math.sqrt(2.0)) / 2
    tn = t[~pos]
    out[~pos] = np.exp(r * tn + 0.5 * (r * b) ** 2 + special.log_ndtr(-B[~pos]))
    return out


def _tail_exp_cdf(t, b, *, upper):
    """int_-oo^X_LO e^y Phi(+-(t - y)/b) dy (``upper``: +, the G tail; else -, the L tail).

    By parts: e^X_LO Phi(+-(t - X_LO)/b) +- int_-oo^X_LO e^y phi((y - t)/b)/b dy.
    """
    first = math.exp(X_LO) * special.ndtr((t - X_LO) / b if upper else (X_LO - t) / b)
    second = _tail_exp_gauss(t, b, 1.0)
    return first + second if upper else np.maximum(first - second, 0.0)


def _log_L(G, L):
    """log L from whichever of G = 1 - L and L is the accurate one."""
    with np.errstate(divide="ignore"):
        return np.where(G < 0.5, np.log1p(-np.minimum(G, 0.5)), np.log(np.maximum(L, 0.0)))


# --- one row: E sum_s A^r and E (sum_s A^2)^2 ----------------------------------

def _t_step(b: float, T: int, base: float = H_X) -> float:
    """Outer grid spacing: ``base`` below condensation, scaled by b/sqrt(2 ln T) above."""
    return base * max(1.0, b / math.sqrt(2.0 * math.log(T)))


def _row_grid(b: float, T: int, r_low: float, r_high: float, base: float = H_X):
    """The t = log u grid that holds all but TAIL_EPS of the one-row integrals.

    Left: the integrand is below T M_r(t) <= T e^(r t + r^2 b^2/2) and the answer is
    at least T^(1-r), hence -ln T + ln(TAIL_EPS)/r - min(r b^2/2, Z_MAX b).
    Right: f_r(x) is negligible for x > ln r + 4.5, so t > that + Z_MAX b.
    """
    left = -math.log(T) + math.log(TAIL_EPS) / r_low - min(0.5 * r_high * b * b, Z_MAX * b)
    right = math.log(r_high) + 4.5 + Z_MAX * b
    dt = _t_step(b, T, base)
    n = int(math.ceil((right - left) / dt)) + 1
    return left + dt * np.arange(n), dt


def _row_moments(b: float, T: int, rs=(2.0,), square: bool = False) -> dict:
    """{r: E sum_s A^r} for one row of T weights e^(b z) (and ``"square"``: E (sum A^2)^2).

    Trapezoid sum over t = log u of T/Gamma(r) M_r(t) L^(T-1)  (the r-th moment) and of
    T(T-1)/6 M_2(t)^2 L^(T-2) (the off-diagonal part of (sum A^2)^2).
    """
    need = sorted(set(rs) | ({2.0, 4.0} if square else set()))
    t, dt = _row_grid(b, T, need[0], need[-1])
    G, L, M = _smooth(t, b, need)
    log_L = _log_L(G, L)
    decay = np.exp((T - 1) * log_L)
    out = {r: T / math.gamma(r) * dt * float(M[r] @ decay) for r in rs}
    if square:
        cross = T * (T - 1) / 6.0 * dt * float(M[2.0] ** 2 @ np.exp((T - 2) * log_L))
        diag = out[4.0] if 4.0 in out else T / 6.0 * dt * float(M[4.0] @ decay)
        out["square"] = diag + cross
    return out


# --- two rows: E sum_s A_ts A_t's ----------------------------------------------

#: Outer spacing of the pair integral (its kernel f_1 gives a trapezoid error ~ 1e-12 at 1/3).
H_PAIR = 1.0 / 3.0
#: Shared widths up to this use Gauss-Hermite nodes in c; above, a Gaussian-weighted sum.
BC_SWITCH = 0.5
#: Gauss-Hermite nodes for the shared component when b_c <= BC_SWITCH.
N_HERMITE = 24
#: Relative mass of the pair integrand left outside its window.
PAIR_EPS = 1e-13
#: |t - t'| beyond which the pair integrand's relative mass is below 1e-14 is at most
#: DELTA_TAIL + DELTA_PER_BE * b_e (its tail is e^-|t - t'| smoothed at width b_e; measured
#: maximum 32 + 7.8 b_e over T in [2, 1e7], b <= 20).
DELTA_TAIL = 34.0
DELTA_PER_BE = 9.0


def _pair_window(b: float, T: int):
    """[t_a, t_b]: the t-range outside which the pair integrand has relative mass < PAIR_EPS.

    Integrating the pair integrand over t' leaves at most the one-row density
    D(t) = T M_1(t) L(t)^(T-1) (it integrates to E sum_s A_ts = 1; K <= L), and
    the pair term is at least 1/T for rho >= 0; so the window keeps all but
    PAIR_EPS/T of D on each side.
    """
    t, dt = _row_grid(b, T, 1.0, 1.0, base=H_PAIR)
    G, L, M = _smooth(t, b, (1.0,))
    density = T * M[1.0] * np.exp((T - 1) * _log_L(G, L)) * dt
    cut = PAIR_EPS / T
    inside = (np.cumsum(density) >= cut) & (np.cumsum(density[::-1])[::-1] >= cut)
    keep = np.flatnonzero(inside)
    return t[max(keep[0] - 1, 0)], t[min(keep[-1] + 1, t.size - 1)]


def _pair_sum(T: int, numerator, one_minus_K, K, area: float) -> float:
    """T * area * sum of numerator * K^(T-1), with log K from the accurate one of 1-K and K."""
    return T * area * float(np.sum(numerator * np.exp((T - 1) * _log_L(one_minus_K, K))))


def _pair_small_shared(b_c, b_e, T, t_a, t_b, step) -> float:
    """Pair integral on a (t, t') grid with Gauss-Hermite nodes for the shared c (b_c small).

    With few nodes c_k the smoothings at width b_e are evaluated at t_i + b_c c_k
    and each 2-D array is one matrix product over k.
    """
    t = _grid(t_a, t_b, step)
    c, w = np.polynomial.hermite_e.hermegauss(N_HERMITE)
    w = w / _SQRT2PI
    G, L, M = _smooth((t[None, :] + b_c * c[:, None]).ravel(), b_e, (1.0,))
    F, G, L = (a.reshape(c.size, t.size) for a in (M[1.0], G, L))
    numerator = F.T @ (w[:, None] * F)
    one_minus_K = (w @ G)[:, None] + L.T @ (w[:, None] * G)
    K = L.T @ (w[:, None] * L)
    return _pair_sum(T, numerator, one_minus_K, K, step * step)


def _pair_large_shared(b_c, b_e, T, t_a, t_b, d_along, d_delta) -> float:
    """Pair integral in sheared coordinates (t', delta = t - t') when b_c is large.

    The shared c shifts t and t' together, i.e. it smooths along t' at fixed
    delta with a Gaussian of width b_c; the private part makes the integrand
    narrow in delta (width max(1, b_e)) but smooth along t'. On a lattice of
    spacing lam (delta on the same lattice) the smoothing is one matrix product
    of the Gaussian weights with the lattice products F(s + delta) F(s), etc.
    """
    m_delta = int(math.ceil(d_delta / (0.5 * b_c)))
    lam = d_delta / m_delta
    m_along = max(1, int(round(d_along / lam)))
    d_along = m_along * lam
    J = int(math.ceil(min(t_b - t_a, DELTA_TAIL + DELTA_PER_BE * b_e) / d_delta))
    lo = t_a
    along = lo + d_along * np.arange(int(math.ceil((t_b - lo) / d_along)) + 1)
    spread = int(math.ceil(Z_MAX * b_c / lam))
    n = np.arange(-spread, m_along * (along.size - 1) + spread + 1)
    shift = J * m_delta
    G, L, M = _smooth(lo + lam * np.arange(n[0] - shift, n[-1] + shift + 1), b_e, (1.0,))
    F = M[1.0]
    here = n - n[0] + shift
    there = here[:, None] + m_delta * np.arange(-J, J + 1)[None, :]
    here = here[:, None]
    gauss = np.exp(-0.5 * ((n[None, :] * lam - (along[:, None] - lo)) / b_c) ** 2) * (lam / (b_c * _SQRT2PI))
    numerator = gauss @ (F[there] * F[here])
    one_minus_K = gauss @ (G[there] + L[there] * G[here])
    K = gauss @ (L[there] * L[here])
    return _pair_sum(T, numerator, one_minus_K, K, d_along * d_delta)


def _pair_moment(b: float, rho: float, T: int) -> float:
    """E sum_s A_ts A_t's for log-weights b x_s, b x'_s with corr(x, x') = rho in [0, 1].

    Writing x = sqrt(rho) c + sqrt(1 - rho) e (c shared, e private), the 2-D
    Laplace integrand (module docstring) factorises given c: with
    b_c = b sqrt(rho), b_e = b sqrt(1 - rho) and F = M_1, G, L the one-row
    smoothings at width b_e,

        E[u w v w' e^(-uw - vw')] = E_c[F(t + b_c c) F(t' + b_c c)],
        1 - E e^(-uw - vw')      = E_c[G(t + b_c c) + L(t + b_c c) G(t' + b_c c)].
    """
    if rho == 0.0:
        return 1.0 / T
    b_c, b_e = b * math.sqrt(rho), b * math.sqrt(max(1.0 - rho, 0.0))
    t_a, t_b = _pair_window(b, T)
    z_star = math.sqrt(2.0 * math.log(T))
    d_delta = H_PAIR * max(1.0, b_e / z_star)
    if b_c <= BC_SWITCH:
        return _pair_small_shared(b_c, b_e, T, t_a, t_b, d_delta)
    d_sigma = H_PAIR * max(1.0, b / z_star)
    return _pair_large_shared(b_c, b_e, T, t_a, t_b, d_sigma, d_delta)
