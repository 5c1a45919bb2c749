"""Depth profiles of the cosine similarity, and the critical residual strength.

Iterating a compiled block map (paper Algorithms 1-3) from the input overlap
q0 = 1, p0 = rho0 gives rho = p/q before the first block and after each block
(:func:`cosine_profile`). Rank collapse at depth L means rho_L > 1 - eps;
:func:`critical_alpha` finds the smallest alpha_sa that avoids it, by a
vectorised bisection (rho_L decreases with alpha_sa: a stronger skip keeps more
of the input; see tests/numeric/test_profile.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import validation as check
from .columns import column_moments
from .maps import block_function, moment_functions

DEFAULTS = dict(alpha_sa=1.0, alpha_mlp=1.0, sigma_v2=1.0, sigma_w2=2.0, sigma_b2=0.0)


@dataclass
class Run:
    """The state of an iteration over depth: final (q, p) and what was recorded."""

    q: np.ndarray
    p: np.ndarray
    rho: list            # rho before block 1 and after each block (when recorded)
    att_q: list          # input overlaps of each block's attention layer
    att_p: list


def prepare(arch, depth, *, beta, T, rho0, activation, params):
    """Validate everything a depth iteration needs; return (block, moments, values, depth, T, rho0)."""
    arch = check.architecture(arch)
    depth = check.depth(depth)
    T = check.sequence_length(T)
    rho0 = check.interval("rho0", rho0, -1.0, 1.0, closed=True)
    if isinstance(arch, str):
        check.activation(activation)
    values = block_values(arch, beta, params)
    return block_function(arch, activation, T), moment_functions(T), values, depth, T, rho0


def block_values(arch, beta, params) -> dict:
    """beta and ``params`` checked: the contract's block parameters (defaults filled in) and a custom
    spec's own ones (:func:`check_extra_parameters`), by name. ``arch`` as :func:`check.architecture` returns it."""
    extra = check_extra_parameters(arch, params)
    values = check.block_parameters(beta=beta, **{**DEFAULTS, **{k: v for k, v in params.items() if k in DEFAULTS}})
    values.update({name: check.nonnegative(name, params[name]) for name in extra})
    return values


#: The contract's block parameters, in the order of the compiled maps' positional arguments.
POSITIONAL = ("beta", "alpha_sa", "alpha_mlp", "sigma_v2", "sigma_w2", "sigma_b2")


def check_extra_parameters(arch, params) -> tuple:
    """The names of ``arch``'s parameters beyond the contract's; ValueError for unknown or missing ones."""
    extra = _extra_names(arch)
    unknown = set(params) - set(DEFAULTS) - set(extra)
    if unknown:
        allowed = ", ".join(("beta",) + tuple(DEFAULTS) + extra)
        raise ValueError(f"unknown parameter(s) {sorted(unknown)}; allowed: {allowed}")
    missing = set(extra) - set(params)
    if missing:
        raise ValueError(f"the spec uses parameter(s) {sorted(missing)} beyond the contract's: give their values")
    return extra


def _extra_names(arch) -> tuple:
    """Parameter names a custom spec uses beyond the contract's (none for a named architecture)."""
    if isinstance(arch, str):
        return ()
    return tuple(sorted(set(arch.parameters()) - set(POSITIONAL)))


def iterate(block, moments, values: dict, depth: int, T, rho0, *, record: bool = True,
            attention: str = "all") -> Run:
    """Apply ``depth`` blocks to q0 = 1, p0 = rho0 (broadcast over the parameter arrays).

    ``record``: keep rho after every block. ``attention``: keep the input
    overlaps of the attention layer of "all" blocks, the "first" only, or "none".
    """
    Y2, Yp = moments
    T_value = np.inf if T is None else float(T)
    shape = np.broadcast_shapes(np.shape(rho0), *(np.shape(v) for v in values.values()))
    q = np.ones(shape)
    p = np.broadcast_to(rho0, shape).astype(float)
    run = Run(q, p, [p / q] if record else [], [], [])
    args = [_scalar_or_array(values[k]) for k in POSITIONAL]
    extra = {k: _scalar_or_array(v) for k, v in values.items() if k not in POSITIONAL}
    with np.errstate(all="ignore"):
        for layer in range(depth):
            q, p, q_att, p_att = block(q, p, *args, T_value, Y2, Yp, **extra)
            q = np.broadcast_to(q, shape)
            if not (np.all(q > 0) and np.all(np.isfinite(p))):
                _vanishing(q, p, values, layer)
            p = np.clip(p, -q, q)
            if record:
                run.rho.append(p / q)
            if attention == "all" or (attention == "first" and layer == 0):
                run.att_q.append(np.broadcast_to(q_att, shape))
                run.att_p.append(np.broadcast_to(p_att, shape))
    run.q, run.p = q, p
    return run


def _vanishing(q, p, values, layer):
    """A layer's output is exactly zero somewhere (a LayerNorm after it is 0/0): say where and why."""
    bad = np.atleast_1d(~(q > 0) | ~np.isfinite(p))
    where = {k: float(np.atleast_1d(np.broadcast_to(v, q.shape))[bad][0]) for k, v in values.items()}
    raise ValueError(
        f"the signal vanishes in block {layer + 1} (at {int(bad.sum())} point(s), e.g. {where}): an "
        "attention branch outputs exactly zero in the T -> oo theory while its skip is off (alpha_sa = 0). "
        "Spread attention (beta <= beta_c) averages orthogonal tokens (p = 0) to zero, and gain control "
        "removes that average for any p; use alpha_sa > 0 or a finite T")


def _scalar_or_array(value):
    """A Python float for a 0-d value: the compiled maps then do scalar, not array, arithmetic."""
    return float(value) if np.ndim(value) == 0 else value


def cosine_profile(arch, depth, *, beta, T=None, rho0=0.0, alpha_sa=1.0, alpha_mlp=1.0, sigma_v2=1.0,
                   sigma_w2=2.0, sigma_b2=0.0, activation="relu", **extra):
    """rho = p/q before block 1 and after each of ``depth`` blocks: shape (depth+1, *broadcast).

    ``arch``: "post-ln" (Alg. 1), "pre-ln" (Alg. 2, corrected), "gain-post-ln"
    (Alg. 3), "gain-pre-ln", or a derive spec. Parameters broadcast together;
    ``T=None`` is the asymptotic theory, an integer T the exact finite-T theory.
    ``extra``: values of a custom spec's parameters beyond the contract's
    (e.g. a second MLP weight variance; see :func:`numeric.codegen.extra_parameters`).
    """
    params = dict(alpha_sa=alpha_sa, alpha_mlp=alpha_mlp, sigma_v2=sigma_v2, sigma_w2=sigma_w2, sigma_b2=sigma_b2,
                  **extra)
    block, moments, values, depth, T, rho0 = prepare(arch, depth, beta=beta, T=T, rho0=rho0,
                                                      activation=activation, params=params)
    return np.stack(iterate(block, moments, values, depth, T, rho0).rho)


def final_rho(block, moments, values, depth, T, rho0) -> np.ndarray:
    """rho after the last block (no per-layer record)."""
    run = iterate(block, moments, values, depth, T, rho0, record=False, attention="none")
    return run.p / run.q


def critical_alpha(arch, depth, *, beta, eps=0.01, T=None, rho0=0.0, activation="relu", rtol=1e-6,
                   alpha_max=1e6, bracket=None, **params):
    """Smallest alpha_sa with rho after ``depth`` blocks <= 1 - eps (Fig. 1c's boundary).

    Vectorised over ``beta`` (and any other parameter). Returns 0 where any
    alpha_sa > 0 avoids rank collapse and ``inf`` where no alpha_sa <= alpha_max
    does (e.g. when the MLP alone collapses the tokens). Relative accuracy ``rtol``.
    ``bracket``: optional arrays (lo, hi) known to enclose the answer (rank
    collapse at lo, none at hi; hi = inf where unknown), e.g. from a grid.
    """
    eps = check.interval("eps", eps, 0.0, 1.0, closed=False)
    if "alpha_sa" in params:
        raise ValueError("critical_alpha solves for alpha_sa: do not pass it")
    block, moments, values, depth, T, rho0 = prepare(arch, depth, beta=beta, T=T, rho0=rho0,
                                                      activation=activation, params=params)
    target = 1.0 - eps
    if T is not None and np.ndim(values["beta"]) > 0:
        moments = column_moments(T, values["beta"]).bind(values["beta"])

    def ok(alpha):
        return final_rho(block, moments, {**values, "alpha_sa": alpha}, depth, T, rho0) <= target

    shape = np.broadcast_shapes(np.shape(eps), np.shape(rho0), *(np.shape(v) for v in values.values()))
    return _bisect(ok, shape, rtol, alpha_max, bracket)


#: alpha_sa = 0 in a search or a grid stands for the limit alpha_sa -> 0+: at T = oo an attention
#: output can vanish exactly (see _vanishing), while rho is continuous as alpha_sa -> 0+.
ALPHA_ZERO = 1e-12


SECTIONS = 15  # interior points tried per pass: each pass shrinks the bracket 16-fold


def _bisect(ok, shape, rtol, alpha_max, bracket=None):
    """Smallest alpha in (0, alpha_max] with ok(alpha), for ok monotone in alpha (0 if alpha -> 0+ works).

    A vectorised k-section: every pass evaluates ``SECTIONS`` interior points of
    every bracket at once, so few passes over the depth are needed.
    """
    lo, hi = (np.zeros(shape), np.ones(shape)) if bracket is None else \
        (np.broadcast_to(bracket[0], shape).astype(float), np.broadcast_to(bracket[1], shape).astype(float))
    hi = np.maximum(hi, ALPHA_ZERO)                          # a bracket end at 0 stands for alpha_sa -> 0+
    at_zero = (lo <= ALPHA_ZERO) & ok(np.full(shape, ALPHA_ZERO))
    hi = np.where(np.isfinite(hi), hi, np.maximum(2 * lo, 1.0))
    while True:
        good = ok(hi)
        grow = ~good & ~at_zero & (hi < alpha_max)
        if not grow.any():
            break
        lo = np.where(grow, hi, lo)
        hi = np.where(grow, np.minimum(16 * hi, alpha_max), hi)
    never = ~good & ~at_zero
    fractions = np.arange(1, SECTIONS + 1).reshape((-1,) + (1,) * len(shape)) / (SECTIONS + 1)
    while True:
        active = ~at_zero & ~never & (hi - lo > rtol * hi)
        if not active.any():
            break
        trial = lo + (hi - lo) * fractions                       # (SECTIONS, *shape)
        good = ok(trial) | ~active                               # inactive points: keep their bracket
        first = np.argmax(good, axis=0)                          # first interior point that avoids collapse
        found = good.any(axis=0)
        new_hi = np.where(found, np.take_along_axis(trial, first[None], 0)[0], hi)
        new_lo = np.where(first > 0, np.take_along_axis(trial, np.maximum(first - 1, 0)[None], 0)[0], lo)
        lo = np.where(active, np.where(found, new_lo, np.take_along_axis(trial, np.full((1,) + shape, SECTIONS - 1), 0)[0]), lo)
        hi = np.where(active, new_hi, hi)
    result = np.where(at_zero, 0.0, np.where(never, np.inf, hi))
    return float(result) if result.ndim == 0 else result
