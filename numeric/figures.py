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

Figures that need Monte Carlo or autograd live in :mod:`verify` (torch) and are
found through the entry-point group ``sigprop.figures`` (pyproject.toml): **2**
with ``--measure``, **3** (the IPR against beta), **4** (the query gradient norm
against beta, corrected Result 2 with autograd points), **1d** (BERT) and
**clusters**. numeric never imports verify.
"""

from __future__ import annotations

import numpy as np

from derive.parameters import ARCHITECTURES

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


def figure_2(path, quick=False):
    """Fig. 2: rho against depth for the four architectures, alpha_sa = alpha_mlp = 1, T -> oo.

    ``sigprop figure 2 --measure`` draws :func:`verify.figures.figure_2_measured`
    instead: the finite-T theory against torch stacks at beta = 1.5.
    """
    depth = 20 if quick else 100
    profiles = {arch: cosine_profile(arch, depth, beta=FIG2_BETA) for arch in ARCHITECTURES}
    return plot_profiles(profiles, path=path,
                         title=rf"$\alpha_{{SA}} = \alpha_{{MLP}} = 1$, $\beta = {FIG2_BETA:g}$, $T \to \infty$")


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


#: This package's figures; others (Monte Carlo, autograd, real models) are registered by the packages that
#: draw them under the entry-point group :data:`GROUP`, so that numeric never imports them.
FIGURES = {"1c": figure_1c, "2": figure_2, "6": figure_6}
GROUP = "sigprop.figures"
#: Suffix of a figure's variant with torch measurements (``sigprop figure 2 --measure`` draws "2-measured").
MEASURED = "-measured"


#: One line per figure for ``sigprop figure --help`` (a figure registered elsewhere without a line is listed by name).
DESCRIPTIONS = {
    "1c": "trainability diagram",
    "1d": "60-layer BERT at its own init, theory vs measurement; needs torch and transformers",
    "1e": "training runs initialised in each phase (CPU scale; the paper's sizes with --device cuda); needs torch",
    "2": "profiles",
    "3": "IPR vs beta, Monte Carlo; needs torch",
    "4": "query gradient vs beta, autograd; needs torch",
    "5": "training: vanilla vs gain-controlled post-LN (CPU scale; the paper's sizes with --device cuda); needs torch",
    "6": "tanh fixed point",
    "causal": "rho by position in a causal pre-LN stack, theory vs torch; needs torch",
    "clusters": "gain-post-LN at beta = 2.5: the (q, p) theory, the overlap-matrix theory and torch; needs torch",
    "decoders": "GPT-2 and LLaMA configs at their default init, and a LLaMA trainability diagram; needs transformers",
    "width": "finite-width attention at long context: where the O(1/d) terms move rho; needs torch",
}


def describe() -> str:
    """The figures by name with their one-line descriptions (the help of ``sigprop figure``)."""
    return "; ".join(f"{name} ({DESCRIPTIONS[name]})" if name in DESCRIPTIONS else name for name in names())


def registry() -> dict:
    """Figure name -> a callable(path, quick=...) or an entry point that loads one (loaded on use)."""
    from importlib.metadata import entry_points
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    return {**found, **FIGURES}


def names() -> list[str]:
    """The figures one can ask for by name (measured variants are asked for with ``measure``)."""
    return sorted(name for name in registry() if not name.endswith(MEASURED))


def make(which: str, path=None, quick=False, measure=False):
    """Draw figure ``which`` (its measured variant with ``measure``) to ``path``; return the path."""
    table = registry()
    if which not in table or which.endswith(MEASURED):
        raise ValueError(f"figure must be one of {names()}, got {which!r}")
    name = which + MEASURED if measure else which
    if name not in table:
        measured = [n[:-len(MEASURED)] for n in table if n.endswith(MEASURED)]
        raise ValueError(f"figure {which!r} has no --measure variant (figures with one: {sorted(measured)})")
    draw = table[name]
    draw = draw.load() if hasattr(draw, "load") else draw
    path = path or f"figure-{name}.png"
    draw(path, quick=quick)
    return path
