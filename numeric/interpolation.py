"""Chebyshev and cubic-Hermite interpolation on [0, 1], for the finite-T moment tables.

The tables (:mod:`numeric.tables`, :mod:`numeric.columns`) evaluate the exact
moments at a few Chebyshev-Lobatto nodes, interpolate them by one polynomial
(spectrally accurate for the smooth functions Y2(b) and Yp(b, rho) of the
paper's eqs. 2 and 22 at finite T), and resample that polynomial with its
derivative onto a fine uniform grid of cubic (1-D) or bicubic (2-D) Hermite
cells. A look-up is then one gather of a cell's coefficients and a Horner
evaluation, O(1) per point, instead of an O(nodes) polynomial evaluation.

The ``*_inplace`` helpers overwrite their inputs: they sit on the block maps'
hot path, where a temporary per call costs more than the arithmetic.
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial import chebyshev

#: Cubic Hermite basis: c = HERMITE @ (f0, f1, h f0', h f1') gives the coefficients of s^0..s^3 on a cell.
HERMITE = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0],
                    [-3.0, 3.0, -2.0, -1.0], [2.0, -2.0, 1.0, 1.0]])


def lobatto(n: int, lo: float, hi: float) -> np.ndarray:
    """n Chebyshev-Lobatto points on [lo, hi], increasing (the ends included)."""
    return lo + (hi - lo) * (1.0 - np.cos(np.pi * np.arange(n) / (n - 1))) / 2.0


def cheb_resample(values: np.ndarray, fine: np.ndarray):
    """Interpolate ``values`` (rows at the Chebyshev-Lobatto points of [0, 1]) at ``fine``.

    Returns the interpolating polynomial and its derivative at ``fine`` (in
    [0, 1]), for every column of ``values``: the inputs of :func:`cubic_cells`.
    """
    n = values.shape[0]
    coef = np.linalg.solve(chebyshev.chebvander(2.0 * lobatto(n, 0.0, 1.0) - 1.0, n - 1),
                           values.reshape(n, -1))
    x = 2.0 * fine - 1.0
    value = chebyshev.chebvander(x, n - 1) @ coef
    slope = chebyshev.chebvander(x, n - 2) @ (2.0 * chebyshev.chebder(coef))
    shape = (fine.size,) + values.shape[1:]
    return value.reshape(shape), slope.reshape(shape)


def cubic_cells(value, slope, h):
    """Per-cell cubic coefficients (c0..c3 in the local s in [0, 1]) from node values and slopes (spacing h)."""
    data = np.stack([value[:-1], value[1:], h * slope[:-1], h * slope[1:]], axis=-1)
    return data @ HERMITE.T


def bicubic_cells(f, fx, fw, fxw, hx, hw):
    """Per-cell bicubic coefficients a[i, j, m, n] of s^m v^n from corner values and derivatives."""
    corners = lambda a: np.stack([np.stack([a[:-1, :-1], a[:-1, 1:]], -1),
                                  np.stack([a[1:, :-1], a[1:, 1:]], -1)], -2)
    top = np.concatenate([corners(f), corners(fw) * hw], axis=-1)
    bottom = np.concatenate([corners(fx) * hx, corners(fxw) * hx * hw], axis=-1)
    data = np.concatenate([top, bottom], axis=-2)
    return HERMITE @ data @ HERMITE.T


def cell_inplace(x, n: int, scale: float = 1.0):
    """Cell index i in [0, n-2] and local coordinate s in [0, 1] of scale * x, x >= 0, on n points of [0, 1].

    x is overwritten by s (the look-ups' hot path allocates no temporary here).
    """
    x *= scale * (n - 1)
    np.minimum(x, n - 1, out=x)
    i = x.astype(np.intp)
    np.minimum(i, n - 2, out=i)
    x -= i
    return i, x


def horner_inplace(c, s):
    """sum_m c[m] s^m for the four cubic coefficients c[0..3], with one temporary."""
    out = c[3] * s
    out += c[2]
    out *= s
    out += c[1]
    out *= s
    out += c[0]
    return out


def bicubic(a, s, v):
    """sum_m s^m sum_n a[4 m + n] v^n for gathered cells a (16, n): Horner in v, then in s."""
    out = horner_inplace(a[12:16], v)
    for m in (2, 1, 0):
        out *= s
        out += horner_inplace(a[4 * m: 4 * m + 4], v)
    return out
