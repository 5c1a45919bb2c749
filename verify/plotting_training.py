"""Drawings of training runs: loss curves with their spread over seeds, and the measured diagram.

Colours of the phases follow :mod:`numeric.plotting` (the paper's Fig. 1c: blue
trainable, yellow rank collapse, red entropy collapse).
"""

from __future__ import annotations

import numpy as np

from numeric.plotting import PHASE_COLOURS, pyplot, save


def curve_band(results):
    """(steps, mean, min, max) of the held-out loss over runs that share their evaluation steps."""
    steps = np.array([row[0] for row in results[0].curve], dtype=float)
    losses = np.full((len(results), len(steps)), np.nan)
    for k, result in enumerate(results):
        values = np.array([row[3] for row in result.curve], dtype=float)
        losses[k, :len(values)] = values[:len(steps)]
    return steps, np.nanmean(losses, axis=0), np.nanmin(losses, axis=0), np.nanmax(losses, axis=0)


def plot_curves(groups: dict, ax, colours: dict | None = None) -> None:
    """One line per group (label -> runs): the mean held-out loss over seeds, the band their min to max."""
    for k, (label, results) in enumerate(groups.items()):
        colour = (colours or {}).get(label, f"C{k}")
        steps, mean, lo, hi = curve_band(results)
        ax.plot(steps, mean, color=colour, lw=1.6, label=f"{label} ({len(results)} seeds)")
        ax.fill_between(steps, lo, hi, color=colour, alpha=0.25, lw=0)


def mark_baselines(ax, results) -> None:
    """The unigram, no-context and bigram losses (means over ``results``) as horizontal lines."""
    for attr, style, label in (("unigram_loss", "--", "unigram (byte frequencies)"),
                               ("context_free_loss", "-.", "no context (own input byte only)"),
                               ("bigram_loss", ":", "bigram (previous byte)")):
        ax.axhline(float(np.mean([getattr(r, attr) for r in results])), color="grey", ls=style, lw=1.0, label=label)


def plot_measured_diagram(diagram, path=None):
    """Left: the theory's phases with the grid's outcomes (circle: trained, cross: not); right: the measured
    final held-out loss per cell (seed mean; a black frame: trained) with the theory's boundaries drawn over it."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    theory = diagram.theory
    log_beta = theory.betas.max() / theory.betas.min() > 10
    _theory_panel(left, theory, log_beta)
    loss = np.nanmean(diagram.final_loss, axis=-1)
    B, A = np.meshgrid(diagram.betas, diagram.alphas)
    trained = diagram.trained
    handles = left.get_legend().legend_handles
    handles += [left.scatter(B[trained], A[trained], s=40, c="w", edgecolors="k", label="trained", zorder=3),
                left.scatter(B[~trained], A[~trained], s=40, c="k", marker="x", label="not trained", zorder=3)]
    left.legend(handles=handles + left.get_lines()[:1], loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3,
                fontsize=7, framealpha=0.9)
    lo, hi = min(np.nanmin(loss), diagram.bigram_loss), max(np.nanmax(loss), diagram.unigram_loss)
    points = right.scatter(B, A, c=loss, s=260, marker="s", cmap="viridis_r", vmin=lo, vmax=hi,
                           edgecolors=np.where(trained, "k", "none").ravel(), linewidths=1.5, zorder=3)
    fig.colorbar(points, ax=right, label="final held-out loss (nats per byte)")
    for i, j in np.ndindex(loss.shape):
        right.annotate(f"{loss[i, j]:.2f}", (diagram.betas[j], diagram.alphas[i]), textcoords="offset points",
                       xytext=(0, -15), ha="center", va="top", fontsize=7, zorder=4)
    right.set_xlim(left.get_xlim())
    right.set_ylim(left.get_ylim())
    _boundaries(right, theory)
    for ax in (left, right):
        if log_beta:
            from matplotlib.ticker import NullFormatter
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())          # labels on decades only: no overlapping text
        ax.set_xlabel(r"query/key scale $\beta$")
        ax.set_ylabel(r"self-attention residual strength $\alpha_{SA}$")
    c = diagram.base
    right.set_title(f"measured: {c.steps} steps, lr {c.lr:g}, {diagram.seeds} seed(s) per cell\n"
                    f"unigram {diagram.unigram_loss:.3f}, no context {diagram.context_free_loss:.3f}, trained below "
                    f"{diagram.cutoff:.3f}", fontsize=9)
    return save(fig, path)


def _theory_panel(ax, theory, log_beta: bool) -> None:
    """The theory's phases (colours of Fig. 1c) on cells around its grid values, with alpha_c(beta) (a
    mesh, not an image: the grid of beta may be geometric)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    ax.pcolormesh(_edges(theory.betas, log_beta), _edges(theory.alphas, False), theory.phase,
                  cmap=ListedColormap(PHASE_COLOURS), vmin=-0.5, vmax=2.5)
    finite = np.isfinite(theory.critical_alpha)
    ax.plot(theory.betas[finite], theory.critical_alpha[finite], color="k", lw=1.2, label=r"$\alpha_c(\beta)$")
    T = "T \\to \\infty" if theory.T is None else f"T = {theory.T}"
    ax.set_title(f"theory: {theory.arch}, {theory.depth} blocks, ${T}$, $\\epsilon = {theory.eps:g}$", fontsize=9)
    ax.set_ylim(theory.alphas.min(), theory.alphas.max())
    ax.legend(handles=[Patch(color=c, label=n) for c, n in zip(PHASE_COLOURS, ("trainable", "rank collapse",
                                                                                "entropy collapse"))],
              loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=7, framealpha=0.9)


def _edges(values, log: bool) -> np.ndarray:
    """Cell edges around sorted grid values (midpoints; geometric midpoints on a log axis)."""
    v = np.sort(np.asarray(values, dtype=float))
    if v.size == 1:
        return np.array([v[0] / 1.5, v[0] * 1.5]) if log else np.array([v[0] - 0.5, v[0] + 0.5])
    if log:
        mids = np.sqrt(v[1:] * v[:-1])
        return np.concatenate([[v[0] ** 2 / mids[0]], mids, [v[-1] ** 2 / mids[-1]]])
    mids = (v[1:] + v[:-1]) / 2
    return np.concatenate([[2 * v[0] - mids[0]], mids, [2 * v[-1] - mids[-1]]])


def _boundaries(ax, theory) -> None:
    """The theory's trainable-region boundary (solid) and entropy-collapse onset (dashed) as contour lines."""
    from matplotlib.lines import Line2D

    B, A = np.meshgrid(theory.betas, theory.alphas)
    handles = []
    for mask, style, colour, label in (((theory.phase == 0), "-", "k", "theory: trainable region's edge"),
                                       ((theory.phase == 2), "--", PHASE_COLOURS[2], "theory: entropy collapse from")):
        if mask.any() and not mask.all():
            ax.contour(B, A, mask.astype(float), levels=[0.5], colors=colour, linestyles=style, linewidths=1.5)
            handles.append(Line2D([], [], color=colour, ls=style, label=label))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=7)
