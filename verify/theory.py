"""Theory values the checks compare with, and the declared finite-size terms.

Everything here calls :mod:`numeric` (the contract's functions) and adds
only what a *finite width d* or the *T → ∞ limit* changes, each derived in
its docstring:

- :func:`row_moment_at_d`: the exact finite-d value of a row moment of a real
  attention layer fed the mean-field tokens (q_ts = p + (q − p) δ_ts): given
  the query u_t = W_Q X_t, the row's scores are i.i.d. Gaussian with variance
  ∝ |u_t|², and |u_t|²/E|u_t|² ~ χ²_{d_h}/d_h. Since b = β √(ln T q (q − p))
  is linear in β, the moment is E_g[M(β √g)] with g ~ Gamma(d_h/2, 2/d_h);
- :func:`key_gram_excess`: two rows of a real layer share the keys W_K X_s,
  whose Gram matrix deviates from its mean by O(1/√d). Given the keys, a
  row's mean weights are m_s ∝ exp(b² n_s/2) to leading (annealed) order with
  n_s = |K_s|²/E|K_s|², Var n_s = 2/d_h, so E Σ_s m_s² exceeds the Gaussian
  value by the relative amount T Var_s(m_s) ≈ b⁴/(2 d_h) (an upper estimate:
  the annealed form overstates it above the condensation);
- :func:`frozen_parisi_m`: the extreme-value shift of the Parisi parameter at
  finite T, the leading finite-T correction of the frozen phase. The largest
  of T standard Gaussians sits at z_T = √(2 ln T) − (ln ln T + ln 4π)/(2√(2 ln T));
  above it the number of z_s beyond z_T + x is ≈ e^{−z_T x}, so the top
  log-weights b z_s form a Poisson process of slope z_T/b: the row is
  Poisson–Dirichlet with m_T = z_T/b = m (1 − (ln ln T + ln 4π)/(4 ln T)),
  where m = √(2 ln T)/b = β_c/β is the T → ∞ value (eqs. 4, 15);
- :func:`spread_ipr`: the annealed leading term of E Y2 in the spread phase,
  e^{b²}/T = T^{β² q(q−p) − 1} (errata entry 5: exact for β ≤ β_c/2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats as _scipy_stats

import numeric
from numeric.laplace import effective_b

#: Quadrature nodes over the Gamma law of the query norm (trapezoid over ±8 sd: error ~ e^-60).
CHI_NODES = 49


def row_moment(name: str, beta, *, q=1.0, p=0.0, T=None, r=2):
    """A row moment from numeric: "ipr" (r), "ipr_square" or "pair"; T=None is the asymptotic theory."""
    if name == "ipr":
        return numeric.ipr(beta, r=r, q=q, p=p, T=T)
    if name == "ipr_square":
        return numeric.ipr_square(beta, q=q, p=p, T=T)
    if name == "pair":
        return numeric.ipr_pair(beta, q=q, p=p, T=T)
    raise ValueError(f"moment must be 'ipr', 'ipr_square' or 'pair', got {name!r}")


def _gamma_nodes(dof: int):
    """Trapezoid nodes and weights for g ~ χ²_dof/dof = Gamma(dof/2, scale 2/dof) (mean 1)."""
    law = _scipy_stats.gamma(dof / 2.0, scale=2.0 / dof)
    sd = math.sqrt(2.0 / dof)
    g = np.linspace(max(1e-9, 1.0 - 8.0 * sd), 1.0 + 10.0 * sd, CHI_NODES)
    w = law.pdf(g) * (g[1] - g[0])
    return g, w / w.sum()


def row_moment_at_d(name: str, beta, *, d_h: int, q=1.0, p=0.0, T: int, r=2) -> float:
    """The finite-T row moment averaged over the query norm of a width-d_h head (module docstring).

    Exact for Y2, Y3 and (Y2)² of a real layer with mean-field input tokens;
    for the pair term the two rows' norms are averaged jointly only through
    their common scale (see :func:`key_gram_excess` for what else d changes).
    """
    g, w = _gamma_nodes(d_h)
    values = np.asarray(row_moment(name, beta * np.sqrt(g), q=q, p=p, T=T, r=r), dtype=float)
    return float(w @ values)


def key_gram_excess(beta, *, d_h: int, q=1.0, p=0.0, T: int) -> float:
    """Declared finite-d allowance of the pair term of a real layer: E Σ A A' · b⁴/(2 d_h) (module docstring)."""
    b = effective_b(beta, q, p, T)
    return float(row_moment("pair", beta, q=q, p=p, T=T)) * b**4 / (2.0 * d_h)


def frozen_parisi_m(beta, *, q=1.0, p=0.0, T: int) -> float:
    """m_T = min(1, (β_c/β)(1 − (ln ln T + ln 4π)/(4 ln T))): the extreme-value finite-T Parisi parameter.

    Meaningful in the frozen phase (m_T < 1); m_T = 1 is the spread phase (no condensation).
    """
    lnT = math.log(T)
    shift = 1.0 - (math.log(lnT) + math.log(4.0 * math.pi)) / (4.0 * lnT)
    return min(1.0, math.sqrt(2.0 / (q * (q - p))) / beta * shift)


def frozen_ipr(r, m) -> float:
    """E Σ_s A^r of a Poisson–Dirichlet(m) row (numeric's generated form; Y2 = 1 − m)."""
    from numeric._generated import ipr_frozen
    return float(ipr_frozen(r, m))


def frozen_ipr_square(m) -> float:
    """E (Σ_s A²)² of a Poisson–Dirichlet(m) row (numeric's generated form)."""
    from numeric._generated import ipr_square_frozen
    return float(ipr_square_frozen(m))


def spread_ipr(beta, *, q=1.0, p=0.0, T: int) -> float:
    """Annealed E Y2 ≈ e^{b²}/T, the leading finite-T term below β_c/2 (errata 5)."""
    return math.exp(effective_b(beta, q, p, T) ** 2) / T


def query_grad_sq_norm(beta, *, d: int, T: int, q=1.0, p=0.0, sigma_v2=1.0) -> float:
    """E ||∂L/∂W_Q||_F² to leading order in d, L = Σ G_ti S(X)_ti (B.5 re-derived; compare eq. 31).

    The chain rule gives, exactly, E_G ||∂L/∂W_Q||² = (1/d) Σ_t |X_t|² tr(D_t C D_t K)
    with D_t = diag(A_t) − A_t A_tᵀ (eq. 29), C_uu' = V_u·V_u' and K_ss' = (W_K X_s)·(W_K X_s')
    (:func:`verify.montecarlo.jacobian_sq_norm`, checked against autograd). Replacing C by its mean σ_v² d Q
    (exact in expectation: W_V is independent of A) and K by its mean β √(ln T) d Q
    (the one concentration step), with Q = (q − p) I + p J and D_t J = 0:

        E ||∂L/∂W_Q||² = d² β √(ln T) σ_v² q (q − p)² T E[Y2 − 2 Y3 + (Y2)²].

    The bracket is tr(D_t²) ≥ 0. Paper eq. (31) has q (q − p)[(q − p)(Y2 − 2Y3) + p (Y2)²]
    instead, which is negative for peaked rows (Y3 → Y2). Moments: finite T, averaged over
    the query norm of width d (:func:`row_moment_at_d`).
    """
    y2 = row_moment_at_d("ipr", beta, d_h=d, q=q, p=p, T=T)
    y3 = row_moment_at_d("ipr", beta, d_h=d, q=q, p=p, T=T, r=3)
    y2_squared = row_moment_at_d("ipr_square", beta, d_h=d, q=q, p=p, T=T)
    bracket = y2 - 2.0 * y3 + y2_squared
    return d * d * beta * math.sqrt(math.log(T)) * sigma_v2 * q * (q - p) ** 2 * T * bracket


#: Relative variance of a row's score scale n = b_t²/E b_t² with i.i.d. Gaussian tokens: three independent
#: χ²_d/d factors (|X_t|², |W_Q X̂_t|², |W_Kᵀ û_t|²), each of variance 2/d (times d here).
SCALE_VARIANCE_D = 6.0
#: d · Cov(n, |X_t|²/(d q)): the chain rule's prefactor |X_t|² shares the first factor.
SCALE_PREFACTOR_COV_D = 2.0
#: Rows of Gaussian scores drawn for :func:`score_alignment` (its relative SE ~ 1 %, a 1e-4 effect at d = 256).
ALIGNMENT_ROWS = 8192


@dataclass(frozen=True)
class FiniteD:
    """First-order finite-d terms of E ||∂L/∂W_Q||², each relative to the leading order.

    From :func:`query_grad_finite_d`; ``total`` is their sum.
    """

    token: float
    scale: float
    aligned: float

    @property
    def total(self) -> float:
        return self.token + self.scale + self.aligned


def query_grad_finite_d(beta, *, d: int, T: int, q=1.0, p=0.0, seed: int = 0) -> FiniteD:
    """The O(1/d) terms of E ||∂L/∂W_Q||² for i.i.d. Gaussian tokens, relative to the leading order.

    Tokens X_t = √p c + √(q − p) z_t (the only kind when T ≥ d, as in Fig. 4). Exactly,
    E_G ||∂L/∂W_Q||² = (1/d) Σ_t |X_t|² tr(D_t C D_t K) (:func:`query_grad_sq_norm`). Given
    the tokens, W_V averages C to σ_v² X Xᵀ exactly; the leading order also replaces X Xᵀ/d
    and K by their means. Row t's scores are a_tu = g_t·X_u with g_t = W_Kᵀ W_Q X_t/√d; write
    z_u = ĝ ζ_u + z_u⊥, so the scores are b_t ζ_u (ζ_u i.i.d. N(0, 1) given the scale b_t) and
    z_u⊥ is independent of row t's attention. The components D_t kills (the common c and the
    rank-one c·z_u terms: D_t 1 = 0) drop out. Three terms remain at O(1/d):

    - ``token``: z_u⊥·z_v⊥/d − δ_uv (Wishart, E N_uv N_u'v' = (δ_uu' δ_vv' + δ_uv' δ_vu')/d) in
      both C and K gives E tr(D N D N) = (E tr D² + E (tr D)²)/d, with tr D = 1 − ΣA² and
      tr D² = Y2 − 2Y3 + (ΣA²)² the bracket: token = (1 + E(1 − ΣA²)²/E[bracket])/d. An
      *absolute* O(1/d): below β_c, where the bracket is small, it dominates the finite-d
      error, and at fixed d the norm keeps a floor ∝ (q − p)²/d as T → ∞ instead of vanishing.
    - ``scale``: b_t²/E b_t² = n is a product of three χ²_d/d factors (:data:`SCALE_VARIANCE_D`)
      and shares |X_t|² with the prefactor (:data:`SCALE_PREFACTOR_COV_D`). With
      φ(n) = bracket(β √n)/bracket(β) (finite-T theory), scale = (2 φ'(1) + 3 φ''(1))/d.
    - ``aligned``: C/(σ_v² d (q − p)) = (1 − 1/d) I + ζζᵀ/d + …; K has its identity part
      reduced twice ((d − 1)/d from z⊥ and from the direction û = W_Q X_t/|W_Q X_t| of the
      key space) and the score-aligned part twice (through z and through û·k_u ∝ a_tu):
      K/(σ_K² d² (q − p)) = (1 − 2/d) I + 2ζζᵀ/d + …. So tr(D C D K) gains
      (−3 + 3 r)/d relative, r = E|D ζ|²/E tr D² = E Σ_u A_u² (ζ_u − Σ_v A_v ζ_v)²/E[bracket],
      from :func:`score_alignment` (r ≈ 2 deep in the spread phase, → 0 when condensed).

    What is left is O(1/d²) relative, or O(1/d²)/bracket absolute; verify's checks add the
    suite's FINITE_D_COEFF/d for it.
    """
    token, scale, aligned = _finite_d_coefficients(float(beta), int(T), float(q), float(p), int(seed))
    return FiniteD(token / d, scale / d, aligned / d)


@lru_cache(maxsize=1024)
def _finite_d_coefficients(beta: float, T: int, q: float, p: float, seed: int) -> tuple[float, float, float]:
    """d × (token, scale, aligned) of :func:`query_grad_finite_d` (each term is exactly ∝ 1/d)."""
    y2 = float(numeric.ipr(beta, r=2, q=q, p=p, T=T))
    y22 = float(numeric.ipr_square(beta, q=q, p=p, T=T))
    bracket = _bracket(beta, T, q, p)
    token = 1.0 + (1.0 - 2.0 * y2 + y22) / bracket
    h = 0.01
    phi = [_bracket(beta * math.sqrt(n), T, q, p) / bracket for n in (1.0 - h, 1.0, 1.0 + h)]
    slope, curvature = (phi[2] - phi[0]) / (2 * h), (phi[2] - 2 * phi[1] + phi[0]) / h**2
    scale = slope * SCALE_PREFACTOR_COV_D + curvature * SCALE_VARIANCE_D / 2.0
    aligned = 3.0 * (score_alignment(beta, T=T, q=q, p=p, seed=seed) - 1.0)
    return token, scale, aligned


def score_alignment(beta, *, T: int, q=1.0, p=0.0, rows: int = ALIGNMENT_ROWS, seed: int = 0) -> float:
    """r = E Σ_u A_u² (ζ_u − Σ_v A_v ζ_v)² / E[Y2 − 2Y3 + (ΣA²)²] for A = softmax(b ζ), ζ i.i.d. N(0, 1).

    By Monte Carlo over ``rows`` seeded rows (b = β √(ln T q (q − p)), :func:`effective_b`):
    the mixed moments a Stein reduction of the numerator needs (E[Y2 Y3], …) are not
    among numeric's finite-T moments. Used at O(1/d) only (:func:`query_grad_finite_d`).
    """
    b = effective_b(beta, q, p, T)
    rng = np.random.default_rng(seed)
    chunk = max(1, (1 << 21) // T)
    numerator = bracket = 0.0
    for start in range(0, rows, chunk):
        z = rng.standard_normal((min(chunk, rows - start), T))
        logits = b * z
        a = np.exp(logits - logits.max(axis=1, keepdims=True))
        a /= a.sum(axis=1, keepdims=True)
        centred = z - (a * z).sum(axis=1, keepdims=True)
        y2 = (a**2).sum(axis=1)
        numerator += float((a**2 * centred**2).sum())
        bracket += float((y2 - 2.0 * (a**3).sum(axis=1) + y2**2).sum())
    return numerator / bracket


def _bracket(beta, T, q, p) -> float:
    """E[Y2 − 2Y3 + (ΣA²)²] at finite T (numeric.gradients.gradient_bracket)."""
    from numeric.gradients import gradient_bracket
    return float(gradient_bracket(beta, T=T, q=q, p=p))
