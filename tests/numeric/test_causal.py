"""numeric.causal: the position-resolved theory of masked stacks, against sampling, limits and bad input."""

import numpy as np
import pytest

import numeric
from derive import masks
from derive.parameters import ARCHITECTURES
from numeric import causal
from verify import stats


def test_uniform_attention_gives_the_square_root_law():
    """At beta -> 0 one causal attention layer maps orthogonal tokens to outputs with cosine sqrt(n_t/n_u)."""
    T = 12
    out = causal.Attention(T, masks.Mask())(np.eye(T), 1e-9, 1.0, False)
    n = np.arange(1, T + 1)
    cosine = out / np.sqrt(np.outer(np.diag(out), np.diag(out)))
    expected = np.sqrt(np.minimum.outer(n, n) / np.maximum.outer(n, n))
    np.testing.assert_allclose(cosine, expected, rtol=1e-7)
    np.testing.assert_allclose(np.diag(out), 1.0 / n, rtol=1e-7)


def test_window_limits():
    """A window of one key copies each value (output overlaps = input overlaps); a window >= T is causal."""
    T, rng = 10, np.random.default_rng(0)
    X = rng.standard_normal((T, 40))
    Q = X @ X.T / 40
    one = causal.Attention(T, masks.Mask(1))(Q, 2.0, 1.5, False)
    np.testing.assert_allclose(one, 1.5 * Q, rtol=1e-12)
    wide = causal.Attention(T, masks.Mask(T))(Q, 2.0, 1.0, False)
    np.testing.assert_allclose(wide, causal.Attention(T, masks.Mask())(Q, 2.0, 1.0, False), rtol=1e-12)


@pytest.mark.parametrize("arch, beta", [("post-ln", 1.0), ("pre-ln", 2.5), ("gain-pre-ln", 2.0)])
def test_closure_agrees_with_the_overlap_matrix_theory(arch, beta):
    """The deterministic closure against numeric.gram_profile (scores sampled given the whole matrix, exact at
    infinite width): all pairs and the late quarter, 8 blocks at T = 48, within k SE + 0.006 (the closure
    treats each row's keys as exchangeable)."""
    T, depth = 48, 8
    for tokens in (None, "late"):
        theory = numeric.cosine_profile(arch, depth, beta=beta, T=T, mask="causal", tokens=tokens)
        gram = numeric.gram_profile(arch, depth, beta=beta, T=T, mask="causal", tokens=tokens, samples=24, seed=1)
        stats.assert_agrees(theory[1:], gram.rho[1:], gram.se[1:], n=24, allowance=0.006,
                            reason="row-exchangeable closure", what=f"{arch} causal closure vs sampled, {tokens}")


def test_encoder_theory_is_rejected_on_a_causal_stack():
    """The same reference rejects the exchangeable (encoder) theory at the same T: causal averaging differs."""
    T, depth = 48, 8
    gram = numeric.gram_profile("pre-ln", depth, beta=1.0, T=T, mask="causal", samples=24, seed=2)
    encoder = numeric.cosine_profile("pre-ln", depth, beta=1.0, T=T)
    with pytest.raises(AssertionError):
        stats.assert_agrees(encoder[1:], gram.rho[1:], gram.se[1:], n=24, allowance=0.006,
                            reason="row-exchangeable closure", what="encoder theory on a causal stack")


def test_compiled_custom_spec_equals_the_generated_map():
    """A causal spec compiled at run time gives the shipped map's profile (same derivation, two routes)."""
    from derive.architectures import architecture
    spec = architecture("post-ln", "gelu", mask="causal")
    a = numeric.cosine_profile(spec, 4, beta=1.3, T=20, activation="gelu")
    b = numeric.cosine_profile("post-ln", 4, beta=1.3, T=20, activation="gelu", mask="causal")
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_position_profile_of_uniform_causal_averaging():
    """One causal attention layer at beta -> 0 on orthogonal tokens: Q_tt = 1/n_t, Q_tu = 1/n_max(t, u), so
    rho_t = mean_u Q_tu / sqrt(Q_tt mean_u Q_uu) over u != t, computed here by hand."""
    from derive.layers import SelfAttention
    T = 9
    rho = numeric.position_profile(SelfAttention(mask="causal"), 1, beta=1e-9, T=T)
    n = np.arange(1, T + 1.0)
    Q = 1.0 / np.maximum.outer(n, n)
    expected = [np.mean(np.delete(Q[t], t)) / np.sqrt(Q[t, t] * np.mean(np.delete(np.diag(Q), t)))
                for t in range(T)]
    np.testing.assert_allclose(rho[0], 0.0, atol=1e-15)
    np.testing.assert_allclose(rho[1], expected, rtol=1e-7)


@pytest.mark.parametrize("kw, match", [
    (dict(mask="causa"), "mask must be"), (dict(mask="sliding:0"), "window W"), (dict(mask="sliding:x"), "window W"),
    (dict(tokens=[0]), "at least two"), (dict(tokens=[0, 16]), r"\[0, T\)"), (dict(tokens="early"), "tokens must"),
    (dict(tokens=np.array([0.5, 1.0])), "integer positions"), (dict(T=None), "T must be an integer"),
])
def test_bad_input(kw, match):
    args = dict(beta=1.0, T=16, mask="causal")
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        numeric.cosine_profile("pre-ln", 2, **args)


def test_tokens_of_an_encoder_share_the_all_pairs_rho():
    a = numeric.cosine_profile("pre-ln", 3, beta=1.0, T=16)
    np.testing.assert_array_equal(numeric.cosine_profile("pre-ln", 3, beta=1.0, T=16, tokens="late"), a)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_profiles_stay_valid(arch):
    """Every architecture: rho within [-1/(T-1), 1] and finite along 6 blocks at a condensed beta."""
    rho = numeric.cosine_profile(arch, 6, beta=3.0, T=32, mask="causal")
    assert np.all(np.isfinite(rho)) and np.all(rho <= 1.0 + 1e-12) and np.all(rho >= -1.0 / 31)


@pytest.mark.parametrize("gain", [False, True])
def test_fused_pair_loop_equals_the_numpy_closure(gain, monkeypatch):
    """The numba pair loop (numeric._causal_jit) and the NumPy arrays give the same layer on random overlaps."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(5)
    X = rng.standard_normal((3, 24, 60)) + 0.4 * rng.standard_normal((3, 1, 60))
    Q = X @ np.swapaxes(X, -1, -2) / 60
    attention = causal.Attention(24, masks.Mask())
    beta, sigma_v2 = np.array([0.5, 1.5, 3.0]), np.array([1.0, 0.7, 2.0])
    monkeypatch.setenv("SIGPROP_BACKEND", "numpy")
    reference = attention(Q, beta, sigma_v2, gain)
    monkeypatch.setenv("SIGPROP_BACKEND", "fused")
    np.testing.assert_allclose(attention(Q, beta, sigma_v2, gain), reference, rtol=1e-12, atol=1e-15)


def test_a_specs_attention_layers_are_found_wherever_they_sit():
    """numeric.causal.attention_layers walks Sequence, Residual and Parallel: it finds both attention layers of a
    spec with one in a Residual and one in a Parallel branch, so a gain-controlled one anywhere counts
    (has_gain), as does a mask (is_masked), and mixed masks or RoPE settings are refused by name."""
    from derive.layers import MLP, LayerNorm, Parallel, Residual, SelfAttention, Sequence
    plain, gain = SelfAttention(mask="causal"), SelfAttention(gain=True, mask="causal")
    spec = Sequence(Residual(Sequence(LayerNorm(), plain), "alpha_sa"), LayerNorm(), Parallel(gain, MLP()))
    assert [layer is plain or layer is gain for layer in causal.attention_layers(spec)] == [True, True]
    assert causal.has_gain(spec) and causal.is_masked(spec) and causal.spec_mask(spec) == masks.parse("causal")
    assert not causal.has_gain(Sequence(Residual(plain, "alpha_sa"))) and causal.has_gain("gain-pre-ln")
    assert not causal.is_masked(Sequence(Residual(SelfAttention(), "alpha_sa")))
    with pytest.raises(ValueError, match="one mask"):
        causal.spec_mask(Sequence(plain, SelfAttention(mask="sliding:4")))
    with pytest.raises(ValueError, match="one RoPE setting"):
        causal.spec_rope(Sequence(plain, SelfAttention(mask="causal", rope=1e4, rope_dim=8)))
