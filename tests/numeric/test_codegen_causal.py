"""The committed position-resolved maps are what derive derives now (regenerate with python -m numeric.codegen_causal)."""

import sympy

from numeric import codegen, codegen_causal


def test_generated_causal_maps_match_derive():
    header, committed = codegen.split_module(codegen_causal.GENERATED.read_text())
    regenerated = codegen_causal.code_source()
    assert codegen.code_digest(committed) in header, "numeric/_generated_causal.py was edited by hand"
    if f"sympy {sympy.__version__};" in header:
        changed = codegen.changed_definitions(committed, regenerated)
        assert not changed, (f"derive changed these position-resolved maps: {changed}; run "
                             "python -m numeric.codegen_causal and commit numeric/_generated_causal.py")


def test_entrywise_layers_act_on_each_pair():
    """Compiled pair maps on a matrix with unequal norms: a LayerNorm divides entry (t, s) by both norms; a
    Linear maps q_ts to sigma_w2 q_ts + sigma_b2; an activation refuses tokens of different norms."""
    import numpy as np
    import pytest
    from derive.layers import Activation, LayerNorm, Linear, Sequence

    Q = np.array([[2.0, 0.3, 0.1], [0.3, 0.5, 0.2], [0.1, 0.2, 1.0]])
    params = dict(beta=1.0, alpha_sa=1.0, alpha_mlp=1.0, sigma_v2=1.0, sigma_w2=0.7, sigma_b2=0.1)
    norm = codegen_causal.compile_causal(Sequence(LayerNorm()))
    out, _ = norm(Q, *params.values(), None)
    np.testing.assert_allclose(out, Q / np.sqrt(np.outer(np.diag(Q), np.diag(Q))), rtol=1e-14)
    linear = codegen_causal.compile_causal(Sequence(Linear()))
    np.testing.assert_allclose(linear(Q, *params.values(), None)[0], 0.7 * Q + 0.1, rtol=1e-14)
    act = codegen_causal.compile_causal(Sequence(Linear(), Activation("relu")))
    with pytest.raises(ValueError, match="equal norm"):
        act(Q, *params.values(), None)
