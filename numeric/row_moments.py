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
per row (:class:`RowMoments`): Y2 at (b_t, n_t), and Yp as a Chebyshev series in
w per row (its lambda direction contracted once per key count, its xi direction
once per row and block), so that each pair of rows costs one Clenshaw sum.
n = 1 is exact: a row with one key puts all its weight on it (Y2 = Yp = 1).
"""

from __future__ import annotations

import math
import pathlib
from functools import lru_cache

import numpy as np

from .interpolation import lobatto
from .tables import _rho_of_w, _stretch

DATA = pathlib.Path(__file__).with_name("data") / "row_moments.npz"
#: Largest number of keys covered (2^20); beyond it the profile is refused by name.
N_MAX = 2**20
#: Largest b of the pair-term interpolant; rows beyond it get their nodes from numeric.laplace directly.
B_MAX = 40.0
#: Chebyshev-Lobatto nodes: lambda = ln n, xi of Y2, xi of Yp, w of Yp.
NODES = dict(lam=33, xi_y2=97, xi_yp=41, w=21)


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

    Barycentric form with the weights (-1)^j, halved at the ends; exact at the nodes. It sits on the causal
    profiles' hot path (once per row and block), so it makes one array and overwrites it."""
    nodes, weights = _barycentric(n_nodes)
    x = np.atleast_1d(np.asarray(x, dtype=float))[:, None]
    terms = x - nodes
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(weights, terms, out=terms)                               # +-oo where x is a node
        total = terms.sum(axis=1, keepdims=True)
        terms /= total
    hit = np.isinf(total[:, 0])
    if hit.any():
        terms[hit] = (x[hit] == nodes).astype(float)
    return terms


@lru_cache(maxsize=8)
def _barycentric(n_nodes: int):
    nodes = lobatto(n_nodes, 0.0, 1.0)
    weights = (-1.0) ** np.arange(n_nodes)
    weights[[0, -1]] *= 0.5
    return nodes, weights


class RowMoments:
    """Y2 and Yp of rows with n keys (n >= 1, arrays), from the shipped interpolants.

    ``y2(b, n)``: E sum_s A_s^2 for rows of width b and n keys. ``pair(b, n)`` returns
    a :class:`PairRows`: per row, Yp(b_t, rho, n_t) as a function of rho.
    """

    def __init__(self):
        data = _shipped()
        self._y2, self._yp = data["y2"], data["yp"]
        self._yp_flat = np.ascontiguousarray(self._yp.reshape(self._yp.shape[0], -1))   # (lambda, xi * w)

    def y2_table(self, n) -> np.ndarray:
        """Per key count (1-D n): Y2 at the xi nodes, (len(n), xi nodes); the lambda direction contracted once
        (rows with one key are never read: Y2 = 1)."""
        n = np.asarray(n, dtype=float).ravel()
        return lagrange(_u_of_n(np.maximum(n, 2.0)), NODES["lam"]) @ self._y2

    def y2(self, b, n, table=None):
        """Y2(b, n), b >= 0 (oo allowed), n >= 1 (broadcast).

        ``table``: :meth:`y2_table` of the key counts along b's last axis (then n is those counts, the rows of
        a causal state), so that only the xi direction is evaluated per point."""
        b = np.asarray(b, dtype=float)
        if table is None:
            b, n = np.broadcast_arrays(b, np.asarray(n, dtype=float))
            shape, b, n = b.shape, b.reshape(1, -1), n.ravel()
            table = self.y2_table(n)
        else:
            shape, n = b.shape, np.asarray(n, dtype=float)
            b = b.reshape(-1, n.size)
        with np.errstate(invalid="ignore"):
            xi = np.where(np.isinf(b), 1.0, b / (b + _z(np.maximum(n, 2.0))))
        basis = lagrange(xi.ravel(), NODES["xi_y2"]).reshape(b.shape + (-1,))
        out = np.where(n >= 2, np.einsum("brx,rx->br", basis, table), 1.0)
        return np.clip(out, 0.0, 1.0).reshape(shape)

    def pair_table(self, n) -> np.ndarray:
        """Per row of n keys (1-D n): Yp's Chebyshev coefficients in w at the xi nodes, (rows, xi nodes, w).

        The lambda direction is contracted here, once per n: a causal state's rows keep their key counts over
        every block and grid point, so :meth:`pair_rows` then costs one xi contraction per row. Rows with one
        key are Yp = 1 (the constant coefficient alone)."""
        n = np.asarray(n, dtype=float).ravel()
        table = np.zeros((n.size, NODES["xi_yp"], NODES["w"]))
        table[:, :, 0] = 1.0
        many = n >= 2
        if many.any():
            by_n = (lagrange(_u_of_n(n[many]), NODES["lam"]) @ self._yp_flat).reshape(-1, *self._yp.shape[1:])
            table[many] = by_n @ _TO_CHEB.T
        return table

    def pair_rows(self, b, n, table) -> "PairRows":
        """Per row of the points b (batch, rows) with key counts n (rows,) and their :meth:`pair_table`: Yp as a
        function of rho (:class:`PairRows`, rows flattened batch-major)."""
        b = np.asarray(b, dtype=float)
        n = np.broadcast_to(np.asarray(n, dtype=float), b.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            x = np.where(n >= 2, (b / (b + _z(n))) / _xi_max(n), 0.0)
        basis = lagrange(np.clip(x, 0.0, 1.0).ravel(), NODES["xi_yp"]).reshape(b.shape + (-1,))
        coef = np.matmul(np.swapaxes(basis, 0, 1), table)                    # (rows, batch, w)
        coef = np.ascontiguousarray(np.swapaxes(coef, 0, 1)).reshape(-1, NODES["w"])
        b, n = b.ravel(), n.ravel()
        for k in np.nonzero((n >= 2) & (b > B_MAX))[0]:
            from .laplace import pair_moment
            from .smoothing import TABLE
            coef[k] = _TO_CHEB @ _pair_row(float(b[k]), float(n[k]), lobatto(NODES["w"], 0.0, 1.0), pair_moment,
                                           TABLE)
        return PairRows(b, coef)

    def pair(self, b, n) -> "PairRows":
        """Per row (1-D arrays b, n): Yp as a function of rho (:class:`PairRows`)."""
        b, n = np.broadcast_arrays(np.asarray(b, dtype=float).ravel(), np.asarray(n, dtype=float).ravel())
        return self.pair_rows(b[None, :], n, self.pair_table(n))


#: Values at the Chebyshev-Lobatto nodes of [0, 1] -> Chebyshev coefficients in 2w - 1 (the w direction of Yp).
_TO_CHEB = np.linalg.inv(np.polynomial.chebyshev.chebvander(2.0 * lobatto(NODES["w"], 0.0, 1.0) - 1.0,
                                                            NODES["w"] - 1))


class PairRows:
    """Yp(b_t, rho, n_t) per row t as a function of rho: a Chebyshev series in w (``coef``, (rows, W)), where
    sqrt(1 - rho) = w/(w + kappa_t (1 - w)) (:func:`numeric.tables._stretch`), evaluated by Clenshaw's
    recurrence, as the fused pair loop (:mod:`numeric._causal_jit`) does."""

    def __init__(self, b, coef):
        self.b = b
        self.kappa = _stretch(b)                                            # the rho coordinate's stretch per row
        self.coef = coef

    def at(self, rows, rho):
        """Yp of rows ``rows`` (index array) at correlations ``rho`` in [0, 1] (same shape)."""
        u = np.sqrt(1.0 - np.clip(rho, 0.0, 1.0))
        ku = self.kappa[rows] * u
        y = 2.0 * (ku / (1.0 - u + ku)) - 1.0
        two_y = 2.0 * y
        upper, lower = np.zeros_like(y), np.zeros_like(y)                   # b_{k+1}, b_{k+2}
        for k in range(self.coef.shape[1] - 1, 0, -1):
            upper, lower = self.coef[rows, k] + two_y * upper - lower, upper
        return np.clip(self.coef[rows, 0] + y * upper - lower, 0.0, 1.0)


def main() -> None:
    """Compute and write the shipped node values, with a progress line per n node."""
    import sys

    def progress(done, total):
        print(f"\rrow moments: {done}/{total} n nodes", end="", file=sys.stderr, flush=True)

    path = write(progress=progress)
    print(f"\nwrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
