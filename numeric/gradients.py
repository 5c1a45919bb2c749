"""Gradient norms of a self-attention layer at initialisation (paper Result 2, corrected).

For the loss L = sum_{t,i} G_ti S(X)_ti with G i.i.d. N(0, 1),

    E ||dL/dW_Q||_F^2 = T d^2 beta sqrt(ln T) sigma_v2 q (q - p)^2 E[Y2 - 2 Y3 + (sum_s A_ts^2)^2]

(:mod:`derive.jacobian`; the same for W_K; W_V: T d^2 (p + (q - p) Y2)).
The bracket is non-negative for every attention row. Asymptotically
(``finite_T=False``) the moments are those of the frozen REM, and the bracket
is m(1 - m)/3 = Var Y2 with m = beta_c/beta: zero below beta_c, largest at
beta = 2 beta_c. ``finite_T=True`` uses the exact finite-T moments
(:mod:`numeric.finite_t`), where gradients vanish only gradually below beta_c.

Dividing by :func:`collapse_scale` = T d^2 sqrt(ln T) sigma_v2 q (q - p)^2 leaves
beta E[bracket] (:func:`gradient_bracket`), the same curve for every d and T
asymptotically (Fig. 4). The paper's eq. (26) divides by d^2 sqrt(ln T) / T
instead: its loss has a bounded factor B(X) assumed O(1/T) (eq. 32), while
the loss here sums over the T tokens, so the norm grows like T.
:func:`gradient_regimes` locates the regimes (vanishing, peak, saturation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import validation as check
from .moments import parisi_m


def _moments(beta, q, p, T, finite_T):
    if finite_T:
        from . import finite_t
        return (finite_t.ipr(beta, r=2, q=q, p=p, T=T), finite_t.ipr(beta, r=3, q=q, p=p, T=T),
                finite_t.ipr_square(beta, q=q, p=p, T=T))
    from ._generated import ipr_frozen, ipr_square_frozen
    m = parisi_m(beta, q, p)
    return ipr_frozen(2.0, m), ipr_frozen(3.0, m), ipr_square_frozen(m)


def _checked(beta, d, T, q, p, sigma_v2):
    beta = check.positive("beta", beta)
    d, T = check.count("d", d), check.sequence_length(T, infinite=False)
    q, p = check.positive("q", q), check.as_array("p", p)
    if np.any(p >= q) or np.any(p < -q):
        raise ValueError(f"p must satisfy -q <= p < q, got q={q.tolist()!r}, p={p.tolist()!r}")
    return beta, d, T, q, p, check.positive("sigma_v2", sigma_v2)


def _norm(which, beta, d, T, q, p, sigma_v2, finite_T):
    from . import _generated
    beta, d, T, q, p, sigma_v2 = _checked(beta, d, T, q, p, sigma_v2)
    y2, y3, y22 = _moments(beta, q, p, T, finite_T)
    out = getattr(_generated, f"grad_sq_norm_{which}")(beta, d, T, q, p, sigma_v2, y2, y3, y22)
    out = np.asarray(out, dtype=float)
    return float(out) if out.ndim == 0 else out


def query_grad_sq_norm(beta, *, d, T, q=1.0, p=0.0, sigma_v2=1.0, finite_T=True):
    """E ||dL/dW_Q||_F^2 (module docstring); vectorised over beta, q, p, sigma_v2."""
    return _norm("Q", beta, d, T, q, p, sigma_v2, finite_T)


def key_grad_sq_norm(beta, *, d, T, q=1.0, p=0.0, sigma_v2=1.0, finite_T=True):
    """E ||dL/dW_K||_F^2: equal to the query's at leading order in d."""
    return _norm("K", beta, d, T, q, p, sigma_v2, finite_T)


def value_grad_sq_norm(beta, *, d, T, q=1.0, p=0.0, sigma_v2=1.0, finite_T=True):
    """E ||dL/dW_V||_F^2 = T d^2 (p + (q - p) Y2): it never vanishes (not in the paper)."""
    return _norm("V", beta, d, T, q, p, sigma_v2, finite_T)


def collapse_scale(*, d, T, q=1.0, p=0.0, sigma_v2=1.0):
    """T d^2 sqrt(ln T) sigma_v2 q (q - p)^2: the query norm divided by this is beta E[bracket].

    The prefactor of the corrected Result 2 (module docstring); Fig. 4's y axis.
    """
    _, d, T, q, p, sigma_v2 = _checked(1.0, d, T, q, p, sigma_v2)
    return T * d * d * math.sqrt(math.log(T)) * sigma_v2 * q * (q - p) ** 2


def gradient_bracket(beta, *, T, q=1.0, p=0.0, finite_T=True):
    """E[Y2 - 2 Y3 + (sum_s A_ts^2)^2] = E tr(D_t^2), the per-row trace of B.5 (corrected).

    Read off the generated query norm (:mod:`derive.jacobian`), so it is the
    derived bracket, not a retyped one: norm / (beta collapse_scale). It is
    m(1 - m)/3 asymptotically (m = beta_c/beta), and vanishes below beta_c.
    """
    norm = query_grad_sq_norm(beta, d=1, T=T, q=q, p=p, finite_T=finite_T)
    return norm / (np.asarray(beta, dtype=float) * collapse_scale(d=1, T=T, q=q, p=p))


@dataclass(frozen=True)
class GradientRegimes:
    """Where E ||dL/dW_Q||^2 vanishes, peaks and saturates at one (T, q, p) (issue 7, part 3).

    ``bracket`` = E tr(D_t^2) (:func:`gradient_bracket`) and ``norm`` = beta
    bracket = E ||dL/dW_Q||^2 / collapse_scale; ``asymptotic_*`` are the same
    quantities of the T -> oo theory, computed the same way (not typed in).

    - ``vanishing_exponents``: {beta/beta_c: d ln E[bracket] / d ln T} of the
      finite-T theory at this T (central difference over T/2 .. 2T): how fast
      gradients vanish with T below beta_c (asymptotically the bracket is 0
      there; its finite-T decay is slow, errata 5);
    - ``bracket_peak_beta``, ``bracket_peak``: the maximum of the bracket
      (asymptotically m = 1/2, beta = 2 beta_c, value 1/12);
    - the full norm has the extra factor beta: asymptotically
      beta m (1 - m)/3 = beta_c (1 - beta_c/beta)/3 increases monotonically, so
      it has *no* interior peak; it saturates at ``norm_plateau`` (beta_c/3
      asymptotically; the finite-T bracket also decays like 1/beta) and reaches
      half of it at ``norm_half_beta`` (2 beta_c asymptotically).
    """

    T: int
    q: float
    p: float
    beta_c: float
    vanishing_exponents: dict
    bracket_peak_beta: float
    bracket_peak: float
    norm_plateau: float
    norm_half_beta: float
    asymptotic_bracket_peak_beta: float
    asymptotic_bracket_peak: float
    asymptotic_norm_plateau: float
    asymptotic_norm_half_beta: float

    def as_dict(self) -> dict:
        """Plain floats (exponents keyed by the ratio as a string), for JSON."""
        out = dict(self.__dict__)
        out["vanishing_exponents"] = {f"{k:g}": v for k, v in self.vanishing_exponents.items()}
        return out


#: Far end of the beta searches, in units of beta_c (the bracket peak lies below 3 beta_c).
_SEARCH_MAX = 12.0
#: beta of the Richardson extrapolation to beta -> oo, in units of beta_c (norm = c0 + c1/beta + ...).
_PLATEAU_AT = 1e4


def gradient_regimes(T, *, q=1.0, p=0.0, ratios=(0.5, 0.8)) -> GradientRegimes:
    """The gradient regimes of a self-attention layer at sequence length T (class docstring)."""
    _, _, T, q, p, _ = _checked(1.0, 1, T, q, p, 1.0)
    if T < 4:
        raise ValueError(f"T must be >= 4 (the exponent compares T/2 and 2T), got {T}")
    q, p = float(q), float(p)
    beta_c = critical_beta(q, p)
    finite, asymptotic = _profile(T, q, p, True), _profile(T, q, p, False)
    return GradientRegimes(
        T=T, q=q, p=p, beta_c=beta_c,
        vanishing_exponents={float(r): vanishing_exponent(r * beta_c, T=T, q=q, p=p) for r in ratios},
        bracket_peak_beta=finite["peak_beta"], bracket_peak=finite["peak"], norm_plateau=finite["plateau"],
        norm_half_beta=finite["half_beta"], asymptotic_bracket_peak_beta=asymptotic["peak_beta"],
        asymptotic_bracket_peak=asymptotic["peak"], asymptotic_norm_plateau=asymptotic["plateau"],
        asymptotic_norm_half_beta=asymptotic["half_beta"])


def critical_beta(q=1.0, p=0.0) -> float:
    """beta_c(q, p) = sqrt(2/(q(q - p))): the condensation point (eq. 15; derive.critical_beta())."""
    return math.sqrt(2.0 / (q * (q - p)))


def vanishing_exponent(beta, *, T, q=1.0, p=0.0) -> float:
    """d ln E[bracket] / d ln T at fixed beta, finite-T theory, central difference over T/2 .. 2T.

    Below beta_c this is how fast the (per-token) query gradient vanishes with
    T; the T -> oo exponent of E Y2 (derive.rem.finite_size_exponent) is
    approached only logarithmically slowly.
    """
    lo, hi = T // 2, 2 * T
    ratio = gradient_bracket(beta, T=hi, q=q, p=p) / gradient_bracket(beta, T=lo, q=q, p=p)
    return float(math.log(ratio) / math.log(hi / lo))


def _profile(T, q, p, finite_T) -> dict:
    """Peak of the bracket, plateau of beta bracket (beta -> oo) and where half of it is reached."""
    from scipy import optimize

    beta_c = critical_beta(q, p)

    def bracket(b):
        return float(gradient_bracket(b, T=T, q=q, p=p, finite_T=finite_T))

    def norm(b):
        return b * bracket(b)

    grid = beta_c * np.geomspace(0.2, _SEARCH_MAX, 241)
    k = int(np.argmax([bracket(b) for b in grid]))
    best = optimize.minimize_scalar(lambda b: -bracket(b), bracket=(grid[k - 1], grid[k], grid[k + 1]),
                                    tol=1e-10)
    far = _PLATEAU_AT * beta_c
    plateau = 2.0 * norm(2.0 * far) - norm(far)
    half = optimize.brentq(lambda b: norm(b) - 0.5 * plateau, 0.2 * beta_c, far, xtol=1e-12 * beta_c)
    return {"peak_beta": float(best.x), "peak": -float(best.fun), "plateau": float(plateau), "half_beta": float(half)}
