"""The decoder layer kinds of issue 16 (derive.layers): GatedMLP and RMSNorm against torch, and a wrong map rejected.

As in verify/test_layers.py: tokens with exactly the mean-field overlaps enter one layer; the SwiGLU/GeGLU
kernel E[g(u) g(u')] E[v v'] is exact in expectation at any width (the gate's and the up projection's
pre-activations are exactly jointly Gaussian and independent); RMSNorm after a Linear sees fluctuating norms,
whose O(1/d) ratio bias is the declared allowance.
"""

import pytest

from derive.layers import GatedMLP, Linear, RMSNorm, Sequence
from verify import montecarlo as mc
from verify.stats import assert_agrees, finite_d_allowance
from verify.test_layers import derived_map
from verify.testing import FINITE_D_REASON

D = 256


@pytest.mark.parametrize("activation", ["silu", "gelu"])
def test_gated_mlp_matches_the_factorised_kernel(activation, device):
    spec = Sequence(GatedMLP(activation, "sigma_w2", "sigma_w2_up", "sigma_w2_out", 2.0))
    params = dict(sigma_w2=1.7, sigma_w2_up=0.8, sigma_w2_out=1.2)
    q, p = derived_map(spec, 1.0, 0.6, **params)
    out = mc.profile(spec, 1, beta=1.0, T=16, d=D, seeds=24, rho0=0.6, device=device, seed=2, **params)
    assert_agrees(q, out.q[1], what=f"gated {activation} q'")
    assert_agrees(p, out.p[1], what=f"gated {activation} p'")


def test_gate_factor_is_needed(device):
    """Dropping E[v v'] (the up projection's overlap, 0.8 * 0.6 off the diagonal) is rejected by the same check."""
    spec = Sequence(GatedMLP("silu", "sigma_w2", "sigma_w2_up", "sigma_w2_out", 2.0))
    params = dict(sigma_w2=1.7, sigma_w2_up=0.8, sigma_w2_out=1.2)
    _, p = derived_map(spec, 1.0, 0.6, **params)
    out = mc.profile(spec, 1, beta=1.0, T=16, d=D, seeds=24, rho0=0.6, device=device, seed=2, **params)
    with pytest.raises(AssertionError):
        assert_agrees(p / (0.8 * 0.6), out.p[1], what="gated p' without the up factor")


def test_rmsnorm_with_gain_matches_the_map(device):
    spec = Sequence(Linear(), RMSNorm(1e-5, gain="gain_att"))
    params = dict(sigma_w2=1.7, sigma_b2=0.3, gain_att=1.5)
    q, p = derived_map(spec, 1.0, 0.6, **params)
    out = mc.profile(spec, 1, beta=1.0, T=16, d=D, seeds=24, rho0=0.6, device=device, seed=2, **params)
    assert_agrees(q, out.q[1], allowance=finite_d_allowance(D, q), reason=FINITE_D_REASON, what="RMSNorm q'")
    assert_agrees(p, out.p[1], allowance=finite_d_allowance(D, p), reason=FINITE_D_REASON, what="RMSNorm p'")
    with pytest.raises(AssertionError):                       # the gain (mean square of the weight) ignored
        assert_agrees(p / 1.5, out.p[1], allowance=finite_d_allowance(D, p), reason=FINITE_D_REASON,
                      what="RMSNorm p' without its gain")
