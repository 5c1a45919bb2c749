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
"""

import math

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
