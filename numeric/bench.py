"""``sigprop bench``: throughput of the compiled maps against a plain Python loop, in one run.

Both sides evaluate the *same* generated block map (:mod:`numeric._generated`)
with the same moment functions: the compiled side on whole chunks of the
(beta, alpha_sa) grid at once (what :func:`numeric.trainability_diagram`
does), the naive side one grid point at a time in a Python loop with Python
floats. A "block update" is one application of the block map to one point.
"""

from __future__ import annotations

import platform
import time

import numpy as np

from .columns import clear_cache
from .diagram import trainability_diagram
from .maps import block_function, moment_functions
from .profile import DEFAULTS


def _grid(n_beta, n_alpha):
    return np.linspace(0.05, 3.0, n_beta), np.linspace(0.0, 4.0, n_alpha)


def compiled_throughput(arch, depth, n_beta, n_alpha, T=None, activation="relu", repeats=1):
    """Block updates per second of a whole trainability diagram (best of ``repeats``)."""
    betas, alphas = _grid(n_beta, n_alpha)
    best = np.inf
    for _ in range(repeats):
        clear_cache()                       # a finite-T diagram builds its column tables: part of its cost
        start = time.perf_counter()
        trainability_diagram(arch, depth, betas=betas, alphas=alphas, T=T, activation=activation)
        best = min(best, time.perf_counter() - start)
    return n_beta * n_alpha * depth / best, best


def naive_throughput(arch, depth, n_points, T=None, activation="relu"):
    """Block updates per second of a Python loop over points, one block map call per point and layer."""
    block = block_function(arch, activation, T)
    Y2, Yp = moment_functions(T)
    T_value = float("inf") if T is None else float(T)
    rng = np.random.default_rng(0)
    betas = rng.uniform(0.05, 3.0, n_points).tolist()
    alphas = rng.uniform(0.0, 4.0, n_points).tolist()
    d = DEFAULTS
    start = time.perf_counter()
    with np.errstate(all="ignore"):
        for beta, alpha in zip(betas, alphas):
            q, p = 1.0, 0.0
            for _ in range(depth):
                q, p, _, _ = block(q, p, beta, alpha, d["alpha_mlp"], d["sigma_v2"], d["sigma_w2"],
                                   d["sigma_b2"], T_value, Y2, Yp)
                q, p = float(q), min(max(float(p), -float(q)), float(q))
    elapsed = time.perf_counter() - start
    return n_points * depth / elapsed, elapsed


def finite_t_cost(arch, depth, grid, T, activation, repeats):
    """A finite-T diagram against the asymptotic one on the same grid.

    The 2-D tables for T (shared by every diagram at that T) are built first and
    timed apart; the per-diagram column tables (:mod:`numeric.columns`) are
    inside the timed diagram.
    """
    start = time.perf_counter()
    trainability_diagram(arch, depth, betas=[0.5, 1.0], alphas=[1.0], T=T, activation=activation)
    tables = time.perf_counter() - start
    finite, _ = compiled_throughput(arch, depth, grid, grid, T, activation, repeats)
    asymptotic, _ = compiled_throughput(arch, depth, grid, grid, None, activation, repeats)
    return {"finite_T": T, "finite_T_updates_per_s": finite, "finite_T_table_seconds": tables,
            "finite_T_cost_ratio": asymptotic / finite}


def run(arch="post-ln", depth=60, grid=512, naive_points=300, T=None, activation="relu", repeats=1,
        finite_T=512) -> dict:
    """Measure both sides; the result is what ``sigprop bench --json`` prints.

    With ``finite_T`` (an integer, or None to skip) it also reports what a
    finite-T diagram costs relative to the asymptotic one on the same grid.
    """
    compiled, t_compiled = compiled_throughput(arch, depth, grid, grid, T, activation, repeats)
    naive, t_naive = naive_throughput(arch, depth, naive_points, T, activation)
    extra = finite_t_cost(arch, depth, grid, finite_T, activation, repeats) if finite_T else {}
    return {
        "arch": arch, "depth": depth, "grid": [grid, grid], "T": T, "activation": activation,
        "compiled_updates_per_s": compiled, "compiled_seconds": t_compiled,
        "naive_updates_per_s": naive, "naive_seconds": t_naive, "naive_points": naive_points,
        "ratio": compiled / naive, **extra,
        "machine": {"python": platform.python_version(), "numpy": np.__version__,
                    "processor": platform.machine(), "cpus": _cpus()},
    }


def _cpus():
    import os
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
