"""Matplotlib drawings of diagrams and profiles (the ``plot`` extra).

Colours follow the paper's Fig. 1(c): blue trainable, yellow rank collapse,
red entropy collapse.
"""

from __future__ import annotations

import numpy as np

PHASE_COLOURS = ("#4c72b0", "#f2c14e", "#c44e52")


def pyplot():
    """matplotlib.pyplot with a file backend, or a clear error when the extra is missing."""
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - depends on the environment
        raise RuntimeError("plotting needs matplotlib: pip install 'sigprop[plot]'") from None
    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "cairo"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, path):
    if path is not None:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    return fig


def plot_diagram(diagram, path=None, ax=None):
    """Phase map over (beta, alpha_sa) with the critical alpha_sa and beta_c marked."""
    plt = pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    fig = ax.figure if ax is not None else plt.figure(figsize=(5.5, 4.2))
    ax = ax or fig.add_subplot(111)
    extent = [diagram.betas.min(), diagram.betas.max(), diagram.alphas.min(), diagram.alphas.max()]
    order_b, order_a = np.argsort(diagram.betas), np.argsort(diagram.alphas)
    ax.imshow(diagram.phase[np.ix_(order_a, order_b)], origin="lower", aspect="auto", extent=extent,
              cmap=ListedColormap(PHASE_COLOURS), vmin=0, vmax=2, interpolation="nearest")
    finite = np.isfinite(diagram.critical_alpha)
    ax.plot(diagram.betas[order_b][finite[order_b]], diagram.critical_alpha[order_b][finite[order_b]],
            color="k", lw=1.2, label=r"$\alpha_c(\beta)$")
    if diagram.late:
        late = np.asarray(diagram.late["critical_alpha"])
        ok = np.isfinite(late)
        ax.plot(diagram.betas[order_b][ok[order_b]], late[order_b][ok[order_b]], "--", color="k", lw=1.2,
                label=r"$\alpha_c(\beta)$, late positions")
    ax.set_xlabel(r"query/key scale $\beta$")
    ax.set_ylabel(r"self-attention residual strength $\alpha_{SA}$")
    ax.set_ylim(extent[2], extent[3])
    T = "T \\to \\infty" if diagram.T is None else f"T = {diagram.T}"
    mask = f", {diagram.late['mask']}" if diagram.late else ""
    ax.set_title(f"{diagram.arch}{mask}, {diagram.depth} blocks, ${T}$, $\\epsilon = {diagram.eps:g}$")
    handles = [Patch(color=c, label=n) for c, n in zip(PHASE_COLOURS, ("trainable", "rank collapse",
                                                                        "entropy collapse"))]
    ax.legend(handles=handles + ax.get_lines()[:2], loc="upper right", fontsize=8, framealpha=0.9)
    return save(fig, path)


def plot_profiles(profiles: dict, path=None, ax=None, title=None, measured: dict | None = None,
                  dashed: dict | None = None):
    """Cosine similarity against depth, one line per label.

    ``measured``: {label: (layers, mean, err)} drawn as points with error bars;
    ``dashed``: {label: rho} drawn dashed in the same colour (e.g. the T -> oo theory).
    """
    plt = pyplot()
    fig = ax.figure if ax is not None else plt.figure(figsize=(5.5, 4.0))
    ax = ax or fig.add_subplot(111)
    for k, (label, rho) in enumerate(profiles.items()):
        line, = ax.plot(np.arange(len(rho)), rho, lw=1.6, label=label)
        if dashed and label in dashed:
            ax.plot(np.arange(len(dashed[label])), dashed[label], "--", lw=1.0, color=line.get_color())
        if measured and label in measured:
            layers, mean, err = measured[label]
            ax.errorbar(layers, mean, yerr=err, fmt="o", ms=3.5, color=line.get_color(), capsize=2)
    ax.set_xlabel("block")
    ax.set_ylabel(r"cosine similarity $\rho$")
    ax.set_ylim(-0.02, 1.02)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return save(fig, path)


def plot_positions(positions, path=None, ax=None, title=None, depths=None, measured: dict | None = None,
                   every: int = 1):
    """rho of each position with the others against the position, one line per depth (a masked stack).

    ``positions``: (depth + 1, T) from :func:`numeric.position_profile`; ``depths``: which blocks to draw
    (default: about five spread over the depth); ``measured``: {block: (mean, err)} drawn as points at every
    ``every``-th position.
    """
    plt = pyplot()
    fig = ax.figure if ax is not None else plt.figure(figsize=(5.5, 4.0))
    ax = ax or fig.add_subplot(111)
    depth = len(positions) - 1
    if depths is None:
        depths = sorted({1, max(1, depth // 4), max(1, depth // 2), depth}) if depth else [0]
    t = np.arange(positions.shape[-1])
    for block in depths:
        line, = ax.plot(t, positions[block], lw=1.6, label=f"block {block}", zorder=3)
        if measured and block in measured:
            mean, err = measured[block]
            ax.errorbar(t[::every], mean[::every], yerr=err[::every], fmt="o", ms=2.5, color=line.get_color(),
                        capsize=1.5, alpha=0.7, zorder=2)
    ax.set_xlabel("position t")
    ax.set_ylabel(r"$\rho_t$: cosine with the other positions")
    ax.set_ylim(-0.02, 1.02)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return save(fig, path)
