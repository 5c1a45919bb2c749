"""Input checks: bad input raises ValueError naming the parameter and the allowed range."""

from __future__ import annotations

import numbers

import numpy as np

ARCHITECTURES = ("post-ln", "pre-ln", "gain-post-ln", "gain-pre-ln")
ACTIVATIONS = ("relu", "erf", "tanh", "gelu", "identity")


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


def depth(value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"depth must be an integer >= 0, got {value!r}")
    if value < 0:
        raise ValueError(f"depth must be an integer >= 0, got {value}")
    return int(value)


def sequence_length(T):
    """``None`` (T -> oo) or an integer T >= 2."""
    if T is None:
        return None
    if isinstance(T, bool) or not isinstance(T, numbers.Integral):
        if isinstance(T, float) and T.is_integer() and T >= 2:
            return int(T)
        raise ValueError(f"T must be None (T -> infinity) or an integer >= 2, got {T!r}")
    if T < 2:
        raise ValueError(f"T must be None (T -> infinity) or an integer >= 2, got {T}")
    return int(T)


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


def block_parameters(*, beta, alpha_sa, alpha_mlp, sigma_v2, sigma_w2, sigma_b2) -> dict:
    """Check the block parameters and that they broadcast together (arrays are not expanded).

    beta, sigma_v2, sigma_w2 > 0 (a zero weight variance removes the layer and
    can leave LayerNorm a zero vector); alpha_sa, alpha_mlp, sigma_b2 >= 0.
    """
    values = {"beta": positive("beta", beta), "alpha_sa": nonnegative("alpha_sa", alpha_sa),
              "alpha_mlp": nonnegative("alpha_mlp", alpha_mlp), "sigma_v2": positive("sigma_v2", sigma_v2),
              "sigma_w2": positive("sigma_w2", sigma_w2), "sigma_b2": nonnegative("sigma_b2", sigma_b2)}
    try:
        np.broadcast_shapes(*(v.shape for v in values.values()))
    except ValueError:
        shapes = {k: v.shape for k, v in values.items()}
        raise ValueError(f"parameters do not broadcast together: {shapes}") from None
    return values
