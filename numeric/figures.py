"""The paper's figures from one command: ``sigprop figure 1c|2|3|4|6``.

- **1c**: trainability diagram of a 60-block post-LN transformer (Fig. 1c),
  with the initialisation of the paper's section C.1 (BERT's std 0.02 at
  d = 600: sigma_w2 = sigma_v2 = 0.24, sigma_b2 = 0.0004; alpha_mlp = 1).
- **2**: depth profiles of post-LN, pre-LN and their gain-controlled versions
  at alpha_sa = alpha_mlp = 1 (Fig. 2).
- **6**: a post-LN block with a tanh MLP tuned into the chaotic regime
  (sigma_w in {1, 2.5}, sigma_b2 = 0.1, alpha_sa = 6, alpha_mlp = 1; D.2):
  the block's update map rho -> rho' with its non-trivial fixed point, and
  the depth profile over 200 blocks from rho0 = 0.05.

Figures that need Monte Carlo (``--measure``) use :mod:`verify` and torch, as do
**3** (the IPR against beta) and **4** (the query gradient norm against beta,
corrected Result 2 with autograd points: :func:`verify.figures.figure_4`).
"""

from __future__ import annotations

import numpy as np

from .diagram import trainability_diagram
from .plotting import plot_profiles, pyplot, save
from .profile import cosine_profile

FIG1_PARAMS = dict(sigma_w2=0.24, sigma_v2=0.24, sigma_b2=0.0004, alpha_mlp=1.0)
FIG2_BETA = 1.0
FIG6_PARAMS = dict(sigma_b2=0.1, alpha_sa=6.0, alpha_mlp=1.0, sigma_v2=1.0)
FIG6_SIGMA_W = (1.0, 2.5)


def figure_1c(path, quick=False):
    """Fig. 1(c): phases of a 60-block post-LN stack over (beta, alpha_sa)."""
    n = 48 if quick else 256
    diagram = trainability_diagram("post-ln", 60, betas=np.linspace(0.02, 3.0, n), alphas=np.linspace(0.0, 3.0, n),
                                   **FIG1_PARAMS)
    diagram.plot(path)
    return diagram


#: Sizes of the torch measurement (d from verify.figures: 512, quick 128). Gaussian input tokens
#: (overlaps 0 +- d^-1/2) where T > d - 1 leaves no room for T + 1 orthonormal ones.
FIG2_MEASURED = {False: dict(T=512, depth=30, tokens="gaussian"), True: dict(T=64, depth=8, tokens="basis")}
#: beta of the measured variant: just above beta_c = sqrt(2), where finite-T effects are largest (B.3)
FIG2_MEASURED_BETA = 1.5


def figure_2(path, quick=False, measure=False):
    """Fig. 2: rho against depth for the four architectures, alpha_sa = alpha_mlp = 1.

    With ``measure`` (at beta = 1.5, just above beta_c, where finite-T effects
    are largest) the solid lines are the exact finite-T theory at the T of
    the torch measurement (dots, +- one standard error over initialisations),
    the dashed lines the paper's T -> oo theory.
    """
    archs = ("post-ln", "pre-ln", "gain-post-ln", "gain-pre-ln")
    if not measure:
        depth = 20 if quick else 100
        profiles = {arch: cosine_profile(arch, depth, beta=FIG2_BETA) for arch in archs}
        return plot_profiles(profiles, path=path,
                             title=rf"$\alpha_{{SA}} = \alpha_{{MLP}} = 1$, $\beta = {FIG2_BETA:g}$, $T \to \infty$")
    from verify.figures import measure_profiles
    sizes = FIG2_MEASURED[bool(quick)]
    beta = FIG2_MEASURED_BETA
    profiles = {arch: cosine_profile(arch, sizes["depth"], beta=beta, T=sizes["T"]) for arch in archs}
    asymptotic = {arch: cosine_profile(arch, sizes["depth"], beta=beta) for arch in archs}
    measured = measure_profiles(profiles, beta=beta, quick=quick, T=sizes["T"], kind=sizes["tokens"])
    return plot_profiles(profiles, path=path, measured=measured, dashed=asymptotic,
                         title=rf"$\beta = {beta:g}$, $T = {sizes['T']}$: finite-T theory (solid), "
                               r"$T\to\infty$ (dashed), torch (dots)")


def figure_6(path, quick=False):
    """Fig. 6: the tanh block's update map with its fixed point (left) and the depth profile (right)."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    rho = np.linspace(0.0, 1.0, 101 if quick else 401)
    depth = 40 if quick else 200
    left.plot(rho, rho, "k--", lw=0.8, label="identity")
    for sigma_w in FIG6_SIGMA_W:
        params = dict(FIG6_PARAMS, sigma_w2=sigma_w**2, activation="tanh", beta=0.5)
        mapped = cosine_profile("post-ln", 1, rho0=rho, **params)[1]
        line, = left.plot(rho, mapped, label=rf"$\sigma_w = {sigma_w:g}$")
        fixed = fixed_point(rho, mapped)
        if fixed is not None:
            left.plot([fixed], [fixed], "o", color=line.get_color())
        right.plot(cosine_profile("post-ln", depth, rho0=0.05, **params), color=line.get_color(),
                   label=rf"$\sigma_w = {sigma_w:g}$" + (rf", $\rho^* = {fixed:.3f}$" if fixed is not None else ""))
    left.set_xlabel(r"$\rho$ (block input)")
    left.set_ylabel(r"$\rho'$ (block output)")
    left.set_title(r"post-LN block, tanh MLP, $\sigma_b^2 = 0.1$, $\alpha_{SA} = 6$")
    left.legend(fontsize=8)
    right.set_xlabel("block")
    right.set_ylabel(r"cosine similarity $\rho$")
    right.set_ylim(-0.02, 1.02)
    right.legend(fontsize=8)
    return save(fig, path)


def fixed_point(rho, mapped):
    """The largest rho* < 1 where the map crosses the identity from above (a stable fixed point)."""
    gap = mapped - rho
    crossings = np.nonzero((gap[:-1] > 0) & (gap[1:] <= 0) & (rho[1:] < 1.0))[0]
    if crossings.size == 0:
        return None
    k = crossings[-1]
    return float(rho[k] - gap[k] * (rho[k + 1] - rho[k]) / (gap[k + 1] - gap[k]))


FIGURES = {"1c": figure_1c, "2": figure_2, "6": figure_6}


def make(which: str, path=None, quick=False, measure=False):
    """Draw figure ``which`` to ``path`` (default figure-<which>.png); return the path."""
    if which not in FIGURES and which not in _VERIFY_FIGURES:
        raise ValueError(f"figure must be one of {sorted(FIGURES) + sorted(_VERIFY_FIGURES)}, got {which!r}")
    path = path or f"figure-{which}.png"
    if which in _VERIFY_FIGURES:
        import importlib
        module, name = _VERIFY_FIGURES[which]
        getattr(importlib.import_module(module), name)(path, quick=quick)
    elif which == "2":
        figure_2(path, quick=quick, measure=measure)
    else:
        FIGURES[which](path, quick=quick)
    return path


#: Figures drawn by other packages (Monte Carlo or autograd), imported only when asked for.
_VERIFY_FIGURES: dict[str, tuple[str, str]] = {"1d": ("verify.figures_bert", "figure_1d"),
                                                "3": ("verify.figures", "figure_3"), "4": ("verify.figures", "figure_4"),
                                                "clusters": ("verify.figures", "figure_clusters")}
