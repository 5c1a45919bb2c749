"""The named SymPy symbols of the theory (docs/design.md, "The contract").

Every expression that :mod:`derive` returns is built from these symbols, so a
user can evaluate it by substituting by name::

    expr.subs({derive.symbols.beta: 2.0, derive.symbols.q: 1.0, ...})

or, independently of the symbols' assumptions, with :func:`subs_by_name`.

Names follow the paper (Giorlandino & Goldt, ICLR 2026):

- ``q``: average squared token norm |X_t|^2/d; ``p``: average overlap
  X_t.X_s/d (t != s); ``rho`` = p/q, the average cosine similarity (eq. 1).
- ``beta``: query/key scale, W_Q, W_K entries N(0, beta*sqrt(ln T)/d) (Result 1).
- ``alpha_sa``, ``alpha_mlp``: residual strengths, RES(X) = F(X) + alpha*X (eq. 8).
- ``sigma_v2``: value variance, W_V entries N(0, sigma_v2/d).
- ``sigma_w2``, ``sigma_b2``: MLP weight and bias variances (eqs. 35-36).
- ``h``: the auxiliary field of the REM partition function Z(beta, h) (eq. 10).
- ``T``: the sequence length; ``N`` = ln T, the REM's "system size".
- ``x``: the 1-RSB Parisi block size (eq. 15); ``m`` its saddle-point value.
"""

from __future__ import annotations

import sympy

from . import parameters

q = sympy.Symbol("q", positive=True)
p = sympy.Symbol("p", positive=True)
rho = sympy.Symbol("rho", real=True)
beta = sympy.Symbol("beta", positive=True)
alpha_sa = sympy.Symbol("alpha_sa", positive=True)
alpha_mlp = sympy.Symbol("alpha_mlp", positive=True)
sigma_v2 = sympy.Symbol("sigma_v2", positive=True)
sigma_w2 = sympy.Symbol("sigma_w2", positive=True)
sigma_b2 = sympy.Symbol("sigma_b2", positive=True)
h = sympy.Symbol("h", positive=True)
T = sympy.Symbol("T", positive=True, integer=True)
N = sympy.Symbol("N", positive=True)
x = sympy.Symbol("x", positive=True)
m = sympy.Symbol("m", positive=True)
r = sympy.Symbol("r", positive=True)

#: The parameters of one transformer block, in the order of the table :data:`derive.parameters.NAMES`.
BLOCK_PARAMETERS = tuple({s.name: s for s in (beta, alpha_sa, alpha_mlp, sigma_v2, sigma_w2, sigma_b2)}[name]
                         for name in parameters.NAMES)

#: Every contract symbol by name.
BY_NAME = {s.name: s for s in (q, p, rho, beta, alpha_sa, alpha_mlp, sigma_v2,
                               sigma_w2, sigma_b2, h, T, N, x, m, r)}


def subs_by_name(expr, **values):
    """Substitute ``values`` into ``expr`` by symbol *name*, whatever the assumptions.

    ``subs_by_name(derive.critical_beta(), q=1, p=0)`` gives ``sqrt(2)``.
    """
    table = {s: values[s.name] for s in expr.free_symbols if s.name in values}
    return expr.subs(table)
