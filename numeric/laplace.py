"""The finite-T Laplace integrals of the attention moments, as functions of (b, rho, T).

Score model (paper B.1, eq. 9): Cov(a_ts, a_kl) = beta^2 ln T q_tk q_sl with
q_tt = q, q_ts = p. In the softmax of row t the row-constant parts of the
scores cancel, so the row's weights are w_s = exp(b z_s) with z_s i.i.d. N(0, 1)
and b = beta sqrt(ln T q (q - p)) (:func:`effective_b`); two rows t != t' see
log-weights b x_s, b x'_s with corr(x_s, x'_s) = rho = p/q. Every moment
depends on (b, T) or (b, rho, T) only; :func:`finite_state` checks a state
(beta, q, p) and reduces it to (b, rho).

Exact representations (:mod:`derive.finite_t` states them symbolically). With
x^-r = Gamma(r)^-1 int_0^oo u^(r-1) e^(-ux) du and L(u) = E e^(-uw),

    E sum_s A_ts^r     = T/Gamma(r) int u^(r-1) E[w^r e^(-uw)] L(u)^(T-1) du,            (eq. 2)
    E (sum_s A^2)^2    = E sum_s A^4 + T(T-1)/Gamma(4) int u^3 (E w^2 e^(-uw))^2 L(u)^(T-2) du,
    E sum_s A_ts A_t's = T int int E[w w' e^(-uw - vw')] (E e^(-uw - vw'))^(T-1) du dv.  (eq. 22)

With u = e^t the inner expectations are the Gaussian smoothings of
:mod:`numeric.smoothing`, and L^(T-1) = exp((T-1) log1p(-(1 - L))): nothing
overflows, and 1 - L ~ 1/T keeps its relative accuracy. The outer t (and t,
t') integrals are trapezoid sums on grids of spacing h max(1, b/sqrt(2 ln T)):
the integrand varies on the scale 1 below the condensation (b < sqrt(2 ln T),
paper eq. 15) and on b/sqrt(2 ln T) above it. The pair term splits each row's
log-weight into a shared and a private Gaussian (x = sqrt(rho) c +
sqrt(1 - rho) e), so its 2-D integrand is a c-average of products of one-row
smoothings (:func:`pair_moment`).

:func:`row_moment`, :func:`row_square` and :func:`pair_term` are the vectorised
forms (one integral per distinct b or (b, rho), any b up to oo).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import special

from . import validation as check
from .blas import single_threaded_blas
from .smoothing import EXACT, SQRT2PI, Accuracy, grid, log_L, smooth

#: Shared widths up to this use Gauss-Hermite nodes in c; above, a lattice sum.
BC_SWITCH = 0.5
#: Widths beyond this are extrapolated in 1/b (Richardson from B_CAP and 2 B_CAP).
B_CAP = 1e6
#: p may exceed q, or fall below 0, by this relative rounding in depth iterations.
ROUNDING = 1e-12


def z_star(T: int) -> float:
    """sqrt(2 ln T): the REM's condensation point in b (paper eq. 15 with b = beta sqrt(q(q-p) ln T))."""
    return math.sqrt(2.0 * math.log(T))


def effective_b(beta, q, p, T):
    """b = beta sqrt(ln T q (q - p)): the spread of one row's log-weights (module docstring).

    b = oo (beyond float range) is the frozen-attention limit, which every
    moment function handles.
    """
    q = np.asarray(q)
    with np.errstate(over="ignore"):
        return np.asarray(beta) * math.sqrt(math.log(T)) * np.sqrt(q) * np.sqrt(q - np.asarray(p))


def finite_state(beta, q, p, T: int, *, uniform: bool = False):
    """(b, rho) of a checked state: beta > 0, q > 0, 0 <= p < q, broadcast together.

    p >= 0 because the pair term's rows share their key scores with correlation
    rho = p/q (p < 0, possible down to -q/(T-1), would need anti-correlated rows).
    ``uniform``: p = q is allowed too (b = 0, the uniform-attention limit that
    depth iterations reach), and p outside [0, q] by relative :data:`ROUNDING`
    is clipped, as the tables' block-map entry points need.
    """
    beta, q, p = check.positive("beta", beta), check.positive("q", q), check.as_array("p", p)
    try:
        beta, q, p = np.broadcast_arrays(beta, q, p)
    except ValueError:
        raise ValueError(f"beta, q, p do not broadcast together: {beta.shape}, {q.shape}, {p.shape}") from None
    if uniform:
        outside = (p < -ROUNDING * q) | (p > q * (1.0 + ROUNDING))
    else:
        outside = (p < 0) | (p >= q)
    if np.any(outside):
        allowed, why = ("[0, q]", "up to") if uniform else ("[0, q)", "below")
        raise ValueError(f"p must lie in {allowed} (overlap of distinct tokens, {why} the norm q), "
                         f"got p={p!r}, q={q!r}")
    p = np.clip(p, 0.0, q)
    return effective_b(beta, q, p, T), p / q


def plain(out: np.ndarray):
    """A 0-d result as a Python float (scalar in, scalar out), else the array itself."""
    return float(out) if out.ndim == 0 else out


# --- one row: E sum_s A^r and E (sum_s A^2)^2 ----------------------------------

def _t_step(b: float, T: int, base: float) -> float:
    """Outer grid spacing: ``base`` below condensation, scaled by b/sqrt(2 ln T) above."""
    return base * max(1.0, b / z_star(max(T, 2)))             # a row of one key: the scale of two


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
    p_cut = 800.0 / ((1.0 - math.exp(-1.0)) * (T - 1)) if T > 1 else math.inf
    if p_cut < 0.5:
        right = min(right, b * float(special.ndtri(1.0 - p_cut)) + 4.5)
    dt = _t_step(b, T, base)
    return grid(left, right, dt), dt


def row_moments(b: float, T: int, rs=(2.0,), square: bool = False, acc: Accuracy = EXACT) -> dict:
    """{r: E sum_s A^r} for one row of T weights e^(b z) (and ``"square"``: E (sum A^2)^2).

    Trapezoid sums over t = log u of T/Gamma(r) M_r(t) L^(T-1) (the r-th moment) and of
    T(T-1)/6 M_2(t)^2 L^(T-2) (the off-diagonal part of (sum A^2)^2).
    """
    need = sorted(set(rs) | ({2.0, 4.0} if square else set()))
    t, dt = _row_grid(b, T, need[0], need[-1], acc, acc.h)
    G, L, M = smooth(t[0], dt, t.size, b, need, acc)
    log_l = log_L(G, L)
    decay = np.exp((T - 1) * log_l)
    moments = {r: T / math.gamma(r) * dt * float(M[r] @ decay) for r in need}
    out = {r: moments[r] for r in rs}
    if square:
        cross = T * (T - 1) / 6.0 * dt * float(M[2.0] ** 2 @ np.exp((T - 2) * log_l))
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
    G, L, M = smooth(t[0], dt, t.size, b, (1.0,), acc)
    density = T * M[1.0] * np.exp((T - 1) * log_L(G, L)) * dt
    cut = acc.pair_cut(T)
    inside = (np.cumsum(density) >= cut) & (np.cumsum(density[::-1])[::-1] >= cut)
    keep = np.flatnonzero(inside)
    return float(t[max(keep[0] - 1, 0)]), float(t[min(keep[-1] + 1, t.size - 1)])


def _pair_sum(T: int, numerator, one_minus_K, K, area: float) -> float:
    """T area sum(numerator K^(T-1)), with log K from the accurate one of 1 - K and K."""
    return T * area * float(np.sum(numerator * np.exp((T - 1) * log_L(one_minus_K, K))))


def _pair_small_shared(b_c, b_e, T, t_a, t_b, step, acc) -> float:
    """Pair integral on a (t, t') grid, Gauss-Hermite nodes c_k for the shared part (b_c small).

    The smoothings at width b_e are evaluated at t_i + b_c c_k; each 2-D array is
    then one matrix product over k.
    """
    t = grid(t_a, t_b, step)
    c, w = np.polynomial.hermite_e.hermegauss(acc.n_hermite)
    w = w / SQRT2PI
    rows = [smooth(t[0] + b_c * ck, step, t.size, b_e, (1.0,), acc) for ck in c]
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
    along = grid(t_a, t_b, m_along * lam)
    J = int(math.ceil(min(t_b - t_a, acc.delta_tail + acc.delta_per_be * b_e) / d_delta))
    spread = int(math.ceil(acc.z_max * b_c / lam))
    n_lat = m_along * (along.size - 1) + 2 * spread + 1
    G, L, M = smooth(t_a - spread * lam, lam, n_lat, b_e, (1.0,), acc)
    pad = J * m_delta
    F = np.pad(M[1.0], pad)
    G = np.pad(G, pad, constant_values=(0.0, 1.0))
    L = np.pad(L, pad, constant_values=(1.0, 0.0))
    there = [np.lib.stride_tricks.sliding_window_view(a, 2 * pad + 1)[:, ::m_delta] for a in (F, G, L)]
    here = [a[pad:pad + n_lat, None] for a in (F, G, L)]
    products = np.concatenate([there[0] * here[0], there[1] + there[2] * here[1], there[2] * here[2]], axis=1)
    offsets = np.arange(-spread - m_along * (along.size - 1), n_lat - spread) * (lam / b_c)
    kernel = np.exp(-0.5 * offsets ** 2) * (lam / (b_c * SQRT2PI))
    gauss = np.lib.stride_tricks.sliding_window_view(kernel, n_lat)[::m_along][::-1]
    numerator, one_minus_K, K = np.split(gauss @ products, 3, axis=1)
    return _pair_sum(T, numerator, one_minus_K, K, m_along * lam * d_delta)


def pair_moment(b: float, rho: float, T: int, acc: Accuracy = EXACT) -> float:
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
    with single_threaded_blas():
        if b_c <= BC_SWITCH:
            return _pair_small_shared(b_c, b_e, T, t_a, t_b, d_delta, acc)
        return _pair_large_shared(b_c, b_e, T, t_a, t_b, _t_step(b, T, acc.h_pair), d_delta, acc)


# --- vectorised forms ----------------------------------------------------------

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


def row_moment(b, r, T: int) -> np.ndarray:
    """E sum_s A_ts^r (eq. 2) at widths b >= 0 and orders r > 1 (arrays, broadcast), at EXACT accuracy."""
    keys = np.stack(np.broadcast_arrays(np.asarray(b, dtype=float), np.asarray(r, dtype=float)), axis=-1)
    return _per_unique(keys, _beyond_cap(lambda bb, rr: row_moments(bb, T, (float(rr),))[float(rr)]))


def row_square(b, T: int) -> np.ndarray:
    """E (sum_s A_ts^2)^2 at widths b >= 0 (array), at EXACT accuracy."""
    keys = np.asarray(b, dtype=float)[..., None]
    return _per_unique(keys, _beyond_cap(lambda bb: row_moments(bb, T, (), square=True)["square"]))


def pair_term(b, rho, T: int) -> np.ndarray:
    """E sum_s A_ts A_t's (eq. 22) at widths b >= 0 and row correlations rho in [0, 1] (broadcast), EXACT."""
    keys = np.stack(np.broadcast_arrays(np.asarray(b, dtype=float), np.asarray(rho, dtype=float)), axis=-1)
    with single_threaded_blas():                  # one limit for all points (numeric.blas)
        return _per_unique(keys, _beyond_cap(lambda bb, rr: pair_moment(bb, float(rr), T)))
