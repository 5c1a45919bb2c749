"""Finite width for tokens of fixed norm in unmasked (encoder) stacks: the effective moments (issue 19).

After a LayerNorm or RMSNorm the tokens' norms do not fluctuate, and their shared direction changes what the
softmax selects (:mod:`derive.finite_width` steps 5-6; errata 17). One unmasked attention layer of such tokens,
:func:`numeric.attention_overlaps` with ``inputs="normalized"``, is the infinite-width map (eq. 23) at the
effective moments

    Y2* = Y2 + dY2(b, T; rho) + common_direction_norm_per_spread(d, rho, Y2, J, scale),
    Yp* = Yp_eff + common_direction_pair_per_spread(d, rho, Yp_eff, X, X),   Yp_eff = Yp + dYp(b, rho; T, T),

with b^2 = beta^2 ln T q (q - p) and rho = p/q: Y2, Yp the exact finite-T moments; dY2 and dYp the
normalized-token increments of one row and of two rows that both see all T keys, which are the causal tables'
(:func:`numeric.causal_width.causal_tables`, ``inputs="normalized"``) at n_t = n_u = T; X, J, scale the row's
pulls from the same tables. The common direction's share of q_out and p_out, sigma_v2 q times the changes of
:func:`derive.finite_width.common_direction_norm` and ``_pair``, is a change of the effective moments once
divided by the spread 1 - rho (:func:`derive.finite_width.common_direction_per_spread`), since every row of an
encoder sees the same keys. The pair's change takes Yp_eff, as :func:`numeric.attention_overlaps` does (Yp
there is an O(1/d^2) difference, but 8 % of 1 - rho_out at rho = 0.9, beta = 1, T = 256, d = 64). Profiles,
critical_alpha and diagrams of unmasked stacks with ``d=`` and ``inputs="normalized"`` read these moments
(diagrams and critical_alpha from their per-beta columns, :mod:`numeric.columns`, on the fused kernels);
entropy collapse reads Y2 + dIPR(b, T; rho).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import _generated_width as gen
from .tables import _unchecked_state


class NormalizedMoments:
    """(Y2*, Yp*) and the finite-width IPR of normalized tokens in rows of T keys at width (d, d_head), as block-map
    moment functions of (beta, q, p) (module docstring)."""

    def __init__(self, T: int, d: int, d_head: int):
        from .causal_width import causal_tables, table_size
        from .tables import Y2_table, Yp_table
        self.T, self.d = int(T), int(d)
        one = np.zeros(1, dtype=int)                        # one row of T keys, paired with itself
        self.lookup = causal_tables(d, d_head, table_size(T), "normalized").at(np.array([float(T)]), one, one)
        Y2_table(self.T), Yp_table(self.T)    # the finite-T moments' tables, built here, not in a caller's threads

    def _state(self, beta, q, p):
        b, rho = _unchecked_state(beta, q, p, self.T)
        return np.asarray(b, dtype=float)[..., None], np.asarray(rho, dtype=float)[..., None]

    def y2(self, beta, q, p):
        """Y2* at (beta, q, p) (arrays, broadcast)."""
        return self.moments(beta, q, p, pair=False)[0]

    def yp(self, beta, q, p):
        """Yp* at (beta, q, p) (arrays, broadcast)."""
        return self.moments(beta, q, p, norm=False)[1]

    def moments(self, beta, q, p, norm=True, pair=True):
        """(Y2*, Yp*) at (beta, q, p) (arrays, broadcast), their table channels read together; ``norm``,
        ``pair`` False: that one is None (not computed)."""
        from .moments import ipr2_finite, ipr_pair_finite
        b, rho = self._state(beta, q, p)
        pulls = self.lookup.pulls(b, rho, (("norm", "J", "scale") if norm else ()) + (("X",) if pair else ()))
        y2 = yp = None
        if norm:
            y2 = np.asarray(ipr2_finite(beta, q, p, self.T), dtype=float)
            common = gen.common_direction_norm_per_spread(float(self.d), rho, y2[..., None], pulls["J"], pulls["scale"])
            y2 = y2 + (pulls["norm"] + common)[..., 0]
        if pair:
            yp = np.asarray(ipr_pair_finite(beta, q, p, self.T), dtype=float)[..., None] + self.lookup.pair(b, rho)
            common = gen.common_direction_pair_per_spread(float(self.d), rho, yp, pulls["X"], pulls["X"])
            yp = (yp + common)[..., 0]
        return y2, yp

    def ipr(self, beta, q, p):
        """E sum_s A_ts^2 at finite width (what entropy collapse reads) at (beta, q, p)."""
        from .moments import ipr2_finite
        b, rho = self._state(beta, q, p)
        return np.asarray(ipr2_finite(beta, q, p, self.T), dtype=float) + self.lookup.row(b, "ipr", rho)[..., 0]


@lru_cache(maxsize=8)
def normalized_moments(T: int, d: int, d_head: int) -> NormalizedMoments:
    """The :class:`NormalizedMoments` of (T, d, d_head) (its causal table read from the cache or built once)."""
    return NormalizedMoments(T, d, d_head)
