"""numeric: the theory compiled into fast vectorised NumPy maps.

Contract (docs/design.md)::

    numeric.ipr(beta, *, r=2, q=1.0, p=0.0, T=None)
    numeric.ipr_pair(beta, *, q=1.0, p=0.0, T=None)
    numeric.ipr_square(beta, *, q=1.0, p=0.0, T=None)
    numeric.cosine_profile(arch, depth, *, beta, T=None, rho0=0.0, alpha_sa=1.0, alpha_mlp=1.0,
                           sigma_v2=1.0, sigma_w2=2.0, sigma_b2=0.0, activation="relu")
    numeric.critical_alpha(arch, depth, *, beta, eps=0.01, T=None, **params)
    numeric.trainability_diagram(arch, depth, *, betas, alphas, eps=0.01, T=None, **params)
    numeric.query_grad_sq_norm(beta, *, d, T, q=1.0, p=0.0, sigma_v2=1.0, finite_T=True)

Beyond the contract: ``numeric.attention_overlaps(beta, *, q=1.0, p=0.0, T, d=None, d_head=None,
sigma_v2=1.0)`` (one attention layer's output overlaps with the finite-width terms of issue 19;
loads SciPy on use), ``numeric.output_norm(beta, *, T, n=None, d, inputs="gaussian"|"normalized")`` (one
row's output norm at finite width, for Gaussian tokens or tokens of fixed norm as after a LayerNorm), ``numeric.gram_profile`` (the whole overlap matrix at
infinite width, by Monte Carlo over the attention scores; imports SymPy on use).

``import numeric`` imports NumPy only (no SciPy, SymPy, numba or torch): the block maps were
generated once from :mod:`derive` into :mod:`numeric._generated` (NumPy) and
:mod:`numeric._kernels` (fused kernels, compiled by numba on first use: :mod:`numeric.fused`).
``numeric.sweep`` (any parameter as a grid axis, an ``xarray.Dataset``) loads xarray on use.
"""

from .diagram import Diagram, trainability_diagram
from .gram import GramProfile, gram_profile
from .gradients import key_grad_sq_norm, query_grad_sq_norm, value_grad_sq_norm
from .moments import ipr, ipr_pair, ipr_square
from .profile import cosine_profile, critical_alpha

#: Exported names whose modules load on first use (PEP 562): the causal theory's tables (SciPy's
#: special functions) and sweeps (xarray) are not paid by ``import numeric``.
_LAZY = {"attention_overlaps": "finite_width", "output_norm": "finite_width", "position_profile": "causal", "sweep": "sweeps"}


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Diagram", "GramProfile", "attention_overlaps", "cosine_profile", "critical_alpha", "gram_profile", "ipr",
           "ipr_pair", "ipr_square", "key_grad_sq_norm", "output_norm", "position_profile", "query_grad_sq_norm",
           "sweep", "trainability_diagram", "value_grad_sq_norm"]
