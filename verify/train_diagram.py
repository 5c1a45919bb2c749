"""A measured trainability diagram: training runs over a (beta, alpha_sa) grid against the theory's phases.

The paper's Fig. 1(c) is a prediction at initialisation; Fig. 1(e) checks it with
a few training runs. :func:`measure` trains every point of a grid (``seeds``
initialisations each) through :func:`verify.training.run_many` and
:class:`MeasuredDiagram` sets the outcome against the phases of
:func:`numeric.trainability_diagram` at the runs' T (finite-T theory, from the
runs' measured input rho0).

**Trained.** A run has learnt something from the context when its final
held-out loss lies below the no-context loss (the best masked-language model
that sees its own input byte but nothing around it,
:meth:`verify.corpus.Corpus.context_free_nats`; BERT's rule lets 10 % of the
predicted bytes through, so this is 0.3 nats below the unigram loss of the
byte frequencies, which is where a model whose tokens have collapsed onto one
vector sits) by at least ``threshold`` of the gap between the no-context and
the bigram loss (the previous byte as context: what reading one neighbour is
worth):

    trained  <=>  final_heldout_loss <= no_context - threshold (no_context - bigram).

On the standard library's source the gap is about 0.5 nats, so the default
``threshold`` = 0.25 asks for 0.13 nats below the no-context level: about three
standard errors of the held-out estimate (~2,500 masked bytes, per-byte loss
spread ~2 nats), and every run is scored on the same bytes, so differences
between runs are tighter still. A cell counts as trained when the mean over
its seeds is.

**Decoders** (``--arch gpt2|llama``, or a spec with the causal mask): next-byte
prediction. A model that reads no context beyond its own input byte is the
bigram model (its input is the previous byte), so the no-context level is the
bigram loss on the predicted pairs, and one more neighbour is the byte before
it: the trigram loss (:meth:`verify.corpus.Corpus.trigram_nats`; 1.84 nats on
the standard library against the bigram's 2.45), so that

    trained  <=>  final_heldout_loss <= no_context - threshold (no_context - trigram),

2.30 nats by default: a quarter of what the second byte of context is worth.
The theory drawn under a GPT-2 or LLaMA grid is the decoder's own
position-resolved diagram (:func:`theory_for`).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

import numeric
from numeric import validation as check

from .train_config import DECODER_ARCHS, THRESHOLD
from .training import PHASES, TrainConfig, run_many


def grid_configs(base: TrainConfig, betas, alphas, seeds: int) -> list[TrainConfig]:
    """One config per (alpha_sa, beta, seed), alpha-major: ``base`` with beta, alpha_sa and seed replaced."""
    betas, alphas = _grid("betas", betas), _grid("alphas", alphas)
    check.positive("betas", betas)
    check.nonnegative("alphas", alphas)
    seeds = check.count("seeds", seeds)
    return [dataclasses.replace(base, beta=float(b), alpha_sa=float(a), seed=base.seed + s)
            for a in alphas for b in betas for s in range(seeds)]


def _grid(name, values) -> np.ndarray:
    arr = check.as_array(name, values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D list of values, got shape {arr.shape}")
    if len(np.unique(arr)) != arr.size:
        raise ValueError(f"{name} must not repeat a value, got {values!r}")
    return arr


@dataclass
class MeasuredDiagram:
    """Final held-out losses on the grid (len(alphas), len(betas), seeds) and the theory's phases.

    ``theory``: :func:`numeric.trainability_diagram` on a fine grid spanning the measured one,
    at T = seq_len and the runs' mean input rho0 (the boundaries drawn over the losses).
    """

    base: TrainConfig
    betas: np.ndarray
    alphas: np.ndarray
    seeds: int
    results: list
    threshold: float = THRESHOLD
    theory: object = None

    def _cells(self, value) -> np.ndarray:
        data = np.array([value(r) for r in self.results], dtype=float)
        return data.reshape(len(self.alphas), len(self.betas), self.seeds)

    @property
    def final_loss(self) -> np.ndarray:
        return self._cells(lambda r: r.final_heldout_loss)

    @property
    def phase(self) -> np.ndarray:
        """The predicted phase per cell: the one most seeds got (they differ only by the measured rho0)."""
        phases = self._cells(lambda r: r.prediction.phase).astype(int)
        return np.apply_along_axis(lambda v: np.bincount(v, minlength=3).argmax(), -1, phases)

    @property
    def unigram_loss(self) -> float:
        return float(np.mean([r.unigram_loss for r in self.results]))

    @property
    def context_free_loss(self) -> float:
        return float(np.mean([r.context_free_loss for r in self.results]))

    @property
    def bigram_loss(self) -> float:
        return float(np.mean([r.bigram_loss for r in self.results]))

    @property
    def neighbour(self) -> str:
        """What one more neighbour of context is, beyond what the no-context model sees: the previous byte
        (``bigram``) for masked-language modelling, the byte before the input (``trigram``) for next-byte
        prediction, whose input already is the previous byte."""
        return "trigram" if self.base.objective == "next-token" else "bigram"

    @functools.cached_property
    def neighbour_loss(self) -> float:
        """The loss of the :attr:`neighbour` model: for next-byte prediction the trigram on the runs' own evaluation
        windows (:meth:`verify.corpus.Corpus.trigram_nats`; every predicted byte with two before it in its window,
        where the no-context level takes every predicted byte), the runs' bigram loss otherwise."""
        if self.neighbour == "trigram":
            from .training import heldout_set, load_text
            text = load_text(self.base)
            inputs, targets = (t.numpy() for t in heldout_set(text, self.base))
            keep = targets[:, 1:] >= 0
            return text.trigram_nats(inputs[:, :-1][keep], inputs[:, 1:][keep], targets[:, 1:][keep])
        return self.bigram_loss

    @property
    def cutoff(self) -> float:
        """The loss a cell must reach to count as trained (module docstring)."""
        return self.context_free_loss - self.threshold * (self.context_free_loss - self.neighbour_loss)

    @property
    def trained(self) -> np.ndarray:
        """Per cell: the seed-mean final loss is at most :attr:`cutoff` (a diverged run counts as not trained)."""
        loss = np.nan_to_num(self.final_loss, nan=np.inf).mean(axis=-1)
        return loss <= self.cutoff

    def agreement(self) -> dict:
        """Counts of (predicted phase, trained) and the fraction of cells where the prediction holds."""
        phase, trained = self.phase, self.trained
        counts = {f"{PHASES[p]}, {'trained' if t else 'not trained'}": int(((phase == p) & (trained == t)).sum())
                  for p in PHASES for t in (True, False)}
        agree = (phase == 0) == trained
        return {"cells": int(phase.size), "agree": int(agree.sum()), "fraction": float(agree.mean()),
                "counts": counts, "cutoff": self.cutoff, "threshold": self.threshold,
                "unigram_loss": self.unigram_loss, "context_free_loss": self.context_free_loss,
                "bigram_loss": self.bigram_loss, "neighbour": self.neighbour, "neighbour_loss": self.neighbour_loss}

    def table(self) -> str:
        """The agreement table and one line per cell (predicted phase, loss mean and spread, trained)."""
        a = self.agreement()
        n = a["neighbour"]
        gap = a["context_free_loss"] - a["neighbour_loss"]
        extra = f", trigram {a['neighbour_loss']:.4f}" if n == "trigram" else ""
        lines = [f"# losses in nats per predicted byte: unigram {a['unigram_loss']:.4f}, no context "
                 f"{a['context_free_loss']:.4f}, bigram {a['bigram_loss']:.4f}{extra}",
                 f"# trained: seed-mean final held-out loss <= no context - {self.threshold:g} (no context - {n}) "
                 f"= {a['context_free_loss']:.4f} - {self.threshold:g} x {gap:.4f} = {a['cutoff']:.4f}",
                 f"{'predicted':>18}  {'trained':>8}  {'not trained':>11}"]
        for p, name in PHASES.items():
            lines.append(f"{name:>18}  {a['counts'][f'{name}, trained']:>8}  {a['counts'][f'{name}, not trained']:>11}")
        lines.append(f"agreement: {a['agree']} of {a['cells']} cells ({a['fraction']:.0%}): trainable <=> trained")
        lines.append(f"{'beta':>8}  {'alpha_sa':>8}  {'predicted':>16}  {'rho_L':>10}  {'loss mean':>9}  "
                     f"{'min':>7}  {'max':>7}  trained")
        loss, phase, trained = self.final_loss, self.phase, self.trained
        rho = self._cells(lambda r: r.prediction.rho[-1]).mean(axis=-1)
        for i, alpha in enumerate(self.alphas):
            for j, beta in enumerate(self.betas):
                cell = loss[i, j]
                lines.append(f"{beta:>8.4g}  {alpha:>8.4g}  {PHASES[int(phase[i, j])]:>16}  {rho[i, j]:>10.6f}  "
                             f"{np.nanmean(cell):>9.4f}  {np.nanmin(cell):>7.4f}  {np.nanmax(cell):>7.4f}  "
                             f"{'yes' if trained[i, j] else 'no'}")
        return "\n".join(lines)

    def to_csv(self, path) -> None:
        """One row per cell: beta, alpha_sa, predicted phase, final loss mean/min/max over seeds, trained."""
        loss, phase, trained = self.final_loss, self.phase, self.trained
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["beta", "alpha_sa", "phase", "phase_name", "seeds", "final_loss_mean", "final_loss_min",
                             "final_loss_max", "unigram_loss", "context_free_loss", "cutoff", "trained"])
            for i, alpha in enumerate(self.alphas):
                for j, beta in enumerate(self.betas):
                    cell = loss[i, j]
                    writer.writerow([repr(float(beta)), repr(float(alpha)), int(phase[i, j]),
                                     PHASES[int(phase[i, j])], self.seeds, repr(float(np.nanmean(cell))),
                                     repr(float(np.nanmin(cell))), repr(float(np.nanmax(cell))),
                                     repr(self.unigram_loss), repr(self.context_free_loss), repr(self.cutoff),
                                     bool(trained[i, j])])

    def plot(self, path=None):
        """Measured final losses per cell, the theory's phase boundaries over them; saved to ``path``."""
        from .plotting_training import plot_measured_diagram
        return plot_measured_diagram(self, path)


#: Grid points per axis of the theory drawn under a decoder's measured diagram: the position-resolved theory runs
#: every point as one batch of T x T overlap matrices, so its grid is coarser than a spec's.
DECODER_THEORY_POINTS = 24


def theory_for(base: TrainConfig, betas, alphas, rho0: float, points: int = 96):
    """The theory's diagram on a fine grid spanning ``betas`` x ``alphas`` (log-spaced beta when it spans a decade).

    A spec: :func:`numeric.trainability_diagram` at T = seq_len from the runs' mean input ``rho0``. A decoder
    (``gpt2``, ``llama``): :func:`verify.recommend_decoders.diagram` of the model built from ``base`` (its seed),
    its layers read at alpha_sa = 1 and every head set to each beta, the embedding overlaps its own (``rho0`` is
    not used), on :data:`DECODER_THEORY_POINTS` per axis with alpha_sa from half the grid's smallest (the
    position-resolved theory does not reach alpha_sa -> 0, where a narrow model's stream shrinks to its norms'
    eps)."""
    lo, hi = float(np.min(betas)), float(np.max(betas))
    decoder = base.arch in DECODER_ARCHS
    points = DECODER_THEORY_POINTS if decoder else points
    fine_betas = np.geomspace(lo / 1.5, hi * 1.5, points) if hi / lo > 10 else np.linspace(lo * 0.8, hi * 1.2, points)
    top = float(np.max(alphas)) * 1.2 + 0.1
    if decoder:
        return _decoder_theory(base, fine_betas, np.linspace(float(np.min(alphas)) / 2, top, points))
    fine_alphas = np.linspace(0.0, top, points)
    return numeric.trainability_diagram(base.arch, base.depth, betas=fine_betas, alphas=fine_alphas, eps=base.eps,
                                        T=base.seq_len, rho0=rho0, activation=base.activation,
                                        criterion=base.criterion, ipr_threshold=base.ipr_threshold,
                                        alpha_mlp=base.alpha_mlp, sigma_v2=base.sigma_v2, sigma_w2=base.sigma_w2,
                                        sigma_b2=base.sigma_b2)


def _decoder_theory(base: TrainConfig, betas, alphas):
    from . import recommend_decoders, training_decoders

    model = training_decoders.build_model(base)
    return recommend_decoders.diagram(model.unit, model.Q0, base.seq_len, betas=betas, alphas=alphas, eps=base.eps,
                                      ipr_threshold=base.ipr_threshold, name=f"{base.arch} decoder")


def measure(base: TrainConfig, betas, alphas, *, seeds: int = 1, threshold: float = THRESHOLD, **run_options):
    """Train the grid (:func:`grid_configs`) with :func:`verify.training.run_many` and return
    (:class:`MeasuredDiagram`, :class:`verify.training.Runs`); ``run_options`` go to run_many
    (scheduler, workers, csv_path, resume, threads, progress). Runs that fail (an error, a worker that died
    again and again) raise ValueError naming them once the others have finished; the finished runs stay in
    the CSV, and running again retries only the failed ones."""
    if isinstance(base.arch, str) and base.arch not in check.ARCHITECTURES + DECODER_ARCHS:
        raise ValueError(f"train-diagram needs a spec (one of {check.ARCHITECTURES}) or a decoder "
                         f"({', '.join(DECODER_ARCHS)}): a real encoder's (beta, alpha_sa) diagram is its own, see "
                         f"sigprop recommend --plot; got {base.arch!r}")
    check.interval("threshold", threshold, 0.0, 1.0, closed=False)
    configs = grid_configs(base, betas, alphas, seeds)
    theory = theory_for(base, betas, alphas, float("nan")) if base.arch in DECODER_ARCHS else None
    runs = run_many(configs, **run_options)
    if runs.failed:
        failed = "; ".join(f"beta={configs[k].beta:g}, alpha_sa={configs[k].alpha_sa:g}, seed={configs[k].seed}: {err}"
                           for k, err in sorted(runs.failed.items()))
        raise ValueError(f"{len(runs.failed)} of {len(configs)} runs failed ({failed}); the finished runs are kept "
                         "in the CSV: run again to retry the failed ones")
    diagram = MeasuredDiagram(base, np.asarray(betas, float), np.asarray(alphas, float), seeds, runs.results,
                              float(threshold))
    if theory is None:
        rho0 = float(np.nanmean([r.prediction.rho0 for r in runs.results]))
        theory = theory_for(base, diagram.betas, diagram.alphas, rho0)
    diagram.theory = theory
    return diagram, runs
