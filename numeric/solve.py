"""The one root finder of sigprop: bracketing and Chandrupatla's method, elementwise over arrays.

Two questions of the theory are roots of monotone functions, asked for many
points at once:

- the critical residual strength alpha_c (Fig. 1c's boundary): the smallest
  alpha_sa with rho after L blocks <= 1 - eps. rho_L decreases as alpha_sa grows
  (a stronger skip keeps more of the input), so alpha_c is where the decreasing
  gap rho_L(alpha) - (1 - eps) crosses zero (:func:`smallest_alpha`);
- a limit on beta where an increasing attention moment (the IPR) reaches a
  threshold (:func:`increasing_root`).

:func:`smallest_alpha` brackets the root (growing the upper end by
:data:`GROWTH` up to alpha_max) and locates it with Chandrupatla's method
(Chandrupatla 1997: inverse quadratic interpolation where the last three
points allow it, bisection otherwise), vectorised over the points still
searched, with bounded iterations; it is the algorithm of
:func:`scipy.optimize.elementwise.find_root`, written here for the one
monotone question it answers so that a first critical alpha does not import
SciPy's optimize package (0.15 - 0.35 s of a first diagram's latency, issue
18). :func:`increasing_root`, a scalar question of :mod:`verify.recommend`, stays
on SciPy's. Tolerance and bracket are checked by :mod:`numeric.validation`.
The gap function is whatever the caller iterates: the fused kernels of
:mod:`numeric.fused` by default, the NumPy maps on the reference path,
:mod:`numeric.causal`'s position-resolved profile; the solver is the same.
"""

from __future__ import annotations

import numpy as np
from . import validation as check

#: alpha_sa = 0 in a search or a grid stands for the limit alpha_sa -> 0+: at T = oo an attention output can
#: vanish exactly (numeric.profile), while rho is continuous as alpha_sa -> 0+.
ALPHA_ZERO = 1e-12
#: Growth factor of a bracket that does not yet hold the root.
GROWTH = 16.0
#: Iteration caps: Chandrupatla's method converges at least as fast as bisection, which needs about
#: log2(1e6 / 1e-12) + 52 < 120 halvings for the widest bracket at the finest tolerance.
MAX_BRACKET_STEPS = 64
MAX_ITERATIONS = 200


def smallest_alpha(gap, shape, *, rtol, alpha_max, bracket=None, args=()):
    """The smallest alpha in (0, alpha_max] with gap(alpha, *args) <= 0, for ``gap`` decreasing in alpha.

    Elementwise over ``shape`` (``args`` broadcast to it and are handed to ``gap`` restricted to the
    points still searched). Returns 0 where alpha -> 0+ already satisfies it (gap(ALPHA_ZERO) <= 0) and
    ``inf`` where no alpha <= alpha_max does; elsewhere the upper end of a bracket of relative width
    <= ``rtol`` (so gap <= 0 holds at the returned value). ``bracket``: optional arrays (lo, hi) known
    to enclose the answer (hi = inf where unknown).
    """
    rtol = check.tolerance("rtol", rtol)
    alpha_max = check.bound("alpha_max", alpha_max)
    args = tuple(np.broadcast_to(np.asarray(a, dtype=float), shape) for a in args)
    lo, hi = _start(shape, bracket, alpha_max)
    at_zero = (lo <= ALPHA_ZERO) & (_finite(gap(np.full(shape, ALPHA_ZERO), *args)) <= 0)
    result = np.where(at_zero, 0.0, np.nan).reshape(-1)
    rest = np.flatnonzero(~at_zero.reshape(-1))            # only these are bracketed: growing the bracket of a
    if rest.size:                                          # point that passes everywhere would run to alpha_max
        sub = tuple(a.reshape(-1)[rest] for a in args)
        lo, hi, f_lo, f_hi = _bracket(gap, np.maximum(lo.reshape(-1)[rest], ALPHA_ZERO), hi.reshape(-1)[rest],
                                      alpha_max, sub)
        values = np.full(rest.size, np.inf)                # no root up to alpha_max: gap(alpha_max) > 0
        found = f_hi <= 0
        if found.any():
            values[found] = _chandrupatla(gap, lo[found], hi[found], f_lo[found], f_hi[found], rtol,
                                          tuple(a[found] for a in sub))
        result[rest] = values
    result = result.reshape(shape)
    return float(result) if result.ndim == 0 else result


def _gap(gap, alpha, args, where):
    """gap(alpha, *args) as an array; ValueError if any value is not finite (a gap must be a number)."""
    values = np.asarray(gap(alpha, *args), dtype=float)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"the gap to the rank-collapse threshold is not finite {where}")
    return values


def _bracket(gap, lo, hi, alpha_max, args):
    """(lo, hi, gap(lo), gap(hi)) with gap(lo) > 0 and, where a root exists up to alpha_max, gap(hi) <= 0;
    elsewhere hi = alpha_max with gap(hi) > 0. A lower end that passes becomes the upper end and the lower
    one moves down by GROWTH (gap(ALPHA_ZERO) > 0 for the points bracketed); an upper end that fails becomes
    the lower end and the upper one moves up by GROWTH, up to alpha_max."""
    lo, hi = lo.copy(), hi.copy()
    f_lo, f_hi = _gap(gap, lo, args, "inside the bracket"), _gap(gap, hi, args, "inside the bracket")
    for _ in range(MAX_BRACKET_STEPS):
        down = np.flatnonzero(f_lo <= 0)
        up = np.flatnonzero((f_hi > 0) & (hi < alpha_max) & (f_lo > 0))
        if not (down.size or up.size):
            return lo, hi, f_lo, f_hi
        if down.size:
            hi[down], f_hi[down] = lo[down], f_lo[down]
            lo[down] = np.maximum(lo[down] / GROWTH, ALPHA_ZERO)
            f_lo[down] = _gap(gap, lo[down], tuple(a[down] for a in args), "inside the bracket")
        if up.size:
            lo[up], f_lo[up] = hi[up], f_hi[up]
            hi[up] = np.minimum(hi[up] * GROWTH, alpha_max)
            f_hi[up] = _gap(gap, hi[up], tuple(a[up] for a in args), "inside the bracket")
    raise RuntimeError(f"no bracket of the critical alpha within {MAX_BRACKET_STEPS} steps")


def _chandrupatla(gap, lo, hi, f_lo, f_hi, rtol, args):
    """Chandrupatla's method on brackets with gap(lo) > 0 >= gap(hi), vectorised over the points still
    searched: the end with gap <= 0 of each final bracket, of relative width <= rtol."""
    x1, f1, x2, f2 = hi.copy(), f_hi.copy(), lo.copy(), f_lo.copy()      # x1: the newest point
    x3, f3 = x2.copy(), f2.copy()
    t = np.full(lo.shape, 0.5)
    out = np.where(f_hi == 0, hi, np.nan)
    active = f_hi != 0
    for _ in range(MAX_ITERATIONS):
        upper = np.where(f1 <= 0, x1, x2)                                    # the passing end
        width = np.abs(x2 - x1)
        done = active & (width <= rtol * upper)
        out[done] = upper[done]
        active &= ~done
        k = np.flatnonzero(active)
        if not k.size:
            return out
        tol = 0.25 * rtol * upper[k]                       # each step moves at least tol from both ends
        tl = np.minimum(tol / width[k], 0.5)
        step = np.clip(t[k], tl, 1.0 - tl)
        xt = x1[k] + step * (x2[k] - x1[k])
        ft = _gap(gap, xt, tuple(a[k] for a in args), "inside the bracket")
        same = (ft > 0) == (f1[k] > 0)                     # xt replaces the end on its own side
        x3[k], f3[k] = np.where(same, x1[k], x2[k]), np.where(same, f1[k], f2[k])
        x2[k], f2[k] = np.where(same, x2[k], x1[k]), np.where(same, f2[k], f1[k])
        x1[k], f1[k] = xt, ft
        exact = ft == 0
        out[k[exact]] = xt[exact]
        active[k[exact]] = False
        with np.errstate(divide="ignore", invalid="ignore"):   # inverse quadratic interpolation where it fits
            xi = (x1[k] - x2[k]) / (x3[k] - x2[k])
            phi = (f1[k] - f2[k]) / (f3[k] - f2[k])
            quadratic = (f1[k] / (f2[k] - f1[k]) * f3[k] / (f2[k] - f3[k])
                         + (x3[k] - x1[k]) / (x2[k] - x1[k]) * f1[k] / (f3[k] - f1[k]) * f2[k] / (f3[k] - f2[k]))
        fits = (phi * phi < xi) & ((1.0 - phi) ** 2 < 1.0 - xi) & np.isfinite(quadratic)
        t[k] = np.where(fits, quadratic, 0.5)
    raise RuntimeError(f"no convergence to rtol = {rtol:g} within {MAX_ITERATIONS} iterations")


def _start(shape, bracket, alpha_max):
    """The initial bracket (lo, hi): the given one (hi = inf read as unknown), else (ALPHA_ZERO, 1)."""
    if bracket is None:
        lo, hi = np.full(shape, ALPHA_ZERO), np.ones(shape)
    else:
        lo = np.broadcast_to(np.asarray(bracket[0], dtype=float), shape).copy()
        hi = np.broadcast_to(np.asarray(bracket[1], dtype=float), shape).copy()
        hi = np.where(np.isfinite(hi), hi, np.maximum(2.0 * lo, 1.0))
    hi = np.clip(hi, 2.0 * ALPHA_ZERO, alpha_max)
    lo = np.clip(lo, ALPHA_ZERO, hi / 2.0)
    return lo, hi


def increasing_root(f, lo: float, hi: float, *, rtol: float = 1e-10, name: str = "root") -> float:
    """The x in [lo, hi] with f(x) = 0 for a scalar function ``f`` increasing in x (f(lo) < 0 < f(hi)).

    ValueError naming ``name`` when [lo, hi] does not bracket a sign change.
    """
    from scipy.optimize import elementwise

    rtol = check.tolerance("rtol", rtol)
    f_lo, f_hi = float(f(np.float64(lo))), float(f(np.float64(hi)))
    if not (f_lo < 0 < f_hi):
        raise ValueError(f"{name}: no sign change in [{lo:g}, {hi:g}] (f = {f_lo:.6g} .. {f_hi:.6g})")
    res = elementwise.find_root(f, (lo, hi), tolerances=dict(xrtol=rtol), maxiter=MAX_ITERATIONS)
    if not bool(res.success):
        raise RuntimeError(f"{name}: no convergence (status {int(res.status)})")
    return float(res.x)


def _finite(values):
    """``values`` as an array, ValueError if any is not finite (a gap must be a number)."""
    values = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(values)):
        raise ValueError("the gap to the rank-collapse threshold is not finite at alpha_sa -> 0+")
    return values
