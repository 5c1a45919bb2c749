"""Depth profiles beyond the (q, p) closure: the whole overlap matrix at infinite width (issue 6).

The block maps of :mod:`numeric.profile` track two numbers, the norm q and
one overlap p shared by every pair of tokens (the mean-field assumption of
B.2.1). Condensed attention breaks it: rows that pick the same key come out
nearly equal, the next layer sees clusters of overlaps, and averaging a
nonlinear map over that spread is not the map of the average (errata 10).

At infinite width the T x T overlap matrix Q_ts = X_t.X_s/d still evolves
exactly and cheaply: value, MLP and LayerNorm maps act on Q deterministically,
and the attention scores are Gaussian given Q with Cov(a_ts, a_kl) =
beta^2 ln T Q_tk Q_sl (eq. 9), random in every layer even as d -> oo. So
:func:`gram_profile` samples the scores layer by layer
(:meth:`derive.layers.Layer.gram_map`) and reports rho with its Monte Carlo
standard error. It is exact for any T at d = oo, with no closure; what is left
against a finite-width network is O(1/d). It costs O(T^3) per block and
sample (a few seconds for 30 blocks at T = 256) against O(1) for
:func:`numeric.cosine_profile`, and it imports SymPy (:mod:`derive`) on first
use for the activation kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import validation as check

#: Samples processed together (arrays of BATCH x T x T).
BATCH = 8


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
                 sigma_v2=1.0, sigma_w2=2.0, sigma_b2=0.0, activation="relu", progress=None) -> GramProfile:
    """Depth profile of ``arch`` from the infinite-width overlap matrix (module doc), scalar parameters.

    ``T``: an integer >= 2; ``samples`` >= 2 independent draws of every layer's
    scores (seeded by ``seed``); ``rho0`` the input cosine similarity of all pairs,
    in [-1/(T-1), 1] (a positive semi-definite input). ``progress``: a callable
    taking the number of samples done.
    """
    from derive.architectures import architecture

    spec = architecture(check.architecture(arch), check.activation(activation))
    depth = check.depth(depth)
    T = check.sequence_length(T)
    if T is None:
        raise ValueError("gram_profile needs a finite integer T >= 2 (the overlap matrix is T x T)")
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 2:
        raise ValueError(f"samples must be an integer >= 2 (for a standard error), got {samples!r}")
    rho0 = float(check.interval("rho0", rho0, -1.0 / (T - 1), 1.0, closed=True))
    params = check.block_parameters(beta=beta, alpha_sa=alpha_sa, alpha_mlp=alpha_mlp, sigma_v2=sigma_v2,
                                    sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    if any(np.ndim(v) for v in params.values()):
        raise ValueError("gram_profile takes scalar parameters (one profile per call)")
    params = {k: float(v) for k, v in params.items()}
    rng = np.random.default_rng(seed)
    q, p = np.empty((samples, depth + 1)), np.empty((samples, depth + 1))
    for start in range(0, samples, BATCH):
        n = min(BATCH, samples - start)
        Q = np.broadcast_to(rho0 + (1.0 - rho0) * np.eye(T), (n, T, T)).copy()
        q[start:start + n, 0], p[start:start + n, 0] = _moments(Q)
        with np.errstate(over="ignore", under="ignore"):
            for layer in range(depth):
                Q = spec.gram_map(Q, params, rng)
                q[start:start + n, layer + 1], p[start:start + n, layer + 1] = _moments(Q)
        if progress is not None:
            progress(n)
    return _estimate(q, p)


def _moments(Q):
    """Per sample: the mean norm (diagonal) and the mean overlap of distinct tokens."""
    T = Q.shape[-1]
    diagonal = np.diagonal(Q, axis1=-2, axis2=-1).sum(axis=-1)
    return diagonal / T, (Q.sum(axis=(-2, -1)) - diagonal) / (T * (T - 1))


def _estimate(q, p) -> GramProfile:
    mean_q = q.mean(axis=0)
    rho = p.mean(axis=0) / mean_q
    influence = (p - rho * q) / mean_q
    se = influence.std(axis=0, ddof=1) / np.sqrt(q.shape[0])
    return GramProfile(rho, se, q, p)

