"""``sigprop train``: one training run of :mod:`verify.training` from the command line (imports no torch itself).

numeric/cli.py finds this module through the entry-point group ``sigprop.commands``
(pyproject.toml); torch is imported when the command runs.

    sigprop train --arch post-ln --depth 12 --beta 0.1 --alpha_sa 1.5 --steps 1000 --csv curve.csv --plot curve.png
    sigprop train --arch torch-pre-ln --depth 6 --d-model 64 --text my.txt --json
    sigprop train --arch llama --depth 4 --d-model 64 --heads 4 --kv-heads 2 --beta 0.5 --alpha_sa 1.5 --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from derive.parameters import ACTIVATIONS, ARCHITECTURES, BLOCK, BY_NAME

from .train_config import DECODER_ARCHS, DECODER_DEFAULT_ACTIVATION, MODEL_ARCHS, OBJECTIVE_NAMES, TrainConfig

#: The one-line help of ``sigprop train`` in ``sigprop --help``.
HELP = ("train a spec, a real encoder (masked-language modelling) or GPT-2 / LLaMA (next-byte prediction) on real "
        "text; predicted phase vs loss (needs torch)")
#: What ``sigprop train --help`` says the command does.
DESCRIPTION = ("Train one model from its initialisation (a spec with beta, alpha_sa, ... as the theory's, or a real "
               "PyTorch/BERT encoder or a transformers GPT-2 / LLaMA decoder set to them) by byte-level "
               "masked-language modelling (15 % masking; a decoder, --mask causal or --arch gpt2/llama: next-byte "
               "prediction) on the "
               "Python standard library's source (or --text FILE), with the paper's AdamW recipe (section C): "
               "linear warm-up and decay, gradient clipping. Prints the phase predicted at initialisation by the "
               "finite-T theory at T = seq-len, the held-out loss before and after training, the unigram loss "
               "(the byte frequencies), the no-context loss (the best model that sees its own input byte only: "
               "where a model that learnt nothing from the context ends) and the bigram loss (the previous byte "
               "as context).")



def _defaults() -> dict:
    """TrainConfig's defaults (verify.train_config imports neither torch nor SymPy)."""
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _beta(text: str):
    """A positive float, or 'none' (a real encoder keeps its own query/key scale)."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"beta must be a number or 'none', got {text!r}") from None


def add_model_arguments(parser, *, grid: bool = False) -> None:
    """Model, initialisation, data and optimiser options shared by ``train`` and ``train-diagram``."""
    d = _defaults()
    parser.add_argument("--arch", default="post-ln", choices=ARCHITECTURES + MODEL_ARCHS,
                        help="a spec (post-ln Alg. 1, pre-ln Alg. 2, gain-post-ln Alg. 3, gain-pre-ln), a real "
                             "encoder (torch-post-ln, torch-pre-ln: nn.TransformerEncoderLayer stacks; bert: "
                             "BertModel) or a real decoder (gpt2: GPT2LMHeadModel; llama: LlamaForCausalLM, from "
                             "their configs at random initialisation), set to --beta/--alpha_sa by apply_init "
                             "(default: post-ln)")
    parser.add_argument("--depth", type=int, default=d["depth"], help=f"blocks (default: {d['depth']})")
    parser.add_argument("--d-model", dest="d_model", type=int, default=d["d_model"],
                        help=f"width d (default: {d['d_model']})")
    parser.add_argument("--heads", type=int, default=d["heads"], help=f"attention heads (default: {d['heads']})")
    parser.add_argument("--d-ff", dest="d_ff", type=int, default=None,
                        help="MLP width of a real model (intermediate size; default: 4 d; the specs' MLP has width d)")
    parser.add_argument("--kv-heads", dest="kv_heads", type=int, default=None,
                        help="llama: key/value heads, a divisor of --heads (default: as many as heads)")
    parser.add_argument("--init-std", dest="init_std", type=float, default=None,
                        help="gpt2/llama: initializer_range, every weight N(0, std^2) (default: transformers' 0.02)")
    parser.add_argument("--max-positions", dest="max_positions", type=int, default=None,
                        help="gpt2/llama: the model's positions (n_positions / max_position_embeddings), at least "
                             "--seq-len (default: transformers' 1024 / 2048)")
    parser.add_argument("--activation", default=None, choices=ACTIVATIONS,
                        help="MLP activation (default: relu; gpt2 gelu_new, llama silu, their own)")
    parser.add_argument("--mask", default=None,
                        help="attention mask of a named spec: causal or sliding:W (a decoder; needs --objective "
                             "next-token) (default: none, an encoder)")
    parser.add_argument("--objective", default=None, choices=OBJECTIVE_NAMES,
                        help="mlm: masked-language modelling (encoders); next-token: next-byte prediction "
                             "(decoders: with --mask, and gpt2/llama) (default: next-token for gpt2/llama, else mlm)")
    if not grid:
        parser.add_argument("--beta", type=_beta, default=d["beta"],
                            help=f"{BY_NAME['beta'].help} (default: {d['beta']:g}; 'none': a real encoder keeps "
                                 "its own)")
    for par in BLOCK:
        if par.name == "beta" or (grid and par.name == "alpha_sa"):
            continue
        parser.add_argument(f"--{par.name}", f"--{par.name.replace('_', '-')}", dest=par.name, type=float,
                            default=par.default, help=f"{par.help} (default: {par.default:g})")
    parser.add_argument("--steps", type=int, default=d["steps"], help=f"optimiser steps (default: {d['steps']})")
    parser.add_argument("--seq-len", dest="seq_len", type=int, default=d["seq_len"],
                        help=f"sequence length T in bytes; the theory is evaluated at this T (default: {d['seq_len']})")
    parser.add_argument("--batch", type=int, default=d["batch"], help=f"sequences per step (default: {d['batch']})")
    parser.add_argument("--lr", type=float, default=d["lr"], help=f"AdamW peak learning rate (default: {d['lr']:g})")
    parser.add_argument("--warmup", type=float, default=d["warmup"],
                        help=f"fraction of the steps of linear warm-up (default: {d['warmup']:g})")
    parser.add_argument("--weight-decay", dest="weight_decay", type=float, default=d["weight_decay"],
                        help=f"AdamW weight decay on weights, not biases (default: {d['weight_decay']:g})")
    parser.add_argument("--clip", type=float, default=d["clip"],
                        help=f"gradient clipping: largest global gradient norm (default: {d['clip']:g})")
    parser.add_argument("--mask-prob", dest="mask_prob", type=float, default=d["mask_prob"],
                        help=f"fraction of bytes predicted (default: {d['mask_prob']:g})")
    parser.add_argument("--eval-every", dest="eval_every", type=int, default=d["eval_every"],
                        help=f"steps between held-out evaluations (default: {d['eval_every']})")
    parser.add_argument("--eval-sequences", dest="eval_sequences", type=int, default=d["eval_sequences"],
                        help=f"fixed held-out sequences (default: {d['eval_sequences']})")
    parser.add_argument("--text", metavar="FILE", default=None,
                        help="train on this text file (its last 10%% held out) instead of the standard library")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="training precision (default: float32; the theory is float64)")
    parser.add_argument("--eps", type=float, default=d["eps"],
                        help=f"rank collapse: rho after the last block > 1 - eps (default: {d['eps']:g})")
    parser.add_argument("--ipr-threshold", dest="ipr_threshold", type=float, default=d["ipr_threshold"],
                        help=f"entropy collapse: the first attention layer's IPR above this (default: "
                             f"{d['ipr_threshold']:g})")


def add_arguments(parser) -> None:
    """The options of ``sigprop train``."""
    add_model_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the batches (default: 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--csv", metavar="CSV", help="write the loss curve (step, lr, train_loss, heldout_loss)")
    parser.add_argument("--plot", metavar="PNG", help="draw the loss curve with the unigram and bigram losses")
    parser.add_argument("--json", action="store_true", help="print one JSON object (phase, rho_final, losses, curve)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


#: Options that are not TrainConfig fields.
NOT_CONFIG = ("command", "func", "csv", "plot", "json", "progress", "scheduler", "workers", "betas", "alphas",
              "seeds", "threshold", "resume", "cells", "timeout")


def config_from(args, **overrides):
    """The TrainConfig of the parsed options (``--beta none`` for a real model's own query/key scale); an
    objective or activation not given is the arch's: next-token and the family's own activation for a decoder
    (:data:`verify.train_config.DECODER_DEFAULT_ACTIVATION`), masked-language modelling and relu otherwise."""
    values = {k: v for k, v in vars(args).items() if k not in NOT_CONFIG}
    values.update(overrides)
    decoder = values.get("arch") in DECODER_ARCHS
    if values.get("objective") is None:
        values["objective"] = "next-token" if decoder else "mlm"
    if values.get("activation") is None:
        values["activation"] = DECODER_DEFAULT_ACTIVATION[values["arch"]] if decoder else "relu"
    return TrainConfig(**values)


class progress_bar:
    """A tqdm bar on stderr (a no-op when disabled or without tqdm); ``with`` gives its update callable."""

    def __init__(self, total: int, desc: str, unit: str, enabled: bool = True):
        self.total, self.desc, self.unit, self.enabled, self.bar = total, desc, unit, enabled, None

    def __enter__(self):
        if not self.enabled:
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        self.bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, file=sys.stderr, dynamic_ncols=True,
                        delay=1.0)
        return self.bar.update

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()


def run(args) -> None:
    """Train, then print the result (a table or ``--json``) and write ``--csv`` / ``--plot``."""
    from .training import load_text, train

    config = config_from(args)
    load_text(config)
    with progress_bar(config.steps, "train", "step", args.progress) as bar:
        result = train(config, progress=bar)
    if args.csv:
        result.to_csv(args.csv)
    if args.plot:
        result.plot(args.plot)
    if args.json:
        print(json.dumps(result.summary()))
    else:
        print(report(result))
    for path in (args.csv, args.plot):
        if path:
            print(f"wrote {path}", file=sys.stderr)


def report(result) -> str:
    """A few lines: the prediction at initialisation and the losses against the unigram and bigram losses."""
    s, c = result.summary(), result.config
    beta = "own" if c.beta is None else f"{c.beta:g}"
    kv = f" ({c.kv_heads} kv)" if c.kv_heads is not None else ""
    late = "" if s["rho_profile_late"] is None else f", late quarter {s['rho_profile_late'][-1]:.6f}"
    return "\n".join([
        f"# {c.arch_name}, {c.depth} blocks, d = {c.d_model}, {c.heads} heads{kv}, beta = {beta}, alpha_sa = "
        f"{c.alpha_sa:g}, T = {c.seq_len}, {c.steps} steps, lr {c.lr:g}, seed {c.seed}",
        f"predicted at init:  {s['phase']} (rho after the last block {s['rho_final']:.6f}{late}, input rho0 "
        f"{s['rho0']:.4f}, first-layer IPR {s['ipr_first']:.3f}, alpha_c {result.prediction.alpha_critical:.4g})",
        f"held-out loss:      {s['initial_heldout_loss']:.4f} at step 0 -> {s['final_heldout_loss']:.4f} "
        f"(best {s['best_heldout_loss']:.4f}){' DIVERGED' if s['diverged'] else ''}",
        f"baselines:          unigram {s['unigram_loss']:.4f}, no context {s['context_free_loss']:.4f}, bigram "
        f"{s['bigram_loss']:.4f} nats per byte",
        f"time:               {s['seconds']:.1f} s"])


def main(argv=None) -> int:
    """Stand-alone entry point: ``python -m verify.train_cli ...`` is ``sigprop train ...``."""
    from numeric.cli import main as sigprop

    return sigprop(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
