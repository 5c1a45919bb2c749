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

Cost: a row costs 16 one-row moments (~3 ms); a pair one Gauss rule over the score law
(:data:`N_PAIR_PROFILE`, 48 two-row integrals, ~0.06 s; Yp_eff within 5e-4 relative of the full rule
:data:`numeric.finite_width.N_PAIR` at d = 64, 2e-3 at d = 32). A profile of P carried positions costs ~0.03 P^2 s per layer and
parameter point, so long contexts take position groups (``groups=K``: at most 2K positions).
"""

from __future__ import annotations

import math

import numpy as np

#: Gauss nodes of the pair's score-law average in a profile (numeric.width_law.pair_rule): within 5e-4 relative of
#: numeric.finite_width.N_PAIR at d = 64, b^2 = 2-16, rho = 0-0.7, causal key layouts; 2e-3 at d = 32
#: (tests/numeric/test_causal_width.py).
N_PAIR_PROFILE = (2, 2, 2, 2, 3)
#: Largest number of carried positions: beyond it a finite-width profile is refused by name (use groups).
MAX_POSITIONS = 64


class WidthTerms:
    """The finite-width increments of one masked attention layer's closure at width (d, d_head).

    ``first``: each carried row's first key; ``n``: its key count (:class:`numeric.causal.Attention`).
    """

    def __init__(self, first, n, d: int, d_head: int):
        if n.size > MAX_POSITIONS:
            raise ValueError(f"finite width in a position-resolved profile carries at most {MAX_POSITIONS} "
                             f"positions (each pair of rows is an integral over the score law); got {n.size}: "
                             f"use groups=K with K <= {MAX_POSITIONS // 2}")
        self.first, self.n, self.d, self.d_head = np.asarray(first), np.asarray(n), d, d_head
        self.rows, self.cols = np.triu_indices(n.size, 1)

    def keys(self, t: int, u: int) -> tuple[float, float, float]:
        """(n shared, m1 own to row t, m2 own to row u) of rows t < u (positions t, u carried; their last keys)."""
        last_t, last_u = self.first[t] + self.n[t] - 1, self.first[u] + self.n[u] - 1
        shared = max(0.0, min(last_t, last_u) - max(self.first[t], self.first[u]) + 1)
        return float(shared), float(self.n[t] - shared), float(self.n[u] - shared)

    def row_increment(self, b: float, n: float) -> float:
        """dY2 of a row of n keys and width b."""
        from .finite_width import _one_row, row_effective
        from .smoothing import EXACT
        if n <= 1 or b == 0.0:                          # one key, or uniform weights: no selection
            return 0.0
        return row_effective(b * b, int(n), self.d, self.d_head)[1] - _one_row(b, int(n), EXACT)[0]

    def pair_increment(self, b: float, rho: float, keys) -> float:
        """dYp of rows with key counts ``keys`` at row width b and query correlation rho."""
        from .finite_width import _uniform_pair, pair_effective
        from .smoothing import TABLE
        from .two_rows import pair_and_selection
        rho = min(max(rho, 0.0), 1.0 - 1e-12)
        b2 = b * b
        effective = pair_effective(b2, rho, None, self.d, self.d_head, keys=keys, nodes=N_PAIR_PROFILE)
        if b2 == 0.0:
            return effective - _uniform_pair(None, keys)[0]
        return effective - pair_and_selection(b2, b2, rho * b2, None, TABLE, keys=keys)[0]

    def add(self, Q, stats, sigma_v2, out) -> None:
        """Add sigma_v2 (qbar_t - pbar_t) dY2_t to the diagonal and sigma_v2 (qbar_t - pbar_t) dYp_tu to the
        pairs of ``out`` (..., P, P), point by point of the batch."""
        diag = np.diagonal(Q, axis1=-2, axis2=-1)
        batch = Q.shape[:-2]
        spread = np.maximum(stats.qbar - stats.pbar, 0.0)
        sigma_v2 = np.broadcast_to(sigma_v2, batch)
        bar = _progress(int(np.prod(batch)) * self.rows.size)
        for index in np.ndindex(batch):
            b, s, scale = stats.b[index], spread[index], float(sigma_v2[index])
            for t in range(self.n.size):
                out[index + (t, t)] += scale * s[t] * self.row_increment(float(b[t]), float(self.n[t]))
            for t, u in zip(self.rows, self.cols):
                rho = float(Q[index + (t, u)] / math.sqrt(diag[index + (t,)] * diag[index + (u,)]))
                value = scale * s[t] * self.pair_increment(float(b[t]), rho, self.keys(t, u))
                out[index + (t, u)] += value
                out[index + (u, t)] += value
                bar.update(1)
        bar.close()


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _progress(total: int):
    """A tqdm bar over the pairs on a terminal (tqdm is optional: without it, none)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc="finite-width pairs", unit="pair", disable=None, leave=False)
