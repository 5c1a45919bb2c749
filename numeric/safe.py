"""Range-safe elementary functions for the compiled maps, and the kernel registry.

In exact arithmetic the arguments below are in range; rounding can push
1 - rho^2 to -1e-17 or rho to 1 + 1e-16 when tokens have all but collapsed
(rho -> 1), which would turn a valid map into NaN. These guards clip by at
most that rounding.
"""

from __future__ import annotations

import numpy


def _sqrt(x):
    """sqrt of a quantity that is >= 0 in exact arithmetic."""
    return numpy.sqrt(numpy.maximum(x, 0.0))


def _acos(x):
    return numpy.arccos(numpy.clip(x, -1.0, 1.0))


def _asin(x):
    return numpy.arcsin(numpy.clip(x, -1.0, 1.0))


class _KernelRegistry(dict):
    """name -> vectorised K(q, c) for activations without a closed form.

    Built on first use by Gauss–Hermite quadrature (:mod:`numeric.quadrature`)
    of the activation's generated NumPy form, so that neither ``import numeric``
    nor running a map imports SymPy.
    """

    def __missing__(self, name):
        from .quadrature import gaussian_kernel
        kernel = gaussian_kernel(name)
        self[name] = kernel
        return kernel


KERNELS = _KernelRegistry()


def common_norm(d, layer: str):
    """The one norm q_tt of tokens with equal norms d (..., T), as (..., 1, 1) for broadcasting.

    A Gaussian kernel K(q, q_ts) of equal variances (derive.kernels) describes an activation only when every
    token has the same norm; in the position-resolved theory a LayerNorm and a Linear before it make sure.
    """
    first = d[..., :1]
    if numpy.any(numpy.abs(d - first) > 1e-9 * numpy.abs(first)):
        raise ValueError(f"{layer} in a position-resolved map needs tokens of equal norm; its input norms differ "
                         "(no LayerNorm before the MLP, or a LayerNorm with eps > 0)")
    return first[..., None]
