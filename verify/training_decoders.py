"""Hugging Face decoders in :mod:`verify.training`: GPT-2 and LLaMA built from their configs, trained on next bytes.

A decoder is one more model family of the training runs, not another loop: this module builds the model
(:func:`build`), wraps it for the loop of :mod:`verify.training` (:class:`DecoderModel`: token ids in, logits
over the 256 byte values out, its decoder layers as the blocks of the step-0 gradient norms) and gives the
prediction at initialisation (:func:`predict`); the data, the objective (:class:`verify.training.NextToken`),
the optimiser and the measurements are the shared ones.

- **Model.** ``transformers.GPT2LMHeadModel`` / ``LlamaForCausalLM`` from a ``GPT2Config`` / ``LlamaConfig``
  (:func:`hf_config`) at the library's own random initialisation (every weight N(0, init_std^2), GPT-2's
  residual projections / sqrt(2 L), norms' weights 1; no download), seeded by the run's seed, eager attention
  (what :mod:`verify.adapters_decoders` reads), no dropout (the theory's deterministic forward pass; the
  encoders of the training runs have none either). Vocabulary: the 256 byte values (next-byte prediction has
  no mask id). The model keeps its own embeddings (GPT-2's learned absolute positions, LLaMA's RoPE), its
  final norm and its own LM head (GPT-2's tied to the token embedding).
- **Initialisation.** With ``beta`` given, the model is set to (beta, alpha_sa) by the one rescaling rule of
  the decoders, :func:`verify.adapters_decoders.apply_init` (through :func:`verify.adapters.apply_init`, as
  :meth:`verify.recommend_decoders.DecoderRecommendation.apply`): every head's query rows scaled to beta at
  T = seq_len, both branch outputs of layer l divided by alpha_sa^l. It is applied in two calls, (beta, 1)
  and then (beta, alpha_sa) (the second leaves the queries at beta), so that the layers as read at alpha_sa = 1
  are kept for the critical alpha_sa in the units of the run's alpha_sa.
- **Prediction at initialisation.** The decoder adapters' position-resolved theory of the built model's own
  weights and embedding statistics (:func:`verify.adapters.predict_cosine_profile`: token ids i.i.d. uniform
  over the 256 bytes, not the text's byte statistics), rho over all pairs and over the late quarter of the
  positions; the phase by :func:`verify.recommend_decoders.diagram`'s rule: entropy collapse when the first
  attention layer's late rows reach ``ipr_threshold``, else rank collapse when rho (all pairs) after the last
  layer exceeds 1 - eps; the critical alpha_sa (in the units of the run's alpha_sa: the theory's skip strength
  on the layers as read at alpha_sa = 1) by :func:`verify.recommend_decoders.critical_alpha`, bracketed from
  alpha_sa / 2 upward as :func:`verify.recommend_decoders.diagram` brackets from its smallest alpha: further
  down, the stream of a narrow model at init_std 0.02 shrinks toward the norms' eps, where the
  position-resolved theory refuses (tokens of unequal norm). An alpha_c below alpha_sa / 2 is reported as
  that upper bound; where the theory refuses at alpha_sa / 2 the bracket starts at alpha_sa (an alpha_c
  below it reported as alpha_sa); NaN where it refuses even there.

The recipe (AdamW, linear warm-up and decay, clipping) is the paper's section C, as for every run.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from . import adapters, adapters_decoders, corpus
from .train_config import DECODER_ARCHS, TrainConfig


def hf_config(config: TrainConfig):
    """The transformers config of a decoder run: its model fields under the library's names, eager attention,
    no dropout, the 256 byte values as vocabulary, ``max_positions`` positions (None: the library's default)."""
    try:
        import transformers
    except ImportError:
        raise ValueError(f"arch {config.arch!r} needs the transformers package (pip install 'sigprop[hf]')") from None
    d_ff = config.d_ff or 4 * config.d_model
    common = dict(vocab_size=corpus.BYTES, attn_implementation="eager", bos_token_id=None, eos_token_id=None,
                  pad_token_id=None)
    if config.init_std is not None:
        common["initializer_range"] = config.init_std
    if config.arch == "gpt2":
        if config.max_positions is not None:
            common["n_positions"] = config.max_positions
        return transformers.GPT2Config(n_embd=config.d_model, n_layer=config.depth, n_head=config.heads, n_inner=d_ff,
                                       activation_function=config.activation, resid_pdrop=0.0, embd_pdrop=0.0,
                                       attn_pdrop=0.0, **common)
    if config.max_positions is not None:
        common["max_position_embeddings"] = config.max_positions
    return transformers.LlamaConfig(hidden_size=config.d_model, num_hidden_layers=config.depth,
                                    num_attention_heads=config.heads,
                                    num_key_value_heads=config.kv_heads or config.heads, intermediate_size=d_ff,
                                    hidden_act=config.activation, attention_dropout=0.0, **common)


def build(config: TrainConfig):
    """(causal LM, its layers as read at alpha_sa = 1, the theory's input overlaps Q0): the decoder of
    ``config.arch`` at its own initialisation (seeded by ``config.seed``, float32 as the library draws it), set
    to (beta, alpha_sa) by :func:`verify.adapters.apply_init` when ``config.beta`` is given (module docstring)."""
    from transformers import AutoModelForCausalLM

    if config.arch not in DECODER_ARCHS:
        raise ValueError(f"arch must be one of {DECODER_ARCHS} for a decoder, got {config.arch!r}")
    settings = hf_config(config)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = AutoModelForCausalLM.from_config(settings)
    if config.beta is not None:
        adapters.apply_init(model, config.beta, 1.0, seq_len=config.seq_len)
    unit = [r.without_handles() for r in adapters_decoders.read_model(model)]
    Q0 = adapters_decoders.embedding_overlaps(model, config.seq_len)
    if config.beta is not None and config.alpha_sa != 1.0:
        adapters.apply_init(model, config.beta, config.alpha_sa, seq_len=config.seq_len)
    return model, unit, Q0


class DecoderModel(nn.Module):
    """A Hugging Face causal LM for the loop of :mod:`verify.training`: ids (batch, T) -> logits (batch, T, 256).

    ``unit``, ``Q0``: the layers as read at alpha_sa = 1 and the embedding overlaps (:func:`build`), for the
    critical alpha_sa; a model given to :func:`verify.training.train` is read as it is.
    """

    def __init__(self, lm, unit=None, Q0=None, seq_len: int | None = None):
        super().__init__()
        if type(lm).__name__ not in adapters_decoders.WRAPPERS:
            raise ValueError(f"model: a decoder is trained with its own LM head: give one of "
                             f"{', '.join(adapters_decoders.WRAPPERS)}, got {type(lm).__name__}")
        vocab = adapters_decoders.base_model(lm).config.vocab_size
        if vocab < corpus.BYTES:
            raise ValueError(f"model: vocab_size {vocab} < {corpus.BYTES} (the byte values)")
        self.lm = lm
        self.unit = [r.without_handles() for r in adapters_decoders.read_model(lm)] if unit is None else unit
        self.Q0 = adapters_decoders.embedding_overlaps(lm, seq_len) if Q0 is None else Q0

    def forward(self, ids):
        """Logits over the first 256 token ids, the byte values (a given model's larger vocabulary is cut)."""
        return self.lm(input_ids=ids).logits[..., : corpus.BYTES]

    def blocks(self) -> list:
        return [layer for _, layer in adapters_decoders.layers_of(self.lm)]


def build_model(config: TrainConfig, model=None) -> DecoderModel:
    """The :class:`DecoderModel` of ``config`` (or around the given causal LM ``model``)."""
    if model is not None:
        return DecoderModel(model, seq_len=config.seq_len)
    lm, unit, Q0 = build(config)
    return DecoderModel(lm, unit, Q0)


def describe(config: TrainConfig, model) -> TrainConfig:
    """``config`` with its model fields read from a given causal LM (family, depth, width, heads, kv heads, MLP
    width, activation, positions; its own initialisation: beta None, alpha_sa 1, init_std unknown)."""
    readings = adapters_decoders.read_model(model)
    first, base = readings[0], adapters_decoders.base_model(model)
    return dataclasses.replace(config, arch=first.family, depth=len(readings), d_model=first.d, heads=first.heads,
                               kv_heads=first.kv_heads if first.family == "llama" else None, d_ff=first.d_ff,
                               activation=first.activation, beta=None, alpha_sa=1.0, init_std=None,
                               max_positions=adapters_decoders.max_positions(base.config), objective="next-token",
                               mask=None)


def predict(config: TrainConfig, model: DecoderModel):
    """The decoder adapters' prediction for the built model at T = seq_len (module docstring): a
    :class:`verify.training.Prediction` with ``rho`` over all pairs and ``rho_late`` over the late quarter."""
    from numeric.causal import ratio

    from . import recommend_decoders as rd
    from .training import Prediction

    T = config.seq_len
    lm = model.lm
    rho = np.asarray(adapters.predict_cosine_profile(lm, T))
    rho_late = np.asarray(adapters.predict_cosine_profile(lm, T, tokens="late"))
    readings = adapters_decoders.read_model(lm)
    ipr = rd.max_ipr(readings, model.Q0, T, None)
    phase = 2 if ipr > config.ipr_threshold else (1 if rho[-1] > 1.0 - config.eps else 0)
    beta = float(np.mean([r.beta(T).mean() for r in readings]))
    alpha_c = float("nan")
    for low in (config.alpha_sa / 2, config.alpha_sa):
        try:
            alpha_c, _ = rd.critical_alpha(model.unit, model.Q0, T, beta, eps=config.eps,
                                           grid=(rd.alpha_grid(len(model.unit), low), None), needed_above=low)
            break
        except ValueError:
            continue
    q0 = float(np.mean(np.diagonal(model.Q0)))
    return Prediction(phase, rho, float(alpha_c), float(ratio(model.Q0)), q0, float(ipr), rho_late)
