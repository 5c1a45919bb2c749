"""The paper's figures: what each one draws (the data in its Axes), and the command that draws them.

The expected curves come from the paper's stated parameters, typed here (not
read from numeric.figures), and, for the ReLU stacks, from the mpmath
step-by-step algorithms of tests/reference.py. Figures needing torch (3, 4 and
the clusters figure) are tested in verify/test_figures.py.
"""

import numpy as np
import pytest

from derive.parameters import ARCHITECTURES
from numeric import cosine_profile, figures
from numeric.cli import main
from tests import reference

pytest.importorskip("matplotlib")

#: Paper, section C.1 (Fig. 1c): BERT's std 0.02 at d = 600 gives sigma_w2 = sigma_v2 = 0.24,
#: sigma_b2 = 0.02^2; alpha_mlp = 1; 60 post-LN blocks, eps = 0.01.
PAPER_FIG1 = dict(sigma_w2=0.24, sigma_v2=0.24, sigma_b2=0.0004, alpha_mlp=1.0)
#: Paper, D.2 (Fig. 6): tanh MLP, sigma_b2 = 0.1, alpha_sa = 6, alpha_mlp = 1, sigma_v2 = 1; beta = 0.5.
PAPER_FIG6 = dict(sigma_b2=0.1, alpha_sa=6.0, alpha_mlp=1.0, sigma_v2=1.0, activation="tanh", beta=0.5)


@pytest.fixture
def close_figures():
    import matplotlib.pyplot as plt
    yield
    plt.close("all")


@pytest.mark.parametrize("which", ["1c", "2", "6"])
def test_figure_command_draws_the_named_figure(tmp_path, monkeypatch, which):
    """``sigprop figure X --quick --out P`` calls figure X's function with (P, quick=True), and only it."""
    calls = []

    def fake(name):
        return lambda path, quick=False, **kw: calls.append((name, str(path), quick))

    for name in figures.FIGURES:
        monkeypatch.setitem(figures.FIGURES, name, fake(name))
    monkeypatch.setattr(figures, "figure_2", fake("2"))
    path = tmp_path / f"fig{which}.png"
    assert main(["figure", which, "--quick", "--out", str(path)]) == 0
    assert calls == [(which, str(path), True)]


def test_figure_1c_draws_the_papers_diagram(close_figures):
    """Fig. 1c: the phase image is the diagram's phases (entropy collapse exactly above beta_c = sqrt 2,
    all three phases present), and the alpha_c line is the rank-collapse boundary of the paper's
    parameters, checked against the mpmath algorithm: rho_60 <= 0.99 just above it, > 0.99 just below."""
    import matplotlib.pyplot as plt
    diagram = figures.figure_1c(None, quick=True)
    ax = plt.gcf().axes[0]
    assert (diagram.arch, diagram.depth, diagram.eps, diagram.T) == ("post-ln", 60, 0.01, None)
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), diagram.phase)
    assert {0, 1, 2} <= set(np.unique(diagram.phase))
    np.testing.assert_array_equal(diagram.phase[:, diagram.betas > np.sqrt(2)], 2)
    assert np.all(diagram.phase[:, diagram.betas <= np.sqrt(2)] != 2)
    line = ax.get_lines()[0]
    betas, alpha_c = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    for k in (0, len(betas) // 3, np.searchsorted(betas, np.sqrt(2)) - 1):
        beta, a = betas[k], alpha_c[k]
        assert beta <= np.sqrt(2) and 0 < a < 3
        above = reference.profile("post-ln", 60, beta, alpha_sa=a * (1 + 1e-4), **PAPER_FIG1)[-1]
        below = reference.profile("post-ln", 60, beta, alpha_sa=a * (1 - 1e-4), **PAPER_FIG1)[-1]
        assert above <= 0.99 < below, (beta, a, above, below)


def test_figure_2_draws_the_four_profiles(close_figures):
    """Fig. 2: one line per architecture, rho after each block at beta = 1, alpha_sa = alpha_mlp = 1, T -> oo,
    equal to the mpmath step-by-step algorithms (Algorithms 1-3, corrected) to 1e-12."""
    fig = figures.figure_2(None, quick=True)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert set(lines) == set(ARCHITECTURES)
    for arch, line in lines.items():
        depth = len(line.get_xdata()) - 1
        assert depth >= 20
        np.testing.assert_array_equal(line.get_xdata(), np.arange(depth + 1))
        want = reference.profile(arch, depth, 1.0, alpha_sa=1.0, alpha_mlp=1.0)
        np.testing.assert_allclose(line.get_ydata(), want, rtol=0, atol=1e-12, err_msg=arch)


def test_figure_6_draws_the_map_its_fixed_point_and_the_profile(close_figures):
    """Fig. 6 (D.2): left, the one-block map rho -> rho' for sigma_w = 1 and 2.5; the marked point is a
    stable fixed point of the sigma_w = 2.5 map (rho* < 1) and the only one marked; right, the depth
    profile from rho0 = 0.05, which settles at the marked rho*."""
    fig = figures.figure_6(None, quick=True)
    left, right = fig.axes
    maps = [line for line in left.get_lines() if line.get_label().startswith(r"$\sigma_w")]
    markers = [line for line in left.get_lines() if line.get_marker() == "o"]
    assert len(maps) == 2 and len(markers) == 1
    for line, sigma_w in zip(maps, (1.0, 2.5)):
        rho = np.asarray(line.get_xdata())
        want = cosine_profile("post-ln", 1, rho0=rho, sigma_w2=sigma_w**2, **PAPER_FIG6)[1]
        np.testing.assert_allclose(line.get_ydata(), want, rtol=0, atol=1e-12)
    star = float(markers[0].get_xdata()[0])
    assert markers[0].get_ydata()[0] == star and 0.05 < star < 0.99

    def block(rho):
        return cosine_profile("post-ln", 1, rho0=rho, sigma_w2=2.5**2, **PAPER_FIG6)[1]

    assert abs(block(star) - star) < 1e-3                                      # a fixed point (grid 0.01)
    assert block(star + 0.05) < star + 0.05 and block(star - 0.05) > star - 0.05   # and stable
    profiles = right.get_lines()
    want = cosine_profile("post-ln", len(profiles[1].get_ydata()) - 1, rho0=0.05, sigma_w2=2.5**2, **PAPER_FIG6)
    np.testing.assert_allclose(profiles[1].get_ydata(), want, rtol=0, atol=1e-12)
    assert abs(want[-1] - star) < 2e-3


def test_figure_6_has_a_nontrivial_fixed_point():
    """D.2: with the tanh MLP in the chaotic regime (sigma_w = 2.5) the block map has a fixed point rho* < 1."""
    rho = np.linspace(0, 1, 201)
    params = dict(figures.FIG6_PARAMS, sigma_w2=2.5**2, activation="tanh", beta=0.5)
    mapped = cosine_profile("post-ln", 1, rho0=rho, **params)[1]
    star = figures.fixed_point(rho, mapped)
    assert star is not None and 0.05 < star < 0.99
    deep = cosine_profile("post-ln", 200, rho0=0.05, **params)[-1]
    assert deep == pytest.approx(star, abs=5e-3)


def test_figure_4_is_registered_for_the_command_line(tmp_path, monkeypatch):
    """``sigprop figure 4`` draws verify.figures.figure_4 (torch), imported only when asked for."""
    import sys
    import types
    calls = []
    fake = types.ModuleType("verify.figures")
    fake.figure_4 = lambda path, quick=False: calls.append((path, quick))
    monkeypatch.setitem(sys.modules, "verify.figures", fake)
    path = tmp_path / "f4.png"
    assert main(["figure", "4", "--quick", "--out", str(path)]) == 0
    assert calls == [(str(path), True)]
