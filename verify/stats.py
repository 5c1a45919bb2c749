"""The one place that fixes how strict every statistical check of the suite is.

A check compares a theory value with a Monte Carlo estimate (mean over n
independent seeds, standard error SE = s/√n) and passes when

    |theory − estimate| ≤ k · SE + allowance.

**The critical multiplier k** comes from one declared false-alarm rate,
:data:`FALSE_ALARM` = 1e-4, two-sided, per check: for a correct theory and
Gaussian seed-to-seed noise a check fails with probability 1e-4. With SE known
this is the normal quantile :data:`Z` = Φ⁻¹(1 − 0.5e-4) = 3.891. SE is itself
estimated from the n seeds, so the exact multiplier is Student's t quantile
with n − 1 degrees of freedom (7.9 at n = 8, 4.3 at n = 32, → 3.89 as n → ∞);
:func:`critical` returns it. A check over a vector of m values (a depth
profile) is one check: each entry uses the rate FALSE_ALARM/m (Bonferroni),
so the whole vector keeps the declared rate. The suite has a few hundred such
checks, so at this rate a correct theory fails the whole suite with
probability of order 1e-2; every draw is seeded, so a given commit either
passes or fails reproducibly.

**The allowance** is a declared finite-size term with its reason (finite d:
O(1/d) biases of LayerNorm and of the MLP's finite width, and O(1/√d)
fluctuations of overlaps; finite T against the T → ∞ theory), never a
number tuned until a test passes. :func:`assert_agrees` prints both parts of
the tolerance so a failure says which one was exceeded and by how much.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
from scipy import stats as _scipy_stats

#: Declared two-sided false-alarm probability of one check (one scalar, or one whole vector).
FALSE_ALARM = 1e-4
#: The normal critical value for FALSE_ALARM (SE known exactly): 3.8906.
Z = NormalDist().inv_cdf(1.0 - FALSE_ALARM / 2.0)
#: Coefficient c of the declared finite-width allowance c·|value|/d: the mean-field (concentration)
#: approximations of the theory — token norms q_tt ≈ q before a LayerNorm, finite MLP width, key
#: Gram matrix ≈ its mean in the query gradient — change means by a relative O(1/d) (their first
#: order in the O(1/√d) fluctuations averages to zero). Fixed once for the suite, not per test.
FINITE_D_COEFF = 2.0
#: Absolute rounding floor: float64 sums of O(1) quantities agree to this when SE is exactly 0.
ROUNDING = 1e-12


def finite_d_allowance(d: int, scale=1.0):
    """FINITE_D_COEFF · |scale| / d: the declared O(1/d) finite-width term for a quantity of size ``scale``."""
    return FINITE_D_COEFF * np.abs(np.asarray(scale, dtype=float)) / d


def critical(n: int | None = None, family: int = 1) -> float:
    """The multiplier k of SE: Student-t with n − 1 dof (normal for n=None), at rate FALSE_ALARM/family."""
    if family < 1:
        raise ValueError(f"family must be >= 1, got {family}")
    tail = FALSE_ALARM / (2.0 * family)
    if n is None:
        return NormalDist().inv_cdf(1.0 - tail)
    if n < 2:
        raise ValueError(f"a standard error needs at least 2 independent seeds, got n={n}")
    return float(_scipy_stats.t.ppf(1.0 - tail, n - 1))


def tolerance(se, allowance=0.0, n: int | None = None, family: int = 1):
    """k · SE + allowance + rounding floor, elementwise."""
    return critical(n, family) * np.asarray(se, dtype=float) + np.asarray(allowance, dtype=float) + ROUNDING


def assert_agrees(theory, estimate, se=None, allowance=0.0, reason: str = "", *, n: int | None = None,
                  what: str = "quantity", skip_first: bool = False):
    """Assert |theory − estimate| ≤ k·SE + allowance elementwise; an informative AssertionError otherwise.

    ``estimate`` is a :class:`verify.montecarlo.Estimate` (its mean, SE and n
    are used) or a number/array with ``se`` (and ``n`` seeds) given. A vector
    is one check at the suite's rate (Bonferroni over its entries).
    ``allowance`` (scalar or array) must come with a ``reason``.
    ``skip_first``: leave out entry 0 (a profile's input, set not measured).
    """
    mean, se, n = _unpack(estimate, se, n)
    theory = np.broadcast_to(np.asarray(theory, dtype=float), np.shape(mean))
    allowance = np.broadcast_to(np.asarray(allowance, dtype=float), np.shape(mean))
    if np.any(allowance > 0) and not reason:
        raise ValueError("a non-zero allowance needs its reason (which finite-size term it covers)")
    sl = (slice(1, None),) if skip_first and np.ndim(mean) else ()
    mean, se, theory, allowance = (np.atleast_1d(a)[sl] for a in (mean, se, theory, allowance))
    family = mean.size
    k = critical(n, family)
    tol = tolerance(se, allowance, n, family)
    gap = np.abs(theory - mean)
    bad = ~(gap <= tol)
    if np.any(bad):
        raise AssertionError(_message(what, theory, mean, se, allowance, gap, tol, bad, k, n, family, reason,
                                      offset=1 if sl else 0))


def deviation(theory, estimate) -> float:
    """max |theory − estimate.mean| (over entries): the number a report quotes."""
    mean = estimate.mean if hasattr(estimate, "samples") else estimate
    return float(np.max(np.abs(np.asarray(theory, dtype=float) - np.asarray(mean, dtype=float))))


def _unpack(estimate, se, n):
    if hasattr(estimate, "samples"):
        if se is not None:
            raise ValueError("give se only with a plain number, not with an Estimate")
        return estimate.mean, estimate.se, estimate.n
    if se is None:
        raise ValueError("a plain estimate needs its standard error se")
    return estimate, se, n


def _message(what, theory, mean, se, allowance, gap, tol, bad, k, n, family, reason, offset):
    rows = np.flatnonzero(bad)
    worst = rows[np.argsort(-(gap[rows] - tol[rows]))][:8]
    entries = "entry" if gap.size == 1 else "entries"
    lines = [f"{what}: theory and Monte Carlo disagree at {rows.size} of {gap.size} {entries}",
             f"  tolerance = k*SE + allowance with k = {k:.3f} (false-alarm rate {FALSE_ALARM:g} two-sided, "
             f"{'t with %d dof' % (n - 1) if n else 'normal'}, Bonferroni over {family})",
             f"  allowance: {reason or 'none'}",
             "  entry       theory     measured           SE    |gap|   k*SE  allowance  gap/SE"]
    for i in worst:
        ratio = gap[i] / se[i] if se[i] > 0 else math.inf
        lines.append(f"  {i + offset:5d} {theory[i]:12.6g} {mean[i]:12.6g} {se[i]:12.3g} {gap[i]:8.3g} "
                     f"{k * se[i]:6.3g} {allowance[i]:10.3g} {ratio:7.2f}")
    return "\n".join(lines)
