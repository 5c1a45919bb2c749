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
from .smoothing import EXACT, TABLE, Accuracy, _kernels, log_L, smooth

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
                       keys=None, whole: bool = True, sphere: int | None = None,
                       cosine: float = 0.0) -> tuple[float, ...]:
    """(Yp(S), W(S)) for two rows of T keys with log-weight covariance S = [[S11, S12], [S12, S22]].

    S11, S22 > 0; |S12| <= sqrt(S11 S22). See the module docstring for the integrals. ``keys``: None (both
    rows see the same T keys) or (n, m1, m2): n keys both rows see, m1 that row 1 only sees and m2 that row 2
    only sees (a causal or windowed mask; T is then ignored); the terms of those keys are
    :func:`derive.finite_width.selection_mixed_integrands`. ``whole=False`` takes real counts: the integrals'
    analytic continuation in (n, m1, m2), which :mod:`numeric.causal_width`'s tables interpolate over.

    ``sphere=d``: keys of fixed norm in width d (derive.finite_width step 5). Returns (Yp_sph, W, W_diag): Yp
    with each key's projections zeta of the law of :func:`numeric.width_law.key_density` at input ``cosine``
    (at 0 the sphere law of :func:`derive.finite_width.sphere_pair_density`) instead of N(0, I_2)
    (:func:`_sphere_corrections`), and W with its diagonal keys' part W_diag (the ``selection_first`` term),
    the inputs of :func:`derive.finite_width.normalized_effective_pair`.
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
    G1, L1, f_1 = _own_row(win1, h, e["K"].shape[0], s1, acc, m1)
    G2, L2, f_2 = _own_row(win2, h2, e["K"].shape[1], s2, acc, m2)
    area = h * h2

    def total(integrand, shared, own1, own2, pieces):
        log_k, log_1, log_2 = pieces
        log = _times(shared, log_k) + _times(own1, log_1)[:, None] + _times(own2, log_2)[None, :]
        return area * float(np.sum(integrand * np.exp(log)))

    gaussian = (log_L(e["G"], e["K"]), log_L(G1, L1), log_L(G2, L2))
    if sphere is None:
        yp = n * total(e["N"], n - 1, m1, m2, gaussian) if n > 0 else 0.0
    else:
        dN, dK, dL1, dL2 = _sphere_corrections(win1, win2, h, h2, S11, S22, S12, int(sphere), float(cosine), acc,
                                               (m1, m2))
        pieces = (log_L(e["G"] - dK, e["K"] + dK), log_L(G1 - dL1, L1 + dL1), log_L(G2 - dL2, L2 + dL2))
        yp = n * total(e["N"] + dN, n - 1, m1, m2, pieces) if n > 0 else 0.0
    w_diag = 0.0                                       # the diagonal keys' part of W
    if n > 0:
        w_diag = n * total(selection_first(e["N"], e["N_tt"], e["N_tu"], e["N_uu"], S11, S12, S22), n - 1, m1, m2,
                           gaussian)
    w = w_diag
    if n > 1:
        w += n * (n - 1) * total(selection_second(e["N"], e["P_t"], e["Q_u"], S11, S12, S22), n - 2, m1, m2,
                                 gaussian)
    if n > 0 and m1 > 0:
        w += m1 * n * total(selection_third(e["N"], e["Q_u"], f_1[:, None], S11, S12), n - 1, m1 - 1, m2, gaussian)
    if n > 0 and m2 > 0:
        w += n * m2 * total(selection_fourth(e["N"], e["P_t"], f_2[None, :], S12, S22), n - 1, m1, m2 - 1, gaussian)
    if m1 > 0 and m2 > 0:
        w += m1 * m2 * total(selection_fifth(f_1[:, None], f_2[None, :], S12), n, m1 - 1, m2 - 1, gaussian)
    return (yp, w) if sphere is None else (yp, w, w_diag)


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
    """(G, L, f') of one row at its full width on its grid: the factors of the keys only that row sees."""
    if own == 0:
        return np.zeros(size), np.ones(size), np.zeros(size)
    G, L, M = smooth(win[0], h, size, width, (1.0, 2.0), acc)
    return G, L, M[1.0] - M[2.0]


# --- keys of fixed norm: the sphere law of their projections ------------------------------------------

#: Lattice points per standard deviation of the log-weights' narrowest direction (at least).
SPHERE_PER_SD = 2.5
#: Largest refinement of the lattice relative to the t grid (rows of correlation near 1).
SPHERE_MAX_REFINE = 4
#: Rows whose log-weights' squared correlation reaches this are treated as proportional (one projection).
SPHERE_DIAGONAL = 0.995 ** 2
#: Projections beyond this many units are dropped (both laws are below e^-40 there).
SPHERE_Z_CUT = 9.0


def _sphere_corrections(win1, win2, h, h2, S11, S22, S12, d: int, rho: float, acc: Accuracy, own):
    """(dN, dK, dL1, dL2): the per-key expectations under the sphere law minus the Gaussian ones, on the grid.

    A key of fixed norm has projections zeta on the two query directions of the density of
    :func:`numeric.width_law.key_density` at input cosine rho (at rho = 0 (1 - |zeta|^2/d)^((d-4)/2),
    :func:`derive.finite_width.sphere_pair_density`), not N(0, I_2). In the
    log-weights (l, l') = (v.zeta, v'.zeta), whose Gaussian covariance is S, both densities are sampled on the
    lattice (a h/k, b h2/k) commensurate with the t and t' grids (k >= 1 resolves the narrowest direction of S)
    and normalised on it; their difference dP (summing to 0) turns each expectation E F(t + l) F'(t' + l') into
    H dP H'^T with Hankel matrices of the kernels' values, so the Gaussian expectations of
    :func:`pair_and_selection` (exact smoothings) keep their accuracy and only the O(1/d) difference is a
    lattice sum. K = E l l' is computed through G = 1 - l (dK = H_G dP H_G'^T - row and column sums): K^(n-1)
    needs 1 - K to relative accuracy. dL1, dL2: the one-row marginals (own keys of a masked row), zeros if none.
    """
    eig_min = 0.5 * (S11 + S22 - math.hypot(S11 - S22, 2.0 * S12))
    sd_min = math.sqrt(max(eig_min, 0.0))
    z_cut = SPHERE_Z_CUT          # past the sphere's edge (small d) its law is 0, and the Gaussian must not be cut
    n1, n2 = _grid_size(win1, h), _grid_size(win2, h2)
    if S12 > 0.0 and S12 * S12 >= SPHERE_DIAGONAL * S11 * S22:
        dN, dK = _sphere_diagonal(win1[0], win2[0], h, h2, n1, n2, S11, d, rho, z_cut)
        dL1 = _sphere_marginal(win1[0], h, 1, n1, S11, d, rho, z_cut) if own[0] > 0 else np.zeros(n1)
        dL2 = _sphere_marginal(win2[0], h2, 1, n2, S22, d, rho, z_cut) if own[1] > 0 else np.zeros(n2)
        return dN, dK, dL1, dL2
    refine = int(min(SPHERE_MAX_REFINE, max(1, math.ceil(SPHERE_PER_SD * max(h, h2) / max(sd_min, 1e-300)))))
    step1, step2 = h / refine, h2 / refine
    A = int(math.ceil(z_cut * math.sqrt(S11) / step1))
    B = int(math.ceil(z_cut * math.sqrt(S22) / step2))
    x1, x2 = np.meshgrid(step1 * np.arange(-A, A + 1), step2 * np.arange(-B, B + 1), indexing="ij")
    det = S11 * S22 - S12 * S12
    form = (S22 * x1 * x1 - 2.0 * S12 * x1 * x2 + S11 * x2 * x2) / max(det, 1e-300)
    dP = _sphere_minus_gauss(form, d, 2, rho)
    F1, Gk1 = _hankel(win1[0], step1, refine, n1, A)
    F2, Gk2 = _hankel(win2[0], step2, refine, n2, B)
    dN = F1 @ dP @ F2.T
    dK = Gk1 @ dP @ Gk2.T - (Gk1 @ dP.sum(axis=1))[:, None] - (dP.sum(axis=0) @ Gk2.T)[None, :]
    dL1 = _sphere_marginal(win1[0], step1, refine, n1, S11, d, rho, z_cut) if own[0] > 0 else np.zeros(n1)
    dL2 = _sphere_marginal(win2[0], step2, refine, n2, S22, d, rho, z_cut) if own[1] > 0 else np.zeros(n2)
    return dN, dK, dL1, dL2


def _sphere_diagonal(t1: float, t2: float, h: float, h2: float, n1: int, n2: int, S11: float, d: int, rho: float,
                     z_cut: float):
    """(dN, dK) of rows whose log-weights are proportional (correlation >= sqrt(:data:`SPHERE_DIAGONAL`)): one
    projection zeta, l = sqrt(S11) zeta and l' = (h2/h) l, so both rows' shifts land on their grids and
    dE F(t + l) F'(t' + l') = sum_a dp_a F(t_(i+a)) F'(t'_(j+a)) (the one-projection law's difference)."""
    half = int(math.ceil(z_cut * math.sqrt(S11) / h))
    dp = _sphere_minus_gauss((h * np.arange(-half, half + 1)) ** 2 / S11, d, 1, rho)
    F1, Gk1 = _hankel(t1, h, 1, n1, half)
    F2, Gk2 = _hankel(t2, h2, 1, n2, half)
    dN = (F1 * dp) @ F2.T
    dK = (Gk1 * dp) @ Gk2.T - (Gk1 @ dp)[:, None] - (Gk2 @ dp)[None, :]
    return dN, dK


def _sphere_minus_gauss(form, d: int, k: int, rho: float = 0.0) -> np.ndarray:
    """Lattice weights of a normalized key's k projections, minus those of N(0, I_k), exp(-form/2), each
    normalised to sum 1 (``form``: |zeta|^2 at the lattice points): at rho = 0 the sphere law
    (1 - form/d)^((d-k-2)/2), else :func:`numeric.width_law.key_density` (interpolated in |zeta|)."""
    if rho > 0.0:
        from .width_law import key_density
        r, density = key_density(d, rho, k)
        sphere = np.interp(np.sqrt(form), r, density, right=0.0)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            log_sphere = np.where(form < d, 0.5 * (d - k - 2) * np.log1p(-np.minimum(form, d) / d), -np.inf)
        sphere = np.exp(log_sphere - log_sphere.max())
    gauss = np.exp(-0.5 * form)
    return sphere / sphere.sum() - gauss / gauss.sum()


def _grid_size(win, h: float) -> int:
    return int(round((win[1] - win[0]) / h)) + 1


def _hankel(t0: float, step: float, refine: int, n: int, half: int):
    """(H_f, H_g): rows i < n of f and g = 1 - l at t0 + refine step i + step a, a in [-half, half]."""
    x = t0 + step * np.arange(-half, refine * (n - 1) + half + 1)
    G, _, M = _kernels(x, (1.0,))
    view = np.lib.stride_tricks.sliding_window_view
    return view(M[1.0], 2 * half + 1)[::refine], view(G, 2 * half + 1)[::refine]


def _sphere_marginal(t0: float, step: float, refine: int, n: int, S: float, d: int, rho: float,
                     z_cut: float) -> np.ndarray:
    """dL of one row's own keys: E l(t + s z) under the one-projection key law minus under N(0, 1)."""
    half = int(math.ceil(z_cut * math.sqrt(S) / step))
    z2 = (step * np.arange(-half, half + 1)) ** 2 / S
    dp = _sphere_minus_gauss(z2, d, 1, rho)
    _, Gk = _hankel(t0, step, refine, n, half)
    return -(Gk @ dp)


def _window(s: float, T: int, acc: Accuracy, h: float) -> tuple[float, float]:
    """The t-range of one row (width s) outside which the pair integrand has negligible mass, on a grid of step h."""
    lo, hi = _pair_window(float(s), T, acc)
    return lo, lo + h * math.ceil((hi - lo) / h)
