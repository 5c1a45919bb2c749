"""One rule per quantity, applied alike by every function that takes it (numeric, gram, adapters, torch view)."""

import numpy as np
import pytest

import numeric
from numeric import validation as check


@pytest.mark.parametrize("T", [8, 8.0, np.int64(8)])
def test_sequence_length_is_one_rule_across_packages(T):
    """An integer-valued T is accepted by the theory and by the adapters alike (they used to disagree on 8.0)."""
    from verify import torch_view

    assert check.sequence_length(T) == 8
    assert numeric.cosine_profile("post-ln", 2, beta=1.0, T=T).shape == (3,)
    x = torch_view.tokens(1, 8, 16, seed=0)
    assert check.sequence_length(x.shape[-2], name="seq_len", infinite=False) == 8


@pytest.mark.parametrize("T", [8.5, 1, 0, True, "8", float("inf")])
def test_sequence_length_rejects(T):
    with pytest.raises(ValueError, match="T must be"):
        check.sequence_length(T)
    with pytest.raises(ValueError, match="T must be"):
        numeric.cosine_profile("post-ln", 2, beta=1.0, T=T)


def test_model_sequence_length_must_be_finite():
    with pytest.raises(ValueError, match="seq_len must be an integer >= 2"):
        check.sequence_length(None, name="seq_len", infinite=False)


def test_rho0_domain_is_the_positive_semidefinite_one():
    """T tokens with one norm and one overlap exist exactly for rho0 in [-1/(T-1), 1]; T -> oo: [0, 1]."""
    T = 11
    assert numeric.cosine_profile("pre-ln", 0, beta=1.0, T=T, rho0=-0.1)[0] == pytest.approx(-0.1)
    with pytest.raises(ValueError, match=r"rho0 must lie in \[-0.1, 1\]"):
        numeric.cosine_profile("pre-ln", 0, beta=1.0, T=T, rho0=-0.1001)
    with pytest.raises(ValueError, match=r"rho0 must lie in \[-0.1, 1\]"):
        numeric.gram_profile("pre-ln", 1, beta=1.0, T=T, rho0=-0.1001, samples=2)
    with pytest.raises(ValueError, match=r"rho0 must lie in \[0, 1\]"):
        numeric.cosine_profile("pre-ln", 1, beta=1.0, rho0=-0.01)


def test_rho0_minus_one_names_rho0_not_alpha_sa():
    """rho0 = -1 used to fail inside the iteration with a message blaming alpha_sa = 0."""
    with pytest.raises(ValueError, match="rho0") as info:
        numeric.cosine_profile("post-ln", 3, beta=1.0, rho0=-1)
    assert "alpha_sa" not in str(info.value)


def test_negative_rho0_tokens_have_the_asked_overlap():
    """The torch view builds tokens down to rho0 = -1/(T-1) (the same rule), with exactly that cosine."""
    from verify import montecarlo, torch_view

    T = 9
    for rho0 in (-1.0 / (T - 1), -0.05, 0.3):
        x = torch_view.tokens(2, T, 32, rho0=rho0, q0=1.5, kind="basis")
        q, p = montecarlo.overlap_samples(x)
        np.testing.assert_allclose(q.numpy(), 1.5, rtol=1e-12)
        np.testing.assert_allclose((p / q).numpy(), rho0, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="rho0"):
        torch_view.tokens(1, T, 32, rho0=-0.2)


def test_adapter_rho0_follows_the_same_rule():
    """predict_cosine_profile accepted only [0, 1); now the positive semi-definite domain at T = seq_len."""
    import torch
    from verify import adapters

    torch.manual_seed(0)
    layers = [torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True).eval()]
    assert adapters.predict_cosine_profile(layers, 5, rho0=-0.25)[0] == pytest.approx(-0.25)
    assert adapters.predict_cosine_profile(layers, 5, rho0=1.0)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="rho0"):
        adapters.predict_cosine_profile(layers, 5, rho0=-0.26)
    with pytest.raises(ValueError, match="seq_len must be an integer >= 2"):
        adapters.predict_cosine_profile(layers, 5.5)


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "3", float("nan")])
def test_count_rejects(value):
    with pytest.raises(ValueError, match="d must be an integer >= 1"):
        check.count("d", value)


def test_block_parameters_take_their_domains_from_the_table():
    """A variance that must be > 0 and a strength that may be 0, as derive.parameters declares them."""
    from derive.parameters import BLOCK, DEFAULTS

    values = dict(DEFAULTS, beta=1.0)
    for par in BLOCK:
        zero = dict(values, **{par.name: 0.0})
        if par.domain == "positive":
            with pytest.raises(ValueError, match=f"{par.name} must be > 0"):
                check.block_parameters(**zero)
        else:
            assert check.block_parameters(**zero)[par.name] == 0.0
        with pytest.raises(ValueError, match=par.name):
            check.block_parameters(**dict(values, **{par.name: -1.0}))
