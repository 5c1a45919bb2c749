"""Fig. 3 and the measured dots of Fig. 2 draw (quick sizes) and return what the CLI expects."""

import numpy as np
import pytest

import numeric
from verify import figures

pytest.importorskip("matplotlib")


def test_figure_3_quick(tmp_path, device):
    path = tmp_path / "figure-3.png"
    figures.figure_3(path, quick=True, device=device)
    assert path.stat().st_size > 10_000


def test_ipr_points_have_errors(device):
    mean, err = figures.ipr_points([0.5, 3.0], 256, quick=True, device=device)
    assert mean.shape == err.shape == (2,) and np.all(err > 0) and mean[1] > mean[0]


def test_measure_profiles_for_figure_2(device):
    profiles = {arch: numeric.cosine_profile(arch, 3, beta=1.0) for arch in ("post-ln", "gain-pre-ln")}
    measured = figures.measure_profiles(profiles, beta=1.0, quick=True, device=device)
    assert set(measured) == set(profiles)
    for layers, mean, err in measured.values():
        assert layers.tolist() == [0, 1, 2, 3] and mean.shape == err.shape == (4,)
        assert mean[0] == 0.0 and np.all((mean >= -0.01) & (mean <= 1.0))


def test_clusters_figure_quick(tmp_path, device):
    path = tmp_path / "figure-clusters.png"
    figures.figure_clusters(path, quick=True, device=device)
    assert path.stat().st_size > 10_000
