"""numeric.causal_width: the finite-width increments of the position-resolved closure (issue 19)."""

import math

import numpy as np
import pytest

import numeric
from derive import masks
from numeric import finite_width as fw
from numeric.causal import Attention
from numeric.causal_width import MAX_POSITIONS, N_PAIR_PROFILE


@pytest.mark.parametrize("b2,rho,keys", [(2.25, 0.0, (101, 0, 155)), (4.5, 0.5, (41, 0, 160)),
                                         (16.0, 0.7, (100, 0, 156))])
def test_profile_rule_is_close_to_the_full_rule(b2, rho, keys):
    """The profile's 48-node score-law rule is within 5e-4 relative of the full rule (1152 nodes); the
    increment over the infinite-width moment is at least 10 % of Yp_eff at these points, so the rule's error is
    below 0.5 % of the term it computes."""
    full = fw.pair_effective(b2, rho, None, 64, 32, keys=keys)
    rule = fw.pair_effective(b2, rho, None, 64, 32, keys=keys, nodes=N_PAIR_PROFILE)
    assert rule == pytest.approx(full, rel=5e-4)
    infinite = fw.pair_and_selection(b2, b2, rho * b2, None, fw.TABLE, keys=keys)[0]
    assert abs(full - infinite) > 0.1 * full


@pytest.mark.parametrize("mask,rho", [("causal", 0.0), ("causal", 0.5), ("sliding:5", 0.3)])
def test_one_layer_gets_the_masked_layers_increments(mask, rho):
    """One attention layer on Gaussian tokens (Q = (1 - rho) I + rho): the finite-width closure minus the
    infinite-width closure is masked_overlaps(d) - masked_overlaps(None) for every row's norm and every pair,
    within the profile rule's accuracy at d = 32 (2.5e-3 of the overlap; the closure's own pair term cancels
    in the difference). The norms' tight check is bookkeeping (width, spread, sigma_v2: the same row functions);
    the values are checked against explicit keys and torch in tests/numeric/test_finite_width.py and
    verify/test_width.py."""
    T, d, d_head, beta, sigma_v2 = 12, 32, 16, 1.3, 1.7
    m = masks.parse(mask)
    Q = (1.0 - rho) * np.eye(T) + rho
    finite = Attention(T, m, width=(d, d_head))(Q, np.array(beta), np.array(sigma_v2), False)
    infinite = Attention(T, m)(Q, np.array(beta), np.array(sigma_v2), False)
    for t, u in [(1, 5), (3, 11), (7, 8), (0, 11)]:
        layer = fw.masked_overlaps(beta, rows=(t, u), mask=mask, T=T, d=d, d_head=d_head, p=rho, sigma_v2=sigma_v2)
        exact = np.subtract(layer, fw.masked_overlaps(beta, rows=(t, u), mask=mask, T=T, p=rho, sigma_v2=sigma_v2))
        closure = finite - infinite
        assert closure[t, t] == pytest.approx(exact[0], rel=1e-6, abs=1e-9)
        assert closure[u, u] == pytest.approx(exact[1], rel=1e-6, abs=1e-9)
        assert closure[t, u] == pytest.approx(exact[2], abs=2.5e-3 * layer[2])   # the profile rule at d = 32
        assert closure[u, t] == closure[t, u]
    assert np.abs(finite - infinite).max() > 1e-3


def test_finite_width_profile_tends_to_the_infinite_width_one():
    """The increments are O(1/d): at d = 2^16 the causal profile is the infinite-width one within 1e-4, while at
    d = 8 (T = 10) it differs by more than 3e-3."""
    kw = dict(beta=1.5, T=10, mask="causal", sigma_v2=2.0, alpha_sa=0.3)
    infinite = numeric.cosine_profile("pre-ln", 2, **kw)
    wide = numeric.cosine_profile("pre-ln", 2, d=2**16, d_head=2**12, **kw)
    narrow = numeric.cosine_profile("pre-ln", 2, d=8, d_head=4, **kw)
    assert np.abs(wide - infinite).max() < 1e-4
    assert np.abs(narrow - infinite).max() > 3e-3


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match="at most 64 positions"):
        numeric.cosine_profile("pre-ln", 1, beta=1.0, T=MAX_POSITIONS + 1, mask="causal", d=64)
    with pytest.raises(ValueError, match="critical_alpha or diagrams"):
        numeric.critical_alpha("pre-ln", 2, beta=1.0, T=16, mask="causal", d=64)
    from derive.architectures import architecture
    spec = architecture("pre-ln", "relu", mask="causal")                 # a spec carrying its own mask
    with pytest.raises(ValueError, match="critical_alpha or diagrams"):
        numeric.critical_alpha(spec, 2, beta=1.0, T=8, d=64)
    with pytest.raises(ValueError, match="critical_alpha or diagrams"):
        numeric.trainability_diagram(spec, 2, betas=[1.0], alphas=[0.5], T=8, d=64)
    with pytest.raises(ValueError, match="d_head"):
        numeric.cosine_profile("pre-ln", 1, beta=1.0, T=16, mask="causal", d=64, d_head=48)
    assert math.isfinite(float(numeric.cosine_profile("pre-ln", 1, beta=1.0, T=8, mask="causal", d=64)[-1]))
