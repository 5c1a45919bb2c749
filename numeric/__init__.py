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

Beyond the contract: ``numeric.gram_profile`` (the whole overlap matrix at
infinite width, by Monte Carlo over the attention scores; imports SymPy on use).

``import numeric`` imports NumPy only (no SymPy, no torch): the block maps were
generated once from :mod:`derive` into :mod:`numeric._generated`.
"""

from .diagram import Diagram, trainability_diagram
from .gram import GramProfile, gram_profile
from .gradients import key_grad_sq_norm, query_grad_sq_norm, value_grad_sq_norm
from .moments import ipr, ipr_pair, ipr_square
from .causal import position_profile
from .profile import cosine_profile, critical_alpha

__all__ = ["Diagram", "GramProfile", "cosine_profile", "critical_alpha", "gram_profile", "ipr", "ipr_pair",
           "ipr_square", "key_grad_sq_norm", "position_profile", "query_grad_sq_norm", "trainability_diagram", "value_grad_sq_norm"]
