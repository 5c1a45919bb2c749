"""Single layers: the torch views of LayerNorm, Linear and Activation against derive's overlap maps.

For one layer fed tokens with exactly the mean-field overlaps (q_ts = p + (q − p) δ_ts,
:func:`verify.torch_view.tokens`), the maps are exact in expectation at any width:
a Linear layer's output overlaps average to σ_w² q + σ_b² (Wick, eqs. 35-36), and
the pre-activations of each hidden unit are exactly jointly Gaussian, so an
activation's output overlaps average to the Gaussian kernel K (eqs. 35-37). These
checks therefore need no allowance. LayerNorm is deterministic on exact tokens;
on Gaussian (fluctuating) tokens its cosine has the O(ρ(1 − ρ²)/d) bias of a
ratio of fluctuating norms, the declared allowance there.
"""

import pytest
import sympy

from derive.layers import Activation, Context, LayerNorm, Linear, Sequence, State
from derive.parameters import ACTIVATIONS
from derive.symbols import subs_by_name
from verify import montecarlo as mc
from verify.stats import assert_agrees


def derived_map(spec, q, p, **params):
    """(q', p') of ``spec`` from derive's symbolic overlap map, evaluated at the given numbers."""
    out = spec.overlap_map(State(sympy.Float(q), sympy.Float(p)), Context())
    return tuple(_number(subs_by_name(expr, **params), spec) for expr in (out.q, out.p))


def _number(expr, spec):
    value = sympy.N(expr, 30)
    if not value.is_number or value.free_symbols:
        raise AssertionError(f"derive's map of {spec} did not evaluate to a number: {expr}")
    return float(value)


@pytest.mark.parametrize("q, p, sigma_w2, sigma_b2", [(1.0, 0.0, 2.0, 0.0), (1.8, 0.6, 0.5, 0.3),
                                                    (1.0, 0.95, 1.3, 0.05)])
def test_linear_matches_the_derived_map(q, p, sigma_w2, sigma_b2, device):
    spec = Sequence(Linear())
    theory = derived_map(spec, q, p, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    out = mc.profile(spec, 1, beta=1.0, T=16, d=512, seeds=48, rho0=p / q, q0=q, device=device, seed=1,
                     sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    assert_agrees(theory[0], out.q[1], what=f"Linear q' (q={q}, p={p})")
    assert_agrees(theory[1], out.p[1], what=f"Linear p' (q={q}, p={p})")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("p", [0.0, 0.7])
def test_activation_matches_the_derived_kernel(activation, p, device):
    """φ(W x + b) over exactly Gaussian pre-activations: E overlaps = K(q₁, p₁) at any width."""
    spec = Sequence(Linear(), Activation(activation))
    params = dict(sigma_w2=1.7, sigma_b2=0.2)
    theory = derived_map(spec, 1.0, p, **params)
    out = mc.profile(spec, 1, beta=1.0, T=16, d=512, seeds=48, rho0=p, device=device, seed=2, **params)
    assert_agrees(theory[0], out.q[1], what=f"{activation} q'")
    assert_agrees(theory[1], out.p[1], what=f"{activation} p' (p={p})")


def test_layernorm_on_exact_tokens_is_the_map(device):
    spec = Sequence(LayerNorm())
    for rho in (0.0, 0.3, 0.999):
        theory = derived_map(spec, 2.5, 2.5 * rho)
        out = mc.profile(spec, 1, beta=1.0, T=8, d=16, seeds=2, rho0=rho, q0=2.5, device=device)
        assert abs(out.q.mean[1] - theory[0]) < 1e-12 and abs(out.p.mean[1] - theory[1]) < 1e-12


@pytest.mark.parametrize("rho", [0.2, 0.8])
def test_layernorm_on_fluctuating_tokens(rho, device):
    """Gaussian tokens: |X_t|² fluctuates by O(1/√d); the cosine's bias is declared, not fitted."""
    d = 256
    spec = Sequence(LayerNorm())
    theory = derived_map(spec, 1.0, rho)
    out = mc.profile(spec, 1, beta=1.0, T=16, d=d, seeds=64, rho0=rho, kind="gaussian", device=device, seed=3)
    assert_agrees(theory[1], out.p[1], allowance=rho * (1 - rho**2) / d,
                  reason="finite d: E cos of Gaussian vectors with correlation rho is rho(1 - (1-rho^2)/(2d) + ...)",
                  what=f"LayerNorm p' (rho={rho})")
    assert abs(out.q.mean[1] - 1.0) < 1e-12
