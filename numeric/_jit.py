"""numba helpers of the fused kernels (:mod:`numeric._kernels`): scalar guards, moment look-ups, row loading.

Imported only when a fused kernel runs (:mod:`numeric.fused` imports it lazily):
``import numeric`` does not load numba. Every function here is the scalar,
per-point mirror of a NumPy function of the reference path, operation for
operation, so that the fused kernels equal it to rounding:

- :func:`_sqrt`, :func:`_acos`, :func:`_asin` — :mod:`numeric.safe`;
- :func:`parisi_m` — :func:`numeric.moments.parisi_m`;
- :func:`Y2_finite`, :func:`Yp_finite` — the finite-T moments a block map
  sees: the per-beta column tables of :mod:`numeric.columns` (one cell
  gather, two cubic Horner steps) where they cover the call (q = 1, p at
  least the column's p_lo), else the 2-D tables of :mod:`numeric.tables`
  (``Y2Table.at_b``, ``YpTable._interpolate``); a pair term with
  b > ``B_PAIR_MAX``, which the tables do not hold (it is a quadrature,
  :func:`numeric.laplace.pair_term`), returns NaN, and the kernel hands that
  point back to the NumPy path;
- :func:`column_cell`, :func:`column_gather`, :func:`column_moment` — the
  same column look-up as :func:`_column`, split for a row of points into a
  vectorised coordinate pass, a pass of plain loads and stores (the eight
  coefficients of each point's cell; the only data-dependent loads, which the
  compiler does not vectorise) and the Horner steps inside the vectorised
  block update: the finite-T kernels' fast path;
- :func:`gauss_hermite_rule` — the tensor Gauss–Hermite rule of
  :mod:`numeric.quadrature` for kernels without a closed form (tanh).

The moment tables are three float64 arrays (built by
:func:`numeric.fused.moment_tables`), each its own kernel argument: ``M``, the
2-D tables of one T (a header of :data:`HEADER` slots: T, ln T, scales, sizes
and the offsets of the tables that follow; built once per T and shared by
every diagram at that T); ``N``, the per-column constants of a grid's betas
(:data:`N_HEADER` slots, then the columns' sorted betas, c, per_xi, per_u
and p_lo, ``N_NCOLS`` values each); ``CC``, the column cells themselves
(:class:`numeric.columns.ColumnMoments`' array, not copied). Arguments, not a
tuple of arrays: numba reference-counts an array taken out of a tuple at every
access, which cost more than the look-up itself. The asymptotic kernels get
``M = [inf]``, and every kernel without columns ``N`` of no columns.

Compilation: :func:`jit` is ``numba.njit`` with ``error_model="numpy"``
(x/0 gives inf or NaN as in NumPy, not ZeroDivisionError) and
``cache=True``; where no cache directory can be written (a read-only install
without ``NUMBA_CACHE_DIR``), it compiles without caching instead of failing.
"""

from __future__ import annotations

import math
import warnings

import numba
import numpy as np


#: Grid points per row of a kernel: the inner loop over a row is contiguous, layers loop outside it
#: (numeric.fused.ROW is the same number).
ROW = 256

# --- the 2-D tables of one T, M: header slots ----------------------------------------------
M_T, M_LOG_T, M_Y2_SCALE, M_YP_SCALE, M_YP_FACTOR = 0, 1, 2, 3, 4
#: offsets of the 2-D tables (numeric.tables): Y2 cells (FINE_1D - 1, 4), Yp cells ((FINE_2D - 1) product, 16)
M_Y2_CELLS, M_YP_CELLS = 5, 6
#: the tables' sizes, read at run time (this module imports neither numeric.columns nor numeric.tables, whose
#: quadratures load SciPy): numeric.tables.FINE_1D - 1, FINE_2D - 1; B_PAIR_MAX
M_N1, M_NX, M_NW, M_B_PAIR_MAX = 7, 8, 9, 10
#: the range a look-up is clipped to: [0, 1] for E sum A^2 and E sum A A' (infinite width); none for the
#: finite-width effective moments, which exceed 1 (numeric.width_tables)
M_FLOOR, M_CEIL = 11, 12
HEADER = 13

# --- the columns of a grid's betas, N: header slots, then N_VECTORS vectors of N_NCOLS values -------
#: the number of columns, the columns' scale sqrt(2 ln T) and their cells per column (numeric.columns.CELLS)
N_NCOLS, N_SCALE, N_CELLS = 0, 1, 2
#: the columns' clipping range, as M_FLOOR, M_CEIL
N_FLOOR, N_CEIL = 3, 4
N_HEADER = 5
#: which vector: N[N_HEADER + k * ncols + col]
N_BETAS, N_C, N_PER_XI, N_PER_U, N_P_LO = 0, 1, 2, 3, 4
N_VECTORS = 5


def _njit(func, **options):
    """numba.njit(func) with the kernels' options; caching where a cache directory can be written."""
    options = {"error_model": "numpy", "nogil": True, **options}
    try:
        return numba.njit(cache=True, **options)(func)
    except RuntimeError as exc:                  # numba: "cannot cache function ...: no locator available"
        warnings.warn(f"numba cannot cache {func.__qualname__} ({exc}); compiling it in every process "
                      "(set NUMBA_CACHE_DIR to a writable directory)", RuntimeWarning, stacklevel=3)
        return numba.njit(cache=False, **options)(func)


def jit(func):
    """A function compiled on its own (compiled on first use, cached): the Gauss-Hermite kernels."""
    return _njit(func)


def inline(func):
    """A helper inlined into the kernels by numba: no compilation of its own (each costs ~0.1 s of JIT),
    and no call per point."""
    return _njit(func, inline="always")


def kernel(func):
    """A fused kernel: parallel over rows of grid points (``prange``), compiled on first use, cached."""
    return _njit(func, parallel=True)


# --- range-safe scalar functions (numeric.safe) --------------------------------------

@inline
def _sqrt(x):
    if x < 0.0:              # NaN stays NaN, as numpy.maximum(x, 0.0)
        x = 0.0
    return math.sqrt(x)


@inline
def _clip1(x):
    if x > 1.0:
        return 1.0
    if x < -1.0:
        return -1.0
    return x


#: fdlibm's (e_asin.c) rational approximation of asin(x) = x + x R(x^2) on |x| < 1/2, used on both halves.
_PS = (1.66666666666666657415e-01, -3.25565818622400915405e-01, 2.01212532134862925881e-01,
       -4.00555345006794114027e-02, 7.91534994289814532176e-04, 3.47933107596021167570e-05)
_QS = (-2.40339491173441421878e+00, 2.02094576023350569471e+00, -6.88283971605453293030e-01,
       7.70381505559019352791e-02)
_PIO2_HI, _PIO2_LO = 1.57079632679489655800e+00, 6.12323399573676603587e-17


@inline
def _asin(x):
    """asin of x clipped to [-1, 1], without a call or a branch the compiler cannot turn into a select.

    libm's asin is one call per point, which keeps the kernels' inner loop from being vectorised (the
    relu and erf kernels take it once per block update: 3x the time of the rest). fdlibm's rational
    approximation R on t = x^2 (|x| < 1/2) and, through asin x = pi/2 - 2 asin sqrt((1 - x)/2), on
    t = (1 - |x|)/2: one R, one sqrt, selects. Within 3 ulp of libm (tests/numeric/test_fused.py).
    """
    x = _clip1(x)
    a = abs(x)
    small = a < 0.5
    t = x * x if small else (1.0 - a) * 0.5
    p = t * (_PS[0] + t * (_PS[1] + t * (_PS[2] + t * (_PS[3] + t * (_PS[4] + t * _PS[5])))))
    q = 1.0 + t * (_QS[0] + t * (_QS[1] + t * (_QS[2] + t * _QS[3])))
    r = p / q
    s = math.sqrt(t)
    return x + x * r if small else math.copysign(_PIO2_HI - (2.0 * (s + s * r) - _PIO2_LO), x)


@inline
def _acos(x):
    return math.acos(_clip1(x))


@inline
def _max(a, b):
    """numpy.maximum of two scalars (NaN propagates)."""
    if a != a or b != b:
        return math.nan
    return a if a >= b else b


@inline
def _clip01(x):
    """numpy.clip(x, 0, 1) (NaN stays NaN), as two selects: no branch in a loop the compiler vectorises."""
    x = 0.0 if x < 0.0 else x
    return 1.0 if x > 1.0 else x


@inline
def _clip(x, lo, hi):
    """numpy.clip(x, lo, hi) (NaN stays NaN; lo = -inf, hi = inf: no clipping), as two selects."""
    x = lo if x < lo else x
    return hi if x > hi else x


# --- asymptotic moments ----------------------------------------------------------------

@inline
def parisi_m(beta, q, p):
    """numeric.moments.parisi_m: sqrt(2/max(x, 2)), x = beta^2 q (q - p)."""
    x = beta * beta * q * (q - p)
    if x < 2.0:              # numpy.maximum(x, 2.0); NaN stays NaN
        x = 2.0
    return math.sqrt(2.0 / x)


@inline
def column_asymptotic(beta, N):
    return -1


@inline
def condensed_asymptotic(beta, q, p):
    """Entropy collapse of an attention layer at T -> oo: beta above beta_c(q, p) (numeric.diagram)."""
    return parisi_m(beta, q, p) < 1.0


# --- finite-T moments ------------------------------------------------------------------

@inline
def _n(N, which, col):
    """Column ``col``'s entry of vector ``which`` of N (N_BETAS, N_C, ...)."""
    return N[N_HEADER + which * int(N[N_NCOLS]) + col]


@inline
def column_finite(beta, N):
    """The column of ``beta`` (exact match, as numeric.columns binds it), else -1."""
    n = int(N[N_NCOLS])
    if n == 0:
        return -1
    betas = N[N_HEADER + N_BETAS * n: N_HEADER + (N_BETAS + 1) * n]
    i = np.searchsorted(betas, beta)
    if i >= n:
        i = n - 1
    return i if betas[i] == beta else -1


@inline
def _horner(M, base, s):
    """sum_m M[base + m] s^m, m = 0..3, in numeric.interpolation.horner_inplace's order."""
    out = M[base + 3] * s
    out += M[base + 2]
    out *= s
    out += M[base + 1]
    out *= s
    out += M[base]
    return out


@inline
def _column(p, col, N, CC, which):
    """Y2 (which = 0) or Yp (which = 4) from the column tables: numeric.columns._Bound._gather and _evaluate."""
    gap = 1.0 - p
    if gap < 0.0:
        gap = 0.0
    u = math.sqrt(gap)
    xi = u * _n(N, N_C, col)
    xi /= xi + N[N_SCALE]
    xi *= _n(N, N_PER_XI, col)
    u *= _n(N, N_PER_U, col)
    x = u + xi
    cells = N[N_CELLS]
    if x > cells:
        x = cells
    i = int(x)
    if i > cells - 1:
        i = int(cells) - 1
    s = x - i
    r = i * int(N[N_NCOLS]) + col
    out = CC[r, which + 3] * s                     # _horner's order
    out += CC[r, which + 2]
    out *= s
    out += CC[r, which + 1]
    out *= s
    out += CC[r, which]
    return _clip(out, N[N_FLOOR], N[N_CEIL])


@inline
def _width(beta, q, p, M):
    """b = beta sqrt(ln T q (q - p)) with q - p clipped at 0 (numeric.tables._unchecked_state)."""
    gap = q - p
    if gap < 0.0:
        gap = 0.0
    return beta * math.sqrt(M[M_LOG_T] * q * gap)


@inline
def _y2_table(b, M):
    """numeric.tables.Y2Table.at_b."""
    if math.isinf(b):
        xi = 1.0
    else:
        xi = b / (b + M[M_Y2_SCALE])
    n1 = M[M_N1]
    x = xi * n1
    if x > n1:
        x = n1
    i = int(x)
    if i > n1 - 1:
        i = int(n1) - 1
    return _clip(_horner(M, int(M[M_Y2_CELLS]) + 4 * i, x - i), M[M_FLOOR], M[M_CEIL])


@inline
def _stretch(b):
    x = (1.0 + b) / 2.0
    return x / math.log(x + math.sqrt(x * x + 1.0))


@inline
def _yp_table(b, rho, M):
    """numeric.tables.YpTable._interpolate (b <= B_PAIR_MAX)."""
    nx, nw = M[M_NX], M[M_NW]
    x = b / (b + M[M_YP_SCALE])
    x *= M[M_YP_FACTOR]
    if x > nx:
        x = nx
    i = int(x)
    if i > nx - 1:
        i = int(nx) - 1
    s = x - i
    u = 1.0 - rho                                   # numeric.tables._w_of_rho
    if u < 0.0:
        u = 0.0
    u = math.sqrt(u)
    ku = _stretch(b) * u
    u -= ku
    u = 1.0 - u
    w = ku / u
    w *= nw
    if w > nw:
        w = nw
    j = int(w)
    if j > nw - 1:
        j = int(nw) - 1
    v = w - j
    base = int(M[M_YP_CELLS]) + 16 * (i * int(nw) + j)
    out = _horner(M, base + 12, v)
    for m in (2, 1, 0):
        out *= s
        out += _horner(M, base + 4 * m, v)
    return _clip(out, M[M_FLOOR], M[M_CEIL])


@inline
def Y2_finite(beta, q, p, T, M, N, CC, col):
    """E sum_s A_ts^2 at finite T as the reference path's bound moment function computes it."""
    if col >= 0 and q == 1.0 and p >= _n(N, N_P_LO, col):            # the columns cover the call
        return _column(p, col, N, CC, 0)
    return _y2_table(_width(beta, q, p, M), M)


@inline
def Yp_finite(beta, q, p, T, M, N, CC, col):
    """E sum_s A_ts A_t's at finite T; NaN where only the direct quadrature has it (b > B_PAIR_MAX)."""
    if col >= 0 and q == 1.0 and p >= _n(N, N_P_LO, col):
        return _column(p, col, N, CC, 4)
    b = _width(beta, q, p, M)
    if not b <= M[M_B_PAIR_MAX]:
        return math.nan
    return _yp_table(b, _clip01(p / q), M)


#: Rows of the per-point column constants of a finite-T kernel's look-up pass (column_setup).
K_C, K_PER_XI, K_PER_U, K_P_LO, K_ROWS = 0, 1, 2, 3, 4


@inline
def column_setup(C, N, CC, m):
    """What a finite-T row's look-up pass reads, fetched once per row instead of once per point and block:

    - K (K_ROWS, ROW): per point its column's c, per_xi, per_u and p_lo (p_lo = inf where beta has no
      column: never covered; placeholder constants 1 keep the cell index in the table);
    - KB (ROW, uint64): per point its column, the row of CC of its cell 0 (CC's row is cell * columns +
      column; an unsigned index: numba then emits no negative-index wraparound per load);
    - the scalars (scale, CELLS, CELLS - 1, columns) of :func:`column_cell` (no cells where there are no
      columns: the index stays 0, CC's one row, and every point goes to the general pass).
    """
    K = np.empty((K_ROWS, ROW))
    KB = np.zeros(ROW, np.uint64)
    for i in range(m):
        col = C[i]
        if col >= 0:
            K[K_C, i] = _n(N, N_C, col)
            K[K_PER_XI, i] = _n(N, N_PER_XI, col)
            K[K_PER_U, i] = _n(N, N_PER_U, col)
            K[K_P_LO, i] = _n(N, N_P_LO, col)
            KB[i] = np.uint64(col)
        else:
            K[K_C, i], K[K_PER_XI, i], K[K_PER_U, i], K[K_P_LO, i] = 1.0, 1.0, 1.0, math.inf
    ncols = int(N[N_NCOLS])
    cells = N[N_CELLS] if ncols > 0 else 0.0
    return K, KB, (N[N_SCALE], cells, np.uint64(max(int(cells) - 1, 0)), np.uint64(ncols))


@inline
def column_cell(q, p, K, KB, i, lk):
    """(row of CC, local coordinate s) of the cell of point i's column at overlap p: the arithmetic of
    :func:`_column` (and numeric.columns._Bound._gather) in the same order; s = NaN where the columns do not
    cover the call (q != 1 or p < p_lo), which makes the moments NaN and sends the point to the general pass.
    Branch-free and without gathers, so the compiler vectorises the loop over a row."""
    scale, cells, last, ncols = lk
    gap = 1.0 - p
    gap = gap if gap > 0.0 else 0.0
    u = math.sqrt(gap)
    xi = u * K[K_C, i]
    xi /= xi + scale
    xi *= K[K_PER_XI, i]
    u *= K[K_PER_U, i]
    x = u + xi
    x = x if x < cells else cells
    x = x if x >= 0.0 else 0.0                      # NaN -> 0: an index must stay in the table
    j = np.uint64(x)
    j = j if j < last else last
    s = x - j
    s = s if p >= K[K_P_LO, i] and q == 1.0 else math.nan
    return KB[i] + ncols * j, s


@inline
def column_scratch():
    """A finite-T row's per-layer look-up arrays: J (cell rows, from :func:`column_cell`), JG (the rows whose
    coefficients CF holds: none yet), S (local coordinates), CF (8, ROW) (the gathered coefficients)."""
    return (np.empty(ROW, np.uint64), np.full(ROW, np.uint64(2**63)), np.empty(ROW), np.empty((8, ROW)))


@inline
def column_gather(CF, J, JG, CC, m):
    """CF[k, i] = coefficient k of point i's cell (Y2's four, then Yp's): the one pass with data-dependent
    loads (which the compiler does not vectorise), kept to loads and stores, and skipped for a point whose
    cell is the one gathered in an earlier block (JG): a converging state stays in its cell. The Horner
    steps that read CF run in the vectorised block-update loop (:func:`column_moment`)."""
    for i in range(m):
        r = J[i]
        if r != JG[i]:
            JG[i] = r
            CF[0, i] = CC[r, 0]
            CF[1, i] = CC[r, 1]
            CF[2, i] = CC[r, 2]
            CF[3, i] = CC[r, 3]
            CF[4, i] = CC[r, 4]
            CF[5, i] = CC[r, 5]
            CF[6, i] = CC[r, 6]
            CF[7, i] = CC[r, 7]


@inline
def column_moment(CF, S, i, which, N):
    """Y2 (which = 0) or Yp (which = 4) of point i from its gathered cell: :func:`_horner` and :func:`_clip`
    to the columns' range in the same order (NaN where :func:`column_cell` found the point not covered)."""
    s = S[i]
    out = CF[which + 3, i] * s
    out += CF[which + 2, i]
    out *= s
    out += CF[which + 1, i]
    out *= s
    out += CF[which, i]
    return _clip(out, N[N_FLOOR], N[N_CEIL])


# --- Gauss-Hermite kernels (numeric.quadrature) ----------------------------------------

def gauss_hermite_nodes() -> tuple:
    """The rules of numeric.quadrature.NODE_LADDER as one tuple (bounds, z0, w0, z1, w1, z2, w2): the ``_G``
    argument of a kernel with an opaque activation kernel (built on first use: 320 nodes take a while)."""
    from .quadrature import NODE_LADDER, _nodes
    bounds = np.array([NODE_LADDER[0][0], NODE_LADDER[1][0]])
    return (bounds,) + tuple(a for _, n in NODE_LADDER for a in _nodes(n))


@inline
def gauss_hermite_rule(q, G):
    """(z, w) of the rule numeric.quadrature.nodes_for picks for pre-activation variance q."""
    if q <= G[0][0]:
        return G[1], G[2]
    if q <= G[0][1]:
        return G[3], G[4]
    return G[5], G[6]


@inline
def gauss_hermite_setup(q, c):
    """(sqrt q, rho, sqrt(1 - rho^2)) as numeric.quadrature._kernel_chunk forms them."""
    sq = math.sqrt(q if q > 0.0 else 0.0)
    rho = _clip1(c / q if q > 0.0 else 0.0)
    return sq, rho, math.sqrt(1.0 - rho * rho)


# --- rows of grid points ----------------------------------------------------------------

@inline
def load_row(P, values, offsets, lengths, strides, start, m):
    """Per-point parameter k of the row's points: values[offsets[k] + ((start + i) // strides[k]) % lengths[k]]."""
    for k in range(P.shape[0]):
        base, length, stride = offsets[k], lengths[k], strides[k]
        for i in range(m):
            P[k, i] = values[base + ((start + i) // stride) % length]


@inline
def store_row(rho, condensed, record, slot, depth_done, Q, X, flags, start, m):
    """Record rho = p/q (and the condensation so far) when ``depth_done`` is the next requested depth."""
    if slot < record.size and record[slot] == depth_done:
        for i in range(m):
            rho[slot, start + i] = X[i] / Q[i]
            condensed[slot, start + i] = flags[i] & 1
        return slot + 1
    return slot
