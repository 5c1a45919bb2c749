"""``sigprop recommend``: the command line of :mod:`verify.recommend` (this module imports no torch).

numeric/cli.py finds this module through the entry-point group ``sigprop.commands``
(pyproject.toml) and registers the subcommand from :data:`HELP`, :data:`DESCRIPTION`,
:func:`add_arguments` and :func:`run`; torch (and transformers for ``--model bert``)
are imported only when it runs.

    sigprop recommend --layers 24 --d-model 256 --heads 4 --d-ff 512 --seq-len 64
    sigprop recommend --model bert --layers 60 --seq-len 128 --check
    sigprop recommend --model llama --layers 80 --d-model 8192 --heads 64 --kv-heads 8 --d-ff 28672
    sigprop recommend --model gpt2 --layers 24 --d-model 256 --heads 4 --d-ff 1024 --seq-len 128 --check
"""

from __future__ import annotations

import json
import math
import sys

from numeric import validation as check

#: PyTorch's nn.TransformerEncoderLayer defaults (and nn.Transformer's 6 layers); BertConfig's for --model bert;
#: GPT2Config's and LlamaConfig's (transformers) for the decoders.
DEFAULTS = {"torch": dict(layers=6, d_model=512, heads=8, d_ff=2048, activation="relu"),
            "bert": dict(layers=12, d_model=768, heads=12, d_ff=3072, activation="gelu"),
            "gpt2": dict(layers=12, d_model=768, heads=12, d_ff=3072, activation="gelu_new", init_std=0.02),
            "llama": dict(layers=32, d_model=4096, heads=32, kv_heads=None, d_ff=11008, activation="silu",
                          init_std=0.02, rope_theta=10000.0)}
MODELS = tuple(DEFAULTS)
#: Options that only a decoder takes.
DECODER_OPTIONS = ("kv_heads", "init_std", "rope_theta")


def add_arguments(parser) -> None:
    """The options of ``sigprop recommend``."""
    parser.add_argument("--model", default="torch", metavar="{torch,bert,gpt2,llama}",
                        help="torch.nn.TransformerEncoderLayer stack (default), transformers BertModel, or the "
                             "decoders GPT2Model and LlamaModel (answered from their config by the init rule)")
    parser.add_argument("--layers", type=int, help="number of layers (default: 6 torch, 12 bert)")
    parser.add_argument("--d-model", dest="d_model", type=int, help="width (default: 512 torch, 768 bert)")
    parser.add_argument("--heads", type=int, help="attention heads (default: 8 torch, 12 bert)")
    parser.add_argument("--d-ff", dest="d_ff", type=int, help="feed-forward width (default: 2048 torch, 3072 bert)")
    parser.add_argument("--kv-heads", dest="kv_heads", type=int,
                        help="key/value heads of --model llama (grouped-query attention; default: --heads)")
    parser.add_argument("--init-std", dest="init_std", type=float,
                        help="initializer_range of --model gpt2|llama (default: 0.02)")
    parser.add_argument("--rope-theta", dest="rope_theta", type=float, help="RoPE's theta of --model llama "
                                                                           "(default: 10000)")
    parser.add_argument("--vocab", type=int, help="vocabulary size of --model gpt2|llama (default: the config's)")
    parser.add_argument("--norm-first", dest="norm_first", action="store_true", help="pre-LN (torch only)")
    parser.add_argument("--activation", choices=("relu", "gelu"), help="MLP activation (default: relu torch, "
                                                                         "gelu bert)")
    parser.add_argument("--seq-len", dest="seq_len", type=int, default=128, help="sequence length T (default: 128)")
    parser.add_argument("--margin", type=float, default=0.25,
                        help="relative margin: beta <= beta_limit / (1 + margin), alpha_sa >= (1 + margin) alpha_c "
                             "(default: 0.25)")
    parser.add_argument("--eps", type=float, default=0.01,
                        help="rank collapse means rho after the last layer > 1 - eps (default: 0.01)")
    parser.add_argument("--rho0", type=float, default=None,
                        help="input cosine similarity (default: 0 torch; BERT's embeddings at random token ids)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model's initialisation and inputs")
    parser.add_argument("--finite-width", dest="finite_width", action="store_true",
                        help="the theory at the model's own width and head size (the finite-width attention moments, "
                             "issue 19; RoPE layers' rows by numeric.rope_width) instead of infinite width (sliding "
                             "windows: refused)")
    parser.add_argument("--check", action="store_true",
                        help="build the whole model, measure its profile, apply the recommendation, measure again")
    parser.add_argument("--batch", type=int, default=2, help="sequences per measurement with --check (default: 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", metavar="PNG", help="also draw the model's trainability diagram at T = seq-len "
                                                      "with the model as initialised and the recommendation marked")


#: The one-line help of ``sigprop recommend`` in ``sigprop --help``.
HELP = ("beta and alpha_sa for a real torch encoder, a BERT config or a GPT-2 / LLaMA decoder config, with a margin "
        "(needs torch; transformers for --model bert|gpt2|llama)")
#: What ``sigprop recommend --help`` says the command does.
DESCRIPTION = ("Recommend the query/key scale beta and the attention skip strength alpha_sa that keep a "
               "torch.nn.TransformerEncoderLayer stack, a Hugging Face BertModel, or a GPT2Model / LlamaModel "
               "decoder (described by the options below) clear of entropy and rank collapse at sequence length T, by "
               "the finite-T theory of the model's own initial weights (position by position for the causal "
               "decoders). Without --check one encoder layer is built from the options and repeated to the full "
               "depth, and a decoder is answered from its config's init rule without building it; with --check the "
               "whole model is built, measured, rescaled by apply_init and measured again.")


def config_of(args):
    """An EncoderConfig, a BertConfig, a GPT2Config or a LlamaConfig from the options (model defaults filled in)."""
    if args.model not in DEFAULTS:
        raise ValueError(f"--model must be one of {', '.join(MODELS)}, got {args.model!r}")
    if args.model in ("gpt2", "llama"):
        return decoder_config(args)
    for name in DECODER_OPTIONS + ("vocab",):
        if getattr(args, name, None) is not None:
            raise ValueError(f"--{name.replace('_', '-')} applies to --model gpt2 or llama")
    values = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in DEFAULTS[args.model].items()}
    for name in ("layers", "d_model", "heads", "d_ff"):
        check.count(f"--{name.replace('_', '-')}", values[name])
    if values["d_model"] % values["heads"]:
        raise ValueError(f"--d-model ({values['d_model']}) must be divisible by --heads ({values['heads']})")
    check.count("--batch", args.batch)
    if args.model == "bert":
        if args.norm_first:
            raise ValueError("BERT is post-LN: --norm-first applies to --model torch only")
        from transformers import BertConfig
        return BertConfig(num_hidden_layers=values["layers"], hidden_size=values["d_model"],
                          num_attention_heads=values["heads"], intermediate_size=values["d_ff"],
                          hidden_act=values["activation"], max_position_embeddings=max(512, args.seq_len))
    from .recommend import EncoderConfig
    return EncoderConfig(num_layers=values["layers"], d_model=values["d_model"], nhead=values["heads"],
                         dim_feedforward=values["d_ff"], norm_first=args.norm_first, activation=values["activation"])


def decoder_config(args):
    """A transformers GPT2Config or LlamaConfig from the options (its defaults filled in), checked by name."""
    values = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in DEFAULTS[args.model].items()}
    for name in ("layers", "d_model", "heads", "d_ff"):
        check.count(f"--{name.replace('_', '-')}", values[name])
    check.count("--batch", args.batch)
    if args.norm_first or args.activation is not None or args.rho0 is not None:
        raise ValueError("--norm-first, --activation and --rho0 do not apply to a decoder: GPT-2 and LLaMA are "
                         "pre-norm with their own activation, and start from their own embeddings")
    if not (values["init_std"] > 0 and math.isfinite(values["init_std"])):
        raise ValueError(f"--init-std must be a finite number > 0, got {values['init_std']!r}")
    check.divides("--heads", values["heads"], "--d-model", values["d_model"])
    extra = {} if args.vocab is None else {"vocab_size": check.count("--vocab", args.vocab)}
    if args.model == "gpt2":
        if args.kv_heads is not None or args.rope_theta is not None:
            raise ValueError("--kv-heads and --rope-theta apply to --model llama (GPT-2 has full heads and learned "
                             "positions)")
        from transformers import GPT2Config
        return GPT2Config(n_layer=values["layers"], n_embd=values["d_model"], n_head=values["heads"],
                          n_inner=values["d_ff"], initializer_range=values["init_std"],
                          n_positions=max(1024, args.seq_len), **extra)
    kv = values["kv_heads"] or values["heads"]
    check.count("--kv-heads", kv)
    check.divides("--kv-heads", kv, "--heads", values["heads"])
    if not (values["rope_theta"] > 1 and math.isfinite(values["rope_theta"])):
        raise ValueError(f"--rope-theta must be a finite number > 1, got {values['rope_theta']!r}")
    from transformers import LlamaConfig
    return LlamaConfig(num_hidden_layers=values["layers"], hidden_size=values["d_model"],
                       num_attention_heads=values["heads"], num_key_value_heads=kv, intermediate_size=values["d_ff"],
                       initializer_range=values["init_std"], max_position_embeddings=max(2048, args.seq_len),
                       rope_parameters={"rope_type": "default", "rope_theta": values["rope_theta"]}, **extra)


def run(args) -> None:
    """Print the recommendation (and, with ``--check``, measured profiles before and after applying it)."""
    from . import recommend as rec

    config = config_of(args)
    options = dict(margin=args.margin, eps=args.eps, rho0=args.rho0, seed=args.seed, finite_width=args.finite_width)
    if args.model in ("gpt2", "llama"):
        options = dict(margin=args.margin, eps=args.eps, finite_width=args.finite_width)
        if args.check:
            options["seed"] = args.seed
    if not args.check:
        result = rec.recommend(config, args.seq_len, **options)
        print(json.dumps(result.summary()) if args.json else result)
    else:
        check = rec.check(config, args.seq_len, batch=args.batch, **options)
        result = check.recommendation
        if args.json:
            print(json.dumps({**result.summary(), **check.measured()}))
        else:
            print(result)
            print(check.table())
    if args.plot:
        result.plot(args.plot)
        print(f"wrote {args.plot}", file=sys.stderr if args.json else sys.stdout)


def main(argv=None) -> int:
    """Stand-alone entry point: ``python -m verify.recommend_cli ...`` is ``sigprop recommend ...``."""
    from numeric.cli import main as sigprop

    return sigprop(["recommend", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
