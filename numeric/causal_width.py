"""Finite width in the position-resolved theory: the O(1/d) terms of a masked attention layer, row by row (issue 19).

The position-resolved closure (:mod:`numeric.causal`) takes each row's IPR Y2(b_t, n_t) and the pair term
of rows t < u at infinite width. At width d with heads of d_h features the derivation of
:mod:`derive.finite_width` holds for rows with their own key sets (n shared keys, m1 and m2 of each row's
own; :func:`derive.finite_width.selection_mixed_integrands`). For Gaussian tokens of overlaps (q, p) one
masked layer gives

    q_out(t)  = sigma_v2 (p + (q - p) Y2_eff(b_t, n_t)),
    p_out(tu) = sigma_v2 (p + (q - p) Yp_eff(b, rho, n, m1, m2))

(:func:`numeric.finite_width.masked_overlaps`, checked against torch). The closure keeps its own
infinite-width terms and adds the increments

    dY2_t  = Y2_eff(b_t, n_t) - Y2(b_t, n_t),
    dYp_tu = Yp_eff(b_t, rho_tu; n, m1, m2) - Yp(b_t, rho_tu; n, m1, m2),

each times the spread qbar_t - pbar_t of row t's keys (the (q - p) of the closure's class means): at
d -> oo it is the infinite-width closure, and one layer of Gaussian tokens gets the exact finite-width
increments. As the closure, the pair uses row t's width b_t for both rows.

Cost. Directly, a row costs 16 one-row moments (~3 ms) and a pair one Gauss rule over the score law
(:data:`N_PAIR_PROFILE`, 48 two-row integrals, ~0.07 s; Yp_eff within 5e-4 relative of the full rule
:data:`numeric.finite_width.N_PAIR` at d = 64, 2e-3 at d = 32). Under a causal mask the rows' key sets are
nested prefixes, so an increment depends on (n_t, n_u, b, rho) only: :class:`CausalTables` evaluates the
direct increments once per (d, d_head, T) at Chebyshev-Lobatto nodes in (ln n_t, ln(n_t/n_u), b, rho) (the
integrals' analytic continuation in the key counts), 2625 pairs (2.7 minutes on two cores), kept on disk (those of
:data:`numeric.shipped.CAUSAL` come with the package); a look-up is then a
polynomial evaluation, so causal profiles carry up to :data:`MAX_TABLE_POSITIONS` positions and
critical_alpha and diagrams take ``d=``. Sliding windows (other key layouts) use the direct increments,
for at most :data:`MAX_POSITIONS` carried positions (profiles only).

Normalized tokens (``inputs="normalized"``, causal mask): the tables hold the increments of tokens of fixed
norm (:func:`numeric.finite_width.row_effective` and ``pair_effective`` with that input), the rows' at the
keys' input cosine rho = pbar_t/qbar_t as a third axis, and each row's pulls (X, J, scale) of
:func:`numeric.finite_width.row_pulls`, from which :class:`WidthTerms` adds the common direction's share
(derive.finite_width step 6). Building them costs about twice the Gaussian tables.

The increments vanish like b^2 as a row's scores flatten (no selection at b = 0) and saturate in the frozen
phase, so the tables hold increment / :func:`selection_scale` (b^2/(1 + b^2)), which the Chebyshev series
follow to ~1e-3 relative at every b: a series of the increments themselves is good to ~1e-3 of their largest
value only, which near rho -> 1 on an encoder's diagonal (b^2 ~ 1 - rho) was +70 % of the pair's and larger
than the row - pair difference that 1 - rho_out is made of. The rows' pulls vanish like b^2 too and are held
the same way (:data:`HELD_OVER`).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numpy.polynomial import chebyshev

from .interpolation import lobatto
from .progress import progress

#: Gauss nodes of the pair's score-law average in a profile (numeric.width_law.pair_rule): within 5e-4 relative of
#: numeric.finite_width.N_PAIR at d = 64, b^2 = 2-16, rho = 0-0.7, causal key layouts; 2e-3 at d = 32
#: (tests/numeric/test_causal_width.py).
N_PAIR_PROFILE = (2, 2, 2, 2, 3)
#: Most carried positions with direct increments (sliding windows): beyond it a profile is refused by name.
MAX_POSITIONS = 64
#: Most carried positions with the causal tables (the pairs' look-ups grow as P^2 per point and layer).
MAX_TABLE_POSITIONS = 512
#: Chebyshev-Lobatto nodes of the causal tables: rows in (ln n, b), pairs in (ln n_t, ln(n_t/n_u), b, rho)
#: (the pair increment grows like ln(n_u/n_t) when row u sees many more keys). 15 nodes in b hold the pair's
#: increment/selection_scale within 1.5e-3 relative on b in [0.05, 11] (9 nodes: 3.8e-2; tests/numeric/
#: test_causal_width.py). The rows' IPR increment turns from ~b^4 to O(1) where the row condenses: 25 nodes in b
#: hold it within 3e-5 of the IPR (15 nodes: 1.6e-2, at b = 0.8, n = 1024); rows are cheap (1125 nodes).
ROW_NODES = (9, 25)
PAIR_NODES = (7, 5, 15, 5)
#: Row widths beyond which the tables read the increment at B_MAX (the frozen phase: it varies by O(1/b) there).
B_MAX = 12.0
#: Version of the cached causal tables (bump when their definition changes). 3: increments over selection_scale,
#: 15 pair nodes in b.
VERSION = 3
#: The width at which a node at b = 0 reads its increment's b -> 0 limit: increment/b^2 there is within 2e-4
#: relative of the limit (measured at b = 1e-3 to 0.03).
B_ZERO = 0.01


def width_square(b):
    """b'^2 at b' = min(b, B_MAX): the rows' width as the tables read it, squared."""
    return np.square(np.minimum(np.asarray(b, dtype=float), B_MAX))


def selection_scale(b):
    """b'^2/(1 + b'^2) at b' = min(b, B_MAX): the factor the tables' increments are held over (module docstring):
    the increments vanish like b^2 as a row's scores flatten and saturate in the frozen phase."""
    b2 = width_square(b)
    return b2 / (1.0 + b2)


def row_increments(b: float, n: float, d: int, d_head: int, inputs: str = "gaussian",
                   rho: float = 0.0) -> tuple[float, float]:
    """(dY2, dIPR) of a row of n keys (real n >= 1: the analytic continuation) and width b: Y2_eff - Y2, the
    increment of the output norm, and E_xi Y2 - Y2, the increment of the IPR entropy collapse is judged on.
    ``inputs="normalized"``: tokens of fixed norm at input cosine ``rho`` (numeric.finite_width.row_effective)."""
    from .finite_width import _one_row, row_effective
    from .smoothing import EXACT
    if n <= 1 or b == 0.0:                              # one key, or uniform weights: no selection
        return 0.0, 0.0
    ipr, effective = row_effective(b * b, n, d, d_head, inputs=inputs, rho=min(max(rho, 0.0), RHO_MAX))
    y2 = _one_row(b, n, EXACT)[0]
    return effective - y2, ipr - y2


#: Largest input cosine of the tables' nodes, rows and pairs (the keys' law is Gaussian at rho = 1).
RHO_MAX = 1.0 - 1e-6


def row_node(b: float, n: float, d: int, d_head: int, inputs: str, rho: float) -> tuple[float, ...]:
    """One node of the rows' table, its :data:`ROW_CHANNELS` each over what :data:`HELD_OVER` names (for b = 0
    their b -> 0 limit, read at :data:`B_ZERO`): (dY2, dIPR) of :func:`row_increments` and the row's pulls
    (X, J, scale) of :func:`numeric.finite_width.row_pulls` at real n (the common direction's share of normalized
    tokens; zero for Gaussian tokens, which read no pulls)."""
    from .finite_width import row_pulls
    at = _node_width(b)
    pulls = row_pulls(at * at, n) if n > 1 and inputs == "normalized" else (0.0, 0.0, 0.0)
    values = row_increments(at, n, d, d_head, inputs, rho) + pulls
    return tuple(value / float(_held_over(kind, at)) for kind, value in zip(ROW_CHANNELS, values))


def pair_increment(b: float, rho: float, keys, d: int, d_head: int, whole: bool = True,
                   inputs: str = "gaussian") -> float:
    """dYp = Yp_eff - Yp of rows with key counts ``keys`` = (n, m1, m2) at row width b and query correlation
    rho (``whole=False``: real counts, as the tables' nodes; ``inputs``: as
    :func:`numeric.finite_width.pair_effective`, with the keys' input cosine rho)."""
    from .finite_width import pair_effective
    from .smoothing import TABLE
    from .two_rows import pair_and_selection
    if b == 0.0:                                        # uniform weights: no selection
        return 0.0
    rho = min(max(rho, 0.0), RHO_MAX)
    b2 = b * b
    effective = pair_effective(b2, rho, None, d, d_head, keys=keys, nodes=N_PAIR_PROFILE, whole=whole,
                               inputs=inputs)
    return effective - pair_and_selection(b2, b2, rho * b2, None, TABLE, keys=keys, whole=whole)[0]


# --- the causal tables ---------------------------------------------------------------------------

class Chebyshev:
    """The tensor-product Chebyshev interpolant on [0, 1]^k of values at the Lobatto nodes (``values``' shape:
    nodes per axis; an axis of one node is constant)."""

    def __init__(self, values: np.ndarray):
        coef = np.asarray(values, dtype=float)
        for axis, n in enumerate(coef.shape):
            if n > 1:
                inverse = np.linalg.inv(chebyshev.chebvander(2.0 * lobatto(n, 0.0, 1.0) - 1.0, n - 1))
                coef = np.moveaxis(np.tensordot(inverse, coef, axes=(1, axis)), 0, axis)
        self.coef = coef

    def __call__(self, *x, chunk: int = 1 << 15) -> np.ndarray:
        """The interpolant at points ``x`` (one array per axis, broadcast; clipped to [0, 1])."""
        x = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in x))
        shape = x[0].shape
        flat = [np.clip(v.ravel(), 0.0, 1.0) for v in x]
        out = np.empty(flat[0].size)
        sizes = self.coef.shape
        for start in range(0, out.size, chunk):
            part = [v[start:start + chunk] for v in flat]
            basis = [chebyshev.chebvander(2.0 * v - 1.0, n - 1) for v, n in zip(part, sizes)]
            value = basis[-1] @ self.coef.reshape(-1, sizes[-1]).T                 # the last axis by one product
            for axis in reversed(range(len(sizes) - 1)):
                value = np.einsum("mij,mj->mi", value.reshape(value.shape[0], -1, sizes[axis]), basis[axis])
            out[start:start + chunk] = value[:, 0]
        return out.reshape(shape)

    def fixed(self, *x) -> np.ndarray:
        """The coefficients of the remaining axes at K points of the leading ``len(x)`` axes (arrays of shape
        (K,), clipped to [0, 1]): shape (K, nodes of the remaining axes...). :func:`evaluate_fixed` evaluates
        them; contracting fixed axes once makes a look-up cost a polynomial in the remaining axes only."""
        sizes = self.coef.shape
        out = None
        for axis, v in enumerate(x):
            basis = chebyshev.chebvander(2.0 * np.clip(np.asarray(v, dtype=float), 0.0, 1.0) - 1.0, sizes[axis] - 1)
            out = (np.tensordot(basis, self.coef, axes=(1, 0)) if out is None
                   else np.einsum("ki,ki...->k...", basis, out))
        return out


def evaluate_fixed(coef: np.ndarray, *x) -> np.ndarray:
    """Chebyshev series with per-point coefficients ``coef`` (K, n_1[, n_2]) (:meth:`Chebyshev.fixed`) at
    coordinates ``x`` (one or two arrays of shape (..., K), clipped to [0, 1])."""
    if len(x) == 1:
        basis = chebyshev.chebvander(2.0 * np.clip(x[0], 0.0, 1.0) - 1.0, coef.shape[1] - 1)
        return np.einsum("...ki,ki->...k", basis, coef)
    return evaluate_channels(coef[None], *x)[0]


def evaluate_channels(coef: np.ndarray, x1, x2) -> np.ndarray:
    """Several 2-D Chebyshev series sharing their coordinates: coefficients ``coef`` (C, K, n_1, n_2) at
    (x1, x2) (arrays of shape (..., K), clipped to [0, 1]); shape (C, ..., K). One basis per coordinate for all
    C channels; one row (K = 1, an encoder's) is one matrix product per channel."""
    b1, b2 = (chebyshev.chebvander(2.0 * np.clip(v, 0.0, 1.0) - 1.0, n - 1) for v, n in zip((x1, x2), coef.shape[2:]))
    if coef.shape[1] == 1 and np.shape(x1)[-1:] == (1,):
        inner = np.tensordot(b1[..., 0, :], coef[:, 0], axes=(-1, 1))      # (..., C, n_2)
        return np.einsum("...cj,...j->c...", inner, b2[..., 0, :])[..., None]
    return np.einsum("...ki,ckij,...kj->c...k", b1, coef, b2, optimize=True)


def _node_width(b: float) -> float:
    """The width a table's node at b is evaluated at: b, or :data:`B_ZERO` at b = 0, where every channel over what
    it is held over (:data:`HELD_OVER`) is read as its b -> 0 limit."""
    return max(b, B_ZERO)


def _row_node(args) -> tuple[float, ...]:
    """One node of the rows' table: :func:`row_node`."""
    return row_node(*args)


def _pair_node(args) -> float:
    """One node of the pair table: :func:`pair_increment` at real key counts over :data:`HELD_OVER` ["pair"] (for
    b = 0 its b -> 0 limit, read at :data:`B_ZERO`)."""
    b, rho, keys, d, d_head, inputs = args
    at = _node_width(b)
    return pair_increment(at, rho, keys, d, d_head, whole=False, inputs=inputs) / float(_held_over("pair", at))


def _map(function, items: list, desc: str) -> list:
    """``[function(x) for x in items]`` over the CPU's cores (forked worker processes, on Linux outside daemonic
    processes such as dask workers; else in this process), with a progress bar opened after the fork."""
    import multiprocessing
    import os
    import sys

    workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 16)
    serial = (workers < 2 or not sys.platform.startswith("linux") or multiprocessing.current_process().daemon)
    pool = None if serial else multiprocessing.get_context("fork").Pool(workers)
    try:
        values = map(function, items) if pool is None else pool.imap(function, items, chunksize=4)
        out = []
        with progress(len(items), desc, unit="node") as update:
            for value in values:
                out.append(value)
                if update is not None:
                    update(1)
        return out
    finally:
        if pool is not None:
            pool.close()
            pool.join()


def _scale(n):
    """The width at which a row of n keys condenses, sqrt(2 ln n) (the b coordinate's unit)."""
    return np.sqrt(2.0 * np.log(np.maximum(n, 2.0)))


def _b_coordinate(b, n):
    """b in [0, B_MAX] as a coordinate in [0, 1]: b/(b + s) over its value at B_MAX, s = :func:`_scale`(n)."""
    s = _scale(n)
    return (b / (b + s)) / (B_MAX / (B_MAX + s))


def _b_of_coordinate(x, n):
    s = _scale(n)
    xi = x * B_MAX / (B_MAX + s)
    return xi * s / (1.0 - xi)


#: The rows' table channels: the increments of the norm and of the IPR, and the row's pulls (X, J, scale).
ROW_CHANNELS = ("norm", "ipr", "X", "J", "scale")
#: What the tables hold each channel over: the rows' :data:`ROW_CHANNELS` and the pairs' increment ("pair").
#: Every channel vanishes at b -> 0, like b^2 or faster (dIPR like b^4); the pulls' scale, -0.008 b^2 there at
#: n = 256 and -0.23 at b = 2, follows a series over b^2 to 0.4 % (over selection_scale, 3 % with 15 nodes in
#: b), the others one over selection_scale to 2e-4 (tests/numeric/test_causal_width.py).
HELD_OVER = {"norm": selection_scale, "ipr": selection_scale, "X": selection_scale, "J": selection_scale,
             "scale": width_square, "pair": selection_scale}
#: Chebyshev-Lobatto nodes of the normalized rows' input cosine axis (Gaussian tokens: one node, no such axis).
ROW_RHO_NODES = 5


class CausalTables:
    """The causal increments dY2(b, n[, rho]) and dYp(b, rho, n_t, n_u) at one (d, d_head) for rows of up to
    ``n_max`` keys: Chebyshev interpolants of the direct increments (module docstring). ``inputs``: "gaussian"
    tokens, or "normalized" ones (the rows' increments then depend on the keys' input cosine rho too)."""

    def __init__(self, d: int, d_head: int, n_max: int, rows=None, pairs=None, inputs: str = "gaussian"):
        self.d, self.d_head, self.n_max, self.inputs = d, d_head, int(n_max), inputs
        self.r_lo = 2.0 / self.n_max                        # n_t >= 2 keys (a one-key row has b = 0)
        if rows is None:
            rows, pairs = self._node_values()
        self.row_values, self.pair_values = rows, pairs      # rows: (n, b, rho, channel) of ROW_CHANNELS
        self._rows = {name: Chebyshev(rows[..., k]) for k, name in enumerate(ROW_CHANNELS)}
        self._pair = Chebyshev(pairs)

    def _n_nodes(self, count: int) -> np.ndarray:
        return np.exp(lobatto(count, math.log(2.0), math.log(self.n_max)))

    def _n_coordinate(self, n):
        return (np.log(np.maximum(n, 2.0)) - math.log(2.0)) / (math.log(self.n_max) - math.log(2.0))

    def _node_values(self):
        """The direct increments at every node: 2625 pairs at ~0.1 s each (Gaussian tokens; 0.2-1 s normalized)
        and the rows, over the CPU's cores (:func:`_map`), with progress bars."""
        n_row = self._n_nodes(ROW_NODES[0])
        row_x = lobatto(ROW_NODES[1], 0.0, 1.0)
        n_pair = self._n_nodes(PAIR_NODES[0])
        ratio = np.exp(lobatto(PAIR_NODES[1], math.log(self.r_lo), 0.0))
        pair_x = lobatto(PAIR_NODES[2], 0.0, 1.0)
        rho = lobatto(PAIR_NODES[3], 0.0, 1.0)
        row_rho = lobatto(ROW_RHO_NODES, 0.0, 1.0) if self.inputs == "normalized" else np.zeros(1)
        row_shape = (n_row.size, row_x.size, row_rho.size)
        row_args = [(float(_b_of_coordinate(row_x[j], n_row[i])), float(n_row[i]), self.d, self.d_head, self.inputs,
                     float(row_rho[k])) for i, j, k in np.ndindex(row_shape)]
        rows = np.array(_map(_row_node, row_args, f"causal width rows (d={self.d}, {self.inputs})")).reshape(
            row_shape + (len(ROW_CHANNELS),))
        shape = (n_pair.size, ratio.size, pair_x.size, rho.size)
        nodes = [(float(_b_of_coordinate(pair_x[k], n_pair[i])), float(rho[m]),
                  (float(n_pair[i]), 0.0, float(n_pair[i] / ratio[j] - n_pair[i])), self.d, self.d_head,
                  self.inputs) for i, j, k, m in np.ndindex(shape)]
        pairs = _map(_pair_node, nodes, f"causal width table (d={self.d}, d_head={self.d_head}, {self.inputs})")
        return rows, np.array(pairs).reshape(shape)

    def row(self, b, n, kind: str = "norm", rho=0.0) -> np.ndarray:
        """The rows' channel ``kind`` of :data:`ROW_CHANNELS` (dY2 "norm", dIPR "ipr", the pulls "X", "J",
        "scale") at widths b, key counts n and the keys' input cosine rho (arrays, broadcast; rho matters for
        normalized tokens only); 0 for one-key rows."""
        b, n, rho = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (b, n, rho)))
        value = _channel(self._rows, kind)(self._n_coordinate(n), _b_coordinate(np.minimum(b, B_MAX), n), rho)
        return np.where(n > 1, value * _held_over(kind, b), 0.0)

    def pair(self, b, rho, n_t, n_u) -> np.ndarray:
        """dYp of nested rows (n_t <= n_u keys) at row t's width b and query correlation rho (broadcast)."""
        b, rho, n_t, n_u = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (b, rho, n_t, n_u)))
        value = self._pair(self._n_coordinate(n_t), self._ratio_coordinate(n_t, n_u),
                           _b_coordinate(np.minimum(b, B_MAX), n_t), rho)
        return np.where(n_t > 1, value * _held_over("pair", b), 0.0)

    def _ratio_coordinate(self, n_t, n_u):
        return 1.0 - np.log(n_t / n_u) / math.log(self.r_lo)

    def at(self, n, rows, cols) -> CausalLookup:
        """The tables at fixed rows: n keys per row, pairs (rows[k], cols[k]) with n[rows] <= n[cols]."""
        return CausalLookup(self, np.asarray(n, dtype=float), rows, cols)


class CausalLookup:
    """:class:`CausalTables` at the fixed key counts of one layer's carried rows: the key-count axes are
    contracted once (:meth:`Chebyshev.fixed`), so a look-up is a polynomial in b (rows) or (b, rho) (pairs):
    75 coefficients per pair instead of the table's 2625. Same values as the tables' ``row`` and ``pair``."""

    def __init__(self, tables: CausalTables, n: np.ndarray, rows, cols):
        self.n, self.rows = n, rows
        x_n = tables._n_coordinate(n)
        self._rows = {name: table.fixed(x_n) for name, table in tables._rows.items()}
        self.pair_coef = tables._pair.fixed(x_n[rows], tables._ratio_coordinate(n[rows], n[cols]))

    def b_coordinate(self, b) -> np.ndarray:
        """Every row's width coordinate of the tables at widths b (..., P)."""
        return _b_coordinate(np.minimum(b, B_MAX), self.n)

    def row(self, b, kind: str = "norm", rho=0.0) -> np.ndarray:
        """The channel ``kind`` (:meth:`CausalTables.row`) of every row at widths b and the keys' input cosines
        rho (..., P); 0 for one-key rows."""
        return self.channels(b, (kind,), rho)[kind]

    def channels(self, b, kinds, rho=0.0) -> dict:
        """:meth:`row` of each channel in ``kinds`` at once (one Chebyshev basis per coordinate), by name."""
        b = np.asarray(b, dtype=float)
        coef = np.stack([_channel(self._rows, kind) for kind in kinds])
        values = evaluate_channels(coef, self.b_coordinate(b), np.broadcast_to(rho, b.shape))
        return {kind: np.where(self.n > 1, value * _held_over(kind, b), 0.0) for kind, value in zip(kinds, values)}

    def pulls(self, b, rho, kinds=("X", "J", "scale")) -> dict:
        """Every row's pulls {"X", "J", "scale"} (:func:`numeric.finite_width.row_pulls`) at widths b and the keys'
        input cosines rho (..., P), or the channels ``kinds`` (read together); J and scale fall off like 1/b past
        B_MAX, where the tables stop."""
        values = self.channels(b, kinds, rho)
        beyond = np.minimum(1.0, B_MAX / np.maximum(b, 1e-300))
        for kind in {"J", "scale"} & set(kinds):
            values[kind] = values[kind] * beyond
        return values

    def pair(self, b_rows, rho) -> np.ndarray:
        """dYp of every pair at its row t's width b_rows (..., K) and query correlation rho (..., K)."""
        n_t = self.n[self.rows]
        value = evaluate_fixed(self.pair_coef, _b_coordinate(np.minimum(b_rows, B_MAX), n_t), rho)
        return np.where(n_t > 1, value * _held_over("pair", b_rows), 0.0)


#: The modules the causal tables are computed by: their file name carries the digest.
SOURCES = ("causal_width.py", "finite_width.py", "two_rows.py", "width_law.py", "laplace.py", "smoothing.py",
           "_generated_width.py", "interpolation.py")


def _stem(d: int, d_head: int, n_max: int, inputs: str) -> str:
    return f"causal-{inputs}-d{d}-h{d_head}-n{n_max}"


@lru_cache(maxsize=8)
def causal_tables(d: int, d_head: int, n_max: int, inputs: str = "gaussian") -> CausalTables:
    """The :class:`CausalTables` of (d, d_head, n_max, inputs): from the disk cache of :mod:`numeric.width_tables`
    or the package's shipped tables (:mod:`numeric.shipped`) when there, else built (2.7 minutes on two cores for
    d = 64, n_max = 256; 5 minutes normalized) and saved in the cache."""
    from .finite_width import _inputs
    from .width_tables import cached_arrays
    _inputs(inputs)

    def build():
        tables = CausalTables(d, d_head, n_max, inputs=inputs)
        return {"rows": tables.row_values, "pairs": tables.pair_values}

    values = cached_arrays(_stem(d, d_head, n_max, inputs), VERSION, SOURCES, build)
    return CausalTables(d, d_head, n_max, rows=values["rows"], pairs=values["pairs"], inputs=inputs)


def table_size(T: int) -> int:
    """The largest key count a table for sequences of length T covers: the next power of two (at least 16), so
    that nearby T share one table."""
    return max(16, 1 << (int(T) - 1).bit_length())


def _held_over(kind: str, b):
    """What the tables hold channel ``kind`` (a rows' channel or "pair") over, at widths b (:data:`HELD_OVER`)."""
    return HELD_OVER[kind](b)


def _channel(tables: dict, kind: str):
    """The rows' table of channel ``kind`` (ValueError naming the channels otherwise)."""
    if kind not in tables:
        raise ValueError(f"kind must be one of {ROW_CHANNELS}, got {kind!r}")
    return tables[kind]


def input_cosine(stats) -> np.ndarray:
    """The keys' input cosine pbar_t/qbar_t of every row (..., P), clipped to [0, 1]."""
    return np.clip(stats.pbar / np.maximum(stats.qbar, 1e-300), 0.0, 1.0)


def query_correlation(Q, rows, cols) -> np.ndarray:
    """The queries' correlation of every pair (rows[k], cols[k]) of the overlaps Q, clipped to [0, 1] (..., K)."""
    diag = np.diagonal(Q, axis1=-2, axis2=-1)
    return np.clip(Q[..., rows, cols] / np.sqrt(diag[..., rows] * diag[..., cols]), 0.0, 1.0)


def add_common_direction(out, stats, rho, sigma_v2, d: int, pulls, rows, cols) -> None:
    """Add sigma_v2 qbar_t times the common direction's changes (derive.finite_width step 6) of every row's norm
    and every pair's (rows[k] < cols[k]) overlap to ``out`` (..., P, P), at the rows' input cosines rho, their
    infinite-width Y2 and their selection pulls (X, J, scale) (..., P)."""
    from . import _generated_width as gen
    X, J, pull_scale = pulls
    index = np.arange(out.shape[-1])
    scale = np.broadcast_to(sigma_v2, stats.qbar.shape[:-1])[..., None] * stats.qbar
    out[..., index, index] += scale * gen.common_direction_norm(float(d), rho, stats.Y2, J, pull_scale)
    value = scale[..., rows] * gen.common_direction_pair(float(d), rho[..., rows], 0.0, X[..., rows], X[..., cols])
    out[..., rows, cols] += value
    out[..., cols, rows] += value


def check_table_positions(size: int) -> None:
    """ValueError beyond :data:`MAX_TABLE_POSITIONS` carried positions (each pair of rows is a table look-up)."""
    if size > MAX_TABLE_POSITIONS:
        raise ValueError(f"finite width in a position-resolved profile carries at most {MAX_TABLE_POSITIONS} "
                         f"positions (each pair of rows is a table look-up): T (seq_len) <= "
                         f"{MAX_TABLE_POSITIONS}, or position groups (groups=K, K <= {MAX_TABLE_POSITIONS // 2}) "
                         f"where the function takes them; got {size}")


class WidthTerms:
    """The finite-width increments of one masked attention layer's closure at width (d, d_head).

    ``mask``: the layers' :class:`derive.masks.Mask`; ``positions``: the actual position of each carried row
    (:class:`numeric.causal.Attention`: every position, or the position groups' representatives, increasing);
    ``T``: the sequence length. A causal mask reads :func:`causal_tables`; a sliding window computes each pair
    directly (:data:`MAX_POSITIONS`). ``inputs``: "gaussian" tokens or "normalized" ones (a LayerNorm or
    RMSNorm before attention; causal mask only): then the rows' increments are read at the keys' input cosine
    rho_t = pbar_t/qbar_t (the pairs', as for Gaussian tokens, at the queries' correlation rho_tu, which the
    tables also take as the keys' cosine) and the common direction's share
    (:func:`numeric.finite_width.common_direction`) is added, sigma_v2 qbar_t times the derived changes, with the
    pair's own rho (1 - rho^2) Yp/(2d) term dropped.
    """

    def __init__(self, mask, positions, d: int, d_head: int, T: int, inputs: str = "gaussian"):
        from .finite_width import _inputs
        positions = np.asarray(positions, dtype=int)
        self.d, self.d_head, self.tables, self.inputs = d, d_head, None, _inputs(inputs)
        if mask.window is not None and inputs == "normalized":
            raise ValueError("inputs='normalized' with a sliding window: the normalized increments are tabulated "
                             "for the causal mask only (use inputs='gaussian')")
        if mask.window is not None and positions.size > MAX_POSITIONS:
            raise ValueError(f"finite width with a sliding window carries at most {MAX_POSITIONS} positions (each "
                             f"pair of rows is an integral over the score law): T <= {MAX_POSITIONS}, got "
                             f"{positions.size}")
        check_table_positions(positions.size)
        self.n = np.array([mask.key_counts(int(t), int(t))[0] for t in positions], dtype=float)   # each row's own
        self.rows, self.cols = np.triu_indices(positions.size, 1)
        if mask.window is None:
            self.tables = causal_tables(d, d_head, table_size(T), inputs).at(self.n, self.rows, self.cols)
        else:
            self.keys = [mask.key_counts(int(positions[t]), int(positions[u])) for t, u in zip(self.rows, self.cols)]

    def add(self, Q, stats, sigma_v2, out) -> None:
        """Add sigma_v2 (qbar_t - pbar_t) dY2_t to the diagonal and sigma_v2 (qbar_t - pbar_t) dYp_tu to the
        pairs of ``out`` (..., P, P); for normalized tokens also the common direction's share
        (:meth:`_add_common_direction`)."""
        batch = Q.shape[:-2]
        spread = np.maximum(stats.qbar - stats.pbar, 0.0) * np.broadcast_to(sigma_v2, batch)[..., None]
        b = np.broadcast_to(stats.b, spread.shape)
        index = np.arange(self.n.size)
        if self.tables is not None:
            rho = self._input_cosine(stats)
            out[..., index, index] += spread * self.tables.row(b, rho=rho)
            if self.inputs == "normalized":
                self._add_common_direction(stats, rho, b, sigma_v2, out)
            from .fused import active
            if active():
                self._fused_pairs(Q, spread, b, out)
                return
            pairs = self.tables.pair(b[..., self.rows], self._rho(Q))
        else:
            rows, pairs = self._direct(b, self._rho(Q))
            out[..., index, index] += spread * rows
        value = spread[..., self.rows] * pairs
        out[..., self.rows, self.cols] += value
        out[..., self.cols, self.rows] += value

    def _input_cosine(self, stats):
        """The keys' input cosine of every row (:func:`input_cosine`) for normalized tokens, else 0."""
        return input_cosine(stats) if self.inputs == "normalized" else 0.0

    def _add_common_direction(self, stats, rho, b, sigma_v2, out) -> None:
        """:func:`add_common_direction` with the rows' pulls from the tables."""
        pulls = self.tables.pulls(b, rho)
        add_common_direction(out, stats, rho, sigma_v2, self.d, (pulls["X"], pulls["J"], pulls["scale"]),
                             self.rows, self.cols)

    def _rho(self, Q) -> np.ndarray:
        return query_correlation(Q, self.rows, self.cols)

    def _fused_pairs(self, Q, spread, b, out) -> None:
        """The pairs' increments by :func:`numeric._causal_jit.width_pairs` (same values as the NumPy path)."""
        from ._causal_jit import width_pairs
        from .fused import batched
        P, batch = self.n.size, Q.shape[:-2]
        view = out.reshape((-1, P, P))
        width_pairs(batched(Q, batch, (P, P)), batched(spread * _held_over("pair", b), batch, (P,)),
                    batched(self.tables.b_coordinate(b), batch, (P,)), self.rows, self.cols, self.tables.pair_coef,
                    self.n[self.rows] > 1, view)

    def ipr(self, b, stats) -> np.ndarray:
        """The finite-width increment of each row's IPR at widths b (..., P) (entropy collapse's reading; for
        normalized tokens at the keys' input cosine of the rows' ``stats``)."""
        if self.tables is not None:
            return self.tables.row(b, kind="ipr", rho=self._input_cosine(stats))
        out = np.zeros(np.shape(b))
        for index in np.ndindex(out.shape):
            out[index] = row_increments(float(b[index]), float(self.n[index[-1]]), self.d, self.d_head)[1]
        return out

    def _direct(self, b, rho):
        """(dY2 per row, dYp per pair) by the direct integrals, point by point (a progress bar)."""
        rows = np.zeros(b.shape)
        pairs = np.zeros(rho.shape)
        batch = b.shape[:-1]
        with progress(int(np.prod(batch)) * self.rows.size, "finite-width pairs", unit="pair") as update:
            for index in np.ndindex(batch):
                for t in range(self.n.size):
                    rows[index + (t,)] = row_increments(float(b[index + (t,)]), float(self.n[t]), self.d,
                                                        self.d_head)[0]
                for k, (t, keys) in enumerate(zip(self.rows, self.keys)):
                    pairs[index + (k,)] = pair_increment(float(b[index + (t,)]), float(rho[index + (k,)]), keys,
                                                         self.d, self.d_head)
                    if update is not None:
                        update(1)
        return rows, pairs
