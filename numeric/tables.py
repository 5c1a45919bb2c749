"""Fast finite-T moments for the block maps: Y2(b, T) and Yp(b, rho, T) interpolated per T, and cached.

A depth profile or a diagram evaluates E sum_s A_ts^2 (paper eq. 2) and the pair
term E sum_s A_ts A_t's (eq. 22) at every block and grid point, far too often
for the quadratures of :mod:`numeric.laplace`. Y2 depends on (b, T) only and Yp
on (b, rho, T) (b = beta sqrt(ln T q (q - p)), rho = p/q), so per T they are
tabulated once: Chebyshev interpolation in xi = b/(b + sqrt(2 ln T)) (which
maps b in [0, oo] onto [0, 1] and resolves the condensation crossover near
b = sqrt(2 ln T), eq. 15) and, for Yp, in a stretched sqrt(1 - rho); then
resampled onto fine cubic-Hermite grids (:mod:`numeric.interpolation`) so that
a call costs O(1) per point. :func:`Y2_table` and :func:`Yp_table` build a table
on first use and keep it for the session (at most 64 sequence lengths).

Every table entry point has two forms: ``table(beta, q, p)`` checks its input
(beta > 0, q > 0, 0 <= p <= q up to rounding: depth iterations reach p = q,
uniform attention) and ``table.fast(beta, q, p)`` trusts a block map's already
checked state.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import validation as check
from .blas import single_threaded_blas
from .interpolation import bicubic, bicubic_cells, cell_inplace, cheb_resample, cubic_cells, horner_inplace, lobatto
from .laplace import finite_state, pair_moment, pair_term, plain, row_moments, z_star
from .smoothing import TABLE

#: Chebyshev-Lobatto nodes of Y2 in xi = b/(b + sqrt(2 ln T)) on [0, 1] (b = oo included).
N_Y2 = 97
#: Largest b the Yp table covers; beyond it the pair term is computed directly (numeric.laplace.pair_term).
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


class Y2Table:
    """Fast E sum_s A_ts^2 at one T: a function of b = beta sqrt(ln T q (q - p)) only.

    Built once (``N_Y2`` evaluations at :data:`TABLE` accuracy, well under 1 s):
    Chebyshev interpolation in xi = b/(b + sqrt(2 ln T)) on [0, 1], which covers
    b = 0 (Y2 = 1/T) to b = oo (Y2 = 1), resampled onto ``FINE_1D`` cubic
    Hermite cells. Tested against :func:`numeric.finite_t.ipr` to < 1e-8 absolute.
    """

    def __init__(self, T: int):
        self.T = check.sequence_length(T, infinite=False)
        self.scale = z_star(self.T)
        b = _b_of_xi(lobatto(N_Y2, 0.0, 1.0), self.scale)
        nodes = np.array([1.0 if np.isinf(bb) else 1.0 / self.T if bb == 0 else
                          row_moments(bb, self.T, acc=TABLE)[2.0] for bb in b])
        value, slope = cheb_resample(nodes, np.linspace(0.0, 1.0, FINE_1D))
        self._cells = np.ascontiguousarray(cubic_cells(value, slope, 1.0 / (FINE_1D - 1)))  # (cells, 4)

    def at_b(self, b):
        """Y2 at effective widths b >= 0 (array)."""
        shape = np.shape(b)
        b = np.ravel(np.asarray(b, dtype=float))
        with np.errstate(invalid="ignore"):
            xi = np.divide(b, b + self.scale)                             # b = oo -> nan, set to 1 below
        xi[np.isinf(b)] = 1.0
        i, s = cell_inplace(xi, FINE_1D)
        coeffs = np.take(self._cells, i, axis=0).T   # one gather of whole cells
        return np.clip(horner_inplace(coeffs, s), 0.0, 1.0, out=s).reshape(shape)

    def fast(self, beta, q, p):
        """Y2 without input checks, for block maps whose inputs are already validated."""
        return self.at_b(_unchecked_state(beta, q, p, self.T)[0])

    def __call__(self, beta, q, p, T=None):
        """Y2(beta, q, p) at this table's T (``T``, if given, must match)."""
        b, _ = _fast_state(beta, q, p, self.T if T is None else T, self.T)
        return plain(self.at_b(b))


class YpTable:
    """Fast E sum_s A_ts A_t's (t != t') at one T: a function of (b, rho = p/q) only.

    Built once: Chebyshev-Lobatto nodes in xi = b/(b + sqrt(2 ln T)) on
    [0, xi(B_PAIR_MAX)] and, at each, in w on [0, 1] (sqrt(1 - rho) =
    w/(w + kappa(b)(1 - w)), :func:`_stretch`; more nodes at larger b). The edges are
    known (b = 0 or rho = 0: 1/T; rho = 1: Y2), the interior is
    :func:`pair_moment` at :data:`TABLE` accuracy. Resampled onto ``FINE_2D``
    bicubic Hermite cells. Points with b > B_PAIR_MAX are computed directly.
    """

    def __init__(self, T: int):
        self.T = check.sequence_length(T, infinite=False)
        self.scale = z_star(self.T)
        self.xi_max = B_PAIR_MAX / (B_PAIR_MAX + self.scale)
        b = _b_of_xi(lobatto(_pair_xi_nodes(self.T), 0.0, self.xi_max), self.scale)
        fine_x, fine_w = (np.linspace(0.0, 1.0, n) for n in FINE_2D)
        with single_threaded_blas():              # one limit for all node rows (numeric.blas)
            rows = [cheb_resample(self._w_nodes(float(bb)), fine_w) for bb in b]
        f_x0, fw_x0 = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
        f, fx = cheb_resample(f_x0, fine_x)
        fw, fxw = cheb_resample(fw_x0, fine_x)
        cells = bicubic_cells(f, fx, fw, fxw, 1.0 / (FINE_2D[0] - 1), 1.0 / (FINE_2D[1] - 1))
        self._cells = np.ascontiguousarray(cells.reshape(-1, 16))   # row m*4 + n: a[m, n] of s^m v^n

    def _w_nodes(self, b: float) -> np.ndarray:
        """Yp at the Chebyshev-Lobatto nodes in w at width b (edges from their limits)."""
        w = lobatto(_pair_w_nodes(b), 0.0, 1.0)
        values = np.full(w.size, 1.0 / self.T)
        if b > 0:
            values[0] = float(Y2_table(self.T).at_b(b))
            values[1:-1] = [pair_moment(b, float(rho), self.T, TABLE) for rho in _rho_of_w(w[1:-1], b)]
        return values

    def at(self, b, rho):
        """Yp at effective widths b >= 0 and correlations rho in [0, 1] (arrays, broadcast)."""
        b, rho = np.broadcast_arrays(np.asarray(b, dtype=float), np.asarray(rho, dtype=float))
        inside = b <= B_PAIR_MAX
        if np.all(inside):
            return self._interpolate(b, rho)
        out = np.empty(b.shape)
        out[inside] = self._interpolate(b[inside], rho[inside])
        out[~inside] = pair_term(b[~inside], rho[~inside], self.T)
        return out

    def _interpolate(self, b, rho):
        shape = np.shape(b)
        b, rho = np.ravel(b), np.ravel(rho)
        i, s = cell_inplace(np.divide(b, b + self.scale), FINE_2D[0], 1.0 / self.xi_max)
        j, v = cell_inplace(_w_of_rho(rho, b), FINE_2D[1])
        i *= FINE_2D[1] - 1
        i += j
        out = bicubic(np.take(self._cells, i, axis=0).T, s, v)   # one gather of whole cells (fast)
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
        return plain(self.at(b, rho))


def _fast_state(beta, q, p, T, table_T):
    """(b, rho) for a table's checked entry point: T must be the table's, and the state as
    :func:`numeric.laplace.finite_state` with p = q allowed (depth iterations reach rho -> 1)."""
    if check.sequence_length(T, infinite=False) != table_T:
        raise ValueError(f"T={T} does not match this table's T={table_T}")
    return finite_state(beta, q, p, table_T, uniform=True)


def _unchecked_state(beta, q, p, T: int):
    """(b, rho) for 0 <= p <= q up to rounding, as a block map feeds them (clipped, not checked)."""
    gap = np.maximum(q - p, 0.0)
    with np.errstate(over="ignore"):
        b = beta * np.sqrt(np.log(T) * q * gap)
    return b, np.clip(p / q, 0.0, 1.0)


def Y2_table(T) -> Y2Table:
    """The :class:`Y2Table` for sequence length T, built on first use and cached."""
    return _cached_table(Y2Table, check.sequence_length(T, infinite=False))


def Yp_table(T) -> YpTable:
    """The :class:`YpTable` for sequence length T, built on first use and cached."""
    return _cached_table(YpTable, check.sequence_length(T, infinite=False))


@lru_cache(maxsize=64)
def _cached_table(kind, T: int):
    return kind(T)


def ipr2_fast(beta, q, p, T):
    """E sum_s A_ts^2 from the cached table for T (drop-in moment function f(beta, q, p, T))."""
    return Y2_table(T)(beta, q, p)


def ipr_pair_fast(beta, q, p, T):
    """E sum_s A_ts A_t's (t != t') from the cached table for T (f(beta, q, p, T))."""
    return Yp_table(T)(beta, q, p)
