"""derive: the theory of signal propagation through transformers at initialisation, computed by SymPy.

Contract (docs/design.md)::

    derive.critical_beta()    # beta_c(q, p) = sqrt(2/(q(q-p))), from the 1-RSB saddle point
    derive.ipr(r)             # asymptotic E sum_s A_ts^r, Piecewise in beta (0 below beta_c)
    derive.block_map(arch)    # (q', p') of one block, composed from the layer maps of its spec
    derive.formula(arch, form="latex" | "python")

Modules: :mod:`derive.rem` (Random Energy Model, replicas, Poisson–Dirichlet
moments), :mod:`derive.gaussian` (Wick, Stein, index sums), :mod:`derive.attention`
(attention overlap map), :mod:`derive.kernels` (activation kernels),
:mod:`derive.layers` (layer kinds), :mod:`derive.architectures` (named specs),
:mod:`derive.blocks` (block maps, algorithms, formulas), :mod:`derive.parameters` (the one
table of block parameters: names, order, defaults, domains; no SymPy).
"""

import importlib

#: Public names and the submodule each comes from. Loaded on first use (PEP 562), so that
#: ``import derive.parameters`` (the parameter table, pure Python) does not import SymPy.
_EXPORTS = {"ARCHITECTURES": "architectures", "architecture": "architectures", "algorithm": "blocks",
            "block_map": "blocks", "compose": "blocks", "formula": "blocks", "critical_beta": "rem",
            "ipr": "rem", "ipr_square": "rem", "subs_by_name": "symbols"}

__all__ = sorted(_EXPORTS) + ["symbols"]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    try:
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module 'derive' has no attribute {name!r}") from None


def __dir__():
    return __all__
