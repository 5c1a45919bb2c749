"""Look up (or compile) the block map of an architecture, and the moment functions for T.

Named architectures use the generated module :mod:`numeric._generated`;
a custom :class:`derive.layers.Layer` spec, or a named architecture with an
activation the module does not ship (silu, gelu_new; derive.parameters.NAMED_ACTIVATIONS),
is compiled on first use with the same code generator (this needs SymPy) and
cached for the session.
"""

from __future__ import annotations

from . import moments
from . import validation as check

_COMPILED: dict[str, object] = {}


def block_function(arch, activation: str = "relu", T=None):
    """The compiled block map ``f(q, p, *params, T, Y2, Yp) -> (q', p', q_att, p_att)``.

    ``T=None`` selects the form specialised to T -> oo.
    """
    arch = check.architecture(arch)
    asymptotic = T is None
    if isinstance(arch, str):
        from ._generated import ASYMPTOTIC_BLOCK_MAPS, BLOCK_MAPS
        table = ASYMPTOTIC_BLOCK_MAPS if asymptotic else BLOCK_MAPS
        key = (arch, check.activation(activation))
        if key in table:
            return table[key]
        from derive.architectures import architecture       # an activation not shipped (silu, gelu_new)
        arch = architecture(arch, activation)
    key = (repr(arch), asymptotic)
    if key not in _COMPILED:
        from .codegen import compile_spec
        _COMPILED[key] = compile_spec(arch, asymptotic)
    return _COMPILED[key]


def moment_functions(T, width=None):
    """(Y2, Yp) as functions of (beta, q, p, T): asymptotic for ``T=None``, exact finite-T otherwise.

    ``width``: (d, d_head) checked (:func:`numeric.finite_width.width`), finite T: the finite-width effective
    moments Y2_eff, Yp_eff of one attention layer (issue 19; :mod:`numeric.width_tables`), which the block
    maps use in place of Y2, Yp (the attention layer's output overlaps are eq. 23 at the effective moments,
    :func:`derive.finite_width.effective_moments`); (d, d_head, "normalized"): those of tokens of fixed norm
    (:mod:`numeric.normalized_width`).
    """
    from .profile import normalized
    if normalized(width):
        from .normalized_width import normalized_moments
        moments_ = normalized_moments(int(T), *width[:2])
        return (lambda beta, q, p, T: moments_.y2(beta, q, p)), (lambda beta, q, p, T: moments_.yp(beta, q, p))
    if width is not None:
        from .width_tables import width_tables
        y2, yp, _ = width_tables(int(T), *width)
        return (lambda beta, q, p, T: y2.fast(beta, q, p)), (lambda beta, q, p, T: yp.fast(beta, q, p))
    if T is None:
        return moments.ipr2_asymptotic, moments.ipr_pair_asymptotic
    return moments.ipr2_finite, moments.ipr_pair_finite


def ipr_function(T, width):
    """E sum_s A_ts^2 at finite width as a function of (beta, q, p, T): what entropy collapse reads (the
    key-selection term belongs to the output overlaps, not to the IPR; :func:`numeric.finite_width.ipr_width`).
    ``width``: (d, d_head), or (d, d_head, "normalized") for tokens of fixed norm (:mod:`numeric.normalized_width`)."""
    from .profile import normalized
    if normalized(width):
        from .normalized_width import normalized_moments
        moments_ = normalized_moments(int(T), *width[:2])
        return lambda beta, q, p, T: moments_.ipr(beta, q, p)
    from .width_tables import width_tables
    table = width_tables(int(T), *width)[2]
    return lambda beta, q, p, T: table.fast(beta, q, p)
