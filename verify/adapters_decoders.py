"""Hugging Face decoders at their own initialisation: GPT-2 and the LLaMA family read into the theory.

Supported models (anything else, or an option that changes the forward pass in a way the theory does not model,
is refused by name): ``GPT2Model`` (and ``GPT2LMHeadModel``'s ``transformer``), ``LlamaModel``, ``MistralModel``
and ``Qwen2Model`` (the LLaMA-family decoders of the installed transformers whose decoder layer is LLaMA's:
pre-RMSNorm, RoPE attention with grouped K/V heads, SwiGLU MLP; Mistral's sliding window and Qwen2's per-layer
``layer_types`` become the mask ``sliding:W``), and their ``...ForCausalLM`` wrappers.

What is read (docs/design.md, "Decoder-only conventions"; all from the actual tensors, float64):

- **attention** (per query head h of group g(h) = h // (heads/kv_heads)): the score scale
  kappa_h = d sqrt(s_Q^h s_K^g) (the derivation of :mod:`verify.adapters_read`, which does not depend on
  the head dimension d_h); GPT-2's ``scale_attn_by_inverse_layer_idx`` divides it by the layer's index + 1.
  Values: sigma_v2 = d d_h sum_h s_O^h s_V^g, head weights w_h proportional to s_O^h s_V^g (the map is linear in
  each head's moments; keys and values shared by a group leave it unchanged, derive.layers.grouped_heads_cross_term),
  the common bias sigma_b2_att = sum_h s_O^h |b_V^g|^2 + mean b_O^2. A query bias must be zero (a key bias
  cancels in the softmax). RoPE: theta of ``rope_parameters`` (rope_type "default" only) and d_h.
- **norms**: GPT-2's LayerNorm (centring, eps, trivial affine, as initialised); RMSNorm's eps and the mean square
  of its weight (the gain, :class:`derive.layers.RMSNorm`).
- **MLP**: GPT-2's c_fc -> activation (gelu_new by default) -> c_proj (Conv1D, weights stored in x out);
  LLaMA's down(act(gate x) * up x) (:class:`derive.layers.GatedMLP`): sigma_w2 = d s_gate, sigma_w2_up = d s_up,
  sigma_w2_out = d_ff s_down, biases' mean squares.
- **embeddings** (:func:`embedding_overlaps`): for token ids i.i.d. uniform over the vocabulary the exact expected
  overlap matrix of the embedding output, Q0_ts = a_t . a_s / d (t != s) and Q0_tt = (spread + |a_t|^2) / d with
  a_t = mean_v W[v] (+ GPT-2's position row P[t]) and spread = mean_v |W[v]|^2 - |mean_v W[v]|^2: GPT-2's learned
  absolute positions make the input position-dependent, which the position-resolved theory keeps.

The theory (:func:`decoder_run`) iterates the read layers on the expected overlap matrix Q (T x T) with the
position-resolved closure of :mod:`numeric.causal` (RoPE's rows by :mod:`numeric.rope`), each layer its own spec
(:func:`decoder_spec`) compiled by :func:`numeric.codegen_causal.compile_causal`. GPT-2's residual projections,
initialised with std / sqrt(2 L), enter through their read variances; a config answered without building it uses
the same init rule (:func:`config_readings`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
import torch

from derive import masks
from derive.layers import Bias, GatedMLP, LayerNorm, Linear, Activation, Parallel, Residual, RMSNorm, \
    SelfAttention, Sequence
from derive.parameters import NAMES as PARAMETERS
from numeric import validation as check

from .adapters_read import activation_name, capture, check_dropout, read_layernorm, second_moment

#: The model classes read here, by family.
FAMILIES = {"GPT2Model": "gpt2", "LlamaModel": "llama", "MistralModel": "llama", "Qwen2Model": "llama"}
#: The wrappers whose base model is read.
WRAPPERS = {"GPT2LMHeadModel": "transformer", "LlamaForCausalLM": "model", "MistralForCausalLM": "model",
            "Qwen2ForCausalLM": "model"}


@dataclass(frozen=True)
class DecoderReading:
    """One decoder layer as the theory sees it (module docstring for every field's meaning)."""

    name: str
    family: str                # "gpt2" or "llama"
    d: int
    heads: int
    kv_heads: int
    head_dim: int
    d_ff: int
    norm: str                  # "layernorm" (centring) or "rmsnorm"
    eps: float
    mlp: str                   # "plain" or "gated"
    activation: str
    rope: float | None
    mask: str                  # "causal" or "sliding:W"
    score_scale: tuple
    value_weights: tuple
    sigma_v2: float
    sigma_b2_att: float
    sigma_w2: float
    sigma_b2: float
    sigma_w2_up: float
    sigma_b2_up: float
    sigma_w2_out: float
    sigma_b2_out: float
    gain_att: float = 1.0
    gain_mlp: float = 1.0
    parallel: bool = False
    finite_width: bool = False  # the closure at the layer's own width d and head size (issue 19)
    handles: dict = field(default=None, compare=False, repr=False)

    def beta(self, T: int) -> np.ndarray:
        """beta_h = kappa_h / sqrt(ln T) per query head."""
        return np.asarray(self.score_scale) / math.sqrt(math.log(T))

    def structure(self) -> tuple:
        """What fixes the spec (and its compiled map): everything but the variances."""
        gated_bias = self.mlp == "gated" and (self.sigma_b2 > 0 or self.sigma_b2_up > 0)
        return (self.norm, self.eps, self.mlp, self.activation, self.d_ff / self.d, self.rope,
                self.head_dim if self.rope is not None else None, self.mask, self.parallel, gated_bias)

    def values(self) -> dict:
        """The variances by the spec's parameter names (beta and the skip strengths excluded); a spec takes those
        of its :func:`numeric.codegen.extra_parameters`."""
        return dict(sigma_v2=self.sigma_v2, sigma_b2_att=self.sigma_b2_att, sigma_w2=self.sigma_w2,
                    sigma_b2=self.sigma_b2, sigma_w2_up=self.sigma_w2_up, sigma_b2_up=self.sigma_b2_up,
                    sigma_w2_out=self.sigma_w2_out, sigma_b2_out=self.sigma_b2_out, gain_att=self.gain_att,
                    gain_mlp=self.gain_mlp)

    def without_handles(self) -> "DecoderReading":
        return replace(self, handles=None)


# --- the spec ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def decoder_spec(norm: str, eps: float, mlp: str, activation: str, width: float, rope, head_dim, mask: str,
                 parallel: bool = False, gated_bias: bool = False) -> Sequence:
    """One decoder layer as a derive spec (pre-norm; the attention with the layer's mask and RoPE).

    GPT-2: x + SA(LN x) + b_att -> . + W2 act(W1 LN(.) + b1) + b2 (LayerNorm with centring);
    LLaMA: x + SA_rope(RMS x) -> . + W_down(silu(W_gate RMS(.)) * W_up RMS(.)) (RMSNorm with its gain);
    ``parallel``: x + SA(N x) + MLP(N' x) (GPT-J / NeoX).
    """
    def normalise(gain):
        return LayerNorm(eps, centre=True) if norm == "layernorm" else RMSNorm(eps, gain=gain)

    attention = Sequence(SelfAttention(mask=mask, rope=rope, rope_dim=head_dim if rope is not None else None),
                         Bias("sigma_b2_att"))
    if mlp == "gated":
        block = GatedMLP(activation, "sigma_w2", "sigma_w2_up", "sigma_w2_out", width,
                         bias="sigma_b2" if gated_bias else None, bias_up="sigma_b2_up" if gated_bias else None,
                         bias_down="sigma_b2_out")
    else:
        block = Sequence(Linear("sigma_w2", "sigma_b2", width), Activation(activation),
                         Linear("sigma_w2_out", "sigma_b2_out", 1.0 / width))
    att_branch, mlp_branch = Sequence(normalise("gain_att"), attention), Sequence(normalise("gain_mlp"), block)
    if parallel:
        return Sequence(Parallel(att_branch, mlp_branch, alpha="alpha_sa"), name="parallel decoder layer")
    return Sequence(Residual(att_branch, "alpha_sa"), Residual(mlp_branch, "alpha_mlp"), name="pre-norm decoder layer")


def spec_of(reading: DecoderReading) -> Sequence:
    """The derive spec of one read decoder layer."""
    return decoder_spec(*reading.structure())


# --- models ---------------------------------------------------------------------------------------------

def base_model(model):
    """The base decoder of ``model`` (a wrapper's ``transformer`` / ``model``), or TypeError naming the class."""
    name = type(model).__name__
    if name in WRAPPERS:
        model, name = getattr(model, WRAPPERS[name]), type(getattr(model, WRAPPERS[name])).__name__
    if name not in FAMILIES:
        raise TypeError(f"cannot read {name} as a decoder: supported are {', '.join(FAMILIES)} (and "
                        f"{', '.join(WRAPPERS)})")
    return model


def is_decoder(model) -> bool:
    """Whether ``model`` is a Hugging Face decoder this module reads."""
    name = type(model).__name__
    return name in FAMILIES or name in WRAPPERS


def family(model) -> str:
    return FAMILIES[type(base_model(model)).__name__]


def layers_of(model) -> list:
    """[(name, layer)] of the decoder layers."""
    base = base_model(model)
    if family(base) == "gpt2":
        return [(f"h.{i}", m) for i, m in enumerate(base.h)]
    return [(f"layers.{i}", m) for i, m in enumerate(base.layers[: base.config.num_hidden_layers])]


def check_config(config) -> None:
    """Refuse a config the theory does not read, by name: heads that do not divide the hidden size (without an
    explicit head_dim), kv heads that do not divide the heads, RoPE other than the default, cross-attention."""
    name = type(config).__name__
    if name == "GPT2Config":
        check.divides("n_head", config.n_head, "n_embd", config.n_embd, " (GPT2Config)")
        if config.add_cross_attention:
            raise ValueError("add_cross_attention: a decoder with cross-attention is not modelled")
        return
    hidden, heads = config.hidden_size, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None)
    if head_dim is None or head_dim == hidden // heads:
        check.divides("num_attention_heads", heads, "hidden_size", hidden, f" ({name})")
    kv = getattr(config, "num_key_value_heads", None) or heads
    check.divides("num_key_value_heads", kv, "num_attention_heads", heads, f" ({name})")
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"rope_parameters rope_type = {rope.get('rope_type')!r}: only 'default' RoPE is modelled")
    if (getattr(config, "pretraining_tp", 1) or 1) != 1:
        raise ValueError(f"pretraining_tp = {config.pretraining_tp}: a split forward is not modelled")


def max_positions(config) -> int:
    return config.n_positions if type(config).__name__ == "GPT2Config" else config.max_position_embeddings


def check_seq_len(config, seq_len) -> int:
    """T checked against the model's maximal number of positions (``n_positions`` / ``max_position_embeddings``)."""
    T = check.sequence_length(seq_len, name="seq_len", infinite=False)
    limit = max_positions(config)
    if T > limit:
        raise ValueError(f"seq_len = {T} exceeds the model's {limit} positions (max_position_embeddings / "
                         "n_positions of its config)")
    return T


def _check_finite(module, where: str) -> None:
    for pname, param in module.named_parameters():
        if not torch.isfinite(param).all():
            raise ValueError(f"{where}.{pname} has non-finite entries")


def read_model(model, *, independent: bool = True) -> list[DecoderReading]:
    """Every decoder layer of ``model`` read (module docstring)."""
    base = base_model(model)
    check_config(base.config)
    implementation = getattr(base.config, "_attn_implementation", None)
    if implementation not in (None, "eager", "sdpa"):
        raise ValueError(f"attention implementation {implementation!r}: only 'eager' and 'sdpa' are read")
    reader = _read_gpt2 if family(base) == "gpt2" else _read_llama
    readings = [reader(layer, name, i, base.config) for i, (name, layer) in enumerate(layers_of(base))]
    if independent and len(readings) > 1:
        first = [r.handles["q"] for r in readings]
        if any(first[i] is first[j] or torch.equal(first[i], first[j]) for i in range(len(first))
               for j in range(i + 1, min(i + 2, len(first)))):
            raise ValueError("two consecutive layers hold identical query weights: the theory needs independently "
                             "initialised layers")
    return readings


# --- attention with grouped heads ------------------------------------------------------------------------

def read_grouped_attention(where: str, d: int, heads: int, kv_heads: int, head_dim: int, w: dict,
                           scale: float = 1.0) -> dict:
    """kappa_h, w_h, sigma_v2 and sigma_b2_att of an attention layer whose K/V heads serve groups of query heads.

    ``w``: q (heads d_h x d), k and v (kv_heads d_h x d), o (d x heads d_h), biases bq, bk, bv, bo (None when
    absent). ``scale`` multiplies every score (GPT-2's inverse layer index).
    """
    if w["bq"] is not None and bool((w["bq"] != 0).any()):
        raise ValueError(f"{where}: the query bias is non-zero; it adds b_Q . k_s to every row's scores, a per-key "
                         "offset the theory does not model (the key bias cancels in the softmax)")
    group = np.arange(heads) // (heads // kv_heads)

    def per_head(weight, count, label):
        second_moment(weight, f"{where} {label}")
        blocks = weight.detach().to("cpu", torch.float64).reshape(count, head_dim, -1)
        return blocks.pow(2).mean(dim=(1, 2)).numpy()

    s_q, s_k = per_head(w["q"], heads, "query weight"), per_head(w["k"], kv_heads, "key weight")
    s_v = per_head(w["v"], kv_heads, "value weight")
    s_o = per_head(w["o"].t(), heads, "output projection weight")
    products = s_o * s_v[group]
    total = products.sum()
    value_bias = np.zeros(kv_heads) if w["bv"] is None else \
        w["bv"].detach().to("cpu", torch.float64).reshape(kv_heads, head_dim).pow(2).sum(-1).numpy()
    return dict(score_scale=tuple(float(x) for x in scale * d * np.sqrt(s_q * s_k[group])),
                value_weights=tuple(float(x) for x in (products / total if total > 0 else np.full(heads, 1 / heads))),
                sigma_v2=float(d * head_dim * total),
                sigma_b2_att=float((s_o * value_bias[group]).sum() + second_moment(w["bo"], f"{where} output bias")))


# --- GPT-2 ----------------------------------------------------------------------------------------------

def _read_gpt2(block, where: str, index: int, config) -> DecoderReading:
    """A ``GPT2Block``: pre-LN attention (c_attn, c_proj) and MLP (c_fc, act, c_proj), Conv1D weights (in x out)."""
    if type(block).__name__ != "GPT2Block":
        raise TypeError(f"{where}: expected GPT2Block, got {type(block).__name__}")
    attn, mlp = block.attn, block.mlp
    if type(attn).__name__ != "GPT2Attention" or type(mlp).__name__ != "GPT2MLP":
        raise TypeError(f"{where}: custom attention or MLP modules ({type(attn).__name__}, {type(mlp).__name__}) "
                        "are not supported")
    check_dropout(block, where)
    _check_finite(block, where)
    d, heads = attn.embed_dim, attn.num_heads
    if not attn.scale_attn_weights:
        raise ValueError(f"{where}: scale_attn_weights = False (scores without 1/sqrt(d_h)) is not modelled")
    scale = 1.0 / (index + 1) if attn.scale_attn_by_inverse_layer_idx else 1.0
    W, b = attn.c_attn.weight, attn.c_attn.bias                          # (d, 3d): x @ W
    weights = dict(q=W[:, :d].t(), k=W[:, d:2 * d].t(), v=W[:, 2 * d:].t(), o=attn.c_proj.weight.t(),
                   bq=b[:d], bk=b[d:2 * d], bv=b[2 * d:], bo=attn.c_proj.bias)
    att = read_grouped_attention(f"{where}.attn", d, heads, heads, d // heads, weights, scale)
    d_ff = mlp.c_fc.weight.shape[1]
    _same_eps(block, where)
    return DecoderReading(
        name=where, family="gpt2", d=d, heads=heads, kv_heads=heads, head_dim=d // heads, d_ff=d_ff,
        norm="layernorm", eps=read_layernorm(block.ln_1, d, f"{where}.ln_1"), mlp="plain",
        activation=activation_name(mlp.act, f"{where}.mlp.act"), rope=None, mask="causal",
        sigma_w2=d * second_moment(mlp.c_fc.weight, f"{where}.mlp.c_fc.weight"),
        sigma_b2=second_moment(mlp.c_fc.bias, f"{where}.mlp.c_fc.bias"),
        sigma_w2_up=0.0, sigma_b2_up=0.0,
        sigma_w2_out=d_ff * second_moment(mlp.c_proj.weight, f"{where}.mlp.c_proj.weight"),
        sigma_b2_out=second_moment(mlp.c_proj.bias, f"{where}.mlp.c_proj.bias"),
        handles=dict(q=W, bq=b, out=attn.c_proj, mlp_out=mlp.c_proj, conv1d=True), **att)


def _same_eps(block, where) -> None:
    d = block.ln_1.normalized_shape[0]
    if read_layernorm(block.ln_1, d, f"{where}.ln_1") != read_layernorm(block.ln_2, d, f"{where}.ln_2"):
        raise ValueError(f"{where}: ln_1 and ln_2 have different eps")


# --- LLaMA family ---------------------------------------------------------------------------------------

def _rmsnorm(norm, d: int, where: str) -> tuple[float, float]:
    """(eps, mean square of the weight) of an RMSNorm over d features."""
    if not type(norm).__name__.endswith("RMSNorm"):
        raise TypeError(f"{where}: expected an RMSNorm, got {type(norm).__name__}")
    weight = norm.weight.detach().to("cpu", torch.float64)
    if tuple(weight.shape) != (d,):
        raise ValueError(f"{where}: RMSNorm over {tuple(weight.shape)}, expected ({d},)")
    eps = float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 0.0)))
    return eps, float(weight.pow(2).mean())


def _layer_mask(config, index: int) -> str:
    """The mask of layer ``index``: "causal", or "sliding:W" (Mistral's sliding_window; Qwen2's sliding layers)."""
    name = type(config).__name__
    window = getattr(config, "sliding_window", None)
    if name == "MistralConfig" and window is not None:
        return f"sliding:{int(window)}"
    types = getattr(config, "layer_types", None)
    if types is not None and types[index] == "sliding_attention" and window is not None:
        return f"sliding:{int(window)}"
    if types is not None and types[index] not in ("full_attention", "sliding_attention"):
        raise ValueError(f"layer_types[{index}] = {types[index]!r} is not modelled")
    return "causal"


def _read_llama(layer, where: str, index: int, config) -> DecoderReading:
    """A LLaMA-family decoder layer: RMSNorm, RoPE attention with K/V groups, SwiGLU MLP."""
    if not type(layer).__name__.endswith("DecoderLayer"):
        raise TypeError(f"{where}: expected a decoder layer, got {type(layer).__name__}")
    attn, mlp = layer.self_attn, layer.mlp
    for module, suffix in ((attn, "Attention"), (mlp, "MLP")):
        if not type(module).__name__.endswith(suffix) or type(module).__name__[:-len(suffix)] + "Model" not in FAMILIES:
            raise TypeError(f"{where}: custom module {type(module).__name__} is not supported")
    check_dropout(layer, where)
    if layer.training and getattr(attn, "attention_dropout", 0.0) > 0:
        raise ValueError(f"{where}: attention_dropout = {attn.attention_dropout} in training mode; call model.eval()")
    _check_finite(layer, where)
    d, head_dim = config.hidden_size, attn.head_dim
    heads = config.num_attention_heads
    kv = config.num_key_value_heads or heads
    if not math.isclose(attn.scaling, head_dim ** -0.5):
        raise ValueError(f"{where}: attention scaling {attn.scaling} differs from 1/sqrt(head_dim)")
    weights = dict(q=attn.q_proj.weight, k=attn.k_proj.weight, v=attn.v_proj.weight, o=attn.o_proj.weight,
                   bq=attn.q_proj.bias, bk=attn.k_proj.bias, bv=attn.v_proj.bias, bo=attn.o_proj.bias)
    att = read_grouped_attention(f"{where}.self_attn", d, heads, kv, head_dim, weights)
    eps_att, gain_att = _rmsnorm(layer.input_layernorm, d, f"{where}.input_layernorm")
    eps_mlp, gain_mlp = _rmsnorm(layer.post_attention_layernorm, d, f"{where}.post_attention_layernorm")
    if eps_att != eps_mlp:
        raise ValueError(f"{where}: the two RMSNorms have different eps")
    d_ff = mlp.gate_proj.out_features
    theta = float((config.rope_parameters or {}).get("rope_theta", 10000.0))
    return DecoderReading(
        name=where, family="llama", d=d, heads=heads, kv_heads=kv, head_dim=head_dim, d_ff=d_ff, norm="rmsnorm",
        eps=eps_att, mlp="gated", activation=activation_name(mlp.act_fn, f"{where}.mlp.act_fn"), rope=theta,
        mask=_layer_mask(config, index),
        sigma_w2=d * second_moment(mlp.gate_proj.weight, f"{where}.mlp.gate_proj.weight"),
        sigma_b2=second_moment(mlp.gate_proj.bias, f"{where}.mlp.gate_proj.bias"),
        sigma_w2_up=d * second_moment(mlp.up_proj.weight, f"{where}.mlp.up_proj.weight"),
        sigma_b2_up=second_moment(mlp.up_proj.bias, f"{where}.mlp.up_proj.bias"),
        sigma_w2_out=d_ff * second_moment(mlp.down_proj.weight, f"{where}.mlp.down_proj.weight"),
        sigma_b2_out=second_moment(mlp.down_proj.bias, f"{where}.mlp.down_proj.bias"),
        gain_att=gain_att, gain_mlp=gain_mlp,
        handles=dict(q=attn.q_proj.weight, bq=attn.q_proj.bias, out=attn.o_proj, mlp_out=mlp.down_proj,
                     conv1d=False), **att)


# --- a config without building it: the init rule ----------------------------------------------------------

def config_readings(config) -> list[DecoderReading]:
    """The readings of a config's layers from its init rule, without building them: every weight N(0, std^2)
    (std = ``initializer_range``), biases 0, norm weights 1; GPT-2's c_proj (attention and MLP) std / sqrt(2 L).
    Exact expectations of what :func:`read_model` reads from a built model (tests/verify compare them)."""
    check_config(config)
    name = type(config).__name__
    std2 = float(config.initializer_range) ** 2
    if name == "GPT2Config":
        d, heads, L = config.n_embd, config.n_head, config.n_layer
        d_ff = config.n_inner or 4 * d
        proj = std2 / (2 * L)
        act = _config_activation(config.activation_function)
        base = dict(family="gpt2", d=d, heads=heads, kv_heads=heads, head_dim=d // heads, d_ff=d_ff,
                    norm="layernorm", eps=float(config.layer_norm_epsilon), mlp="plain", activation=act, rope=None,
                    mask="causal", value_weights=tuple([1.0 / heads] * heads), sigma_v2=d * d * std2 * proj,
                    sigma_b2_att=0.0, sigma_w2=d * std2, sigma_b2=0.0, sigma_w2_up=0.0, sigma_b2_up=0.0,
                    sigma_w2_out=d_ff * proj, sigma_b2_out=0.0)
        if config.scale_attn_by_inverse_layer_idx:
            return [DecoderReading(name=f"h.{i}", score_scale=tuple([d * std2 / (i + 1)] * heads), **base)
                    for i in range(L)]
        return [DecoderReading(name=f"h.{i}", score_scale=tuple([d * std2] * heads), **base) for i in range(L)]
    d, heads, L = config.hidden_size, config.num_attention_heads, config.num_hidden_layers
    kv = config.num_key_value_heads or heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    d_ff = config.intermediate_size
    act = _config_activation(config.hidden_act)
    theta = float((config.rope_parameters or {}).get("rope_theta", 10000.0))
    return [DecoderReading(name=f"layers.{i}", family="llama", d=d, heads=heads, kv_heads=kv, head_dim=head_dim,
                           d_ff=d_ff, norm="rmsnorm", eps=float(config.rms_norm_eps), mlp="gated", activation=act,
                           rope=theta, mask=_layer_mask(config, i), score_scale=tuple([d * std2] * heads),
                           value_weights=tuple([1.0 / heads] * heads), sigma_v2=d * head_dim * heads * std2 * std2,
                           sigma_b2_att=0.0, sigma_w2=d * std2, sigma_b2=0.0, sigma_w2_up=d * std2, sigma_b2_up=0.0,
                           sigma_w2_out=d_ff * std2, sigma_b2_out=0.0) for i in range(L)]


def _config_activation(name: str) -> str:
    table = {"gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "gelu": "gelu", "relu": "relu",
             "silu": "silu", "swish": "silu", "tanh": "tanh"}
    if name not in table:
        raise ValueError(f"activation {name!r} has no kernel in the theory (supported: {', '.join(table)})")
    return table[name]


# --- embeddings -------------------------------------------------------------------------------------------

def embedding_overlaps(model, seq_len: int) -> np.ndarray:
    """The expected overlap matrix Q0 (T x T) of the embedding output for i.i.d. uniform token ids (module
    docstring): GPT-2's word rows plus its position rows, LLaMA's word rows."""
    base = base_model(model)
    T = check_seq_len(base.config, seq_len)
    if family(base) == "gpt2":
        words, positions = base.wte.weight, base.wpe.weight[:T]
        check_dropout(base.drop, "drop")
    else:
        words, positions = base.embed_tokens.weight, None
    _check_finite(base.wte if family(base) == "gpt2" else base.embed_tokens, "embeddings")
    if positions is not None and not torch.isfinite(positions).all():
        raise ValueError("wpe has non-finite entries")
    return embedding_state(words, positions, T)


def embedding_state(words, positions, T: int) -> np.ndarray:
    """Q0 from word rows (V x d) and optional position rows (T x d), float64."""
    W = words.detach().to("cpu", torch.float64)
    d = W.shape[1]
    mean = W.mean(0)
    spread = float(W.pow(2).sum(-1).mean() - mean.pow(2).sum())
    a = mean.expand(T, d) if positions is None else mean + positions.detach().to("cpu", torch.float64)
    Q = (a @ a.t()).numpy() / d
    Q[np.diag_indices(T)] += spread / d
    return Q


def config_embedding_overlaps(config, seq_len: int) -> np.ndarray:
    """Q0 of a config's init rule (expectation over the embeddings too): words N(0, std^2) in d dims, GPT-2's
    positions N(0, std^2): Q0 = std^2 (1 + [GPT-2]) I on the diagonal, 0 off it."""
    T = check_seq_len(config, seq_len)
    std2 = float(config.initializer_range) ** 2
    return np.eye(T) * std2 * (2.0 if type(config).__name__ == "GPT2Config" else 1.0)


# --- the theory -------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _compiled(structure: tuple):
    from numeric.codegen_causal import compile_causal
    return compile_causal(decoder_spec(*structure))


def closure_of(reading: DecoderReading, T: int):
    """The position-resolved attention closure of a read layer at T (:class:`numeric.causal.Attention`): its mask,
    its RoPE, and at finite width its own (d, d_head) (:func:`at_finite_width`) with tokens of fixed norm (every
    read decoder layer normalizes its attention input: derive.finite_width steps 5-6)."""
    rope = None if reading.rope is None else (reading.rope, reading.head_dim)
    width = (reading.d, reading.head_dim, "normalized") if reading.finite_width else None
    return _closure(T, reading.mask, rope, width)


@lru_cache(maxsize=16)
def _closure(T: int, mask: str, rope, width=None):
    from numeric import causal
    return causal.Attention(T, masks.parse(mask), rope, width=width)


def at_finite_width(readings) -> list:
    """The readings with the finite-width closure (issue 19: each layer at its own d and head size; the causal
    tables of :mod:`numeric.causal_width`, RoPE layers' rows by :class:`numeric.rope_width.RowTerms` under any
    mask). Refused by name where it is not tabulated: a sliding window without RoPE."""
    for r in readings:
        if r.mask != "causal" and r.rope is None:
            raise ValueError(f"finite_width: {r.name} attends through {r.mask} without RoPE; those finite-width terms "
                             "are tabulated for the causal mask only")
    return [replace(r, finite_width=True) for r in readings]


@dataclass
class DecoderRun:
    """rho before the first layer and after each layer (all pairs, and among ``index``), the final overlaps, and
    the input overlap matrix of every layer's attention (for the entropy-collapse reading)."""

    rho: np.ndarray
    rho_tokens: np.ndarray
    Q: np.ndarray
    attention_inputs: list


def decoder_run(readings, Q0, T: int, *, alpha_sa=1.0, beta=None, index=None, final_norm=None,
                keep_inputs: bool = False, layers: int | None = None) -> DecoderRun:
    """The position-resolved theory through ``readings`` from the overlap matrix Q0 (module docstring).

    ``alpha_sa``: the theory's skip strength of every attention residual (the model has 1; the MLP residual keeps
    1, which is what apply_init's division of both branches of layer l by alpha^l realises); ``beta``: every
    head's beta if given, else each head's own. ``alpha_sa``, ``beta`` and Q0 may carry leading grid axes
    (broadcast). ``final_norm``: (kind, eps) of a final norm applied after the
    last layer (one more entry). ``layers``: stop after that many layers.
    """
    from numeric import causal

    shape = np.broadcast_shapes(np.shape(alpha_sa), np.shape(beta) if beta is not None else (), Q0.shape[:-2])
    Q = np.broadcast_to(Q0, shape + Q0.shape[-2:]).copy()
    rho, rho_tokens, inputs = [causal.ratio(Q)], [causal.ratio(Q, index)], []
    with np.errstate(all="ignore"):
        for reading in readings[:layers]:
            Q, att_in = _layer(reading, Q, T, alpha_sa, beta, shape)
            if keep_inputs:
                inputs.append(att_in)
            if not (np.all(np.isfinite(Q)) and np.all(np.diagonal(Q, axis1=-2, axis2=-1) > 0)):
                raise ValueError(f"{reading.name}: the theory's overlaps are not finite or a token vanished")
            rho.append(causal.ratio(Q))
            rho_tokens.append(causal.ratio(Q, index))
        if final_norm is not None:
            kind, eps = final_norm
            diag = np.diagonal(Q, axis1=-2, axis2=-1) + eps
            Q = Q / np.sqrt(diag[..., :, None] * diag[..., None, :])
            rho.append(causal.ratio(Q))
            rho_tokens.append(causal.ratio(Q, index))
    return DecoderRun(np.stack(rho), np.stack(rho_tokens), Q, inputs)


def head_betas(reading: DecoderReading, T: int, beta, shape) -> tuple[np.ndarray, np.ndarray]:
    """(betas (..., H'), weights (H',)) of a layer's distinct head scales: each head's own (equal scales merged,
    exact: the map is linear in the heads' moments), or every head at ``beta``."""
    if beta is not None:
        return np.broadcast_to(np.asarray(beta, dtype=float), shape)[..., None], np.ones(1)
    scales, inverse = np.unique(np.asarray(reading.beta(T)), return_inverse=True)
    weights = np.bincount(inverse, weights=np.asarray(reading.value_weights), minlength=scales.size)
    return np.broadcast_to(scales, shape + scales.shape), weights


def _layer(reading: DecoderReading, Q, T: int, alpha_sa, beta, shape):
    """One read layer's block on Q (..., T, T): the compiled spec with a closure that sums the heads."""
    closure = closure_of(reading, T)
    betas, weights = head_betas(reading, T, beta, shape)

    def attention(Q, _beta, sigma_v2, gain):
        sv = np.asarray(sigma_v2, dtype=float)
        sv = np.broadcast_to(sv[..., 0, 0] if sv.ndim >= 2 else sv, shape)
        Qh = np.broadcast_to(Q[..., None, :, :], Q.shape[:-2] + (weights.size,) + Q.shape[-2:])
        out = closure(np.ascontiguousarray(Qh), betas, np.broadcast_to(sv[..., None], betas.shape), gain)
        return np.einsum("...hts,h->...ts", out, weights)

    spec = spec_of(reading)
    values = dict(reading.values(), beta=1.0, alpha_sa=alpha_sa, alpha_mlp=1.0)
    args = [_arg(values[name]) for name in PARAMETERS]
    extra = {name: _arg(values[name]) for name in _extra(spec)}
    Q_out, inputs = _compiled(reading.structure())(Q, *args, attention, **extra)
    return Q_out, (inputs[0] if inputs else None)


@lru_cache(maxsize=None)
def _extra(spec) -> tuple:
    from numeric.codegen import extra_parameters
    return extra_parameters(spec)


def _arg(value):
    return np.asarray(value, dtype=float)[..., None, None] if np.ndim(value) else float(value)


def final_norm_of(model):
    """(kind, eps) of the model's final norm (GPT-2's ln_f, LLaMA's norm)."""
    base = base_model(model)
    if family(base) == "gpt2":
        return "layernorm", read_layernorm(base.ln_f, base.config.n_embd, "ln_f")
    eps, _ = _rmsnorm(base.norm, base.config.hidden_size, "norm")
    return "rmsnorm", eps


def predict(model, seq_len: int, *, tokens=None, final_norm: bool = False, finite_width: bool = False) -> np.ndarray:
    """rho of the embedding output (entry 0) and after each decoder layer (entry l), from the model's own weights
    and embedding statistics for random token ids; all pairs, or among ``tokens`` ("late", a slice, indices).
    ``final_norm``: one more entry, after the final norm (GPT-2's ln_f, LLaMA's norm). ``finite_width``: each
    layer at its own width and head size (:func:`at_finite_width`)."""
    from numeric.causal import positions

    base = base_model(model)
    T = check_seq_len(base.config, seq_len)
    index = None if tokens is None else positions(tokens, T)
    readings = read_model(base)
    if finite_width:
        readings = at_finite_width(readings)
    run = decoder_run(readings, embedding_overlaps(base, T), T, index=index,
                      final_norm=final_norm_of(base) if final_norm else None)
    return run.rho if tokens is None else run.rho_tokens


# --- measurement ------------------------------------------------------------------------------------------

def measure_overlaps(model, input_ids, *, tokens=None, final_norm: bool = False):
    """(q, p) of the embedding output and of every decoder layer's output on one forward pass (hooks), averaged
    over the batch; ``tokens`` as :func:`predict`. ``final_norm``: one more entry, the model's last hidden state."""
    from numeric.causal import positions

    from .adapters import overlaps

    base = base_model(model)
    check_config(base.config)
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int32, torch.int64):
        raise TypeError("input_ids must be an integer torch.Tensor (batch, T) of token ids")
    ids = input_ids if input_ids.dim() == 2 else input_ids[None]
    T = check_seq_len(base.config, ids.shape[-1])
    vocab = base.config.vocab_size
    if int(ids.min()) < 0 or int(ids.max()) >= vocab:
        raise ValueError(f"input_ids must lie in [0, vocab_size) = [0, {vocab})")
    check_dropout(base, type(base).__name__)
    index = None if tokens is None else positions(tokens, T)
    modules = [m for _, m in layers_of(base)]
    outputs, last = capture(modules, lambda: base(input_ids=ids).last_hidden_state)
    if final_norm:
        outputs.append(last)
    pairs = [overlaps(t, True, index) for t in outputs]
    return np.array([q for q, _ in pairs]), np.array([p for _, p in pairs])


def measure(model, input_ids, *, tokens=None, final_norm: bool = False) -> np.ndarray:
    """Measured rho = p/q (:func:`measure_overlaps`)."""
    q, p = measure_overlaps(model, input_ids, tokens=tokens, final_norm=final_norm)
    return p / q


def random_ids(model_or_config, seq_len: int, *, batch: int = 4, seed: int = 0) -> torch.Tensor:
    """Token ids i.i.d. uniform over the vocabulary, (batch, T), seeded."""
    config = model_or_config if not hasattr(model_or_config, "config") else base_model(model_or_config).config
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, config.vocab_size, (check.count("batch", batch), int(seq_len)), generator=generator)


# --- apply_init ---------------------------------------------------------------------------------------------

def apply_init(model, beta: float, alpha_sa: float, *, seq_len: int):
    """Rescale a decoder in place so that every head has ``beta`` at T = ``seq_len`` and the skip strength is
    ``alpha_sa`` (pre-norm: both branch outputs of layer l divided by alpha_sa^l, as for pre-LN encoders,
    :mod:`verify.adapters`); return it.

    A head's score scale is d sqrt(s_Q^h s_K^g): its query rows (and query bias) alone are multiplied by
    beta / beta_h, which reaches beta for every head even where a group of heads shares its keys.
    """
    base = base_model(model)
    T = check_seq_len(base.config, seq_len)
    beta, alpha_sa = float(beta), float(alpha_sa)
    if not (beta > 0 and math.isfinite(beta)) or not (alpha_sa > 0 and math.isfinite(alpha_sa)):
        raise ValueError(f"beta and alpha_sa must be finite and > 0, got beta={beta!r}, alpha_sa={alpha_sa!r}")
    readings = read_model(base)
    with torch.no_grad():
        for index, reading in enumerate(readings, start=1):
            heads = reading.beta(T)
            if not np.all(np.isfinite(heads) & (heads > 0)):
                raise ValueError(f"{reading.name}: a head has query/key scale 0: apply_init cannot set it")
            _scale_queries(reading, beta / heads)
            factor = alpha_sa ** (-index)
            for module in (reading.handles["out"], reading.handles["mlp_out"]):
                module.weight.mul_(factor)
                if module.bias is not None:
                    module.bias.mul_(factor)
    return model


def _scale_queries(reading: DecoderReading, factors) -> None:
    h, d_h = reading.handles, reading.head_dim
    if h["conv1d"]:                                   # GPT-2: columns [0, d) of c_attn are the queries, per head
        for head, f in enumerate(factors):
            h["q"][:, head * d_h:(head + 1) * d_h].mul_(float(f))
            h["bq"][head * d_h:(head + 1) * d_h].mul_(float(f))
        return
    for head, f in enumerate(factors):
        h["q"][head * d_h:(head + 1) * d_h].mul_(float(f))
        if h["bq"] is not None:
            h["bq"][head * d_h:(head + 1) * d_h].mul_(float(f))
