"""Gaussian kernels K_phi(q, c) = E[phi(u) phi(v)] to any number of digits, by mpmath quadrature.

This is how an activation *without* a closed-form kernel (tanh; a name
registered with :func:`derive.kernels.opaque_kernel`) gets a number: the
``evalf`` of :class:`derive.kernels.OpaqueKernel` calls :func:`gaussian_kernel`.
The tests also hold every closed form of :mod:`derive.kernels` against it
(``tests/reference.py``).

With u = sqrt(q) z1 and v = sqrt(q) (rho z1 + sqrt(1 - rho^2) z2), rho = c/q,
z1 and z2 independent standard normals (paper B.6.2, eqs. 35-36), the kernel
is a 2-D Gaussian integral. It is done by composite Gauss-Legendre rules on
[-L, L], L chosen so that the Gaussian tail is below the requested precision,
with panels graded geometrically away from the point where each factor is
steep or kinked (z1 = 0; z2 = -rho z1 / sqrt(1 - rho^2)), so that each panel
sees a smooth function. When E[phi(m + s z)] is known in closed form it can be
passed as ``conditional_mean``: the integral is then 1-D.
"""

from __future__ import annotations

import functools

import mpmath
import sympy

__all__ = ["gaussian_kernel"]

#: Extra digits carried while summing, beyond the digits asked for.
GUARD_DIGITS = 10

_x = sympy.Symbol("x", real=True)


def gaussian_kernel(phi, q, c, dps=30, conditional_mean=None):
    """K_phi(q, c) at ``dps`` digits (an mpmath ``mpf``); ``phi`` a SymPy ``Lambda``.

    ``q`` > 0 and ``c`` with |c| <= q (a covariance) may be floats, ints,
    strings or SymPy numbers. ``conditional_mean(m, s)`` = E[phi(m + s z)],
    z ~ N(0, 1), in mpmath arithmetic, if known: then only the outer integral
    over u is a quadrature. c = +-q (rho = +-1) is the 1-D degenerate limit.
    Results are cached.
    """
    return _kernel(phi, q, c, dps, conditional_mean)


@functools.lru_cache(maxsize=1024)
def _kernel(phi, q, c, dps, conditional_mean):
    numeric, symmetric = _mpmath_activation(phi)
    with mpmath.workdps(dps + GUARD_DIGITS):
        q, c = _to_mpf(q), _to_mpf(c)
        if not q > 0:
            raise ValueError(f"q must be positive; got {q}")
        if abs(c) > q:
            raise ValueError(f"need |c| <= q (a covariance); got q={q}, c={c}")
        if conditional_mean is not None:
            return _conditional_integral(conditional_mean, numeric, q, c / q, dps)
        return _two_dimensional_integral(numeric, q, c / q, dps, symmetric)


@functools.lru_cache(maxsize=None)
def _mpmath_activation(phi):
    """phi as an mpmath function, and whether it is odd or even (then K(q, -c) = -+K(q, c))."""
    expr = phi(_x)
    numeric = sympy.lambdify(_x, expr, "mpmath")
    symmetric = sympy.simplify(expr.subs(_x, -_x) ** 2 - expr**2) == 0
    return numeric, symmetric


def _to_mpf(value):
    """An mpmath number at the working precision from a float, int, str or SymPy number."""
    if isinstance(value, sympy.Basic):
        value = sympy.N(value, mpmath.mp.dps + 5)
        if not value.is_real:
            raise ValueError(f"expected a real number, got {value}")
        return mpmath.mpf(value._to_mpmath(mpmath.mp.prec))
    return mpmath.mpf(value)


@functools.lru_cache(maxsize=None)
def _legendre_rule(n, dps):
    """Gauss-Legendre nodes and weights on [-1, 1] at dps digits."""
    with mpmath.workdps(dps):
        nodes, weights = mpmath.gauss_quadrature(n, "legendre")
        return tuple(zip(nodes, weights))


def _breakpoints(center, scale, half_width, ratio=2, max_width=3):
    """Panel ends on [-L, L], graded geometrically away from ``center``.

    The integrands are steep (or kinked) at ``center`` on the length ``scale``;
    panels grow by ``ratio`` up to ``max_width`` so that each sees a smooth function.
    """
    center = min(max(center, -half_width), half_width)
    points = {center, -half_width, half_width}
    for sign in (1, -1):
        width, end = scale, center
        while True:
            end = end + sign * width
            if not -half_width < end < half_width:
                break
            points.add(end)
            width = min(width * ratio, max_width)
    return sorted(points)


def _gaussian_rule(center, scale, half_width, n, dps):
    """(z, w) with sum w f(z) ~ int f(z) exp(-z^2/2) dz: composite Gauss-Legendre."""
    rule = []
    points = _breakpoints(center, scale, half_width)
    for a, b in zip(points[:-1], points[1:]):
        half, mid = (b - a) / 2, (a + b) / 2
        for node, weight in _legendre_rule(n, dps):
            z = mid + half * node
            rule.append((z, half * weight * mpmath.exp(-z * z / 2)))
    return rule


def _quadrature_size(dps, two_dimensional):
    """Gauss-Legendre nodes per panel and the truncation L, exp(-L^2/2) < 10^-(dps+8).

    Tuned against the closed forms (1-D) and against higher-order runs (2-D) to
    reach about dps digits; the 2-D rule is leaner as its cost is quadratic.
    """
    n = dps // 2 + (9 if two_dimensional else 16)
    half_width = mpmath.sqrt(2 * (dps + 8) * mpmath.log(10))
    return n, half_width


def _conditional_integral(conditional_mean, phi, q, rho, dps):
    """E[phi(u) E[phi(v) | u]]: a 1-D quadrature over z1, u = sqrt(q) z1.

    Given u, v ~ N(rho u, q (1 - rho^2)), whose mean of phi is ``conditional_mean``.
    """
    root_q, s = mpmath.sqrt(q), mpmath.sqrt(1 - rho**2)
    n, half_width = _quadrature_size(dps, two_dimensional=False)
    scale = min(1, 1 / root_q, s) if s > 0 else min(1, 1 / root_q)
    total = mpmath.fsum(
        weight * phi(root_q * z) * conditional_mean(root_q * rho * z, root_q * s)
        for z, weight in _gaussian_rule(mpmath.mpf(0), scale, half_width, n, dps + GUARD_DIGITS)
    )
    return total / mpmath.sqrt(2 * mpmath.pi)


def _two_dimensional_integral(phi, q, rho, dps, symmetric):
    """int int phi(u) phi(v) Gaussian dz1 dz2, u = sqrt(q) z1, v = sqrt(q)(rho z1 + s z2).

    Composite Gauss-Legendre in both variables, graded around the steep point
    of each factor (z1 = 0; z2 = -rho z1 / s). ``symmetric`` (phi odd or even)
    halves the work: the integrand is invariant under (z1, z2) -> (-z1, -z2).
    """
    root_q, s = mpmath.sqrt(q), mpmath.sqrt(1 - rho**2)
    n, half_width = _quadrature_size(dps, two_dimensional=True)
    work = dps + GUARD_DIGITS
    if s == 0:
        total = mpmath.fsum(
            w * phi(root_q * z) * phi(root_q * rho * z)
            for z, w in _gaussian_rule(mpmath.mpf(0), min(1, 1 / root_q), half_width, n, work)
        )
        return total / mpmath.sqrt(2 * mpmath.pi)
    inner_scale = min(1, 1 / (root_q * s))
    outer_scale = min(1, 1 / root_q, s)
    total = mpmath.mpf(0)
    for z1, w1 in _gaussian_rule(mpmath.mpf(0), outer_scale, half_width, n, work):
        if symmetric and z1 < 0:
            continue
        mean = rho * z1
        inner = mpmath.fdot(
            (w2, phi(root_q * (mean + s * z2)))
            for z2, w2 in _gaussian_rule(-mean / s, inner_scale, half_width, n, work)
        )
        total += w1 * phi(root_q * z1) * inner
    if symmetric:
        total *= 2
    return total / (2 * mpmath.pi)
