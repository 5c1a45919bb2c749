"""The configuration of one training run (:mod:`verify.training`): every knob, checked at the boundary.

This module imports neither torch nor SymPy, so that ``sigprop --help`` can show the
defaults of ``sigprop train`` without loading either (numeric/cli.py builds every
subcommand's options on start).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from derive import masks
from derive.parameters import ARCHITECTURES, DEFAULTS
from numeric import validation as check

#: Real encoders built from the config (the adapters read them): PyTorch post-/pre-LN stacks and BERT.
ENCODER_ARCHS = ("torch-post-ln", "torch-pre-ln", "bert")
#: Real decoders built from the config (verify.adapters_decoders reads them): transformers' GPT-2 and LLaMA.
DECODER_ARCHS = ("gpt2", "llama")
#: Every real model built from the config.
MODEL_ARCHS = ENCODER_ARCHS + DECODER_ARCHS
#: Fields only a decoder has: left out of a run's key while None, so that the keys of other runs (and the
#: run files written before these fields existed) stay valid.
DECODER_FIELDS = ("kv_heads", "init_std", "max_positions")
#: The MLP activations a decoder is built with (the names transformers and the decoder adapters both know).
DECODER_ACTIVATIONS = ("gelu_new", "gelu", "relu", "silu", "tanh")
#: The family's own activation (GPT-2's gelu_new, LLaMA's SwiGLU), the command line's default for a decoder.
DECODER_DEFAULT_ACTIVATION = {"gpt2": "gelu_new", "llama": "silu"}
#: transformers' default number of positions (GPT2Config.n_positions, LlamaConfig.max_position_embeddings;
#: verify/test_training.py checks them against the installed transformers).
DECODER_DEFAULT_POSITIONS = {"gpt2": 1024, "llama": 2048}
#: Training objectives (verify.training.OBJECTIVES implements each): masked-language modelling for encoders,
#: next-token prediction for decoders (a named spec with a causal or sliding-window mask).
OBJECTIVE_NAMES = ("mlm", "next-token")
#: Training precisions.
DTYPE_NAMES = ("float32", "float64")
#: The fraction of the gap from the no-context to the bigram loss a run must close to count as trained
#: (verify.train_diagram).
THRESHOLD = 0.25


@dataclass(frozen=True)
class TrainConfig:
    """One training run: model, initialisation, data, optimiser (the paper's section C as defaults).

    ``arch``: a name of :data:`derive.parameters.ARCHITECTURES`, a :class:`derive.layers.Layer`
    spec, or one of :data:`MODEL_ARCHS` (real encoders; the decoders ``gpt2`` and ``llama``,
    :mod:`verify.training_decoders`). ``beta``: the query/key scale (required for a spec;
    for a real model ``None`` keeps its own initialisation and then ``alpha_sa`` must be 1).
    ``warmup``: the fraction of steps of linear warm-up. ``eval_every``: steps between
    held-out evaluations on ``eval_sequences`` fixed sequences. ``d_ff``: the MLP width of a
    real model (default 4 d_model; the named specs' MLP has width d_model). A decoder's own fields
    (:data:`DECODER_FIELDS`, None: transformers' default): ``kv_heads`` (LLaMA's key/value heads,
    dividing ``heads``; None: as many as heads), ``init_std`` (``initializer_range``: every weight
    N(0, init_std^2); None: 0.02) and ``max_positions`` (``n_positions`` /
    ``max_position_embeddings``, at least ``seq_len``; None: 1024 / 2048); its ``activation`` is
    the MLP's (GPT-2's own is gelu_new, LLaMA's silu: :data:`DECODER_DEFAULT_ACTIVATION`), its
    objective "next-token" and its mask its own (None). ``mask``: None
    (an encoder) or "causal" / "sliding:W" (a decoder: the named spec's attention masked,
    :mod:`derive.masks`); ``objective``: "mlm" (masked-language modelling, ``mask_prob`` of the
    bytes) for an encoder, "next-token" for a decoder. ``threads``: torch's CPU threads for the
    run (``None`` leaves torch's setting).
    """

    arch: object = "post-ln"
    depth: int = 12
    d_model: int = 64
    heads: int = 4
    beta: float | None = 0.1
    alpha_sa: float = DEFAULTS["alpha_sa"]
    alpha_mlp: float = DEFAULTS["alpha_mlp"]
    sigma_v2: float = DEFAULTS["sigma_v2"]
    sigma_w2: float = DEFAULTS["sigma_w2"]
    sigma_b2: float = DEFAULTS["sigma_b2"]
    activation: str = "relu"
    d_ff: int | None = None
    kv_heads: int | None = None
    init_std: float | None = None
    max_positions: int | None = None
    seq_len: int = 64
    batch: int = 32
    steps: int = 1000
    lr: float = 5e-4
    warmup: float = 0.05
    weight_decay: float = 0.01
    clip: float = 1.0
    adam_betas: tuple = (0.9, 0.999)
    adam_eps: float = 1e-8
    mask: str | None = None
    objective: str = "mlm"
    mask_prob: float = 0.15
    eval_every: int = 50
    eval_sequences: int = 256
    seed: int = 0
    text: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    threads: int | None = None
    eps: float = 0.01
    ipr_threshold: float = 0.5
    criterion: str = "first"

    def __post_init__(self):
        """Every field checked here: a ValueError naming it, before any model is built."""
        _check_arch(self.arch)
        for name in ("depth", "d_model", "heads", "batch", "steps", "eval_every", "eval_sequences"):
            check.count(name, getattr(self, name))
        check.sequence_length(self.seq_len, name="seq_len", infinite=False)
        check.divides("heads", self.heads, "d_model", self.d_model)
        check.activation(self.activation)
        self._check_init()
        for name in ("lr", "adam_eps"):
            check.positive(name, getattr(self, name))
        check.nonnegative("weight_decay", self.weight_decay)
        check.positive("clip", self.clip)
        check.interval("warmup", self.warmup, 0.0, 1.0, closed=True)
        check.interval("mask_prob", self.mask_prob, 0.0, 1.0, closed=False)
        check.interval("eps", self.eps, 0.0, 1.0, closed=False)
        check.interval("ipr_threshold", self.ipr_threshold, 0.0, 1.0, closed=False)
        if len(self.adam_betas) != 2:
            raise ValueError(f"adam_betas must be a pair (beta1, beta2), got {self.adam_betas!r}")
        check.interval("adam_betas", self.adam_betas, 0.0, 1.0, closed=False)
        if self.objective not in OBJECTIVE_NAMES:
            raise ValueError(f"objective must be one of {OBJECTIVE_NAMES}, got {self.objective!r}")
        self._check_mask()
        self._check_decoder()
        if self.criterion not in ("first", "any"):
            raise ValueError(f"criterion must be 'first' or 'any', got {self.criterion!r}")
        if self.dtype not in DTYPE_NAMES:
            raise ValueError(f"dtype must be one of {DTYPE_NAMES}, got {self.dtype!r}")
        if self.threads is not None:
            check.count("threads", self.threads)
        check.count("seed", self.seed, minimum=0)

    def _check_mask(self):
        """A mask belongs to a named spec (a decoder), and a decoder trains on next-token prediction, an encoder
        on masked-language modelling (a custom spec carries its own masks and may take either)."""
        masks.parse(self.mask)
        if self.arch in DECODER_ARCHS:
            if self.mask is not None:
                raise ValueError(f"mask applies to a named spec {ARCHITECTURES}: a {self.arch} decoder's causal mask "
                                 f"is its own (mask=None), got mask={self.mask!r}")
            if self.objective != "next-token":
                raise ValueError(f"objective must be 'next-token' for the decoder {self.arch!r} (next-byte "
                                 f"prediction), got {self.objective!r}")
            return
        if self.mask is not None and self.arch not in ARCHITECTURES:
            raise ValueError(f"mask applies to a named spec {ARCHITECTURES} (a custom spec carries its own masks; "
                             f"real encoders have none), got arch={self.arch_name!r}")
        if isinstance(self.arch, str) and (self.objective == "next-token") != (self.mask is not None):
            raise ValueError(f"objective {self.objective!r} with mask={self.mask!r}: next-token prediction needs a "
                             "causal model (mask 'causal' or 'sliding:W'), masked-language modelling a model without "
                             "a mask")

    def _check_init(self):
        """The initialisation: the block parameters by their domains; what a real encoder allows."""
        real = self.arch in MODEL_ARCHS
        if self.beta is None and not real:
            raise ValueError("beta is required for a spec (the query/key scale of Result 1)")
        if self.beta is None and self.alpha_sa != 1.0:
            raise ValueError("alpha_sa != 1 needs beta: a real encoder is set to (beta, alpha_sa) by apply_init")
        if self.beta is not None:
            check.positive("beta", self.beta)
        check.nonnegative("alpha_sa", self.alpha_sa)
        if real and self.alpha_sa == 0:
            raise ValueError("alpha_sa must be > 0 for a real model (apply_init divides its branches by alpha_sa)")
        check.block_parameters(beta=1.0 if self.beta is None else self.beta, alpha_sa=self.alpha_sa,
                               alpha_mlp=self.alpha_mlp, sigma_v2=self.sigma_v2, sigma_w2=self.sigma_w2,
                               sigma_b2=self.sigma_b2)
        if self.d_ff is not None:
            if not real:
                raise ValueError("d_ff applies to real models (the named specs' MLP has width d_model)")
            check.count("d_ff", self.d_ff)

    def _check_decoder(self):
        """A decoder's own fields (:data:`DECODER_FIELDS`) belong to a decoder (kv_heads to LLaMA), each in its
        range: kv_heads divides heads, init_std > 0, seq_len <= max_positions; the activation is one both
        transformers and the decoder adapters know."""
        decoder = self.arch in DECODER_ARCHS
        for name in DECODER_FIELDS:
            if getattr(self, name) is not None and not decoder:
                raise ValueError(f"{name} applies to the decoders {DECODER_ARCHS}, got arch={self.arch_name!r}")
        if not decoder:
            return
        if self.kv_heads is not None:
            if self.arch != "llama":
                raise ValueError(f"kv_heads applies to llama (GPT-2 has one key/value head per head), got "
                                 f"arch={self.arch!r}")
            check.count("kv_heads", self.kv_heads)
            check.divides("kv_heads", self.kv_heads, "heads", self.heads,
                          " (each key/value head serves a group of heads): use a divisor of heads")
        if self.init_std is not None:
            check.positive("init_std", self.init_std)
        positions = DECODER_DEFAULT_POSITIONS[self.arch] if self.max_positions is None else \
            check.count("max_positions", self.max_positions)
        if self.seq_len > positions:
            raise ValueError(f"seq_len = {self.seq_len} exceeds max_positions = {positions} (the {self.arch} "
                             f"model's positions): use seq_len in [2, {positions}] or a larger max_positions")
        if self.activation not in DECODER_ACTIVATIONS:
            raise ValueError(f"activation must be one of {DECODER_ACTIVATIONS} for the decoder {self.arch!r}, got "
                             f"{self.activation!r}")

    @property
    def arch_name(self) -> str:
        """The architecture's name (a custom spec's own name, else "custom")."""
        return self.arch if isinstance(self.arch, str) else (getattr(self.arch, "name", None) or "custom")

    def params(self) -> dict:
        """The block parameters by the table's names (derive.parameters)."""
        return dict(beta=self.beta, alpha_sa=self.alpha_sa, alpha_mlp=self.alpha_mlp, sigma_v2=self.sigma_v2,
                    sigma_w2=self.sigma_w2, sigma_b2=self.sigma_b2)

    def to_dict(self) -> dict:
        """JSON-ready fields (a spec object as its name)."""
        out = dataclasses.asdict(self)
        out["arch"] = self.arch_name
        out["adam_betas"] = list(self.adam_betas)
        return out

    def key(self) -> str:
        """A stable identifier of the run (hash of its fields; ``threads`` and ``device`` excluded, they do not
        change what is computed; a decoder's own fields while None, :data:`DECODER_FIELDS`): the resume key of
        :func:`run_many`."""
        fields = {k: v for k, v in self.to_dict().items()
                  if k not in ("threads", "device") and not (k in DECODER_FIELDS and v is None)}
        if not isinstance(self.arch, str):
            fields["arch"] = str(self.arch)
        return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _check_arch(arch) -> None:
    """A named spec, a real encoder's name, or a spec object (duck-typed, as numeric.validation: no SymPy)."""
    if not isinstance(arch, str) and hasattr(arch, "overlap_map") and hasattr(arch, "torch_init"):
        return
    if arch not in ARCHITECTURES + MODEL_ARCHS:
        raise ValueError(f"arch must be one of {ARCHITECTURES + MODEL_ARCHS} or a derive.layers.Layer spec, "
                         f"got {arch!r}")
