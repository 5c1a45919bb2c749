"""Position groups: the causal theory's state on a few representative positions instead of all T.

The position-resolved theory (:mod:`numeric.causal`) carries the T x T expected
overlap matrix Q_ts; at long context its cost grows as T^2 per block. Q varies
slowly along the positions except near the start (row t sees t + 1 keys, and the
statistics of short rows change fast), so the positions 0..T-1 are cut into K
contiguous groups, single positions first and then geometrically wider ones, with
a cut at the start of the last quarter (the "late" positions). Within a group the
tokens are treated as exchangeable: one norm d_i, one overlap O_ii of two distinct
members, and one overlap O_ij with each other group. These are read off a state of
M <= 2K actual positions: each group's middle position (its representative) and,
for groups of two or more, the position after it (its twin, whose overlap with the
representative is O_ii). Every layer maps that M x M state exactly as the full
theory maps the same entries; the attention closure reads its key-class means
(eq. (9) with Q_ts, :mod:`derive.causal`) from the prefix sums of the expanded,
group-constant Q, computed from the groups without building it.

The approximation is the group-constant Q; its error against the full closure is
measured in tests/numeric/test_position_groups.py (and by ``sigprop bench
--causal``).
"""

from __future__ import annotations

import numpy as np


def boundaries(T: int, count: int) -> np.ndarray:
    """Group edges 0 = e_0 < ... < e_K = T: geometric in the position, single positions first, one edge at the
    start of the last quarter; K = min(count, T)."""
    if count >= T:
        return np.arange(T + 1)
    late_start = min(T - 2, T - T // 4)
    points = count
    while True:
        edges = np.unique(np.concatenate([[0, late_start, T], np.rint(np.geomspace(1, T, points)).astype(int)]))
        if edges.size - 1 >= count or points > 4 * T:
            return edges
        points += 1


class PositionGroups:
    """K contiguous groups of the positions 0..T-1 and the M representative positions that carry the state.

    ``positions`` (M,): the actual positions of the state, ascending; ``rep``/``twin`` (K,): each group's
    representative and twin as indices into ``positions`` (twin = rep for a single position); ``size`` (K,).
    """

    def __init__(self, T: int, count: int):
        self.T = T
        edges = boundaries(T, count)
        self.lo, self.hi = edges[:-1], edges[1:]
        self.size = (self.hi - self.lo).astype(float)
        middle = self.lo + (self.hi - self.lo - 1) // 2
        chosen = np.unique(np.concatenate([middle, np.where(self.size > 1, middle + 1, middle)]))
        self.positions = chosen
        self.rep = np.searchsorted(chosen, middle)
        self.twin = np.searchsorted(chosen, np.where(self.size > 1, middle + 1, middle))
        ends = np.concatenate([[0], chosen + 1])                      # prefix ends: keys [0, a)
        self.cover = np.clip(ends[:, None] - self.lo[None, :], 0, self.size[None, :])   # (M + 1, K)
        self.weight = np.zeros(chosen.size)                           # the group size on each representative
        self.weight[self.rep] = self.size

    @property
    def count(self) -> int:
        return self.lo.size

    def group_values(self, Q):
        """d (..., K), O (..., K, K) with O_ii the overlap of two members of group i (d_i for a single one)."""
        d = np.diagonal(Q, axis1=-2, axis2=-1)[..., self.rep]
        O = Q[..., self.rep[:, None], self.rep[None, :]].copy()
        k = np.arange(self.count)
        O[..., k, k] = Q[..., self.rep, self.twin]
        return d, O

    def prefix_sums(self, Q):
        """C[..., x, y] = sum of the group-constant Q over keys [0, a_x) x [0, a_y), D[..., x] = its trace over
        [0, a_x), at the prefix ends a = (0, positions + 1): what :class:`numeric.causal.Attention` reads."""
        d, O = self.group_values(Q)
        A = self.cover
        C = A @ O @ A.T
        excess = (A @ (d - np.diagonal(O, axis1=-2, axis2=-1))[..., None])[..., 0]      # F[x], diagonal beyond O_ii
        x = np.arange(A.shape[0])
        C = C + excess[..., np.minimum(x[:, None], x[None, :])]
        D = (A @ d[..., None])[..., 0]
        return C, D

    def counts(self, index) -> np.ndarray:
        """How many of the positions ``index`` (all if None) fall in each group (K,)."""
        if index is None:
            return self.size
        return np.bincount(np.searchsorted(self.hi, index, side="right"), minlength=self.count).astype(float)

    def ratio(self, Q, index=None) -> np.ndarray:
        """rho = p/q over the positions ``index`` (all by default) of the group-constant Q."""
        c = self.counts(index)
        d, O = self.group_values(Q)
        n = c.sum()
        q = d @ c / n
        cross = np.einsum("...ij,i,j->...", O, c, c) - np.diagonal(O, axis1=-2, axis2=-1) @ c
        return cross / (n * (n - 1)) / q

    def by_position(self, Q) -> np.ndarray:
        """rho_t of each position with the others (..., T), constant within a group."""
        d, O = self.group_values(Q)
        c, T = self.size, self.T
        others = (O @ c - np.diagonal(O, axis1=-2, axis2=-1)) / (T - 1)
        norms = (d @ c)[..., None] - d
        group = others / np.sqrt(d * norms / (T - 1))
        return np.repeat(group, self.size.astype(int), axis=-1)
