"""``sigprop figure 1d``: the paper's Fig. 1(d) for a real Hugging Face BERT at its own initialisation.

A ``transformers.BertModel`` built from ``BertConfig(num_hidden_layers=60)``
(d = 768, 12 heads, GELU, post-LN, LayerNorm eps 1e-12, every weight N(0, 0.02^2),
biases 0) is fed random token ids (T = 128). Lines: the finite-T theory for the
model as read by :mod:`verify.adapters` (its inputs' rho0 from the embedding
tables, :func:`verify.adapters.embedding_state`); dots: the measured token cosine
similarity after every layer, mean over initialisations +- one standard error.
One curve per attention skip strength alpha_sa, set on the real model by
:func:`verify.adapters.apply_init` (alpha_sa = 1 is BERT as initialised), and
the strength :func:`verify.recommend.recommend` proposes; every curve keeps the
model's own query/key scale beta, which the recommendation also keeps (BERT's
beta = 0.14 is far below the entropy-collapse limit 2.7 at T = 128). HF's init puts the
60-layer model at the edge of rank collapse (rho -> 0.99); a stronger skip
keeps the tokens apart.
"""

from __future__ import annotations

import numpy as np

from . import adapters
from .recommend import build_bert, inputs_for, recommend

#: Sizes: the figure, and a quick version for tests.
SIZES = {False: dict(config=dict(), layers=60, T=128, inits=4, batch=2, alphas=(1.0, 1.5, 2.0)),
         True: dict(config=dict(hidden_size=128, num_attention_heads=2, intermediate_size=512), layers=12, T=32,
                    inits=2, batch=2, alphas=(1.0, 2.0))}


def profiles(quick: bool = False, seed: int = 0) -> dict:
    """{alpha_sa: (theory (L+1,), measured Estimate (L+1,))} and the recommendation, for the figure's BERT."""
    from transformers import BertConfig

    size = SIZES[bool(quick)]
    config = BertConfig(num_hidden_layers=size["layers"], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        **size["config"])
    T = size["T"]
    advice = recommend(config, T, seed=seed)
    alphas = sorted(set(size["alphas"]) | {round(advice.alpha_sa, 3)})
    theory = {a: [] for a in alphas}
    runs = {a: [] for a in alphas}
    for k in range(size["inits"]):
        model = build_bert(config, seed=seed + k)
        q0, rho0 = adapters.embedding_state(model, T)
        beta = float(np.mean([r.beta(T).mean() for r in adapters.read(model)]))
        x = inputs_for(model, T, batch=size["batch"], seed=seed + 1000 + k)
        applied = 1.0
        for a in alphas:
            adapters.apply_init(model, beta, a / applied, seq_len=T)
            applied = a
            theory[a].append(adapters.predict_cosine_profile(model, T, rho0=rho0, q0=q0))
            runs[a].append(adapters.measure_overlaps(model, x))
    out = {a: (np.mean(theory[a], axis=0), adapters.overlaps_estimate(runs[a])) for a in alphas}
    return {"profiles": out, "recommendation": advice, "config": config, "T": T, "inits": size["inits"]}


def figure_1d(path=None, quick: bool = False, seed: int = 0):
    """Draw Fig. 1(d) for BERT to ``path``; return the path (see the module docstring)."""
    from numeric.plotting import pyplot, save

    data = profiles(quick, seed)
    config, advice = data["config"], data["recommendation"]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for k, (alpha, (theory, measured)) in enumerate(sorted(data["profiles"].items())):
        colour = f"C{k}"
        label = rf"$\alpha_{{SA}} = {alpha:g}$" + (" (BERT as initialised)" if alpha == 1.0 else "") + \
            (" (recommended)" if np.isclose(alpha, advice.alpha_sa, rtol=1e-3) else "")
        layers = np.arange(len(theory))
        ax.plot(layers, theory, color=colour, lw=1.5, label=label)
        ax.errorbar(layers, measured.mean, yerr=measured.se, fmt="o", ms=2.5, capsize=1.5, color=colour)
    ax.axhline(1.0 - advice.eps, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("layer")
    ax.set_ylabel(r"cosine similarity $\rho$")
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.02)
    ax.set_title(f"BERT from config at its own init: {config.num_hidden_layers} layers, d = {config.hidden_size}, "
                 f"T = {data['T']}\nlines: finite-T theory; dots: measured, mean $\\pm$ 1 SE over {data['inits']} "
                 "initialisations", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    return save(fig, path)
