"""``sigprop figure decoders``: GPT-2 and LLaMA from their configs at their default initialisation (issue 16).

Left and middle: rho by layer, all pairs and the last quarter of positions, for a GPT-2 config and a LLaMA
config with grouped-query attention: the position-resolved theory of the config's init rule
(:func:`verify.adapters_decoders.config_readings`, lines) and models built from the config (dots, mean +- one
standard error over independently initialised models, random token ids). Right: the LLaMA config's trainability
diagram over (beta, alpha_sa) at the same T (:func:`verify.recommend_decoders.diagram`), its default init
(beta of std 0.02, alpha_sa = 1) marked.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

#: Figure sizes: the issue's (24 layers, hidden 256, T = 128, 8 models) and a quick one for tests.
SIZES = {False: dict(layers=24, d=256, T=128, models=8, batch=4, diagram_layers=24, betas=8, alphas=7),
         True: dict(layers=3, d=64, T=32, models=3, batch=2, diagram_layers=3, betas=3, alphas=3)}


def configs(layers: int, d: int):
    """The two configs of the figure: GPT-2 (4 heads) and LLaMA with 8 query heads sharing 2 K/V heads."""
    from transformers import GPT2Config, LlamaConfig

    return {"GPT-2": GPT2Config(n_layer=layers, n_embd=d, n_head=4, vocab_size=8192),
            "LLaMA (GQA 8/2)": LlamaConfig(num_hidden_layers=layers, hidden_size=d, num_attention_heads=8,
                                           num_key_value_heads=2, intermediate_size=int(d * 8 / 3) // 8 * 8,
                                           vocab_size=8192)}


def profiles(config, T: int, models: int, batch: int, seed: int = 0) -> dict:
    """Theory (the config's init rule) and measurement (``models`` built models) of rho by layer: all pairs and
    the last quarter of positions."""
    from numeric.causal import late

    from . import adapters_decoders as ad
    from .recommend_decoders import build

    run = ad.decoder_run(ad.config_readings(config), ad.config_embedding_overlaps(config, T), T, index=late(T))
    every, last = [], []
    for k in range(models):
        model = build(config, seed + k)
        ids = ad.random_ids(model, T, batch=batch, seed=seed + 1000 + k)
        every.append(ad.measure(model, ids))
        last.append(ad.measure(model, ids, tokens="late"))
    every, last = np.array(every), np.array(last)
    se = lambda a: a.std(axis=0, ddof=1) / np.sqrt(a.shape[0])
    return {"theory": run.rho, "theory_late": run.rho_tokens, "measured": every.mean(0), "se": se(every),
            "measured_late": last.mean(0), "se_late": se(last)}


def figure_decoders(path=None, quick: bool = False, seed: int = 0):
    """Draw the figure (module docstring) to ``path``; the numbers go to a JSON beside it."""
    from numeric.plotting import pyplot, save

    from . import recommend_decoders as rd

    s = SIZES[bool(quick)]
    T = s["T"]
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    record = {"sizes": s}
    for ax, (name, config) in zip(axes[:2], configs(s["layers"], s["d"]).items()):
        data = profiles(config, T, s["models"], s["batch"], seed)
        layers = np.arange(data["theory"].size)
        for key, colour, label in (("", "C0", "all pairs"), ("_late", "C3", "last quarter")):
            ax.plot(layers, data["theory" + key], "-", color=colour, label=f"theory, {label}")
            ax.errorbar(layers, data["measured" + key], yerr=data["se" + key], fmt="o", ms=3.5, color=colour,
                        capsize=2, label=f"measured, {label}")
        gap = max(np.max(np.abs(data["theory"] - data["measured"])),
                  np.max(np.abs(data["theory_late"] - data["measured_late"])))
        ax.set_title(f"{name}, {s['layers']} layers, hidden {s['d']}, T = {T}, std 0.02\n"
                     f"{s['models']} models (mean $\\pm$ SE); largest |theory - measured| = {gap:.3f}", fontsize=9)
        ax.set_xlabel("layer")
        ax.set_ylabel(r"$\rho$ (cosine similarity of tokens)")
        ax.legend(fontsize=8)
        record[name] = {k: [float(x) for x in v] for k, v in data.items()}
        record[name]["max_abs_gap"] = float(gap)
    llama = configs(s["diagram_layers"], s["d"])["LLaMA (GQA 8/2)"]
    r = rd.recommend(llama, T)
    betas = np.linspace(0.05, 3.2, s["betas"])
    alphas = np.linspace(0.5, 3.5, s["alphas"])
    diagram = r.diagram(betas, alphas)
    diagram.plot(ax=axes[2])
    axes[2].plot([r.beta_model], [1.0], "o", ms=9, mfc="white", mec="k", label="default init (std 0.02)")
    axes[2].legend(fontsize=8, loc="upper right", framealpha=0.9)
    axes[2].set_title(f"LLaMA (GQA 8/2), {s['diagram_layers']} layers, hidden {s['d']}, T = {T}: phases\n"
                      f"default init beta = {r.beta_model:.3g}; entropy limit beta = {r.beta_limit:.3g}", fontsize=9)
    record["diagram"] = {"betas": betas.tolist(), "alphas": alphas.tolist(), "phase": diagram.phase.tolist(),
                         "critical_alpha": [float(x) for x in diagram.critical_alpha], "beta_model": r.beta_model,
                         "beta_limit": r.beta_limit}
    fig.tight_layout()
    if path is not None:
        pathlib.Path(path).with_suffix(".json").write_text(json.dumps(record, indent=1))
    return save(fig, path)
