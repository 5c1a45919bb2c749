"""Depth profiles beyond the (q, p) closure: the whole overlap matrix at infinite width (issue 6).

The block maps of :mod:`numeric.profile` track two numbers, the norm q and
one overlap p shared by every pair of tokens (the mean-field assumption of
B.2.1). Condensed attention breaks it: rows that pick the same key come out
nearly equal, the next layer sees clusters of overlaps, and averaging a
nonlinear map over that spread is not the map of the average (errata 10).

At infinite width the T x T overlap matrix Q_ts = X_t.X_s/d still evolves
exactly: value, MLP and LayerNorm maps act on Q deterministically,
and the attention scores are Gaussian given Q with Cov(a_ts, a_kl) =
beta^2 ln T Q_tk Q_sl (eq. 9), random in every layer even as d -> oo. So
:func:`gram_profile` samples the scores layer by layer
(:meth:`derive.layers.Layer.gram_map`) and reports rho with its Monte Carlo
standard error. It is exact for any T at d = oo, with no closure; what is left
against a finite-width network are finite-width effects. It costs O(T^3) per
block and sample (about 15 s for 64 samples of 30 blocks at T = 256 with a
closed-form kernel; tanh's kernel is tabulated once per norm, ~6 s more)
against O(1) for :func:`numeric.cosine_profile`, and it imports SymPy
(:mod:`derive`) on first use for the activation kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import validation as check
from .profile import block_values

#: Samples processed together (arrays of BATCH x T x T).
BATCH = 8
#: Largest T: BATCH matrices of T x T doubles and their products must fit in memory (8 x 4096^2 x 8 B = 1 GB).
MAX_T = 4096
#: Points in the overlap ratio of a tabulated kernel (linear interpolation; error ~ (2/KERNEL_POINTS)^2 K''/8).
KERNEL_POINTS = 1025


@dataclass
class GramProfile:
    """rho before block 1 and after each block, with its standard error, from ``samples`` score draws.

    ``q``, ``p``: per-sample mean norm and mean off-diagonal overlap, shape (samples, depth+1).
    rho = mean(p)/mean(q) (the estimator of :func:`verify.montecarlo.profile`), se by the delta method.
    """

    rho: np.ndarray
    se: np.ndarray
    q: np.ndarray
    p: np.ndarray


def gram_profile(arch, depth, *, beta, T, samples=32, seed=0, rho0=0.0, alpha_sa=1.0, alpha_mlp=1.0,
                 sigma_v2=1.0, sigma_w2=2.0, sigma_b2=0.0, activation="relu", progress=None, mask=None,
                 tokens=None, **extra) -> GramProfile:
    """Depth profile of ``arch`` from the infinite-width overlap matrix (module doc), scalar parameters.

    ``T``: an integer in [2, :data:`MAX_T`]; ``samples`` >= 2 independent draws of
    every layer's scores (seeded by ``seed``, an integer >= 0; the draws depend on
    :data:`BATCH` too); ``rho0`` the input cosine similarity of all pairs, in
    [-1/(T-1), 1] (a positive semi-definite input). ``extra``: values of a custom
    spec's parameters beyond the contract's. ``progress``: a callable taking the
    number of samples done. ``mask`` ("causal", "sliding:W") masks a named architecture's attention
    (a spec carries its own); ``tokens`` (None, "late", a slice or an index array) takes q and p over
    those positions only: the reference of the position-resolved theory (:mod:`numeric.causal`).
    """
    from derive.architectures import architecture
    from derive.layers import GramContext

    from .causal import positions

    arch = check.architecture(arch)
    if mask is not None and not isinstance(arch, str):
        raise ValueError("mask= applies to a named architecture; a spec carries its own masks")
    spec = architecture(arch, check.activation(activation), mask=mask)
    depth = check.depth(depth)
    T = check.sequence_length(T)
    if T is None or T > MAX_T:
        raise ValueError(f"gram_profile needs a finite integer T in [2, {MAX_T}] (it holds T x T matrices), got {T}")
    index = positions(tokens, T)
    samples = check.count("samples", samples, 2)
    seed = check.count("seed", seed, 0)
    rho0 = check.rho0(rho0, T)
    if rho0.ndim:
        raise ValueError(f"rho0 must be a scalar (one profile per call), got shape {rho0.shape}")
    rho0 = float(rho0)
    params = block_values(arch, beta, dict(alpha_sa=alpha_sa, alpha_mlp=alpha_mlp, sigma_v2=sigma_v2,
                                           sigma_w2=sigma_w2, sigma_b2=sigma_b2, **extra))
    for name, value in params.items():
        if np.ndim(value):
            raise ValueError(f"{name} must be a scalar in gram_profile (one profile per call), got shape "
                             f"{np.shape(value)}")
    params = {k: float(v) for k, v in params.items()}
    ctx = GramContext(np.random.default_rng(seed), _Kernels())
    q, p = np.empty((samples, depth + 1)), np.empty((samples, depth + 1))
    for start in range(0, samples, BATCH):
        n = min(BATCH, samples - start)
        Q = np.broadcast_to(rho0 + (1.0 - rho0) * np.eye(T), (n, T, T)).copy()
        q[start:start + n, 0], p[start:start + n, 0] = _moments(Q, index)
        for layer in range(depth):
            with np.errstate(all="ignore"):                      # checked right below, with a message
                Q = spec.gram_map(Q, params, ctx)
                moments = _moments(Q, index)
            _check_finite(Q, moments, layer, params)
            q[start:start + n, layer + 1], p[start:start + n, layer + 1] = moments
        if progress is not None:
            progress(n)
    return _estimate(q, p)


def _check_finite(Q, moments, layer, params):
    """A layer produced a non-finite or zero-norm token (overflow, or 0/0 in a LayerNorm): say where."""
    diagonal = np.diagonal(Q, axis1=-2, axis2=-1)
    if not (np.all(np.isfinite(Q)) and np.all(diagonal > 0) and np.all(np.isfinite(moments))):
        raise ValueError(f"the overlap matrix is not finite or a token vanished after block {layer + 1} "
                         f"(parameters {params}): an attention branch with its skip off (alpha_sa = 0) can output "
                         "exactly zero, and very large residual strengths overflow; use alpha_sa > 0, or smaller "
                         "strengths")


class _Kernels:
    """Activation kernels for :class:`derive.layers.GramContext`: closed forms from derive; for an activation
    without one (tanh), K(q, q r) tabulated in r on :data:`KERNEL_POINTS` points per distinct q by
    quadrature (:mod:`numeric.quadrature`, accuracy ~1e-10) and interpolated linearly (error ~5e-7 K'')."""

    def __init__(self):
        self.functions, self.tables = {}, {}

    def __call__(self, name):
        if name not in self.functions:
            from derive.layers import closed_form_kernel
            try:
                self.functions[name] = closed_form_kernel(name)
            except ValueError:                                   # no closed form: tabulate
                self.functions[name] = lambda q, c: self._tabulated(name, q, c)
        return self.functions[name]

    def _tabulated(self, name, q, c):
        from .safe import KERNELS
        grid = np.linspace(-1.0, 1.0, KERNEL_POINTS)
        q = np.broadcast_to(q, c.shape[:-2] + (1, 1))
        out = np.empty(c.shape)
        for index in np.ndindex(*c.shape[:-2]):
            value = float(q[index + (0, 0)])
            key = (name, value)
            if key not in self.tables:
                self.tables[key] = KERNELS[name](np.full(grid.shape, value), value * grid)
            out[index] = np.interp(np.clip(c[index] / value, -1.0, 1.0), grid, self.tables[key])
        return out


def _moments(Q, index=None):
    """Per sample: the mean norm (diagonal) and the mean overlap of distinct tokens (of ``index`` only)."""
    if index is not None:
        Q = Q[..., index[:, None], index[None, :]]
    T = Q.shape[-1]
    diagonal = np.diagonal(Q, axis1=-2, axis2=-1).sum(axis=-1)
    return diagonal / T, (Q.sum(axis=(-2, -1)) - diagonal) / (T * (T - 1))


def _estimate(q, p) -> GramProfile:
    mean_q = q.mean(axis=0)
    rho = p.mean(axis=0) / mean_q
    influence = (p - rho * q) / mean_q
    se = influence.std(axis=0, ddof=1) / np.sqrt(q.shape[0])
    return GramProfile(rho, se, q, p)
