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

from .progress import progress

#: Gauss nodes of the pair's score-law average in a profile (numeric.width_law.pair_rule): within 5e-4 relative of
#: numeric.finite_width.N_PAIR at d = 64, b^2 = 2-16, rho = 0-0.7, causal key layouts; 2e-3 at d = 32
#: (tests/numeric/test_causal_width.py).
N_PAIR_PROFILE = (2, 2, 2, 2, 3)
#: Largest number of carried positions: beyond it a finite-width profile is refused by name (use groups).
MAX_POSITIONS = 64


class WidthTerms:
    """The finite-width increments of one masked attention layer's closure at width (d, d_head).

    ``mask``: the layers' :class:`derive.masks.Mask`; ``positions``: the actual position of each carried row
    (:class:`numeric.causal.Attention`: every position, or the position groups' representatives).
    """

    def __init__(self, mask, positions, d: int, d_head: int):
        positions = np.asarray(positions, dtype=int)
        if positions.size > MAX_POSITIONS:
            raise ValueError(f"finite width in a position-resolved profile carries at most {MAX_POSITIONS} "
                             f"positions (each pair of rows is an integral over the score law); got {positions.size}: "
                             f"use groups=K with K <= {MAX_POSITIONS // 2}")
        self.d, self.d_head = d, d_head
        self.n = np.array([mask.key_counts(int(t), int(t))[0] for t in positions])   # each row's own count
        self.rows, self.cols = np.triu_indices(positions.size, 1)
        self.keys = [mask.key_counts(int(positions[t]), int(positions[u])) for t, u in zip(self.rows, self.cols)]

    def row_increment(self, b: float, n: float) -> float:
        """dY2 of a row of n keys and width b."""
        from .finite_width import _one_row, row_effective
        from .smoothing import EXACT
        if n <= 1 or b == 0.0:                          # one key, or uniform weights: no selection
            return 0.0
        return row_effective(b * b, int(n), self.d, self.d_head)[1] - _one_row(b, int(n), EXACT)[0]

    def pair_increment(self, b: float, rho: float, keys) -> float:
        """dYp of rows with key counts ``keys`` at row width b and query correlation rho."""
        from .finite_width import pair_effective
        from .smoothing import TABLE
        from .two_rows import pair_and_selection
        if b == 0.0:                                    # uniform weights: no selection
            return 0.0
        rho = min(max(rho, 0.0), 1.0 - 1e-12)
        b2 = b * b
        effective = pair_effective(b2, rho, None, self.d, self.d_head, keys=keys, nodes=N_PAIR_PROFILE)
        return effective - pair_and_selection(b2, b2, rho * b2, None, TABLE, keys=keys)[0]

    def add(self, Q, stats, sigma_v2, out) -> None:
        """Add sigma_v2 (qbar_t - pbar_t) dY2_t to the diagonal and sigma_v2 (qbar_t - pbar_t) dYp_tu to the
        pairs of ``out`` (..., P, P), point by point of the batch."""
        diag = np.diagonal(Q, axis1=-2, axis2=-1)
        batch = Q.shape[:-2]
        spread = np.maximum(stats.qbar - stats.pbar, 0.0) * np.broadcast_to(sigma_v2, batch)[..., None]
        with progress(int(np.prod(batch)) * self.rows.size, "finite-width pairs", unit="pair") as update:
            for index in np.ndindex(batch):
                b, s = stats.b[index], spread[index]
                for t in range(self.n.size):
                    out[index + (t, t)] += s[t] * self.row_increment(float(b[t]), float(self.n[t]))
                for t, u, keys in zip(self.rows, self.cols, self.keys):
                    rho = float(Q[index + (t, u)] / math.sqrt(diag[index + (t,)] * diag[index + (u,)]))
                    value = s[t] * self.pair_increment(float(b[t]), rho, keys)
                    out[index + (t, u)] += value
                    out[index + (u, t)] += value
                    if update is not None:
                        update(1)
