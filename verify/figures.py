"""Figures that need Monte Carlo: Fig. 3 (the IPR against β) and the measured dots of Fig. 2.

- :func:`figure_3`: E Σ_s A_ts² against β at q = 1, p = 0 — the T → ∞ theory
  (eq. 4), numeric's exact finite-T lines, and Monte Carlo points (± one
  standard error) from Gaussian scores with the covariance of eq. (9), for
  T up to 10⁴ on a CPU and 10⁵ on a GPU. It shows the B.3 finite-size effect:
  near β_c = √2 the measured IPR at practical T is far from eq. (4).
- :func:`measure_profiles`: ρ after every block of torch stacks, for
  ``sigprop figure 2 --measure`` (numeric.figures.figure_2 draws them as dots).
"""

from __future__ import annotations

import math

import numpy as np
import torch

import numeric

from . import montecarlo as mc
from .torch_view import resolve_device

#: Sequence lengths of Fig. 3's finite-T lines and points (the last only on a GPU).
FIG3_T_CPU = (256, 4096, 10_000)
FIG3_T_GPU = (256, 4096, 10_000, 100_000)
#: Sizes of the measured Fig. 2 dots: (T, d, seeds); quick for tests and previews.
FIG2_SIZES = {False: (256, 512, 8), True: (64, 128, 8)}


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


def ipr_points(betas, T: int, *, quick: bool = False, device=None, seed: int = 0):
    """Monte Carlo E Σ_s A² (mean, standard error) at each β, from Gaussian scores (:func:`mc.gaussian_moments`)."""
    rows = 8_000 if not quick else 1_000
    samples = max(2, rows // 32 if T <= 10_000 else rows // 128)
    estimates = [mc.gaussian_moments(float(b), T=T, samples=samples, device=device, seed=seed + 97 * i).ipr2
                 for i, b in enumerate(betas)]
    return np.array([e.mean for e in estimates]), np.array([e.se for e in estimates])


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
