"""Single layer kinds of derive.layers: their maps, composition rules and printing."""

import pytest
import sympy

from derive.layers import (MLP, Activation, Context, LayerNorm, Linear, Residual, SelfAttention, Sequence, State,
                           _cross_term, parameter)
from derive.symbols import BY_NAME, p, q

sigma_w2, sigma_b2, alpha_sa = BY_NAME["sigma_w2"], BY_NAME["sigma_b2"], BY_NAME["alpha_sa"]


def apply(layer, state=State(q, p), T=sympy.oo):
    return layer.overlap_map(state, Context(T=T))


def test_linear_map_is_wick_of_weights_and_bias():
    out = apply(Linear())
    assert sympy.simplify(out.q - (sigma_w2 * q + sigma_b2)) == 0
    assert sympy.simplify(out.p - (sigma_w2 * p + sigma_b2)) == 0
    assert out.gaussian and out.centred
    no_bias = apply(Linear(bias=None))
    assert no_bias.q == sigma_w2 * q


def test_layernorm_with_eps():
    out = apply(LayerNorm(eps=0.5))
    assert sympy.simplify(out.q - q / (q + sympy.Rational(1, 2))) == 0
    assert sympy.simplify(out.p - p / (q + sympy.Rational(1, 2))) == 0
    plain = apply(LayerNorm())
    assert plain.q == 1 and sympy.simplify(plain.p - p / q) == 0


def test_residual_cross_term_vanishes_by_wick():
    assert _cross_term() == 0
    out = apply(Residual(Linear(), "alpha_sa"))
    assert sympy.simplify(out.q - (sigma_w2 * q + sigma_b2 + alpha_sa**2 * q)) == 0


def test_custom_parameter_names_become_symbols():
    layer = Linear(weight="sigma_w2_out", bias=None)
    assert layer.parameters() == {"sigma_w2_out"}
    assert parameter("sigma_w2_out") in apply(layer).q.free_symbols
    with pytest.raises(ValueError, match="identifier"):
        parameter("not a name")


def test_activation_after_linear_only():
    assert apply(Sequence(Linear(), Activation("identity"))).q == sigma_w2 * q + sigma_b2
    with pytest.raises(ValueError, match="Gaussian pre-activations"):
        apply(Activation("relu"))


def test_attention_records_its_input_and_is_centred():
    ctx = Context(T=sympy.oo)
    out = SelfAttention().overlap_map(State(q, p), ctx)
    assert ctx.attention_inputs == [State(q, p)] and out.centred and not out.gaussian


def test_printing():
    text = str(Sequence(Residual(SelfAttention(gain=True, heads=4), "alpha_sa"), LayerNorm(eps=1e-5),
                        MLP("gelu", width=4.0), name="demo"))
    assert text.splitlines()[0] == "demo:"
    assert "gain-controlled" in text and "heads=4" in text and "eps=1e-05" in text and "width=4d" in text


@pytest.mark.parametrize("bad", [lambda: SelfAttention(heads=0), lambda: LayerNorm(eps=float("nan")),
                                 lambda: Residual("not a layer")])
def test_bad_layers(bad):
    with pytest.raises(ValueError):
        bad()
