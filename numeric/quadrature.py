"""Gauss–Hermite quadrature of Gaussian kernels K(q, c) = E[phi(u) phi(v)] (paper eqs. 35-36).

Used for activations without a closed form (tanh). The integrand is the
activation's NumPy form ``_generated.ACTIVATION_FUNCTIONS[name]``, printed by
:mod:`numeric.codegen` from derive's SymPy definition, so no SymPy is needed at
run time. With u = sqrt(q) z1 and v = sqrt(q) (rho z1 + sqrt(1 - rho^2) z2),
rho = c/q, the expectation is a 2-D integral over independent standard
normals, done on a tensor grid of probabilists' Gauss–Hermite nodes;
vectorised over any array of (q, c).

phi(sqrt(q) z) sharpens as q grows (tanh's poles approach the real z axis as
pi/(2 sqrt q)), so the node count grows with the largest q of a call
(:func:`nodes_for`). Measured against mpmath at 20-30 digits
(tests/numeric/test_quadrature.py), absolute error for tanh:

    q <= 1.5: < 1e-10      q <= 4: < 1e-9      q <= 12: < 1e-6
    q <= 25: < 1e-4        q <= 100: < 3e-4

(NumPy's Gauss–Hermite nodes overflow beyond ~360 nodes, which caps the
accuracy at large q; pre-activation variances above ~10 mean a saturated
tanh, where the kernel is close to its sign-function limit anyway.)
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from . import validation as check
from ._generated import ACTIVATION_FUNCTIONS
from .safe import NORM_SPREAD

#: (largest q, nodes per dimension): the smallest rule meeting the bounds in the module docstring.
NODE_LADDER = ((1.5, 96), (4.0, 256), (np.inf, 320))
#: Evaluations of phi held in memory at once (points x nodes^2).
BUDGET = 2**22


def nodes_for(q_max: float) -> int:
    """Gauss–Hermite nodes per dimension for pre-activation variances up to ``q_max``."""
    return next(n for bound, n in NODE_LADDER if q_max <= bound)


@lru_cache(maxsize=None)
def _nodes(n: int):
    z, w = np.polynomial.hermite_e.hermegauss(n)
    return z, w / np.sqrt(2.0 * np.pi)


def gaussian_kernel(name: str, nodes: int | None = None):
    """A vectorised ``K(q, c)`` for activation ``name`` by Gauss–Hermite quadrature.

    ``nodes=None`` picks the rule from the largest q of each call (:func:`nodes_for`).
    """
    phi = ACTIVATION_FUNCTIONS[check.activation(name)]

    def kernel(q, c):
        q, c = np.broadcast_arrays(np.asarray(q, dtype=float), np.asarray(c, dtype=float))
        out = np.empty(q.shape)
        flat_q, flat_c, flat_out = q.ravel(), c.ravel(), out.ravel()
        n = nodes or nodes_for(float(flat_q.max()) if flat_q.size else 0.0)
        z, w = _nodes(n)
        if nodes is None and _band(phi, z, w, flat_q, flat_c, flat_out):
            return out if out.ndim else float(out)
        chunk = max(1, BUDGET // (n * n))
        for start in range(0, flat_q.size, chunk):
            sl = slice(start, start + chunk)
            flat_out[sl] = _kernel_chunk(phi, z, w, flat_q[sl], flat_c[sl])
        return out if out.ndim else float(out)

    kernel.__name__ = f"{name}_kernel"
    kernel.__doc__ = f"E[{name}(u) {name}(v)], Var u = Var v = q, Cov(u, v) = c (Gauss–Hermite)."
    return kernel


def _kernel_chunk(phi, z, w, q, c):
    sq = np.sqrt(np.maximum(q, 0.0))[:, None]
    rho = np.clip(np.where(q > 0, c / np.where(q > 0, q, 1.0), 0.0), -1.0, 1.0)[:, None]
    u = phi(sq * z[None, :])                                        # (n_points, n)
    along = rho[:, :, None] * z[None, :, None]                       # rho z1
    across = np.sqrt(1.0 - rho**2)[:, :, None] * z[None, None, :]    # sqrt(1-rho^2) z2
    v = phi(sq[:, :, None] * (along + across))                       # (n_points, n, n)
    inner = v @ w                                                    # E_z2, (n_points, n)
    return (u * inner) @ w


#: Points of one call above which its variances are served from tables (the position-resolved maps call a
#: kernel on T x T entries whose variances agree to NORM_SPREAD within one point of a batch).
BAND_POINTS = 2048
#: The tables tile q on a fixed geometric grid, tile k = [e^(k h), e^((k+1) h)] with h = ln(1 + NORM_SPREAD), so
#: that every call whose variances fall in the same tiles (the layers of a deep stack behind a norm, the points
#: of a batch) shares them (:func:`_band_table`, cached); a call spanning more than BAND_MAX_TILES tiles, or with
#: q beyond BAND_Q_MAX, is integrated point by point.
BAND_LOG_WIDTH = math.log1p(NORM_SPREAD)
BAND_MAX_TILES = 16
BAND_Q_MAX = 4.0
#: Chebyshev-Lobatto nodes of a tile's table: in q across the tile, and in rho = c/q on [-1, 1]. Six in q
#: interpolate gelu_new, silu and tanh over a 10 % tile to 3e-11 (four: 6e-8, above BAND_TOL).
BAND_NODES = (6, 49)
#: The tables are checked against the rule itself at BAND_CHECKS points of the call; a larger error
#: than BAND_TOL sends the whole call through the rule.
BAND_CHECKS, BAND_TOL = 16, 1e-9


@lru_cache(maxsize=256)
def _band_table(phi, n: int, tile: int) -> np.ndarray:
    """K at tile ``tile``'s Chebyshev-Lobatto nodes (q across the tile) x (rho in [-1, 1]) by the n-node rule."""
    from .interpolation import lobatto

    z, w = _nodes(n)
    n_q, n_rho = BAND_NODES
    lo, hi = _tile_ends(tile)
    q_nodes = lo + (hi - lo) * lobatto(n_q, 0.0, 1.0)
    grid_q, grid_rho = np.meshgrid(q_nodes, lobatto(n_rho, -1.0, 1.0), indexing="ij")
    return _kernel_chunk(phi, z, w, grid_q.ravel(), (grid_q * grid_rho).ravel()).reshape(n_q, n_rho)


def _tile_ends(tile: int):
    return math.exp(tile * BAND_LOG_WIDTH), math.exp((tile + 1) * BAND_LOG_WIDTH)


def _band(phi, z, w, q, c, out) -> bool:
    """Fill ``out`` from the tables of K on the tiles of q the call touches (Chebyshev-Lobatto in q and in rho),
    if the call is large, its q within (0, BAND_Q_MAX] on at most BAND_MAX_TILES tiles, and the tables, checked at
    BAND_CHECKS of its points and one in every tile, within BAND_TOL of the rule. The same rule integrates the tables' nodes, so tables
    that pass agree with the direct evaluation."""
    from .row_moments import lagrange

    if q.size < BAND_POINTS or not (q.min() > 0 and q.max() <= BAND_Q_MAX):
        return False
    tile = np.floor(np.log(q) / BAND_LOG_WIDTH).astype(np.int64)
    tiles = np.unique(tile)
    if tiles.size > BAND_MAX_TILES:
        return False
    n_q, n_rho = BAND_NODES
    rho = np.clip(c / q, -1.0, 1.0)
    values = np.empty(q.size)
    step = 1 << 14
    for k in tiles:
        table = _band_table(phi, z.size, int(k))
        lo, hi = _tile_ends(int(k))
        members = np.nonzero(tile == k)[0]
        for start in range(0, members.size, step):
            idx = members[start:start + step]
            by_q = lagrange((q[idx] - lo) / (hi - lo), n_q) @ table
            values[idx] = np.einsum("pr,pr->p", by_q, lagrange((rho[idx] + 1.0) / 2.0, n_rho))
    first_of_tile = np.unique(tile, return_index=True)[1]            # every tile's table is checked
    probe = np.union1d(np.linspace(0, q.size - 1, BAND_CHECKS).astype(int), first_of_tile)
    if np.max(np.abs(values[probe] - _kernel_chunk(phi, z, w, q[probe], c[probe]))) > BAND_TOL:
        return False
    out[:] = values
    return True
