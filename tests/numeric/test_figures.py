"""The paper's figures are drawn from one command (small sizes here)."""

import numpy as np
import pytest

from numeric import figures
from numeric.cli import main


@pytest.mark.parametrize("which", ["1c", "2", "6"])
def test_figure_from_the_command_line(tmp_path, which):
    path = tmp_path / f"fig{which}.png"
    assert main(["figure", which, "--quick", "--out", str(path)]) == 0
    assert path.stat().st_size > 10_000


def test_figure_1c_has_the_papers_phases(tmp_path):
    diagram = figures.figure_1c(tmp_path / "f.png", quick=True)
    assert {0, 1, 2} <= set(np.unique(diagram.phase))
    assert np.all(diagram.phase[:, diagram.betas > np.sqrt(2)] == 2)


def test_figure_6_has_a_nontrivial_fixed_point():
    """D.2: with the tanh MLP in the chaotic regime (sigma_w = 2.5) the block map has a fixed point rho* < 1."""
    from numeric import cosine_profile
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


def test_figure_4_quick_from_the_command_line(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "fig4.png"
    assert main(["figure", "4", "--quick", "--out", str(path)]) == 0
    assert path.stat().st_size > 10_000
