"""sigprop bench: the plain-loop baseline computes what the library computes, and the report's units agree."""

import os

import numpy as np
import pytest

import numeric
from derive.parameters import ARCHITECTURES
from numeric import bench


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_plain_math_loop_computes_the_generated_maps(arch):
    """The baseline is written by hand from the paper (math module, scalars); the library's maps are derived by
    SymPy and generated. They agree, so the ratio compares the same work (and the derivation is checked by an
    independent transcription)."""
    betas, alphas = [0.3, 1.2, 2.0, 3.0], [0.05, 0.6, 1.5]
    params = dict(alpha_mlp=0.8, sigma_v2=0.7, sigma_w2=1.3, sigma_b2=0.05)
    for rho0 in (0.0, 0.4):
        want = numeric.cosine_profile(arch, 12, beta=np.array(betas)[None, :], alpha_sa=np.array(alphas)[:, None],
                                      rho0=rho0, **params)[-1]
        got = [[bench.naive_rho(arch, 12, b, a, rho0=rho0, **params) for b in betas] for a in alphas]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_report_without_the_slow_parts():
    result = bench.run(depth=4, grid=24, naive_points=10, finite_T=32, latency=False, memory=False, sweep=False)
    updates = 24 * 24 * 4
    assert result["compiled_updates_per_s"] == pytest.approx(updates / result["compiled_seconds"], rel=1e-12)
    assert result["numpy_updates_per_s"] == pytest.approx(updates / result["numpy_seconds"], rel=1e-12)
    assert result["naive_updates_per_s"] == pytest.approx(10 * 4 / result["naive_seconds"], rel=1e-12)
    assert result["ratio"] == pytest.approx(result["compiled_updates_per_s"] / result["naive_updates_per_s"])
    assert result["finite_T_cost_ratio"] == pytest.approx(result["finite_T_seconds"]
                                                          / result["finite_T_asymptotic_seconds"])
    assert result["finite_T_updates_per_s"] == pytest.approx(updates / result["finite_T_seconds"], rel=1e-12)
    assert result["machine"]["cpus"] >= 1 and result["machine"]["numba"]
    assert not {"first_call_cold_s", "memory_diagram_peak_mb", "sweep_updates_per_s"} & set(result)


def test_first_call_latency_runs_two_processes_on_one_cache(monkeypatch):
    """The cold run fills an empty numba cache that the cached run then reads (a small command here)."""
    monkeypatch.setattr(bench, "MAIN_COMMAND", "numeric.cosine_profile('post-ln', 3, beta=1.0)")
    out = bench.first_call_latency()
    assert set(out) == {f"{k}_{label}{s}" for label in ("cold", "cached", "auto")
                        for k, s in (("first_call", "_s"), ("first_call", "_process_s"), ("import_numeric", "_s"))}
    assert all(v > 0 for v in out.values())
    assert out["first_call_cold_process_s"] > out["first_call_cold_s"]


def test_width_bench_builds_its_tables_in_a_scratch_cache_and_restores_the_users(tmp_path, monkeypatch):
    """bench.width times the table build in an empty scratch cache and sets the user's $SIGPROP_WIDTH_CACHE back
    afterwards; its ratio is of the two diagrams it reports."""
    from numeric import width_tables as wt

    monkeypatch.setenv(wt.CACHE_ENV, str(tmp_path))
    result = bench.width(depth=2, grid=4, T=32, d=16, d_head=8, repeats=1, causal=False)
    assert os.environ[wt.CACHE_ENV] == str(tmp_path)
    assert result["width_cost_ratio"] == pytest.approx(result["width_diagram_seconds"]
                                                       / result["width_infinite_diagram_seconds"])
    for cached in (wt.width_tables, wt.row_base, wt.pair_base):
        cached.cache_clear()


def test_normalized_width_bench_times_three_widths_each_with_its_columns_on_the_shipped_table(tmp_path, monkeypatch):
    """bench._normalized_width times the pre-LN encoder diagram with normalized tokens, with Gaussian ones and at
    infinite width (each repeats + 1 times, at the shipped table's (d, d_head) = (64, 32), T = 256), reading the
    shipped table from an empty cache without building one; every diagram builds its per-beta columns (the
    normalized moments' fixed cost is timed, not left in a cache from the round before)."""
    from numeric import causal_width as cw
    from numeric import columns, diagram
    from numeric import width_tables as wt

    monkeypatch.setenv(wt.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(cw.CausalTables, "_node_values", lambda self: pytest.fail("built: the shipped table unread"))
    cw.causal_tables.cache_clear()
    real, real_columns, calls, built = diagram.trainability_diagram, columns.ColumnMoments, [], []

    def recorded(arch, depth, **kw):
        calls.append((arch, kw["inputs"], kw["d"], kw["d_head"], kw["T"]))
        return real(arch, depth, **kw)

    def counted(T, betas, width=None):
        built.append(width)
        return real_columns(T, betas, width)

    monkeypatch.setattr(diagram, "trainability_diagram", recorded)
    monkeypatch.setattr(columns, "ColumnMoments", counted)
    try:
        result = bench._normalized_width(2, sizes=((4, 2),))
    finally:
        cw.causal_tables.cache_clear()
    kinds = [("normalized", 64, 32), ("gaussian", 64, 32), ("gaussian", None, None)]
    assert sorted(calls, key=str) == sorted([("pre-ln", *kind, 256) for kind in kinds] * 3, key=str)
    assert sorted(built, key=str) == sorted([(64, 32, "normalized"), (64, 32), None] * 3, key=str)
    (run,) = result["normalized_width_runs"]
    assert (run["grid"], run["depth"]) == ([4, 4], 2)
    assert all(0 < run[key] for key in ("normalized_seconds", "gaussian_seconds", "infinite_seconds"))
