"""RoPE at finite width: one attention row's output norm and IPR with the O(1/d) terms, at orthogonal inputs (issue 19).

Without RoPE every key of row t meets the same query direction u = W_K^T W_Q x_t, and the finite-width
theory of :mod:`numeric.finite_width` follows (derive.finite_width). With RoPE key s meets the direction
rotated to its position, u_s = W_K^T R_(t-s) W_Q x_t, and two things change (derive.rope, "finite width"):

- **the keys' score scales** |u_s|^2 are no longer the row's: W_K's Wishart step gives each key its own
  scale, two keys' scales correlated by kappa(s - s') = (d_h c(D)^2 + 1 + c(2D))/(d_h + 2)
  (:func:`derive.rope.key_scale_correlation`; :func:`scale_correlation`). The closure splits the W_K step by
  kappa_bar_n, its mean over the row's key pairs (:func:`scale_share`): a share common to the row
  (chi-square of d/kappa_bar dofs, in the chain of row scales with the query token's d and W_Q's d_h) and
  each key's own (d/(1 - kappa_bar) dofs), which makes a key's log-weight a Gaussian scale mixture with
  heavier tails: the row condenses earlier than without RoPE.
- **the key-selection term** (1/d) sum_(s != s') A_s A_s' zeta_s zeta_s' (u_s.u_s') carries u_s.u_s' = c(s - s')
  + O(1/sqrt d_h). At p = 0 the pairs (A_s, zeta_s) are exchangeable and independent of the rotations, so the
  sum is c_bar_n (:func:`numeric.rope.pair_mean`) times the term without RoPE: Z2 -> Z2_diag + c_bar_n (Z2 -
  Z2_diag) (:func:`numeric.finite_width.selection_terms`) in the effective moment of eq. 23. (u_s.u_s'
  fluctuates by O(1/sqrt d_h) around c independently of the scores, so only its mean enters; the keys' own
  scales change Z2 by O(1/d), an O(1/d^2) term in q_out.)

So the row's effective moment is Y2_eff = E_xi [(1 - 1/d) Y2_mix + Z2_rope/d] (Gaussian tokens) or
E_xi [Y2_mix + (Z2_rope - Z2_diag)/d] (normalized ones), Y2_mix the exact finite-n IPR under the keys'
scale-mixed projection law (:func:`numeric.finite_width.law_row`), and q_out = sigma_v2 q Y2_eff.

Scope: orthogonal inputs (p = 0), to first order in 1/d with one closure, the kappa split; at p > 0 the row's
common component becomes a position-dependent field (the tree closure of :mod:`numeric.rope`) that the scale
mixture multiplies, and the common/private cross term no longer vanishes: not derived (README, errata 18).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from . import _generated_width as gen
from . import validation as check
from .finite_width import (
    N_XI,
    _finite_inputs,
    _inputs,
    _number,
    _one_row,
    _trapezoid_count,
    law_row,
    row_point,
    selection_terms,
    width,
)
from .rope import correlation, pair_mean, rope_setting
from .smoothing import EXACT
from .width_law import product_rule

#: Gauss nodes in ln xi of a key's own scale (the mixture of its projection law).
N_SCALE = 16
#: Widest |z| of a key's scale-mixed projection kept on the trapezoid grid (the density there is below e^-45 at
#: the widest own scale of d = 64).
Z_MAX = 14.0

__all__ = ["ipr", "output_norm", "scale_correlation", "scale_share"]


def scale_correlation(delta, head_dim: int, theta: float) -> np.ndarray:
    """kappa(D) = (d_h c(D)^2 + 1 + c(2D)) / (d_h + 2): the correlation of two keys' score scales at position
    difference D (:func:`derive.rope.key_scale_correlation`)."""
    delta = np.asarray(delta, dtype=float)
    c, c2 = correlation(delta, head_dim, theta), correlation(2.0 * delta, head_dim, theta)
    return (head_dim * c * c + 1.0 + c2) / (head_dim + 2.0)


@lru_cache(maxsize=256)
def scale_share(n: int, head_dim: int, theta: float) -> float:
    """kappa_bar_n: the mean of :func:`scale_correlation` over the n(n - 1) ordered key pairs of a row of n keys
    (the share of W_K's scale fluctuation the row's keys hold in common)."""
    if n < 2:
        return 1.0
    D = np.arange(1, n)
    return float(2.0 * np.sum((n - D) * scale_correlation(D, head_dim, theta)) / (n * (n - 1)))


def _scale_dofs(d: int, d_head: int, share: float, normalized: bool) -> tuple[tuple[float, ...], float]:
    """(the row's chain of dofs, a key's own dofs): query token d (Gaussian tokens only), W_Q d_h, W_K's common
    share d/kappa_bar; each key's own share d/(1 - kappa_bar) (inf: none)."""
    common = (float(d_head), d / share)
    return (common if normalized else (float(d),) + common), (d / (1.0 - share) if share < 1.0 else math.inf)


@lru_cache(maxsize=64)
def _scale_rule(dofs: float):
    """(xi, weights): a key's own scale chi2(dofs)/dofs (one node at 1 without one)."""
    if math.isinf(dofs):
        return np.ones(1), np.ones(1)
    return product_rule((dofs,), N_SCALE)


def key_nodes(d: int, normalized: bool, dofs: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """(z, weights) of a key's projection times its own scale sqrt(xi): z = y sqrt(xi), y of the sphere law of
    a normalized key (density prop. to (1 - y^2/d)^((d - 3)/2)) or N(0, 1), xi ~ chi2(dofs)/dofs; the
    trapezoid rule with spacing min(0.05, 0.25/b) on |z| <= :data:`Z_MAX`."""
    xi, weight = _scale_rule(dofs)
    z_max = min(Z_MAX, (math.sqrt(d) if normalized else Z_MAX) * math.sqrt(float(xi.max())))
    z = np.linspace(-z_max, z_max, _trapezoid_count(z_max, b))
    density = np.zeros_like(z)
    for x, w in zip(xi, weight):
        y2 = z * z / x
        if normalized:
            with np.errstate(divide="ignore"):
                log_density = 0.5 * (d - 3) * np.log1p(-np.minimum(y2 / d, 1.0))
        else:
            log_density = -0.5 * y2
        density += w * np.exp(log_density) / math.sqrt(x)
    density[[0, -1]] *= 0.5
    return z, density / density.sum()


def row(b2: float, n: int, d: int, d_head: int, head_dim: int, theta: float, inputs: str = "normalized",
        nodes: int = N_XI) -> tuple[float, float]:
    """(E Y2, Y2_eff) of a RoPE row of n keys at orthogonal inputs and mean log-weight variance b2 (module
    docstring): the IPR averaged over the row's scale law and the effective moment of q_out."""
    normalized = _inputs(inputs) == "normalized"
    if n < 2 or b2 == 0.0:
        return 1.0 / n, 1.0 / n
    chain, own = _scale_dofs(d, d_head, scale_share(n, head_dim, theta), normalized)
    c_bar = pair_mean(n, head_dim, theta)
    xi, weight = product_rule(chain, nodes)
    ipr = eff = 0.0
    for x, w in zip(xi, weight):
        b = math.sqrt(b2 * x)
        y2 = law_row(b, n, *key_nodes(d, normalized, own, b))
        z2, z2_diag = selection_terms(b, n)
        if normalized:
            value = gen.effective_same_normalized(float(d), y2, z2_diag + c_bar * (z2 - z2_diag), z2_diag)
        else:                                   # Z2 with its frozen limit beyond B_Z (finite_width._one_row)
            z2_rope = _one_row(b, n, EXACT)[1] - (1.0 - c_bar) * (z2 - z2_diag)
            value = gen.effective_same(float(d), y2, z2_rope)
        ipr += w * y2
        eff += w * float(value)
    return ipr, eff


def _arguments(beta, q, p, T, n, d, d_head, rope, inputs):
    """Checked (b2, n, d, d_head, head_dim, theta, inputs, q) of :func:`output_norm` and :func:`ipr`."""
    if d is None:
        raise ValueError("d must be a finite width (an integer >= 1); for d=None use numeric.rope")
    d, d_head = width(d, d_head)
    inputs = _finite_inputs(inputs, d)
    theta, head_dim = rope_setting(rope)
    if head_dim != d_head:
        raise ValueError(f"rope head_dim = {head_dim} but d_head = {d_head}: RoPE rotates each head's features")
    beta, q, p, T, n = row_point(beta, q, p, T, n)
    if p != 0.0:
        raise ValueError(f"p must be 0 with RoPE at finite width (derived at orthogonal inputs only), got {p!r}")
    return beta * beta * math.log(T) * q * q, n, d, d_head, head_dim, theta, inputs, q


def output_norm(beta, *, T, rope, d, d_head=None, n=None, q=1.0, p=0.0, inputs="normalized",
                sigma_v2=1.0) -> float:
    """E|o_t|^2/d of one RoPE attention row of n keys (default T; fewer: a causal row) at width d, heads of
    d_head features, at orthogonal inputs (p = 0): sigma_v2 q Y2_eff (module docstring; eq. 23 at the
    effective moment). ``rope``: (theta, head_dim), head_dim = d_head. ``inputs``: "normalized" (tokens of
    fixed norm, as after RMSNorm) or "gaussian". The log-weight scale is b^2 = beta^2 ln T q^2 (Result 1)."""
    sigma_v2 = _number("sigma_v2", check.positive("sigma_v2", sigma_v2))
    b2, n, d, d_head, head_dim, theta, inputs, q = _arguments(beta, q, p, T, n, d, d_head, rope, inputs)
    return sigma_v2 * q * row(b2, n, d, d_head, head_dim, theta, inputs)[1]


def ipr(beta, *, T, rope, d, d_head=None, n=None, q=1.0, p=0.0, inputs="normalized") -> float:
    """E sum_s A_ts^2 of one RoPE attention row at finite width (as :func:`output_norm`): the IPR entropy
    collapse is judged on, averaged over the row's and the keys' own score scales."""
    b2, n, d, d_head, head_dim, theta, inputs, q = _arguments(beta, q, p, T, n, d, d_head, rope, inputs)
    return row(b2, n, d, d_head, head_dim, theta, inputs)[0]


# --- a stack's RoPE rows at finite width -------------------------------------------------------------------

#: Nodes in xi = b/(b + sqrt(2 ln n)) of a row's effective width on [0, XI_MAX] (beyond, the row is condensed
#: and its increments are held at the last node's), and key counts (geometric in n) at which they are computed.
XI_NODES, XI_MAX, ANCHORS = 13, 0.85, 12


class RowTerms:
    """The finite-width increments of the rows of a causal RoPE layer (:class:`numeric.causal.Attention` with
    ``rope`` and ``width``), for tokens of fixed norm.

    A closure at p > 0: row t's field and private parts are first reduced to the exchangeable row of the same
    IPR, b_t (the tree closure, :class:`numeric.rope.Rows`), and that row is then taken at finite width as a RoPE
    row at orthogonal inputs of log-weight variance b_t^2 (:func:`row`: the keys' own score scales, the row's
    chain, the sphere law, the selection term cut by c_bar_n). Exact at p = 0 (the first block of a stack, whose
    tokens are near orthogonal). At input cosine rho = pbar_t/qbar_t > 0 the normalized tokens' common-direction
    share (derive.finite_width step 6, :func:`numeric.finite_width.common_direction`) is added to the norms and
    the pairs with its selection pulls X, J and scale cut by c_bar_n, as the selection term is (the pull is
    coherent along one query direction, which RoPE turns from key to key); its normalization terms are kept
    whole. The pairs' selection increment dYp of the causal tables (:mod:`numeric.causal_width`, normalized
    tokens) is added cut the same way, by c_bar of the row whose keys the pair shares; under a sliding window
    shorter than T (whose pairs the tables do not hold) it is left out. Per row: dIPR = E Y2 - Y2(b_t, n_t),
    dnorm = Y2_eff - Y2(b_t, n_t) and the pulls, tabulated on :data:`XI_NODES` widths at :data:`ANCHORS` key
    counts (cubic in xi, linear in ln n). The p > 0 part is measured against torch, not derived (README "RoPE
    rows in a stack").
    """

    def __init__(self, n, d: int, d_head: int, T: int, theta: float, head_dim: int, inputs: str = "gaussian",
                 causal: bool = True):
        if _inputs(inputs) != "normalized":
            raise ValueError("inputs='gaussian' with RoPE at finite width: at p > 0 Gaussian tokens add the "
                             "common/private cross term (2/d) b^2 p E sum_s A_s (1 - 2A_s)(1 - sum_r c A_r) "
                             "(docs/errata.md 18), which is not computed; use inputs='normalized' (tokens after "
                             "a LayerNorm or RMSNorm)")
        if head_dim != d_head:
            raise ValueError(f"rope head_dim = {head_dim} but d_head = {d_head}: RoPE rotates each head's features")
        self.d, self.d_head, self.inputs = d, d_head, "normalized"
        self.n = np.asarray(n, dtype=float)
        self.rows, self.cols = np.triu_indices(self.n.size, 1)
        self.coherence = np.array([pair_mean(int(k), head_dim, theta) if k >= 2 else 0.0 for k in self.n])
        self.table = _row_table(d, d_head, theta, head_dim, _anchors(self.n))
        self.pairs = None
        if causal:
            from .causal_width import causal_tables, check_table_positions, table_size
            check_table_positions(self.n.size)
            self.pairs = causal_tables(d, d_head, table_size(T), "normalized").at(self.n, self.rows, self.cols)

    def _read(self, b) -> np.ndarray:
        """The table's channels (dIPR, dnorm, X, J, scale) of every row at effective widths b: (..., P, 5)."""
        anchors, xi_nodes, values = self.table
        from .row_moments import _z
        z = _z(np.maximum(self.n, 2.0))
        xi = np.clip(b / (b + z), 0.0, XI_MAX)
        at_anchor = np.stack([_cubic(xi_nodes, values[k], xi) for k in range(anchors.size)], axis=-2)  # (..., P, A, 5)
        x, xs = np.log(np.maximum(self.n, 1.0)), np.log(anchors)
        upper = np.clip(np.searchsorted(xs, x), 1, xs.size - 1)
        frac = np.clip((x - xs[upper - 1]) / (xs[upper] - xs[upper - 1]), 0.0, 1.0)[:, None]
        index = np.arange(self.n.size)
        lo, hi = at_anchor[..., index, upper - 1, :], at_anchor[..., index, upper, :]
        return np.where((self.n >= 2)[:, None], (1.0 - frac) * lo + frac * hi, 0.0)

    def add(self, Q, stats, sigma_v2, out) -> None:
        """Add sigma_v2 (qbar_t - pbar_t) dnorm_t to the diagonal of ``out`` (..., P, P), the common direction's
        share with the pulls cut by c_bar_n (:func:`numeric.causal_width.add_common_direction`) and, under a
        causal mask, sigma_v2 (qbar_t - pbar_t) c_bar dYp_tu to the pairs."""
        from .causal_width import add_common_direction, input_cosine, query_correlation
        spread = np.maximum(stats.qbar - stats.pbar, 0.0) * np.broadcast_to(sigma_v2, Q.shape[:-2])[..., None]
        b = np.broadcast_to(stats.b, spread.shape)
        table = self._read(b)
        index, rows, cols = np.arange(self.n.size), self.rows, self.cols
        out[..., index, index] += spread * table[..., 1]
        pulls = tuple(self.coherence * table[..., k] for k in (2, 3, 4))
        add_common_direction(out, stats, input_cosine(stats), sigma_v2, self.d, pulls, rows, cols)
        if self.pairs is not None:
            dYp = self.pairs.pair(b[..., rows], query_correlation(Q, rows, cols))
            value = (spread * self.coherence)[..., rows] * dYp
            out[..., rows, cols] += value
            out[..., cols, rows] += value

    def ipr(self, b, stats) -> np.ndarray:
        """dIPR of every row at widths b (..., P): entropy collapse's reading at finite width."""
        return self._read(np.asarray(b, dtype=float))[..., 0]


def _anchors(n: np.ndarray) -> np.ndarray:
    """Key counts of the table (:func:`numeric.rope.anchor_counts`, :data:`ANCHORS` of them), at least two."""
    from .rope import anchor_counts
    distinct = anchor_counts(n, ANCHORS)
    if distinct.size < 2:
        distinct = np.array([2, 3]) if distinct.size == 0 else np.array([distinct[0], distinct[0] + 1])
    return distinct.astype(float)


@lru_cache(maxsize=16)
def _row_table_cached(d, d_head, theta, head_dim, anchors: tuple):
    """:func:`_row_table`'s values: :func:`row` and :func:`numeric.finite_width.row_pulls` at every (anchor, xi)
    node (b = 0: no increment and no pull), with a progress bar."""
    from .finite_width import row_pulls
    from .progress import progress
    from .row_moments import RowMoments, _z
    moments = RowMoments()
    xi_nodes = np.linspace(0.0, XI_MAX, XI_NODES)
    values = np.zeros((len(anchors), XI_NODES, 5))
    with progress(len(anchors) * XI_NODES, "RoPE rows at finite width", unit="row") as update:
        for k, n in enumerate(anchors):
            z = float(_z(n))
            for j, xi in enumerate(xi_nodes):
                b = z * xi / (1.0 - xi)
                if b > 0.0:
                    ipr, eff = row(b * b, int(n), d, d_head, head_dim, theta, "normalized")
                    exchangeable = float(moments.y2(b, n))
                    values[k, j] = (ipr - exchangeable, eff - exchangeable, *row_pulls(b * b, int(n)))
                if update is not None:
                    update(1)
    return np.asarray(anchors, dtype=float), xi_nodes, values


def _row_table(d, d_head, theta, head_dim, anchors: np.ndarray):
    """(anchors, xi nodes, values (A, XI_NODES, 5)): dIPR, dnorm and the pulls (X, J, scale) of :class:`RowTerms`,
    cached per layer kind."""
    return _row_table_cached(int(d), int(d_head), float(theta), int(head_dim), tuple(int(a) for a in anchors))


def _cubic(nodes: np.ndarray, values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The natural cubic spline through (nodes, values (N, k)) at x (...): (..., k)."""
    from scipy.interpolate import CubicSpline
    return CubicSpline(nodes, values, axis=0, bc_type="natural")(x)
