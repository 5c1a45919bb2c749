"""The one root finder of sigprop, on SciPy's vectorised bracketing methods.

Two questions of the theory are roots of monotone functions, asked for many
points at once:

- the critical residual strength alpha_c (Fig. 1c's boundary): the smallest
  alpha_sa with rho after L blocks <= 1 - eps. rho_L decreases as alpha_sa grows
  (a stronger skip keeps more of the input), so alpha_c is where the decreasing
  gap rho_L(alpha) - (1 - eps) crosses zero (:func:`smallest_alpha`);
- a limit on beta where an increasing attention moment (the IPR) reaches a
  threshold (:func:`increasing_root`).

Both bracket the root with :func:`scipy.optimize.elementwise.bracket_root` and
locate it with Chandrupatla's method, :func:`scipy.optimize.elementwise.find_root`,
elementwise over arrays, with a bounded number of iterations. Tolerance and
bracket are checked by :mod:`numeric.validation`. SciPy's optimize package is
imported on first use (``import numeric`` stays light). The gap function is
whatever the caller iterates: the fused kernels of :mod:`numeric.fused` by
default, the NumPy maps on the reference path; the solver is the same.
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
    points still searched, as SciPy's elementwise solvers do). Returns 0 where alpha -> 0+ already
    satisfies it (gap(ALPHA_ZERO) <= 0) and ``inf`` where no alpha <= alpha_max does; elsewhere the
    upper end of a bracket of relative width <= ``rtol`` (so gap <= 0 holds at the returned value).
    ``bracket``: optional arrays (lo, hi) known to enclose the answer (hi = inf where unknown).
    """
    from scipy.optimize import elementwise

    rtol = check.tolerance("rtol", rtol)
    alpha_max = check.bound("alpha_max", alpha_max)
    args = tuple(np.broadcast_to(np.asarray(a, dtype=float), shape) for a in args)
    lo, hi = _start(shape, bracket, alpha_max)
    at_zero = (lo <= ALPHA_ZERO) & (_finite(gap(np.full(shape, ALPHA_ZERO), *args)) <= 0)
    result = np.where(at_zero, 0.0, np.nan)
    rest = ~at_zero                                        # only these are bracketed: growing the bracket of a
    if rest.any():                                         # point that passes everywhere would run to alpha_max
        sub = tuple(a[rest] for a in args)
        found = elementwise.bracket_root(gap, np.maximum(lo[rest], ALPHA_ZERO), hi[rest], xmin=ALPHA_ZERO,
                                         xmax=alpha_max, factor=GROWTH, args=sub, maxiter=MAX_BRACKET_STEPS)
        never = (found.f_bracket[1] > 0) & (found.status == -1)
        values = np.full(never.shape, np.inf)
        if (~never).any():
            values[~never] = _locate(gap, found, ~never, sub, rtol)
        result[rest] = values
    return float(result) if result.ndim == 0 else result


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


def _locate(gap, found, search, args, rtol):
    """Chandrupatla's method on the valid brackets; the end with gap <= 0 of each final bracket."""
    from scipy.optimize import elementwise

    sub = tuple(a[search] for a in args)
    lo, hi = found.bracket[0][search], found.bracket[1][search]
    flo, fhi = found.f_bracket[0][search], found.f_bracket[1][search]
    exact = fhi == 0.0
    if not np.all((flo > 0) | exact):
        raise RuntimeError("bracket of the critical alpha lost its sign change (gap not decreasing in alpha)")
    res = elementwise.find_root(gap, (lo, hi), args=sub, tolerances=dict(xrtol=rtol, xatol=0.0),
                                maxiter=MAX_ITERATIONS)
    if np.any(res.status[~exact] == -3):
        raise ValueError("the gap to the rank-collapse threshold is not finite inside the bracket")
    if np.any(res.status[~exact] == -2):
        raise RuntimeError(f"no convergence to rtol = {rtol:g} within {MAX_ITERATIONS} iterations")
    left, right = res.bracket
    return np.where(exact, hi, np.where(res.f_bracket[1] <= 0, right, left))


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
