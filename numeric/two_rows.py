"""Two attention rows whose scores have any 2 x 2 covariance: the pair term and its key-selection partner.

At finite width the two rows t != t' of one attention layer see log-weights
(l_s, l'_s) = (v . zeta_s, v' . zeta_s) with zeta_s i.i.d. N(0, I_2) and query
vectors v, v' whose Gram matrix S is random (docs/design.md, "Finite width";
:mod:`derive.finite_width`). This module evaluates, for one fixed S and T keys,

    Yp(S) = E sum_s A_s A'_s                               (paper eq. 22 at unequal widths, any sign),
    W(S)  = E (sum_s A_s zeta_s) . (sum_s A'_s zeta_s)     (the key-selection term of p_out),

with A = softmax(l), A' = softmax(l'). Both use the Laplace representation of
:mod:`numeric.laplace` (paper eq. 22; :mod:`derive.finite_t`): with u = e^t, v = e^t',
f(x) = exp(x - e^x), l(x) = exp(-e^x) and the per-key expectations

    N = E f(t + l) f(t' + l'),  K = E l(t + l) l(t' + l'),  P = E f(t + l) l(t' + l'),  P~ = E l(t + l) f(t' + l'),

    Yp = T int int N K^(T-1) dt dt',
    W  = T int int [2N + S11 N_tt + 2 S12 N_tt' + S22 N_t't'] K^(T-1)
         + T(T-1) int int [-S11 N P_t + S12 (P_t P~_t' + N^2) - S22 N P~_t'] K^(T-2).

W follows by Stein's lemma over zeta (E[zeta h(v.zeta, v'.zeta)] = v E h_l + v' E h_l'),
and Price's theorem turns every derivative in (l, l') into one in (t, t')
(:func:`derive.finite_width.selection_pair_integrands` derives both integrands;
they are generated into :mod:`numeric._generated_width`).
The t-derivatives of the smoothings are smoothings of the kernels' derivatives:
f' = f_1 - f_2, f'' = f_1 - 3 f_2 + f_3, l' = -f_1 (f_r(x) = e^(r x - e^x)).

Splitting l = a c + sigma_1 e, l' = a' c + sigma_2 e' (c shared; a a' = S12,
a = s_1 sqrt|r|, a' = sign(r) s_2 sqrt|r|, sigma_i = s_i sqrt(1 - |r|)), each
expectation is a c-average of products of one-row smoothings at the private
widths (:func:`numeric.smoothing.smooth`). A small shared width uses
Gauss-Hermite nodes in c; a large one a lattice c_k = k h/a on which both rows'
shifts land on their own grids (t' spacing h |a'|/a), so the c-average is one
matrix product of Hankel matrices.
"""

from __future__ import annotations

import math

import numpy as np

from ._generated_width import (
    selection_fifth,
    selection_first,
    selection_fourth,
    selection_second,
    selection_third,
)
from .blas import single_threaded_blas
from .laplace import _pair_window, _t_step
from .smoothing import EXACT, TABLE, Accuracy, log_L, smooth

#: Largest c spacing of the lattice's trapezoid sum (error ~ exp(-2 pi^2/h_c^2) ~ 1e-34).
H_C = 0.5
#: Kernels whose smoothings are needed: f_1 (N), f_2, f_3 (its derivatives).
_RS = (1.0, 2.0, 3.0)

__all__ = ["EXACT", "TABLE", "pair_and_selection"]


def _row_pieces(t0: float, h: float, n: int, width: float, acc: Accuracy) -> dict:
    """One row's smoothings at its private width on t0 + h i: f, f', f'' and l, 1 - l, l' (= -f)."""
    G, L, M = smooth(t0, h, n, width, _RS, acc)
    return {"F": M[1.0], "F1": M[1.0] - M[2.0], "F2": M[1.0] - 3.0 * M[2.0] + M[3.0], "L": L, "G": G}


def _split(S11: float, S22: float, S12: float):
    """(s1, s2, r, a, a2, sigma1, sigma2) of the shared/private split of the module docstring."""
    s1, s2 = math.sqrt(S11), math.sqrt(S22)
    r = max(-1.0, min(1.0, S12 / (s1 * s2))) if s1 > 0 and s2 > 0 else 0.0
    root = math.sqrt(abs(r))
    private = math.sqrt(max(1.0 - abs(r), 0.0))
    return s1, s2, r, s1 * root, math.copysign(s2 * root, r), s1 * private, s2 * private


def _averages_hermite(win1, win2, h, h2, a, a2, sig1, sig2, acc):
    """c-averages of products of the two rows' pieces, Gauss-Hermite nodes in c (small shared width)."""
    c, w = np.polynomial.hermite_e.hermegauss(acc.n_hermite if a > 0 or a2 != 0 else 1)
    w = w / w.sum()
    n1 = int(round((win1[1] - win1[0]) / h)) + 1
    n2 = int(round((win2[1] - win2[0]) / h2)) + 1
    rows1 = [_row_pieces(win1[0] + a * ck, h, n1, sig1, acc) for ck in c]
    rows2 = [_row_pieces(win2[0] + a2 * ck, h2, n2, sig2, acc) for ck in c]
    one = {k: np.array([r[k] for r in rows1]) for k in rows1[0]}
    two = {k: np.array([r[k] for r in rows2]) for k in rows2[0]}
    mean = lambda x, y: x.T @ (w[:, None] * y)
    return _assemble(mean, one, two, w @ one["G"])


def _averages_lattice(win1, win2, h, h2, a, a2, sig1, sig2, acc):
    """c-averages on the lattice c_k = k h/a: row 1 at t_i + a c_k = t_(i+k), row 2 at t'_(j +- k)."""
    m = int(math.ceil(acc.z_max * a / h))
    k = np.arange(-m, m + 1)
    w = np.exp(-0.5 * (k * h / a) ** 2)
    w /= w.sum()
    n1 = int(round((win1[1] - win1[0]) / h)) + 1
    n2 = int(round((win2[1] - win2[0]) / h2)) + 1
    ext1 = _row_pieces(win1[0] - m * h, h, n1 + 2 * m, sig1, acc)
    ext2 = _row_pieces(win2[0] - m * h2, h2, n2 + 2 * m, sig2, acc)
    view = np.lib.stride_tricks.sliding_window_view
    one = {key: view(v, 2 * m + 1) for key, v in ext1.items()}          # (n1, 2m+1): row i, shift k
    two = {key: view(v, 2 * m + 1) for key, v in ext2.items()}
    if a2 < 0:
        two = {key: v[:, ::-1] for key, v in two.items()}
    mean = lambda x, y: x @ (w[:, None] * y.T)
    return _assemble(mean, one, two, one["G"] @ w)


def _assemble(mean, one, two, g1) -> dict:
    """The per-key expectations on the (t, t') grid from c-averages of products."""
    return {"N": mean(one["F"], two["F"]), "N_tt": mean(one["F2"], two["F"]), "N_uu": mean(one["F"], two["F2"]),
            "N_tu": mean(one["F1"], two["F1"]), "P_t": mean(one["F1"], two["L"]), "Q_u": mean(one["L"], two["F1"]),
            "G": g1[:, None] + mean(one["L"], two["G"]), "K": mean(one["L"], two["L"])}


def _spacing(s1: float, s2: float, sig: float, T: int, acc: Accuracy) -> float:
    """Row-1 grid spacing: the pair base step at the private width, shrunk so row 2's (h s2/s1) is no larger."""
    return _t_step(sig, T, acc.h_pair) * min(1.0, s1 / s2) if s2 > 0 else _t_step(sig, T, acc.h_pair)


def pair_and_selection(S11: float, S22: float, S12: float, T: int, acc: Accuracy = TABLE,
                       keys=None, whole: bool = True) -> tuple[float, float]:
    """(Yp(S), W(S)) for two rows of T keys with log-weight covariance S = [[S11, S12], [S12, S22]].

    S11, S22 > 0; |S12| <= sqrt(S11 S22). See the module docstring for the integrals. ``keys``: None (both
    rows see the same T keys) or (n, m1, m2): n keys both rows see, m1 that row 1 only sees and m2 that row 2
    only sees (a causal or windowed mask; T is then ignored); the terms of those keys are
    :func:`derive.finite_width.selection_mixed_integrands`. ``whole=False`` takes real counts: the integrals'
    analytic continuation in (n, m1, m2), which :mod:`numeric.causal_width`'s tables interpolate over.
    """
    n, m1, m2 = (float(T), 0.0, 0.0) if keys is None else _key_counts(keys, whole)
    n1, n2 = n + m1, n + m2
    s1, s2, r, a, a2, sig1, sig2 = _split(S11, S22, S12)
    h = _spacing(s1, s2, min(sig1, sig2), max(n1, n2), acc)
    h2 = h * (s2 / s1)
    win1 = _window(s1, n1, acc, h)
    win2 = _window(s2, n2, acc, h2)
    with single_threaded_blas():
        if a * H_C >= h:
            e = _averages_lattice(win1, win2, h, h2, a, a2, sig1, sig2, acc)
        else:
            e = _averages_hermite(win1, win2, h, h2, a, a2, sig1, sig2, acc)
    log_k = log_L(e["G"], e["K"])
    log_1, f_1 = _own_row(win1, h, e["K"].shape[0], s1, acc, m1)
    log_2, f_2 = _own_row(win2, h2, e["K"].shape[1], s2, acc, m2)
    area = h * h2

    def total(integrand, shared, own1, own2):
        log = _times(shared, log_k) + _times(own1, log_1)[:, None] + _times(own2, log_2)[None, :]
        return area * float(np.sum(integrand * np.exp(log)))

    yp = n * total(e["N"], n - 1, m1, m2) if n > 0 else 0.0
    w = 0.0
    if n > 0:
        w += n * total(selection_first(e["N"], e["N_tt"], e["N_tu"], e["N_uu"], S11, S12, S22), n - 1, m1, m2)
    if n > 1:
        w += n * (n - 1) * total(selection_second(e["N"], e["P_t"], e["Q_u"], S11, S12, S22), n - 2, m1, m2)
    if n > 0 and m1 > 0:
        w += m1 * n * total(selection_third(e["N"], e["Q_u"], f_1[:, None], S11, S12), n - 1, m1 - 1, m2)
    if n > 0 and m2 > 0:
        w += n * m2 * total(selection_fourth(e["N"], e["P_t"], f_2[None, :], S12, S22), n - 1, m1, m2 - 1)
    if m1 > 0 and m2 > 0:
        w += m1 * m2 * total(selection_fifth(f_1[:, None], f_2[None, :], S12), n, m1 - 1, m2 - 1)
    return yp, w


def _times(count: float, log):
    """count * log K with a power 0 read as 1 where K = 0 (log K = -inf)."""
    return count * log if count != 0 else np.zeros_like(log)


def _key_counts(keys, whole: bool = True) -> tuple[float, float, float]:
    """(n, m1, m2) checked: whole numbers (real ones if not ``whole``) >= 0 with each row seeing at least one key."""
    try:
        n, m1, m2 = (float(k) for k in keys)
    except (TypeError, ValueError):
        raise ValueError(f"keys must be (n, m1, m2): shared keys and each row's own, got {keys!r}") from None
    if not all(map(math.isfinite, (n, m1, m2))) or (whole and any(k != int(k) for k in (n, m1, m2))):
        raise ValueError(f"keys = {keys!r}: key counts must be whole numbers")
    if min(n, m1, m2) < 0 or n + m1 < 1 or n + m2 < 1:
        raise ValueError(f"keys = {keys!r}: counts must be >= 0 and each row must see at least one key")
    return n, m1, m2


def _own_row(win, h: float, size: int, width: float, acc: Accuracy, own: float):
    """(log L, f') of one row at its full width on its grid: the factors of the keys only that row sees."""
    if own == 0:
        return np.zeros(size), np.zeros(size)
    G, L, M = smooth(win[0], h, size, width, (1.0, 2.0), acc)
    return log_L(G, L), M[1.0] - M[2.0]


def _window(s: float, T: int, acc: Accuracy, h: float) -> tuple[float, float]:
    """The t-range of one row (width s) outside which the pair integrand has negligible mass, on a grid of step h."""
    lo, hi = _pair_window(float(s), T, acc)
    return lo, lo + h * math.ceil((hi - lo) / h)
