"""One attention row as a Random Energy Model: free entropy, 1-RSB, inverse participation ratios.

Paper (Giorlandino & Goldt, "Two failure modes of deep transformers"): Result 1
(sec. 2.1, eqs. 2-4), B.1 (eq. 9), B.2.1 (eqs. 10-15), B.3 (eqs. 24-25).

Setting (docs/design.md, "Conventions"). One attention row t holds T = e^N scores a_ts
with Var a_ts = beta^2 N q^2 and Cov(a_ts, a_ts') = beta^2 N q p (eq. 9). The
common part shifts every score of the row by the same amount and cancels in the
softmax, so the row is a Random Energy Model (REM): T = e^N states with i.i.d.
Gaussian log-weights h a_s of variance h^2 beta^2 N q (q - p), and partition
function Z(beta, h) = sum_s exp(h a_ts) (eq. 10).

Every closed form below is *computed* by SymPy (integrate, solve, diff, limit,
simplify); none is typed in as the answer. Internally the REM variance scale
kappa = q (q - p) is a positive Dummy, so that SymPy picks the right branch of
every square root; the public functions substitute kappa = q (q - p) at the
end. Their results therefore hold for q > p (tokens not all equal; at q = p
the row is exactly uniform).

Corrections to the paper found here (see the docstrings):

- eq. (15): the 1-RSB free entropy is the *minimum* over the Parisi block size
  x in (0, 1], not the maximum over x < 1 (phi(x) is convex and diverges as
  x -> 0, so the maximum does not exist);
- eq. (24): the entropy is S = N (1 - beta^2 / beta_c^2) (a square is missing);
- eq. (25): E Y2 is not e^{-S}; its exponent is computed in
  :func:`finite_size_exponent` (mean) and :func:`typical_ipr_exponent`.
"""

from __future__ import annotations

import math
import numbers
from functools import lru_cache

import sympy

from . import symbols as _symbols
from .symbols import N, beta, h, m, p, q, x

#: Energy density epsilon = a / N of one state (a score divided by N = ln T).
epsilon = sympy.Symbol("epsilon", real=True)

_KAPPA = sympy.Dummy("kappa", positive=True)  # q (q - p) > 0
_N_REPLICAS = sympy.Dummy("n", positive=True)
_SCORE = sympy.Dummy("a", real=True)
_MU = sympy.Dummy("mu", positive=True)  # the PPP exponent m, 0 < mu < 1
_W = sympy.Dummy("w", positive=True)  # a PPP point (weight relative to the maximum)
_U = sympy.Dummy("u", positive=True)  # Laplace variable of 1 / (sum w)^n
_S = sympy.Dummy("s", positive=True)


def _physical(expr):
    """Substitute kappa = q (q - p) back into an expression computed with the Dummy."""
    return expr.subs(_KAPPA, q * (q - p))


# ---------------------------------------------------------------- REM variance


@lru_cache(maxsize=None)
def _rem_variance():
    """beta^2 kappa: the variance per unit N of the independent part of a score.

    From eq. (9) with q_tt = q, q_ts = p: Var a_ts - Cov(a_ts, a_ts') divided by
    N, written in kappa by eliminating p = q - kappa / q.
    """
    var = beta**2 * N * q**2
    cov = beta**2 * N * q * p
    return sympy.simplify(((var - cov) / N).subs(p, q - _KAPPA / q))


def rem_variance():
    """Variance per unit N = ln T of the i.i.d. REM log-weights at h = 1: beta^2 q (q - p) (eq. 9)."""
    return _physical(_rem_variance())


def _gaussian_mgf(t, variance):
    """E exp(t a) for a ~ N(0, variance), by integrating against the Gaussian density."""
    density = sympy.exp(-_SCORE**2 / (2 * variance)) / sympy.sqrt(2 * sympy.pi * variance)
    mgf = sympy.integrate(sympy.exp(t * _SCORE) * density, (_SCORE, -sympy.oo, sympy.oo))
    return sympy.simplify(mgf)


# ---------------------------------------------------------------- free entropies


@lru_cache(maxsize=None)
def _annealed():
    """(1/N) ln E Z with T = e^N states, each contributing the Gaussian MGF at h."""
    log_mean_z = N + sympy.log(_gaussian_mgf(h, N * _rem_variance()))
    return sympy.expand(sympy.expand_log(log_mean_z, force=True) / N)


def annealed_free_entropy():
    """lim (1/N) ln E Z(beta, h) = 1 + h^2 beta^2 q (q - p) / 2 (B.2.1, high-temperature branch after eq. 15).

    Computed as ln(T E e^{h a}) / N with T = e^N and the Gaussian moment
    generating function integrated by SymPy.
    """
    return _physical(_annealed())


@lru_cache(maxsize=None)
def _replica():
    """1-RSB replica free entropy per N, phi(x), in kappa (eqs. 13-15).

    n replicas in n/x groups of x replicas sharing one state. The number of
    ways to pick the n/x distinct states is T^{n/x} = e^{N n/x} (eq. 14's S(Q));
    the grouped energy sum h x sum_g a_{s_g} over n/x independent scores has
    moment generating function MGF(h x)^{n/x}. Then phi = lim_{n->0} ln E Z^n / (n N).
    """
    n = _N_REPLICAS
    groups = n / x
    log_states = groups * N
    log_energy = groups * sympy.log(_gaussian_mgf(h * x, N * _rem_variance()))
    phi = sympy.limit((log_states + log_energy) / (n * N), n, 0)
    return sympy.expand(sympy.simplify(phi))


def replica_free_entropy(block_size=x):
    """phi(x) = 1/x + h^2 beta^2 q (q - p) x / 2, the 1-RSB free entropy per N (eq. 15, before optimising x).

    ``block_size``: the Parisi block size x (default: the symbol ``x``).
    The quenched free entropy is the MINIMUM of phi over x in (0, 1]
    (:func:`quenched_free_entropy`); eq. (15)'s "max over x < 1" does not
    exist, since phi is convex in x and diverges as x -> 0.
    """
    return _physical(_replica().subs(x, block_size))


@lru_cache(maxsize=None)
def _saddle():
    """The stationary point of phi(x) in x > 0, in kappa."""
    roots = sympy.solve(sympy.diff(_replica(), x), x)
    (root,) = [r_ for r_ in roots if r_.is_positive]
    return root


def parisi_saddle():
    """x* solving d phi / dx = 0: sqrt(2) / (h beta sqrt(q (q - p))) (B.2.1, below eq. 15)."""
    return _physical(_saddle())


@lru_cache(maxsize=None)
def _critical_beta():
    """beta_c(h) where the saddle reaches the boundary x* = 1, in kappa."""
    (root,) = sympy.solve(_saddle() - 1, beta)
    return root


def critical_beta(h=1):
    """beta_c(h, q, p) = sqrt(2 / (q (q - p))) / h, where x* = 1 (Result 1; B.2.1 below eq. 15).

    With the default h = 1 the result is an expression in q, p only (Result 1).
    Pass ``derive.symbols.h`` for the h-dependent threshold.
    """
    return _physical(_critical_beta().subs(_symbols.h, h))


def parisi_m():
    """m = x*(h = 1) = beta_c / beta, the Parisi block size in the frozen phase (B.2.1)."""
    return _physical(_saddle().subs(h, 1))


@lru_cache(maxsize=None)
def _quenched():
    """lim (1/N) E ln Z = min over x in (0, 1] of phi(x), in kappa.

    phi is convex (phi'' = 2 / x^3 > 0), so the minimiser on (0, 1] is
    min(x*, 1): x = 1 (the annealed value) while x* >= 1, i.e. beta <= beta_c(h),
    and x* inside (0, 1) beyond.
    """
    phi = _replica()
    frozen = sympy.simplify(phi.subs(x, _saddle()))
    return sympy.Piecewise((phi.subs(x, 1), beta <= _critical_beta()), (frozen, True))


def quenched_free_entropy():
    """lim (1/N) E ln Z(beta, h): 1 + h^2 beta^2 q (q-p)/2 for beta <= beta_c(h), else beta h sqrt(2 q (q-p)).

    The paper's display after eq. (15), obtained here as the minimum of the
    1-RSB phi(x) over x in (0, 1] (eq. 15 corrected: min, not max).
    """
    return _physical(_quenched())


def _simplify_branches(pw):
    """Simplify each branch of a Piecewise (conditions kept as they are)."""
    pw = sympy.piecewise_fold(pw)
    return sympy.Piecewise(*[(sympy.simplify(e), c) for e, c in pw.args])


@lru_cache(maxsize=None)
def ipr_from_free_entropy():
    """E Y2 = 1 - (1 / (beta^2 N q (q - p))) d/dh [N phi] at h = 1 (eq. 12), as Piecewise.

    Uses the Stein relation of B.2.1, dPhi/dh = h sigma_a^2 q (q - p) (1 - E Y2)
    with sigma_a^2 = beta^2 N, taken as given; the derivative of the quenched
    free entropy and the algebra are done by SymPy. Result (eq. 4):
    0 for beta <= beta_c, 1 - beta_c / beta beyond.
    """
    big_phi = N * _quenched()
    sigma_a2 = beta**2 * N
    y2 = 1 - sympy.diff(big_phi, h) / (h * sigma_a2 * _KAPPA)
    return _physical(_simplify_branches(y2.subs(h, 1)))


# ---------------------------------------------------------------- frozen phase: PPP


def _intensity(w):
    """PPP intensity m w^{-m-1} of the largest weights w_i = exp(a_i - max a) in the frozen phase."""
    return _MU * w ** (-_MU - 1)


@lru_cache(maxsize=None)
def _laplace_exponent():
    """int (1 - e^{-u w}) nu(dw) = Gamma(1-m) u^m, via 1 - e^{-uw} = w int_0^u e^{-s w} ds (Fubini)."""
    inner = sympy.integrate(_W * sympy.exp(-_S * _W) * _intensity(_W), (_W, 0, sympy.oo), conds="none")
    return sympy.integrate(inner, (_S, 0, _U), conds="none")


@lru_cache(maxsize=None)
def _tilted_moment(excess):
    """int w^n e^{-u w} nu(dw) for n = excess + m, excess > 0."""
    integrand = _W ** (excess + _MU) * sympy.exp(-_U * _W) * _intensity(_W)
    return sympy.integrate(integrand, (_W, 0, sympy.oo), conds="none")


def _is_float(value):
    """A Python, NumPy or SymPy float (not an integer or rational)."""
    if isinstance(value, sympy.Float):
        return True
    return isinstance(value, numbers.Real) and not isinstance(value, (numbers.Rational, sympy.Basic))


def _check_exponent(value, name, lower, strict):
    """Return ``value`` as a SymPy expression; a number must be finite, real and above ``lower``.

    A float (Python, NumPy or SymPy) is read as the decimal it prints as
    (7.3 -> 73/10, 2.0 -> 2), so that e.g. ipr(2.0) simplifies like ipr(2).
    Expressions with free symbols are returned unchecked.
    """
    message = f"{name} must be a finite real number {'>' if strict else '>='} {lower}, got {value!r}"
    if isinstance(value, (bool, str, bytes)) or not isinstance(value, (numbers.Number, sympy.Basic)):
        raise ValueError(message)
    if _is_float(value):
        if not math.isfinite(float(value)):
            raise ValueError(message)
        value = sympy.Rational(repr(float(value)))
    expr = sympy.sympify(value)
    if expr.free_symbols:
        return expr
    in_range = expr.is_real and expr.is_finite and bool(expr > lower if strict else expr >= lower)
    if not in_range:
        raise ValueError(message)
    return expr


@lru_cache(maxsize=None)
def _frozen_moment(exponents):
    """The PPP moment of :func:`frozen_moment`, exponents already checked."""
    k = len(exponents)
    excesses = [sympy.Dummy(f"e{j}", positive=True) for j in range(k)]
    total = sum(excesses) + k * _MU
    # Campbell-Mecke with the k-th factorial moment measure nu^{(x)k} of the PPP
    factorial_moment = sympy.Mul(*[_tilted_moment(e) for e in excesses])
    # the Laplace exponent is G u^m; integrate with a positive symbol G, then put G back
    rate = sympy.simplify(_laplace_exponent() / _U**_MU)
    if _U in rate.free_symbols:
        raise RuntimeError(f"Laplace exponent not of the form G u^m: {_laplace_exponent()}")
    rate_symbol = sympy.Dummy("G", positive=True)
    integrand = _U ** (total - 1) * factorial_moment * sympy.exp(-rate_symbol * _U**_MU)
    moment = sympy.integrate(integrand, (_U, 0, sympy.oo), conds="none") / sympy.gamma(total)
    moment = moment.subs(rate_symbol, rate)
    moment = sympy.gammasimp(moment.subs({e: n_ - _MU for e, n_ in zip(excesses, exponents)}))
    if all(n_.is_number for n_ in exponents):
        moment = sympy.factor(moment)
    return moment.subs(_MU, m)


def frozen_moment(exponents):
    """E sum_{distinct i_1..i_k} prod_j w_{i_j}^{n_j} / (sum_i w_i)^n, n = sum_j n_j, in the frozen phase.

    The weights are the points of the Poisson process with intensity
    m w^{-m-1} dw (the REM's extreme-value statistics; m = beta_c / beta). By
    1/S^n = (1/Gamma(n)) int_0^oo u^{n-1} e^{-u S} du and the Campbell-Mecke
    formula for the k-th factorial moment measure nu^k, the moment is

        (1/Gamma(n)) int u^{n-1} prod_j [int w^{n_j} e^{-u w} nu(dw)] exp(-int (1 - e^{-uw}) nu(dw)) du,

    integrated by SymPy. Result (Pitman's formula for PD(m, 0)):
    m^{k-1} (k-1)! prod_j Gamma(n_j - m) / (Gamma(1-m)^k Gamma(n)).
    Returned as an expression in the symbol ``m`` (valid for 0 < m < 1);
    :func:`ipr` and :func:`ipr_square` substitute m = beta_c / beta.

    ``exponents``: a non-empty sequence of n_j >= 1 (numbers or SymPy expressions).
    """
    if isinstance(exponents, (str, bytes)) or not hasattr(exponents, "__len__") or len(exponents) == 0:
        raise ValueError(f"exponents must be a non-empty sequence of numbers >= 1, got {exponents!r}")
    checked = tuple(_check_exponent(n_, "exponents", 1, strict=False) for n_ in exponents)
    return _frozen_moment(checked)


def _frozen_value(expr_in_m):
    """``expr_in_m`` with m = x*(h = 1) = beta_c / beta, in kappa."""
    return expr_in_m.subs(m, _saddle().subs(h, 1))


def _frozen_phase(expr_in_m):
    """Piecewise((0, beta <= beta_c), (expr with m = beta_c / beta, True)) in beta, q, p."""
    pw = sympy.Piecewise((0, beta <= _critical_beta().subs(h, 1)), (_frozen_value(expr_in_m), True))
    return _physical(pw)


def ipr(r):
    """Asymptotic E sum_s A_ts^r (eqs. 2, 4) as a Piecewise in beta, q, p, for real r > 1.

    0 for beta <= beta_c (the weight spreads over e^{N (1 - beta^2/beta_c^2)}
    states); Gamma(r - m) / (Gamma(r) Gamma(1 - m)) with m = beta_c / beta in the
    frozen phase (:func:`frozen_moment` with one exponent). ipr(2) = 1 - beta_c / beta
    (eq. 4); ipr(3) = (1 - m)(2 - m) / 2.

    ``r``: a Python or SymPy number > 1, or a SymPy expression (e.g. the symbol
    ``r``), then assumed > 1. Raises ValueError for r <= 1 or non-finite r.
    """
    order = _check_exponent(r, "r", 1, strict=True)
    return _frozen_phase(frozen_moment((order,)))


@lru_cache(maxsize=None)
def ipr_square():
    """Asymptotic E[(sum_s A_ts^2)^2] as a Piecewise in beta, q, p (needed by Result 2, B.5).

    (Y2)^2 = sum_i A_i^4 + sum_{i != j} A_i^2 A_j^2, so in the frozen phase
    E (Y2)^2 = frozen_moment((4,)) + frozen_moment((2, 2))
             = (1-m)(2-m)(3-m)/6 + m (1-m)^2 / 6 = (1-m)(3-2m)/3,
    which differs from (E Y2)^2 = (1-m)^2 by Var Y2 = m (1-m) / 3 (m = beta_c / beta).
    """
    return _frozen_phase(sympy.factor(frozen_moment((4,)) + frozen_moment((2, 2))))


# ---------------------------------------------------------------- finite size (B.3)


@lru_cache(maxsize=None)
def _microcanonical_entropy():
    """s(epsilon) by Legendre transform of the annealed free entropy, in kappa."""
    phi = _annealed()
    (h_star,) = sympy.solve(sympy.diff(phi, h) - epsilon, h)
    return sympy.expand(sympy.simplify(phi.subs(h, h_star) - h_star * epsilon))


def microcanonical_entropy():
    """s(epsilon) = lim (1/N) ln E #{s : a_s ~ N epsilon} = 1 - epsilon^2 / (2 beta^2 q (q - p)).

    The REM's log-density of states (Mezard & Montanari ch. 5), computed as the
    Legendre transform s = phi_ann(h*) - h* epsilon with d phi_ann / dh = epsilon.
    Negative s means states at that level exist only with probability e^{N s}.
    """
    return _physical(_microcanonical_entropy())


@lru_cache(maxsize=None)
def gibbs_entropy():
    """S / N = Phi - beta dPhi/dbeta at h = 1 (eq. 24 corrected): 1 - beta^2/beta_c^2 below beta_c, 0 above.

    The paper's eq. (24) prints N (1 - beta^2 / beta_c); the square is missing.
    """
    phi = _quenched().subs(h, 1)
    return _physical(_simplify_branches(phi - beta * sympy.diff(phi, beta)))


@lru_cache(maxsize=None)
def typical_ipr_exponent():
    """lim (1/N) ln Y2 for a typical row: Phi(beta, h=2)/N - 2 Phi(beta, h=1)/N.

    sum_s w_s^2 = Z(beta, 2) is the REM at doubled h, whose quenched free
    entropy freezes at beta_c / 2. Result, with t = beta / beta_c:
    2 t^2 - 1 (t <= 1/2), -2 (1 - t)^2 (1/2 <= t <= 1), 0 beyond. This is the
    exponent of the typical (median) Y2, not of its mean: see
    :func:`finite_size_exponent`.
    """
    bc = _critical_beta()
    folded = _simplify_branches(_quenched().subs(h, 2) - 2 * _quenched().subs(h, 1))
    return _physical(_order_branches(folded, [bc.subs(h, 2), bc.subs(h, 1)]))


def _order_branches(pw, breakpoints):
    """Rewrite a Piecewise in beta as branches on consecutive intervals ending at ``breakpoints``.

    Each branch expression is the one ``pw`` selects inside that interval
    (found by evaluating the conditions at an interior point), so the result
    has the simple conditions beta <= b_1, beta <= b_2, ..., True.
    """
    edges = [sympy.Integer(0), *breakpoints]
    interiors = [(lo + hi) / 2 for lo, hi in zip(edges, edges[1:])] + [2 * edges[-1]]
    branches = []
    for point, bound in zip(interiors, [*breakpoints, None]):
        expr = _branch_at(pw, point)
        branches.append((expr, True if bound is None else beta <= bound))
    return sympy.Piecewise(*branches)


def _branch_at(pw, point):
    """The expression of Piecewise ``pw`` selected at beta = ``point``."""
    for expr, cond in pw.args:
        if cond == sympy.true or bool(cond.subs(beta, point)):
            return sympy.simplify(expr)
    raise ValueError(f"no branch of {pw} holds at beta = {point}")


@lru_cache(maxsize=None)
def finite_size_exponent():
    """lim (1/N) ln E Y2, T = e^N: the leading power of T in the mean IPR (B.3, eqs. 24-25 corrected).

    For beta < beta_c the partition function is self-averaging, ln Z = N c with
    c = phi_ann(h=1), and E Y2 = T E[w_1^2 / Z^2] is dominated by one state at
    energy density epsilon, contributing e^{N s(epsilon)} (s may be negative:
    a rare state) times (e^{N epsilon} / max(e^{N epsilon}, e^{N c}))^2. So

        exponent = max_epsilon [ s(epsilon) + 2 min(epsilon - c, 0) ],

    where s (:func:`microcanonical_entropy`) is concave and decreasing for
    epsilon > 0, so the maximum lies at epsilon <= c. SymPy maximises it: the
    stationary point epsilon_0 = 2 beta^2 q (q - p) while epsilon_0 <= c
    (annealed: 2 t^2 - 1, t = beta / beta_c, for t <= 1/sqrt(3)), the boundary
    epsilon = c beyond (one rare state carrying O(1) weight:
    -(1 - t^2)^2 / (4 t^2)), and lim ln(ipr(2)) / N = 0 in the frozen phase.
    The paper's e^{-S} (eq. 25) gives -(1 - t^2) instead; the typical exponent
    (:func:`typical_ipr_exponent`) is smaller than this one for 1/2 < t < 1.
    """
    s = _microcanonical_entropy()
    c = _annealed().subs(h, 1)
    below_cap = s + 2 * (epsilon - c)
    (eps0,) = sympy.solve(sympy.diff(below_cap, epsilon), epsilon)
    (beta_cap,) = sympy.solve(eps0 - c, beta)
    stationary = sympy.simplify(below_cap.subs(epsilon, eps0))
    capped = sympy.simplify(s.subs(epsilon, c))
    frozen = sympy.limit(sympy.log(_frozen_value(frozen_moment((2,)))) / N, N, sympy.oo)
    bc = _critical_beta().subs(h, 1)
    return _physical(sympy.Piecewise((stationary, beta <= beta_cap), (capped, beta <= bc), (frozen, True)))
