"""Property-based checks (hypothesis): theory against measurement over the whole parameter space.

Strategies cover the four architectures, β on both sides of β_c = √2 (ρ = 0),
α_SA, α_MLP, σ_v², σ_w², σ_b², the activation, a small depth and ρ0; pinned
examples sit at the phase transition (β = β_c), at ρ0 near 1 and at extreme β.
The ``ci`` profile is derandomised with a few examples per test
(:func:`verify.testing.examples`); ``thorough`` runs many (a GPU machine).
"""

import math

from hypothesis import example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import numeric
from derive.parameters import NAMED_ACTIVATIONS
from derive.parameters import ARCHITECTURES as ARCHS
from verify import montecarlo as mc
from verify import theory
from verify.stats import assert_agrees, finite_d_allowance
from verify.testing import FINITE_D_REASON, examples

BETA_C = math.sqrt(2.0)
T, D = 32, 128

betas = st.one_of(st.floats(0.05, 1.2), st.floats(1.6, 10.0), st.just(BETA_C))
blocks = st.fixed_dictionaries({
    "arch": st.sampled_from(ARCHS),
    "beta": betas,
    "alpha_sa": st.floats(0.3, 2.0),
    "alpha_mlp": st.floats(0.5, 1.5),
    "sigma_v2": st.floats(0.25, 2.0),
    "sigma_w2": st.floats(0.5, 3.0),
    "sigma_b2": st.floats(0.0, 0.5),
    "activation": st.sampled_from(NAMED_ACTIVATIONS),
    "depth": st.integers(1, 3),
    "rho0": st.floats(0.0, 0.999),
})
PIN = dict(arch="pre-ln", alpha_sa=1.0, alpha_mlp=1.0, sigma_v2=1.0, sigma_w2=2.0, sigma_b2=0.0, activation="relu",
           depth=3)


@hsettings(max_examples=examples(8))
@given(blocks)
@example(dict(PIN, beta=BETA_C, rho0=0.0))
@example(dict(PIN, arch="post-ln", beta=1.0, rho0=0.999))
@example(dict(PIN, arch="gain-post-ln", beta=0.05, rho0=0.2, activation="tanh"))
@example(dict(PIN, arch="gain-pre-ln", beta=10.0, rho0=0.0, activation="gelu"))
def test_profile_property(case):
    """ρ after each block, torch vs numeric.cosine_profile at the same finite T (declared O(1/d) allowance)."""
    case = dict(case)
    arch, depth, activation = case.pop("arch"), case.pop("depth"), case.pop("activation")
    measured = mc.profile(arch, depth, T=T, d=D, seeds=24, activation=activation, seed=41, **case)
    expected = numeric.cosine_profile(arch, depth, T=T, activation=activation, **case)
    assert_agrees(expected, measured.rho, allowance=finite_d_allowance(D), reason=FINITE_D_REASON,
                  skip_first=True, what=f"{arch}/{activation} profile {case}")


@hsettings(max_examples=examples(6))
@given(beta=betas, q=st.floats(0.5, 2.0), rho=st.floats(0.0, 0.95), sigma_v2=st.floats(0.25, 2.0),
       gain=st.booleans())
@example(beta=BETA_C, q=1.0, rho=0.0, sigma_v2=1.0, gain=False)
@example(beta=10.0, q=1.0, rho=0.95, sigma_v2=1.0, gain=True)
@example(beta=0.05, q=2.0, rho=0.5, sigma_v2=0.5, gain=False)
def test_attention_layer_property(beta, q, rho, sigma_v2, gain):
    """q_S, p_S of one attention layer vs σ_v² (p + (q−p) Y) (vanilla) or σ_v² (q−p)(Y − 1/T) (gain)."""
    p = q * rho
    q_s, p_s, _ = mc.attention_overlaps(beta, T=T, d=D, seeds=32, q=q, p=p, sigma_v2=sigma_v2, gain=gain, seed=42)
    base, shift = (0.0, 1.0 / T) if gain else (p, 0.0)
    y2 = theory.row_moment_at_d("ipr", beta, d_h=D, q=q, p=p, T=T)
    yp = float(theory.row_moment("pair", beta, q=q, p=p, T=T))
    assert_agrees(sigma_v2 * (base + (q - p) * (y2 - shift)), q_s, what="q_S")
    assert_agrees(sigma_v2 * (base + (q - p) * (yp - shift)), p_s,
                  allowance=sigma_v2 * (q - p) * theory.key_gram_excess(beta, d_h=D, q=q, p=p, T=T),
                  reason="finite d: rows share the keys (relative b^4/(2d))", what="p_S")


@hsettings(max_examples=examples(8))
@given(beta=st.floats(0.05, 10.0), T_=st.integers(2, 2048), q=st.floats(0.5, 2.0), rho=st.floats(0.0, 0.99))
@example(beta=BETA_C, T_=4096, q=1.0, rho=0.0)
@example(beta=0.05, T_=2, q=1.0, rho=0.0)
@example(beta=10.0, T_=512, q=1.0, rho=0.999)
def test_gaussian_moments_property(beta, T_, q, rho):
    """Row moments of Gaussian scores (eq. 9) vs numeric's exact finite-T moments, no allowance."""
    p = q * rho
    m = mc.gaussian_moments(beta, T=T_, samples=100, q=q, p=p, seed=43)
    assert_agrees(numeric.ipr(beta, r=2, q=q, p=p, T=T_), m.ipr2, what="E Y2")
    assert_agrees(numeric.ipr(beta, r=3, q=q, p=p, T=T_), m.ipr3, what="E Y3")
    assert_agrees(numeric.ipr_square(beta, q=q, p=p, T=T_), m.ipr_square, what="E (Y2)^2")
    assert_agrees(numeric.ipr_pair(beta, q=q, p=p, T=T_), m.pair, what="E sum A A'")
