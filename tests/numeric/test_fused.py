"""The fused kernels (numeric.fused, numeric._kernels) compute what the NumPy reference path computes.

Each kernel is compiled once per session (numba caches it on disk as well): the
tests over every map share one small grid per theory. Equality is to 1e-12
absolute in rho (rounding of a few operations whose order differs: pow and
reciprocal, Gauss-Hermite sums), and exact in the entropy-collapse flags.
"""

import itertools
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import numeric
from derive.parameters import ARCHITECTURES, NAMED_ACTIVATIONS
from numeric import codegen, fused
from numeric.profile import prepare

TOL = 1e-12
#: A grid that visits spread and condensed attention, weak and strong skips, both ends of rho0.
BETAS = np.array([0.3, 1.0, 1.6, 2.5])
ALPHAS = np.array([0.0, 0.4, 1.3])
RHO0S = np.array([0.0, 0.6])


def _grid_values(arch, activation, T, depth):
    """(values, rho0, depth, T, columns) of a 3-D grid (rho0 x alpha_sa x beta), checked as the library does."""
    _, _, values, depth, T, _ = prepare(arch, depth, beta=BETAS[None, None, :], T=T, rho0=0.0,
                                        activation=activation,
                                        params={"alpha_sa": np.maximum(ALPHAS, 1e-12)[None, :, None],
                                                "sigma_w2": 1.5, "sigma_b2": 0.1})
    columns = None
    if T is not None:
        from numeric.columns import column_moments
        columns = column_moments(T, BETAS)
    return values, RHO0S[:, None, None], depth, T, columns


def _both(arch, activation, T, depth=6, attention="all", **extra):
    values, rho0, depth, T, columns = _grid_values(arch, activation, T, depth)
    values.update(extra)
    kw = dict(depths=range(depth + 1), attention=attention, threshold=0.5, columns=columns)
    return (fused.evaluate(arch, activation, T, values, rho0, depth, **kw),
            fused.evaluate_numpy(arch, activation, T, values, rho0, depth, **kw))


@pytest.mark.parametrize("arch, activation, T", [
    (arch, activation, T) for arch, activation in itertools.product(ARCHITECTURES, NAMED_ACTIVATIONS)
    for T in (None, 64)])
def test_every_generated_map_equals_the_numpy_path(arch, activation, T):
    """Every architecture x activation x theory: rho after every block and the condensation flags."""
    got, want = _both(arch, activation, T, depth=4 if activation == "tanh" else 6)
    assert got.rho.shape == want.rho.shape == (5 if activation == "tanh" else 7, RHO0S.size, ALPHAS.size, BETAS.size)
    np.testing.assert_allclose(got.rho, want.rho, rtol=0, atol=TOL)
    np.testing.assert_array_equal(got.condensed, want.condensed)
    assert 0 < want.condensed[-1].sum() < want.condensed[-1].size       # the grid has both kinds of points


def _custom_specs():
    from derive.layers import MLP, Activation, LayerNorm, Linear, Residual, SelfAttention, Sequence
    second = Sequence(Linear("sigma_w2", "sigma_b2"), Activation("gelu"), Linear("sigma_w3", None))
    return {
        # a parameter beyond the contract's (the second MLP layer's variance)
        "extra-parameter": Sequence(Residual(SelfAttention(), alpha="alpha_sa"), LayerNorm(),
                                    Residual(second, alpha="alpha_mlp"), LayerNorm(), name="custom-extra"),
        # no LayerNorm before attention: q != 1 there, the finite-T kernel's second pass (2-D tables)
        "unnormalised-attention": Sequence(Residual(SelfAttention(), alpha="alpha_sa"),
                                           Residual(Sequence(LayerNorm(), MLP("erf")), alpha="alpha_mlp"),
                                           name="custom-unnormalised"),
    }


@pytest.mark.parametrize("T", [None, 64])
@pytest.mark.parametrize("name", ["extra-parameter", "unnormalised-attention"])
def test_custom_specs_compiled_at_run_time_equal_the_numpy_path(name, T, tmp_path, monkeypatch):
    monkeypatch.setenv(fused.KERNEL_DIR_ENV, str(tmp_path))
    spec = _custom_specs()[name]
    extra = {"sigma_w3": 0.8} if name == "extra-parameter" else {}
    _, _, values, depth, T, _ = prepare(spec, 5, beta=BETAS[None, None, :], T=T, rho0=0.0, activation="relu",
                                        params={"alpha_sa": np.maximum(ALPHAS, 1e-12)[None, :, None], **extra})
    kw = dict(depths=range(depth + 1), attention="all")
    got = fused.evaluate(spec, "relu", T, values, RHO0S[:, None, None], depth, **kw)
    want = fused.evaluate_numpy(spec, "relu", T, values, RHO0S[:, None, None], depth, **kw)
    np.testing.assert_allclose(got.rho, want.rho, rtol=0, atol=TOL)
    np.testing.assert_array_equal(got.condensed, want.condensed)
    assert list(tmp_path.glob("sigprop_kernel_*.py"))        # the kernel was written where it was asked to be


def test_diagram_and_critical_alpha_equal_the_numpy_path():
    kw = dict(betas=np.linspace(0.1, 3.0, 40), alphas=np.linspace(0.0, 3.0, 30), sigma_w2=0.24, sigma_v2=0.24,
              sigma_b2=4e-4)
    got = numeric.trainability_diagram("post-ln", 30, backend="fused", **kw)
    want = numeric.trainability_diagram("post-ln", 30, backend="numpy", **kw)
    np.testing.assert_allclose(got.rho, want.rho, rtol=0, atol=TOL)
    np.testing.assert_array_equal(got.phase, want.phase)
    assert np.isfinite(want.critical_alpha).any()
    np.testing.assert_allclose(got.critical_alpha, want.critical_alpha, rtol=1e-9)


def test_finite_T_diagram_with_the_column_tables_equals_the_numpy_path():
    kw = dict(betas=np.linspace(0.1, 3.0, 24), alphas=np.linspace(0.0, 2.0, 12), T=64, criterion="any")
    got = numeric.trainability_diagram("pre-ln", 12, backend="fused", **kw)
    want = numeric.trainability_diagram("pre-ln", 12, backend="numpy", **kw)
    np.testing.assert_allclose(got.rho, want.rho, rtol=0, atol=TOL)
    np.testing.assert_array_equal(got.phase, want.phase)
    np.testing.assert_allclose(got.critical_alpha, want.critical_alpha, rtol=1e-9)


@pytest.mark.parametrize("T", [None, 64])
def test_the_parallel_kernel_runs_every_row_once(T, monkeypatch):
    """Rows of the parallel kernel are dealt to the threads round-robin: every row once, the numbers of the NumPy
    path. SERIAL_UPDATES = 0 sends this small grid to it: 37 x 33 points, four full rows and a partial one."""
    kw = dict(betas=np.linspace(0.1, 3.0, 37), alphas=np.linspace(0.0, 3.0, 33), T=T, criterion="any")
    want = numeric.trainability_diagram("pre-ln", 8, backend="numpy", **kw)
    monkeypatch.setattr(fused, "SERIAL_UPDATES", 0)
    got = numeric.trainability_diagram("pre-ln", 8, backend="fused", **kw)
    np.testing.assert_allclose(got.rho, want.rho, rtol=0, atol=TOL)
    np.testing.assert_array_equal(got.phase, want.phase)


def test_points_outside_the_tables_go_to_the_numpy_path():
    """At T = 64, beta = 30 puts the pair moment beyond the 2-D table (b > B_PAIR_MAX): the kernel flags
    those points and the NumPy path computes them (a direct quadrature); the grid still matches."""
    from numeric.tables import B_PAIR_MAX
    beta = np.array([1.0, 30.0])
    assert 30.0 * np.sqrt(np.log(64)) > B_PAIR_MAX
    calls = []
    original = fused._redo
    try:
        fused._redo = lambda *a, **k: calls.append(a[5].size) or original(*a, **k)
        got = numeric.cosine_profile("post-ln", 4, beta=beta, T=64, alpha_sa=0.5)
    finally:
        fused._redo = original
    want = numeric.cosine_profile("post-ln", 4, beta=beta, T=64, alpha_sa=0.5, backend="numpy")
    assert calls == [1]
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def test_a_vanishing_signal_raises_as_on_the_numpy_path():
    """gain-post-LN at T = oo with alpha_sa -> 0: the attention output is exactly zero, the LayerNorm 0/0."""
    with pytest.raises(ValueError, match="vanishes") as numpy_error:
        numeric.cosine_profile("gain-post-ln", 3, beta=0.5, alpha_sa=0.0, backend="numpy")
    with pytest.raises(ValueError, match="vanishes") as fused_error:
        numeric.cosine_profile("gain-post-ln", 3, beta=0.5, alpha_sa=0.0, backend="fused")
    assert str(fused_error.value) == str(numpy_error.value)


def test_backend_selection(monkeypatch):
    monkeypatch.delenv(fused.ENV, raising=False)
    assert fused.backend() == "fused" and fused.backend("numpy") == "numpy"
    monkeypatch.setenv(fused.ENV, "numpy")
    assert fused.backend() == "numpy" and fused.backend("fused") == "fused"

    def refuse(*args, **kwargs):
        raise AssertionError("the NumPy path ran a fused kernel")
    monkeypatch.setattr(fused, "kernel_for", refuse)
    numeric.cosine_profile("post-ln", 3, beta=1.0)                      # $SIGPROP_BACKEND=numpy: no kernel
    with pytest.raises(AssertionError):
        numeric.cosine_profile("post-ln", 3, beta=1.0, backend="fused")


@pytest.mark.parametrize("value, source", [("gpu", "backend"), ("", "backend")])
def test_bad_backend_names_it(value, source, monkeypatch):
    with pytest.raises(ValueError, match=source):
        numeric.cosine_profile("post-ln", 3, beta=1.0, backend=value)
    monkeypatch.setenv(fused.ENV, "gpu")
    with pytest.raises(ValueError, match=fused.ENV):
        numeric.cosine_profile("post-ln", 3, beta=1.0)


@pytest.mark.parametrize("shapes", [
    [(), (5,), (3, 1), (3, 5), (1, 5)],
    [(2, 1, 4), (1, 3, 1), (2, 3, 4), (3, 4), (), (2, 1, 1)],
    [(4, 1), (1, 1)],
])
def test_pack_stores_axes_once_and_reads_back_the_broadcast(shapes):
    rng = np.random.default_rng(1)
    arrays = [rng.normal(size=s) for s in shapes]
    shape = np.broadcast_shapes(*shapes)
    values, offsets, lengths, strides = fused.pack(arrays, shape)
    index = np.arange(int(np.prod(shape)))
    for k, a in enumerate(arrays):
        np.testing.assert_array_equal(fused._at((values, offsets, lengths, strides), k, index),
                                      np.broadcast_to(a, shape).ravel())
    axis_like = [k for k, s in enumerate(shapes) if sum(n > 1 for n in s) == 1]
    assert all(lengths[k] == max(shapes[k]) for k in axis_like)        # an axis is stored once, not per point


def test_committed_kernels_are_what_codegen_generates_now():
    """numeric/_kernels.py is generated from derive (same expressions as _generated.py) and records the digest
    of numeric/_jit.py, so that an edited helper changes the module (and numba's cache key) only by regenerating."""
    header, code = codegen.split_module(codegen.KERNELS.read_text())
    assert codegen.code_digest(code) in header, "numeric/_kernels.py was edited by hand"
    changed = codegen.changed_definitions(code, codegen.kernels_code_source())
    assert not changed, f"{', '.join(changed)} changed: run `python -m numeric.codegen`"


def test_the_kernel_body_is_the_numpy_maps_body():
    """One set of steps, two printers: the post-LN relu kernel holds the generated map's lines as scalar code."""
    from numeric import _generated, _kernels
    import inspect
    numpy_lines = [line.strip() for line in inspect.getsource(_generated.post_ln__relu__asymptotic).splitlines()
                   if line.strip().startswith(("q_", "p_"))]
    kernel = inspect.getsource(_kernels.post_ln__relu__asymptotic__row.py_func)
    assert numpy_lines and all(line in kernel for line in numpy_lines if "numpy" not in line)


def test_uncacheable_kernels_compile_without_the_cache(monkeypatch):
    """Where numba finds no writable cache directory it raises at decoration; the kernels then compile in
    memory, with a warning, instead of failing."""
    import numba
    from numeric import _jit

    real = numba.njit

    def njit(*args, cache=False, **kwargs):
        if cache:
            raise RuntimeError("cannot cache function 'f': no locator available for file '/read-only/f.py'")
        return real(*args, **kwargs)
    monkeypatch.setattr(numba, "njit", njit)

    def double(x):
        return 2.0 * x
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = _jit.jit(double)
    assert compiled(1.5) == 3.0
    assert any("NUMBA_CACHE_DIR" in str(w.message) for w in caught)


def test_kernel_dir_falls_back_when_the_requested_one_cannot_be_written(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    monkeypatch.setenv(fused.KERNEL_DIR_ENV, str(blocked / "kernels"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert fused.kernel_dir() == tmp_path / "cache" / "sigprop" / "kernels"


def test_the_kernels_asin_is_libms_to_a_few_ulp():
    """The kernels' branch-free asin (numeric._jit._asin, fdlibm's rational approximation) against math.asin,
    on a dense grid of [-1, 1], at the switch |x| = 1/2 and the ends; clipped outside, NaN through."""
    import math

    import numba
    from numeric import _jit

    f = numba.njit(lambda x: _jit._asin(x))
    xs = np.concatenate([np.linspace(-1.0, 1.0, 20001), np.random.default_rng(0).uniform(-1, 1, 20000),
                         [0.5, -0.5, np.nextafter(0.5, 0.0), 1e-300, 1.0, -1.0, 0.975, 1 - 1e-16]])
    ulps = [abs(f(x) - math.asin(x)) / math.ulp(math.asin(x)) for x in xs if x != 0.0]
    assert max(ulps) <= 3
    assert f(1.5) == math.asin(1.0) and f(-7.0) == -math.asin(1.0) and math.isnan(f(math.nan))


def test_small_asymptotic_diagrams_skip_loading_numba(monkeypatch):
    """An "auto" diagram too small to repay numba's import takes the NumPy path, only while numba is not loaded;
    an explicit backend, a finite T or a large grid keeps the fused kernel."""
    monkeypatch.delenv(fused.ENV, raising=False)
    monkeypatch.delitem(sys.modules, "numba", raising=False)
    assert fused.for_work(None, 128 * 128 * 60, True) == "numpy"
    assert fused.for_work(None, fused.SMALL_UPDATES + 1, True) == "fused"
    assert fused.for_work(None, 1000, False) == "fused"
    assert fused.for_work("fused", 1000, True) == "fused"
    monkeypatch.setitem(sys.modules, "numba", object())
    assert fused.for_work(None, 1000, True) == "fused"


def test_readme_diagram_in_a_fresh_process_does_not_import_numba():
    code = ("import sys, numpy as np, numeric; d = numeric.trainability_diagram('post-ln', 60, "
            "betas=np.linspace(0.05, 3.0, 32), alphas=np.linspace(0.0, 3.0, 32), sigma_w2=0.24, sigma_v2=0.24, "
            "sigma_b2=0.0004); print('numba' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != fused.ENV}
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True).stdout.strip() == "False"
