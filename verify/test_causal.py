"""Causal stacks in torch against the position-resolved theory (numeric.causal), and the adapters with masks.

The torch view applies the mask exactly as scaled_dot_product_attention(is_causal=True)
(tests of derive.layers); here whole stacks are measured at initialisation. The
reference is the position-resolved closure at the measured T with the declared
finite-width allowance of verify.stats; the encoder (exchangeable) theory is
rejected by the same measurements where causal averaging matters.
"""

import pytest
import torch
from torch import nn

import numeric
from verify import adapters
from verify import montecarlo as mc
from verify.stats import assert_agrees, finite_d_allowance
from verify.testing import FINITE_D_REASON as REASON

T, D, SEEDS, DEPTH = 64, 256, 16, 8


@pytest.mark.parametrize("arch, activation, beta", [("post-ln", "relu", 1.5), ("pre-ln", "gelu", 1.0),
                                                    ("gain-pre-ln", "relu", 2.5)])
def test_causal_profile_matches_position_resolved_theory(arch, activation, beta, device):
    """All pairs and the late quarter of positions, every block."""
    for tokens in (None, "late"):
        measured = mc.profile(arch, DEPTH, beta=beta, T=T, d=D, seeds=SEEDS, activation=activation, mask="causal",
                              tokens=tokens, device=device, seed=41)
        theory = numeric.cosine_profile(arch, DEPTH, beta=beta, T=T, activation=activation, mask="causal",
                                        tokens=tokens)
        assert_agrees(theory, measured.rho, allowance=finite_d_allowance(D, theory), reason=REASON, skip_first=True,
                      what=f"{arch} causal rho ({tokens or 'all pairs'}, beta={beta})")


def test_sliding_window_profile(device):
    measured = mc.profile("pre-ln", DEPTH, beta=1.5, T=T, d=D, seeds=SEEDS, mask="sliding:8", device=device, seed=42)
    theory = numeric.cosine_profile("pre-ln", DEPTH, beta=1.5, T=T, mask="sliding:8")
    assert_agrees(theory, measured.rho, allowance=finite_d_allowance(D, theory), reason=REASON, skip_first=True,
                  what="pre-ln sliding-window rho")


def test_encoder_theory_is_rejected_on_a_causal_torch_stack(device):
    """pre-LN with a strong attention branch (sigma_v2 = 4, alpha_sa = 0.5) at beta = 0.5: causal averaging
    keeps rho 0.06-0.09 below the exchangeable theory in blocks 1-4; the encoder theory at the same T fails
    the check that the position-resolved one passes."""
    kw = dict(beta=0.5, T=T, mask="causal", sigma_v2=4.0, alpha_sa=0.5)
    measured = mc.profile("pre-ln", 4, d=D, seeds=SEEDS, device=device, seed=43, **kw)
    causal = numeric.cosine_profile("pre-ln", 4, **kw)
    encoder = numeric.cosine_profile("pre-ln", 4, **{**kw, "mask": None})
    assert_agrees(causal, measured.rho, allowance=finite_d_allowance(D, causal), reason=REASON, skip_first=True,
                  what="position-resolved theory")
    with pytest.raises(AssertionError):
        assert_agrees(encoder, measured.rho, allowance=finite_d_allowance(D, encoder), reason=REASON,
                      skip_first=True, what="encoder theory on a causal stack")


def _encoder_layers(seed, norm_first, layers=6, d=128):
    torch.manual_seed(seed)
    return [nn.TransformerEncoderLayer(d, 4, 2 * d, dropout=0.0, batch_first=True, norm_first=norm_first)
            .double().eval() for _ in range(layers)]


@pytest.mark.parametrize("norm_first", [False, True])
def test_adapters_predict_a_decoder_built_from_encoder_layers(norm_first):
    """nn.TransformerEncoderLayer run with a causal mask (generate_square_subsequent_mask, is_causal=True),
    8 models at PyTorch's default init: predicted and measured rho agree, all pairs and late positions."""
    seq = 48
    runs = [(_encoder_layers(seed, norm_first), torch.randn(4, seq, 128, dtype=torch.float64)) for seed in range(8)]
    for tokens in (None, "late"):
        theory = adapters.predict_cosine_profile(runs[0][0], seq, mask="causal", tokens=tokens)
        measured = adapters.overlaps_estimate(adapters.measure_overlaps(layers, x, mask="causal", tokens=tokens)
                                              for layers, x in runs)
        assert_agrees(theory, measured, allowance=finite_d_allowance(128, theory), reason=REASON, skip_first=True,
                      what=f"causal encoder-layer stack ({tokens or 'all pairs'})")


def test_measurement_uses_pytorchs_own_causal_mask():
    """The adapters' masked forward equals the user's: layer(h, src_mask=square_subsequent_mask, is_causal=True)."""
    layers, x = _encoder_layers(3, True, layers=2), torch.randn(2, 16, 128, dtype=torch.float64)
    mask = nn.Transformer.generate_square_subsequent_mask(16, dtype=torch.float64)
    h = x
    for layer in layers:
        h = layer(h, src_mask=mask, is_causal=True)
    q, p = adapters.overlaps(h)
    measured = adapters.measure_cosine_profile(layers, x, mask="causal")
    assert measured[-1] == pytest.approx(p / q, rel=1e-12)
    assert abs(adapters.measure_cosine_profile(layers, x)[-1] - p / q) > 1e-3     # without the mask: different


@pytest.mark.parametrize("kw, match", [(dict(mask="future"), "mask must be"), (dict(mask="sliding:0"), "window"),
                                       (dict(tokens=[3]), "at least two"), (dict(tokens=[0, 99]), r"\[0, T\)")])
def test_adapter_bad_input(kw, match):
    layers = _encoder_layers(0, False, layers=1)
    with pytest.raises(ValueError, match=match):
        adapters.predict_cosine_profile(layers, 16, **kw)
    with pytest.raises(ValueError, match=match):
        adapters.measure_cosine_profile(layers, torch.randn(1, 16, 128, dtype=torch.float64), **kw)


@pytest.mark.cuda
@pytest.mark.parametrize("arch, activation", [("post-ln", "relu"), ("pre-ln", "relu"), ("post-ln", "gelu"),
                                              ("pre-ln", "gelu")])
@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_issue_size_causal_profiles(arch, activation, beta, device):
    """The issue's size: 30 blocks, T = 256, d = 512, 8 initialisations, all pairs and late positions."""
    for tokens in (None, "late"):
        measured = mc.profile(arch, 30, beta=beta, T=256, d=512, seeds=8, activation=activation, mask="causal",
                              tokens=tokens, kind="gaussian", device=device, seed=44)
        theory = numeric.cosine_profile(arch, 30, beta=beta, T=256, activation=activation, mask="causal",
                                        tokens=tokens)
        assert_agrees(theory, measured.rho, allowance=finite_d_allowance(512, theory), reason=REASON,
                      skip_first=True, what=f"{arch} {activation} causal rho at the issue's size")
