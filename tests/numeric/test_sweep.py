"""numeric.sweep: any parameter as a labelled grid axis, checked point by point against the contract functions."""

import numpy as np
import pytest

import numeric
from numeric.diagram import ENTROPY_COLLAPSE, RANK_COLLAPSE, TRAINABLE


@pytest.fixture(scope="module")
def swept():
    """beta x sigma_w2 x rho0 at two depths, alpha_sa fixed (so alpha_c is computed)."""
    return numeric.sweep("pre-ln", [3, 8], beta=[0.5, 1.5, 2.5], sigma_w2=np.array([0.5, 2.0]), rho0=[0.0, 0.3],
                         alpha_sa=0.6, sigma_b2=0.01)


def test_axes_are_labelled_in_the_order_given(swept):
    assert swept.rho.dims == ("depth", "beta", "sigma_w2", "rho0")
    assert swept.alpha_c.dims == ("depth", "beta", "sigma_w2", "rho0")
    np.testing.assert_array_equal(swept.depth, [3, 8])
    np.testing.assert_array_equal(swept.beta, [0.5, 1.5, 2.5])
    assert swept.attrs["alpha_sa"] == 0.6 and swept.attrs["arch"] == "pre-ln"


def test_rho_at_each_depth_is_the_profile_at_that_point(swept):
    for beta in swept.beta.values:
        for w in swept.sigma_w2.values:
            for r in swept.rho0.values:
                profile = numeric.cosine_profile("pre-ln", 8, beta=beta, sigma_w2=w, rho0=r, alpha_sa=0.6,
                                                 sigma_b2=0.01)
                got = swept.rho.sel(beta=beta, sigma_w2=w, rho0=r).values
                np.testing.assert_allclose(got, profile[[3, 8]], rtol=0, atol=1e-13)


def test_alpha_c_is_the_critical_alpha_over_the_other_axes(swept):
    for depth in (3, 8):
        want = numeric.critical_alpha("pre-ln", depth, beta=swept.beta.values[:, None, None],
                                      sigma_w2=swept.sigma_w2.values[None, :, None],
                                      rho0=swept.rho0.values[None, None, :], sigma_b2=0.01)
        np.testing.assert_allclose(swept.alpha_c.sel(depth=depth).values, want, rtol=1e-9)


def test_phase_follows_its_definition(swept):
    rho, phase = swept.rho.values, swept.phase.values
    not_condensed = phase != ENTROPY_COLLAPSE
    np.testing.assert_array_equal(phase[not_condensed],
                                  np.where(rho[not_condensed] > 0.99, RANK_COLLAPSE, TRAINABLE))
    # criterion "first": entropy collapse where beta exceeds beta_c = sqrt(2/(1 - rho0)) of the first layer
    beta, rho0 = np.meshgrid(swept.beta.values, swept.rho0.values, indexing="ij")
    condensed = beta > np.sqrt(2.0 / (1.0 - rho0))
    assert ((phase == ENTROPY_COLLAPSE) == condensed[None, :, None, :]).all()


def test_a_T_axis_and_an_alpha_axis():
    ds = numeric.sweep("post-ln", 6, beta=1.2, alpha_sa=[0.0, 0.5, 2.0], T=[None, 64], alpha_c=True)
    assert ds.rho.dims == ("depth", "T", "alpha_sa") and "alpha_c" not in ds      # alpha_sa is an axis
    np.testing.assert_array_equal(ds["T"].values, [np.inf, 64.0])
    for T in (None, 64):
        want = numeric.cosine_profile("post-ln", 6, beta=1.2, alpha_sa=np.array([1e-12, 0.5, 2.0]), T=T)[-1]
        np.testing.assert_allclose(ds.rho.sel(T=np.inf if T is None else T).values[0], want, atol=1e-13)


def test_the_numpy_backend_gives_the_same_dataset():
    kw = dict(beta=[0.4, 2.0], sigma_v2=[0.5, 1.0], alpha_sa=1.0, T=32)
    fused = numeric.sweep("gain-pre-ln", 5, **kw)
    reference = numeric.sweep("gain-pre-ln", 5, backend="numpy", **kw)
    np.testing.assert_allclose(fused.rho.values, reference.rho.values, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(fused.phase.values, reference.phase.values)
    np.testing.assert_allclose(fused.alpha_c.values, reference.alpha_c.values, rtol=1e-9)


def test_xarray_does_the_rest(swept, tmp_path):
    frame = swept.to_dataframe()
    assert len(frame) == 2 * 3 * 2 * 2 and {"rho", "phase", "alpha_c"} <= set(frame.columns)
    path = tmp_path / "sweep.nc"
    swept.to_netcdf(path, engine="scipy")
    import xarray as xr
    with xr.open_dataset(path, engine="scipy") as back:
        np.testing.assert_array_equal(back.rho.values, swept.rho.values)


def test_diagram_to_xarray():
    d = numeric.trainability_diagram("post-ln", 5, betas=[0.5, 1.0, 2.0], alphas=[0.0, 1.0])
    ds = d.to_xarray()
    assert ds.rho.dims == ("alpha_sa", "beta") and ds.critical_alpha.dims == ("beta",)
    np.testing.assert_array_equal(ds.rho.values, d.rho)
    np.testing.assert_array_equal(ds.phase.values, d.phase)
    np.testing.assert_array_equal(ds.alpha_sa.values, [0.0, 1.0])
    assert ds.attrs["T"] == np.inf and ds.attrs["depth"] == 5 and "alpha_sa" not in ds.attrs


@pytest.mark.parametrize("kwargs, match", [
    (dict(beta=[]), "axis 'beta' is empty"),
    (dict(beta=1.0, sigma_w2=[1.0, np.nan]), "axis 'sigma_w2' must be finite"),
    (dict(beta=1.0, alpha_sa=[1.0, np.inf]), "axis 'alpha_sa' must be finite"),
    (dict(beta=["a", "b"]), "axis 'beta' must hold real numbers"),
    (dict(beta=[[1.0, 2.0]]), "axis 'beta' must be a 1-D sequence"),
    (dict(beta=1.0, rho0=[True, False]), "axis 'rho0' must hold real numbers"),
    (dict(beta=1.0, T=[]), "axis 'T' is empty"),
    (dict(beta=1.0, T=[64, 1]), "axis 'T'"),
    (dict(beta=1.0, T=[64, 64.5]), "axis 'T'"),
    (dict(beta=1.0, T=[64, 64]), "axis 'T' repeats"),
    (dict(beta=[1.0, -1.0]), "beta must be > 0"),
    (dict(beta=1.0, sigma_b2=[-0.1, 0.0]), "sigma_b2"),
    (dict(beta=1.0, rho0=[0.5, 1.5]), "rho0"),
    (dict(beta=1.0, sigma_q=[1.0]), "unknown parameter"),
    (dict(sigma_w2=[1.0]), "needs beta"),
])
def test_bad_axes_name_the_axis(kwargs, match):
    with pytest.raises(ValueError, match=match):
        numeric.sweep("post-ln", 3, **kwargs)


@pytest.mark.parametrize("depth", [-1, [], [2, -1], 2.5, "3"])
def test_bad_depths_name_depth(depth):
    with pytest.raises(ValueError, match="depth"):
        numeric.sweep("post-ln", depth, beta=1.0)
