"""derive: the theory of signal propagation through transformers at initialisation, computed by SymPy.

Contract (DESIGN.md)::

    derive.critical_beta()    # beta_c(q, p) = sqrt(2/(q(q-p))), from the 1-RSB saddle point
    derive.ipr(r)             # asymptotic E sum_s A_ts^r, Piecewise in beta (0 below beta_c)
    derive.block_map(arch)    # (q', p') of one block, composed from the layer maps of its spec
    derive.formula(arch, form="latex" | "python")

Modules: :mod:`derive.rem` (Random Energy Model, replicas, Poisson–Dirichlet
moments), :mod:`derive.gaussian` (Wick, Stein, index sums), :mod:`derive.attention`
(attention overlap map), :mod:`derive.kernels` (activation kernels),
:mod:`derive.layers` (layer kinds), :mod:`derive.architectures` (named specs),
:mod:`derive.blocks` (block maps, algorithms, formulas).
"""

from . import symbols
from .architectures import ARCHITECTURES, architecture
from .blocks import algorithm, block_map, compose, formula
from .rem import critical_beta, ipr, ipr_square
from .symbols import subs_by_name

__all__ = ["ARCHITECTURES", "algorithm", "architecture", "block_map", "compose", "critical_beta", "formula",
           "ipr", "ipr_square", "subs_by_name", "symbols"]
