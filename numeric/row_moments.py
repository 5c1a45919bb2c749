"""Attention moments of a row with n keys, for every n at once: Y2(b, n) and Yp(b, rho, n).

A causal row t sees n_t = t + 1 keys (:mod:`derive.masks`), so a causal depth
profile needs the exact finite-n moments (paper eqs. 2 and 22, computed by
:mod:`numeric.laplace`) at every n from 1 to T, not at one T as the encoder's
tables (:mod:`numeric.tables`). Both moments depend on the row through
b = beta sqrt(ln T Q_tt (qbar - pbar)) (the spread of its log-weights), on the
correlation rho of two rows' scores (Yp), and on n. They are smooth in
lambda = ln n, in xi = b/(b + sqrt(2 ln n)) (which resolves the condensation
crossover near b = sqrt(2 ln n), eq. 15) and in the stretched sqrt(1 - rho) of
:mod:`numeric.tables`, so one tensor-product Chebyshev-Lobatto interpolant per
moment covers n in [2, N_MAX]:

- Y2 on (lambda, xi in [0, 1]) — b = oo included (Y2 = 1);
- Yp on (lambda, xi in [0, xi(B_MAX)], w in [0, 1]).

The node values are computed once by ``python -m numeric.row_moments`` (a few
minutes) and shipped as ``numeric/data/row_moments.npz``;
tests/numeric/test_row_moments.py recomputes nodes and checks the interpolant
between them against :mod:`numeric.laplace`. A causal profile evaluates them
per row (:class:`RowMoments`): Y2 at (b_t, n_t), and Yp as a function of rho on a
fine cubic-Hermite grid per row, so that each pair of rows costs one look-up.
n = 1 is exact: a row with one key puts all its weight on it (Y2 = Yp = 1).
"""

from __future__ import annotations

import math
import pathlib
from functools import lru_cache

import numpy as np

from .interpolation import cubic_cells, horner_inplace, cell_inplace, lobatto
from .tables import _rho_of_w, _stretch

DATA = pathlib.Path(__file__).with_name("data") / "row_moments.npz"
#: Largest number of keys covered (2^20); beyond it the profile is refused by name.
N_MAX = 2**20
#: Largest b of the pair-term interpolant; rows beyond it get their nodes from numeric.laplace directly.
B_MAX = 40.0
#: Chebyshev-Lobatto nodes: lambda = ln n, xi of Y2, xi of Yp, w of Yp.
NODES = dict(lam=33, xi_y2=97, xi_yp=41, w=21)
#: Fine grid of Yp in w per row (cubic Hermite cells).
W_FINE = 129


def _u_of_n(n):
    """u = (ln n - ln 2)/(ln N_MAX - ln 2) in [0, 1]."""
    return (np.log(n) - math.log(2.0)) / (math.log(N_MAX) - math.log(2.0))


def _z(n):
    """sqrt(2 ln n), the condensation point of a row of n keys in b."""
    return np.sqrt(2.0 * np.log(n))


def _xi_max(n):
    return B_MAX / (B_MAX + _z(n))


def node_n() -> np.ndarray:
    """The n at the lambda nodes (real numbers: the Laplace representations hold for real n)."""
    return np.exp(math.log(2.0) + lobatto(NODES["lam"], 0.0, 1.0) * (math.log(N_MAX) - math.log(2.0)))


def compute_nodes(progress=None) -> dict:
    """The node values of both interpolants, by the quadratures of :mod:`numeric.laplace` (TABLE accuracy)."""
    from .laplace import pair_moment, row_moments
    from .smoothing import TABLE

    ns = node_n()
    y2 = np.empty((ns.size, NODES["xi_y2"]))
    yp = np.empty((ns.size, NODES["xi_yp"], NODES["w"]))
    w = lobatto(NODES["w"], 0.0, 1.0)
    for i, n in enumerate(ns):
        xi = lobatto(NODES["xi_y2"], 0.0, 1.0)
        b = _b(xi, n)
        y2[i] = [1.0 if np.isinf(bb) else 1.0 / n if bb == 0 else row_moments(bb, n, acc=TABLE)[2.0] for bb in b]
        for j, bb in enumerate(_b(lobatto(NODES["xi_yp"], 0.0, float(_xi_max(n))), n)):
            yp[i, j] = _pair_row(float(bb), float(n), w, pair_moment, TABLE)
        if progress is not None:
            progress(i + 1, ns.size)
    return {"n": ns, "y2": y2, "yp": yp}


def _b(xi, n):
    """b = sqrt(2 ln n) xi/(1 - xi) (xi = 1 -> oo)."""
    xi = np.asarray(xi, dtype=float)
    with np.errstate(divide="ignore"):
        return np.where(xi < 1.0, _z(n) * xi / np.maximum(1.0 - xi, 0.0), np.inf)


def _pair_row(b, n, w, pair_moment, acc):
    """Yp at width b over the w nodes: rho = 1 gives Y2 (first node), rho = 0 or b = 0 give 1/n."""
    from .laplace import row_moments
    values = np.full(w.size, 1.0 / n)
    if b > 0:
        values[0] = row_moments(b, n, acc=acc)[2.0]
        values[1:-1] = [pair_moment(b, float(rho), n, acc) for rho in _rho_of_w(w[1:-1], b)]
    return values


def write(path=DATA, progress=None) -> pathlib.Path:
    """Compute the node values and save them (``python -m numeric.row_moments``)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **compute_nodes(progress), nodes=np.array([NODES[k] for k in NODES]),
                        n_max=N_MAX, b_max=B_MAX)
    return path


@lru_cache(maxsize=1)
def _shipped() -> dict:
    """The shipped node values, checked against this module's grid."""
    with np.load(DATA) as data:
        stored = {k: data[k] for k in data.files}
    if (list(stored["nodes"]) != list(NODES.values()) or float(stored["n_max"]) != N_MAX
            or float(stored["b_max"]) != B_MAX):
        raise RuntimeError(f"{DATA} was computed on another grid: run python -m numeric.row_moments")
    return stored


def lagrange(x, n_nodes: int) -> np.ndarray:
    """The Lagrange basis of the n Chebyshev-Lobatto nodes of [0, 1] at points x: shape (len(x), n).

    Barycentric form with the weights (-1)^j, halved at the ends; exact at the nodes.
    """
    nodes = lobatto(n_nodes, 0.0, 1.0)
    weights = (-1.0) ** np.arange(n_nodes)
    weights[[0, -1]] *= 0.5
    x = np.atleast_1d(np.asarray(x, dtype=float))[:, None]
    diff = x - nodes
    hit = diff == 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = weights / diff
        basis = terms / terms.sum(axis=1, keepdims=True)
    rows = hit.any(axis=1)
    basis[rows] = hit[rows].astype(float)
    return basis


class RowMoments:
    """Y2 and Yp of rows with n keys (n >= 1, arrays), from the shipped interpolants.

    ``y2(b, n)``: E sum_s A_s^2 for rows of width b and n keys. ``pair(b, n)`` returns
    a :class:`PairRows`: per row, Yp(b_t, rho, n_t) as a function of rho.
    """

    def __init__(self):
        data = _shipped()
        self._y2, self._yp = data["y2"], data["yp"]
        self._yp_flat = np.ascontiguousarray(self._yp.reshape(self._yp.shape[0], -1))   # (lambda, xi * w)

    def y2(self, b, n):
        """Y2(b, n), b >= 0 (oo allowed), n >= 1 (broadcast)."""
        b, n = np.broadcast_arrays(np.asarray(b, dtype=float), np.asarray(n, dtype=float))
        shape, b, n = b.shape, b.ravel(), n.ravel()
        out = np.ones(b.size)
        many = n >= 2
        if many.any():
            bb, nn = b[many], n[many]
            with np.errstate(invalid="ignore"):
                xi = np.where(np.isinf(bb), 1.0, bb / (bb + _z(nn)))
            by_n = lagrange(_u_of_n(nn), NODES["lam"]) @ self._y2           # (points, xi nodes)
            out[many] = np.einsum("px,px->p", by_n, lagrange(xi, NODES["xi_y2"]))
        return np.clip(out, 0.0, 1.0).reshape(shape)

    def pair(self, b, n):
        """Per row (1-D arrays b, n): Yp as a function of rho (:class:`PairRows`)."""
        b, n = np.broadcast_arrays(np.asarray(b, dtype=float).ravel(), np.asarray(n, dtype=float).ravel())
        w_nodes = np.empty((b.size, NODES["w"]))
        one = n < 2
        w_nodes[one] = 1.0
        inside = ~one & (b <= B_MAX)
        if inside.any():
            bb, nn = b[inside], n[inside]
            by_n = (lagrange(_u_of_n(nn), NODES["lam"]) @ self._yp_flat).reshape(nn.size, *self._yp.shape[1:])
            x = (bb / (bb + _z(nn))) / _xi_max(nn)
            w_nodes[inside] = np.einsum("rxw,rx->rw", by_n, lagrange(x, NODES["xi_yp"]))
        for k in np.nonzero(~one & (b > B_MAX))[0]:
            from .laplace import pair_moment
            from .smoothing import TABLE
            w_nodes[k] = _pair_row(float(b[k]), float(n[k]), lobatto(NODES["w"], 0.0, 1.0), pair_moment, TABLE)
        return PairRows(b, w_nodes)


class PairRows:
    """Yp(b_t, rho, n_t) per row t as a function of rho: Chebyshev in w resampled to cubic Hermite cells."""

    def __init__(self, b, w_nodes):
        from .interpolation import cheb_resample
        self.b = b
        self.kappa = _stretch(b)                                            # the rho coordinate's stretch per row
        fine = np.linspace(0.0, 1.0, W_FINE)
        value, slope = cheb_resample(w_nodes.T, fine)                       # (W_FINE, rows)
        self._cells = np.ascontiguousarray(np.moveaxis(cubic_cells(value, slope, 1.0 / (W_FINE - 1)), 1, 0))

    def at(self, rows, rho):
        """Yp of rows ``rows`` (index array) at correlations ``rho`` in [0, 1] (same shape)."""
        u = np.sqrt(1.0 - np.clip(rho, 0.0, 1.0))                          # w of numeric.tables, per row's kappa
        ku = self.kappa[rows] * u
        w = ku / (1.0 - u + ku)
        i, s = cell_inplace(w, W_FINE)
        coeffs = self._cells[rows, i]                                       # (..., 4)
        return np.clip(horner_inplace(np.moveaxis(coeffs, -1, 0), s), 0.0, 1.0)


def main() -> None:
    """Compute and write the shipped node values, with a progress line per n node."""
    import sys

    def progress(done, total):
        print(f"\rrow moments: {done}/{total} n nodes", end="", file=sys.stderr, flush=True)

    path = write(progress=progress)
    print(f"\nwrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
