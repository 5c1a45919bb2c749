"""Gaussian kernels of activations: the MLP's overlap map (paper B.6.2, eqs. 35-37).

For an activation phi and a centred Gaussian pair (u, v) with Var u = Var v = q
and Cov(u, v) = c, the kernel is

    K_phi(q, c) = E[phi(u) phi(v)],

so that eq. (35) reads q' = sigma_w^2 K_phi(q, q) + sigma_b^2 and eq. (36)
p' = sigma_w^2 K_phi(q, p) + sigma_b^2 (Poole et al. 2016; Schoenholz et al.
2016). For ReLU, K = (q/2) f(rho) with the arc-cosine f of eq. (37)
(Cho & Saul 2009).

Every closed form here is the *output* of a SymPy computation, never a typed-in
formula:

1. Price's theorem, d^n K / dc^n = E[phi^(n)(u) phi^(n)(v)], with the smallest
   order n for which phi^(n) is a polynomial times a Gaussian, or a Dirac delta
   (erf, identity: n = 1; relu, gelu: n = 2).
2. That 2-D Gaussian expectation is done by SymPy one variable at a time; each
   1-D integral is reduced to the moment integral of t^n exp(-A t^2 + B t),
   which SymPy integrates once (n = 0) and differentiates in B.
3. The integration constants are the derivatives at c = 0, where u and v are
   independent: d^j K/dc^j (q, 0) = (E phi^(j)(u))^2. A 1-D expectation that is
   not Gaussian-integrable is computed from the heat equation
   d/dq E phi(u) = (1/2) E phi''(u) (Price's theorem in the variance).
4. K = sum_j K^(j)(q, 0) c^j / j! + int_0^c (c - t)^(n-1)/(n-1)! f(t) dt, the
   last integral done by SymPy after the substitution t = a sin(theta) that
   turns the square root sqrt(a^2 - t^2) of step 2 into a cos(theta).

Activations without a closed form (tanh) are opaque SymPy functions
(:func:`opaque_kernel`) that evaluate numerically by mpmath quadrature
(:mod:`derive.kernel_quadrature`) and rewrite to their 2-D Gaussian integral.
The tests hold every closed form against that quadrature at 30 digits.

References: Williams (1997), "Computing with infinite networks" (erf);
Cho & Saul (2009), "Kernel methods for deep learning" (arc-cosine, relu);
Poole et al. (2016), "Exponential expressivity in deep neural networks through
transient chaos"; Tsuchida et al. (2021), "Avoiding kernel fixed points:
computing with ELU and GELU infinite networks" (gelu).
"""

from __future__ import annotations

import functools

import mpmath
import sympy
from sympy import Add, DiracDelta, Mul, S, exp, oo, pi, sqrt

from . import kernel_quadrature, parameters

__all__ = [
    "ACTIVATIONS",
    "OpaqueKernel",
    "TanhKernel",
    "activation_function",
    "gaussian_kernel",
    "kernel_derivative",
    "opaque_kernel",
]

#: Supported activation names (docs/design.md, "Conventions").
ACTIVATIONS = parameters.ACTIVATIONS

_x = sympy.Symbol("x", real=True)
# Derivation symbols: the variance q > 0, the covariance c, and D = q^2 - c^2 > 0,
# the determinant of the covariance matrix, kept apart so that every square root
# met during the Gaussian integrals has a manifestly positive radicand.
_q = sympy.Symbol("q", positive=True)
_c = sympy.Symbol("c", real=True)
_D = sympy.Symbol("D", positive=True)
# The canonical 1-D Gaussian integral int t^n exp(-A t^2 + B t) dt.
_A = sympy.Symbol("A", positive=True)
_B = sympy.Symbol("B", real=True)
_t = sympy.Symbol("t", real=True)
# The substitution t = a sin(theta) of the covariance integrals: X = c/a is the
# upper limit's sine; S and C stand for sin(theta) and cos(theta) > 0.
_theta = sympy.Symbol("theta", real=True)
_X = sympy.Symbol("X", real=True)
_S = sympy.Symbol("S", real=True)
_C = sympy.Symbol("C", positive=True)
# W = sqrt(a^2 - c^2) > 0, the square root that the closed forms end up with.
_W = sympy.Symbol("W", positive=True)


def _check_activation(activation, allowed=ACTIVATIONS):
    """Raise ValueError naming the parameter ``activation`` unless it is allowed."""
    if activation not in allowed:
        raise ValueError(
            f"activation must be one of {', '.join(map(repr, allowed))}; "
            f"got {activation!r}"
        )


def _activation_expr(activation, x):
    """phi(x) as a SymPy expression (docs/design.md, "Conventions").

    gelu is the exact x Phi(x) (PyTorch's default ``approximate="none"``); erf is
    math.erf without rescaling; relu is Max(0, x), whose SymPy derivatives are
    Heaviside(x) and DiracDelta(x). silu is x sigma(x) = x / (1 + e^-x) (PyTorch's SiLU, the gate of
    SwiGLU); gelu_new is GPT-2's x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))/2 (transformers' "gelu_new",
    PyTorch's ``approximate="tanh"``). Neither has a closed-form kernel: opaque, by quadrature (as tanh).
    """
    return {
        "relu": lambda: sympy.Max(0, x),
        "erf": lambda: sympy.erf(x),
        "tanh": lambda: sympy.tanh(x),
        "gelu": lambda: x * (1 + sympy.erf(x / sqrt(2))) / 2,
        "identity": lambda: x,
        "silu": lambda: x / (1 + sympy.exp(-x)),
        "gelu_new": lambda: x * (1 + sympy.tanh(sqrt(2 / pi) * (x + sympy.Rational(44715, 10**6) * x**3))) / 2,
    }[activation]()


def activation_function(activation):
    """The activation phi as a SymPy ``Lambda``, e.g. ``activation_function("gelu")(1)``.

    Lambdify it (``sympy.lambdify(x, phi(x), "mpmath")``) for numeric checks.
    """
    _check_activation(activation)
    return sympy.Lambda(_x, _activation_expr(activation, _x))


# ---------------------------------------------------------------------------
# Gaussian integrals of polynomial x Gaussian integrands, done by SymPy.
# ---------------------------------------------------------------------------


class _Exp(sympy.Function):
    """An inert exp() used while expanding, so SymPy keeps it in numerators."""


@functools.lru_cache(maxsize=None)
def _gaussian_moment(n):
    """int t^n exp(-A t^2 + B t) dt over R, divided by exp(B^2/(4A)).

    SymPy integrates the n = 0 case; higher n follow by differentiating under the
    integral sign in B.
    """
    if n == 0:
        full = sympy.integrate(exp(-_A * _t**2 + _B * _t), (_t, -oo, oo), conds="none")
        return sympy.simplify(full * exp(-_B**2 / (4 * _A)))
    full = sympy.diff(_gaussian_moment(0) * exp(_B**2 / (4 * _A)), _B, n)
    return sympy.factor(sympy.simplify(full * exp(-_B**2 / (4 * _A))))


def _reduce_root(expr, root, square):
    """Rewrite a rational expression so that ``root`` enters at most linearly.

    Even powers are replaced by powers of ``square`` (= root^2); numerator and
    denominator come back factored.
    """
    num, den = sympy.fraction(sympy.cancel(sympy.together(expr)))

    def reduce(poly_expr):
        poly = sympy.Poly(poly_expr, root)
        return sum(
            (coeff * root ** (k % 2) * square ** (k // 2) for (k,), coeff in poly.terms()),
            S.Zero,
        )

    return sympy.factor(reduce(num)) / sympy.factor(reduce(den))


def _eliminate_c_squared(expr):
    """Let c enter at most linearly, via c^2 = q^2 - D.

    This keeps every radicand a polynomial in (q, D) with positive coefficients,
    so SymPy splits and cancels square roots without case analysis.
    """
    return _reduce_root(expr, _c, _q**2 - _D)


def _polynomial_gaussian_parts(term, var):
    """Split ``coef * var^n * exp(-A var^2 + B var + C0)`` into (coef, n, A, B, C0).

    ``term`` has its exponentials as :class:`_Exp`; returns None when it is not of
    that form (then it is not Gaussian-integrable here).
    """
    coef, dependent = term.as_independent(var, as_Add=False)
    power, exponent = 0, S.Zero
    for factor in Mul.make_args(dependent):
        if factor == 1:
            continue
        base, e = factor.as_base_exp()
        if base == var and e.is_Integer and e >= 0:
            power += int(e)
        elif isinstance(base, _Exp):
            exponent += e * base.args[0]
        else:
            return None
    poly = sympy.Poly(sympy.expand(exponent), var)
    if poly.degree() > 2:
        return None
    a2, a1, a0 = (poly.coeff_monomial(var**k) for k in (2, 1, 0))
    return coef, power, -a2, a1, a0


def _inert_exp(expr):
    return expr.replace(lambda e: isinstance(e, sympy.exp), lambda e: _Exp(e.args[0]))


def _live_exp(expr):
    return expr.replace(lambda e: isinstance(e, _Exp), lambda e: exp(e.args[0]))


def _is_gaussian_integrable(g, var):
    """True if g is a sum of polynomial x exp(quadratic) terms, optionally x a Dirac delta."""
    for term in Add.make_args(sympy.expand(_inert_exp(g))):
        rest = term.replace(lambda e: isinstance(e, DiracDelta), lambda e: S.One)
        if _polynomial_gaussian_parts(rest, var) is None:
            return False
    return True


def _gaussian_integral(expr, var):
    """int expr d(var) over R, for polynomial x Gaussian terms (Dirac deltas allowed).

    Each term is matched to the canonical moment integral; terms with a Dirac
    delta are left to SymPy's own integrate.
    """
    total = S.Zero
    for term in Add.make_args(sympy.expand(_inert_exp(expr))):
        if term.has(DiracDelta):
            total += sympy.integrate(_live_exp(term), (var, -oo, oo))
            continue
        parts = _polynomial_gaussian_parts(term, var)
        if parts is None:
            raise ValueError(f"not a Gaussian integrand in {var}: {term}")
        coef, power, a, b, c0 = parts
        a = _eliminate_c_squared(a)
        moment = _gaussian_moment(power).subs({_A: a, _B: b}, simultaneous=True)
        total += coef * exp(_eliminate_c_squared(c0 + b**2 / (4 * a))) * moment
    return total


def _expectation(g, variance):
    """E g(z) for z ~ N(0, variance), g an expression in x.

    Gaussian-integrable g are integrated directly. Otherwise the heat equation
    d/dv E_v g = (1/2) E_v g'' (Price's theorem in the variance) gives
    E g = g(0) + (1/2) int_0^variance E_s g'' ds, where g(0) is the average of
    the one-sided limits (the v -> 0 limit of E_v g at a jump).
    """
    if _is_gaussian_integrable(g, _x):
        density = exp(-_x**2 / (2 * variance)) / sqrt(2 * pi * variance)
        return sympy.simplify(_gaussian_integral(g * density, _x))
    s = sympy.Dummy("s", positive=True)
    at_zero = (sympy.limit(g, _x, 0, "+") + sympy.limit(g, _x, 0, "-")) / 2
    curvature = _expectation(sympy.diff(g, _x, 2), s)
    return sympy.simplify(at_zero + sympy.integrate(curvature, (s, 0, variance)) / 2)


def _pair_expectation(g, h):
    """E[g(u) h(v)] for the centred pair (Var q, Cov c), as an expression in q, c, D.

    The bivariate density is integrated over v, then over u (both by
    :func:`_gaussian_integral`).
    """
    u, v = sympy.Dummy("u", real=True), sympy.Dummy("v", real=True)
    density = exp(-(_q * u**2 - 2 * _c * u * v + _q * v**2) / (2 * _D)) / (2 * pi * sqrt(_D))
    inner = _gaussian_integral(h.subs(_x, v) * density, v)
    return _eliminate_c_squared(_gaussian_integral(g.subs(_x, u) * inner, u))


# ---------------------------------------------------------------------------
# Integration in the covariance (Price's theorem read backwards).
# ---------------------------------------------------------------------------


def _radicand(expr):
    """The one radicand (linear in D) of the half-integer powers in expr, or None."""
    bases = {
        base
        for base, e in (p.as_base_exp() for p in expr.atoms(sympy.Pow))
        if e.is_Rational and e.q == 2 and base.has(_D)
    }
    if len(bases) > 1:
        raise NotImplementedError(f"several radicands: {bases}")
    return bases.pop() if bases else None


@functools.lru_cache(maxsize=None)
def _trig_primitive(m, k):
    """A primitive of sin^m(theta) cos^k(theta), by SymPy."""
    return sympy.integrate(sympy.sin(_theta) ** m * sympy.cos(_theta) ** k, _theta)


def _integrate_trig_polynomial(expr):
    """int_0^theta of a sum of coef * S^m C^k terms (S = sin, C = cos)."""
    num, den = sympy.fraction(sympy.cancel(sympy.together(expr)))
    den = sympy.factor(den)
    total = S.Zero
    for term in Add.make_args(sympy.expand(num)):
        coef, trig = (term / den).as_independent(_S, _C, as_Add=False)
        powers = {} if trig == 1 else trig.as_powers_dict()
        if not set(powers) <= {_S, _C}:
            raise NotImplementedError(f"not a trigonometric monomial: {trig}")
        primitive = _trig_primitive(int(powers.get(_S, 0)), int(powers.get(_C, 0)))
        total += coef * (primitive - primitive.subs(_theta, 0))
    return total


def _covariance_integral(f, order):
    """int_0^c (c - t)^(order-1)/(order-1)! f(t) dt: ``order`` integrations in c from 0.

    f is a function of (q, c, D) with D = q^2 - c^2 and at most one radicand
    alpha D + beta = alpha (a^2 - c^2). The substitution t = a sin(theta) makes the
    integrand a polynomial in sin and cos over a power of cos, which SymPy
    integrates; theta then goes back to asin(c/a). Returns (expr, a), with the
    square root sqrt(a^2 - c^2) written as the positive symbol W (a is None and
    W absent when f has no radicand). ``order`` 0 returns f itself.
    """
    radicand = _radicand(f)
    if radicand is None:
        g = f.subs(_D, _q**2 - _c**2)
        if order == 0:
            return g, None
        t = sympy.Dummy("t", real=True)
        weight = (_c - t) ** (order - 1) / sympy.factorial(order - 1)
        return sympy.integrate(weight * g.subs(_c, t), (t, 0, _c)), None
    poly = sympy.Poly(radicand, _D)
    alpha, beta = poly.coeff_monomial(_D), poly.coeff_monomial(1)
    a = sqrt(sympy.factor(_q**2 + beta / alpha))
    if order == 0:
        g = f.subs(_D, _q**2 - a**2 + _W**2)
        return g.replace(lambda e: e.is_Pow and e.base.has(_W),
                         lambda e: sympy.factor(e.base) ** e.exp), a
    g = f.subs({_D: _q**2 - a**2 + a**2 * _C**2, _c: a * _S}, simultaneous=True)
    g = g.replace(lambda e: e.is_Pow and e.base.has(_C), lambda e: sympy.factor(e.base) ** e.exp)
    weight = (a * _X - a * _S) ** (order - 1) / sympy.factorial(order - 1)
    primitive = _integrate_trig_polynomial(weight * g * a * _C)
    back = {sympy.sin(_theta): _c / a, sympy.cos(_theta): _W / a, _X: _c / a}
    return primitive.xreplace(back).xreplace({_theta: sympy.asin(_c / a)}), a


def _tidy(expr, a):
    """A readable form: W^2 = a^2 - c^2 reduced, terms grouped by asin, W -> sqrt(a^2 - c^2)."""
    if a is not None:
        expr = _reduce_root(expr, _W, a**2 - _c**2)
    expanded = sympy.expand(expr)
    groups = sympy.collect(expanded, sorted(expanded.atoms(sympy.asin), key=str), evaluate=False)
    tidy = sum(
        (key * sympy.factor(term)
         for key, value in groups.items()
         for term in Add.make_args(sympy.apart(sympy.cancel(value), _W) if a is not None else value)),
        S.Zero,
    )
    if a is not None:
        tidy = tidy.xreplace({_W: sqrt(a**2 - _c**2)})
    return tidy


# ---------------------------------------------------------------------------
# Closed forms.
# ---------------------------------------------------------------------------


def _price_order(phi, max_order=3):
    """Smallest n >= 1 with phi^(n) Gaussian-integrable, or None (no closed form here)."""
    for n in range(1, max_order + 1):
        if _is_gaussian_integrable(sympy.diff(phi, _x, n), _x):
            return n
    return None


@functools.lru_cache(maxsize=None)
def _price_expansion(activation, derivatives):
    """d^k K_phi / dc^k (q, c) for k = ``derivatives``, or None without a closed form.

    Price's theorem of order n (n = :func:`_price_order`):
    d^k K/dc^k = sum_{k<=j<n} K^(j)(q, 0) c^(j-k)/(j-k)!
                 + int_0^c (c-t)^(n-k-1)/(n-k-1)! E[phi^(n)(u) phi^(n)(v)]|_t dt,
    with K^(j)(q, 0) = (E phi^(j)(u))^2 (u, v independent at c = 0).
    """
    phi = _activation_expr(activation, _x)
    order = _price_order(phi)
    if order is None or derivatives > order:
        return None
    at_zero = sum(
        (_expectation(sympy.diff(phi, _x, j), _q) ** 2 * _c ** (j - derivatives)
         / sympy.factorial(j - derivatives)
         for j in range(derivatives, order)),
        S.Zero,
    )
    derivative = sympy.diff(phi, _x, order)
    curvature = _pair_expectation(derivative, derivative)
    integral, a = _covariance_integral(curvature, order - derivatives)
    return _tidy(at_zero + integral, a)


def _closed_form(activation):
    """K_phi(q, c) in the derivation symbols (q, c) (eqs. 35-36), or None."""
    return _price_expansion(activation, 0)


def _closed_form_derivative(activation):
    """dK_phi/dc in the derivation symbols (Poole et al.'s chi at c = q), or None."""
    return _price_expansion(activation, 1)


def _substitute(expr, q, c):
    return expr.xreplace({_q: sympy.sympify(q), _c: sympy.sympify(c)})


def gaussian_kernel(activation, q, c):
    """K_phi(q, c) = E[phi(u) phi(v)], Var u = Var v = q, Cov(u, v) = c (eqs. 35-37).

    A closed form derived by SymPy for relu (arc-cosine kernel, Cho & Saul 2009),
    erf ((2/pi) asin(2c/(1+2q)), Williams 1997), gelu (Tsuchida et al. 2021) and
    identity (c); an opaque ``tanh_kernel(q, c)`` for tanh. The diagonal
    E phi(u)^2 is ``gaussian_kernel(activation, q, q)``. Derivations are cached, so
    only the first call per activation costs SymPy time.
    """
    _check_activation(activation)
    closed = _closed_form(activation)
    if closed is None:
        return opaque_kernel(activation)(q, c)
    return _substitute(closed, q, c)


def kernel_derivative(activation, q, c):
    """dK_phi/dc (q, c) = E[phi'(u) phi'(v)] (Price's theorem).

    At c = q this is Poole et al.'s chi_1 / sigma_w^2 (Schoenholz et al. 2016),
    the slope of the overlap map that decides order vs chaos. Computed by SymPy
    as the c-derivative of the closed form; for tanh it is the opaque
    ``tanh_prime_kernel(q, c)``.
    """
    _check_activation(activation)
    closed = _closed_form_derivative(activation)
    if closed is None:
        return opaque_kernel(activation)(_q, _c).diff(_c).xreplace(
            {_q: sympy.sympify(q), _c: sympy.sympify(c)}
        )
    return _substitute(closed, q, c)


# ---------------------------------------------------------------------------
# Opaque kernels: activations without a closed form.
# ---------------------------------------------------------------------------


class OpaqueKernel(sympy.Function):
    """K_phi(q, c) for an activation without a closed form; subclass per activation.

    Subclasses are made by :func:`opaque_kernel` and carry ``activation`` (a name)
    and ``phi`` (a SymPy Lambda). They print as ``<activation>_kernel(q, c)`` so that
    a numeric backend can map them by name (e.g. to Gauss-Hermite quadrature),
    evaluate in ``evalf`` by mpmath quadrature (:mod:`derive.kernel_quadrature`),
    rewrite to their 2-D Gaussian integral with ``.rewrite(sympy.Integral)``, and
    differentiate in c by Price's theorem into the kernel of phi'.
    """

    nargs = 2
    activation = None
    phi = None

    @classmethod
    def eval(cls, q, c):
        return None

    def _eval_is_real(self):
        q, c = self.args
        if q.is_positive and c.is_real:
            return True
        return None

    def fdiff(self, argindex=2):
        """d/dc K_phi = K_phi' (Price's theorem); d/dq stays unevaluated."""
        if argindex != 2:
            return super().fdiff(argindex)
        prime = sympy.Lambda(_x, sympy.diff(self.phi(_x), _x))
        return opaque_kernel(f"{self.activation}_prime", prime)(*self.args)

    def _eval_rewrite_as_Integral(self, q, c, **kwargs):
        """The defining integral with u = sqrt(q) z1, v = sqrt(q)(rho z1 + sqrt(1-rho^2) z2)."""
        z1, z2 = sympy.Dummy("z1", real=True), sympy.Dummy("z2", real=True)
        rho = c / q
        u = sqrt(q) * z1
        v = sqrt(q) * (rho * z1 + sqrt(1 - rho**2) * z2)
        density = exp(-(z1**2 + z2**2) / 2) / (2 * pi)
        return sympy.Integral(self.phi(u) * self.phi(v) * density, (z2, -oo, oo), (z1, -oo, oo))

    def _eval_evalf(self, prec):
        q, c = self.args
        if not (q.is_number and c.is_number):
            return None
        dps = mpmath.libmp.prec_to_dps(prec)
        value = kernel_quadrature.gaussian_kernel(self.phi, q, c, dps)
        return sympy.Float(value, dps)

    def _latex(self, printer, exp=None):
        q, c = (printer._print(a) for a in self.args)
        name = self.activation.replace("_", r"\_")
        tex = rf"K_{{\mathrm{{{name}}}}}\left({q}, {c}\right)"
        return tex if exp is None else rf"{tex}^{{{exp}}}"

    def __reduce_ex__(self, protocol):
        return (_rebuild_opaque, (self.activation, self.args))


def _rebuild_opaque(activation, args):
    return opaque_kernel(activation)(*args)


_OPAQUE = {}


def _camel(name):
    return "".join(part.capitalize() for part in name.split("_")) + "Kernel"


def opaque_kernel(activation, phi=None):
    """The OpaqueKernel subclass of ``activation``, named ``f"{activation}_kernel"``.

    ``phi`` (a SymPy Lambda) is needed only the first time a name outside
    ACTIVATIONS is registered; the same class is returned on every later call, so
    expressions built at different times compare equal.
    """
    if activation in _OPAQUE:
        return _OPAQUE[activation]
    if phi is None:
        _check_activation(activation)
        phi = activation_function(activation)
    cls = type(f"{activation}_kernel", (OpaqueKernel,), {
        "activation": activation,
        "phi": phi,
        "__module__": __name__,
        "__qualname__": _camel(activation),
        "__doc__": f"K_phi(q, c) for phi = {activation}; see OpaqueKernel.",
    })
    _OPAQUE[activation] = cls
    return cls


#: K_tanh(q, c): no closed form; prints as ``tanh_kernel(q, c)``.
TanhKernel = opaque_kernel("tanh")
