"""The Gram-matrix view of the layer kinds (derive.layers ``gram_map``) against their (q, p) maps.

On a homogeneous overlap matrix (q on the diagonal, p elsewhere) the deterministic
layers must reproduce their symbolic maps exactly, and self-attention must do so in
expectation over its score draws (z-test on the sample mean).
"""

import numpy as np
import pytest
import sympy

import numeric
from derive.layers import (
    MLP,
    Activation,
    Bias,
    Context,
    GramContext,
    LayerNorm,
    Linear,
    Residual,
    SelfAttention,
    Sequence,
    State,
    _gram_factor,
    closed_form_kernel,
)
from derive.parameters import ARCHITECTURES
from derive.symbols import BY_NAME, p, q
from numeric.safe import KERNELS

PARAMS = {"beta": 1.7, "alpha_sa": 0.8, "alpha_mlp": 1.1, "sigma_v2": 0.9, "sigma_w2": 2.0, "sigma_b2": 0.3}
Q0, P0, T = 1.3, 0.4, 16


def _ctx(seed):
    """Scores from a seeded generator; kernels: closed forms, and tanh's by quadrature (no closed form)."""
    return GramContext(np.random.default_rng(seed), lambda name: KERNELS[name] if name == "tanh" else
                       closed_form_kernel(name))


def homogeneous(q0=Q0, p0=P0, n=T):
    return p0 + (q0 - p0) * np.eye(n)


def symbolic(layer, q0=Q0, p0=P0):
    """(q', p') of the layer's overlap map at numbers (Linear first where an activation needs Gaussian input)."""
    out = layer.overlap_map(State(q, p, gaussian=True), Context(T=sympy.Integer(T)))
    values = {q: q0, p: p0, **{BY_NAME[k]: v for k, v in PARAMS.items() if k in BY_NAME}}
    return float(out.q.subs(values)), float(out.p.subs(values))


@pytest.mark.parametrize("layer", [LayerNorm(), LayerNorm(eps=0.2), Linear(), Linear(bias=None), Bias(),
                                   Activation("relu"), Activation("erf"), Activation("tanh"), Activation("gelu"),
                                   Activation("identity"), MLP("relu"), Residual(Linear(), alpha="alpha_mlp")],
                         ids=str)
def test_deterministic_layers_match_their_overlap_maps(layer):
    out = layer.gram_map(homogeneous(), PARAMS, _ctx(0))
    q_new, p_new = symbolic(layer)
    tol = 1e-8 if "tanh" in str(layer) else 1e-12
    np.testing.assert_allclose(np.diag(out), q_new, rtol=0, atol=tol)
    np.testing.assert_allclose(out[~np.eye(T, dtype=bool)], p_new, rtol=0, atol=tol)


@pytest.mark.parametrize("gain", [False, True])
def test_attention_matches_the_finite_T_moments_in_expectation(gain):
    """E[A Q A^T] entries: sigma_v2 (p + (q - p) Y) with Y = Y2 on the diagonal and Yp off it (eqs. 20-23);
    gain control: sigma_v2 (q - p)(Y - 1/T). 600 draws batched, |z| < 4 on the per-draw means."""
    layer, n = SelfAttention(gain=gain), 600
    out = layer.gram_map(np.broadcast_to(homogeneous(), (n, T, T)).copy(), PARAMS, _ctx(1))
    diagonal = np.diagonal(out, axis1=-2, axis2=-1).mean(axis=-1)
    off = (out.sum(axis=(-2, -1)) - diagonal * T) / (T * (T - 1))
    beta, sigma_v2 = PARAMS["beta"], PARAMS["sigma_v2"]
    y2, yp = numeric.ipr(beta, q=Q0, p=P0, T=T), numeric.ipr_pair(beta, q=Q0, p=P0, T=T)
    if gain:
        q_exp, p_exp = (sigma_v2 * (Q0 - P0) * (y - 1.0 / T) for y in (y2, yp))
    else:
        q_exp, p_exp = (sigma_v2 * (P0 + (Q0 - P0) * y) for y in (y2, yp))
    for draws, expected in ((diagonal, q_exp), (off, p_exp)):
        z = (draws.mean() - expected) / (draws.std(ddof=1) / np.sqrt(n))
        assert abs(z) < 4, (draws.mean(), expected, z)


def test_attention_is_symmetric_positive_and_heads_average():
    ctx = _ctx(2)
    Q = homogeneous()
    one, four = SelfAttention(), SelfAttention(heads=4)
    out = four.gram_map(Q, PARAMS, ctx)
    np.testing.assert_allclose(out, out.T, atol=1e-14)
    assert np.linalg.eigvalsh(out).min() > -1e-12
    spread_one = np.std([one.gram_map(Q, PARAMS, ctx)[0, 1] for _ in range(200)])
    spread_four = np.std([four.gram_map(Q, PARAMS, ctx)[0, 1] for _ in range(200)])
    assert spread_four < 0.7 * spread_one          # four independent heads: ~1/2 the spread


def test_factor_of_a_singular_overlap_matrix():
    Q = np.full((5, 5), 2.0)                       # rank one: all tokens equal
    F = _gram_factor(Q)
    np.testing.assert_allclose(F @ F.T, Q, atol=1e-12)


def test_activation_needs_tokens_of_equal_norm():
    Q = homogeneous()
    Q[0, 0] = 2.0
    with pytest.raises(ValueError, match="equal norm"):
        Activation("relu").gram_map(Q, PARAMS, _ctx(0))


def test_tanh_has_no_closed_form_kernel():
    with pytest.raises(ValueError, match="no closed-form kernel"):
        closed_form_kernel("tanh")


def test_residual_branch_must_end_in_fresh_weights():
    """As in overlap_map: otherwise the cross terms of the residual sum do not vanish."""
    with pytest.raises(ValueError, match="fresh zero-mean weights"):
        Residual(Sequence(Linear(), Activation("relu"))).gram_map(homogeneous(), PARAMS, _ctx(0))


def test_architecture_block_on_homogeneous_input_at_tiny_beta():
    """beta -> 0: uniform attention keeps every pair equal, so one block equals the compiled (q, p) map."""
    from derive.architectures import architecture
    for arch in ARCHITECTURES:
        spec = architecture(arch)
        out = spec.gram_map(homogeneous(1.0, 0.3), {**PARAMS, "beta": 1e-9}, _ctx(3))
        expected = numeric.cosine_profile(arch, 1, beta=1e-9, T=T, rho0=0.3,
                                          **{k: v for k, v in PARAMS.items() if k != "beta"})[-1]
        assert out[0, 1] / out[0, 0] == pytest.approx(expected, abs=1e-8)
        assert isinstance(spec, Sequence)
