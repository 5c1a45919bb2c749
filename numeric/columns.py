"""Finite-T attention moments along the fixed-beta columns of a diagram (issue 6, speed).

In every named architecture the attention layer sees LayerNorm'd tokens,
q = 1, so along a column of a trainability diagram (fixed beta) Y2 and Yp
are functions of the overlap p alone: b = beta sqrt(ln T (1 - p)) and
rho = p. :class:`ColumnMoments` tabulates both per column once, as cubic
Hermite cells (:data:`CELLS` per column; :data:`NORMALIZED_CELLS` for normalized tokens) in the coordinate

    t = XI_SHARE xi(b)/xi(b_hi) + (1 - XI_SHARE) u/u_hi,   xi(b) = b/(b + sqrt(2 ln T)),   u = sqrt(1 - p).

xi is the variable in which :class:`numeric.tables.Y2Table` and
:class:`~numeric.tables.YpTable` resolve the condensation crossover; the
u share resolves rho -> 0 on columns of large beta, where xi saturates; and
t(u) has a closed-form inverse (a quadratic in u) for the nodes.
b_hi is the column's b at p = p_lo, the lowest p it covers: 0, or the p where
b reaches :data:`~numeric.tables.B_PAIR_MAX`. A depth step then costs one
8-coefficient gather and two cubic Horner evaluations per point, instead of
the 2-D bicubic look-up of Yp and the 1-D look-up of Y2 with their coordinate
maps (about 4x less per point; ``sigprop bench`` reports the diagram-level
cost). Node values come from those tables, node slopes from five-point
differences of the node values.

A call the columns do not cover (q != 1, some p < p_lo, a beta array other
than the bound one) goes to the 2-D tables as a whole, so the bound moment functions are
drop-in replacements for :func:`numeric.moments.ipr2_finite` and
:func:`numeric.moments.ipr_pair_finite`. Measured against the 2-D tables: < 1e-8
absolute (tests/numeric/test_columns.py); normalized tokens' columns against their moments: 1.6e-7
(tests/numeric/test_normalized_width.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np

from . import validation as check
from .blas import single_threaded_blas
from .interpolation import cubic_cells, horner_inplace
from .laplace import z_star
from .maps import moment_functions
from .tables import B_PAIR_MAX, Y2_table, Yp_table

#: Hermite cells per column (accuracy measured in tests/numeric/test_columns.py).
CELLS = 256
#: Cells per column of normalized tokens' moments: they come from Chebyshev tables within ~1e-4 of the direct
#: quadrature, which 128 cells interpolate to ~1e-7 (tests/numeric/test_normalized_width.py) at half the cost.
NORMALIZED_CELLS = 128
#: Columns get tables for c = beta sqrt(ln T) in this range; others fall back (their constants would over/underflow).
C_RANGE = (1e-6, 1e6)
#: Share of t that follows xi(b); the rest follows u = sqrt(1 - p), which resolves p -> 0 on columns of large beta.
XI_SHARE = 0.75
#: Node rows evaluated per call while building (keeps the look-ups cache-sized; the calls run in threads).
_ROWS = 64


def _slope(f, h):
    """df/dt at every node of a uniform grid (axis 0, spacing h): five-point stencils, error O(h^4)."""
    d = np.empty_like(f)
    d[2:-2] = f[:-4] - 8.0 * f[1:-3] + 8.0 * f[3:-1] - f[4:]
    d[0] = -25.0 * f[0] + 48.0 * f[1] - 36.0 * f[2] + 16.0 * f[3] - 3.0 * f[4]
    d[1] = -3.0 * f[0] - 10.0 * f[1] + 18.0 * f[2] - 6.0 * f[3] + f[4]
    d[-1] = 25.0 * f[-1] - 48.0 * f[-2] + 36.0 * f[-3] - 16.0 * f[-4] + 3.0 * f[-5]
    d[-2] = 3.0 * f[-1] + 10.0 * f[-2] - 18.0 * f[-3] + 6.0 * f[-4] - f[-5]
    return d / (12.0 * h)


class ColumnMoments:
    """Y2 and Yp at q = 1 along the columns beta = ``betas`` (1-D, distinct values), for sequence length T.

    Columns with c = beta sqrt(ln T) outside [:data:`C_RANGE`] get no table
    (p_lo = oo): every call on them falls back to the 2-D tables. ``width`` (d, d_head): the columns of the
    finite-width effective moments (:func:`numeric.width_tables.width_tables`, the same coordinates), falling
    back to their 2-D tables; (d, d_head, "normalized"): those of tokens of fixed norm
    (:class:`numeric.normalized_width.NormalizedMoments`, functions of (b, rho) that no 2-D table holds), falling
    back to those functions.
    """

    def __init__(self, T: int, betas, width=None):
        from .profile import normalized
        self.T = check.sequence_length(T, infinite=False)
        self.width = width
        self.cells = NORMALIZED_CELLS if normalized(width) else CELLS
        self.betas = np.unique(np.asarray(betas, dtype=float).ravel())
        self.scale = z_star(self.T)
        c = self.betas * np.sqrt(np.log(self.T))                 # b = c sqrt(1 - p)
        usable = (c >= C_RANGE[0]) & (c <= C_RANGE[1])
        c = np.where(usable, c, 1.0)                              # placeholder constants for unusable columns
        b_hi = np.minimum(c, B_PAIR_MAX)
        u_hi = b_hi / c                                           # u = sqrt(1 - p) at the column's lowest p
        self.p_lo = np.where(usable, np.maximum(1.0 - u_hi**2, 0.0), np.inf)
        self.per_xi = XI_SHARE * self.cells * (b_hi + self.scale) / b_hi   # cells t = per_xi xi + per_u u
        self.per_u = (1.0 - XI_SHARE) * self.cells / u_hi
        self.c = c
        from .diagram import _workers
        self.tables()                                             # built (or read) once, before the threads
        t = np.linspace(0.0, 1.0, self.cells + 1)[:, None]
        rows = [t[k: k + _ROWS] for k in range(0, self.cells + 1, _ROWS)]
        with ThreadPoolExecutor(max_workers=_workers(len(rows))) as pool:   # NumPy releases the GIL
            value = np.concatenate(list(pool.map(lambda t_rows: self._moments(self._u_of_t(t_rows, u_hi)), rows)))
        value = value.reshape(self.cells + 1, -1)     # (nodes, columns x 2): one matrix product per node row
        h = 1.0 / self.cells
        cells = cubic_cells(value, _slope(value, h), h)   # (cells, columns x 2, 4)
        self._cells = np.ascontiguousarray(cells.reshape(-1, 8))   # row cell * columns + column

    def _t_of_u(self, u):
        """The column coordinate t at u = sqrt(1 - p) (u shape (n, columns))."""
        return _cells_t(u.copy(), self.c, self.per_xi, self.per_u, self.scale) / self.cells

    def _u_of_t(self, t, u_hi):
        """u with t(u) = t (t increases with u, from 0 at u = 0 to 1 at u_hi): the positive root of
        cells t (c u + scale) = per_xi c u + per_u u (c u + scale), a quadratic A u^2 + B u - C = 0 with
        A, C >= 0, in the form without cancellation for either sign of B."""
        c, scale = self.c, self.scale
        y = t * self.cells
        a = self.per_u * c
        b = self.per_xi * c + self.per_u * scale - y * c
        root = np.sqrt(b * b + 4.0 * a * y * scale)
        u = np.where(b > 0.0, 2.0 * y * scale / (b + root), (root - b) / (2.0 * a))   # b + root > 0 where b > 0
        return np.clip(u, 0.0, u_hi)

    def tables(self):
        """What the columns are cut from and fall back to: the 2-D (Y2, Yp) tables (infinite width, or Gaussian
        tokens at finite width), or the :class:`~numeric.normalized_width.NormalizedMoments` of normalized tokens."""
        from .profile import normalized
        if self.width is None:
            return Y2_table(self.T), Yp_table(self.T)
        if normalized(self.width):
            from .normalized_width import normalized_moments
            return normalized_moments(self.T, *self.width[:2])
        from .width_tables import width_tables
        return width_tables(self.T, *self.width)[:2]

    def _moments(self, u):
        """(Y2, Yp) at u = sqrt(1 - p) of every column (u shape (n, columns)): shape (n, columns, 2). Normalized
        tokens' moments are read with BLAS on one thread: its idle threads would spin after the products and slow
        the kernels that follow (1.7 x at 256 x 256 x 60)."""
        from .profile import normalized
        source = self.tables()
        if normalized(self.width):                        # functions of (beta, q = 1, p)
            with single_threaded_blas():
                return np.stack(source.moments(self.betas, 1.0, 1.0 - u * u), axis=-1)
        b = np.minimum(self.c * u, B_PAIR_MAX)           # c (B_PAIR_MAX / c) may round above it
        rho = np.clip(1.0 - u * u, 0.0, 1.0)
        y2, yp = source
        return np.stack([y2.at_b(b), yp.at(b, rho)], axis=-1)

    def bind(self, beta):
        """(Y2, Yp) moment functions for a block map iterated with this ``beta`` array (see module doc)."""
        return _Bound(self, np.asarray(beta)).pair()


def _cells_t(u, c, per_xi, per_u, scale):
    """cells t = per_xi xi(c u) + per_u u at u = sqrt(1 - p): the column coordinate, for the tables' nodes
    and the look-ups alike (numeric._jit.column_cell, in the same order). Overwrites u; returns it."""
    xi = u * c                                      # b
    xi /= xi + scale
    xi *= per_xi
    u *= per_u
    u += xi
    return u


def column_moments(T, betas, width=None) -> ColumnMoments:
    """The :class:`ColumnMoments` for (T, the distinct values of ``betas``, ``width``), built on first use and
    cached."""
    distinct = np.unique(np.asarray(betas, dtype=float).ravel())
    return _cached_columns(check.sequence_length(T, infinite=False), distinct.tobytes(),
                           None if width is None else tuple(x if isinstance(x, str) else int(x) for x in width))


@lru_cache(maxsize=8)
def _cached_columns(T: int, betas: bytes, width=None) -> ColumnMoments:
    return ColumnMoments(T, np.frombuffer(betas), width)


def clear_cache() -> None:
    """Forget the cached columns (``sigprop bench`` times a diagram with its column build)."""
    _cached_columns.cache_clear()


class _Bound:
    """The columns bound to one beta array: per point its column's constants, and a one-call memo."""

    def __init__(self, columns: ColumnMoments, beta: np.ndarray):
        self.columns, self.beta = columns, beta
        index = np.searchsorted(columns.betas, beta)
        index = np.minimum(index, columns.betas.size - 1)
        ok = columns.betas[index] == beta                           # a beta that has a column
        index = np.where(ok, index, 0)
        self.c = columns.c[index]
        self.per_xi = columns.per_xi[index]
        self.per_u = columns.per_u[index]
        self.column = index
        self.stride = columns.betas.size
        self.p_lo = np.where(ok, columns.p_lo[index], np.inf)
        self._last = None

    def pair(self):
        """(Y2, Yp) for a block map. The pair shares one look-up per layer: Yp called with the same
        (beta, q, p) objects as the Y2 call before it reuses that call's gather (one thread per binding).
        So the arrays must not change in place between the two calls, as no block map does."""
        return self.Y2, self.Yp

    def _covered(self, beta, q, p):
        """The call is on the bound columns: same beta array, q = 1, p an array in every column's range
        (NaN is not: it goes to the 2-D tables' own handling)."""
        return (beta is self.beta and np.shape(p) == np.broadcast_shapes(np.shape(p), self.beta.shape)
                and np.all(q == 1.0) and np.all(p >= self.p_lo))

    def _gather(self, p):
        """The 8 Hermite coefficients (Y2's, then Yp's) of each point's cell, and its local coordinate."""
        u = 1.0 - p
        np.maximum(u, 0.0, out=u)
        np.sqrt(u, out=u)
        x = _cells_t(u, self.c, self.per_xi, self.per_u, self.columns.scale)
        np.minimum(x, self.columns.cells, out=x)
        i = x.astype(np.intp)
        np.minimum(i, self.columns.cells - 1, out=i)
        x -= i
        i *= self.stride
        i += self.column
        return np.take(self.columns._cells, i, axis=0), x

    def _evaluate(self, beta, q, p, which):
        last = self._last
        if last is None or last[0] is not p or last[1] is not q or last[2] is not beta:
            if not self._covered(beta, q, p):
                return moment_functions(self.columns.T, self.columns.width)[which](beta, q, p, self.columns.T)
            last = self._last = (p, q, beta) + self._gather(np.asarray(p, dtype=float))
        coeffs, s = last[3:]
        out = horner_inplace(np.moveaxis(coeffs[..., 4 * which: 4 * which + 4], -1, 0), s)
        if self.columns.width is not None:              # the effective moments exceed 1: not clipped
            return out
        return np.clip(out, 0.0, 1.0, out=out)

    def Y2(self, beta, q, p, T=None):
        return self._evaluate(beta, q, p, 0)

    def Yp(self, beta, q, p, T=None):
        return self._evaluate(beta, q, p, 1)
