"""Real models at their own initialisation: predict and measure the token cosine similarity.

Contract (docs/design.md)::

    predict_cosine_profile(layers, seq_len, *, rho0=0.0, mask=None, tokens=None)   # theory, ndarray (L+1,)
    measure_cosine_profile(layers, x, *, mask=None, tokens=None)         # hooks on a real forward pass

``layers``: ``torch.nn.TransformerEncoder``, a list of ``torch.nn.TransformerEncoderLayer``,
or (with transformers installed) ``BertModel`` / ``BertEncoder`` / a list of ``BertLayer``, or a
whole Hugging Face decoder (``GPT2Model``, ``LlamaModel``, ``MistralModel``, ``Qwen2Model``: read by
:mod:`verify.adapters_decoders`; its mask is its own, entry 0 is its embedding output for random token ids,
``x`` its integer token ids).
Entry 0 is the stack's input, entry l the output of layer l (a
TransformerEncoder's final ``norm`` and BERT's pooler are not layers and are
not part of the profile).

**Prediction.** :mod:`verify.adapters_read` reads every layer into the theory's
parameters (per-head query/key scale, sigma_v2 with the output projection, the
two MLP weight and bias variances, the common attention bias, LayerNorm eps),
:func:`encoder_spec` writes the layer as a derive spec (real LayerNorm with
centring; a :class:`~derive.layers.Bias` for the attention branch's common
bias; two Linear layers with their own variances), and the exact finite-T
theory at T = ``seq_len`` is iterated layer by layer with each layer's own
values (:func:`theory_run`). Heads with different scales enter through the
weighted average of their finite-T moments (exact: the map is linear in them).

**Measurement.** Per sequence, q = mean_t |X_t|^2/d and p = mean_{t != s} X_t.X_s/d,
averaged over the batch; rho = p/q (the theory's ratio of averages, eq. 1 and B.6.1).

**apply_init(model, beta, alpha_sa, seq_len=T)** rescales each head's query and
key rows to reach ``beta`` and the residual branches so that the PyTorch form
x + F(x) computes the theory's alpha x + F(x):

- post-LN: LN(alpha x + F(x)) = LN(x + F(x)/alpha) (LayerNorm is scale invariant,
  its eps aside), so the attention output projection (weight and bias) is
  divided by alpha, in every layer;
- pre-LN: the stream is not normalised, so no per-layer constant works. With
  z_l the alpha-model's stream, x_l = z_l / alpha^l satisfies
  x_l = x_(l-1) + F_l(LN(x_(l-1)))/alpha^l (LN(z) = LN(x) up to eps), and the MLP
  residual of layer l sees the same factor: both branches of layer l (attention
  output projection and linear2) are divided by alpha^l. The outputs are the
  alpha-model's divided by alpha^l, so every rho is the same; the stream's
  norm stays O(1) (for alpha >= 1), so LayerNorm's eps keeps its relative size
  eps/q.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from derive import masks
from derive.layers import Activation, Bias, LayerNorm, Linear, Residual, SelfAttention, Sequence
from derive.parameters import NAMES as PARAMETERS
from numeric import validation as check
from numeric.maps import block_function, moment_functions

from . import adapters_decoders
from .adapters_read import LayerReading, capture, hidden_states, layer_modules, read
from .montecarlo import Estimate, overlap_samples, ratio_estimate

__all__ = ["predict_cosine_profile", "measure_cosine_profile", "measure_overlaps", "profile_estimate",
           "overlaps_estimate", "apply_init", "independent_init", "read", "encoder_spec", "theory_run", "LayerReading",
           "embedding_state"]


# --- the theory --------------------------------------------------------------------------

@lru_cache(maxsize=None)
def encoder_spec(norm_first: bool, activation: str, eps_attention: float, eps_mlp: float, heads: int,
                 width: float, mask=None) -> Sequence:
    """One real encoder layer as a derive spec (PyTorch's TransformerEncoderLayer / BertLayer).

    post-LN: LN(x + SA(x) + b_att) -> LN(. + W2 phi(W1 . + b1) + b2);
    pre-LN: x + SA(LN x) + b_att -> . + W2 phi(W1 LN(.) + b1) + b2.
    LayerNorm subtracts the feature mean (``centre=True``; same map, see
    :mod:`verify.adapters_read`); linear1 and linear2 carry their own variances
    (sigma_w2, sigma_b2 and sigma_w2_out, sigma_b2_out). ``mask``: the attention mask the stack runs
    with (:mod:`derive.masks`).
    """
    attention = Sequence(SelfAttention(heads=heads, mask=mask), Bias("sigma_b2_att"))
    mlp = Sequence(Linear("sigma_w2", "sigma_b2", width), Activation(activation),
                   Linear("sigma_w2_out", "sigma_b2_out", 1.0 / width))
    norm_att, norm_mlp = LayerNorm(eps_attention, centre=True), LayerNorm(eps_mlp, centre=True)
    if norm_first:
        return Sequence(Residual(Sequence(norm_att, attention), "alpha_sa"),
                        Residual(Sequence(norm_mlp, mlp), "alpha_mlp"), name="pre-ln (real LayerNorm)")
    return Sequence(Residual(attention, "alpha_sa"), norm_att, Residual(mlp, "alpha_mlp"), norm_mlp,
                    name="post-ln (real LayerNorm)")


def spec_of(reading: LayerReading) -> Sequence:
    """The derive spec of one read layer (:func:`encoder_spec` of its structure)."""
    return encoder_spec(*reading.structure())


@dataclass
class TheoryRun:
    """rho before the first layer and after each layer, and every attention layer's input state.

    ``attention``: per layer, (q_att, p_att, per-head beta) (the entropy-collapse check).
    """

    rho: np.ndarray
    q: np.ndarray
    p: np.ndarray
    attention: list


def head_moments(T: int, ratios, weights, width=None):
    """(Y2, Yp) of a layer whose heads have beta_h = ratio_h beta: the w-weighted head averages (exact).

    The attention map is sigma_v2 (p + (q - p) sum_h w_h M_h) (verify.adapters_read), so
    the compiled block is handed these averages as its moment functions. ``width`` (d, d_head): the
    finite-width effective moments of each head (:func:`numeric.maps.moment_functions`; heads see independent
    query directions, so each head's moments are those of width d with d_head features).
    """
    Y2, Yp = moment_functions(T, width)
    ratios, weights = np.asarray(ratios, float), np.asarray(weights, float)
    if np.all(ratios == 1.0):
        return Y2, Yp

    def average(fn):
        return lambda beta, q, p, T_: sum(w * fn(beta * r, q, p, T_) for r, w in zip(ratios, weights))

    return average(Y2), average(Yp)


def theory_run(readings, T: int, *, rho0=0.0, q0=1.0, alpha_sa=1.0, beta=None, finite_width=False) -> TheoryRun:
    """Iterate the finite-T theory through ``readings`` layer by layer (each with its own values).

    ``alpha_sa``: the theory's skip strength of every attention residual (the
    read model has 1); ``beta``: if given, every head of every layer is set to
    it (what :func:`apply_init` does), else each head's own beta_h. Both may be
    arrays (broadcast): the profile then has shape (L+1, *broadcast). ``finite_width``: each layer's attention
    at its own width d and head size d / heads (issue 19's effective moments, :mod:`numeric.finite_width`)
    instead of infinite width, of normalized tokens where a LayerNorm precedes it (:func:`attention_width`).
    """
    T = check.sequence_length(T, name="seq_len", infinite=False)
    shape = np.broadcast_shapes(np.shape(alpha_sa), np.shape(beta), np.shape(rho0), np.shape(q0))
    q = np.broadcast_to(np.asarray(q0, float), shape).copy()
    p = q * rho0
    qs, ps, attention = [q], [p], []
    with np.errstate(all="ignore"):
        for index, reading in enumerate(readings):
            width = attention_width(readings, index, finite_width)
            q, p, q_att, p_att, betas = _layer(reading, T, q, p, alpha_sa, beta, width)
            if not (np.all(np.isfinite(q)) and np.all(np.isfinite(p))):
                raise ValueError(f"{reading.name}: the theory's overlaps are not finite (q = {q!r}, p = {p!r})")
            if not np.all(q > 0):
                raise ValueError(f"{reading.name}: the signal vanishes (q = 0) in the theory")
            p = np.clip(p, -q, q)
            qs.append(q)
            ps.append(p)
            attention.append((np.broadcast_to(q_att, shape), np.broadcast_to(p_att, shape), betas))
    q, p = np.stack(qs), np.stack(ps)
    return TheoryRun(p / q, q, p, attention)


def attention_width(readings, index: int, finite_width: bool, window: bool = False):
    """The width of layer ``index``'s attention for the theory (:func:`numeric.profile.finite_width`'s form): None
    at infinite width; else (d, d_head, "normalized") where a LayerNorm precedes the attention -- a pre-LN layer,
    or a post-LN layer after a post-LN layer, whose output is its LayerNorm's: tokens of fixed norm,
    :mod:`numeric.normalized_width` -- and (d, d_head) otherwise (the stack's input, or a pre-LN layer's residual
    stream, as Gaussian tokens). ``window``: a sliding-window mask, whose normalized increments are not tabulated:
    Gaussian tokens throughout."""
    if not finite_width:
        return None
    reading = readings[index]
    width = (reading.d, reading.d // reading.heads)
    after_norm = reading.norm_first or (index > 0 and not readings[index - 1].norm_first)
    return width + ("normalized",) if after_norm and not window else width


def _layer(reading: LayerReading, T: int, q, p, alpha_sa, beta, width=None):
    """One compiled block with this layer's values; returns (q, p, q_att, p_att, per-head betas)."""
    heads_beta = reading.beta(T)
    if beta is None:
        ref = float(heads_beta.mean())   # 0 only when every head is 0 (zero query/key rows): uniform attention
        ratios = heads_beta / ref if ref > 0 else np.ones_like(heads_beta)
        moments = head_moments(T, ratios, reading.value_weights, width)
        betas = [b for b in heads_beta]
    else:
        ref = beta
        moments = moment_functions(T, width)
        betas = [beta]
    values = dict(reading.values(), beta=ref, alpha_sa=alpha_sa, alpha_mlp=1.0)
    block = block_function(spec_of(reading), T=T)
    args = [values[name] for name in PARAMETERS]
    extra = {name: value for name, value in values.items() if name not in PARAMETERS}
    q, p, q_att, p_att = block(q, p, *args, float(T), *moments, **extra)
    return q, p, q_att, p_att, betas


def predict_cosine_profile(layers, seq_len: int, *, rho0: float = 0.0, q0: float = 1.0, mask=None,
                           tokens=None, finite_width: bool = False) -> np.ndarray:
    """Theory: rho before the first layer and after each of the L layers, shape (L+1,).

    Reads ``layers`` (module docstring) and runs the exact finite-T theory at
    T = ``seq_len`` from inputs with |X_t|^2/d = ``q0`` and cosine similarity
    ``rho0`` (docs/design.md: q0 = 1). ``q0`` matters for post-LN stacks, whose
    first attention layer sees the raw input. ``mask`` ("causal", "sliding:W"):
    the mask the stack runs with (a decoder built from encoder layers); the
    theory is then position-resolved (:mod:`numeric.causal`). ``tokens`` (None,
    "late" = the last quarter of positions, a slice or an index array): q and p
    over those positions only (an unmasked stack's tokens are exchangeable). ``finite_width``: the theory at
    each layer's own width and head size (issue 19): encoders, masked encoder stacks and decoders under a causal
    mask (:mod:`numeric.causal_width`'s tables, at most 512 positions; a sliding window's pairs one by one, at most
    64; a decoder's RoPE is refused by name).
    """
    if adapters_decoders.is_decoder(layers):
        _decoder_defaults(mask=mask, rho0=rho0, q0=q0)
        return adapters_decoders.predict(layers, seq_len, tokens=tokens, finite_width=finite_width)
    T = check.sequence_length(seq_len, name="seq_len", infinite=False)
    rho0, q0 = float(check.rho0(rho0, T)), float(check.positive("q0", q0))
    mask, index = masks.parse(mask), _positions(tokens, T)
    if mask is not None:
        return causal_run(read(layers), T, mask, rho0=rho0, q0=q0, index=index, finite_width=finite_width)
    return theory_run(read(layers), T, rho0=rho0, q0=q0, finite_width=finite_width).rho


def _decoder_defaults(*, mask=None, rho0=0.0, q0=1.0) -> None:
    """A Hugging Face decoder runs with its own mask and starts from its own embeddings: mask, rho0 and q0 are
    refused by name for it."""
    if mask is not None:
        raise ValueError(f"mask={mask!r}: a Hugging Face decoder's mask is read from the model itself (causal, or its "
                         "sliding window); do not pass mask")
    if rho0 != 0.0 or q0 != 1.0:
        raise ValueError("rho0 / q0: a whole decoder starts from its own embedding statistics for random token ids "
                         "(verify.adapters_decoders.embedding_overlaps); do not pass rho0 or q0")


def _positions(tokens, T):
    from numeric.causal import positions
    return None if tokens is None else positions(tokens, T)


def causal_run(readings, T: int, mask, *, rho0=0.0, q0=1.0, index=None, finite_width: bool = False) -> np.ndarray:
    """The position-resolved theory through ``readings`` layer by layer: rho (all pairs, or of ``index``).

    Each layer's block is its real-LayerNorm spec with the mask (:func:`encoder_spec`) compiled to a map of
    the expected overlap matrix (:func:`numeric.codegen_causal.compile_causal`); heads of different scales
    enter as the w-weighted sum of the closure at each head's beta (the map is linear in the moments).
    ``finite_width``: the closure at each layer's width and head size (:mod:`numeric.causal_width`), of normalized
    tokens where a LayerNorm precedes the attention (:func:`attention_width`; under a sliding window, Gaussian
    tokens: the normalized increments are tabulated for the causal mask only).
    """
    from numeric import causal

    window = masks.parse(mask).window is not None
    closures = {}
    Q = q0 * (rho0 + (1.0 - rho0) * np.eye(T))
    rho = [causal.ratio(Q, index)]
    with np.errstate(all="ignore"):
        for layer, reading in enumerate(readings):
            width = attention_width(readings, layer, finite_width, window)
            if width not in closures:
                closures[width] = causal.Attention(T, mask, width=width)
            Q = _causal_layer(reading, Q, closures[width], T, mask)
            if not (np.all(np.isfinite(Q)) and np.all(np.diagonal(Q) > 0)):
                raise ValueError(f"{reading.name}: the theory's overlaps are not finite or a token vanished")
            rho.append(causal.ratio(Q, index))
    return np.array(rho)


def _causal_layer(reading: LayerReading, Q, closure, T: int, mask):
    """One read layer's position-resolved block on the overlap matrix Q."""
    heads_beta = reading.beta(T)
    ref = float(heads_beta.mean())
    ratios = heads_beta / ref if ref > 0 else np.ones_like(heads_beta)

    def attention(Q, beta, sigma_v2, gain):
        return sum(w * closure(Q, beta * r, sigma_v2, gain) for r, w in zip(ratios, reading.value_weights))

    structure = reading.structure()
    block = _causal_block(structure[:4] + (1,) + structure[5:], mask)
    values = dict(reading.values(), beta=ref, alpha_sa=1.0, alpha_mlp=1.0)
    extra = {name: value for name, value in values.items() if name not in PARAMETERS}
    return block(Q, *(values[name] for name in PARAMETERS), attention, **extra)[0]


@lru_cache(maxsize=None)
def _causal_block(structure: tuple, mask):
    from numeric.codegen_causal import compile_causal
    return compile_causal(encoder_spec(*structure, mask=mask))


# --- measurement ------------------------------------------------------------------------

def overlaps(x: torch.Tensor, batch_first: bool = True, index=None) -> tuple[float, float]:
    """(q, p) of token sequences x: q = mean |X_t|^2/d, p = mean_{t != s} X_t.X_s/d, batch-averaged.

    ``x``: (T, d), or (batch, T, d) when ``batch_first`` else (T, batch, d); ``index``: the positions
    to average over (all by default).
    The estimator is :func:`verify.montecarlo.overlap_samples` (per sequence), averaged over the batch.
    """
    x = x.detach().to(torch.float64)
    if x.dim() == 2:
        x = x.unsqueeze(0)
    elif not batch_first:
        x = x.transpose(0, 1)
    if index is not None:
        x = x[..., torch.as_tensor(index), :]
    if x.shape[-2] < 2:
        raise ValueError(f"need at least 2 tokens per sequence, got {x.shape[-2]}")
    q, p = overlap_samples(x)
    return float(q.mean()), float(p.mean())


def measure_overlaps(layers, x, *, mask=None, tokens=None) -> tuple[np.ndarray, np.ndarray]:
    """(q, p) before the first layer and after each layer, from hooks on one real forward pass.

    ``mask`` ("causal", "sliding:W"): the forward pass runs with it, as a PyTorch user runs a decoder built
    from encoder layers (``layer(h, src_mask=mask, is_causal=True)`` with
    ``nn.Transformer.generate_square_subsequent_mask(T)``; a window as a float mask of -inf outside it).
    ``tokens``: q and p over those positions only (as :func:`predict_cosine_profile`).

    ``x``: the stack's input. For torch layers a float tensor laid out as the
    layers expect (``batch_first`` or not; unbatched (T, d) too). For BERT a
    float tensor (batch, T, d) is the encoder's input (``BertModel``'s
    embeddings are skipped), an integer tensor of token ids (batch, T) runs the
    whole ``BertModel`` and entry 0 is the embedding output. The model must be
    in eval mode (or free of dropout): :mod:`verify.adapters_read` rejects
    active dropout.
    """
    if adapters_decoders.is_decoder(layers):
        _decoder_defaults(mask=mask)
        return adapters_decoders.measure_overlaps(layers, x, tokens=tokens)
    readings = read(layers, independent=False)
    modules = [module for _, module in layer_modules(layers)[0]]
    mask = masks.parse(mask)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    seq_axis = -2 if readings[0].batch_first or x.dim() == 2 else 0
    index = _positions(tokens, x.shape[seq_axis])
    outputs, _ = capture(modules, lambda: _forward(layers, modules, x,
                                                   _torch_mask(mask, x.shape[seq_axis], x.device, x.dtype)))
    if len(outputs) != len(modules) + 1:
        raise RuntimeError(f"expected {len(modules) + 1} hooked tensors, got {len(outputs)}")
    pairs = [overlaps(t, readings[0].batch_first, index) for t in outputs]
    return np.array([q for q, _ in pairs]), np.array([p for _, p in pairs])


def measure_cosine_profile(layers, x, *, mask=None, tokens=None) -> np.ndarray:
    """Measured rho = p/q before the first layer and after each layer, shape (L+1,) (:func:`measure_overlaps`)."""
    q, p = measure_overlaps(layers, x, mask=mask, tokens=tokens)
    return p / q


def _torch_mask(mask, T: int, device, dtype):
    """The float attention mask of ``mask`` for T positions (None for full attention): 0 where allowed, -inf
    elsewhere, as ``nn.Transformer.generate_square_subsequent_mask`` builds the causal one."""
    if mask is None:
        return None
    allowed = torch.as_tensor(mask.allowed(T), device=device)
    out = torch.zeros(T, T, device=device, dtype=dtype if dtype.is_floating_point else torch.float32)
    return out.masked_fill(~allowed, float("-inf")), mask.window is None


def profile_estimate(runs):
    """rho over independent initialisations: ``runs`` yields (model, x) pairs, one per initialisation.

    Returns a :class:`verify.montecarlo.Estimate` of shape (L+1,): the ratio of the
    seed-mean p to the seed-mean q with delta-method samples (the suite's definition
    of a measured rho, :func:`verify.montecarlo.ratio_estimate`).
    """
    return overlaps_estimate(measure_overlaps(model, x) for model, x in runs)


def overlaps_estimate(overlaps):
    """rho from measured (q, p) profiles, one pair per initialisation (as :func:`profile_estimate`)."""
    qs, ps = zip(*overlaps)
    return ratio_estimate(Estimate(np.array(ps)), Estimate(np.array(qs)))


def _forward(layers, modules, x, mask=None):
    """Run the stack as its user would: the container's own forward where it has one; ``mask``: (float mask,
    is_causal) for the attention of every layer, or None."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    name = type(layers).__name__
    if mask is not None:
        return _forward_masked(layers, modules, x, *mask)
    if isinstance(layers, torch.nn.TransformerEncoder) or name == "BertEncoder":
        return layers(x)
    if hasattr(layers, "encoder") and type(layers.encoder).__name__ == "BertEncoder":
        if x.dtype in (torch.int32, torch.int64):
            return layers(input_ids=x)
        return layers.encoder(x)
    for module in modules:
        x = hidden_states((module(x),), {})
    return x


def _forward_masked(layers, modules, x, mask, is_causal):
    """A stack of nn.TransformerEncoderLayer run with an attention mask (BERT's layers attend both ways)."""
    if isinstance(layers, torch.nn.TransformerEncoder):
        return layers(x, mask=mask, is_causal=is_causal)
    if not all(isinstance(m, torch.nn.TransformerEncoderLayer) for m in modules):
        raise ValueError("mask: only stacks of torch.nn.TransformerEncoderLayer run with an attention mask here "
                         f"(got {type(modules[0]).__name__})")
    for module in modules:
        x = module(x, src_mask=mask, is_causal=is_causal)
    return x


# --- apply_init ---------------------------------------------------------------------------

def apply_init(model, beta: float, alpha_sa: float, *, seq_len: int):
    """Rescale ``model`` in place so that the theory's (beta, alpha_sa) hold at T = ``seq_len``; return it.

    Every head's query and key rows (and biases) are multiplied by
    sqrt(beta / beta_h), which sets its score scale to beta sqrt(ln T) (beta is
    defined at a sequence length, docs/design.md). The residual branches are scaled
    as in the module docstring (post-LN: attention output projection / alpha;
    pre-LN: both branches of layer l / alpha^l).
    """
    if adapters_decoders.is_decoder(model):
        return adapters_decoders.apply_init(model, beta, alpha_sa, seq_len=seq_len)
    T = check.sequence_length(seq_len, name="seq_len", infinite=False)
    beta, alpha_sa = float(beta), float(alpha_sa)
    if not (beta > 0 and math.isfinite(beta)) or not (alpha_sa > 0 and math.isfinite(alpha_sa)):
        raise ValueError(f"beta and alpha_sa must be finite and > 0, got beta={beta!r}, alpha_sa={alpha_sa!r}")
    readings = read(model)
    with torch.no_grad():
        for index, reading in enumerate(readings, start=1):
            _set_beta(reading, beta, T)
            _scale_branches(reading, alpha_sa, index)
    return model


def _set_beta(reading: LayerReading, beta: float, T: int) -> None:
    """Multiply head h's query and key rows (and biases) by sqrt(beta / beta_h).

    A head with beta_h = 0 (zero query or key rows) has no scale to multiply: refused.
    """
    heads = reading.beta(T)
    ok = np.isfinite(heads) & (heads > 0)
    if not ok.all():
        bad = int(np.argmin(ok))
        raise ValueError(f"{reading.name}: head {bad} has query/key scale beta_h = {float(heads[bad]):g}; apply_init "
                         "rescales existing query and key rows and cannot set a zero (or non-finite) head")
    factors = np.sqrt(beta / heads)
    h = reading.handles
    for name in ("q", "k", "bq", "bk"):
        tensor = h[name]
        if tensor is None:
            continue
        blocks = tensor.view(reading.heads, -1, *tensor.shape[1:])
        for head, factor in enumerate(factors):
            blocks[head].mul_(float(factor))


def _scale_branches(reading: LayerReading, alpha_sa: float, index: int) -> None:
    """post-LN: attention branch / alpha; pre-LN: both branches of layer ``index`` / alpha^index."""
    if reading.norm_first:
        factor = alpha_sa ** (-index)
        modules = (reading.handles["out"], reading.handles["mlp_out"])
    else:
        factor = 1.0 / alpha_sa
        modules = (reading.handles["out"],)
    for module in modules:
        module.weight.mul_(factor)
        if module.bias is not None:
            module.bias.mul_(factor)


def independent_init(model, seed: int = 0):
    """Redraw every layer of a torch encoder from PyTorch's own default initialisation, independently.

    ``nn.TransformerEncoder(layer, N)`` starts from N copies of one layer, which the
    theory (fresh weights per layer) does not describe
    (:func:`verify.adapters_read.check_independent`). Each submodule's own
    ``reset_parameters`` is called (Linear: kaiming-uniform a = sqrt(5) and uniform
    bias; LayerNorm: 1 and 0), then MultiheadAttention's ``_reset_parameters``
    (xavier-uniform in_proj, zero in_proj and out_proj biases), all under
    ``torch.manual_seed(seed)``. Returns ``model``.
    """
    modules, kind = layer_modules(model)
    if kind != "torch":
        raise TypeError("independent_init redraws torch.nn.TransformerEncoderLayer stacks; BERT layers are "
                        "initialised independently by transformers already")
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(int(seed))
        for _, layer in modules:
            for sub in layer.modules():
                if hasattr(sub, "reset_parameters") and not isinstance(sub, torch.nn.MultiheadAttention):
                    sub.reset_parameters()
            layer.self_attn._reset_parameters()
    return model


# --- BERT embeddings ----------------------------------------------------------------------

def embedding_state(model, seq_len: int) -> tuple[float, float]:
    """(q0, rho0) of a ``BertModel``'s embedding output for i.i.d. uniform random token ids.

    e_t = W[id_t] + P[t] + S[0] (word, position, token type 0), then LayerNorm
    (centring, eps; trivial affine). With independent uniform ids,
    E e_t . e_s = a_t . a_s for t != s with a_t = mean_v W[v] + P[t] + S[0], and
    E |e_t|^2 = mean_v |W[v]|^2 - |mean_v W[v]|^2 + |a_t|^2, all after centring; the
    LayerNorm then divides by the mean norm (the theory's LayerNorm map).
    The token-type row is shared by every token: BERT's inputs start at rho0 > 0.
    """
    from .adapters_read import read_layernorm

    emb = model.embeddings
    T = check.sequence_length(seq_len, name="seq_len", infinite=False)
    positions = emb.position_embeddings.num_embeddings
    if T > positions:
        raise ValueError(f"seq_len = {T} exceeds the model's {positions} position embeddings "
                         "(max_position_embeddings of its config)")
    d = emb.word_embeddings.embedding_dim
    eps = read_layernorm(emb.LayerNorm, d, "embeddings.LayerNorm")

    def centred(t):
        t = t.detach().to(torch.float64)
        return t - t.mean(-1, keepdim=True)

    words = centred(emb.word_embeddings.weight)
    a = words.mean(0) + centred(emb.position_embeddings.weight[:T]) + centred(emb.token_type_embeddings.weight[0])
    spread = float(words.pow(2).sum(-1).mean() - words.mean(0).pow(2).sum())
    norms = a.pow(2).sum(-1)
    q_raw = float(spread + norms.mean()) / d
    p_raw = float((a.sum(0).pow(2).sum() - norms.sum()) / (T * (T - 1))) / d
    return q_raw / (q_raw + eps), p_raw / q_raw
