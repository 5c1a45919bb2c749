"""Read a real encoder stack into what the theory needs: one :class:`LayerReading` per layer.

Supported modules (anything else raises ``TypeError`` or ``ValueError`` naming
the module and what is unsupported; nothing is approximated silently):

- ``torch.nn.TransformerEncoder``, a list / ``ModuleList`` of
  ``torch.nn.TransformerEncoderLayer`` (post-LN, or pre-LN with ``norm_first``);
- ``transformers`` BERT: ``BertModel``, ``BertEncoder``, a list of ``BertLayer``
  (post-LN), when transformers is installed.

What is read, and why it is the theory's parameter (docs/design.md, "Conventions"):

- **scores** (eq. 6, per head h): PyTorch and BERT compute a_ts = q_t . k_s / sqrt(d_h)
  with q_t = W_Q^h x_t, k_s = W_K^h x_s. For W_Q^h, W_K^h with i.i.d. zero-mean entries of
  second moments s_Q, s_K, E[a_ts a_t's'] = (1/d_h) sum_j E[q_tj q_t'j] E[k_sj k_s'j]
  = s_Q s_K (x_t . x_t')(x_s . x_s') = (d^2 s_Q s_K) q_tt' q_ss', whatever d_h. The
  theory's eq. (9) reads beta^2 ln T q_tt' q_ss', so every head has its own
  ``score_scale`` kappa_h = d sqrt(s_Q s_K) = beta_h sqrt(ln T): beta depends on T.
  The key bias adds q_t . b_K / sqrt(d_h) to a whole row and cancels in the softmax
  (any value is exact); a query bias would add b_Q . k_s, a per-key offset shared by
  all rows that the theory lacks, so it must be zero.
- **values** (eqs. 20-23 with heads and the output projection): the branch is
  S_t = sum_h W_O^h sum_s A^h_ts (W_V^h x_s + b_V^h) + b_O. Averaging over W_O (its
  column blocks W_O^h independent) and then W_V (only second moments enter: exact
  for uniform weights too) gives (1/d) E S_t . S_t' = sigma_v2 sum_h w_h (p + (q - p) M^h)
  + sigma_b2_att with sigma_v2 = d^2 mean_h(s_O^h s_V^h), weights w_h proportional to
  s_O^h s_V^h, M^h the head's attention moment, and the common bias
  sigma_b2_att = sum_h s_O^h |b_V^h|^2 + |b_O|^2 / d. The map is linear in the moments,
  so heads enter through the w-weighted average of their *expected* moments: exact
  (no folding of heads into one), and with equal variances it is the plain head average.
- **MLP** (eqs. 35-37): sigma_w2 = d s_1 (linear1, fan-in d), sigma_b2 = mean b_1^2,
  sigma_w2_out = d_ff s_2 (linear2, fan-in d_ff), sigma_b2_out = mean b_2^2.
- **LayerNorm**: eps; centring (always on in torch). Affine weights must be trivial
  (weight 1, bias 0, as initialised).
- **biases and centring**: a bias is one vector shared by all tokens, so it adds its
  mean square to q and to p. Real LayerNorm subtracts each token's *feature* mean,
  i.e. projects out the all-ones direction. For biases (and weights) with i.i.d.
  zero-mean entries that direction carries 1/d of their square, the same fraction
  as of the token-specific parts, so centring leaves rho unchanged (both q and p
  scale by 1 - 1/d in expectation) and the common bias component stays. A vector
  with a systematic mean along all-ones would be removed by centring but not by the
  theory, so weights and biases whose mean is not negligible against their rms are
  rejected (:func:`second_moment`).

All second moments are empirical means of squares of the actual tensors (so a
rescaled model is read as it is), in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: A tensor's squared mean counts as negligible below this fraction of its mean square (plus sampling noise).
MEAN_FRACTION = 0.01
#: Sampling allowance for the squared mean of n zero-mean entries: MEAN_NOISE / n of the mean square (5 sigma).
MEAN_NOISE = 25.0


@dataclass(frozen=True)
class LayerReading:
    """One encoder layer as the theory sees it (module docstring for every field's meaning).

    ``score_scale``: kappa_h = beta_h sqrt(ln T) per head; ``value_weights``: w_h per
    head (sum 1). ``branch``: names of the modules that :func:`verify.adapters.apply_init`
    rescales (query/key rows per head, attention and MLP output projections).
    """

    name: str
    kind: str                  # "torch" or "bert"
    norm_first: bool
    activation: str
    d: int
    heads: int
    d_ff: int
    eps_attention: float       # LayerNorm around the attention residual (norm1)
    eps_mlp: float             # LayerNorm around the MLP residual (norm2)
    score_scale: tuple
    value_weights: tuple
    sigma_v2: float
    sigma_b2_att: float
    sigma_w2: float
    sigma_b2: float
    sigma_w2_out: float
    sigma_b2_out: float
    batch_first: bool = True
    handles: dict = field(default=None, compare=False, repr=False)

    def beta(self, T: int) -> np.ndarray:
        """beta_h = kappa_h / sqrt(ln T) per head (eq. 9 with W_Q, W_K of variance beta sqrt(ln T)/d)."""
        return np.asarray(self.score_scale) / math.sqrt(math.log(T))

    def structure(self) -> tuple:
        """What fixes the spec (and so the compiled map): everything but the variances."""
        return (self.norm_first, self.activation, self.eps_attention, self.eps_mlp, self.heads, self.d_ff / self.d)

    def values(self) -> dict:
        """The variances by the spec's parameter names (beta and the skip strengths excluded)."""
        return dict(sigma_v2=self.sigma_v2, sigma_w2=self.sigma_w2, sigma_b2=self.sigma_b2,
                    sigma_w2_out=self.sigma_w2_out, sigma_b2_out=self.sigma_b2_out, sigma_b2_att=self.sigma_b2_att)

    def without_handles(self) -> "LayerReading":
        return replace(self, handles=None)


# --- tensors ----------------------------------------------------------------------------

def second_moment(tensor, where: str) -> float:
    """Mean of squares of ``tensor`` (0 for None), after checking that its mean is negligible.

    A non-zero mean mu is a rank-one part: in a weight it sends every token along
    one direction (relative size mu^2/s), in a bias it lies along all-ones, which a
    centring LayerNorm removes; neither is in the theory. Rejected when
    mu^2 > (MEAN_FRACTION + MEAN_NOISE/n) * mean square.
    """
    if tensor is None:
        return 0.0
    t = tensor.detach().to("cpu", torch.float64)
    square = float(t.pow(2).mean())
    mean = float(t.mean())
    if mean * mean > (MEAN_FRACTION + MEAN_NOISE / t.numel()) * square:
        raise ValueError(f"{where}: entries have mean {mean:.3g} against rms {math.sqrt(square):.3g}; a non-centred "
                         "(rank-one) part of a weight or bias is not modelled by the theory")
    return square


def _rows(tensor, heads: int):
    """Split the first axis into ``heads`` equal blocks (per-head rows of a projection)."""
    return None if tensor is None else tensor.reshape(heads, -1, *tensor.shape[1:])


def _check_finite(module: nn.Module, where: str) -> None:
    for pname, param in module.named_parameters():
        if not torch.isfinite(param).all():
            raise ValueError(f"{where}.{pname} has non-finite entries")


# --- attention --------------------------------------------------------------------------

def read_attention(where: str, d: int, heads: int, weights: dict) -> dict:
    """kappa_h, w_h, sigma_v2 and sigma_b2_att from W_Q, W_K, W_V, W_O and biases (module docstring).

    ``weights``: q, k, v (d x d, rows per head), o (d x d, columns per head) and the
    biases bq, bk, bv, bo (None when absent).
    """
    if weights["bq"] is not None and bool((weights["bq"] != 0).any()):
        raise ValueError(f"{where}: the query bias is non-zero; it adds b_Q . W_K x_s to every row's scores, a "
                         "per-key offset the theory does not model (the key bias cancels in the softmax and is fine)")
    s_q = _per_head(weights["q"], heads, f"{where} query weight")
    s_k = _per_head(weights["k"], heads, f"{where} key weight")
    s_v = _per_head(weights["v"], heads, f"{where} value weight")
    s_o = _per_head(weights["o"].t(), heads, f"{where} output projection weight")
    value_bias = _per_head_sums(weights["bv"], heads)
    products = s_o * s_v
    total = products.sum()   # 0 for a zero-initialised value or output projection: sigma_v2 = 0, any weights
    weights_h = products / total if total > 0 else np.full(heads, 1.0 / heads)
    return dict(score_scale=tuple(float(x) for x in d * np.sqrt(s_q * s_k)),
                value_weights=tuple(float(x) for x in weights_h),
                sigma_v2=float(d * d * products.mean()),
                sigma_b2_att=float((s_o * value_bias).sum() + second_moment(weights["bo"], f"{where} output bias")))


def _per_head(weight, heads: int, where: str) -> np.ndarray:
    """Second moment of each head's block of rows (the whole matrix checked for a mean first)."""
    second_moment(weight, where)
    blocks = _rows(weight.detach().to("cpu", torch.float64), heads)
    return blocks.pow(2).mean(dim=tuple(range(1, blocks.dim()))).numpy()


def _per_head_sums(bias, heads: int) -> np.ndarray:
    """|b^h|^2 per head of a bias vector (zeros when absent).

    Used for the value bias, which reaches the output only through W_O: any mean
    it has is rotated off the all-ones direction, so it needs no mean check.
    """
    if bias is None:
        return np.zeros(heads)
    return _rows(bias.detach().to("cpu", torch.float64), heads).pow(2).sum(-1).numpy()



# --- hidden states of a forward pass ---------------------------------------------------------------

def hidden_states(args, kwargs):
    """The hidden states among a module's inputs or outputs (a tensor, or the first of a tuple)."""
    value = args[0] if args else kwargs.get("hidden_states", kwargs.get("src"))
    while isinstance(value, (tuple, list)):
        value = value[0]
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"expected hidden states as a tensor, got {type(value).__name__}")
    return value


def capture(modules, forward):
    """Run ``forward()`` without gradients, recording the hidden states entering ``modules[0]`` and leaving
    each module; returns (those tensors, what ``forward`` returned). The hooks are removed in any case."""
    outputs: list = []
    hooks = [modules[0].register_forward_pre_hook(lambda m, args, kwargs: outputs.append(hidden_states(args, kwargs)),
                                                  with_kwargs=True)]
    hooks += [m.register_forward_hook(lambda m, args, out: outputs.append(hidden_states((out,), {})))
              for m in modules]
    try:
        with torch.no_grad():
            result = forward()
    finally:
        for hook in hooks:
            hook.remove()
    return outputs, result

# --- activations and LayerNorm ----------------------------------------------------------

def activation_name(fn, where: str) -> str:
    """The theory's name for a torch / transformers activation: relu, gelu (exact), tanh, identity, silu, or
    gelu_new (the tanh approximation: transformers' NewGELUActivation / GELUTanh, ``nn.GELU(approximate="tanh")``)."""
    if fn is F.relu or fn is torch.relu or isinstance(fn, nn.ReLU):
        return "relu"
    if fn is F.gelu or (isinstance(fn, nn.GELU) and fn.approximate == "none"):
        return "gelu"
    if type(fn).__name__ == "GELUActivation" and _exact_hf_gelu(fn):
        return "gelu"
    if (isinstance(fn, nn.GELU) and fn.approximate == "tanh") or type(fn).__name__ in ("NewGELUActivation",
                                                                                         "GELUTanh"):
        return "gelu_new"
    if fn is F.silu or isinstance(fn, nn.SiLU) or type(fn).__name__ == "SiLUActivation":
        return "silu"
    if fn is torch.tanh or fn is F.tanh or isinstance(fn, nn.Tanh):
        return "tanh"
    if isinstance(fn, nn.Identity):
        return "identity"
    raise ValueError(f"{where}: activation {fn!r} has no kernel in the theory (supported: relu, exact gelu "
                     "(approximate='none'), gelu_new (approximate='tanh'), silu, tanh, identity)")


def _exact_hf_gelu(fn) -> bool:
    """transformers' GELUActivation is exact when it calls F.gelu or its erf form."""
    act = getattr(fn, "act", None)
    return act is F.gelu or getattr(act, "__name__", "") == "_gelu_python"


def read_layernorm(norm, d: int, where: str) -> float:
    """eps of a LayerNorm over the last axis (d features) with trivial affine weights."""
    if not isinstance(norm, nn.LayerNorm):
        raise TypeError(f"{where}: expected torch.nn.LayerNorm, got {type(norm).__name__}")
    if tuple(norm.normalized_shape) != (d,):
        raise ValueError(f"{where}: LayerNorm over {tuple(norm.normalized_shape)}, expected ({d},)")
    weight, bias = norm.weight, getattr(norm, "bias", None)
    if weight is not None and not bool((weight == 1).all()):
        raise ValueError(f"{where}: LayerNorm weight is not all ones; the adapter reads LayerNorm at its "
                         "initialisation (weight 1, bias 0); a non-trivial affine map is not modelled")
    if bias is not None and not bool((bias == 0).all()):
        raise ValueError(f"{where}: LayerNorm bias is not zero; a common shift is not modelled")
    return float(norm.eps)


def check_dropout(module: nn.Module, where: str) -> None:
    """Reject active dropout: the theory describes the deterministic (eval-mode) forward pass."""
    for name, sub in module.named_modules():
        p = sub.p if isinstance(sub, nn.Dropout) else (sub.dropout if isinstance(sub, nn.MultiheadAttention) else 0.0)
        if sub.training and p > 0:
            path = f"{where}.{name}" if name else where
            raise ValueError(f"{path}: dropout p={p:g} in training mode; call model.eval() first (the theory and "
                             "the measurement are for the deterministic forward pass)")


# --- torch.nn.TransformerEncoderLayer ---------------------------------------------------

def read_torch_layer(layer, where: str) -> LayerReading:
    """A ``torch.nn.TransformerEncoderLayer`` (its own forward, MultiheadAttention, two LayerNorms)."""
    _check_torch_layer_type(layer, where)
    attn = layer.self_attn
    d, heads = attn.embed_dim, attn.num_heads
    check_dropout(layer, where)
    _check_finite(layer, where)
    q, k, v, bq, bk, bv = _mha_projections(attn, f"{where}.self_attn")
    weights = dict(q=q, k=k, v=v, o=attn.out_proj.weight, bq=bq, bk=bk, bv=bv, bo=attn.out_proj.bias)
    att = read_attention(f"{where}.self_attn", d, heads, weights)
    mlp = read_mlp(layer.linear1, layer.linear2, d, where, ("linear1", "linear2"))
    return LayerReading(
        name=where, kind="torch", norm_first=bool(layer.norm_first),
        activation=activation_name(layer.activation, f"{where}.activation"), d=d, heads=heads,
        d_ff=layer.linear1.out_features, eps_attention=read_layernorm(layer.norm1, d, f"{where}.norm1"),
        eps_mlp=read_layernorm(layer.norm2, d, f"{where}.norm2"), batch_first=bool(attn.batch_first),
        handles=dict(q=q, k=k, bq=bq, bk=bk, out=attn.out_proj, mlp_out=layer.linear2), **att, **mlp)


def _check_torch_layer_type(layer, where: str) -> None:
    cls = nn.TransformerEncoderLayer
    if not isinstance(layer, cls):
        raise TypeError(f"{where}: expected torch.nn.TransformerEncoderLayer, got {type(layer).__name__}")
    for method in ("forward", "_sa_block", "_ff_block"):
        if getattr(type(layer), method) is not getattr(cls, method):
            raise TypeError(f"{where}: {type(layer).__name__} overrides {method}; a custom layer is not supported")
    attn = layer.self_attn
    if not isinstance(attn, nn.MultiheadAttention) or type(attn).forward is not nn.MultiheadAttention.forward:
        raise TypeError(f"{where}.self_attn: {type(attn).__name__} is a custom attention module; only "
                        "torch.nn.MultiheadAttention (its own forward) is supported")
    if attn.bias_k is not None or attn.add_zero_attn:
        raise ValueError(f"{where}.self_attn: add_bias_kv / add_zero_attn append a key the theory lacks")
    for name in ("linear1", "linear2"):
        if type(getattr(layer, name)) is not nn.Linear:
            raise TypeError(f"{where}.{name}: expected torch.nn.Linear, got {type(getattr(layer, name)).__name__}")


def _mha_projections(attn, where: str):
    """(W_Q, W_K, W_V, b_Q, b_K, b_V) of a MultiheadAttention: views into its parameters.

    Self-attention has kdim = vdim = embed_dim, which is when torch packs the three
    projections into in_proj_weight.
    """
    d = attn.embed_dim
    if not attn._qkv_same_embed_dim:
        raise ValueError(f"{where}: self-attention needs kdim = vdim = embed_dim, got kdim={attn.kdim}, "
                         f"vdim={attn.vdim}, embed_dim={d}")
    q, k, v = attn.in_proj_weight[:d], attn.in_proj_weight[d:2 * d], attn.in_proj_weight[2 * d:]
    bias = attn.in_proj_bias
    bq, bk, bv = (None, None, None) if bias is None else (bias[:d], bias[d:2 * d], bias[2 * d:])
    return q, k, v, bq, bk, bv


def read_mlp(linear1, linear2, d: int, where: str, names=("linear1", "linear2")) -> dict:
    """sigma_w2 = d s_1, sigma_b2, sigma_w2_out = d_ff s_2, sigma_b2_out from the two linear layers."""
    if linear1.in_features != d or linear2.out_features != d or linear2.in_features != linear1.out_features:
        raise ValueError(f"{where}: MLP shapes {linear1.in_features}->{linear1.out_features}->{linear2.in_features}"
                         f"->{linear2.out_features} do not match d_model {d}")
    d_ff = linear1.out_features
    return dict(sigma_w2=d * second_moment(linear1.weight, f"{where}.{names[0]}.weight"),
                sigma_b2=second_moment(linear1.bias, f"{where}.{names[0]}.bias"),
                sigma_w2_out=d_ff * second_moment(linear2.weight, f"{where}.{names[1]}.weight"),
                sigma_b2_out=second_moment(linear2.bias, f"{where}.{names[1]}.bias"))


# --- transformers BertLayer -------------------------------------------------------------

def read_bert_layer(layer, where: str) -> LayerReading:
    """A transformers ``BertLayer``: post-LN self-attention (query/key/value/dense) and MLP."""
    _check_bert_layer(layer, where)
    self_attn, out = layer.attention.self, layer.attention.output
    d, heads = self_attn.query.in_features, self_attn.num_attention_heads
    check_dropout(layer, where)
    _check_finite(layer, where)
    weights = dict(q=self_attn.query.weight, k=self_attn.key.weight, v=self_attn.value.weight, o=out.dense.weight,
                   bq=self_attn.query.bias, bk=self_attn.key.bias, bv=self_attn.value.bias, bo=out.dense.bias)
    att = read_attention(f"{where}.attention", d, heads, weights)
    mlp = read_mlp(layer.intermediate.dense, layer.output.dense, d, where,
                   ("intermediate.dense", "output.dense"))
    return LayerReading(
        name=where, kind="bert", norm_first=False,
        activation=activation_name(layer.intermediate.intermediate_act_fn, f"{where}.intermediate"), d=d,
        heads=heads, d_ff=layer.intermediate.dense.out_features,
        eps_attention=read_layernorm(out.LayerNorm, d, f"{where}.attention.output.LayerNorm"),
        eps_mlp=read_layernorm(layer.output.LayerNorm, d, f"{where}.output.LayerNorm"),
        handles=dict(q=self_attn.query.weight, k=self_attn.key.weight, bq=self_attn.query.bias,
                     bk=self_attn.key.bias, out=out.dense, mlp_out=layer.output.dense), **att, **mlp)


def _check_bert_layer(layer, where: str) -> None:
    if type(layer).__name__ != "BertLayer":
        raise TypeError(f"{where}: expected transformers BertLayer, got {type(layer).__name__}")
    self_attn = layer.attention.self
    if type(self_attn).__name__ != "BertSelfAttention":
        raise TypeError(f"{where}.attention.self: {type(self_attn).__name__} is not BertSelfAttention; "
                        "custom attention is not supported")
    if getattr(layer, "is_decoder", False) or getattr(self_attn, "is_causal", False):
        raise ValueError(f"{where}: a causal (decoder) BertLayer masks the scores, which the theory does not model")
    if getattr(layer, "add_cross_attention", False):
        raise ValueError(f"{where}: cross-attention is not supported")
    position = getattr(self_attn, "position_embedding_type", "absolute")
    if position != "absolute":
        raise ValueError(f"{where}: position_embedding_type={position!r} adds relative-position scores; "
                         "only 'absolute' is supported")
    if self_attn.attention_head_size * self_attn.num_attention_heads != self_attn.query.in_features:
        raise ValueError(f"{where}: heads x head size != hidden size")


# --- stacks ---------------------------------------------------------------------------

def layer_modules(model):
    """[(name, module)] of the encoder layers of ``model`` and the model kind ("torch" or "bert").

    ``TransformerEncoder`` -> its ``layers``; a list / tuple / ModuleList of
    TransformerEncoderLayer or BertLayer; ``BertModel`` -> ``encoder.layer``;
    ``BertEncoder`` -> ``layer``.
    """
    if isinstance(model, nn.TransformerEncoder):
        return [(f"layers.{i}", m) for i, m in enumerate(model.layers)], "torch"
    if isinstance(model, nn.TransformerEncoderLayer):
        return [("layer", model)], "torch"
    name = type(model).__name__
    if type(getattr(model, "encoder", None)).__name__ == "BertEncoder":
        return [(f"encoder.layer.{i}", m) for i, m in enumerate(model.encoder.layer)], "bert"
    if name == "BertEncoder":
        return [(f"layer.{i}", m) for i, m in enumerate(model.layer)], "bert"
    if isinstance(model, (list, tuple, nn.ModuleList)):
        return _list_modules(list(model))
    raise TypeError(f"cannot read {name}: expected torch.nn.TransformerEncoder, a list of "
                    "torch.nn.TransformerEncoderLayer, or a transformers BertModel / BertEncoder")


def _list_modules(items: list):
    """[(name, module)] and the kind of a plain list of encoder layers (one kind only)."""
    if not items:
        raise ValueError("an empty list of layers")
    kinds = []
    for i, module in enumerate(items):
        if isinstance(module, nn.TransformerEncoderLayer):
            kinds.append("torch")
        elif type(module).__name__ == "BertLayer":
            kinds.append("bert")
        else:
            raise TypeError(f"layers[{i}]: {type(module).__name__} is not a torch.nn.TransformerEncoderLayer "
                            "or a transformers BertLayer")
    if len(set(kinds)) > 1:
        raise TypeError("a stack must not mix TransformerEncoderLayer and BertLayer")
    return [(f"layers[{i}]", m) for i, m in enumerate(items)], kinds[0]


def read(model, *, independent: bool = True) -> list[LayerReading]:
    """Every layer of ``model`` read (see :func:`layer_modules`); layers must share d_model.

    ``independent``: also require that no two layers hold the same weights
    (:func:`check_independent`), as the theory's fresh-weights averages do.
    """
    modules, kind = layer_modules(model)
    reader = read_torch_layer if kind == "torch" else read_bert_layer
    readings = [reader(module, name) for name, module in modules]
    first = readings[0]
    for r in readings[1:]:
        if r.d != first.d:
            raise ValueError(f"{r.name}: d_model {r.d} differs from {first.name}'s {first.d}; "
                             "the layers of one stack must share d_model")
        if r.batch_first != first.batch_first:
            raise ValueError(f"{r.name}: batch_first differs from {first.name}'s")
    if independent:
        check_independent(readings)
    return readings


def check_independent(readings) -> None:
    """Reject layers that share all their attention and MLP weights (copies of one layer).

    The theory averages every layer over fresh weights. ``nn.TransformerEncoder(layer, N)``
    deep-copies ``layer``, so at construction all N layers are identical; the same
    weights applied again and again align the tokens far faster (24 post-LN layers at
    d = 256: rho 0.99 after 16 layers against 0.74 for independent layers).
    :func:`verify.adapters.independent_init` redraws each layer from PyTorch's defaults.
    """
    seen: dict = {}
    for r in readings:
        weights = _weights_of(r)
        key = tuple((tuple(w.shape), float(w.double().sum())) for w in weights)
        other = seen.get(key)
        if other is not None and all(torch.equal(a, b) for a, b in zip(_weights_of(other), weights)):
            raise ValueError(f"{r.name} and {other.name} hold identical weights (nn.TransformerEncoder deep-copies "
                             "its encoder_layer); the theory needs independently initialised layers: call "
                             "verify.adapters.independent_init(model, seed) first")
        seen[key] = r


def _weights_of(reading) -> list:
    """The weight tensors of a read layer that a copy would share (zero-initialised ones alone do not tell)."""
    h = reading.handles
    return [h["q"].detach(), h["k"].detach(), h["out"].weight.detach(), h["mlp_out"].weight.detach()]
