"""Figures that need torch (quick sizes): what each one draws — the data in its Axes — against theory.

Lines are checked against the theory at the figure's stated parameters (closed
forms where the paper has one), measured dots against the theory by
verify.stats (Student t with the figure's number of seeds, Bonferroni over the
dots of one figure). At quick sizes the seeds are few (4-31), so k is large;
the checks still reject a dot series of the wrong quantity or normalisation.
"""

import math

import numpy as np
import pytest

import numeric
from verify import figures
from verify.stats import assert_agrees, finite_d_allowance
from verify.testing import FINITE_D_REASON

pytest.importorskip("matplotlib")



@pytest.fixture
def close_figures():
    import matplotlib.pyplot as plt
    yield
    plt.close("all")


def _errorbars(container):
    """(x, y, half-width) of an errorbar container."""
    data, _, (bars, *_) = container
    segments = bars.get_segments()
    return (np.asarray(data.get_xdata()), np.asarray(data.get_ydata()),
            np.array([(s[1][1] - s[0][1]) / 2 for s in segments]))


def test_figure_3_lines_are_eq_4_and_the_finite_T_theory_and_the_dots_agree(device, close_figures):
    """Fig. 3: the black line is eq. (4), max(0, 1 - sqrt2/beta); the coloured lines numeric's finite-T IPR;
    the dots (Gaussian-score Monte Carlo, 31 samples of 32 rows per dot in quick mode) agree with the
    finite-T theory at their T and reject eq. (4) by the same check (the B.3 finite-size effect)."""
    fig = figures.figure_3(None, quick=True, device=device)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    grid = np.asarray(lines[r"$T \to \infty$ (eq. 4)"].get_xdata())
    np.testing.assert_allclose(lines[r"$T \to \infty$ (eq. 4)"].get_ydata(),
                               np.maximum(0.0, 1.0 - math.sqrt(2.0) / grid), rtol=0, atol=1e-12)
    lengths = (256, 4096)
    theory, asymptotic, mean, se = [], [], [], []
    for T, container in zip(lengths, ax.containers):
        np.testing.assert_allclose(lines[f"finite-T theory, T = {T:g}"].get_ydata(), numeric.ipr(grid, T=T),
                                   rtol=1e-12)
        x, y, err = _errorbars(container)
        theory.append(numeric.ipr(x, T=T))
        asymptotic.append(np.maximum(0.0, 1.0 - math.sqrt(2.0) / x))
        mean.append(y)
        se.append(err)
    theory, asymptotic, mean, se = map(np.concatenate, (theory, asymptotic, mean, se))
    assert_agrees(theory, mean, se=se, n=31, what="Fig. 3 dots vs finite-T IPR")
    with pytest.raises(AssertionError):
        assert_agrees(asymptotic, mean, se=se, n=31, what="Fig. 3 dots vs eq. (4)")


def test_figure_4_lines_and_autograd_points(device, close_figures):
    """Fig. 4: the dashed line is the T -> oo norm beta m (1 - m)/3, m = min(1, beta_c/beta) (zero below
    beta_c = sqrt 2); on the right, autograd / leading order agrees with the first-order finite-d theory
    (8 initialisations per point, Bonferroni over the 16 points, second order declared)."""
    fig = figures.figure_4(None, quick=True, device=device)
    left, right = fig.axes
    dashed = [line for line in left.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1
    beta = np.asarray(dashed[0].get_xdata())
    m = np.minimum(1.0, math.sqrt(2.0) / beta)
    np.testing.assert_allclose(dashed[0].get_ydata(), beta * m * (1 - m) / 3, rtol=1e-10, atol=1e-14)
    lengths, widths, n_beta, seeds = figures.FIG4_SIZES["quick"]
    theory_lines = [line for line in right.get_lines() if len(line.get_xdata()) == n_beta]
    theory, mean, se, allowance = [], [], [], []
    for k, container in enumerate(right.containers):
        x, y, err = _errorbars(container)
        expected = np.asarray(theory_lines[k].get_ydata())
        np.testing.assert_array_equal(theory_lines[k].get_xdata(), x)
        theory.append(expected)
        mean.append(y)
        se.append(err)
        allowance.append(finite_d_allowance(widths[k % len(widths)], expected))
    assert len(theory) == len(lengths) * len(widths)
    assert_agrees(np.concatenate(theory), np.concatenate(mean), se=np.concatenate(se), n=seeds,
                  allowance=np.concatenate(allowance), reason="second order in 1/d",
                  what="Fig. 4 autograd / leading order vs first-order finite-d theory")


def test_measure_profiles_for_figure_2(device):
    """The dots of ``sigprop figure 2 --measure``: rho per block of torch stacks agrees with the finite-T
    theory at the measured T (quick sizes T = 64, d = 128; 16 initialisations)."""
    profiles = {arch: numeric.cosine_profile(arch, 3, beta=1.0) for arch in ("post-ln", "gain-pre-ln")}
    measured = figures.measure_profiles(profiles, beta=1.0, quick=True, seeds=16, device=device)
    assert set(measured) == set(profiles)
    for arch, (layers, mean, err) in measured.items():
        assert layers.tolist() == [0, 1, 2, 3]
        assert_agrees(numeric.cosine_profile(arch, 3, beta=1.0, T=64), mean, se=err, n=16,
                      allowance=finite_d_allowance(128), reason=FINITE_D_REASON, skip_first=True,
                      what=f"Fig. 2 dots, {arch}")


def test_clusters_figure_lines_band_and_dots(device, close_figures):
    """Errata 10's figure (gain-post-LN, beta = 2.5; quick: T = 32, 6 blocks, d = 64): the solid and dashed
    lines are the (q, p) theory at T = 32 and T -> oo; the band is centred on the overlap-matrix line;
    the torch dots agree with the overlap-matrix theory within the combined standard errors (4 seeds and
    4 samples: k is about 50 at this size — the full-size check is in test_profiles.py)."""
    import matplotlib.pyplot as plt
    fig = figures.figure_clusters(None, quick=True, device=device)
    ax = fig.axes[0]
    lines = {line.get_label(): np.asarray(line.get_ydata()) for line in ax.get_lines()}
    depth = len(lines["(q, p) theory, T = 32"]) - 1
    np.testing.assert_allclose(lines["(q, p) theory, T = 32"],
                               numeric.cosine_profile("gain-post-ln", depth, beta=2.5, T=32), rtol=1e-12)
    np.testing.assert_allclose(lines[r"(q, p) theory, $T \to \infty$"],
                               numeric.cosine_profile("gain-post-ln", depth, beta=2.5), rtol=1e-12)
    gram = next(v for k, v in lines.items() if k.startswith("overlap-matrix theory"))
    band = ax.collections[0].get_paths()[0].vertices
    lower = np.array([band[np.isclose(band[:, 0], x), 1].min() for x in range(depth + 1)])
    upper = np.array([band[np.isclose(band[:, 0], x), 1].max() for x in range(depth + 1)])
    np.testing.assert_allclose((lower + upper) / 2, gram, atol=1e-12)
    _, dots, err = _errorbars(ax.containers[0])
    assert_agrees(gram, dots, se=np.hypot(err, (upper - lower) / 2), n=4, allowance=finite_d_allowance(64),
                  reason=FINITE_D_REASON, skip_first=True, what="clusters figure: torch vs overlap-matrix theory")
    plt.close(fig)


def test_causal_figure_lines_are_the_position_profile_and_dots_agree(device, close_figures):
    """Figure causal (quick): each line is numeric.position_profile at its block; the torch dots agree with it
    within Student-t/Bonferroni tolerances and the finite-width allowance; the dashed ticks are the encoder's."""
    sizes = figures.CAUSAL_FIGURE[True]
    fig = figures.figure_causal(quick=True, device=device)
    ax = fig.axes[0]
    theory = numeric.position_profile("pre-ln", sizes["depth"], T=sizes["T"], **figures.CAUSAL_PARAMS)
    encoder = numeric.cosine_profile("pre-ln", sizes["depth"], T=sizes["T"], **figures.CAUSAL_PARAMS)
    lines = [line for line in ax.get_lines() if line.get_label().startswith("block")]
    assert [int(line.get_label().split()[1]) for line in lines] == list(sizes["blocks"])
    for line, block in zip(lines, sizes["blocks"]):
        np.testing.assert_allclose(line.get_ydata(), theory[block], rtol=1e-12)
    ticks = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    np.testing.assert_allclose([line.get_ydata()[0] for line in ticks], encoder[list(sizes["blocks"])], rtol=1e-12)
    for container, block in zip(ax.containers, sizes["blocks"]):
        _, y, se = _errorbars(container)
        assert_agrees(theory[block][::sizes["every"]], y, se, n=sizes["seeds"],
                      allowance=finite_d_allowance(sizes["d"], theory[block][::sizes["every"]]),
                      reason=FINITE_D_REASON, what=f"causal figure dots, block {block}")


def test_decoders_figure_lines_dots_and_default_init(close_figures, tmp_path):
    """Figure decoders (quick): each family's lines are the position-resolved theory of its config's init rule
    (all pairs, last quarter), the dots (mean +- SE over built models) agree with them within Student-t/Bonferroni
    tolerances and the finite-width allowance, and the diagram marks the default init where the issue's
    arithmetic puts it: beta = std^2 d / sqrt(ln T) (std 0.02), alpha_sa = 1."""
    pytest.importorskip("transformers")
    from numeric.causal import late
    from verify import adapters_decoders as ad
    from verify import figures_decoders as fd

    s = fd.SIZES[True]
    T = s["T"]
    fig = fd.figure_decoders(tmp_path / "decoders.png", quick=True)
    for ax, config in zip(fig.axes[:2], fd.configs(s["layers"], s["d"]).values()):
        run = ad.decoder_run(ad.config_readings(config), ad.config_embedding_overlaps(config, T), T, index=late(T))
        lines = [line for line in ax.get_lines() if line.get_label().startswith("theory")]
        np.testing.assert_allclose(lines[0].get_ydata(), run.rho, rtol=1e-12)
        np.testing.assert_allclose(lines[1].get_ydata(), run.rho_tokens, rtol=1e-12)
        for container, theory in zip(ax.containers, (run.rho, run.rho_tokens)):
            _, y, se = _errorbars(container)
            assert_agrees(theory, y, se, n=s["models"], allowance=finite_d_allowance(s["d"], theory),
                          reason=FINITE_D_REASON, skip_first=True, what="decoders figure dots")
    marker = [line for line in fig.axes[2].get_lines() if line.get_label().startswith("default init")][0]
    assert marker.get_xdata()[0] == pytest.approx(0.02**2 * s["d"] / math.sqrt(math.log(T)), rel=1e-9)
    assert marker.get_ydata()[0] == 1.0
