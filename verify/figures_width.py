"""``sigprop figure width`` (issue 19): the finite-width terms of one attention layer at long context.

Three panels, all at orthogonal or correlated Gaussian inputs (q = 1):

(a) E|o_t|^2/d of one attention layer against T/d at d = 64 (two heads of 32):
    the finite-width theory (:func:`numeric.attention_overlaps` with d, solid),
    the infinite-width finite-T theory (d=None, dashed) and Monte Carlo
    (:mod:`verify.width`, dots +- one standard error), for several sigma_a.
(b) A long-context model: width 4096, 32 heads of 128, sigma_a = 1.6 (std 0.02
    initialisation), T = 1k ... 128k: the infinite-width q_out (the 1/T-like IPR
    term) against the finite-width term q_out(d) - q_out(oo).
(c, d) Where the finite-width term changes the cosine rho = p_out/q_out of one
    attention layer's output by more than 0.01, over (T/d, sigma_a) at d = 256
    (four heads of 64), input cosine 0 (c) and 0.5 (d): |rho(d) - rho(oo)|, with
    the 0.01 contour.

The numbers are written beside the image (same name, ``.json``).
"""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np

#: Panel sizes: full and quick (previews).
SIZES = {
    False: dict(a_d=64, a_heads=2, a_T=(16, 32, 64, 128, 256, 512, 1024), a_sigmas=(0.5, 1.5, 3.0), a_seeds=32,
                b_T=(1024, 4096, 16384, 32768, 65536, 131072),
                c_d=256, c_heads=4, c_ratio=(0.125, 0.5, 2.0, 8.0), c_sigmas=(0.5, 1.0, 2.0, 3.0, 4.0, 5.0)),
    True: dict(a_d=64, a_heads=2, a_T=(32, 256), a_sigmas=(1.5,), a_seeds=16, b_T=(1024, 16384),
               c_d=256, c_heads=4, c_ratio=(0.5, 8.0), c_sigmas=(1.0, 4.0)),
}
#: The long-context model of panel (b).
LONG = dict(d=4096, d_head=128, sigma_a=1.6)
#: Input cosines of panels (c) and (d).
RHOS_C = (0.0, 0.5)


def _beta(sigma_a: float, T: int) -> float:
    """beta of a score scale sigma_a = beta sqrt(ln T) at q = 1, p = 0 (paper eq. 9, Result 1's scale)."""
    return sigma_a / math.sqrt(math.log(T))


def data(quick: bool = False, device=None, seed: int = 0) -> dict:
    """The numbers of the three panels (module docstring), JSON-ready."""
    from numeric import attention_overlaps

    from .width import overlap_samples

    s = SIZES[bool(quick)]
    out = {"a": [], "b": [], "c": []}
    d, heads = s["a_d"], s["a_heads"]
    for sigma_a in s["a_sigmas"]:
        for T in s["a_T"]:
            beta = _beta(sigma_a, T)
            finite = attention_overlaps(beta, T=T, d=d, d_head=d // heads)
            infinite = attention_overlaps(beta, T=T)
            q_mc, _ = overlap_samples(beta, T=T, d=d, seeds=s["a_seeds"], heads=heads, device=device, seed=seed)
            out["a"].append(dict(d=d, heads=heads, T=T, sigma_a=sigma_a, q_finite=finite[0], q_infinite=infinite[0],
                                 q_mc=q_mc.mean, q_se=q_mc.se, seeds=q_mc.n))
    for T in s["b_T"]:
        beta = _beta(LONG["sigma_a"], T)
        finite = attention_overlaps(beta, T=T, d=LONG["d"], d_head=LONG["d_head"])
        infinite = attention_overlaps(beta, T=T)
        out["b"].append(dict(T=T, **LONG, q_finite=finite[0], q_infinite=infinite[0], p_finite=finite[1],
                             p_infinite=infinite[1]))
    out["c"] = cosine_map(s)
    return out


def cosine_map(s: dict) -> list:
    """Panels (c, d): rho_out at finite and infinite width over (T/d, sigma_a) and the input cosines RHOS_C."""
    from numeric import attention_overlaps

    out = []
    d, heads = s["c_d"], s["c_heads"]
    for rho_in in RHOS_C:
        for ratio in s["c_ratio"]:
            T = max(2, int(round(ratio * d)))
            for sigma_a in s["c_sigmas"]:
                beta = _beta(sigma_a, T)
                qf, pf = attention_overlaps(beta, p=rho_in, T=T, d=d, d_head=d // heads)
                qi, pi = attention_overlaps(beta, p=rho_in, T=T)
                out.append(dict(d=d, heads=heads, T=T, ratio=ratio, sigma_a=sigma_a, rho_in=rho_in,
                                rho_finite=pf / qf, rho_infinite=pi / qi))
    return out


def plot(numbers: dict):
    """The figure of :func:`data`'s numbers."""
    from numeric.plotting import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(20.5, 4.4))
    ax = axes[0]
    rows = numbers["a"]
    for k, sigma_a in enumerate(sorted({r["sigma_a"] for r in rows})):
        sel = [r for r in rows if r["sigma_a"] == sigma_a]
        color = f"C{k}"
        ratio = np.array([r["T"] / r["d"] for r in sel])
        ax.plot(ratio, [r["q_finite"] for r in sel], "-", color=color, label=rf"$\sigma_a = {sigma_a}$, finite d")
        ax.plot(ratio, [r["q_infinite"] for r in sel], "--", color=color, label="infinite width")
        ax.errorbar(ratio, [r["q_mc"] for r in sel], yerr=[r["q_se"] for r in sel], fmt="o", color=color, ms=4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("T / d")
    ax.set_ylabel(r"$E|o_t|^2/d$")
    ax.set_title(f"(a) one attention layer, d = {rows[0]['d']}, {rows[0]['heads']} heads: theory and torch (dots)",
                 fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    rows = numbers["b"]
    T = np.array([r["T"] for r in rows])
    ax.plot(T, [r["q_infinite"] for r in rows], "s--", label=r"infinite width: $E\sum_s A_{ts}^2$ term")
    ax.plot(T, [r["q_finite"] - r["q_infinite"] for r in rows], "o-", label="finite-width term")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("T")
    ax.set_ylabel(r"contribution to $E|o_t|^2/d$")
    ax.set_title(f"(b) d = {rows[0]['d']}, d_head = {rows[0]['d_head']}, $\\sigma_a$ = {rows[0]['sigma_a']} "
                 "(std 0.02 init)", fontsize=9)
    ax.legend(fontsize=8)
    for ax, rho_in, label in zip(axes[2:], RHOS_C, "cd"):
        rows = [r for r in numbers["c"] if r["rho_in"] == rho_in]
        ratios, sigmas = sorted({r["ratio"] for r in rows}), sorted({r["sigma_a"] for r in rows})
        grid = np.full((len(sigmas), len(ratios)), np.nan)
        for r in rows:
            grid[sigmas.index(r["sigma_a"]), ratios.index(r["ratio"])] = abs(r["rho_finite"] - r["rho_infinite"])
        mesh = ax.pcolormesh(np.log2(ratios), sigmas, np.log10(np.maximum(grid, 1e-6)), shading="nearest",
                             cmap="viridis", vmin=-4, vmax=0)
        fig.colorbar(mesh, ax=ax, label=r"$\log_{10}|\rho_{out}(d) - \rho_{out}(\infty)|$")
        if len(ratios) > 1 and len(sigmas) > 1 and np.nanmin(grid) < 0.01 < np.nanmax(grid):
            ax.contour(np.log2(ratios), sigmas, grid, levels=[0.01], colors="w")
        ax.set_xlabel(r"$\log_2(T/d)$")
        ax.set_ylabel(r"$\sigma_a$")
        ax.set_title(f"({label}) one layer's output cosine, d = {rows[0]['d']}, {rows[0]['heads']} heads, input "
                     f"cosine {rho_in}: white = 0.01", fontsize=8)
    fig.tight_layout()
    return fig


def figure_width(path=None, quick: bool = False, device=None, seed: int = 0):
    """``sigprop figure width``: the module docstring's four panels; the numbers go beside ``path`` as JSON."""
    from numeric.plotting import save

    numbers = data(quick, device, seed)
    fig = plot(numbers)
    if path is not None:
        pathlib.Path(path).with_suffix(".json").write_text(json.dumps(numbers, indent=1))
    return save(fig, path)
