"""Figures that need Monte Carlo: Fig. 3 (the IPR against β), Fig. 4 (the query gradient), Fig. 2 measured.

Registered with the ``sigprop figure`` command through the entry-point group
``sigprop.figures`` (pyproject.toml), so that numeric does not import verify.

- :func:`figure_3`: E Σ_s A_ts² against β at q = 1, p = 0 — the T → ∞ theory
  (eq. 4), numeric's exact finite-T lines, and Monte Carlo points (± one
  standard error) from Gaussian scores with the covariance of eq. (9), for
  T up to 10⁵ (about 1000 rows per point at T = 10⁵: ~4 s per point on a CPU).
  It shows the B.3 finite-size effect: near β_c = √2 the measured IPR at
  practical T is far from eq. (4).
- :func:`figure_4`: E‖∂L/∂W_Q‖_F² against β (q = 1, p = 0) — the corrected
  Result 2 with exact finite-T moments (one line per T) and T → ∞ moments
  (dashed), and autograd of torch layers (points ± one standard error) for
  T ∈ {2048, 4096, 8192}, d ∈ {256, 512, 1024} on a GPU, smaller on a CPU; a
  second panel shows autograd over the leading order against the first-order
  finite-d theory (:func:`verify.theory.query_grad_finite_d`).
- :func:`figure_2_measured` (``sigprop figure 2 --measure``): Fig. 2 at β = 1.5
  with the finite-T and T → ∞ lines and, as dots, ρ after every block of torch
  stacks (:func:`measure_profiles`).
- :func:`figure_clusters`: errata 10 — gain-controlled post-LN at β = 2.5, where
  condensed attention clusters the tokens: the (q, p) theory (finite T and
  T → ∞), the overlap-matrix theory (:func:`numeric.gram_profile`, ± one
  standard error) and torch stacks (± one standard error).
"""

from __future__ import annotations

import math

import numpy as np
import torch

import numeric
from derive.parameters import ARCHITECTURES

from . import montecarlo as mc
from . import theory
from .torch_view import resolve_device

#: Sequence lengths of Fig. 3's finite-T lines and points (10⁴ only on a GPU: the CPU goes straight to 10⁵).
FIG3_T_CPU = (256, 4096, 100_000)
FIG3_T_GPU = (256, 4096, 10_000, 100_000)
#: Sizes of the measured Fig. 2 dots: (T, d, seeds); quick for tests and previews.
FIG2_SIZES = {False: (256, 512, 8), True: (64, 128, 8)}
#: Sizes of the clusters figure: T, depth, d, torch seeds, overlap-matrix samples (issue 6's size).
CLUSTERS_SIZES = {False: dict(T=256, depth=30, d=512, seeds=12, samples=32),
                  True: dict(T=32, depth=6, d=64, seeds=4, samples=4)}
CLUSTERS_BETA = 2.5


def _device(device):
    """The figure's device: CUDA when present (``auto``), unless one is named."""
    return resolve_device("auto" if device is None else device)


def figure_3(path=None, quick: bool = False, device=None, seed: int = 0):
    """Fig. 3: E Σ_s A_ts² against β (q = 1, p = 0): T → ∞ theory, finite-T theory and Monte Carlo."""
    from numeric.plotting import pyplot, save

    device = _device(device)
    lengths = (256, 4096) if quick else (FIG3_T_GPU if device.type == "cuda" else FIG3_T_CPU)
    grid = np.linspace(0.05, 4.0, 60 if quick else 240)
    points = np.linspace(0.25, 4.0, 6 if quick else 16)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    ax.plot(grid, numeric.ipr(grid), "k-", lw=2.0, label=r"$T \to \infty$ (eq. 4)")
    for k, T in enumerate(lengths):
        colour = f"C{k}"
        ax.plot(grid, numeric.ipr(grid, T=T), color=colour, lw=1.2, label=f"finite-T theory, T = {T:g}")
        mean, err = ipr_points(points, T, quick=quick, device=device, seed=seed + k)
        ax.errorbar(points, mean, yerr=err, fmt="o", ms=3.5, capsize=2, color=colour)
    ax.axvline(math.sqrt(2.0), color="grey", ls=":", lw=1.0, label=r"$\beta_c = \sqrt{2}$")
    ax.set_xlabel(r"$\beta$")
    ax.set_ylabel(r"$\mathbb{E}\,\sum_s A_{ts}^2$")
    ax.set_title(f"IPR of one attention row, q = 1, p = 0 (dots: Monte Carlo on {device.type}, ±1 SE)")
    ax.legend(fontsize=7)
    return save(fig, path)


#: Fig. 4 sizes: (sequence lengths, widths, number of betas, initialisations per point).
FIG4_SIZES = {"cuda": ((2048, 4096, 8192), (256, 512, 1024), 12, 32),
              "cpu": ((128, 256, 512), (64, 128, 256), 10, 24),
              "quick": ((32, 64), (16, 32), 4, 8)}
#: Fig. 4's β range (q = 1, p = 0: β_c = √2).
FIG4_BETAS = (0.25, 4.0)
#: Most T² entries of one seed chunk's score-sized matrices (float32): ~10 such matrices live at once.
FIG4_CHUNK_ENTRIES = 1 << 28


def figure_4(path=None, quick: bool = False, device=None, seed: int = 0):
    """Fig. 4: the query gradient norm against β for several (T, d), collapsed (q = 1, p = 0, σ_v² = 1).

    Left: E‖∂L/∂W_Q‖_F² / (T d² √(ln T) σ_v² q (q − p)²) = β E[Y2 − 2Y3 + (ΣA²)²], the
    collapse variable of the corrected Result 2 (:func:`numeric.gradients.collapse_scale`):
    lines are the finite-T theory (one per T; the leading order does not depend on d),
    the dashed line the T → ∞ theory (zero below β_c, β_c (1 − β_c/β)/3 above), points
    autograd (± one standard error over initialisations). The paper's Fig. 4 scales by
    T/(d² √(ln T)) instead: its loss carries a bounded B(X) assumed O(1/T) (eq. 32–33),
    whereas L = Σ_{t,i} G_ti S(X)_ti here sums over the T tokens, so the norm grows like
    T d² √(ln T). Right: autograd over the leading order; lines are the first-order
    finite-d theory (token-overlap, score-scale and score-alignment terms), which explains
    the excess below β_c (an absolute O(1/d) while the bracket is small).
    Tokens are i.i.d. Gaussian (T > d), float32 (rounding ~1e-6, far below the errors).
    """
    from numeric.gradients import collapse_scale, critical_beta, gradient_bracket
    from numeric.plotting import pyplot, save

    device = _device(device)
    lengths, widths, n_beta, seeds = FIG4_SIZES["quick" if quick else device.type]
    betas = np.linspace(*FIG4_BETAS, n_beta)
    grid = np.linspace(0.05, FIG4_BETAS[1], 200)
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12.0, 4.6))
    left.plot(grid, grid * gradient_bracket(grid, T=lengths[-1], finite_T=False), "k--", lw=1.5,
              label=r"$T \to \infty$ moments")
    markers = "osD^v"
    for i, T in enumerate(lengths):
        colour = f"C{i}"
        left.plot(grid, grid * gradient_bracket(grid, T=T), color=colour, lw=1.2, label=f"finite-T theory, T = {T}")
        leading = betas * gradient_bracket(betas, T=T)
        for j, d in enumerate(widths):
            mean, err = gradient_points(betas, T=T, d=d, seeds=seeds, device=device, seed=seed + 1000 * i + 100 * j)
            mean, err = mean / collapse_scale(d=d, T=T), err / collapse_scale(d=d, T=T)
            left.errorbar(betas, mean, yerr=err, fmt=markers[j], ms=3.5, capsize=2, color=colour, mfc="none",
                          label=f"autograd T = {T}, d = {d}")
            right.errorbar(betas, mean / leading, yerr=err / leading, fmt=markers[j], ms=3.5, capsize=2,
                           color=colour, mfc="none")
            right.plot(betas, [1.0 + finite_d_total(b, d=d, T=T, seed=seed) for b in betas], color=colour,
                       lw=0.8, ls=("-", "--", ":", "-.")[j % 4])
    for ax in (left, right):
        ax.axvline(critical_beta(), color="grey", ls=":", lw=1.0)
        ax.set_xlabel(r"$\beta$  ($\beta_c = \sqrt{2}$ dotted)")
    left.set_yscale("log")
    left.set_ylim(1e-4, 1.0)
    left.set_ylabel(r"$\mathbb{E}\,\|\partial L/\partial W_Q\|_F^2 \;/\; "
                    r"(T\, d^2 \sqrt{\ln T}\, \sigma_v^2\, q\, (q-p)^2)$")
    left.set_title(f"query gradient, q = 1, p = 0 (autograd on {device.type}, ±1 SE)", fontsize=10)
    left.legend(fontsize=6, ncol=2)
    right.set_yscale("log")
    right.set_ylabel("autograd / leading order")
    right.set_title("finite d: lines = first-order theory (marker/line style = d)", fontsize=10)
    return save(fig, path)


def gradient_points(betas, *, T: int, d: int, seeds: int, device=None, seed: int = 0):
    """Autograd ‖∂L/∂W_Q‖_F² at each β: (mean, standard error) arrays over ``seeds`` initialisations.

    i.i.d. Gaussian tokens (q = 1, p = 0), float32.

    Seeds run in chunks that keep ~:data:`FIG4_CHUNK_ENTRIES` score-sized entries in memory.
    """
    chunk = max(1, min(seeds, FIG4_CHUNK_ENTRIES // (T * T)))
    means, errors = [], []
    for k, beta in enumerate(betas):
        samples = []
        for start in range(0, seeds, chunk):
            g = mc.query_gradient(float(beta), T=T, d=d, seeds=min(chunk, seeds - start), kind="gaussian",
                                  dtype=torch.float32, device=device, seed=seed + 7919 * k + start)
            samples.append(g.autograd.samples)
        est = mc.Estimate(np.concatenate(samples))
        means.append(est.mean)
        errors.append(est.se)
    return np.array(means), np.array(errors)


def finite_d_total(beta, *, d: int, T: int, seed: int = 0) -> float:
    """The first-order finite-d correction of the query gradient, relative (:func:`theory.query_grad_finite_d`)."""
    return theory.query_grad_finite_d(float(beta), d=d, T=T, seed=seed).total


def ipr_points(betas, T: int, *, quick: bool = False, device=None, seed: int = 0):
    """Monte Carlo E Σ_s A² (mean, standard error) at each β, from Gaussian scores (:func:`mc.gaussian_moments`)."""
    rows = 8_000 if not quick else 1_000
    samples = max(2, rows // 32 if T <= 10_000 else rows // 256)
    estimates = [mc.gaussian_moments(float(b), T=T, samples=samples, device=device, seed=seed + 97 * i).ipr2
                 for i, b in enumerate(betas)]
    return np.array([e.mean for e in estimates]), np.array([e.se for e in estimates])


#: Sizes of the torch measurement (d from verify.figures: 512, quick 128). Gaussian input tokens
#: (overlaps 0 +- d^-1/2) where T > d - 1 leaves no room for T + 1 orthonormal ones.
FIG2_MEASURED = {False: dict(T=512, depth=30, tokens="gaussian"), True: dict(T=64, depth=8, tokens="basis")}
#: beta of the measured variant: just above beta_c = sqrt(2), where finite-T effects are largest (B.3)
FIG2_MEASURED_BETA = 1.5


def figure_2_measured(path=None, quick: bool = False, device=None, seed: int = 0):
    """Fig. 2 measured (``sigprop figure 2 --measure``): at beta = 1.5, just above beta_c, where finite-T
    effects are largest, the exact finite-T theory (solid) at the T of the torch measurement (dots, +- one
    standard error over initialisations) and the paper's T -> oo theory (dashed)."""
    from numeric.plotting import plot_profiles

    sizes, beta = FIG2_MEASURED[bool(quick)], FIG2_MEASURED_BETA
    profiles = {arch: numeric.cosine_profile(arch, sizes["depth"], beta=beta, T=sizes["T"]) for arch in ARCHITECTURES}
    asymptotic = {arch: numeric.cosine_profile(arch, sizes["depth"], beta=beta) for arch in ARCHITECTURES}
    measured = measure_profiles(profiles, beta=beta, quick=quick, T=sizes["T"], kind=sizes["tokens"], device=device,
                                seed=seed)
    return plot_profiles(profiles, path=path, measured=measured, dashed=asymptotic,
                         title=rf"$\beta = {beta:g}$, $T = {sizes['T']}$: finite-T theory (solid), "
                               r"$T\to\infty$ (dashed), torch (dots)")


def measure_profiles(profiles: dict, beta: float, quick: bool = False, *, T: int | None = None,
                     d: int | None = None, seeds: int | None = None, device=None, seed: int = 0, **params) -> dict:
    """{arch: (layers, mean, err)}: measured ρ before block 1 and after each block, ± one standard error.

    ``profiles`` maps architecture names to theory profiles (length depth + 1);
    the depth is read from them. Sizes default to :data:`FIG2_SIZES` (T = 256,
    d = 512, 8 initialisations; quick: T = 64, d = 128). ``params`` (alpha_sa,
    sigma_v2, ...) default to numeric.cosine_profile's defaults, as Fig. 2 uses.
    The measurement is at finite T: compare it with the finite-T theory at the
    same T (the T → ∞ lines differ near β_c, the B.3 effect).
    """
    T0, d0, seeds0 = FIG2_SIZES[bool(quick)]
    T, d, seeds = T or T0, d or d0, seeds or seeds0
    device = _device(device)
    out = {}
    for k, (arch, rho) in enumerate(profiles.items()):
        depth = len(rho) - 1
        with torch.no_grad():
            measured = mc.profile(arch, depth, beta=beta, T=T, d=d, seeds=seeds, device=device, seed=seed + k,
                                  **params)
        out[arch] = (np.arange(depth + 1), np.asarray(measured.rho.mean), np.asarray(measured.rho.se))
    return out


def figure_clusters(path=None, quick: bool = False, device=None, seed: int = 0):
    """Errata 10: gain-post-LN at β = 2.5 — where the (q, p) closure fails and the overlap matrix does not.

    Lines: the finite-T (q, p) theory (solid) and its T → ∞ form (dashed); band:
    :func:`numeric.gram_profile` ± one standard error; dots: torch stacks ± one standard error.
    """
    from numeric.plotting import pyplot, save

    sizes, beta, arch = CLUSTERS_SIZES[bool(quick)], CLUSTERS_BETA, "gain-post-ln"
    T, depth = sizes["T"], sizes["depth"]
    closure = numeric.cosine_profile(arch, depth, beta=beta, T=T)
    asymptotic = numeric.cosine_profile(arch, depth, beta=beta)
    gram = numeric.gram_profile(arch, depth, beta=beta, T=T, samples=sizes["samples"], seed=seed + 1)
    with torch.no_grad():
        measured = mc.profile(arch, depth, beta=beta, T=T, d=sizes["d"], seeds=sizes["seeds"],
                              device=_device(device), seed=seed).rho
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    layers = np.arange(depth + 1)
    ax.plot(layers, closure, color="C0", lw=1.6, label=f"(q, p) theory, T = {T}")
    ax.plot(layers, asymptotic, "--", color="C0", lw=1.0, label=r"(q, p) theory, $T \to \infty$")
    ax.fill_between(layers, gram.rho - gram.se, gram.rho + gram.se, color="C1", alpha=0.35, lw=0)
    ax.plot(layers, gram.rho, color="C1", lw=1.6,
            label=f"overlap-matrix theory, d = ∞ ({sizes['samples']} samples)")
    ax.errorbar(layers, np.asarray(measured.mean), yerr=np.asarray(measured.se), fmt="o", ms=3.5, color="k",
                capsize=2, label=f"torch, d = {sizes['d']} ({sizes['seeds']} initialisations)")
    ax.set_xlabel("block")
    ax.set_ylabel(r"cosine similarity $\rho$")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(rf"gain-controlled post-LN, $\beta = {beta:g}$, T = {T}: clustered tokens")
    ax.legend(fontsize=8, loc="lower right")
    return save(fig, path)


#: The causal figure: pre-LN with a strong attention branch (sigma_v2 = 4, alpha_sa = 0.5) at beta = 0.5, where
#: causal averaging matters most; blocks drawn, and the sizes of theory and torch dots.
CAUSAL_FIGURE = {False: dict(T=128, depth=24, d=512, seeds=8, blocks=(1, 4, 12, 24), every=3),
                 True: dict(T=32, depth=4, d=128, seeds=4, blocks=(1, 4), every=1)}
CAUSAL_PARAMS = dict(beta=0.5, sigma_v2=4.0, alpha_sa=0.5)


def figure_causal(path=None, quick: bool = False, device=None, seed: int = 0):
    """``sigprop figure causal``: a causal pre-LN stack position by position — rho_t of each position with the
    others at several depths, the position-resolved theory (lines, numeric.position_profile) and torch stacks
    (dots, +- one standard error over initialisations); the encoder theory's all-pairs rho at the same depths
    is marked at the right edge (dashed ticks): early positions see short prefixes and differ from it most."""
    from numeric.plotting import plot_positions, save

    sizes = CAUSAL_FIGURE[bool(quick)]
    theory = numeric.position_profile("pre-ln", sizes["depth"], T=sizes["T"], **CAUSAL_PARAMS)
    with torch.no_grad():
        measured = mc.position_profile("pre-ln", sizes["depth"], T=sizes["T"], d=sizes["d"], seeds=sizes["seeds"],
                                       device=_device(device), seed=seed, **CAUSAL_PARAMS)
    dots = {b: (measured.mean[b], measured.se[b]) for b in sizes["blocks"]}
    fig = plot_positions(theory, depths=sizes["blocks"], measured=dots, every=sizes["every"],
                         title=rf"causal pre-LN, $\beta = 0.5$, $\sigma_v^2 = 4$, $\alpha_{{SA}} = 0.5$, "
                               f"T = {sizes['T']}: theory (lines), torch d = {sizes['d']} (dots)")
    ax = fig.axes[0]
    encoder = numeric.cosine_profile("pre-ln", sizes["depth"], T=sizes["T"], **CAUSAL_PARAMS)
    lines = [line for line in ax.get_lines() if line.get_label().startswith("block")]
    for line, block in zip(lines, sizes["blocks"]):
        ax.plot([sizes["T"] - 1, sizes["T"] + 3], [encoder[block]] * 2, "--", color=line.get_color(), lw=2.0)
    ax.title.set_fontsize(9)
    return save(fig, path)
