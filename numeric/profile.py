"""Depth profiles of the cosine similarity, and the critical residual strength.

Iterating a compiled block map (paper Algorithms 1-3) from the input overlap
q0 = 1, p0 = rho0 gives rho = p/q before the first block and after each block
(:func:`cosine_profile`). Rank collapse at depth L means rho_L > 1 - eps;
:func:`critical_alpha` finds the smallest alpha_sa that avoids it with the
one root finder, :mod:`numeric.solve` (rho_L decreases with alpha_sa: a
stronger skip keeps more of the input; see tests/numeric/test_profile.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from derive.parameters import DEFAULTS
from derive.parameters import NAMES as POSITIONAL

from . import fused, solve
from . import validation as check
from .maps import block_function, moment_functions


@dataclass
class Run:
    """The state of an iteration over depth: final (q, p) and what was recorded."""

    q: np.ndarray
    p: np.ndarray
    rho: list            # rho before block 1 and after each block (when recorded)
    att_q: list          # input overlaps of each block's attention layer
    att_p: list


def prepare(arch, depth, *, beta, T, rho0, activation, params, numpy_map=True, width=None):
    """Validate everything a depth iteration needs; return (block, moments, values, depth, T, rho0).

    ``numpy_map=False`` (the fused path) leaves the NumPy map out (block None): loading the generated
    module costs SciPy's special functions, and a custom spec's map a compilation. ``width``: (d, d_head)
    as :func:`finite_width` returns it (None: infinite width).
    """
    arch = check.architecture(arch)
    depth = check.depth(depth)
    T = check.sequence_length(T)
    rho0 = check.rho0(rho0, T)
    if isinstance(arch, str):
        check.activation(activation)
    values = block_values(arch, beta, params)
    block = block_function(arch, activation, T) if numpy_map else None
    return block, moment_functions(T, width), values, depth, T, rho0


def finite_width(d, d_head, T, inputs="gaussian", arch=None):
    """(d, d_head) checked for a finite-width profile or diagram, with "normalized" appended for
    ``inputs="normalized"``, or None (``d=None``: infinite width).

    Finite width needs a finite T; the effective moments of :func:`numeric.maps.moment_functions` (the
    NumPy path) and their tables (the fused kernels); a masked stack's increments are
    :mod:`numeric.causal_width`'s. ``inputs``: "gaussian" tokens (A1) or "normalized" ones (a LayerNorm or
    RMSNorm before attention, derive.finite_width steps 5-6): a masked stack reads the causal tables'
    increments, an unmasked one the effective moments of :mod:`numeric.normalized_width`. ``arch``: the
    architecture, checked for gain-controlled attention, whose normalized-token terms are not derived.
    """
    from .finite_width import _finite_inputs, _inputs, width
    inputs = _inputs(inputs)
    if d is None and d_head is None:
        if inputs != "gaussian":
            raise ValueError("inputs='normalized' needs a finite width d (it selects the finite-width terms of "
                             "tokens of fixed norm)")
        return None
    d, d_head = width(d, d_head)
    _finite_inputs(inputs, d)
    if T is None:
        raise ValueError("d= (finite width) needs a finite T: the key-selection term grows like beta^2 ln T / d")
    if inputs == "normalized" and arch is not None:
        from .causal import has_gain
        if has_gain(arch):
            raise ValueError("inputs='normalized' with gain-controlled attention: its finite-width terms for tokens "
                             "of fixed norm are not derived (use inputs='gaussian')")
    return (d, d_head) if inputs == "gaussian" else (d, d_head, inputs)


def normalized(width) -> bool:
    """Whether a width as :func:`finite_width` returns it is of normalized tokens."""
    return width is not None and width[2:] == ("normalized",)


def width_arguments(width) -> dict:
    """The keywords (d, d_head, inputs) that :func:`finite_width` turns into ``width``; {} at infinite width."""
    if width is None:
        return {}
    return {"d": width[0], "d_head": width[1], "inputs": "normalized" if normalized(width) else "gaussian"}


def block_values(arch, beta, params) -> dict:
    """beta and ``params`` checked: the contract's block parameters (defaults filled in) and a custom
    spec's own ones (:func:`check_extra_parameters`), by name. ``arch`` as :func:`check.architecture` returns it."""
    extra = check_extra_parameters(arch, params)
    values = check.block_parameters(beta=beta, **{**DEFAULTS, **{k: v for k, v in params.items() if k in DEFAULTS}})
    values.update({name: check.nonnegative(name, params[name]) for name in extra})
    return values


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
            try:
                q, p, q_att, p_att = block(q, p, *args, T_value, Y2, Yp, **extra)
            except (OverflowError, ZeroDivisionError):          # scalar arithmetic raises where arrays give inf
                q, p, q_att, p_att = np.full(shape, np.nan), np.full(shape, np.nan), None, None
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
    """A layer's output is exactly zero or not finite somewhere (a LayerNorm after it is 0/0): say where and why."""
    bad = np.atleast_1d(~(q > 0) | ~np.isfinite(p))
    where = {k: float(np.atleast_1d(np.broadcast_to(v, q.shape))[bad][0]) for k, v in values.items()}
    if where.get("alpha_sa", 1.0) <= solve.ALPHA_ZERO:
        reason = ("an attention branch outputs exactly zero in the T -> oo theory while its skip is off "
                  "(alpha_sa = 0): spread attention (beta <= beta_c) averages orthogonal tokens (p = 0) to zero, and "
                  "gain control removes that average for any p; use alpha_sa > 0 or a finite T")
    else:
        reason = "the overlaps left the range of floating point numbers (a variance or strength too large)"
    raise ValueError(f"the signal vanishes or overflows in block {layer + 1} (at {int(bad.sum())} point(s), "
                     f"e.g. {where}): {reason}")


def _scalar_or_array(value):
    """A Python float for a 0-d value: the compiled maps then do scalar, not array, arithmetic."""
    return float(value) if np.ndim(value) == 0 else value


def cosine_profile(arch, depth, *, beta, T=None, rho0=0.0, alpha_sa=1.0, alpha_mlp=1.0, sigma_v2=1.0,
                   sigma_w2=2.0, sigma_b2=0.0, activation="relu", mask=None, tokens=None, backend=None, d=None,
                   d_head=None, inputs="gaussian", **extra):
    """rho = p/q before block 1 and after each of ``depth`` blocks: shape (depth+1, *broadcast).

    ``arch``: "post-ln" (Alg. 1), "pre-ln" (Alg. 2, corrected), "gain-post-ln"
    (Alg. 3), "gain-pre-ln", or a derive spec. Parameters broadcast together;
    ``T=None`` is the asymptotic theory, an integer T the exact finite-T theory.
    ``extra``: values of a custom spec's parameters beyond the contract's
    (e.g. a second MLP weight variance; see :func:`numeric.codegen.extra_parameters`).
    ``mask``: "causal" or "sliding:W" masks a named architecture's attention (a spec carries its
    own masks); a masked stack is position-resolved (:mod:`numeric.causal`, finite T only) and the
    profile is its all-pairs rho, or rho among ``tokens`` (None, "late" = the last quarter of the
    positions, a slice or an index array). An unmasked stack's tokens are exchangeable: every
    subset of them has the all-pairs rho.
    ``backend``: "fused" (compiled kernels, :mod:`numeric.fused`; the default where numba is installed),
    "numpy" (the reference path) or "auto"/None (``$SIGPROP_BACKEND``).
    ``d``, ``d_head``: finite width (issue 19; integers, d_head dividing d, default one head; finite T):
    every attention layer's output overlaps get the O(1/d) key-selection terms and the score law's
    finite-width spread (:func:`numeric.attention_overlaps`), read from tables built once per (T, d,
    d_head) (about a minute); the NumPy path. ``d=None``: infinite width. ``inputs``: "gaussian" tokens or
    "normalized" ones (a LayerNorm or RMSNorm before attention, :func:`finite_width`).
    """
    params = dict(alpha_sa=alpha_sa, alpha_mlp=alpha_mlp, sigma_v2=sigma_v2, sigma_w2=sigma_w2, sigma_b2=sigma_b2,
                  **extra)
    if _masked(arch, mask):
        from . import causal
        return causal.cosine_profile(arch, depth, beta=beta, T=T, rho0=rho0, activation=activation,
                                     mask=mask, tokens=tokens, d=d, d_head=d_head, inputs=inputs, **params)
    width = finite_width(d, d_head, T, inputs, arch)
    if width is not None:
        block, moments, values, depth, T, rho0 = prepare(arch, depth, beta=beta, T=T, rho0=rho0,
                                                          activation=activation, params=params, width=width)
        return np.stack(iterate(block, moments, values, depth, T, rho0).rho)
    if tokens is not None:
        from .causal import positions
        if T is None:
            raise ValueError("tokens names positions of a finite sequence: give an integer T")
        positions(tokens, check.sequence_length(T))
    compiled = fused.backend(backend) == "fused"
    block, moments, values, depth, T, rho0 = prepare(arch, depth, beta=beta, T=T, rho0=rho0, activation=activation,
                                                      params=params, numpy_map=not compiled)
    if compiled:
        return fused.evaluate(arch, activation, T, values, rho0, depth, depths=range(depth + 1)).rho
    return np.stack(iterate(block, moments, values, depth, T, rho0).rho)


def _masked(arch, mask) -> bool:
    """Whether the profile is of a masked stack: ``mask`` given for a named architecture, or a spec with masks."""
    if mask is not None:
        if not isinstance(arch, str):
            raise ValueError("mask= applies to a named architecture; a spec carries its own masks "
                             "(SelfAttention(mask=...))")
        return True
    if isinstance(arch, str):
        return False
    from .causal import is_masked                      # its tables load SciPy: only for a spec
    return is_masked(arch)


def final_rho(block, moments, values, depth, T, rho0) -> np.ndarray:
    """rho after the last block (no per-layer record)."""
    run = iterate(block, moments, values, depth, T, rho0, record=False, attention="none")
    return run.p / run.q


def critical_alpha(arch, depth, *, beta, eps=0.01, T=None, rho0=0.0, activation="relu", rtol=1e-6,
                   alpha_max=1e6, bracket=None, mask=None, tokens=None, backend=None, d=None, d_head=None,
                   inputs="gaussian", **params):
    """Smallest alpha_sa with rho after ``depth`` blocks <= 1 - eps (Fig. 1c's boundary).

    Vectorised over ``beta`` (and any other parameter). Returns 0 where any
    alpha_sa > 0 avoids rank collapse and ``inf`` where no alpha_sa <= alpha_max
    does (e.g. when the MLP alone collapses the tokens). Relative accuracy
    ``rtol`` in [1e-15, 0.5]; ``alpha_max`` > 0 finite. ``bracket``: optional
    arrays (lo, hi) known to enclose the answer (rank collapse at lo, none at
    hi; hi = inf where unknown), e.g. from a grid. The root finder is
    :func:`numeric.solve.smallest_alpha` (rho_L decreases with alpha_sa).
    ``mask``/``tokens``: a masked stack (:func:`cosine_profile`), rank collapse judged on all pairs
    or among ``tokens`` (e.g. "late"). ``backend``: as :func:`cosine_profile`; the fused kernel is
    then the gap function of the same root finder. ``d``, ``d_head``, ``inputs``: finite width
    (:func:`cosine_profile`).
    """
    if _masked(arch, mask):
        from . import causal
        return causal.critical_alpha(arch, depth, beta=beta, eps=eps, T=T, rho0=rho0, activation=activation,
                                     rtol=rtol, alpha_max=alpha_max, bracket=bracket, mask=mask, tokens=tokens,
                                     d=d, d_head=d_head, inputs=inputs, **params)
    width = finite_width(d, d_head, T, inputs, arch)
    eps = check.interval("eps", eps, 0.0, 1.0, closed=False)
    if "alpha_sa" in params:
        raise ValueError("critical_alpha solves for alpha_sa: do not pass it")
    compiled = fused.backend(backend) == "fused"
    block, moments, values, depth, T, rho0 = prepare(arch, depth, beta=beta, T=T, rho0=rho0, activation=activation,
                                                      params=params, numpy_map=not compiled, width=width)
    columns = None
    if T is not None and np.ndim(values["beta"]) > 0:
        from .columns import column_moments            # tables and their quadratures: imported on use
        columns = column_moments(T, values["beta"], width)
    values = {k: v for k, v in values.items() if k != "alpha_sa"}
    names = tuple(values)


    def gap(alpha, target, rho0_, *arrays):
        chunk = {**dict(zip(names, arrays)), "alpha_sa": alpha}
        if compiled:                                   # the fused kernel, looking up the same tables
            return fused.evaluate(arch, activation, T, chunk, rho0_, depth, columns=columns, width=width).rho[0] - target
        bound = moments if columns is None else columns.bind(chunk["beta"])
        return final_rho(block, bound, chunk, depth, T, rho0_) - target

    shape = np.broadcast_shapes(np.shape(eps), np.shape(rho0), *(np.shape(v) for v in values.values()))
    return solve.smallest_alpha(gap, shape, rtol=rtol, alpha_max=alpha_max, bracket=bracket,
                                args=(1.0 - eps, rho0, *values.values()))
