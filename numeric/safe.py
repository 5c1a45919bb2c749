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


#: Largest relative spread of token norms an activation's equal-variance kernel is used for. The kernel of
#: unequal variances K(g e^delta, g e^-delta, c) is even in delta (swap the two tokens), so the geometric mean g
#: of the two variances makes an error of order delta^2. Measured against a 2-D Gauss-Hermite integral of the
#: unequal variances (tests/numeric/test_safe.py), as a cosine (divided by sqrt(K_tt K_ss)), over variances
#: 0.05-10 and correlations -0.5 to 0.999: at most NORM_SPREAD_ERROR_PER_DELTA2 * delta^2, delta = ln(1 + spread)/2:
#: 0.06 (gelu, gelu_new), 0.05 (silu), 0.12 (tanh), 0.14 (erf); exact for relu and identity (homogeneous of
#: degree one). At a 10 % spread that is at most 3.2e-4 in a cosine. A LayerNorm's or RMSNorm's eps leaves a
#: spread of eps/q times the relative spread of the norms it divides: about 1e-3 at GPT-2's initialisation,
#: 2-3 % in a narrow decoder (hidden 128) whose stream shrinks toward eps.
NORM_SPREAD = 0.10
NORM_SPREAD_ERROR_PER_DELTA2 = 0.15


def common_norm(d, layer: str):
    """The norm sqrt(q_tt q_ss) of each pair of tokens with nearly equal norms d (..., T): shape (..., T, T).

    A Gaussian kernel K(q, q_ts) of equal variances (derive.kernels) describes an activation when the tokens
    share their norm, as after a LayerNorm and a Linear; a LayerNorm's eps leaves a relative spread of order
    eps/q. With the geometric mean the kernel is exact for relu and identity at any norms (homogeneous of
    degree one) and for the others to second order in the spread, which must stay below NORM_SPREAD (10 %):
    an error of at most 3.2e-4 in a cosine there (see NORM_SPREAD).
    """
    lo, hi = d.min(axis=-1, keepdims=True), d.max(axis=-1, keepdims=True)
    if numpy.any(hi - lo > NORM_SPREAD * lo):
        raise ValueError(f"{layer} in a position-resolved map needs tokens of (nearly) equal norm; its input "
                         f"variances (squared norms) differ by more than {100 * NORM_SPREAD:g} % (no LayerNorm "
                         "before the MLP?)")
    root = numpy.sqrt(d)
    return root[..., :, None] * root[..., None, :]
