"""``sigprop bench``: the fused kernels, the NumPy path and a plain Python loop, measured in one run.

A "block update" is one application of a block map to one grid point. Three
ways to do the same work are timed in the same process:

- **fused** — :func:`numeric.trainability_diagram` on its default path, the
  compiled kernels of :mod:`numeric.fused` (a whole diagram: the grid and the
  critical-alpha search on top of it);
- **numpy** — the same diagram on the vectorised NumPy reference path
  (``backend="numpy"``);
- **naive** — what a competent person writes without the tool: Algorithm 1
  (and its variants) as a plain Python loop over grid points and blocks with
  the ``math`` module, scalars only (:func:`naive_block`). It is the baseline
  of ``ratio``. It covers the asymptotic theory with relu (the closed forms
  one writes down from the paper); for another activation or a finite T the
  naive loop still runs that workload, and the JSON says so
  (``naive_workload``).

Also reported: the finite-T cost (a T = 512 diagram against the asymptotic one,
both fused and timed alternately, best of at least three each, so that both
see the same load; the asymptotic side is then the **fused** time above; the
2-D tables of T, shared by every diagram at that T, are built first and timed
apart), the first-call latency of the README's main command in fresh processes
with an empty numba cache (cold: the JIT compiles) and with the cache that run
left (cached), the peak memory of a 2048 x 2048 x 60 diagram, and the
throughput of a 4-D :func:`numeric.sweep`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

from .profile import DEFAULTS

#: The README's main command (sigprop diagram --arch post-ln --depth 60 --sigma_w2 0.24 --sigma_v2 0.24
#: --sigma_b2 0.0004 --alphas 0:3:128), as a call.
MAIN_COMMAND = ("numeric.trainability_diagram('post-ln', 60, betas=np.linspace(0.05, 3.0, 128), "
                "alphas=np.linspace(0.0, 3.0, 128), sigma_w2=0.24, sigma_v2=0.24, sigma_b2=0.0004)")


def _grid(n_beta, n_alpha):
    return np.linspace(0.05, 3.0, n_beta), np.linspace(0.0, 4.0, n_alpha)


def diagram_throughput(arch, depth, n_beta, n_alpha, T=None, activation="relu", repeats=1, backend="fused"):
    """Block updates per second of a whole trainability diagram (best of ``repeats``; compiled beforehand)."""
    from .columns import clear_cache
    from .diagram import trainability_diagram

    betas, alphas = _grid(n_beta, n_alpha)
    trainability_diagram(arch, depth, betas=betas, alphas=alphas, T=T, activation=activation,
                         backend=backend)              # once untimed: every kernel the timed runs use is compiled
    best = math.inf
    for _ in range(repeats):
        clear_cache()                       # a finite-T diagram builds its column tables: part of its cost
        start = time.perf_counter()
        trainability_diagram(arch, depth, betas=betas, alphas=alphas, T=T, activation=activation, backend=backend)
        best = min(best, time.perf_counter() - start)
    return n_beta * n_alpha * depth / best, best


# --- the baseline: a plain Python loop with the math module ----------------------------------

def naive_block(arch, q, p, beta, alpha_sa, alpha_mlp, sigma_v2, sigma_w2, sigma_b2):
    """One block of ``arch`` (relu MLP, T -> oo) on Python floats, as written from the paper.

    Attention at T -> oo (Result 1): Y2 = max(0, 1 - beta_c/beta), beta_c = sqrt(2/(q(q - p))), so a
    head maps (q, p) to sigma_v2 (p + Y2 (q - p), p); gain control removes the mean, leaving
    (sigma_v2 Y2 (q - p), 0). LayerNorm maps (q, p) to (1, p/q). The relu MLP is the arc-cosine kernel
    E relu(u) relu(v) = q (sqrt(1 - c^2) + (pi - acos c) c)/(2 pi), c = p/q, between two linear layers.
    """
    gain = arch.startswith("gain-")
    pre = arch.endswith("pre-ln")
    if pre:                                              # LayerNorm before attention
        qa, pa = 1.0, p / q
    else:
        qa, pa = q, p
    x = beta * beta * qa * (qa - pa)
    y2 = 1.0 - math.sqrt(2.0 / x) if x > 2.0 else 0.0
    if gain:
        sq, sp = sigma_v2 * y2 * (qa - pa), 0.0
    else:
        sq, sp = sigma_v2 * (pa + y2 * (qa - pa)), sigma_v2 * pa
    a2 = alpha_sa * alpha_sa
    q, p = a2 * q + sq, a2 * p + sp                     # residual around attention
    r = p / q                                           # LayerNorm
    if not pre:
        q, p = 1.0, r
    hq, hp = sigma_w2 + sigma_b2, sigma_w2 * r + sigma_b2
    c = max(-1.0, min(1.0, hp / hq))
    kq = hq / 2.0
    kp = hq * (math.sqrt(max(0.0, 1.0 - c * c)) + (math.pi - math.acos(c)) * c) / (2.0 * math.pi)
    m2 = alpha_mlp * alpha_mlp
    q, p = m2 * q + sigma_w2 * kq + sigma_b2, m2 * p + sigma_w2 * kp + sigma_b2
    if not pre:                                          # LayerNorm after the MLP
        q, p = 1.0, p / q
    return q, p


def naive_rho(arch, depth, beta, alpha_sa, alpha_mlp=1.0, sigma_v2=1.0, sigma_w2=2.0, sigma_b2=0.0, rho0=0.0):
    """rho after ``depth`` blocks of :func:`naive_block` from q = 1, p = rho0."""
    q, p = 1.0, rho0
    for _ in range(depth):
        q, p = naive_block(arch, q, p, beta, alpha_sa, alpha_mlp, sigma_v2, sigma_w2, sigma_b2)
    return p / q


def naive_throughput(arch, depth, n_points):
    """Block updates per second of the plain loop over ``n_points`` random grid points (relu, T -> oo)."""
    rng = np.random.default_rng(0)
    betas = rng.uniform(0.05, 3.0, n_points).tolist()
    alphas = rng.uniform(1e-3, 4.0, n_points).tolist()
    d = DEFAULTS
    start = time.perf_counter()
    for beta, alpha in zip(betas, alphas):
        naive_rho(arch, depth, beta, alpha, d["alpha_mlp"], d["sigma_v2"], d["sigma_w2"], d["sigma_b2"])
    elapsed = time.perf_counter() - start
    return n_points * depth / elapsed, elapsed


# --- the rest of the report -----------------------------------------------------------------

def finite_t_cost(arch, depth, grid, T, activation, repeats) -> dict:
    """A fused finite-T diagram against the fused asymptotic one on the same grid, timed alternately (best of
    at least three of each, so that both see the same load on a shared machine); the finite-T run includes
    building its column tables (:mod:`numeric.columns`, per grid of betas), while the 2-D tables of T, shared
    by every diagram at that T, are built first and timed apart."""
    from .columns import clear_cache
    from .diagram import trainability_diagram

    start = time.perf_counter()
    trainability_diagram(arch, depth, betas=[0.5, 1.0], alphas=[1.0], T=T, activation=activation)
    tables = time.perf_counter() - start
    betas, alphas = _grid(grid, grid)
    best = {None: math.inf, T: math.inf}
    for k in range(max(repeats, 3) + 1):          # the first round untimed: every kernel compiled or loaded
        for theory in best:
            clear_cache()
            start = time.perf_counter()
            trainability_diagram(arch, depth, betas=betas, alphas=alphas, T=theory, activation=activation)
            if k:
                best[theory] = min(best[theory], time.perf_counter() - start)
    return {"finite_T": T, "finite_T_updates_per_s": grid * grid * depth / best[T], "finite_T_seconds": best[T],
            "finite_T_asymptotic_seconds": best[None], "finite_T_table_seconds": tables,
            "finite_T_cost_ratio": best[T] / best[None]}


def first_call_latency() -> dict:
    """The README's main command in fresh processes sharing an empty numba cache, on the fused kernel
    (``SIGPROP_BACKEND=fused``): the first compiles (cold), the second loads what the first cached; then as a
    user runs it ("auto": a diagram this small takes the NumPy path, :data:`numeric.fused.SMALL_UPDATES`).
    Each reports the call's own time after ``import numeric`` and its whole process."""
    code = ("import time; t0 = time.perf_counter(); import numpy as np, numeric; t1 = time.perf_counter(); "
            f"{MAIN_COMMAND}; t2 = time.perf_counter(); print(t1 - t0, t2 - t1)")
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        for label in ("cold", "cached", "auto"):
            env = {**os.environ, "NUMBA_CACHE_DIR": cache, "SIGPROP_BACKEND": "auto" if label == "auto" else "fused"}
            start = time.perf_counter()
            run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
            total = time.perf_counter() - start
            imported, call = (float(v) for v in run.stdout.split())
            out[f"first_call_{label}_s"] = call
            out[f"first_call_{label}_process_s"] = total
            out[f"import_numeric_{label}_s"] = imported
    return out


def diagram_memory(n=2048, depth=60) -> dict:
    """Memory of an n x n x ``depth`` fused diagram in a fresh process (its kernel compiled or loaded first):
    the peak of what the diagram allocates (tracemalloc: NumPy's arrays; the kernels' per-row scratch is a
    few kB per thread) and the process's peak resident size (Python, NumPy, numba and LLVM included)."""
    code = ("import resource, tracemalloc, numpy as np, numeric; "
            "numeric.trainability_diagram('post-ln', 2, betas=np.linspace(1, 2, 48), alphas=np.linspace(0, 1, 48)); "
            "tracemalloc.start(); "
            f"numeric.trainability_diagram('post-ln', {depth}, betas=np.linspace(0.05, 3, {n}), "
            f"alphas=np.linspace(0, 4, {n})); "
            "peak = tracemalloc.get_traced_memory()[1]; "
            "print(peak / 2**20, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    env = {k: v for k, v in os.environ.items() if k != "SIGPROP_BACKEND"}
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    allocated, rss = (float(v) for v in run.stdout.split())
    return {"memory_grid": [n, n], "memory_depth": depth, "memory_diagram_peak_mb": allocated,
            "memory_process_peak_rss_mb": rss, "memory_process_s": time.perf_counter() - start}


def sweep_throughput(depth=100) -> dict:
    """A 4-D :func:`numeric.sweep` (beta x alpha_sa x sigma_w2 x sigma_v2, 10^6 points x ``depth`` blocks)."""
    from .sweeps import sweep

    axes = dict(beta=np.linspace(0.1, 3.0, 50), alpha_sa=np.linspace(0.0, 4.0, 50),
                sigma_w2=np.linspace(0.2, 2.0, 20), sigma_v2=np.linspace(0.2, 2.0, 20))
    sweep("post-ln", 2, **{k: v[:8] for k, v in axes.items()})           # compile (or load) first
    start = time.perf_counter()
    sweep("post-ln", depth, **axes)
    seconds = time.perf_counter() - start
    updates = math.prod(v.size for v in axes.values()) * depth
    return {"sweep_axes": {k: int(v.size) for k, v in axes.items()}, "sweep_updates": updates,
            "sweep_seconds": seconds, "sweep_updates_per_s": updates / seconds}


def run(arch="post-ln", depth=60, grid=512, naive_points=300, T=None, activation="relu", repeats=1,
        finite_T=512, latency=True, memory=True, sweep=True, numpy=True) -> dict:
    """Measure everything in one run; the result is what ``sigprop bench --json`` prints. With a finite-T
    comparison and an asymptotic main diagram, the main diagram's time is the asymptotic side of
    :func:`finite_t_cost` (so that the cost ratio divides two times taken alternately)."""
    cost = {}
    if finite_T:
        cost = finite_t_cost(arch, depth, grid, finite_T, activation, repeats)
    if finite_T and T is None:
        t_fused = cost["finite_T_asymptotic_seconds"]
        fused = grid * grid * depth / t_fused
    else:
        fused, t_fused = diagram_throughput(arch, depth, grid, grid, T, activation, repeats)
    naive, t_naive = naive_throughput(arch, depth, naive_points)
    out = {
        "arch": arch, "depth": depth, "grid": [grid, grid], "T": T, "activation": activation,
        "compiled_updates_per_s": fused, "compiled_seconds": t_fused,
        "naive_updates_per_s": naive, "naive_seconds": t_naive, "naive_points": naive_points,
        "naive_workload": {"arch": arch, "activation": "relu", "T": None},
        "ratio": fused / naive,
    }
    if numpy:
        rate, seconds = diagram_throughput(arch, depth, grid, grid, T, activation, repeats, backend="numpy")
        out.update(numpy_updates_per_s=rate, numpy_seconds=seconds, numpy_ratio=rate / naive,
                   fused_over_numpy=fused / rate)
    out.update(cost)
    if latency:
        out.update(first_call_latency())
    if memory:
        out.update(diagram_memory())
    if sweep:
        out.update(sweep_throughput())
    out["machine"] = {"python": platform.python_version(), "numpy": np.__version__, "numba": _numba_version(),
                      "processor": platform.machine(), "cpus": _cpus(), "load_average": _load()}
    return out


def causal(profile_T=1024, profile_depth=60, diagram_T=256, diagram_depth=60, grid=128, compare_grid=4,
           groups=16) -> dict:
    """The position-resolved theory of a causal stack (issue 15's speed targets), with every position carrying
    the state ("full") and with ``groups`` position groups (:mod:`numeric.position_groups`, "grouped"):

    - one pre-LN profile at ``profile_T`` positions and ``profile_depth`` blocks (target: 2 s), both ways, and
      the largest difference of their rho (all pairs and late positions) over the blocks;
    - the ``grid``-square causal post-LN diagram at ``diagram_T`` and ``diagram_depth`` blocks with position
      groups, measured whole with its two critical-alpha searches (target: 60 s for 128 x 128 x 60);
    - a ``compare_grid``-square diagram both ways: whether the phases agree and the largest difference of the
      final rho; and the full theory's cost per point and block (a batch of 16 profiles), what its 128 x 128
      grid would cost.

    The kernels are compiled by a small warm-up run first."""
    from .causal import cosine_profile
    from .diagram import trainability_diagram

    cosine_profile("pre-ln", 2, beta=1.0, T=32)
    cosine_profile("pre-ln", 2, beta=1.0, T=32, groups=8)
    out = {"causal_profile_T": profile_T, "causal_profile_depth": profile_depth, "causal_diagram_T": diagram_T,
           "causal_diagram_depth": diagram_depth, "groups": groups}
    rho = {}
    for name, kw in (("full", {}), ("grouped", {"groups": groups})):
        start = time.perf_counter()
        rho[name] = cosine_profile("pre-ln", profile_depth, beta=1.0, T=profile_T, **kw)
        out[f"causal_profile_seconds_{name}"] = time.perf_counter() - start
        rho[name + "_late"] = cosine_profile("pre-ln", profile_depth, beta=1.0, T=profile_T, tokens="late", **kw)
    out["grouped_profile_max_abs_difference"] = float(max(np.abs(rho["grouped"] - rho["full"]).max(),
                                                          np.abs(rho["grouped_late"] - rho["full_late"]).max()))

    def diagram(n, **kw):
        start = time.perf_counter()
        result = trainability_diagram("post-ln", diagram_depth, betas=np.linspace(0.1, 3.0, n),
                                      alphas=np.linspace(0.0, 6.0, n), T=diagram_T, mask="causal", **kw)
        return result, time.perf_counter() - start

    _, seconds = diagram(grid, groups=groups)
    out.update({"causal_diagram_grid": [grid, grid], "causal_diagram_seconds_grouped": seconds})
    (full, seconds_full), (grouped, seconds_grouped) = diagram(compare_grid), diagram(compare_grid, groups=groups)
    B, A = np.meshgrid(np.linspace(0.1, 3.0, 4), np.linspace(0.2, 6.0, 4))
    start = time.perf_counter()
    cosine_profile("post-ln", diagram_depth, beta=B.ravel(), alpha_sa=A.ravel(), T=diagram_T)
    per_point_block = (time.perf_counter() - start) / (B.size * diagram_depth)
    out.update({"causal_compare_grid": [compare_grid, compare_grid],
                "causal_compare_seconds_full": seconds_full, "causal_compare_seconds_grouped": seconds_grouped,
                "causal_seconds_per_point_block_full": per_point_block,
                "causal_diagram_128_grid_seconds_full": per_point_block * 128 ** 2 * diagram_depth,
                "causal_compare_phases_agree": bool(np.array_equal(full.phase, grouped.phase)
                                                    and np.array_equal(full.late["phase"], grouped.late["phase"])),
                "causal_compare_max_abs_rho_difference": float(max(np.abs(full.rho - grouped.rho).max(),
                                                                   np.abs(full.late["rho"] - grouped.late["rho"]).max()))})
    out["machine"] = {"cpus": _cpus(), "load_average": _load()}
    return out


def width(arch="pre-ln", depth=30, grid=128, T=512, d=256, d_head=64, repeats=3, causal=True) -> dict:
    """A finite-width diagram (issue 19's target: <= 1.5 x the infinite-width one) against the infinite-width
    diagram at the same finite T, both with their critical-alpha boundary, on the fused kernels, timed
    alternately (best of ``repeats`` each, after an untimed round). Apart: building the width tables in an
    empty cache (the per-T base, then the per-(T, d, d_head) tables) and reading the latter back from disk, as
    a later process does. ``causal``: also a causal diagram's ratio (:func:`_causal_width`) and an encoder's
    with normalized tokens (:func:`_normalized_width`)."""

    from . import width_tables as wt
    from .columns import clear_cache
    from .diagram import trainability_diagram

    out = {"width_arch": arch, "width_depth": depth, "width_grid": [grid, grid], "width_T": T, "width_d": d,
           "width_d_head": d_head}
    saved = os.environ.get(wt.CACHE_ENV)
    with tempfile.TemporaryDirectory() as folder:
        os.environ[wt.CACHE_ENV] = folder
        try:
            for cached in (wt.width_tables, wt.row_base, wt.pair_base):
                cached.cache_clear()
            start = time.perf_counter()
            wt.pair_base(T)
            wt.row_base(T)
            out["width_base_table_seconds"] = time.perf_counter() - start
            start = time.perf_counter()
            wt.width_tables(T, d, d_head)
            out["width_table_seconds"] = time.perf_counter() - start
            wt.width_tables.cache_clear()
            start = time.perf_counter()
            wt.width_tables(T, d, d_head)
            out["width_table_read_seconds"] = time.perf_counter() - start
        finally:
            if saved is None:
                os.environ.pop(wt.CACHE_ENV, None)
            else:
                os.environ[wt.CACHE_ENV] = saved
    betas, alphas = _grid(grid, grid)
    best = {"finite": math.inf, "infinite": math.inf}
    kwargs = {"finite": {"d": d, "d_head": d_head}, "infinite": {}}
    for k in range(repeats + 1):
        for name in best:
            clear_cache()
            start = time.perf_counter()
            trainability_diagram(arch, depth, betas=betas, alphas=alphas, T=T, **kwargs[name])
            if k:
                best[name] = min(best[name], time.perf_counter() - start)
    out.update({"width_diagram_seconds": best["finite"], "width_infinite_diagram_seconds": best["infinite"],
                "width_cost_ratio": best["finite"] / best["infinite"]})
    if causal:
        out.update(_causal_width(repeats))
        out.update(_normalized_width(repeats))
    out["machine"] = {"cpus": _cpus(), "load_average": _load()}
    return out


def _causal_width(repeats: int, T=256, d=64, d_head=32, groups=16, grid=32, depth=30) -> dict:
    """A causal finite-width diagram (pre-LN, sigma_v2 = 4, position groups) against the infinite-width one,
    timed alternately (best of ``repeats``) once its causal table is on disk (building it is timed apart: the
    first diagram at a new (d, d_head, T) pays it once)."""
    from .causal_width import causal_tables, table_size
    from .diagram import trainability_diagram

    start = time.perf_counter()
    causal_tables(d, d_head, table_size(T))
    out = {"causal_width_T": T, "causal_width_d": d, "causal_width_d_head": d_head, "causal_width_groups": groups,
           "causal_width_grid": [grid, grid], "causal_width_depth": depth,
           "causal_width_table_seconds": time.perf_counter() - start}
    kw = dict(betas=np.linspace(0.1, 3.0, grid), alphas=np.linspace(0.0, 2.0, grid), T=T, mask="causal",
              groups=groups, sigma_v2=4.0)
    best = {"finite": math.inf, "infinite": math.inf}
    width = {"finite": {"d": d, "d_head": d_head}, "infinite": {}}
    for k in range(repeats + 1):
        for name in best:
            start = time.perf_counter()
            trainability_diagram("pre-ln", depth, **kw, **width[name])
            if k:
                best[name] = min(best[name], time.perf_counter() - start)
    out.update({"causal_width_diagram_seconds": best["finite"],
                "causal_infinite_diagram_seconds": best["infinite"],
                "causal_width_cost_ratio": best["finite"] / best["infinite"]})
    return out


def _normalized_width(repeats: int, T=256, d=64, d_head=32, sizes=((128, 30), (256, 60))) -> dict:
    """An encoder diagram of normalized tokens (pre-LN, sigma_v2 = 4; :mod:`numeric.normalized_width`, read from
    per-beta columns by the fused kernels) against the same diagram at infinite width and with Gaussian tokens
    at finite width, each with its critical alpha and its columns built (:func:`numeric.columns.clear_cache`),
    timed alternately (best of ``repeats``) once the normalized table is read (it ships for these sizes), at
    each (grid points per axis, blocks) of ``sizes``: the columns cost the same at every grid, so the ratio
    falls as the grid grows."""
    from .causal_width import causal_tables, table_size
    from .columns import clear_cache
    from .diagram import trainability_diagram

    causal_tables(d, d_head, table_size(T), "normalized")
    widths = {"normalized": {"d": d, "d_head": d_head, "inputs": "normalized"},
              "gaussian": {"d": d, "d_head": d_head, "inputs": "gaussian"},
              "infinite": {"d": None, "d_head": None, "inputs": "gaussian"}}
    runs = []
    for grid, depth in sizes:
        kw = {"betas": np.linspace(0.1, 3.0, grid), "alphas": np.linspace(0.0, 1.5, grid), "T": T, "sigma_v2": 4.0}
        best = dict.fromkeys(widths, math.inf)
        for k in range(repeats + 1):
            for name, width in widths.items():
                clear_cache()
                start = time.perf_counter()
                trainability_diagram("pre-ln", depth, **kw, **width)
                if k:
                    best[name] = min(best[name], time.perf_counter() - start)
        runs.append({"grid": [grid, grid], "depth": depth, "normalized_seconds": best["normalized"],
                     "gaussian_seconds": best["gaussian"], "infinite_seconds": best["infinite"],
                     "cost_ratio": best["normalized"] / best["infinite"]})
    return {"normalized_width_T": T, "normalized_width_d": d, "normalized_width_d_head": d_head,
            "normalized_width_runs": runs}


def _numba_version():
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("numba")
    except PackageNotFoundError:
        return None


def _cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _load():
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


if __name__ == "__main__":
    print(json.dumps(run()))
