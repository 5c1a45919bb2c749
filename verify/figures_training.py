"""``sigprop figure 1e`` and ``sigprop figure 5``: the paper's training figures, at CPU scale or the paper's sizes.

Both train byte-level masked-language models on the Python standard library's source
(:mod:`verify.training`; the paper trains on TinyStories, which is not available
offline), ``seeds`` initialisations per curve, all runs through
:func:`verify.training.run_many` (a LocalCluster of two single-threaded workers on a
CPU, one run after another on a GPU). Each curve is the seed-mean held-out loss,
its band the seeds' minimum to maximum. The runs are kept in a CSV next to the
image (``figure-1e.csv``), from which a second call resumes (delete it to retrain), and
the per-curve numbers (predicted phase, rho after the last block, final held-out loss
mean, standard deviation and range over seeds) in ``figure-1e.json``.

The size follows the device (``$SIGPROP_DEVICE``; ``sigprop figure 1e --device cuda``):

- **CPU** (9 runs for Fig. 1e, 6 for Fig. 5, two at a time; about 40 CPU seconds a run;
  3 min 15 s and 2 min 11 s of wall time on an idle 2-core machine; measured numbers in README): 12 post-LN blocks, d = 64, 4 heads, T = 32, batch 32, AdamW at
  lr 2e-3 for 800 steps. The paper's lr (1e-4, 5e-4) over a couple of thousand
  steps barely moves a d = 64 model off the no-context loss (issue 17's
  measurement; in 1500 steps of the trainable curve 1e-3 reaches 2.49 nats,
  2e-3 2.21, the no-context level being 2.96).
- **GPU, the paper's sizes** (section C; the full figures do not fit a session's GPU time; README shows Fig. 5's curves at this model size for 500 steps, one seed):
  Fig. 1e with d = 600, 6 heads, 60 blocks (12 for the large-beta curves, as
  the paper), batch 64, lr 1e-4, T = 128, 5000 steps; Fig. 5 with 30 blocks,
  d = 480, one head, lr 5e-4.

**Fig. 1e** (section C.1): the variances of section C.1 (sigma_w2 = sigma_v2 = 0.24,
sigma_b2 = 4e-4, as ``sigprop figure 1c``), one curve per phase and a second
trainable one. At 12 blocks the critical alpha_sa is 0.55 (T = 32), so the
CPU curves take alpha_sa relative to it: rank collapse at alpha_sa = 0.35
(rho after the last block 1 - 2.5e-5; the paper's alpha_sa = 1 at 60 blocks
gives 1 - 1.4e-5), trainable at 1 (rho 0.61), entropy collapse at beta = 4,
alpha_sa = 1 (first-layer IPR 0.72 at T = 32): one curve per phase (the paper's
second trainable curve is left out to keep the figure within the CPU budget). A trainable
alpha_sa close to the edge (0.7: rho 0.93) does not leave the no-context level in
1000 steps at this size (the measured diagram of README): the figure shows the
phases at points that are clearly inside them. The paper's beta = 1.8
(above the T -> oo threshold sqrt 2) has an IPR of 0.43 at T = 32 and 0.39 at
T = 128, below this repository's finite-T threshold of 0.5: the finite-T
theory calls it trainable, and the GPU figure trains it beside beta = 4.

**Fig. 5** (section D.1): vanilla post-LN against gain-controlled post-LN at
alpha_sa = alpha_mlp = 1, beta = 0.02, section C.1's MLP variances
with unit value variance (sigma_v2 = 1): after 12 blocks the vanilla stack is
rank-collapsed (rho = 1 - 2.6e-3 at T = 32; 1 - 1e-5 after 20 blocks) and the
gain-controlled one is not (rho = 0.14). The CPU figure has 4 heads (the theory
does not depend on them; the GPU figure has the paper's one). (With the paper's
sigma_v2 = 0.24 vanilla post-LN is not collapsed: rho = 0.90 after 20 blocks, alpha_c = 0.92 < 1 at 30; Fig. 2's
sigma_w2 = 2 collapses it, but then neither model learns from the context in
1200 steps, issue 17's measurement.)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from .train_config import TrainConfig

#: The section C.1 variances (numeric.figures.FIG1_PARAMS: BERT's std 0.02 at d = 600).
FIG1_VARIANCES = dict(sigma_w2=0.24, sigma_v2=0.24, sigma_b2=0.0004, alpha_mlp=1.0)


@dataclasses.dataclass(frozen=True)
class Curve:
    """One curve of a figure: a label and what differs from the base config (the plot adds the predicted phase)."""

    label: str
    changes: dict


def sizes(figure: str, device: str, quick: bool) -> dict:
    """The base config, curves and seeds of ``figure`` ("1e" or "5") for a device type ("cpu" or "cuda")."""
    if quick:
        return _quick(figure)
    table = {("1e", "cpu"): _fig1e_cpu, ("1e", "cuda"): _fig1e_paper, ("5", "cpu"): _fig5_cpu,
             ("5", "cuda"): _fig5_paper}
    return table[(figure, device)]()


def _fig1e_cpu() -> dict:
    base = TrainConfig(arch="post-ln", depth=12, d_model=64, heads=4, seq_len=32, batch=32, steps=800, lr=2e-3,
                       eval_every=100, eval_sequences=256, beta=0.02, alpha_sa=1.0, **FIG1_VARIANCES)
    return dict(base=base, seeds=3, curves=_fig1e_curves(beta_small=0.02, alphas=(0.35, 1.0), betas_large=(4.0,),
                                                         alpha_large=1.0))


def _fig1e_paper() -> dict:
    base = TrainConfig(arch="post-ln", depth=60, d_model=600, heads=6, seq_len=128, batch=64, steps=5000, lr=1e-4,
                       eval_every=250, eval_sequences=512, beta=0.02, alpha_sa=1.0, device="cuda", **FIG1_VARIANCES)
    curves = _fig1e_curves(beta_small=0.02, alphas=(1.0, 1.5, 2.0), betas_large=(1.8, 4.0), alpha_large=1.5)
    curves[-2:] = [Curve(c.label + ", 12 blocks", {**c.changes, "depth": 12}) for c in curves[-2:]]
    return dict(base=base, seeds=3, curves=curves)


def _fig1e_curves(beta_small, alphas, betas_large, alpha_large) -> list:
    """The paper's curves: small beta with the rank-collapse and the trainable alphas, then the large betas."""
    small = [Curve(f"beta = {beta_small:g}, alpha_SA = {a:g}", dict(beta=beta_small, alpha_sa=a)) for a in alphas]
    return small + [Curve(f"beta = {b:g}, alpha_SA = {alpha_large:g}", dict(beta=b, alpha_sa=alpha_large))
                    for b in betas_large]


#: Fig. 5's variances: section C.1's MLP (sigma_w2 = 0.24, sigma_b2 = 4e-4) with unit value variance, so that
#: 20 vanilla blocks at alpha_SA = 1 are deep in rank collapse (rho = 1 - 1e-5) and gain-controlled ones are not.
FIG5_VARIANCES = dict(sigma_w2=0.24, sigma_v2=1.0, sigma_b2=0.0004, alpha_mlp=1.0)


def _fig5_cpu() -> dict:
    base = TrainConfig(arch="post-ln", depth=12, d_model=64, heads=4, seq_len=32, batch=32, steps=800, lr=2e-3,
                       eval_every=100, eval_sequences=256, beta=0.02, alpha_sa=1.0, **FIG5_VARIANCES)
    return dict(base=base, seeds=3, curves=_fig5_curves())


def _fig5_paper() -> dict:
    base = TrainConfig(arch="post-ln", depth=30, d_model=480, heads=1, seq_len=128, batch=64, steps=5000, lr=5e-4,
                       eval_every=250, eval_sequences=512, beta=0.02, alpha_sa=1.0, device="cuda", **FIG5_VARIANCES)
    return dict(base=base, seeds=3, curves=_fig5_curves())


def _fig5_curves() -> list:
    return [Curve("vanilla post-LN", dict(arch="post-ln")), Curve("gain-controlled post-LN", dict(arch="gain-post-ln"))]


def _quick(figure: str) -> dict:
    """Tiny sizes for tests: the same curves, two blocks of width 16, a few steps, two seeds, in this process."""
    full = _fig1e_cpu() if figure == "1e" else _fig5_cpu()
    base = dataclasses.replace(full["base"], depth=2, d_model=16, heads=full["base"].heads if figure == "5" else 2,
                               seq_len=16, batch=4, steps=4, eval_every=2, eval_sequences=8)
    return dict(base=base, seeds=2, curves=full["curves"], in_process=True)


def run_curves(spec: dict, csv_path, progress=None) -> dict:
    """{label: [TrainResult per seed]} for the curves of ``spec`` (:func:`sizes`), through run_many."""
    from .training import IN_PROCESS, run_many

    base, seeds = spec["base"], spec["seeds"]
    configs = [dataclasses.replace(base, seed=s, **curve.changes) for curve in spec["curves"] for s in range(seeds)]
    scheduler = IN_PROCESS if (base.device != "cpu" or spec.get("in_process")) else None
    runs = run_many(configs, scheduler=scheduler, workers=2, csv_path=csv_path, progress=progress)
    if runs.failed:
        raise ValueError(f"{len(runs.failed)} runs failed: {sorted(runs.failed.values())}; the finished runs are in "
                         f"{csv_path}: draw again to retry the rest")
    return {curve.label: runs.results[k * seeds:(k + 1) * seeds] for k, curve in enumerate(spec["curves"])}


def summary(groups: dict) -> list[dict]:
    """Per curve: predicted phase, rho after the last block, final held-out loss mean, std and range over seeds."""
    rows = []
    for label, results in groups.items():
        final = np.array([r.final_heldout_loss for r in results])
        rows.append(dict(label=label, phase=results[0].prediction.phase_name,
                         rho_final=float(np.mean([r.prediction.rho[-1] for r in results])),
                         final_mean=float(np.mean(final)), final_std=float(np.std(final, ddof=1)),
                         final_min=float(np.min(final)), final_max=float(np.max(final)), seeds=len(results)))
    return rows


def draw_training_figure(figure: str, path, quick: bool, title: str):
    """Train the curves of ``figure`` on the device of ``$SIGPROP_DEVICE`` and draw them to ``path``."""
    from numeric.plotting import PHASE_COLOURS, pyplot, save

    from .plotting_training import mark_baselines, plot_curves
    from .training import resolve_device

    device = resolve_device(None)
    spec = sizes(figure, device.type, quick)
    spec["base"] = dataclasses.replace(spec["base"], device=str(device))
    path = Path(path)
    groups = run_curves(spec, path.with_suffix(".csv"))
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4), gridspec_kw=dict(width_ratios=(3, 2)))
    phase_colour = {"trainable": PHASE_COLOURS[0], "rank collapse": PHASE_COLOURS[1],
                    "entropy collapse": PHASE_COLOURS[2]}
    groups = {f"{label} ({results[0].prediction.phase_name})": results for label, results in groups.items()}
    colours = _colours(groups, phase_colour)
    plot_curves(groups, left, colours)
    all_results = [r for rs in groups.values() for r in rs]
    mark_baselines(left, all_results)
    left.set_xlabel("step")
    left.set_ylabel("held-out masked-byte loss (nats)")
    finals = [r.final_heldout_loss for r in all_results]
    left.set_ylim(min(min(finals), all_results[0].bigram_loss) - 0.15, max(r.unigram_loss for r in all_results) + 0.4)
    left.legend(fontsize=7)
    for label, results in groups.items():
        right.plot(results[0].prediction.rho, color=colours[label], label=label)
    right.set_xlabel("block")
    right.set_ylabel(r"predicted $\rho$ at initialisation (finite-T theory)")
    right.set_ylim(0.0, 1.02)
    right.legend(fontsize=7, loc="lower right")
    b = spec["base"]
    fig.suptitle(f"{title}: {b.depth} blocks, d = {b.d_model}, {b.heads} head(s), T = {b.seq_len}, batch {b.batch}, "
                 f"lr {b.lr:g}, {b.steps} steps, {spec['seeds']} seeds per curve (band: min to max)", fontsize=10)
    save(fig, path)
    rows = summary(groups)
    path.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    return rows


def _colours(groups: dict, phase_colour: dict) -> dict:
    """The phase's colour for the first curve of each phase; a darker shade for a second one."""
    seen: dict = {}
    out = {}
    for label, results in groups.items():
        phase = results[0].prediction.phase_name
        shade = seen.get(phase, 0)
        seen[phase] = shade + 1
        out[label] = phase_colour[phase] if shade == 0 else _darker(phase_colour[phase], shade)
    return out


def _darker(hex_colour: str, steps: int) -> tuple:
    rgb = np.array([int(hex_colour[k:k + 2], 16) for k in (1, 3, 5)]) / 255.0
    return tuple(rgb * 0.65 ** steps)


def figure_1e(path=None, quick: bool = False):
    """Fig. 1(e): held-out loss of post-LN models initialised in each phase (module docstring)."""
    path = path or "figure-1e.png"
    return draw_training_figure("1e", path, quick, "Fig. 1(e) at this scale")


def figure_5(path=None, quick: bool = False):
    """Fig. 5: vanilla against gain-controlled post-LN at alpha_SA = alpha_MLP = 1 (module docstring)."""
    path = path or "figure-5.png"
    return draw_training_figure("5", path, quick, "Fig. 5 at this scale")
