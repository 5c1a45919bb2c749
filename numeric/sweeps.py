"""Any block parameter as a grid axis: :func:`sweep` returns a labelled N-dimensional ``xarray.Dataset``.

``numeric.sweep(arch, depth, beta=..., alpha_sa=..., sigma_w2=..., T=..., ...)``: every
parameter given as a 1-D sequence becomes an axis (in the order given), every
scalar stays fixed. The axes may be any of beta, alpha_sa, alpha_mlp,
sigma_v2, sigma_w2, sigma_b2 (and a custom spec's own parameters), rho0 and T
(``None`` or ``inf`` on a T axis is the asymptotic theory; the coordinate is
then ``inf``). The grid is iterated by the fused kernels (:mod:`numeric.fused`)
with the axes passed as axes, so no per-point parameter array is built.

The Dataset holds, at each requested depth (``depth``: an integer or a 1-D
sequence of them, the dimension ``depth``):

- ``rho`` — the cosine similarity after that many blocks;
- ``phase`` — 0 trainable, 1 rank collapse (rho > 1 - eps), 2 entropy
  collapse (as :func:`numeric.trainability_diagram`: ``criterion`` "first" or
  "any", ``ipr_threshold`` at finite T), entropy collapse first;
- ``alpha_c`` — where alpha_sa is not an axis: the critical residual strength
  (:func:`numeric.critical_alpha`, the one root finder) over the other axes.

Plotting, ``to_netcdf`` and ``to_dataframe`` are xarray's own. An axis that is
empty, not finite (T excepted: ``inf``/None) or not a 1-D sequence of numbers
raises ValueError naming it; values outside a parameter's domain raise the
parameter's own ValueError.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from derive.parameters import DEFAULTS

from . import fused
from . import validation as check
from .diagram import ENTROPY_COLLAPSE, PHASE_NAMES, RANK_COLLAPSE, TRAINABLE, _name
from .profile import _extra_names, critical_alpha, prepare
from .solve import ALPHA_ZERO


def sweep(spec_or_arch, depth, *, activation="relu", eps=0.01, criterion="first", ipr_threshold=0.5,
          alpha_c=True, rtol=1e-6, alpha_max=1e6, backend=None, **params):
    """rho, phase and alpha_c over the grid spanned by the parameters given as sequences (module doc).

    ``params``: beta (required), alpha_sa, alpha_mlp, sigma_v2, sigma_w2, sigma_b2, rho0, T and a custom
    spec's own parameters, each a scalar or a 1-D sequence (an axis). ``alpha_c=False`` skips the root
    search. ``backend``: as :func:`numeric.cosine_profile`.
    """
    import xarray as xr

    arch = check.architecture(spec_or_arch)
    if isinstance(arch, str):
        check.activation(activation)
    depths = _depths(depth)
    eps = float(check.interval("eps", eps, 0.0, 1.0, closed=False))
    if criterion not in ("first", "any"):
        raise ValueError(f"criterion must be 'first' or 'any', got {criterion!r}")
    ipr_threshold = float(check.interval("ipr_threshold", ipr_threshold, 0.0, 1.0, closed=False))
    allowed = ("beta",) + tuple(DEFAULTS) + _extra_names(arch) + ("rho0", "T")
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"sweep: unknown parameter(s) {unknown}; allowed: {', '.join(allowed)}")
    if "beta" not in params:
        raise ValueError("sweep needs beta (a value or an axis)")
    params = dict(params)                               # the order given is the order of the axes
    params.setdefault("rho0", 0.0)
    params.setdefault("T", None)
    axes = {name: _axis(name, value) for name, value in params.items() if _is_axis(value)}
    fixed = {name: value for name, value in params.items() if name not in axes}
    T_values = axes.pop("T", None)
    grid = [n for n in params if n in axes]
    names = (["T"] if T_values is not None else []) + grid             # a T axis comes first
    shape = tuple(axes[n].size for n in grid)
    per_T = []
    for T in (T_values if T_values is not None else [fixed["T"]]):
        T = None if T is None or (isinstance(T, float) and math.isinf(T)) else T
        per_T.append(_one_T(arch, activation, depths, T, eps, criterion, ipr_threshold, alpha_c, rtol, alpha_max,
                            backend, grid, shape, axes, fixed))
    stack = (lambda arrays: np.stack(arrays, axis=1)) if T_values is not None else (lambda arrays: arrays[0])
    dims = ("depth",) + tuple(names)
    coords = {"depth": depths, **{n: axes[n] for n in grid}}
    if T_values is not None:
        coords["T"] = np.array([math.inf if t is None else float(t) for t in T_values])
    data = {"rho": (dims, stack([r["rho"] for r in per_T]), {"long_name": "cosine similarity after depth blocks"}),
            "phase": (dims, stack([r["phase"] for r in per_T]),
                      {"flag_values": [TRAINABLE, RANK_COLLAPSE, ENTROPY_COLLAPSE],
                       "flag_meanings": " ".join(PHASE_NAMES[k].replace(" ", "_") for k in sorted(PHASE_NAMES))})}
    if alpha_c and "alpha_sa" not in axes:
        data["alpha_c"] = (tuple(d for d in dims if d != "alpha_sa"), stack([r["alpha_c"] for r in per_T]),
                           {"long_name": "smallest alpha_sa with rho <= 1 - eps"})
    attrs = {"arch": _name(arch), "activation": activation, "eps": eps, "criterion": criterion,
             "ipr_threshold": ipr_threshold}
    attrs.update({k: (math.inf if v is None else float(v)) for k, v in fixed.items()})
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _one_T(arch, activation, depths, T, eps, criterion, ipr_threshold, want_alpha_c, rtol, alpha_max, backend,
           grid, shape, axes, fixed):
    """rho, phase (depth, *grid) and alpha_c at one T."""
    T = check.sequence_length(T)
    values = {}
    for k, name in enumerate(grid):                    # an axis varies along its own dimension
        values[name] = axes[name].reshape([-1 if j == k else 1 for j in range(len(grid))])
    values.update({k: v for k, v in fixed.items() if k != "T"})
    if "alpha_sa" in values:
        values["alpha_sa"] = np.maximum(values["alpha_sa"], ALPHA_ZERO)   # alpha_sa = 0: the limit 0+
    rho0 = values.pop("rho0")
    beta = values.pop("beta")
    _, _, checked, depth, T, rho0 = prepare(arch, int(depths.max()), beta=beta, T=T, rho0=rho0,
                                            activation=activation, params=values, numpy_map=False)
    columns = None
    if T is not None:
        from .columns import column_moments
        columns = column_moments(T, checked["beta"])
    attention = "all" if criterion == "any" else "first"
    if fused.backend(backend) == "fused":
        out = fused.evaluate(arch, activation, T, checked, rho0, depth, depths=depths, attention=attention,
                             threshold=ipr_threshold, columns=columns)
    else:
        out = fused.evaluate_numpy(arch, activation, T, checked, rho0, depth, depths=depths, attention=attention,
                                   threshold=ipr_threshold, columns=columns)
    rho = np.broadcast_to(out.rho, (depths.size,) + shape)
    condensed = np.broadcast_to(out.condensed, (depths.size,) + shape)
    phase = np.where(condensed, ENTROPY_COLLAPSE, np.where(rho > 1.0 - eps, RANK_COLLAPSE, TRAINABLE)).astype(np.int8)
    result = {"rho": np.array(rho), "phase": phase}
    if want_alpha_c and "alpha_sa" not in axes:
        others = {k: v for k, v in checked.items() if k not in ("beta", "alpha_sa")}
        found = [critical_alpha(arch, int(d), beta=checked["beta"], eps=eps, T=T, rho0=rho0, activation=activation,
                                rtol=rtol, alpha_max=alpha_max, backend=backend, **others) for d in depths]
        result["alpha_c"] = np.stack([np.broadcast_to(a, shape) for a in found])
    return result


def _depths(depth) -> np.ndarray:
    """The requested depths: one integer >= 0 or a 1-D sequence of them (each checked), sorted, distinct."""
    if isinstance(depth, (numbers.Real, np.integer)) and not isinstance(depth, bool):
        return np.array([check.depth(depth)], dtype=np.int64)
    values = _axis("depth", depth)
    return np.unique(np.array([check.depth(d) for d in values.tolist()], dtype=np.int64))


def _is_axis(value) -> bool:
    """A value given as a sequence (list, tuple, array of >= 1 dimension) is an axis."""
    return isinstance(value, (list, tuple, range)) or (isinstance(value, np.ndarray) and value.ndim > 0)


def _axis(name: str, value) -> np.ndarray:
    """A sweep axis: a non-empty 1-D sequence of finite numbers (T: integers >= 2, or None/inf for T -> oo)."""
    if name == "T":
        if len(value) == 0:
            raise ValueError("sweep axis 'T' is empty")
        out = []
        for T in value:
            if T is None or (isinstance(T, numbers.Real) and not isinstance(T, bool) and math.isinf(T) and T > 0):
                out.append(None)
            else:
                out.append(check.sequence_length(T, name="sweep axis 'T'"))
        if len(set(out)) != len(out):
            raise ValueError(f"sweep axis 'T' repeats a value: {list(value)!r}")
        return out
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        raise ValueError(f"sweep axis {name!r} must be a 1-D sequence of numbers, got {value!r}") from None
    if arr.ndim != 1:
        raise ValueError(f"sweep axis {name!r} must be a 1-D sequence of numbers, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"sweep axis {name!r} is empty")
    if arr.dtype.kind not in "iuf" or arr.dtype == bool:
        raise ValueError(f"sweep axis {name!r} must hold real numbers, got {value!r}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"sweep axis {name!r} must be finite, got {value!r}")
    return arr
