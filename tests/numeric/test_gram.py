"""numeric.gram_profile: the overlap-matrix theory at infinite width (beyond the (q, p) closure)."""

import json

import numpy as np
import pytest

import numeric
from derive.parameters import ARCHITECTURES
from numeric.cli import main


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_spread_attention_reduces_to_the_q_p_theory(arch):
    """beta -> 0: attention is uniform, every pair keeps one overlap, and the (q, p) closure is exact."""
    gram = numeric.gram_profile(arch, 8, beta=1e-9, T=16, samples=2, rho0=0.2)
    np.testing.assert_allclose(gram.rho, numeric.cosine_profile(arch, 8, beta=1e-9, T=16, rho0=0.2), atol=1e-9)
    assert np.all(gram.se < 1e-9)


def test_condensed_attention_departs_from_the_q_p_theory():
    """gain-post-LN at beta = 2.5 (errata 10): clustered overlaps raise rho above the (q, p) theory, by many SEs.
    At T = 64 and 32 samples: +0.039 at block 12 with SE 0.006 (measured)."""
    gram = numeric.gram_profile("gain-post-ln", 12, beta=2.5, T=64, samples=32, seed=4)
    closure = numeric.cosine_profile("gain-post-ln", 12, beta=2.5, T=64)
    z = (gram.rho[-1] - closure[-1]) / gram.se[-1]
    assert z > 4
    # one block: no clusters yet; what remains is the spread of one layer's output over score draws seen
    # through the LayerNorm and the MLP kernel (measured +6e-4; allowance 2e-3)
    assert gram.rho[1] == pytest.approx(closure[1], abs=5 * gram.se[1] + 2e-3)


def test_seeded_reproducibly():
    a = numeric.gram_profile("post-ln", 3, beta=2.0, T=12, samples=11, seed=5)
    b = numeric.gram_profile("post-ln", 3, beta=2.0, T=12, samples=11, seed=5)
    np.testing.assert_array_equal(a.rho, b.rho)
    assert a.q.shape == a.p.shape == (11, 4)
    np.testing.assert_allclose(a.q[:, -1], 1.0)           # post-LN: unit norms
    assert np.all(a.se[1:] > 0)


@pytest.mark.parametrize("kwargs, match", [
    ({"T": None}, "finite integer T"), ({"T": 1}, "T must be"), ({"samples": 1}, "samples"),
    ({"samples": 2.5}, "samples"), ({"rho0": -0.5}, "rho0"), ({"beta": [1.0, 2.0]}, "scalar"),
    ({"beta": 0.0}, "beta"), ({"sigma_v2": -1.0}, "sigma_v2"), ({"arch": "mid-ln"}, "arch"),
    ({"depth": -1}, "depth"), ({"activation": "softplus"}, "activation"), ({"rho0": [0.1, 0.2]}, "rho0"),
    ({"seed": -1}, "seed"), ({"T": 10**6}, "T in"), ({"sigma_q": 1.0}, "sigma_q"),
    ({"arch": "gain-post-ln", "rho0": 1.0, "alpha_sa": 0.0}, "vanished after block 1"),
    ({"arch": "pre-ln", "depth": 100, "alpha_sa": 100.0, "T": 4}, "not finite"),
])
def test_bad_input(kwargs, match):
    args = {"arch": "post-ln", "depth": 2, "beta": 1.0, "T": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        numeric.gram_profile(args.pop("arch"), args.pop("depth"), **args)


def test_tanh_kernel_is_tabulated():
    """No closed form: K(q, q r) tabulated in r by quadrature; exact in the spread limit to the interpolation
    error (measured 4e-8 after 3 blocks)."""
    gram = numeric.gram_profile("post-ln", 3, beta=1e-9, T=16, samples=2, activation="tanh")
    np.testing.assert_allclose(gram.rho, numeric.cosine_profile("post-ln", 3, beta=1e-9, T=16, activation="tanh"),
                               atol=1e-6)


def test_custom_spec_with_its_own_parameter():
    from derive.layers import MLP, LayerNorm, Residual, SelfAttention, Sequence
    spec = Sequence(Residual(SelfAttention(gain=True), "alpha_sa"), LayerNorm(),
                    Residual(MLP("relu", weight="sigma_w2b"), "alpha_mlp"), LayerNorm())
    gram = numeric.gram_profile(spec, 3, beta=1e-9, T=16, samples=2, sigma_w2b=1.5)
    np.testing.assert_allclose(gram.rho, numeric.cosine_profile(spec, 3, beta=1e-9, T=16, sigma_w2b=1.5), atol=1e-9)


def test_cli_profile_with_gram(capsys):
    assert main(["profile", "--arch", "gain-post-ln", "--beta", "2.5", "--T", "32", "--depth", "3",
                 "--gram", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["rho_gram"]) == len(out["rho_gram_se"]) == 4 and out["gram_samples"] == 4
    assert main(["profile", "--depth", "3", "--gram", "4"]) == 2           # needs a finite T
    assert "--gram needs a finite --T" in capsys.readouterr().err
