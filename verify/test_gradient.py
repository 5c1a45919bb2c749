"""The query gradient (B.4-B.5): autograd against the chain rule, and against the leading-order formula.

1. The chain rule of B.5 (eqs. 28-29), kept exact — E_G ||∂L/∂W_Q||² =
   (1/d) Σ_t |X_t|² tr(D_t C D_t K) — equals the Frobenius norm of the full
   autograd Jacobian to rounding.
2. The random-loss estimator of :func:`verify.montecarlo.query_gradient` is
   unbiased for it (per seed, over G).
3. The leading order in d, d² β √(ln T) σ_v² q (q − p)² T E[Y2 − 2Y3 + (Y2)²]
   (:func:`verify.theory.query_grad_sq_norm`, and numeric.query_grad_sq_norm
   of the contract), against autograd. Paper eq. (31)
   is rejected by the same measurement (its bracket is negative for β ≥ 2 at p = 0).
4. Issue 7's accuracy at T = 512, d = 256 (i.i.d. Gaussian tokens, T > d): the leading
   order plus its first-order finite-d terms (:func:`verify.theory.query_grad_finite_d`)
   against autograd on both sides of β_c, p ∈ {0, 0.5}; the leading order within 7 % where
   attention is condensed; on CUDA also at Fig. 4's T = 2048.
"""

import math

import numpy as np

import pytest
import torch

import numeric
from derive.layers import SelfAttention
from verify import montecarlo as mc
from verify import theory
from verify.stats import assert_agrees, finite_d_allowance
from verify.torch_view import build, tokens


@pytest.mark.parametrize("gain", [False, True])
@pytest.mark.parametrize("beta, p", [(0.7, 0.0), (2.5, 0.4)])
def test_chain_rule_equals_the_autograd_jacobian(beta, p, gain, device):
    T, d = 5, 6
    spec = SelfAttention(gain=gain)
    stack = build(spec, d, seeds=2, params={"beta": beta, "sigma_v2": 1.3}, seed=4, device=device)
    x = tokens(2, T, d, rho0=p, kind="gaussian", seed=9, device=device)
    weights = stack.blocks[0].layer_weights()
    scale = math.sqrt(beta * math.sqrt(math.log(T)) / d)

    def output(w_q):
        return spec.torch_forward(x, {**weights, "W_Q": w_q / scale}, stack.params)

    jac = torch.autograd.functional.jacobian(output, weights["W_Q"].detach() * scale)
    by_seed = torch.stack([jac[s, :, :, s].pow(2).sum() for s in range(2)])
    closed = mc.jacobian_sq_norm(spec, weights, stack.params, x)
    torch.testing.assert_close(closed, by_seed, rtol=1e-10, atol=0)


@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_random_loss_estimates_the_jacobian_norm(beta, device):
    g = mc.query_gradient(beta, T=16, d=64, seeds=128, p=0.3, sigma_v2=0.8, device=device, seed=5)
    difference = mc.Estimate(g.autograd.samples - g.jacobian.samples)
    assert_agrees(0.0, difference, what=f"E_G ||dL/dW_Q||^2 - ||J||^2 (beta={beta})")


@pytest.mark.parametrize("beta, p", [(0.5, 0.0), (1.0, 0.0), (2.0, 0.0), (3.0, 0.0), (1.0, 0.5), (3.0, 0.5)])
def test_leading_order_query_gradient(beta, p, device):
    T, d = 32, 64
    g = mc.query_gradient(beta, T=T, d=d, seeds=128, p=p, device=device, seed=6)
    expected = theory.query_grad_sq_norm(beta, d=d, T=T, p=p)
    assert_agrees(expected, g.autograd, allowance=finite_d_allowance(d, expected),
                  reason="finite d: the key Gram matrix replaced by its mean (relative O(1/d))",
                  what=f"E||dL/dW_Q||^2 (beta={beta}, p={p})")
    contract = numeric.query_grad_sq_norm(beta, d=d, T=T, p=p)
    assert_agrees(contract, g.autograd, allowance=finite_d_allowance(d, contract),
                  reason="finite d: key Gram matrix and query norm at their means (relative O(1/d))",
                  what=f"numeric.query_grad_sq_norm (beta={beta}, p={p})")


def test_paper_eq_31_is_rejected_where_its_bracket_is_negative(device):
    """At p = 0 and β = 2, eq. (31)'s bracket (q−p)(Y2 − 2Y3) + p (Y2)² is negative: not a squared norm."""
    T, d, beta = 32, 64, 2.0
    g = mc.query_gradient(beta, T=T, d=d, seeds=128, device=device, seed=7)
    y2 = theory.row_moment_at_d("ipr", beta, d_h=d, T=T)
    y3 = theory.row_moment_at_d("ipr", beta, d_h=d, T=T, r=3)
    paper = d * d * beta * math.sqrt(math.log(T)) * T * (y2 - 2 * y3)
    assert paper < 0 < g.autograd.mean
    with pytest.raises(AssertionError):
        assert_agrees(paper, g.autograd, what="paper eq. (31)")


# --- issue 7's accuracy at T = 512, d = 256 (i.i.d. Gaussian tokens: T > d) -----------------------------

#: The issue's tolerance for the leading order where attention is condensed (β ≥ β_c), and its goal.
ISSUE_TOLERANCE, ISSUE_GOAL = 0.07, 0.03
#: Size of the issue's checks and initialisations per point (two chunks of 32 seeds: ~5 s a point on 2 CPU cores).
T_ISSUE, D_ISSUE, SEEDS_ISSUE, CHUNK_ISSUE = 512, 256, 64, 32
#: (β, p) of the checks: β_c = √2 at p = 0 and 2 at p = 0.5, so each p has points on both sides.
ISSUE_POINTS = [(0.5, 0.0), (1.0, 0.0), (math.sqrt(2.0), 0.0), (2.0, 0.0), (3.0, 0.0),
                (0.5, 0.5), (1.0, 0.5), (1.41, 0.5), (2.0, 0.5), (3.0, 0.5)]


def _issue_measurement(beta, p, device, T=T_ISSUE, d=D_ISSUE, chunk_seeds=CHUNK_ISSUE):
    """(autograd, G-averaged autograd) estimates of E||∂L/∂W_Q||² over SEEDS_ISSUE initialisations, float32.

    float32 changes the closed-form norm by ~1e-6 relative (measured against float64 on the same
    weights), far below the standard errors; seeded chunks keep memory at ~0.3 GB (T = 512).
    """
    autograd, averaged = [], []
    for chunk in range(SEEDS_ISSUE // chunk_seeds):
        g = mc.query_gradient(beta, T=T, d=d, seeds=chunk_seeds, p=p, kind="gaussian", dtype=torch.float32,
                              device=device, seed=7000 + 100 * chunk + round(100 * beta + 10 * p))
        autograd.append(g.autograd.samples)
        averaged.append(g.jacobian.samples)
    return mc.Estimate(np.concatenate(autograd)), mc.Estimate(np.concatenate(averaged))


@pytest.mark.parametrize("beta, p", ISSUE_POINTS)
def test_query_gradient_at_T512_d256(beta, p, device):
    """The leading order (contract) and its first-order finite-d correction against autograd, T = 512, d = 256.

    1. The first-order finite-d theory, leading × (1 + token + scale + aligned)
       (:func:`verify.theory.query_grad_finite_d`), agrees with autograd and with its exact
       G-average (the closed-form Jacobian norm, equal to autograd to 1e-10) within k·SE
       plus the suite's FINITE_D_COEFF/d for the second order. Measured (256 seeds):
       residuals −0.3 % to +0.1 % at p = 0, about −1 ± 1 % at p = 0.5.
    2. The finite-d allowance of the leading order is therefore the first-order terms:
       below β_c they are large (the token-overlap term is an absolute O(1/d) while the
       bracket is small): 46 % (β = 0.5) and 6.4 % (β = 1) at p = 0, 93 % and 17 % at
       p = 0.5 (measured 49.9 ± 0.3 %, 5.7 ± 0.2 %, 94 ± 1 %, 18 ± 1.4 %).
    3. Where attention is condensed (β ≥ β_c) that allowance is below the issue's goal
       (3 %), and the leading order is within the issue's 7 % of the autograd mean
       (measured: ≤ 1.6 % at p = 0, ≤ 1.1 % at p = 0.5).
    """
    autograd, averaged = _issue_measurement(beta, p, device)
    leading = numeric.query_grad_sq_norm(beta, d=D_ISSUE, T=T_ISSUE, p=p)
    first = theory.query_grad_finite_d(beta, d=D_ISSUE, T=T_ISSUE, p=p)
    corrected = leading * (1.0 + first.total)
    second = "second order in 1/d (O(1/d^2) relative, O(1/d^2)/bracket absolute)"
    for estimate, name in ((averaged, "G-averaged autograd"), (autograd, "autograd")):
        assert_agrees(corrected, estimate, allowance=finite_d_allowance(D_ISSUE, corrected), reason=second,
                      what=f"first-order finite-d theory vs {name} (beta={beta:.4g}, p={p})")
    allowance = abs(first.total) * leading + finite_d_allowance(D_ISSUE, leading)
    assert_agrees(leading, averaged, allowance=allowance,
                  reason="finite d: token-overlap, score-scale and score-alignment terms (first order) + second order",
                  what=f"leading order (numeric.query_grad_sq_norm) vs autograd (beta={beta:.4g}, p={p})")
    if beta >= numeric.gradients.critical_beta(1.0, p):
        assert allowance / leading < ISSUE_GOAL
        assert abs(averaged.mean / leading - 1.0) < ISSUE_TOLERANCE
        assert abs(autograd.mean / leading - 1.0) < ISSUE_TOLERANCE


@pytest.mark.cuda
@pytest.mark.parametrize("beta", [0.7, 2.0])
def test_first_order_finite_d_theory_at_fig4_size(beta, device):
    """Fig. 4's smallest GPU size (T = 2048, d = 256): the first-order finite-d theory against autograd."""
    T, d = 2048, 256
    autograd, averaged = _issue_measurement(beta, 0.0, device, T=T, d=d, chunk_seeds=8)
    corrected = numeric.query_grad_sq_norm(beta, d=d, T=T) * (1.0 + theory.query_grad_finite_d(beta, d=d, T=T).total)
    for estimate, name in ((averaged, "G-averaged autograd"), (autograd, "autograd")):
        assert_agrees(corrected, estimate, allowance=finite_d_allowance(d, corrected),
                      reason="second order in 1/d (O(1/d^2) relative, O(1/d^2)/bracket absolute)",
                      what=f"first-order finite-d theory vs {name} (beta={beta}, T={T}, d={d}, cuda)")
