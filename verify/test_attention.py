"""The self-attention layer alone: its scores (eq. 9) and its output overlaps (eqs. 20-23, gain control).

Inputs have exactly the mean-field overlaps (q_ts = p + (q − p) δ_ts), so the only
finite-width effects are the ones :mod:`verify.theory` derives: the query norm
(χ² with d_h degrees of freedom, included exactly in the row moments) and the
shared keys (the pair term's declared allowance).
"""

import math

import pytest

from verify import montecarlo as mc
from verify import theory
from verify.stats import assert_agrees

T, D, SEEDS = 64, 256, 48


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("beta, q, p", [(0.4, 1.0, 0.0), (1.3, 1.5, 0.6), (3.0, 0.8, 0.2)])
def test_score_covariances_follow_result_1_not_b1(beta, q, p, heads, device):
    """E a_ts a_τσ = β² ln T q_tτ q_sσ with W_Q, W_K entries N(0, β √(ln T)/d) (errata 3).

    Exact at any d: E over W_Q, W_K factorises per output feature. B.1's convention
    σ_Q² = σ_a²/d with σ_a² = β² ln T would give (β² ln T)² q², rejected below.
    """
    s = mc.score_statistics(beta, T=16, d=128, seeds=64, q=q, p=p, heads=heads, device=device, seed=11)
    sigma_a2 = beta**2 * math.log(16)
    for name, expected in (("var", q * q), ("same_row", q * p), ("same_column", q * p), ("disjoint", p * p)):
        assert_agrees(sigma_a2 * expected, getattr(s, name), what=f"score {name} (beta={beta}, q={q}, p={p})")
    with pytest.raises(AssertionError):
        assert_agrees(sigma_a2**2 * q * q, s.var, what="B.1's variance")




@pytest.mark.parametrize("gain", [False, True])
@pytest.mark.parametrize("beta, q, p", [(0.7, 1.0, 0.0), (1.4, 1.0, 0.0), (3.0, 1.0, 0.0), (1.2, 1.3, 0.65),
                                        (3.0, 1.0, 0.5)])
def test_attention_output_overlaps(beta, q, p, gain, device):
    """q_S = σ_v² (p + (q−p) Y2), p_S = σ_v² (p + (q−p) Yp); gain control: σ_v² (q−p)(Y − 1/T) (eqs. 20-23).

    Y2 is the finite-T IPR averaged over the query norm (exact at width d);
    Yp the finite-T pair term, with the shared-key excess as allowance.
    """
    sigma_v2 = 0.7
    q_s, p_s, _ = mc.attention_overlaps(beta, T=T, d=D, seeds=SEEDS, q=q, p=p, sigma_v2=sigma_v2, gain=gain,
                                        device=device, seed=12)
    y2 = theory.row_moment_at_d("ipr", beta, d_h=D, q=q, p=p, T=T)
    yp = float(theory.row_moment("pair", beta, q=q, p=p, T=T))
    base = 0.0 if gain else p
    shift = 1.0 / T if gain else 0.0
    assert_agrees(sigma_v2 * (base + (q - p) * (y2 - shift)), q_s, what=f"q_S (gain={gain})")
    assert_agrees(sigma_v2 * (base + (q - p) * (yp - shift)), p_s,
                  allowance=sigma_v2 * (q - p) * theory.key_gram_excess(beta, d_h=D, q=q, p=p, T=T),
                  reason="finite d: rows share the keys W_K X_s (relative excess b^4/(2d) of the pair term)",
                  what=f"p_S (gain={gain})")


@pytest.mark.parametrize("gain", [False, True])
@pytest.mark.parametrize("beta", [0.8, 2.5])
def test_value_average_given_the_attention(beta, gain, device):
    """E_V[q_S | A] = σ_v² (p + (q−p) Ŷ2) seed by seed (eq. 21), and the same for p_S with the pair term.

    The attention is the layer's own, so this isolates the value projection and the
    gain subtraction: exact at any d, no allowance.
    """
    q, p, sigma_v2, T_ = 1.2, 0.3, 1.5, 32
    q_s, p_s, m = mc.attention_overlaps(beta, T=T_, d=128, seeds=64, q=q, p=p, sigma_v2=sigma_v2, gain=gain,
                                        device=device, seed=13)
    base, shift = (0.0, 1.0 / T_) if gain else (p, 0.0)
    residual_q = q_s.samples - sigma_v2 * (base + (q - p) * (m.ipr2.samples - shift))
    residual_p = p_s.samples - sigma_v2 * (base + (q - p) * (m.pair.samples - shift))
    assert_agrees(0.0, mc.Estimate(residual_q), what="q_S - E_V[q_S | A]")
    assert_agrees(0.0, mc.Estimate(residual_p), what="p_S - E_V[p_S | A]")


def test_multi_head_attention_has_the_single_head_map(device):
    """Heads of width d_h see the same score statistics; only the query-norm law changes (χ²_{d_h})."""
    heads, beta = 4, 1.5
    q_s, _, _ = mc.attention_overlaps(beta, T=T, d=D, seeds=SEEDS, heads=heads, device=device, seed=14)
    y2 = theory.row_moment_at_d("ipr", beta, d_h=D // heads, T=T)
    assert_agrees(y2, q_s, what="multi-head q_S")
