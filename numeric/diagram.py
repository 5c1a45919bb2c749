"""Trainability diagrams over (beta, alpha_sa): the paper's Fig. 1(c).

Each grid point is iterated through ``depth`` blocks. Phases:

- 0 trainable;
- 1 rank collapse: rho after the last block > 1 - eps;
- 2 entropy collapse. Two criteria:
  ``criterion="first"`` (the paper's, Fig. 1c): beta above beta_c(q, p) of the
  first attention layer's input overlap — for orthogonal inputs
  beta_c = sqrt(2); ``criterion="any"`` (stricter): beta above beta_c(q_l, p_l)
  of the attention input of *any* block, i.e. some layer condenses.
  At finite T there is no sharp threshold; a layer counts as condensed when
  its finite-T IPR E sum_s A^2 exceeds ``ipr_threshold`` (default 0.5:
  half the attention weight on one key).

A grid value alpha_sa = 0 is evaluated as the limit alpha_sa -> 0+ (at T = oo an
attention output can vanish exactly; rho stays continuous in that limit).
Entropy collapse takes precedence over rank collapse (it cannot be cured by
skip connections, Result 1 discussion). The grid is processed in chunks so
that all layers of a chunk stay in cache; order of the grid does not matter.
"""

from __future__ import annotations

import csv
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import fused
from . import validation as check
from .moments import parisi_m
from .profile import DEFAULTS, critical_alpha, iterate, prepare
from .solve import ALPHA_ZERO

TRAINABLE, RANK_COLLAPSE, ENTROPY_COLLAPSE = 0, 1, 2
PHASE_NAMES = {TRAINABLE: "trainable", RANK_COLLAPSE: "rank collapse", ENTROPY_COLLAPSE: "entropy collapse"}
CHUNK = 16384


@dataclass
class Diagram:
    """A trainability diagram: ``phase`` and ``rho`` have shape (len(alphas), len(betas)).

    ``critical_alpha[j]``: the smallest alpha_sa avoiding rank collapse at
    ``betas[j]`` (bisection, :func:`numeric.critical_alpha`), the boundary
    between phases 1 and 0.
    """

    betas: np.ndarray
    alphas: np.ndarray
    phase: np.ndarray
    rho: np.ndarray
    critical_alpha: np.ndarray
    arch: str
    depth: int
    eps: float
    T: int | None
    criterion: str
    params: dict = field(default_factory=dict)
    #: Masked (causal) stacks: the same readings among the late positions ({"rho", "phase", "critical_alpha",
    #: "positions"}) and the rows entropy collapse is judged on ({"min_keys"}); None for an encoder.
    late: dict | None = None

    def to_csv(self, path) -> None:
        """One row per grid point: beta, alpha_sa, rho, phase, phase name (and rho, phase of the late
        positions for a masked stack)."""
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["beta", "alpha_sa", "rho", "phase", "phase_name"]
                            + (["rho_late", "phase_late"] if self.late else []))
            for i, alpha in enumerate(self.alphas):
                for j, beta in enumerate(self.betas):
                    ph = int(self.phase[i, j])
                    row = [repr(float(beta)), repr(float(alpha)), repr(float(self.rho[i, j])), ph, PHASE_NAMES[ph]]
                    if self.late:
                        row += [repr(float(self.late["rho"][i, j])), int(self.late["phase"][i, j])]
                    writer.writerow(row)

    def plot(self, path=None, ax=None):
        """Draw the phases (colours as in Fig. 1c) and the critical alpha_sa; save to ``path``."""
        from .plotting import plot_diagram
        return plot_diagram(self, path=path, ax=ax)

    def to_xarray(self):
        """The diagram as an ``xarray.Dataset``: ``rho`` and ``phase`` over (alpha_sa, beta), ``critical_alpha``
        over beta (and the late positions' readings of a masked stack, suffixed ``_late``); the settings as
        attributes (T = inf for the asymptotic theory), so that ``.to_netcdf`` writes it as it is."""
        import xarray as xr

        coords = {"alpha_sa": np.asarray(self.alphas, dtype=float), "beta": np.asarray(self.betas, dtype=float)}
        grid, column = ("alpha_sa", "beta"), ("beta",)
        flags = {"flag_values": sorted(PHASE_NAMES),
                 "flag_meanings": " ".join(PHASE_NAMES[k].replace(" ", "_") for k in sorted(PHASE_NAMES))}
        data = {"rho": (grid, self.rho, {"long_name": f"cosine similarity after {self.depth} blocks"}),
                "phase": (grid, np.asarray(self.phase, dtype=np.int8), flags),
                "critical_alpha": (column, np.asarray(self.critical_alpha, dtype=float),
                                   {"long_name": "smallest alpha_sa with rho <= 1 - eps"})}
        if self.late:
            data.update(rho_late=(grid, self.late["rho"]), phase_late=(grid, np.asarray(self.late["phase"], np.int8)),
                        critical_alpha_late=(column, np.asarray(self.late["critical_alpha"], dtype=float)))
        attrs = {"arch": self.arch, "depth": self.depth, "eps": self.eps, "criterion": self.criterion,
                 "T": np.inf if self.T is None else self.T}
        attrs.update({k: (v if isinstance(v, str) else float(v)) for k, v in self.params.items()
                      if v is not None and k not in coords})
        return xr.Dataset(data, coords=coords, attrs=attrs)

    def summary(self) -> dict:
        counts = {PHASE_NAMES[k]: int((self.phase == k).sum()) for k in PHASE_NAMES}
        out = {"arch": self.arch, "depth": self.depth, "eps": self.eps, "T": self.T,
               "criterion": self.criterion, "grid": list(self.phase.shape), "phases": counts}
        if "d" in self.params:
            out["d"], out["d_head"] = self.params["d"], self.params["d_head"]
            if self.params.get("inputs", "gaussian") != "gaussian":
                out["inputs"] = self.params["inputs"]
        if self.late:
            out["mask"] = str(self.late["mask"])
            out["phases_late"] = {PHASE_NAMES[k]: int((self.late["phase"] == k).sum()) for k in PHASE_NAMES}
            out["min_keys"] = self.late["min_keys"]
        return out


def grid_inputs(betas, alphas, eps, criterion, ipr_threshold, params):
    """A diagram's grid and criteria checked (one place for encoder and causal diagrams):
    (betas, alphas, eps, ipr_threshold)."""
    betas, alphas = _grid("betas", betas), _grid("alphas", alphas)
    check.positive("betas", betas)
    check.nonnegative("alphas", alphas)
    eps = float(check.interval("eps", eps, 0.0, 1.0, closed=False))
    if criterion not in ("first", "any"):
        raise ValueError(f"criterion must be 'first' or 'any', got {criterion!r}")
    ipr_threshold = float(check.interval("ipr_threshold", ipr_threshold, 0.0, 1.0, closed=False))
    if "alpha_sa" in params or "beta" in params:
        raise ValueError("trainability_diagram takes betas= and alphas= grids, not beta/alpha_sa")
    return betas, alphas, eps, ipr_threshold


def _grid(name, values):
    arr = check.as_array(name, values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of values, got shape {arr.shape}")
    return arr


def trainability_diagram(arch, depth, *, betas, alphas, eps=0.01, T=None, rho0=0.0, activation="relu",
                         criterion="first", ipr_threshold=0.5, progress=None, mask=None, min_keys=None, backend=None,
                         d=None, d_head=None, inputs="gaussian", **params):
    """Phases over the grid (alphas x betas) for ``depth`` blocks of ``arch`` (see module doc).

    ``params``: alpha_mlp, sigma_v2, sigma_w2, sigma_b2 (scalars). ``progress``:
    a callable taking the number of grid points done (e.g. a tqdm update).
    ``mask`` ("causal", "sliding:W"; or a spec with masks): the position-resolved diagram of
    :func:`numeric.causal.trainability_diagram` — rank collapse judged on all pairs (``phase``) and on
    the late positions (``late``), entropy collapse on rows with at least ``min_keys`` keys.
    ``backend``: "fused" (compiled kernels, :mod:`numeric.fused`), "numpy" (the reference path) or
    "auto"/None (``$SIGPROP_BACKEND``, else fused where numba is installed).
    ``d``, ``d_head``: finite width (issue 19; :func:`numeric.cosine_profile`): the block maps with the
    finite-width effective moments, entropy collapse on the finite-width IPR; the fused kernels read the effective
    moments' tables as they read the infinite-width ones (criterion "any": the NumPy path). ``inputs``:
    "gaussian" or "normalized" tokens (:func:`numeric.profile.finite_width`; the kernels read normalized tokens'
    moments from their per-beta columns, :mod:`numeric.columns`).
    """
    from .profile import _masked, finite_width, width_arguments
    if _masked(arch, mask):
        from . import causal
        return causal.trainability_diagram(arch, depth, betas=betas, alphas=alphas, eps=eps, T=T, rho0=rho0,
                                           activation=activation, criterion=criterion, ipr_threshold=ipr_threshold,
                                           progress=progress, mask=mask, min_keys=min_keys, d=d, d_head=d_head,
                                           inputs=inputs, **params)
    width = finite_width(d, d_head, T, inputs, arch)
    if min_keys is not None:
        raise ValueError("min_keys applies to masked (causal) stacks, whose rows see different numbers of keys")
    betas, alphas, eps, ipr_threshold = grid_inputs(betas, alphas, eps, criterion, ipr_threshold, params)
    alphas_used = np.maximum(alphas, ALPHA_ZERO)  # alpha_sa = 0 is read as the limit alpha_sa -> 0+
    shape = (alphas.size, betas.size)
    asymptotic = T is None or (isinstance(T, (int, float)) and math.isinf(T))
    backend = fused.for_work(backend, alphas.size * betas.size * check.depth(depth), asymptotic)
    if backend == "fused":  # grid axes as axes: no per-point parameter arrays
        _, _, values, depth, T, rho0 = prepare(arch, depth, beta=betas[None, :], T=T, rho0=rho0, activation=activation,
                                               params={**params, "alpha_sa": alphas_used[:, None]}, numpy_map=False)
        out = fused.evaluate(arch, activation, T, values, rho0, depth, columns=_columns(T, betas, width),
                             attention="all" if criterion == "any" else "first", threshold=ipr_threshold, width=width)
        rho, condensed = out.rho[-1], out.condensed[-1]
        if progress is not None:
            progress(rho.size)
    else:
        rho, condensed, depth, T, rho0 = _numpy_grid(arch, depth, betas, alphas_used, T, rho0, activation, criterion,
                                                     ipr_threshold, progress, params, width)
    phase = np.where(condensed, ENTROPY_COLLAPSE, np.where(rho > 1.0 - eps, RANK_COLLAPSE, TRAINABLE))
    boundary = critical_alpha(arch, depth, beta=betas, eps=eps, T=T, rho0=rho0, activation=activation,
                              bracket=_grid_bracket(rho.reshape(shape), alphas_used, eps), backend=backend,
                              **width_arguments(width), **params)
    return Diagram(betas, alphas, phase.reshape(shape), rho.reshape(shape), np.asarray(boundary),
                   _name(arch), depth, eps, T, criterion,
                   {**DEFAULTS, **params, "activation": activation, "rho0": float(rho0),
                    **width_arguments(width)})


def _columns(T, betas, width=None):
    """The per-beta moment tables of a finite-T grid (numeric.columns; at ``width``, of the effective moments),
    None at T = oo."""
    if T is None:
        return None
    from .columns import column_moments                # tables and their quadratures: imported on use
    return column_moments(T, betas, width)


def _numpy_grid(arch, depth, betas, alphas_used, T, rho0, activation, criterion, ipr_threshold, progress, params,
                width=None):
    """The reference path: chunks of the flattened grid through the vectorised NumPy maps, in threads.
    ``width``: (d, d_head) of a finite-width diagram (None: infinite width)."""
    B, A = np.meshgrid(betas, alphas_used)
    block, moments, values, depth, T, rho0 = prepare(arch, depth, beta=B.ravel(), T=T, rho0=rho0,
                                                      activation=activation, params={**params, "alpha_sa": A.ravel()},
                                                      width=width)
    rho, condensed = np.empty(B.size), np.empty(B.size, dtype=bool)
    columns = _columns(T, betas, width)
    ipr = None
    if width is not None:
        from .maps import ipr_function
        ipr = ipr_function(T, width)

    def run_chunk(sl):
        chunk = {k: (v[sl] if np.ndim(v) else v) for k, v in values.items()}
        chunk_moments = moments if columns is None else columns.bind(chunk["beta"])
        run = iterate(block, chunk_moments, chunk, depth, T, rho0, record=False,
                      attention="all" if criterion == "any" else "first")
        rho[sl] = run.p / run.q
        condensed[sl] = _condensed(run, chunk["beta"], T, ipr or chunk_moments[0], ipr_threshold)
        return sl.stop - sl.start

    chunks = [slice(start, min(start + CHUNK, B.size)) for start in range(0, B.size, CHUNK)]
    with ThreadPoolExecutor(max_workers=_workers(len(chunks))) as pool:
        for done in pool.map(run_chunk, chunks):
            if progress is not None:
                progress(done)
    return rho, condensed, depth, T, rho0


def _grid_bracket(rho, alphas, eps):
    """Per beta column, (largest grid alpha with rank collapse below the first without, that one)."""
    order = np.argsort(alphas)
    ok = rho[order] <= 1.0 - eps
    first = np.where(ok.any(axis=0), np.argmax(ok, axis=0), len(alphas))
    sorted_alphas = np.append(alphas[order], np.inf)
    lo = np.where(first > 0, sorted_alphas[np.maximum(first - 1, 0)], 0.0)
    return lo, sorted_alphas[first]


def _workers(n_chunks: int) -> int:
    """Threads for the chunks: NumPy releases the GIL inside its loops, so chunks run in parallel."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, n_chunks))


def _condensed(run, beta, T, Y2, threshold):
    """Entropy collapse per point: an attention layer recorded in ``run`` condenses."""
    out = np.zeros(np.shape(beta), dtype=bool)
    for q_att, p_att in zip(run.att_q, run.att_p):
        if T is None:
            out |= parisi_m(beta, q_att, p_att) < 1.0
        else:
            out |= Y2(beta, q_att, p_att, T) > threshold
    return out


def _name(arch) -> str:
    return arch if isinstance(arch, str) else getattr(arch, "name", None) or "custom"
