"""Does the phase at initialisation predict training? Short training runs of a spec or a real model.

The paper's central claim (Fig. 1e, Fig. 5, section C) is that a transformer
initialised in rank collapse or in entropy collapse fails to train and one in
the trainable region trains. :func:`train` tests it for one model and
:func:`run_many` for a list of them (through Dask distributed):

- **Model.** A spec of :mod:`derive.architectures` (``post-ln``, ``pre-ln``,
  ``gain-post-ln``, ``gain-pre-ln``) or any :class:`derive.layers.Layer`,
  built by :mod:`verify.torch_view` with the run's beta, alpha_sa, ... (its
  initialisation is the theory's, docs/design.md); or a real encoder the
  adapters read: ``torch-post-ln`` / ``torch-pre-ln`` (a stack of
  ``nn.TransformerEncoderLayer`` at PyTorch's initialisation, independent per
  layer) and ``bert`` (``transformers.BertModel`` at its own initialisation),
  set to the run's (beta, alpha_sa) by :func:`verify.adapters.apply_init`
  when ``beta`` is given; or a real decoder, ``gpt2`` / ``llama``
  (``transformers.GPT2LMHeadModel`` / ``LlamaForCausalLM`` from their configs at
  random initialisation, with their own embeddings, final norm and LM head:
  :mod:`verify.training_decoders`); or any model the adapters read, passed to
  :func:`train` as ``model=``. Around an encoder stack: token and learned absolute
  position embeddings (each N(0, 1/2) per entry, so that q0 = |X_t|^2/d = 1 as
  the theory's inputs; BERT keeps its own embeddings), a LayerNorm (eq. 5) and
  a linear read-out to the 256 byte values.
- **Task.** Byte-level masked-language modelling on real text
  (:mod:`verify.corpus`: the Python standard library's source by default):
  15 % of the positions are predicted, of which 80 % are replaced by the mask
  id, 10 % by a random byte and 10 % left as they are (BERT's rule, which the
  paper's Hugging Face trainer applies). A decoder (a named spec with a causal
  or sliding-window mask, :mod:`derive.masks`, or GPT-2 / LLaMA) predicts the
  next byte at every position instead (the causal LM loss). The objectives
  are a registry (:data:`OBJECTIVES`).
- **Optimiser.** The paper's recipe (section C): AdamW (lr 5e-4, weight decay
  0.01 on weights, none on biases, as Hugging Face's trainer), linear warm-up
  over 5 % of the steps and linear decay to zero, gradient clipping at global
  norm 1. Every knob is a field of :class:`TrainConfig`.
- **Parametrisation.** The torch view holds unit-variance weights U and
  multiplies them by their standard deviation s in the forward pass. AdamW on U
  would give every weight an update relative to its size of lr, not lr/s as
  on the weights W = s U of a real model. :func:`parameter_groups` makes the
  two identical: per weight, learning rate lr/s, Adam's eps multiplied by s,
  weight decay multiplied by s, and the clipping norm taken of the gradients
  with respect to W (dL/dW = dL/dU / s). A weight with s = 0 (a bias of
  variance 0) is absent from the model, as from the theory's map.
- **Prediction at initialisation.** The phase (0 trainable, 1 rank collapse,
  2 entropy collapse, :func:`numeric.trainability_diagram`), the rho profile
  (:func:`numeric.cosine_profile`) and the critical alpha_sa
  (:func:`numeric.critical_alpha`) by the exact finite-T theory at T = seq_len
  (position-resolved for a decoder, rho over all pairs),
  from the input cosine similarity rho0 measured on the run's own embedded
  held-out text (repeated bytes make it positive); for real encoders the
  adapters' theory of the model's own weights (:func:`verify.adapters.theory_run`);
  for GPT-2 / LLaMA the decoder adapters' (:func:`verify.training_decoders.predict`:
  rho over all pairs and over the late quarter of the positions).
- **Measurements.** The held-out loss (the same fixed held-out sequences and
  masks for every run, so runs compare), the training loss, and the gradient
  norm of every block at step 0 (with respect to the weights W, the query and
  key weights separately: Result 2's vanishing query gradient). Baselines on
  the same held-out predictions: the unigram loss (byte frequencies), the
  no-context loss (the best model that reads only its own input byte) and the
  bigram loss.

Training runs in float32 by default (a CPU would be four times slower in
float64); the theory is float64.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

import numeric
from derive.layers import Activation, Bias, Layer, LayerNorm, Linear, Residual, SelfAttention, Sequence
from numeric import validation as check

from . import adapters, adapters_decoders, corpus, torch_view, training_decoders
from .train_config import DECODER_ARCHS, DECODER_FIELDS, MODEL_ARCHS, TrainConfig

#: Phase codes of numeric.trainability_diagram and their names.
PHASES = {0: "trainable", 1: "rank collapse", 2: "entropy collapse"}
#: Seed of the held-out masks: every run evaluates on the same sequences and the same masked positions.
EVAL_SEED = 20260
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: Hugging Face's default LayerNorm eps in the head (the theory's LayerNorm has none; this keeps a
#: collapsed stream finite).
HEAD_EPS = 1e-5


# --- data ------------------------------------------------------------------------------------

class MaskedLM:
    """Masked-language modelling (BERT; paper section C): predict ``mask_prob`` of the bytes.

    Of the chosen positions, 80 % become :data:`verify.corpus.MASK`, 10 % a random
    byte, 10 % stay; the loss is the cross-entropy at the chosen positions only.
    """

    name = "mlm"
    #: Shares of the chosen positions given the mask id and a random byte (the rest keep their byte).
    MASKED, REPLACED = 0.8, 0.1

    def __init__(self, mask_prob: float):
        self.mask_prob = float(mask_prob)

    @classmethod
    def of(cls, config: TrainConfig) -> "MaskedLM":
        return cls(config.mask_prob)

    def corrupt(self, ids: torch.Tensor, generator: torch.Generator):
        """(inputs, targets): targets are the original bytes at the chosen positions and -100 elsewhere."""
        draw = torch.rand(ids.shape, generator=generator)
        chosen = draw < self.mask_prob
        if not chosen.any():
            chosen.view(-1)[0] = True
        rule = torch.rand(ids.shape, generator=generator)
        random_bytes = torch.randint(0, corpus.BYTES, ids.shape, generator=generator)
        masked = rule < self.MASKED
        replaced = (rule >= self.MASKED) & (rule < self.MASKED + self.REPLACED)
        inputs = torch.where(chosen & masked, torch.full_like(ids, corpus.MASK), ids)
        inputs = torch.where(chosen & replaced, random_bytes, inputs)
        return inputs, torch.where(chosen, ids, torch.full_like(ids, -100))

    def context_free_loss(self, text: corpus.Corpus, inputs, targets) -> float:
        """The loss of the best model without context on these (inputs, targets) (:meth:`Corpus.context_free_nats`)."""
        return text.context_free_nats(inputs.cpu().numpy(), targets.cpu().numpy(),
                                      kept=1.0 - self.MASKED - self.REPLACED, replaced=self.REPLACED)


class NextToken:
    """Next-token prediction (a decoder): every position but the last predicts the byte after it.

    The inputs are the bytes as they are (the causal mask hides the future); the level of a
    model that reads no context is the bigram loss (it sees its own input, the previous byte).
    """

    name = "next-token"

    @classmethod
    def of(cls, config: TrainConfig) -> "NextToken":
        return cls()

    def corrupt(self, ids: torch.Tensor, generator: torch.Generator):
        """(inputs, targets): the bytes, and the byte after each (-100 at the last position)."""
        targets = torch.roll(ids, -1, dims=-1)
        targets[..., -1] = -100
        return ids, targets

    def context_free_loss(self, text: corpus.Corpus, inputs, targets) -> float:
        """The bigram loss on these (input, next byte) pairs (:meth:`Corpus.bigram_nats`)."""
        keep = targets >= 0
        return text.bigram_nats(inputs[keep].cpu().numpy(), targets[keep].cpu().numpy())


#: The training objectives by name (the names of verify.train_config.OBJECTIVE_NAMES).
OBJECTIVES = {"mlm": MaskedLM, "next-token": NextToken}


def objective_of(config: TrainConfig):
    """The objective of a run: an object with ``corrupt(ids, generator) -> (inputs, targets)`` (targets -100 where
    nothing is predicted) and ``context_free_loss(text, inputs, targets)``."""
    return OBJECTIVES[config.objective].of(config)


def sample_windows(data: np.ndarray, seq_len: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """``batch`` training windows of ``seq_len`` bytes at uniform random starts."""
    starts = torch.randint(0, data.size - seq_len + 1, (batch,), generator=generator).numpy()
    return torch.from_numpy(data[starts[:, None] + np.arange(seq_len)[None, :]].astype(np.int64))


def heldout_set(text: corpus.Corpus, config: TrainConfig):
    """The fixed held-out (inputs, targets): ``eval_sequences`` windows at evenly spaced starts over the held-out
    bytes, masked with :data:`EVAL_SEED` (the same for every run of one seq_len, mask_prob and size)."""
    n, T = config.eval_sequences, config.seq_len
    starts = np.linspace(0, text.heldout.size - T, n).round().astype(np.int64)
    ids = torch.from_numpy(text.heldout[starts[:, None] + np.arange(T)[None, :]].astype(np.int64))
    return objective_of(config).corrupt(ids, torch.Generator().manual_seed(EVAL_SEED))


# --- models ----------------------------------------------------------------------------------

class Embedding(nn.Module):
    """Token plus learned absolute position embeddings, each N(0, 1/2) per entry: E|X_t|^2/d = 1 (q0 = 1)."""

    def __init__(self, d: int, seq_len: int, generator: torch.Generator, dtype):
        super().__init__()
        scale = math.sqrt(0.5)
        self.tokens = nn.Parameter(torch.randn(corpus.VOCAB, d, generator=generator, dtype=dtype) * scale)
        self.positions = nn.Parameter(torch.randn(seq_len, d, generator=generator, dtype=dtype) * scale)

    def forward(self, ids):
        return self.tokens[ids] + self.positions[: ids.shape[-1]]


class Head(nn.Module):
    """LayerNorm (eq. 5, no affine) and a linear read-out to the 256 byte values (weights N(0, 1/d), bias 0)."""

    def __init__(self, d: int, generator: torch.Generator, dtype):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(corpus.BYTES, d, generator=generator, dtype=dtype) / math.sqrt(d))
        self.bias = nn.Parameter(torch.zeros(corpus.BYTES, dtype=dtype))

    def forward(self, x):
        x = x / (x.pow(2).mean(dim=-1, keepdim=True) + HEAD_EPS).sqrt()
        return x @ self.weight.T + self.bias


class SpecModel(nn.Module):
    """Embedding -> ``depth`` blocks of a spec (:func:`verify.torch_view.build`, one seed) -> head."""

    def __init__(self, config: TrainConfig, generator: torch.Generator, device):
        super().__init__()
        dtype = DTYPES[config.dtype]
        self.spec = torch_view.spec_of(config.arch, config.activation, config.heads, mask=config.mask)
        self.embedding = Embedding(config.d_model, config.seq_len, generator, dtype)
        self.stack = torch_view.build(self.spec, config.d_model, seeds=1, params=config.params(), depth=config.depth,
                                      activation=config.activation, device=device, dtype=dtype,
                                      generator=_device_generator(generator, device))
        self.head = Head(config.d_model, generator, dtype)

    def embed(self, ids):
        return self.embedding(ids)

    def forward(self, ids):
        return self.head(self.stack(self.embedding(ids).unsqueeze(0)).squeeze(0))

    def blocks(self) -> list:
        return list(self.stack.blocks)


class EncoderModel(nn.Module):
    """Embedding -> a real encoder the adapters read (torch layers, or BERT with its own embeddings) -> head."""

    def __init__(self, layers, seq_len: int, generator: torch.Generator, dtype):
        super().__init__()
        from .adapters_read import layer_modules

        modules, self.kind = layer_modules(layers)
        self.layers = layers if isinstance(layers, nn.Module) else nn.ModuleList(layers)
        self._blocks = [module for _, module in modules]
        first = readings(layers)[0]
        d, self.batch_first = first.d, first.batch_first
        self.embedding = None if self.kind == "bert" else Embedding(d, seq_len, generator, dtype)
        if self.kind == "bert" and layers.config.vocab_size < corpus.VOCAB:
            raise ValueError(f"BERT's vocab_size {layers.config.vocab_size} < {corpus.VOCAB} (256 bytes and a mask)")
        self.head = Head(d, generator, dtype)

    def embed(self, ids):
        return self.layers.embeddings(input_ids=ids) if self.kind == "bert" else self.embedding(ids)

    def forward(self, ids):
        if self.kind == "bert":
            return self.head(self.layers(input_ids=ids).last_hidden_state)
        x = self.embedding(ids)
        x = x if self.batch_first else x.transpose(0, 1)
        if isinstance(self.layers, nn.TransformerEncoder):
            x = self.layers(x)
        else:
            for layer in self._blocks:
                x = layer(x)
        return self.head(x if self.batch_first else x.transpose(0, 1))

    def blocks(self) -> list:
        return self._blocks


def readings(layers) -> list:
    """The adapters' reading of every layer (:func:`verify.adapters.read`), taken in eval mode (the theory's
    deterministic forward pass) and with independent layers required (copies are refused with advice)."""
    modules = layers if isinstance(layers, nn.Module) else nn.ModuleList(layers)
    was_training = modules.training
    modules.eval()
    try:
        return adapters.read(layers)
    finally:
        modules.train(was_training)


def describe(config: TrainConfig, layers) -> TrainConfig:
    """``config`` with its model fields read from a given real encoder (kind, depth, width, heads, its own
    query/key scale and skip), so that reports and the CSV key describe the model that is trained."""
    read = readings(layers)
    first, depth = read[0], len(read)
    arch = "bert" if first.kind == "bert" else ("torch-pre-ln" if first.norm_first else "torch-post-ln")
    return dataclasses.replace(config, arch=arch, depth=depth, d_model=first.d, heads=first.heads, d_ff=first.d_ff,
                               activation=first.activation, beta=None, alpha_sa=1.0)


def _device_generator(generator: torch.Generator, device) -> torch.Generator:
    """A generator on ``device`` seeded from the CPU one (CUDA draws need a CUDA generator)."""
    device = torch.device(device)
    if device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def real_encoder(config: TrainConfig):
    """The real encoder of ``config.arch`` (:data:`MODEL_ARCHS`) at its own initialisation, eval-ready (no dropout),
    set to (beta, alpha_sa) by :func:`verify.adapters.apply_init` when ``config.beta`` is given."""
    from .recommend import EncoderConfig, build_bert

    d_ff = config.d_ff or 4 * config.d_model
    if config.arch == "bert":
        try:
            from transformers import BertConfig
        except ImportError:
            raise ValueError("arch 'bert' needs the transformers package (pip install 'sigprop[hf]')") from None
        model = build_bert(BertConfig(vocab_size=max(corpus.VOCAB, 512), hidden_size=config.d_model,
                                      num_hidden_layers=config.depth, num_attention_heads=config.heads,
                                      intermediate_size=d_ff, hidden_act=config.activation,
                                      max_position_embeddings=max(512, config.seq_len), hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0), seed=config.seed)
    else:
        if config.activation not in EncoderConfig.ACTIVATIONS:
            raise ValueError(f"activation must be one of {EncoderConfig.ACTIVATIONS} for {config.arch}")
        layers = EncoderConfig(num_layers=config.depth, d_model=config.d_model, nhead=config.heads,
                               dim_feedforward=d_ff, norm_first=config.arch == "torch-pre-ln",
                               activation=config.activation).build(seed=config.seed)
        model = adapters.independent_init(layers, seed=config.seed)
    if config.beta is not None:
        adapters.apply_init(model, config.beta, config.alpha_sa, seq_len=config.seq_len)
    return model


def resolve_device(device) -> torch.device:
    """:func:`verify.torch_view.resolve_device`, its refusal (CUDA asked for, none present) as a ValueError naming
    the device option."""
    try:
        return torch_view.resolve_device(device)
    except RuntimeError as exc:
        raise ValueError(f"device: {exc}") from None


def build_model(config: TrainConfig, model=None) -> nn.Module:
    """The trainable model of ``config`` (or around the given real ``model``, whose family ``config.arch``
    names: :func:`train` sets it), on the config's device and in its dtype."""
    device = resolve_device(config.device)
    generator = torch.Generator().manual_seed(config.seed)
    dtype = DTYPES[config.dtype]
    if model is None and config.arch not in MODEL_ARCHS:
        return SpecModel(config, generator, device).to(device)
    if config.arch in DECODER_ARCHS:
        return training_decoders.build_model(config, model).to(device=device, dtype=dtype)
    layers = real_encoder(config) if model is None else model
    return EncoderModel(layers, config.seq_len, generator, dtype).to(device=device, dtype=dtype)


# --- the standard parametrisation ------------------------------------------------------------

def weight_scales(spec: Layer, d: int, T: int, params: dict, prefix: str = "") -> dict:
    """{weight path: s} for the unit-variance weights U of one block of ``spec``: W = s U is the real weight.

    Paths are :class:`verify.torch_view.Block`'s (":"-joined keys of the spec's ``torch_init``).
    Linear: W sqrt(weight/fan_in), b sqrt(bias); Bias: sqrt(variance); SelfAttention: W_Q, W_K
    :meth:`~derive.layers.SelfAttention.query_key_std`, W_V :meth:`~derive.layers.SelfAttention.value_std`.
    """
    join = (lambda key: f"{prefix}:{key}") if prefix else str
    if isinstance(spec, Sequence):
        out = {}
        for k, layer in enumerate(spec.layers):
            out.update(weight_scales(layer, d, T, params, join(k)))
            d = layer.out_features(d)
        return out
    if isinstance(spec, Residual):
        return weight_scales(spec.branch, d, T, params, join("branch"))
    if isinstance(spec, SelfAttention):
        qk = spec.query_key_std(T, d, params)
        return {join("W_Q"): qk, join("W_K"): qk, join("W_V"): spec.value_std(d, params)}
    if isinstance(spec, Linear):
        out = {join("W"): math.sqrt(params[spec.weight] / d)}
        return {**out, join("b"): math.sqrt(params[spec.bias])} if spec.bias else out
    if isinstance(spec, Bias):
        return {join("b"): math.sqrt(params[spec.variance])}
    if isinstance(spec, (LayerNorm, Activation)):
        return {}
    raise ValueError(f"no weight scale rule for layer kind {type(spec).__name__} (verify.training.weight_scales)")


def parameter_scales(model: nn.Module, config: TrainConfig) -> dict:
    """{parameter name: s} for every parameter of ``model`` (1 for real weights, the spec's s for a spec block)."""
    scales = {name: 1.0 for name, _ in model.named_parameters()}
    if isinstance(model, SpecModel):
        values = torch_view.full_params(model.spec, config.params())
        block = weight_scales(model.spec, config.d_model, config.seq_len, values)
        for index in range(config.depth):
            for path, s in block.items():
                scales[f"stack.blocks.{index}.weights.{path}"] = s
    return scales


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """AdamW parameter groups that train the real weights W = s U (module docstring): lr/s, eps s, decay s.

    Biases and LayerNorm gains (paths ending in a bias, 1-D parameters) get no weight decay, as in Hugging
    Face's trainer.
    Parameters with s = 0 are left out (they stay zero, as a variance-0 weight is absent).
    """
    scales = parameter_scales(model, config)
    groups = []
    for name, param in model.named_parameters():
        s = scales[name]
        if s == 0.0:
            param.requires_grad_(False)
            continue
        decay = 0.0 if _is_bias(name, param) else config.weight_decay
        groups.append(dict(params=[param], lr=config.lr / s, eps=config.adam_eps * s, weight_decay=decay * s,
                           scale=s, name=name))
    return groups


def _is_bias(name: str, param) -> bool:
    leaf = name.replace(":", ".").split(".")[-1]
    return leaf in ("b", "bias") or (param.dim() == 1 and "position" not in name)


def clip_real_gradients(groups: list[dict], max_norm: float) -> float:
    """Clip the gradients by the global norm of dL/dW = dL/dU / s over all groups; return that norm."""
    norms = [(g["params"][0].grad.detach() / g["scale"]).norm() for g in groups if g["params"][0].grad is not None]
    total = float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
    factor = max_norm / (total + 1e-6)
    if factor < 1.0:
        for g in groups:
            if g["params"][0].grad is not None:
                g["params"][0].grad.mul_(factor)
    return total


def schedule(step: int, steps: int, warmup: float) -> float:
    """Hugging Face's "linear" schedule: warm-up over ceil(warmup * steps) steps, then linear decay to 0."""
    ramp = math.ceil(warmup * steps)
    if step < ramp:
        return (step + 1) / ramp
    return max(0.0, (steps - step) / max(1, steps - ramp))


# --- prediction at initialisation ------------------------------------------------------------

@dataclass
class Prediction:
    """The theory's verdict at initialisation: phase, rho profile (depth + 1,), critical alpha_sa, rho0 used.

    ``q0``, ``rho0``: the measured input state (NaN q0 for a run read back from a CSV).
    ``ipr_first``: the finite-T IPR E sum_s A_ts^2 of the first attention layer's rows (a
    decoder spec's: of a row that sees all T keys, the last; GPT-2's and LLaMA's: the mean of the
    late quarter's rows, :mod:`verify.recommend_decoders`), the entropy-collapse reading.
    ``rho_late``: a GPT-2 / LLaMA run's rho over the late quarter of the positions (None otherwise).
    """

    phase: int
    rho: np.ndarray
    alpha_critical: float
    rho0: float
    q0: float
    ipr_first: float
    rho_late: np.ndarray | None = None

    @property
    def phase_name(self) -> str:
        return PHASES[self.phase]


def measure_input_state(model: nn.Module, ids: torch.Tensor) -> tuple[float, float]:
    """(q0, rho0) of the embedded sequences ``ids`` (the stack's input) at initialisation."""
    with torch.no_grad():
        q, p = adapters.overlaps(model.embed(ids))
    return q, p / q


def predict(config: TrainConfig, model: nn.Module, ids: torch.Tensor) -> Prediction:
    """The finite-T theory at T = seq_len from the measured input state (module docstring); a GPT-2 / LLaMA
    run's from the model's own embedding statistics (:func:`verify.training_decoders.predict`).

    torch's CPU thread count is restored afterwards: the theory's BLAS limit (:mod:`numeric.blas`, through
    threadpoolctl) can leave torch's OpenMP pool at the count of its first entry, and a training run on
    another thread count than its own sums in another order (not the same curve for the same seed).
    """
    threads = torch.get_num_threads()
    try:
        return _predict(config, model, ids)
    finally:
        torch.set_num_threads(threads)


def _predict(config: TrainConfig, model: nn.Module, ids: torch.Tensor) -> Prediction:
    if isinstance(model, training_decoders.DecoderModel):
        return training_decoders.predict(config, model)
    q0, rho0 = measure_input_state(model, ids)
    T = config.seq_len
    rho0 = float(np.clip(rho0, -1.0 / (T - 1), 1.0))
    if isinstance(model, SpecModel):
        return predict_at(config, rho0=rho0, q0=q0)
    return _predict_real(config, model, q0, rho0)


def predict_at(config: TrainConfig, *, rho0: float, q0: float = 1.0) -> Prediction:
    """The finite-T theory's prediction for a spec's run from the input state (q0, rho0), without a model.

    The theory takes q0 = 1 (docs/design.md); ``q0`` is recorded, not used.
    """
    if config.arch in MODEL_ARCHS:
        raise ValueError("predict_at takes a spec's config; a real encoder's theory reads its weights (predict)")
    params = dict(alpha_mlp=config.alpha_mlp, sigma_v2=config.sigma_v2, sigma_w2=config.sigma_w2,
                  sigma_b2=config.sigma_b2, mask=config.mask)
    arch, T = config.arch, config.seq_len
    diagram = numeric.trainability_diagram(arch, config.depth, betas=[config.beta], alphas=[config.alpha_sa],
                                           eps=config.eps, T=T, rho0=rho0, activation=config.activation,
                                           criterion=config.criterion, ipr_threshold=config.ipr_threshold, **params)
    rho = numeric.cosine_profile(arch, config.depth, beta=config.beta, T=T, rho0=rho0, alpha_sa=config.alpha_sa,
                                 activation=config.activation, **params)
    ipr = float(numeric.ipr(config.beta, q=1.0, p=rho0, T=T))
    return Prediction(int(diagram.phase[0, 0]), np.asarray(rho), float(diagram.critical_alpha[0]), rho0, q0, ipr)


def _predict_real(config: TrainConfig, model: "EncoderModel", q0: float, rho0: float) -> Prediction:
    from numeric.maps import moment_functions

    from .recommend import critical_alpha

    T = config.seq_len
    layers = readings(model.layers)
    run = adapters.theory_run(layers, T, rho0=rho0, q0=q0)
    q_att, p_att, betas = run.attention[0]
    Y2 = moment_functions(T)[0]
    ipr = max(float(Y2(b, float(q_att), float(p_att), T)) for b in betas)
    beta = float(np.mean([r.beta(T).mean() for r in layers]))
    alpha_c = critical_alpha(layers, T, beta, eps=config.eps, rho0=rho0, q0=q0)
    phase = 2 if ipr > config.ipr_threshold else (1 if run.rho[-1] > 1.0 - config.eps else 0)
    return Prediction(phase, np.asarray(run.rho), float(alpha_c), rho0, q0, ipr)


# --- the result ------------------------------------------------------------------------------

#: Columns of one run in a CSV (run_many, train-diagram): the config's fields, then the outcome.
OUTCOME_COLUMNS = ("key", "phase", "phase_name", "rho0", "rho_final", "alpha_critical", "ipr_first",
                   "unigram_loss", "context_free_loss", "bigram_loss", "initial_heldout_loss", "final_heldout_loss",
                   "best_heldout_loss", "diverged", "rho_profile", "grad_norms", "grad_norms_qk", "curve")
CONFIG_COLUMNS = tuple(f.name for f in dataclasses.fields(TrainConfig))


@dataclass
class TrainResult:
    """One run: its config, the prediction at initialisation, the curve and the losses.

    ``curve``: rows (step, lr, train_loss, heldout_loss); train_loss is the mean over the steps
    since the previous row (NaN at step 0), heldout_loss the loss on the fixed held-out set
    before the update of that step (the last row: after the last update). ``grad_norms``:
    ||dL/dW|| per block at step 0, all weights of the block; ``grad_norms_qk``: its query
    and key weights only. ``unigram_loss``: the held-out loss of the training text's byte
    frequencies on the same masked positions; ``context_free_loss``: the best model that sees its own
    input byte but no context, on the same positions (:meth:`verify.corpus.Corpus.context_free_nats`:
    the level of a model that learnt nothing from the context); ``bigram_loss``: the previous byte
    as context (:meth:`verify.corpus.Corpus.bigram_nats`, all held-out bytes).
    """

    config: TrainConfig
    prediction: Prediction
    curve: list
    unigram_loss: float
    context_free_loss: float
    bigram_loss: float
    grad_norms: list
    grad_norms_qk: list
    diverged: bool = False
    seconds: float = float("nan")

    @property
    def initial_heldout_loss(self) -> float:
        return float(self.curve[0][3])

    @property
    def final_heldout_loss(self) -> float:
        return float(self.curve[-1][3])

    @property
    def best_heldout_loss(self) -> float:
        values = [row[3] for row in self.curve if math.isfinite(row[3])]
        return float(min(values)) if values else float("nan")

    def summary(self) -> dict:
        """JSON-ready (strict JSON: a NaN is null): phase, rho_final, the profile (a GPT-2 / LLaMA run's also over
        the late quarter of the positions, ``rho_profile_late``; null for other runs), the losses, the curve, the
        gradient norms and the config."""
        p = self.prediction
        return _strict({"phase": p.phase_name, "phase_code": p.phase, "rho_final": float(p.rho[-1]),
                "rho_profile": [float(x) for x in p.rho],
                "rho_profile_late": None if p.rho_late is None else [float(x) for x in p.rho_late],
                "rho0": p.rho0, "q0": p.q0, "ipr_first": p.ipr_first,
                "alpha_critical": p.alpha_critical, "initial_heldout_loss": self.initial_heldout_loss,
                "final_heldout_loss": self.final_heldout_loss, "best_heldout_loss": self.best_heldout_loss,
                "unigram_loss": self.unigram_loss, "context_free_loss": self.context_free_loss,
                "bigram_loss": self.bigram_loss, "diverged": self.diverged,
                "grad_norms": self.grad_norms, "grad_norms_qk": self.grad_norms_qk,
                "curve": [dict(zip(("step", "lr", "train_loss", "heldout_loss"), row)) for row in self.curve],
                "seconds": self.seconds, "config": self.config.to_dict()})

    def row(self) -> dict:
        """One CSV row (floats as repr, lists as JSON): deterministic for a given config (no wall time)."""
        p = self.prediction
        outcome = dict(key=self.config.key(), phase=p.phase, phase_name=p.phase_name, rho0=p.rho0,
                       rho_final=float(p.rho[-1]), alpha_critical=p.alpha_critical, ipr_first=p.ipr_first,
                       unigram_loss=self.unigram_loss, context_free_loss=self.context_free_loss,
                       bigram_loss=self.bigram_loss,
                       initial_heldout_loss=self.initial_heldout_loss, final_heldout_loss=self.final_heldout_loss,
                       best_heldout_loss=self.best_heldout_loss, diverged=self.diverged,
                       rho_profile=[float(x) for x in p.rho], grad_norms=self.grad_norms,
                       grad_norms_qk=self.grad_norms_qk, curve=self.curve)
        config = self.config.to_dict()
        return {k: _cell(v) for k, v in {**config, **outcome}.items()}

    @classmethod
    def from_row(cls, row: dict, config: TrainConfig) -> "TrainResult":
        """The result stored in a CSV row by :meth:`row`, for the run ``config`` (whose key the row carries)."""
        if row["key"] != config.key():
            raise ValueError(f"the row's key {row['key']} is not the config's {config.key()}")
        prediction = Prediction(int(row["phase"]), np.array(json.loads(row["rho_profile"])),
                                float(row["alpha_critical"]), float(row["rho0"]), float("nan"),
                                float(row["ipr_first"]))
        curve = [tuple(float(x) for x in r) for r in json.loads(row["curve"])]
        return cls(config, prediction, curve, float(row["unigram_loss"]), float(row["context_free_loss"]),
                   float(row["bigram_loss"]),
                   json.loads(row["grad_norms"]), json.loads(row["grad_norms_qk"]), row["diverged"] == "True")

    def to_csv(self, path) -> None:
        """The curve as CSV: step, lr, train_loss, heldout_loss."""
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["step", "lr", "train_loss", "heldout_loss"])
            for row in self.curve:
                writer.writerow([int(row[0])] + [repr(float(x)) for x in row[1:]])

    def plot(self, path=None):
        """The held-out and training loss against the step, with the unigram and bigram losses; saved to ``path``."""
        from numeric.plotting import pyplot, save

        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        steps = [r[0] for r in self.curve]
        ax.plot(steps[1:], [r[2] for r in self.curve[1:]], color="C0", alpha=0.6, label="training")
        ax.plot(steps, [r[3] for r in self.curve], "o-", ms=2.5, color="C1", label="held-out")
        ax.axhline(self.unigram_loss, color="grey", ls="--", lw=1, label="unigram (byte frequencies)")
        ax.axhline(self.context_free_loss, color="k", ls="-.", lw=1, label="no context (own input byte only)")
        ax.axhline(self.bigram_loss, color="grey", ls=":", lw=1, label="bigram (previous byte)")
        c, p = self.config, self.prediction
        beta = "model's own" if c.beta is None else f"{c.beta:g}"
        ax.set_title(f"{c.arch_name}, {c.depth} blocks, d = {c.d_model}, beta = {beta}, alpha_SA = {c.alpha_sa:g}, "
                     f"T = {c.seq_len}\npredicted at init: {p.phase_name} (rho after the last block "
                     f"{p.rho[-1]:.4f})", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("next-byte cross-entropy (nats)" if c.objective == "next-token" else
                      "masked-byte cross-entropy (nats)")
        ax.legend(fontsize=8)
        return save(fig, path)


def _strict(value):
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def _cell(value) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


# --- training ----------------------------------------------------------------------------------

def train(config: TrainConfig, *, model=None, progress=None) -> TrainResult:
    """Train ``config`` (or the real encoder ``model`` with the config's data and optimiser) and measure it.

    ``model``: a model the adapters read (``nn.TransformerEncoder``, a list of independently
    initialised ``nn.TransformerEncoderLayer``, ``BertModel``; a decoder with its LM head,
    ``GPT2LMHeadModel`` or ``LlamaForCausalLM``, trained on next-byte prediction), trained as given
    (its dropout too); the config's model fields are replaced by the model's own (:func:`describe`,
    :func:`verify.training_decoders.describe`).
    ``progress``: a callable taking the number of steps done (e.g. a tqdm update).
    """
    text = load_text(config)
    if model is not None:
        config = training_decoders.describe(config, model) if adapters_decoders.is_decoder(model) else \
            describe(config, model)
    keep_freed_memory()
    with _threads(config.threads):
        return _train(config, text, model, progress)


#: glibc's trim threshold in a process that trains: freed heap memory up to this size is kept for the next step.
TRIM_THRESHOLD = 256 << 20
#: glibc's mmap threshold there: blocks below it come from the heap (setting the trim threshold, as Dask does by
#: environment, freezes glibc's adaptive mmap threshold at 128 KiB, below one step's activations).
MMAP_THRESHOLD = 32 << 20


def keep_freed_memory() -> None:
    """Let this process keep up to :data:`TRIM_THRESHOLD` of freed heap memory and serve blocks below
    :data:`MMAP_THRESHOLD` from the heap (glibc ``mallopt``; elsewhere nothing). Dask starts its workers with
    ``MALLOC_TRIM_THRESHOLD_=65536``, which also pins glibc's mmap threshold at 128 KiB, so a worker mapped the
    memory of every step's activations afresh, handed it back to the kernel and faulted it in again: the figures' runs spent more system
    time than user time (Fig. 1(e): 748 s against 482 s, 331 million page faults), and a 150-step run took
    25 s instead of 9 s."""
    import ctypes
    import ctypes.util

    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(-1, TRIM_THRESHOLD)                           # M_TRIM_THRESHOLD
    mallopt(-3, MMAP_THRESHOLD)                           # M_MMAP_THRESHOLD


def load_text(config: TrainConfig) -> corpus.Corpus:
    """The run's corpus, checked to hold a sequence of seq_len bytes in each split (ValueError naming text)."""
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    text = corpus.load(config.text)
    text.check_length(config.seq_len)
    return text


class _threads:
    """torch's CPU thread count set for the duration of a run (``None``: unchanged)."""

    def __init__(self, threads):
        self.threads, self.before = threads, None

    def __enter__(self):
        if self.threads is not None:
            self.before = torch.get_num_threads()
            torch.set_num_threads(self.threads)

    def __exit__(self, *exc):
        if self.before is not None:
            torch.set_num_threads(self.before)


def _train(config: TrainConfig, text: corpus.Corpus, model, progress) -> TrainResult:
    start = time.perf_counter()
    net = build_model(config, model)
    device = next(net.parameters()).device
    eval_inputs, eval_targets = (t.to(device) for t in heldout_set(text, config))
    prediction = predict(config, net, eval_inputs)
    groups, optimiser = optimiser_of(net, config)
    data = torch.Generator().manual_seed(config.seed + 1)
    objective = objective_of(config)
    curve = [(0, 0.0, float("nan"), heldout_loss(net, eval_inputs, eval_targets, config.batch))]
    grads, grads_qk, window, diverged = None, None, [], False
    for step in range(config.steps):
        factor = schedule(step, config.steps, config.warmup)
        for group in optimiser.param_groups:
            group["lr"] = group["peak_lr"] * factor
        inputs, targets = objective.corrupt(sample_windows(text.train, config.seq_len, config.batch, data), data)
        loss = _loss(net(inputs.to(device)), targets.to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if step == 0:
            grads, grads_qk = block_gradient_norms(net, groups)
        clip_real_gradients(groups, config.clip)
        optimiser.step()
        window.append(float(loss.detach()))
        if progress is not None:
            progress(1)
        if not math.isfinite(window[-1]):
            diverged = True
            curve.append((step + 1, config.lr * factor, float("nan"), float("nan")))
            break
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            curve.append((step + 1, config.lr * factor, float(np.mean(window)),
                          heldout_loss(net, eval_inputs, eval_targets, config.batch)))
            window = []
    unigram = text.unigram_nats(eval_targets[eval_targets >= 0].cpu().numpy())
    context_free = objective.context_free_loss(text, eval_inputs, eval_targets)
    return TrainResult(config, prediction, curve, unigram, context_free, text.bigram_nats(), grads, grads_qk,
                       diverged, time.perf_counter() - start)


def optimiser_of(net: nn.Module, config: TrainConfig):
    """(groups, AdamW) with the standard-parametrisation groups of :func:`parameter_groups`; each group keeps its
    peak learning rate as ``peak_lr`` for the schedule."""
    groups = parameter_groups(net, config)
    optimiser = torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.adam_betas))
    for group in optimiser.param_groups:
        group["peak_lr"] = group["lr"]
    return groups, optimiser


def _loss(logits, targets):
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                       ignore_index=-100)


def heldout_loss(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch: int) -> float:
    """Mean cross-entropy over all masked positions of the fixed held-out set (eval mode, no gradients)."""
    was_training = net.training
    net.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, inputs.shape[0], batch):
            logits = net(inputs[start:start + batch])
            chunk = targets[start:start + batch]
            total += float(nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                       chunk.reshape(-1), ignore_index=-100, reduction="sum"))
            count += int((chunk >= 0).sum())
    net.train(was_training)
    return total / count


def block_gradient_norms(net: nn.Module, groups: list[dict]) -> tuple[list, list]:
    """Per block, ||dL/dW|| over all its weights and over its query and key weights (dL/dW = dL/dU / s)."""
    scale = {id(g["params"][0]): g["scale"] for g in groups}
    totals, qk = [], []
    for block in net.blocks():
        squares, squares_qk = 0.0, 0.0
        for name, param in block.named_parameters():
            if param.grad is None or id(param) not in scale:
                continue
            grad = param.grad.detach() / scale[id(param)]
            squares += float(grad.pow(2).sum())
            squares_qk += float(_query_key_part(name, grad).pow(2).sum())
        totals.append(math.sqrt(squares))
        qk.append(math.sqrt(squares_qk))
    return totals, qk


def _query_key_part(name: str, grad: torch.Tensor) -> torch.Tensor:
    """The query and key part of a gradient: a spec's W_Q / W_K, BERT's query / key and LLaMA's q_proj / k_proj
    weights, the first two thirds of the rows of torch's packed in_proj_weight and of the columns of GPT-2's
    c_attn weight (a Conv1D, stored in x out); empty for any other parameter."""
    parts = set(name.replace(":", ".").split("."))
    if parts & {"W_Q", "W_K"} or ({"query", "key", "q_proj", "k_proj"} & parts and "weight" in parts):
        return grad
    if "in_proj_weight" in parts:
        return grad[: 2 * grad.shape[0] // 3]
    if "c_attn" in parts and "weight" in parts:
        return grad[:, : 2 * grad.shape[1] // 3]
    return grad.new_zeros(0)


# --- many runs, through Dask distributed ------------------------------------------------------

#: ``scheduler`` value of :func:`run_many` that runs the list here, one run after another (no Dask).
IN_PROCESS = "in-process"
COLUMNS = CONFIG_COLUMNS + OUTCOME_COLUMNS
#: The columns of a run file written before the decoders' own fields existed (resumed as well: their runs'
#: keys leave those fields out).
COLUMNS_WITHOUT_DECODER_FIELDS = tuple(c for c in COLUMNS if c not in DECODER_FIELDS)


@dataclass
class Runs:
    """What :func:`run_many` returns: ``results`` in the order of the configs (``None`` for a failed run),
    ``failed`` {index: error}, ``resumed`` (taken from the CSV) and ``ran`` (trained now)."""

    results: list
    failed: dict = field(default_factory=dict)
    resumed: int = 0
    ran: int = 0


def run_many(configs, *, scheduler=None, workers: int = 2, csv_path=None, resume: bool = True, threads: int = 1,
             progress=None, on_result=None, connect_timeout: float = 10.0) -> Runs:
    """Train every config, through Dask distributed, and gather the results as they finish.

    ``scheduler``: ``None`` starts a ``LocalCluster`` of ``workers`` single-threaded worker
    processes on this machine; an address ("tcp://host:8786") uses a running Dask cluster
    (ValueError naming it when it does not answer within ``connect_timeout`` seconds);
    :data:`IN_PROCESS` runs them here one after another (the same results, no Dask).
    ``threads``: torch's CPU threads per run (a config's own ``threads`` wins).
    ``csv_path``: every finished run is appended as one row (:meth:`TrainResult.row`) at once, so
    an interrupt (KeyboardInterrupt, re-raised) or a dead worker loses no finished run; with
    ``resume`` the runs already in the file are not run again. At the end the file is rewritten
    in the order of ``configs`` (rows of other runs kept after them), so a grid gives the same
    file however its runs were scheduled. ``progress`` (a callable taking a count) and
    ``on_result`` (a callable taking (index, TrainResult)) are called as runs finish.
    """
    configs = [_with_threads(c, threads) for c in _configs(configs)]
    check.count("workers", workers)
    check.count("threads", threads)
    done = _read_rows(csv_path) if (csv_path is not None and resume) else {}
    if csv_path is not None and not resume:
        _write_rows(csv_path, [])
    runs = Runs([None] * len(configs))
    todo = []
    for index, config in enumerate(configs):
        row = done.get(config.key())
        if row is None:
            todo.append(index)
            continue
        runs.results[index] = TrainResult.from_row(row, config)
        runs.resumed += 1
        if progress is not None:
            progress(1)
    try:
        if todo:
            runner = _run_here if scheduler == IN_PROCESS else _run_dask
            for index, outcome in runner([configs[i] for i in todo], todo, scheduler, workers, connect_timeout):
                _record(runs, index, outcome, csv_path, progress, on_result)
    finally:
        if csv_path is not None:
            _sort_rows(csv_path, configs)
    return runs


def _configs(configs) -> list:
    configs = list(configs)
    if not configs:
        raise ValueError("configs must hold at least one TrainConfig")
    for k, config in enumerate(configs):
        if not isinstance(config, TrainConfig):
            raise ValueError(f"configs[{k}] must be a TrainConfig, got {type(config).__name__}")
    return configs


def _with_threads(config: TrainConfig, threads: int) -> TrainConfig:
    return config if config.threads is not None else dataclasses.replace(config, threads=threads)


def _record(runs: Runs, index: int, outcome, csv_path, progress, on_result) -> None:
    """Store one finished run (a TrainResult or the error it raised) and append it to the CSV."""
    if isinstance(outcome, TrainResult):
        runs.results[index] = outcome
        runs.ran += 1
        if csv_path is not None:
            _append_row(csv_path, outcome.row())
        if on_result is not None:
            on_result(index, outcome)
    else:
        runs.failed[index] = outcome
    if progress is not None:
        progress(1)


def _run_here(configs, indices, scheduler, workers, timeout):
    """One run after another in this process; yields (index, TrainResult or error text)."""
    for index, config in zip(indices, configs):
        yield index, _attempt(config)


def _attempt(config: TrainConfig):
    try:
        return train(config)
    except (ValueError, RuntimeError, FloatingPointError) as exc:
        return f"{type(exc).__name__}: {exc}"


def _run_dask(configs, indices, scheduler, workers, timeout):
    """Submit every run to Dask and yield (index, TrainResult or error text) as each finishes.

    A worker that dies has its run rescheduled by Dask on another worker (up to Dask's
    ``allowed-failures``, then the run is reported as failed); an interrupt cancels the rest.
    """
    from distributed import as_completed

    client, cluster = connect(scheduler, workers, timeout)
    try:
        futures = {client.submit(_attempt, config, key=f"train-{config.key()}-{index}", pure=False): index
                   for index, config in zip(indices, configs)}
        try:
            for future in as_completed(futures):
                index = futures[future]
                try:
                    yield index, future.result()
                except Exception as exc:        # a killed worker, a lost connection: that run fails, the rest go on
                    yield index, f"{type(exc).__name__}: {exc}"
        finally:
            client.cancel(list(futures))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def connect(scheduler, workers: int, timeout: float):
    """(client, cluster): a new ``LocalCluster`` of ``workers`` processes, or a client of the scheduler at
    ``scheduler``; a scheduler that does not answer within ``timeout`` s is a ValueError naming it."""
    import logging

    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ValueError("scheduler: runs on Dask need dask[distributed] (pip install 'sigprop[train]'); "
                         f"scheduler={IN_PROCESS!r} runs them here without it") from None

    if scheduler is None:
        # The scheduler serves HTTP even without a dashboard, on 8787 unless told: ":0" takes a free port at once
        # (no "port in use" warning when another cluster runs on this machine).
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=logging.ERROR)
        return Client(cluster), cluster
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise ValueError(f"scheduler must be an address such as 'tcp://host:8786', got {scheduler!r}")
    try:
        return Client(scheduler, timeout=f"{float(timeout)}s"), None
    except (OSError, TimeoutError, ValueError) as exc:
        raise ValueError(f"scheduler {scheduler!r}: no Dask scheduler answered within {timeout:g} s "
                         f"({type(exc).__name__}: {exc})") from None


def _read_rows(path) -> dict:
    """{key: row} of a run CSV (empty when the file does not exist); a file of other columns is refused."""
    path = Path(path)
    if not path.exists():
        return {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is not None and tuple(reader.fieldnames) not in (COLUMNS, COLUMNS_WITHOUT_DECODER_FIELDS):
            raise ValueError(f"csv: {str(path)!r} is not a run file of this version (its columns differ); "
                             "give another path or delete it")
        return {row["key"]: row for row in reader}


def _write_rows(path, rows) -> None:
    """Write the header and ``rows`` to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _append_row(path, row: dict) -> None:
    """Append one row (the header first for a new file), flushed to disk before the next run is gathered."""
    path = Path(path)
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)
        fh.flush()
        os.fsync(fh.fileno())


def _sort_rows(path, configs) -> None:
    """Rewrite the CSV in the order of ``configs`` (each key once), other runs' rows after them."""
    rows = _read_rows(path)
    if not rows:
        return
    keys = list(dict.fromkeys(c.key() for c in configs))
    ordered = [rows[k] for k in keys if k in rows] + [r for k, r in rows.items() if k not in set(keys)]
    _write_rows(path, ordered)
