"""The one table of the block parameters: names, order, defaults, domains, meaning.

Pure Python (no SymPy): :mod:`numeric` reads it without importing SymPy,
:mod:`derive.symbols` builds the SymPy symbols from it, the command line
builds its options from it, :mod:`verify` fills in defaults from it. The
order is the positional order of the compiled block maps
(:mod:`numeric.codegen`). Conventions: docs/design.md, "Conventions".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Parameter:
    """One block parameter.

    ``domain``: "positive" (> 0: a variance whose zero removes a layer and can
    leave a LayerNorm 0/0, or the query/key scale) or "nonnegative" (>= 0: a
    strength or a bias variance). ``default``: the value a function uses when
    it is not given (``None``: required, as beta is).
    """

    name: str
    default: float | None
    domain: str
    help: str


#: The contract's block parameters, in the compiled maps' positional order.
BLOCK = (
    Parameter("beta", None, "positive",
              "query/key scale: W_Q, W_K entries N(0, beta sqrt(ln T)/d) (Result 1, eq. 8)"),
    Parameter("alpha_sa", 1.0, "nonnegative",
              "self-attention residual strength alpha_SA: RES(X) = SA(X) + alpha_SA X (eq. 8)"),
    Parameter("alpha_mlp", 1.0, "nonnegative", "MLP residual strength alpha_MLP (eq. 8)"),
    Parameter("sigma_v2", 1.0, "positive", "value variance: W_V entries N(0, sigma_v2/d)"),
    Parameter("sigma_w2", 2.0, "positive",
              "MLP weight variance: W entries N(0, sigma_w2/fan_in), both layers (eq. 35)"),
    Parameter("sigma_b2", 0.0, "nonnegative", "MLP bias variance: b entries N(0, sigma_b2) (eq. 35)"),
)

#: Names in positional order.
NAMES = tuple(par.name for par in BLOCK)
#: Parameter by name.
BY_NAME = {par.name: par for par in BLOCK}
#: Defaults of the parameters that have one (every block parameter but beta).
DEFAULTS = {par.name: par.default for par in BLOCK if par.default is not None}

#: The named block architectures (specs in :mod:`derive.architectures`): Alg. 1, Alg. 2 (corrected),
#: Alg. 3 and gain-controlled pre-LN.
ARCHITECTURES = ("post-ln", "pre-ln", "gain-post-ln", "gain-pre-ln")
#: The activations with a Gaussian kernel (:mod:`derive.kernels`); ``gelu`` is exact, x Phi(x); ``silu`` is
#: x sigma(x) (SwiGLU's gate, PyTorch's SiLU); ``gelu_new`` is GPT-2's tanh approximation of gelu.
ACTIVATIONS = ("relu", "erf", "tanh", "gelu", "identity", "silu", "gelu_new")
#: The activations whose named-architecture maps and fused kernels are generated and shipped
#: (:mod:`numeric.codegen`). silu and gelu_new have no closed-form kernel (Gauss-Hermite quadrature, as tanh):
#: shipping them for every named architecture would add 16 quadrature kernels to compile and test in CI; a named
#: architecture with them is compiled on first use instead (docs/design.md, "One table, one rule, one solver").
NAMED_ACTIVATIONS = ("relu", "erf", "tanh", "gelu", "identity")
