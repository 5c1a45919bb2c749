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

import numpy as np
from scipy import stats as _scipy_stats

import numeric

#: Quadrature nodes over the Gamma law of the query norm (trapezoid over ±8 sd: error ~ e^-60).
CHI_NODES = 49


def effective_b(beta, q=1.0, p=0.0, T=2):
    """b = β √(ln T q (q − p)): the softmax sees log-weights b z_s with z_s i.i.d. N(0, 1)."""
    return beta * math.sqrt(math.log(T) * q * (q - p))


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
