"""Input checks, one rule per quantity: bad input raises ValueError naming the parameter and the allowed range.

Every package checks its inputs here (:mod:`verify` too), so a quantity has
one domain everywhere: the sequence length (:func:`sequence_length`), the
input cosine similarity (:func:`rho0`), counts such as d, heads, seeds
(:func:`count`), the block parameters (:func:`block_parameters`, domains from
the table :mod:`derive.parameters`), and a solver's tolerance and bracket
(:func:`tolerance`, :func:`bound`).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from derive.parameters import ACTIVATIONS, ARCHITECTURES, BLOCK


def as_array(name: str, value) -> np.ndarray:
    """``value`` as a float64 array; non-numeric or non-finite values are rejected."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number or array of real numbers, got {value!r}") from None
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return arr


def positive(name: str, value) -> np.ndarray:
    arr = as_array(name, value)
    if np.any(arr <= 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return arr


def nonnegative(name: str, value) -> np.ndarray:
    arr = as_array(name, value)
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0 (a variance or a strength), got {value!r}")
    return arr


def interval(name: str, value, lo: float, hi: float, *, closed: bool) -> np.ndarray:
    arr = as_array(name, value)
    ok = (arr >= lo) & (arr <= hi) if closed else (arr > lo) & (arr < hi)
    if not np.all(ok):
        brackets = f"[{lo}, {hi}]" if closed else f"({lo}, {hi})"
        raise ValueError(f"{name} must lie in {brackets}, got {value!r}")
    return arr


def count(name: str, value, minimum: int = 1) -> int:
    """An integer >= ``minimum`` (a width, a number of heads, seeds, layers or blocks).

    Integer-valued reals (8.0, numpy integers) are accepted; 8.5, True, "8" are not.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not _integral(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def divides(part_name: str, part: int, whole_name: str, whole: int, why: str = "") -> None:
    """``part`` divides ``whole`` (heads the width, key/value heads the heads), else a ValueError naming both."""
    count(part_name, part)
    if whole % part:
        raise ValueError(f"{part_name} = {part} must divide {whole_name} = {whole}{why}")


def _integral(value) -> bool:
    return isinstance(value, numbers.Integral) or (math.isfinite(value) and float(value).is_integer())


def depth(value) -> int:
    """The number of blocks: an integer >= 0."""
    return count("depth", value, minimum=0)


def sequence_length(T, *, name: str = "T", infinite: bool = True):
    """The sequence length: an integer >= 2 (a softmax over one key is trivial), or ``None`` for the
    T -> oo theory where ``infinite`` (the asymptotic theory; a model's ``seq_len`` is always finite)."""
    if T is None and infinite:
        return None
    if isinstance(T, bool) or not isinstance(T, numbers.Real) or not _integral(T) or T < 2:
        allowed = "None (T -> infinity) or an integer >= 2" if infinite else "an integer >= 2"
        raise ValueError(f"{name} must be {allowed}, got {T!r}")
    return int(T)


def rho(value, T=None, *, name: str = "rho0") -> np.ndarray:
    """The cosine similarity of T input tokens that share one norm and one pairwise overlap.

    Their Gram matrix q((1 - rho) I + rho 11^T) is positive semi-definite exactly when
    rho lies in [-1/(T-1), 1]; for T -> oo that is [0, 1]. (-1 is possible only for T = 2.)
    """
    T = sequence_length(T)
    lo = 0.0 if T is None else -1.0 / (T - 1)
    arr = as_array(name, value)
    if np.any(arr < lo) or np.any(arr > 1.0):
        where = "T -> infinity" if T is None else f"T = {T}"
        raise ValueError(f"{name} must lie in [{lo:.6g}, 1] (the cosine similarity of {where} tokens with one "
                         f"pairwise overlap: [-1/(T-1), 1]), got {value!r}")
    return arr


#: The finest relative accuracy a float64 solver can deliver (a few ulps).
RTOL_MIN = 1e-15


#: The input cosine similarity follows the rule of any cosine similarity of T exchangeable tokens.
rho0 = rho


def overlaps(q, p, T=None):
    """The overlap state (q, p) of T tokens: q > 0 and rho = p/q in the domain of :func:`rho0`, below 1
    (p = q, identical tokens, has no attention spread left to describe)."""
    q, p = positive("q", q), as_array("p", p)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho(p / q, T, name="p/q")
    if np.any(p >= q):
        raise ValueError(f"p must be below q (the overlap of distinct tokens below their norm), got q={q!r}, p={p!r}")
    return q, p


def tolerance(name: str, value) -> float:
    """A relative accuracy of an iterative solver: a real number in [1e-15, 0.5] (below, float64 cannot
    resolve it; above, the answer is not located at all)."""
    return float(interval(name, _scalar_real(name, value), RTOL_MIN, 0.5, closed=True))


def bound(name: str, value) -> float:
    """An upper end of a search bracket: a finite real number > 0."""
    return float(positive(name, _scalar_real(name, value)))


def _scalar_real(name: str, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    return value


def activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")
    return name


def architecture(arch):
    """A named architecture, or a derive spec object (checked by duck typing: no SymPy import)."""
    if isinstance(arch, str):
        if arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {ARCHITECTURES} or a derive.layers.Layer spec, got {arch!r}")
        return arch
    if hasattr(arch, "overlap_map"):
        return arch
    raise ValueError(f"arch must be one of {ARCHITECTURES} or a derive.layers.Layer spec, got {arch!r}")


def block_parameters(**values) -> dict:
    """Check the block parameters by the domains of :data:`derive.parameters.BLOCK` and that they
    broadcast together (arrays are not expanded); every parameter of the table must be given.

    beta, sigma_v2, sigma_w2 > 0 (a zero weight variance removes the layer and
    can leave LayerNorm a zero vector); alpha_sa, alpha_mlp, sigma_b2 >= 0.
    """
    missing = [par.name for par in BLOCK if par.name not in values]
    unknown = sorted(set(values) - {par.name for par in BLOCK})
    if missing or unknown:
        raise ValueError(f"block parameters: missing {missing}, unknown {unknown}")
    rule = {"positive": positive, "nonnegative": nonnegative}
    values = {par.name: rule[par.domain](par.name, values[par.name]) for par in BLOCK}
    try:
        np.broadcast_shapes(*(v.shape for v in values.values()))
    except ValueError:
        shapes = {k: v.shape for k, v in values.items()}
        raise ValueError(f"parameters do not broadcast together: {shapes}") from None
    return values
