"""The position-resolved theory of masked (causal) stacks: the expected overlap matrix, position by position.

With a causal mask row t sees n_t = t + 1 keys (:mod:`derive.masks`): tokens
are not exchangeable, so the state is the expected overlap matrix
Q_ts = E X_t . X_s / d of all T positions, not one (q, p). A block acts on it
by its generated position-resolved map (:mod:`numeric._generated_causal`): an
entrywise layer maps each entry through its pair map, an attention layer
through :class:`Attention`, the closure of :mod:`derive.causal`:

- row t sees its keys through their class means (prefix sums of Q): the norm
  qbar and overlap pbar of the keys it shares with row u, and the overlaps r_u,
  r_t, r_o between shared and unshared keys;
- its IPR is the exact finite-n moment Y2(b_t, n_t) with b_t = beta sqrt(ln T
  Q_tt (qbar_t - pbar_t)) (eq. 9 with the row's own key statistics), and the
  pair term of rows t < u is (n_s/n_t)(n_s/n_u) Yp(b_t, rho_tu, n_s) on their n_s
  shared keys with the queries' correlation rho_tu = Q_tu/sqrt(Q_tt Q_uu)
  (:mod:`numeric.row_moments`, exact for every n to ~1e-6).

It agrees with the overlap-matrix theory (:func:`numeric.gram_profile` with a
masked spec, which samples the scores instead of averaging them) to a few 1e-3
and reduces to uniform causal averaging at beta -> 0. A profile reads off the
all-pairs rho = p/q (ratios of averages over all positions), rho among chosen
positions (``tokens``), and rho of each position with the others.

At finite width (``d=``, ``d_head=``) :mod:`numeric.causal_width` adds each row's and each pair's O(1/d)
increments to this closure.

Entropy collapse of a causal layer is judged on rows with enough keys: the
mean IPR of the rows t >= ``min_keys`` - 1 (default: the last quarter of
positions; row 0 has one key and IPR 1 by construction) exceeds the threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from derive import masks

from . import validation as check
from .blas import single_threaded_blas
from .row_moments import RowMoments


class Attention:
    """The closure of a masked attention layer at sequence length T: Q (..., T, T) -> expected output overlaps.

    ``rope``: None, or RoPE's (theta, head_dim) (:mod:`derive.rope`): each row's width is then the hierarchical
    closure's (:class:`numeric.rope.Rows`) and the pair term of rows t < u sees the queries' correlation
    rho_tu c(u - t) (values are not rotated, so the value overlaps are unchanged).
    """

    def __init__(self, T: int, mask, rope=None, groups=None, width=None):
        self.T, self.mask, self.groups = T, mask, None
        if groups is None:
            self.first = np.array([mask.first_key(k) for k in range(T)])
            self.n = (np.arange(T) + 1 - self.first).astype(float)
            self.weight = np.ones(T)
        else:
            if mask.window is not None or rope is not None:
                raise ValueError("groups: position groups serve a causal mask without RoPE; use groups=None "
                                 "with a sliding window or RoPE")
            from .position_groups import PositionGroups
            self.groups = PositionGroups(T, groups)
            self.first = np.zeros(self.groups.positions.size, dtype=int)
            self.n = self.groups.positions + 1.0
            self.weight = self.groups.weight
        self.size = self.n.size                                             # positions the state carries
        self.rows, self.cols = np.triu_indices(self.size, 1)                # pairs t < u
        self._pairs(self.rows, self.cols)
        if self.groups is not None:                                         # nested prefixes: row t's keys
            self.n_s = self.n[self.rows]
        self.moments = _moments()
        self._y2_table = self.moments.y2_table(self.n)                       # the rows' key counts are fixed
        self.rope = None
        self.rotation = np.ones(T)                                          # c(u - t) by lag: 1 without RoPE
        if rope is not None:
            from .rope import Rows
            self.rope = Rows(T, self.first, self.n, *rope)
            self.rotation = self.rope.lags.copy()
        self.width = None
        if width is not None and rope is not None:      # RoPE's rows at finite width: numeric.rope_width
            from .rope_width import RowTerms
            self.width = RowTerms(self.n, *width[:2], T, *rope, *width[2:], causal=self.n.max() == T)
        elif width is not None:                         # (d, d_head[, "normalized"]): numeric.causal_width
            from .causal_width import WidthTerms
            self.width = WidthTerms(mask, self.first + self.n.astype(int) - 1, *width[:2], T, *width[2:])   # last key

    def _pairs(self, t, u):
        """Index ranges of the key classes of each pair (t < u): shared S = [f_u, t], K_t - S = [f_t, f_u)."""
        f_t, f_u = self.first[t], self.first[u]
        self.n_s = np.maximum(t + 1 - f_u, 0).astype(float)
        self.shared_lo, self.shared_hi = np.minimum(f_u, t + 1), t + 1     # S = [lo, hi), empty if f_u > t
        self.t_lo = f_t
        self.t_hi = self.shared_lo                                          # K_t - S = [f_t, lo)
        self.u_lo, self.u_hi = np.maximum(t + 1, f_u), u + 1                # K_u - S = [max(t + 1, f_u), u]

    def __call__(self, Q, beta, sigma_v2, gain):
        """The expected overlaps of the layer's outputs (sigma_v2 folded in), same shape as Q."""
        from . import _generated_causal as gen

        beta, sigma_v2 = np.asarray(beta, dtype=float), np.asarray(sigma_v2, dtype=float)
        C, D = self._sums(Q)
        stats = self._row_stats(Q, C, D, beta)
        out = np.empty_like(Q)
        norm = gen.attention_norm_gain if gain else gen.attention_norm
        idx = np.arange(self.size)
        out[..., idx, idx] = norm(stats.qbar, stats.pbar, stats.Y2, self.n, sigma_v2[..., None])
        if self.mask.window is None and self.fused:
            self._fused_overlaps(Q, C, stats, sigma_v2, gain, out)
        else:
            out[..., self.rows, self.cols] = self._overlaps(Q, C, D, stats, sigma_v2, gain, gen)
            out[..., self.cols, self.rows] = out[..., self.rows, self.cols]
        if self.width is not None:
            self.width.add(Q, stats, sigma_v2, out)
        return out

    @property
    def fused(self) -> bool:
        """Whether the pair loop runs as the numba kernel of :mod:`numeric._causal_jit` (numeric.fused's choice)."""
        from .fused import active
        return active()

    def _fused_overlaps(self, Q, C, stats, sigma_v2, gain, out):
        """The off-diagonal of nested causal prefixes by :func:`numeric._causal_jit.nested_overlaps`."""
        from ._causal_jit import nested_overlaps
        from .fused import batched

        batch = Q.shape[:-2]
        T = self.size
        b = batched(stats.b, batch, (T,))
        pairs = self.moments.pair_rows(b, self.n, self._pair_table(self.n))
        view = out.reshape((-1, T, T))
        nested_overlaps(batched(Q, batch, (T, T)), batched(C, batch, (T + 1, T + 1)), batched(stats.qbar, batch, (T,)),
                        batched(stats.pbar, batch, (T,)),
                        self.n, np.ascontiguousarray(pairs.kappa.reshape(-1, T)), pairs.coef,
                        batched(sigma_v2, batch, ()), bool(gain),
                        self.rotation, view)

    def _sums(self, Q):
        """Prefix sums C, D of Q (:func:`_prefix_sums`), or of its group-constant expansion."""
        return _prefix_sums(Q) if self.groups is None else self.groups.prefix_sums(Q)

    def ratio(self, Q, index=None) -> np.ndarray:
        """rho = p/q over the positions ``index`` (all if None): :func:`ratio`, or by position groups."""
        return ratio(Q, index) if self.groups is None else self.groups.ratio(Q, index)

    def by_position(self, Q) -> np.ndarray:
        """rho_t of each position with the others (..., T): :func:`by_position`, or by position groups."""
        return by_position(Q) if self.groups is None else self.groups.by_position(Q)

    def keys(self, positions) -> np.ndarray:
        """The number of keys the rows at ``positions`` (actual positions in [0, T)) see."""
        if self.groups is None:
            return self.n[positions]
        return np.asarray(positions) + 1.0

    def row_ipr(self, Q, beta) -> np.ndarray:
        """Y2 of every row of the state (..., size) for input overlaps Q: the entropy-collapse reading (at finite
        width the IPR averaged over the row's finite-width score scale, :meth:`WidthTerms.ipr`)."""
        C, D = self._sums(Q)
        stats = self._row_stats(Q, C, D, np.asarray(beta, dtype=float))
        if self.width is None:
            return stats.Y2
        return stats.Y2 + self.width.ipr(np.broadcast_to(stats.b, stats.Y2.shape), stats)

    def _row_stats(self, Q, C, D, beta):
        """Per row: the class means of its own keys, its width b_t and its IPR Y2(b_t, n_t)."""
        lo, hi, n = self.first, np.arange(1, self.size + 1), self.n
        qbar = (D[..., hi] - D[..., lo]) / n
        square = _rect(C, lo, hi, lo, hi)
        pbar = np.where(n > 1, (square - n * qbar) / np.maximum(n * (n - 1), 1.0), qbar)
        diag = np.diagonal(Q, axis1=-2, axis2=-1)
        if self.rope is None:
            spread = np.maximum(qbar - pbar, 0.0) * diag
            b = beta[..., None] * np.sqrt(math.log(self.T) * spread)
        else:
            QC, _ = _prefix_sums(Q * self.rope.C)
            rotated = self.rope.rotated_mean(QC, D, lo, hi)
            b = self.rope.widths(beta[..., None] ** 2 * math.log(self.T) * diag, qbar, rotated)
        return _RowStats(qbar, pbar, b, self.moments.y2(b, n, self._y2_table))

    def _overlaps(self, Q, C, D, stats, sigma_v2, gain, gen):
        """Upper-triangle entries (..., pairs): the closure of rows t < u."""
        t, u, n_s = self.rows, self.cols, self.n_s
        n_t, n_u = self.n[t], self.n[u]
        if self.mask.window is None:                  # nested prefixes: the shared keys are row t's own
            qbar, pbar = stats.qbar[..., t], stats.pbar[..., t]
            r_u = (C[..., t + 1, u + 1] - C[..., t + 1, t + 1]) / (n_t * (n_u - n_t))
            r_t = r_o = 0.0
        else:
            qbar, pbar, r_u, r_t, r_o = self._window_means(C, D, n_t, n_u)
        diag = np.diagonal(Q, axis1=-2, axis2=-1)
        rho = Q[..., t, u] / np.sqrt(diag[..., t] * diag[..., u]) * self.rotation[u - t]
        Yp = self._pair(stats.b, t, n_s, rho)
        Pi = gen.pair_term(Yp, n_t, n_u, n_s)
        if gain:
            return gen.attention_overlap_gain(qbar, pbar, r_u, r_t, r_o, Pi, n_t, n_u, n_s, sigma_v2[..., None])
        return gen.attention_overlap(qbar, pbar, r_u, r_t, r_o, Pi, n_t, n_u, n_s, sigma_v2[..., None])

    def _window_means(self, C, D, n_t, n_u):
        """The class means of every pair of rows under a sliding window (shared keys may be few or none)."""
        n_s, s_lo, s_hi = self.n_s, self.shared_lo, self.shared_hi
        qbar = np.where(n_s > 0, (D[..., s_hi] - D[..., s_lo]) / np.maximum(n_s, 1.0), 0.0)
        square = _rect(C, s_lo, s_hi, s_lo, s_hi)
        pbar = np.where(n_s > 1, (square - n_s * qbar) / np.maximum(n_s * (n_s - 1), 1.0), qbar)
        r_u = _mean(_rect(C, s_lo, s_hi, self.u_lo, self.u_hi), n_s * (n_u - n_s))
        r_t = _mean(_rect(C, self.t_lo, self.t_hi, s_lo, s_hi), (n_t - n_s) * n_s)
        r_o = _mean(_rect(C, self.t_lo, self.t_hi, self.u_lo, self.u_hi), (n_t - n_s) * (n_u - n_s))
        return qbar, pbar, r_u, r_t, r_o

    def _pair(self, b, t, n_s, rho):
        """Yp(b_t, rho_tu, n_s) for every pair: one function of rho per distinct (row t, n_s), built at once
        (T of them for causal prefixes, where n_s = n_t)."""
        rows, counts, inverse = self._combos
        flat_b = b.reshape(-1, self.size)
        batch = flat_b.shape[0]
        pairs = self.moments.pair_rows(flat_b[:, rows], counts, self._pair_table(counts))
        index = np.arange(batch)[:, None] * rows.size + inverse[None, :]
        flat_rho = np.clip(rho.reshape(batch, t.size), 0.0, 1.0)
        return pairs.at(index, flat_rho).reshape(b.shape[:-1] + (t.size,))

    def _pair_table(self, counts):
        """:meth:`numeric.row_moments.RowMoments.pair_table` of the key counts ``counts``, kept: the rows' counts
        are fixed, so the table is built once per layer closure."""
        key = counts.tobytes()
        if getattr(self, "_table_key", None) != key:
            self._table_key, self._table = key, self.moments.pair_table(counts)
        return self._table

    @property
    def _combos(self):
        """The distinct (row t, n_s) of the pairs: their rows, counts, and each pair's combination."""
        if not hasattr(self, "_combo_cache"):
            base = self.T + 1
            keys = self.rows * base + self.n_s.astype(int)
            unique, inverse = np.unique(keys, return_inverse=True)
            self._combo_cache = (unique // base, (unique % base).astype(float), inverse)
        return self._combo_cache


@dataclass
class _RowStats:
    qbar: np.ndarray
    pbar: np.ndarray
    b: np.ndarray
    Y2: np.ndarray


@lru_cache(maxsize=1)
def _moments() -> RowMoments:
    return RowMoments()


def _prefix_sums(Q):
    """C[..., i, j] = sum_{s < i, v < j} Q_sv (zero-padded) and D[..., i] = sum_{s < i} Q_ss."""
    C = np.zeros(Q.shape[:-2] + (Q.shape[-2] + 1, Q.shape[-1] + 1))
    np.cumsum(Q, axis=-2, out=C[..., 1:, 1:])
    np.cumsum(C[..., 1:, 1:], axis=-1, out=C[..., 1:, 1:])
    D = np.zeros(Q.shape[:-1][:-1] + (Q.shape[-1] + 1,))
    np.cumsum(np.diagonal(Q, axis1=-2, axis2=-1), axis=-1, out=D[..., 1:])
    return C, D


def _rect(C, a0, a1, b0, b1):
    """sum of Q over rows [a0, a1) and columns [b0, b1) (index arrays, empty ranges give 0)."""
    return C[..., a1, b1] - C[..., a0, b1] - C[..., a1, b0] + C[..., a0, b0]


def _mean(total, size):
    return np.where(size > 0, total / np.maximum(size, 1.0), 0.0)


# --- positions and readings -----------------------------------------------------------------------

def late(T: int) -> np.ndarray:
    """The last quarter of the positions (at least two): where a decoder's rows see most of the context."""
    return np.arange(min(T - 2, T - T // 4), T)


def positions(tokens, T: int) -> np.ndarray:
    """The positions ``tokens`` names: None (all), "late" (:func:`late`), a slice or an index array.

    ValueError unless they are at least two distinct positions in [0, T).
    """
    if tokens is None:
        return np.arange(T)
    if isinstance(tokens, str):
        if tokens != "late":
            raise ValueError(f"tokens must be None, 'late', a slice or an index array, got {tokens!r}")
        return late(T)
    if isinstance(tokens, slice):
        index = np.arange(T)[tokens]
    else:
        try:
            index = np.asarray(tokens)
        except (TypeError, ValueError):
            raise ValueError(f"tokens must be None, 'late', a slice or an index array, got {tokens!r}") from None
        if index.dtype == bool or not np.issubdtype(index.dtype, np.integer) or index.ndim != 1:
            raise ValueError(f"tokens must be a 1-D array of integer positions, got {tokens!r}")
        if np.any((index < 0) | (index >= T)):
            raise ValueError(f"tokens must lie in [0, T) = [0, {T}), got {tokens!r}")
    index = np.unique(index)
    if index.size < 2:
        raise ValueError(f"tokens must name at least two distinct positions (rho is an overlap of pairs), "
                         f"got {tokens!r}")
    return index


def ratio(Q, index=None) -> np.ndarray:
    """rho = p/q of the positions ``index`` (all by default): mean overlap of distinct pairs over mean norm."""
    if index is not None:
        Q = Q[..., index[:, None], index[None, :]]
    T = Q.shape[-1]
    q = np.trace(Q, axis1=-2, axis2=-1) / T
    p = (Q.sum(axis=(-2, -1)) - T * q) / (T * (T - 1))
    return p / q


def by_position(Q) -> np.ndarray:
    """rho_t of each position t with the others: mean_s!=t Q_ts over sqrt(Q_tt mean_s!=t Q_ss), shape (..., T)."""
    T = Q.shape[-1]
    diag = np.diagonal(Q, axis1=-2, axis2=-1)
    others = (Q.sum(axis=-1) - diag) / (T - 1)
    norms = (diag.sum(axis=-1, keepdims=True) - diag) / (T - 1)
    return others / np.sqrt(diag * norms)


# --- profiles ------------------------------------------------------------------------------------

def attention_layers(spec):
    """Every SelfAttention layer of a spec (a derive.layers.Layer, walked without importing SymPy: Sequence's
    layers, Parallel's branches, Residual's branch)."""
    if type(spec).__name__ == "SelfAttention":
        yield spec
    for inner in (list(getattr(spec, "layers", ())) + list(getattr(spec, "branches", ()))
                  + ([spec.branch] if hasattr(spec, "branch") else [])):
        yield from attention_layers(inner)


def is_masked(spec) -> bool:
    """Whether a spec has a masked attention layer."""
    return any(getattr(layer, "mask", None) is not None for layer in attention_layers(spec))


def has_gain(arch) -> bool:
    """Whether a named architecture or a spec has gain-controlled attention (Alg. 3)."""
    if isinstance(arch, str):
        return arch.startswith("gain-")
    return any(getattr(layer, "gain", None) for layer in attention_layers(arch))


def spec_mask(spec):
    """The mask of a spec's attention layers (one mask per spec)."""
    found = {layer.mask for layer in attention_layers(spec)}
    if len(found) != 1 or None in found:
        raise ValueError(f"a position-resolved profile needs one mask on every attention layer, got {found}")
    return found.pop()


def spec_rope(spec):
    """RoPE's (theta, head_dim) of a spec's attention layers (one setting per spec), or None."""
    found = {None if getattr(layer, "rope", None) is None else (layer.rope, layer.rope_dim)
             for layer in attention_layers(spec)}
    if len(found) > 1:
        raise ValueError(f"a position-resolved profile needs one RoPE setting on every attention layer, got {found}")
    return found.pop() if found else None


def block_function(arch, activation: str):
    """The generated position-resolved block map of a named architecture, or a custom spec compiled now."""
    from .codegen_causal import compile_causal
    if isinstance(arch, str):
        from ._generated_causal import CAUSAL_BLOCK_MAPS
        if (arch, activation) in CAUSAL_BLOCK_MAPS:
            return CAUSAL_BLOCK_MAPS[(arch, activation)]
        from derive.architectures import architecture      # an activation not shipped (silu, gelu_new)
        return _compiled(architecture(arch, activation, mask="causal"), compile_causal)
    return _compiled(arch, compile_causal)


_COMPILED: dict = {}


def _compiled(spec, compile_causal):
    key = repr(spec)
    if key not in _COMPILED:
        _COMPILED[key] = compile_causal(spec)
    return _COMPILED[key]


@dataclass
class CausalRun:
    """Readings of a position-resolved iteration, per block (entry 0: the input).

    ``rho``: all-pairs rho; ``rho_tokens``: rho among the chosen positions; ``by_position``: rho of each
    position with the others (depth + 1, ..., T); ``ipr``: per attention layer, the IPR of each row (..., T).
    """

    rho: np.ndarray
    rho_tokens: np.ndarray
    by_position: np.ndarray
    ipr: list
    Q: np.ndarray


def iterate(block, attention: Attention, values: dict, depth: int, rho0, tokens: np.ndarray, *,
            record: bool = True, ipr: str = "first") -> CausalRun:
    """Apply ``depth`` blocks to the input overlaps Q0 = (1 - rho0) I + rho0 (broadcast over the parameters).

    ``ipr``: read each row's IPR at the attention input of the "first" block, "all" blocks or "none".
    """
    from derive.parameters import NAMES

    shape = np.broadcast_shapes(np.shape(rho0), *(np.shape(v) for v in values.values()))
    rho0 = np.broadcast_to(np.asarray(rho0, dtype=float), shape)[..., None, None]
    Q = rho0 + (1.0 - rho0) * np.eye(attention.size)
    args = [np.asarray(values[k], dtype=float)[..., None, None] if np.ndim(values[k]) else float(values[k])
            for k in NAMES]
    extra = {k: v for k, v in values.items() if k not in NAMES}

    def layer_attention(Q, beta, sigma_v2, gain):
        return attention(Q, np.broadcast_to(np.asarray(beta)[..., 0, 0] if np.ndim(beta) else beta, shape),
                         np.broadcast_to(np.asarray(sigma_v2)[..., 0, 0] if np.ndim(sigma_v2) else sigma_v2, shape),
                         gain)

    readings = [_read(attention, Q, tokens)] if record else []
    iprs = []
    beta = np.broadcast_to(np.asarray(values["beta"], dtype=float), shape)
    with np.errstate(all="ignore"), single_threaded_blas():     # small products: threads only add waiting
        for layer in range(depth):
            Q, inputs = block(Q, *args, layer_attention, **extra)
            _check(Q, layer, values)
            if ipr == "all" or (ipr == "first" and layer == 0):
                iprs.extend(attention.row_ipr(q_in, beta) for q_in in inputs)
            if record:
                readings.append(_read(attention, Q, tokens))
    if not record:
        readings = [_read(attention, Q, tokens)]
    rho, rho_tokens, position = (np.stack(x) for x in zip(*readings))
    return CausalRun(rho, rho_tokens, position, iprs, Q)


def _read(attention, Q, tokens):
    return attention.ratio(Q), attention.ratio(Q, tokens), attention.by_position(Q)


def _check(Q, layer, values):
    diag = np.diagonal(Q, axis1=-2, axis2=-1)
    if not (np.all(np.isfinite(Q)) and np.all(diag > 0)):
        raise ValueError(f"the position-resolved overlaps are not finite or a token vanished after block "
                         f"{layer + 1} (parameters {_describe(values)}): use alpha_sa > 0 and moderate strengths")


def _describe(values):
    return {k: (float(v) if np.ndim(v) == 0 else f"array{np.shape(v)}") for k, v in values.items()}


def prepare(arch, depth, *, beta, T, rho0, activation, mask, tokens, params, groups=None, d=None, d_head=None,
            inputs="gaussian"):
    """Validate a causal profile's input; return (block, attention, values, depth, rho0, token index).

    ``groups``: None (every position carries the state) or the number K of position groups
    (:mod:`numeric.position_groups`; an integer >= 8, a causal mask without RoPE). ``d``, ``d_head``: finite
    width (:mod:`numeric.causal_width`; None: infinite width); ``inputs``: "gaussian" or "normalized" tokens
    (:func:`numeric.profile.finite_width`).
    """
    from .profile import block_values, finite_width

    arch = check.architecture(arch)
    depth = check.depth(depth)
    T = check.sequence_length(T, infinite=False)
    if isinstance(arch, str):
        check.activation(activation)
        mask = masks.parse(mask)
        if mask is None:
            raise ValueError("mask must be 'causal' or 'sliding:W' for a position-resolved profile")
        rope = None
    else:
        mask, rope = spec_mask(arch), spec_rope(arch)
    rho0 = check.rho0(rho0, T)
    if groups is not None:
        groups = min(check.count("groups", groups, 8), T)
    values = block_values(arch, beta, params)
    width = finite_width(d, d_head, T, inputs, arch)
    return (block_function(arch, activation), _attention(T, mask, rope, groups, width), values, depth, rho0,
            positions(tokens, T))


@lru_cache(maxsize=8)
def _attention(T: int, mask, rope=None, groups=None, width=None) -> Attention:
    return Attention(T, mask, rope, groups, width)


def cosine_profile(arch, depth, *, beta, T, rho0=0.0, activation="relu", mask="causal", tokens=None, groups=None,
                   d=None, d_head=None, inputs="gaussian", **params):
    """rho before block 1 and after each block of a masked stack: all pairs, or among ``tokens`` if given.

    Shape (depth + 1, *broadcast of the parameters). ``arch``: a named architecture with ``mask``
    ("causal" or "sliding:W"), or a spec whose attention layers carry a mask. ``groups``: None, or K
    position groups carrying the state (:mod:`numeric.position_groups`: faster at long context).
    ``d``, ``d_head``: finite width, the increments of :mod:`numeric.causal_width` (at most 512 carried
    positions under a causal mask, 64 with a sliding window; None: infinite width).
    """
    block, attention, values, depth, rho0, index = prepare(arch, depth, beta=beta, T=T, rho0=rho0,
                                                           activation=activation, mask=mask, tokens=tokens,
                                                           params=params, groups=groups, d=d, d_head=d_head,
                                                           inputs=inputs)
    run = iterate(block, attention, values, depth, rho0, index, ipr="none")
    return run.rho if tokens is None else run.rho_tokens


def position_profile(arch, depth, *, beta, T, rho0=0.0, activation="relu", mask="causal", groups=None, d=None,
                     d_head=None, inputs="gaussian", **params):
    """rho_t of each position with the others, before block 1 and after each block: shape (depth + 1, ..., T).

    ``groups``, ``d``, ``d_head``: as :func:`cosine_profile` (constant within a group)."""
    block, attention, values, depth, rho0, index = prepare(arch, depth, beta=beta, T=T, rho0=rho0,
                                                           activation=activation, mask=mask, tokens=None,
                                                           params=params, groups=groups, d=d, d_head=d_head,
                                                           inputs=inputs)
    return iterate(block, attention, values, depth, rho0, index, ipr="none").by_position


# --- phases --------------------------------------------------------------------------------------

def critical_alpha(arch, depth, *, beta, T, eps=0.01, rho0=0.0, activation="relu", mask="causal", tokens=None,
                   rtol=1e-6, alpha_max=1e6, bracket=None, groups=None, d=None, d_head=None, inputs="gaussian",
                   **params):
    """Smallest alpha_sa with rho after ``depth`` blocks <= 1 - eps: all pairs, or among ``tokens``.

    The one root finder, :func:`numeric.solve.smallest_alpha`, on the position-resolved profile
    (``groups``: as :func:`cosine_profile`; ``d``, ``d_head``: finite width under a causal mask, from
    :func:`numeric.causal_width.causal_tables`).
    """
    from . import solve

    eps = check.interval("eps", eps, 0.0, 1.0, closed=False)
    if "alpha_sa" in params:
        raise ValueError("critical_alpha solves for alpha_sa: do not pass it")
    _tabulated(arch, mask, d)
    block, attention, values, depth, rho0, index = prepare(arch, depth, beta=beta, T=T, rho0=rho0,
                                                           activation=activation, mask=mask, tokens=tokens,
                                                           params=params, groups=groups, d=d, d_head=d_head,
                                                           inputs=inputs)
    values = {k: v for k, v in values.items() if k != "alpha_sa"}
    names = tuple(values)

    def gap(alpha, target, rho0_, *arrays):
        run = iterate(block, attention, {**dict(zip(names, arrays)), "alpha_sa": alpha}, depth, rho0_, index,
                      record=False, ipr="none")
        return (run.rho if tokens is None else run.rho_tokens)[-1] - target

    shape = np.broadcast_shapes(np.shape(eps), np.shape(rho0), *(np.shape(v) for v in values.values()))
    return solve.smallest_alpha(gap, shape, rtol=rtol, alpha_max=alpha_max, bracket=bracket,
                                args=(1.0 - eps, rho0, *values.values()))


#: Most matrix entries (points x T x T) held by one chunk of a diagram.
CHUNK_ENTRIES = 1 << 22


def min_keys_default(attention: Attention) -> int:
    """The fewest keys among the late rows (the last quarter of positions): rows that see most of the context."""
    return int(attention.keys(late(attention.T)).min())


def trainability_diagram(arch, depth, *, betas, alphas, eps=0.01, T, rho0=0.0, activation="relu",
                         criterion="first", ipr_threshold=0.5, progress=None, mask="causal", min_keys=None,
                         groups=None, d=None, d_head=None, inputs="gaussian", **params):
    """Phases of a masked stack over the grid (alphas x betas): :class:`numeric.diagram.Diagram` with ``late``.

    Rank collapse: rho after the last block > 1 - eps, judged on all pairs (``phase``) and, separately, on
    the late positions (``late["phase"]``). Entropy collapse: the mean IPR E sum_s A_ts^2 of the rows with
    at least ``min_keys`` keys (default: those of the last quarter of positions; short rows have an IPR near
    1 by construction) exceeds ``ipr_threshold`` in the first attention layer (``criterion="first"``) or in
    any (``"any"``). ``groups``: as :func:`cosine_profile` (the row IPRs weighted by their groups' sizes).
    ``d``, ``d_head``: finite width under a causal mask (:func:`critical_alpha`; the rows' IPRs at finite width).
    """
    from .diagram import ENTROPY_COLLAPSE, RANK_COLLAPSE, TRAINABLE, Diagram, _grid_bracket, _name, grid_inputs
    from .solve import ALPHA_ZERO

    betas, alphas, eps, ipr_threshold = grid_inputs(betas, alphas, eps, criterion, ipr_threshold, params)
    B, A = np.meshgrid(betas, np.maximum(alphas, ALPHA_ZERO))
    _tabulated(arch, mask, d)
    block, attention, values, depth, rho0, index = prepare(
        arch, depth, beta=B.ravel(), T=T, rho0=rho0, activation=activation, mask=mask, tokens="late",
        params={**params, "alpha_sa": A.ravel()}, groups=groups, d=d, d_head=d_head, inputs=inputs)
    judged, weight = _judged_rows(attention, min_keys)
    rho, rho_late, condensed = (np.empty(B.size) for _ in range(3))
    step = max(1, CHUNK_ENTRIES // attention.size ** 2)
    for start in range(0, B.size, step):
        sl = slice(start, min(start + step, B.size))
        chunk = {k: (v[sl] if np.ndim(v) else v) for k, v in values.items()}
        run = iterate(block, attention, chunk, depth, rho0, index, record=False,
                      ipr="all" if criterion == "any" else "first")
        rho[sl], rho_late[sl] = run.rho[-1], run.rho_tokens[-1]
        condensed[sl] = np.any([ipr[..., judged] @ weight > ipr_threshold for ipr in run.ipr], axis=0)
        if progress is not None:
            progress(sl.stop - sl.start)
    condensed = condensed.astype(bool).reshape(B.shape)

    def phases(r):
        return np.where(condensed, ENTROPY_COLLAPSE, np.where(r.reshape(B.shape) > 1.0 - eps, RANK_COLLAPSE, TRAINABLE))

    kw = dict(eps=eps, T=T, rho0=rho0, activation=activation, mask=mask, groups=groups, d=d, d_head=d_head,
              inputs=inputs, **params)
    boundary = critical_alpha(arch, depth, beta=betas, bracket=_grid_bracket(rho.reshape(B.shape), A[:, 0], eps), **kw)
    boundary_late = critical_alpha(arch, depth, beta=betas, tokens="late",
                                   bracket=_grid_bracket(rho_late.reshape(B.shape), A[:, 0], eps), **kw)
    late_info = {"rho": rho_late.reshape(B.shape), "phase": phases(rho_late), "critical_alpha": boundary_late,
                 "positions": index, "min_keys": int(attention.n[judged].min()), "mask": attention.mask,
                 "groups": groups}
    width = {} if attention.width is None else {"d": attention.width.d, "d_head": attention.width.d_head,
                                                "inputs": attention.width.inputs}
    return Diagram(betas, alphas, phases(rho), rho.reshape(B.shape), np.asarray(boundary), _name(arch), depth, eps,
                   T, criterion, {**params, "activation": activation, "rho0": float(rho0), **width}, late=late_info)


def _tabulated(arch, mask, d) -> None:
    """ValueError unless the layers' finite-width terms (if any) are tabulated: a sliding window's are computed
    pair by pair, which serves profiles but not the many evaluations of critical_alpha and diagrams (with RoPE
    the rows' table of numeric.rope_width serves any mask)."""
    if d is None:
        return
    window = spec_mask(arch) if not isinstance(arch, str) else masks.parse(mask)
    rotary = not isinstance(arch, str) and spec_rope(arch) is not None
    if window is not None and window.window is not None and not rotary:
        raise ValueError("d= (finite width) with a sliding window is served in profiles (cosine_profile, "
                         "position_profile), not in critical_alpha or diagrams: each pair of rows is an integral over "
                         "the score law (numeric.causal_width tabulates the causal mask only)")


def _judged_rows(attention: Attention, min_keys):
    """The rows entropy collapse is judged on, those with at least ``min_keys`` keys (default: the late rows'),
    and the weights of their mean (each row's share of the positions it stands for)."""
    if min_keys is None:
        min_keys = min_keys_default(attention)
    min_keys = check.count("min_keys", min_keys, 2)
    rows = np.nonzero((attention.n >= min_keys) & (attention.weight > 0))[0]
    if rows.size == 0:
        raise ValueError(f"min_keys = {min_keys} exceeds every row's key count (at most {int(attention.n.max())})")
    weight = attention.weight[rows]
    return rows, weight / weight.sum()
