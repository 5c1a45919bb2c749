"""Layer kinds as data: one place per kind for its three views.

A transformer block is a :class:`Sequence` of layers. Each layer kind holds,
side by side:

- ``overlap_map(state, ctx)``: the symbolic map of the overlap state (q, p) —
  q = |X_t|^2/d, p = X_t.X_s/d — derived with :mod:`derive.gaussian`,
  :mod:`derive.attention` and :mod:`derive.kernels`;
- what :mod:`numeric` needs beyond the compiled symbolic map (the NumPy form
  of an activation, for kernels without a closed form);
- ``torch_init`` / ``torch_forward``: the layer at initialisation in PyTorch,
  batched over a leading seed dimension, with docs/design.md's conventions
  (:mod:`verify` wraps these into an ``nn.Module``);
- ``gram_map(Q, params, ctx)``: the infinite-width map of the whole T x T
  overlap matrix Q_ts = X_t.X_s/d (NumPy, batched over leading axes), with the
  attention scores sampled from their Gaussian law given Q (eq. 9). No
  assumption that all pairs share one overlap: :func:`numeric.gram_profile`
  iterates it (the theory beyond the (q, p) closure of B.2.1).

NumPy and torch are imported lazily inside those methods: ``import derive``
needs SymPy only.

Composition rules (a spec that breaks them raises ``ValueError``):
an :class:`Activation` needs Gaussian pre-activations (it must follow a
:class:`Linear`); the branch of a :class:`Residual` must end in a layer that is
linear in fresh zero-mean weights (Linear or SelfAttention), so that the
cross terms E[F(X)_t . X_s] vanish (paper B.6.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import sympy

from . import gaussian as g
from . import kernels
from . import masks
from .attention import Y2, Yp, attention_map
from .symbols import BY_NAME


# --- overlap state and the derivation context ------------------------------------

@dataclass(frozen=True)
class State:
    """Overlap state of a token sequence.

    ``gaussian``: the tokens are jointly Gaussian over fresh weights with
    covariance (q, p), so an activation kernel applies. ``centred``: the
    tokens are linear in fresh zero-mean weights, so cross terms with any
    earlier signal average to zero.
    """

    q: sympy.Expr
    p: sympy.Expr
    gaussian: bool = False
    centred: bool = False


@dataclass
class Context:
    """What a derivation needs besides the state.

    ``T``: sequence length (``sympy.oo`` for the paper's asymptotic theory).
    ``trace``: when a list, every layer appends a :class:`Step` of
    assignments and hands on fresh symbols, which is how
    :func:`derive.blocks.algorithm` prints a block as an algorithm.
    ``attention_inputs``: the input state of every attention layer, in order
    (what the entropy-collapse criterion looks at).
    """

    T: sympy.Expr = sympy.oo
    trace: list | None = None
    attention_inputs: list = field(default_factory=list)

    def emit(self, label: str, state: State) -> State:
        """Record the layer's output state as a step (when tracing) and hand on its symbols."""
        if self.trace is None:
            return state
        k = sum(1 for step in self.trace if step.is_state) + 1
        qk, pk = sympy.Symbol(f"q_{k}", positive=True), sympy.Symbol(f"p_{k}", positive=True)
        self.trace.append(Step(label, ((qk, state.q), (pk, state.p)), is_state=True))
        return State(qk, pk, state.gaussian, state.centred)

    def define(self, label: str, name: str, expr: sympy.Expr) -> sympy.Expr:
        """Name an intermediate quantity (e.g. the IPR) as its own step when tracing."""
        if self.trace is None or expr.is_number:
            return expr
        k = sum(1 for step in self.trace if step.is_state) + 1
        symbol = sympy.Symbol(f"{name}_{k}", real=True)
        self.trace.append(Step(label, ((symbol, expr),), is_state=False))
        return symbol


@dataclass(frozen=True)
class Step:
    """One line of an algorithm: ``assignments`` is a tuple of (symbol, expression)."""

    label: str
    assignments: tuple
    is_state: bool = True


def parameter(name: str) -> sympy.Symbol:
    """The SymPy symbol of a parameter name (a contract symbol where it is one)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"parameter name must be an identifier, got {name!r}")
    return BY_NAME.get(name) or sympy.Symbol(name, positive=True)


def _value(params: dict, name: str) -> float:
    if name not in params:
        raise ValueError(f"missing parameter {name!r}; given: {sorted(params)}")
    value = float(params[name])
    if not math.isfinite(value):
        raise ValueError(f"parameter {name!r} must be finite, got {value}")
    return value


def _per_seed(w, x):
    """View per-seed weights (seeds, ...) so they broadcast over x's batch dimensions."""
    extra = x.dim() - w.dim()
    return w.reshape(w.shape[0], *([1] * extra), *w.shape[1:]) if extra > 0 else w


def _normal(shape, std, generator, dtype, device):
    import torch
    return torch.randn(shape, generator=generator, dtype=dtype, device=device) * std


# --- layer kinds -----------------------------------------------------------------

class Layer:
    """Base class: a layer kind with its symbolic map and its torch form."""

    label = "layer"

    def overlap_map(self, state: State, ctx: Context) -> State:
        raise NotImplementedError

    def parameters(self) -> set[str]:
        """Names of the parameters this layer's map and init use."""
        return set()

    def lines(self) -> list[str]:
        return [str(self)]

    def torch_init(self, d: int, n_seeds: int, generator, dtype, device) -> dict:
        """Sample this layer's random weights for input width ``d`` (unit variance; scaled in forward)."""
        return {}

    def out_features(self, d: int) -> int:
        """Output width for input width ``d``."""
        return d

    def torch_forward(self, x, weights: dict, params: dict):
        raise NotImplementedError

    def gram_map(self, Q, params: dict, ctx: GramContext):
        """The infinite-width map of overlap matrices Q (..., T, T) (see :class:`GramContext`)."""
        raise NotImplementedError(f"{type(self).__name__} has no Gram-matrix map")

    def pair_map(self) -> sympy.Expr | None:
        """The position-resolved symbolic map of an entrywise layer: the new overlap of tokens (t, s) as an
        expression in their norms and overlap (:data:`QT`, :data:`QS`, :data:`QTS`) and the parameters.
        ``None`` for layers that mix positions (attention) or compose others (Sequence, Residual)."""
        return None


#: Placeholders for a layer's input overlaps: each map is derived on these
#: (small expressions, cheap to simplify) and then the input state is substituted.
_Q, _P = sympy.symbols("q_in p_in", positive=True)


#: The overlap state of one pair of positions (t, s) in a position-resolved theory: their norms and overlap.
QT, QS, QTS = sympy.symbols("q_tt q_ss q_ts", real=True)


def _layernorm_pair(eps, qt=QT, qs=QS, qts=QTS):
    """LN(X)_t . LN(X)_s / d = q_ts / sqrt((q_tt + eps)(q_ss + eps)) (each token divided by its own norm)."""
    return qts / sympy.sqrt((qt + eps) * (qs + eps))


def _layernorm_map(eps):
    """The (q, p) map of LayerNorm: :func:`_layernorm_pair` with q_tt = q_ss = q (exchangeable tokens)."""
    qt, qs, qts = sympy.symbols("q_tt q_ss q_ts", positive=True)
    norm = _layernorm_pair(eps, qt, qs, qts)
    diagonal = sympy.simplify(norm.subs({qts: _Q, qt: _Q, qs: _Q}))
    off = sympy.simplify(norm.subs({qts: _P, qt: _Q, qs: _Q}))
    return diagonal, off


@dataclass(frozen=True)
class LayerNorm(Layer):
    """X_t -> X_t / sqrt(|X_t|^2/d + eps) (paper eq. 5; no centring, no affine).

    ``centre=True`` subtracts the feature mean first (real LayerNorm); at
    large d it does not change the overlaps of zero-mean tokens, so the
    symbolic map is the same. Map: q -> q/(q+eps), p -> p/(q+eps).
    """

    eps: float = 0.0
    centre: bool = False
    label = "LayerNorm"

    def __post_init__(self):
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise ValueError(f"LayerNorm eps must be finite and >= 0, got {self.eps}")

    def overlap_map(self, state, ctx):
        q_new, p_new = _layernorm_map(sympy.nsimplify(self.eps))
        table = {_Q: state.q, _P: state.p}
        return ctx.emit(self.label, State(q_new.subs(table, simultaneous=True), p_new.subs(table, simultaneous=True)))

    def __str__(self):
        opts = [f"eps={self.eps}"] if self.eps else []
        opts += ["centre=True"] if self.centre else []
        return f"LayerNorm({', '.join(opts)})"

    def pair_map(self):
        """q_ts / sqrt((q_tt + eps)(q_ss + eps)): tokens of different norms (causal stacks) are each normalised."""
        return _layernorm_pair(sympy.nsimplify(self.eps))

    def gram_map(self, Q, params, ctx):
        """Q_ts / sqrt((Q_tt + eps)(Q_ss + eps)); centring does not change zero-mean overlaps at large d."""
        import numpy as np
        scale = 1.0 / np.sqrt(np.diagonal(Q, axis1=-2, axis2=-1) + self.eps)
        return Q * scale[..., :, None] * scale[..., None, :]

    def torch_forward(self, x, weights, params):
        if self.centre:
            x = x - x.mean(dim=-1, keepdim=True)
        return x / (x.pow(2).mean(dim=-1, keepdim=True) + self.eps).sqrt()


@dataclass(frozen=True)
class Linear(Layer):
    """y = W x + b, W entries N(0, weight/fan_in), b entries N(0, bias) (eqs. 35-36).

    ``width`` scales the output width relative to d (the MLP's d_ff/d) in the
    torch view; the infinite-width map does not depend on it.
    """

    weight: str = "sigma_w2"
    bias: str | None = "sigma_b2"
    width: float = 1.0
    label = "Linear"

    def parameters(self):
        return {self.weight} | ({self.bias} if self.bias else set())

    def overlap_map(self, state, ctx):
        d_in, d_out = sympy.symbols("d_in d_out", positive=True)
        ranges = {"t": None, "u": None, "i": d_out, "j": d_in, "l": d_in}

        def y(row, inner):
            wx = (g.tensor("W", "i", inner, ranges=ranges) * g.tensor("X", row, inner, ranges=ranges))
            out = wx.summed_over(inner)
            return out + g.tensor("b", "i", ranges=ranges) if self.bias else out

        variances = {"W": parameter(self.weight) / d_in}
        if self.bias:
            variances["b"] = parameter(self.bias)
        out = {}
        for name, other in (("q", "t"), ("p", "u")):
            expr = (y("t", "j") * y(other, "l")).summed_over("i").scaled(1 / d_out)
            expr = g.mean_field(g.contract(g.wick(expr, variances)), state.q, state.p)
            out[name] = sum((t.coeff for t in expr.terms), sympy.Integer(0))
            if any(t.factors for t in expr.terms):
                raise ValueError(f"Linear map did not reduce to overlaps: {expr}")
        return ctx.emit(str(self), State(out["q"], out["p"], gaussian=True, centred=True))

    def __str__(self):
        bias = f", bias={self.bias}" if self.bias else ", no bias"
        width = f", width={self.width:g}d" if self.width != 1 else ""
        return f"Linear(weight={self.weight}{bias}{width})"

    def out_features(self, d: int) -> int:
        return max(1, int(round(self.width * d)))

    def pair_map(self):
        """weight q_ts + bias: :meth:`overlap_map`'s off-diagonal entry, which does not involve the norms."""
        return _entrywise(self)

    def gram_map(self, Q, params, ctx):
        """weight Q + bias on every entry (the same Wick contraction as :meth:`overlap_map`)."""
        out = _value(params, self.weight) * Q
        return out + _value(params, self.bias) if self.bias else out

    def torch_init(self, d, n_seeds, generator, dtype, device):
        d_out = self.out_features(d)
        weights = {"W": _normal((n_seeds, d_out, d), 1.0, generator, dtype, device)}
        if self.bias:
            weights["b"] = _normal((n_seeds, 1, d_out), 1.0, generator, dtype, device)
        return weights

    def torch_forward(self, x, weights, params):
        d_in = x.shape[-1]
        y = (x @ _per_seed(weights["W"], x).transpose(-1, -2)) * math.sqrt(_value(params, self.weight) / d_in)
        if self.bias:
            y = y + _per_seed(weights["b"], x) * math.sqrt(_value(params, self.bias))
        return y


@dataclass(frozen=True)
class Bias(Layer):
    """y_t = x_t + b, one vector b with entries N(0, variance) shared by all tokens.

    The common output bias of a real attention branch (value bias through the
    output projection, plus the projection's own bias). Map, derived below by
    Wick's theorem: q -> q + variance, p -> p + variance (the cross terms
    E[b . x_t] are of odd order in b and vanish). Only second moments enter,
    so the map holds for any zero-mean bias law (uniform included). The
    input's Gaussian and centred flags carry over: b is independent and zero-mean.
    """

    variance: str = "sigma_b2"
    label = "Bias"

    def parameters(self):
        return {self.variance}

    def overlap_map(self, state, ctx):
        d = sympy.Symbol("d_in", positive=True)
        ranges = {"t": None, "u": None, "i": d}

        def y(row):
            return g.tensor("X", row, "i", ranges=ranges) + g.tensor("b", "i", ranges=ranges)

        out = {}
        for name, other in (("q", "t"), ("p", "u")):
            expr = (y("t") * y(other)).summed_over("i").scaled(1 / d)
            expr = g.mean_field(g.contract(g.wick(expr, {"b": parameter(self.variance)})), state.q, state.p)
            out[name] = sum((t.coeff for t in expr.terms), sympy.Integer(0))
            if any(t.factors for t in expr.terms):
                raise ValueError(f"Bias map did not reduce to overlaps: {expr}")
        return ctx.emit(str(self), State(out["q"], out["p"], state.gaussian, state.centred))

    def __str__(self):
        return f"Bias({self.variance})"

    def pair_map(self):
        """q_ts + variance (:meth:`overlap_map`'s off-diagonal entry)."""
        return _entrywise(self)

    def gram_map(self, Q, params, ctx):
        return Q + _value(params, self.variance)

    def torch_init(self, d, n_seeds, generator, dtype, device):
        return {"b": _normal((n_seeds, 1, d), 1.0, generator, dtype, device)}

    def torch_forward(self, x, weights, params):
        return x + _per_seed(weights["b"], x) * math.sqrt(_value(params, self.variance))


@dataclass(frozen=True)
class Activation(Layer):
    """Elementwise phi; maps (q, p) -> (K(q, q), K(q, p)) with K the Gaussian
    kernel of phi (paper B.6.2, eqs. 35-37; :mod:`derive.kernels`)."""

    name: str = "relu"
    label = "Activation"

    def __post_init__(self):
        if self.name not in kernels.ACTIVATIONS:
            raise ValueError(f"activation must be one of {kernels.ACTIVATIONS}, got {self.name!r}")

    def overlap_map(self, state, ctx):
        if not state.gaussian:
            raise ValueError(f"{self} needs Gaussian pre-activations: put a Linear layer before it")
        q_new = kernels.gaussian_kernel(self.name, state.q, state.q)
        p_new = kernels.gaussian_kernel(self.name, state.q, state.p)
        return ctx.emit(str(self), State(q_new, p_new))

    def __str__(self):
        return f"Activation({self.name})"

    def numpy_function(self):
        """phi as a vectorised NumPy function: derive's one definition of phi
        (:func:`derive.kernels.activation_function`) lambdified. :mod:`numeric` runs without SymPy on
        the same expression printed into ``numeric._generated.ACTIVATION_FUNCTIONS``."""
        x = sympy.Symbol("x", real=True)
        return sympy.lambdify(x, kernels.activation_function(self.name)(x), modules=["scipy", "numpy"])

    def pair_map(self):
        """K(q_tt, q_ts), the Gaussian kernel of phi. Valid for tokens of one norm (q_tt = q_ss), as after
        a LayerNorm and a Linear; a position-resolved theory checks that at run time."""
        return kernels.gaussian_kernel(self.name, QT, QTS)

    def gram_map(self, Q, params, ctx):
        """K(q, Q_ts) entrywise, K from ``ctx.kernel``. Tokens must share their norm q (as after a
        LayerNorm without eps and a Linear): the kernels are those of equal variances."""
        import numpy as np
        q = np.diagonal(Q, axis1=-2, axis2=-1)
        if np.any(np.abs(q - q[..., :1]) > 1e-9 * np.abs(q[..., :1])):
            raise ValueError(f"{self} in a Gram-matrix map needs tokens of equal norm; its input norms differ "
                             "(no LayerNorm before the MLP, or a LayerNorm with eps > 0)")
        return ctx.kernel(self.name)(q[..., :1, None], Q)

    def torch_forward(self, x, weights, params):
        import torch
        import torch.nn.functional as F
        return {"relu": torch.relu, "erf": torch.erf, "tanh": torch.tanh,
                "gelu": F.gelu, "identity": lambda z: z}[self.name](x)


@dataclass(frozen=True)
class SelfAttention(Layer):
    """Softmax self-attention at initialisation (paper eqs. 6-7; gain control, section 3).

    Scores a_ts = (W_Q X_t).(W_K X_s)/sqrt(d_h) with W_Q, W_K entries
    N(0, beta sqrt(ln T)/d); values W_V entries N(0, sigma_v2/d). Gain-controlled
    attention subtracts (1/T) sum_s W_V X_s. ``heads`` splits d into heads of
    d/heads features each (same per-head score statistics, so the same map).
    ``mask``: None (every row sees all T keys), "causal" (row t sees s <= t, as
    ``scaled_dot_product_attention(is_causal=True)``) or "sliding:W"
    (:mod:`derive.masks`); gain control then subtracts the mean over a row's own keys.
    """

    gain: bool = False
    beta: str = "beta"
    sigma_v2: str = "sigma_v2"
    heads: int = 1
    mask: object = None
    label = "SelfAttention"

    def __post_init__(self):
        if not (isinstance(self.heads, int) and self.heads >= 1):
            raise ValueError(f"heads must be an integer >= 1, got {self.heads!r}")
        object.__setattr__(self, "mask", masks.parse(self.mask))

    def parameters(self):
        return {self.beta, self.sigma_v2}

    def overlap_map(self, state, ctx):
        if self.mask is not None:
            raise ValueError(f"{self} has position-dependent overlaps: its tokens are not exchangeable, so it has "
                             "no (q, p) map; use the position-resolved theory (numeric.cosine_profile on a causal "
                             "spec) or the overlap-matrix view (gram_map)")
        ctx.attention_inputs.append(state)
        beta = parameter(self.beta)
        moments = {name: ctx.define(f"attention moment {name}", name, fn(beta, state.q, state.p, ctx.T))
                   for name, fn in (("Y2", Y2), ("Yp", Yp))}
        q_s, p_s = attention_map(beta, state.q, state.p, ctx.T, parameter(self.sigma_v2), self.gain, moments)
        return ctx.emit(str(self), State(q_s, p_s, gaussian=False, centred=True))

    def __str__(self):
        kind = "gain-controlled" if self.gain else "vanilla"
        heads = f", heads={self.heads}" if self.heads != 1 else ""
        mask = f", mask={self.mask}" if self.mask is not None else ""
        return f"SelfAttention({kind}, beta={self.beta}, sigma_v2={self.sigma_v2}{heads}{mask})"

    def torch_init(self, d, n_seeds, generator, dtype, device):
        if d % self.heads:
            raise ValueError(f"d={d} is not divisible by heads={self.heads}")
        return {k: _normal((n_seeds, d, d), 1.0, generator, dtype, device) for k in ("W_Q", "W_K", "W_V")}

    def torch_scores(self, x, weights, params):
        """The scores a_ts (seeds, [batch...,] heads, T, T) of eq. (6) for input ``x``.

        W_Q, W_K entries N(0, beta sqrt(ln T)/d) (:meth:`query_key_std`), the product divided by
        sqrt(d_h); shared by :meth:`torch_forward` and :meth:`torch_attention`.
        """
        T, d = x.shape[-2], x.shape[-1]
        queries, keys = self._heads(x, weights["W_Q"]), self._heads(x, weights["W_K"])
        scores = (queries @ keys.transpose(-1, -2)) * (self.query_key_std(T, d, params) ** 2 / math.sqrt(d // self.heads))
        if self.mask is None:
            return scores
        import torch
        allowed = torch.as_tensor(self.mask.allowed(T), device=scores.device)
        return scores.masked_fill(~allowed, float("-inf"))

    def query_key_std(self, T: int, d: int, params: dict) -> float:
        """The std of the entries of W_Q and W_K: sqrt(beta sqrt(ln T)/d) (Result 1; docs/design.md).

        The one place of the query/key convention: the torch view scales unit-variance weights by it,
        and a gradient with respect to W_Q itself divides by it (verify.montecarlo).
        """
        if T < 2:
            raise ValueError(f"self-attention needs T >= 2 tokens, got T={T}")
        return math.sqrt(_value(params, self.beta) * math.sqrt(math.log(T)) / d)

    def value_std(self, d: int, params: dict) -> float:
        """The std of the entries of W_V: sqrt(sigma_v2/d) (an output projection folds into sigma_v2)."""
        return math.sqrt(_value(params, self.sigma_v2) / d)

    def _heads(self, x, w):
        """x W^T with unit-variance W, split into heads: (seeds, [batch...,] heads, T, d_h).

        The variances are applied to the (smaller) products, not to the weights.
        """
        y = x @ _per_seed(w, x).transpose(-1, -2)
        return y.reshape(*x.shape[:-1], self.heads, x.shape[-1] // self.heads).transpose(-2, -3)

    def torch_forward(self, x, weights, params):
        import torch
        attention = torch.softmax(self.torch_scores(x, weights, params), dim=-1)
        values = self._heads(x, weights["W_V"])
        out = attention @ values
        if self.gain:
            out = out - self._key_average(x.shape[-2], values)
        return out.transpose(-2, -3).reshape(x.shape) * self.value_std(x.shape[-1], params)

    def _key_average(self, T, values):
        """Gain control's subtracted term: the mean of each row's own values (all T keys without a mask)."""
        if self.mask is None:
            return values.mean(dim=-2, keepdim=True)
        import torch
        allowed = torch.as_tensor(self.mask.allowed(T), device=values.device, dtype=values.dtype)
        return (allowed / allowed.sum(-1, keepdim=True)) @ values

    def gram_map(self, Q, params, ctx):
        """sigma_v2/heads sum_h A_h Q A_h^T with each head's scores drawn from eq. (9) given Q:
        a = beta sqrt(ln T) F G F^T with F F^T = Q and G i.i.d. N(0, 1), so that
        Cov(a_ts, a_kl) = beta^2 ln T Q_tk Q_sl. A mask removes the keys a row does not see
        before the softmax; gain control subtracts each row's uniform weights over its keys."""
        import numpy as np
        T = Q.shape[-1]
        if T < 2:
            raise ValueError(f"self-attention needs T >= 2 tokens, got T={T}")
        factor, scale = _gram_factor(Q), _value(params, self.beta) * math.sqrt(math.log(T))
        allowed = None if self.mask is None else self.mask.allowed(T)
        uniform = 1.0 / T if allowed is None else allowed / allowed.sum(-1, keepdims=True)
        out = np.zeros_like(Q)
        for _ in range(self.heads):
            scores = factor @ ctx.rng.standard_normal(Q.shape) @ np.swapaxes(factor, -1, -2)
            scores *= scale
            if allowed is not None:
                scores[..., ~allowed] = -np.inf
            scores -= scores.max(axis=-1, keepdims=True)          # log-sum-exp: no overflow at any beta
            attention = np.exp(scores)
            attention /= attention.sum(axis=-1, keepdims=True)
            if self.gain:
                attention -= uniform
            out += attention @ Q @ np.swapaxes(attention, -1, -2)
        return out * (_value(params, self.sigma_v2) / self.heads)

    def torch_attention(self, x, weights, params):
        """The attention matrices A (seeds, [batch...,] heads, T, T) of this layer for input ``x``."""
        import torch
        return torch.softmax(self.torch_scores(x, weights, params), dim=-1)


@dataclass(frozen=True)
class Sequence(Layer):
    """Layers applied one after the other."""

    layers: tuple[Layer, ...] = ()
    name: str | None = None
    label = "Sequence"

    def __init__(self, *layers: Layer, name: str | None = None):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for k, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise ValueError(f"Sequence element {k} must be a Layer, got {type(layer).__name__}")
        object.__setattr__(self, "layers", tuple(layers))
        object.__setattr__(self, "name", name)

    def parameters(self):
        return set().union(*(layer.parameters() for layer in self.layers)) if self.layers else set()

    def overlap_map(self, state, ctx):
        for layer in self.layers:
            state = layer.overlap_map(state, ctx)
        return state

    def lines(self) -> list[str]:
        head = [f"{self.name}:"] if self.name else []
        body = [line for layer in self.layers for line in layer.lines()]
        return head + (["  " + line for line in body] if self.name else body)

    def __str__(self):
        return "\n".join(self.lines())

    def __repr__(self):
        return f"Sequence({', '.join(repr(layer) for layer in self.layers)}, name={self.name!r})"

    def out_features(self, d):
        for layer in self.layers:
            d = layer.out_features(d)
        return d

    def torch_init(self, d, n_seeds, generator, dtype, device):
        weights = {}
        for k, layer in enumerate(self.layers):
            weights[str(k)] = layer.torch_init(d, n_seeds, generator, dtype, device)
            d = layer.out_features(d)
        return weights

    def torch_forward(self, x, weights, params):
        for k, layer in enumerate(self.layers):
            x = layer.torch_forward(x, weights.get(str(k), {}), params)
        return x

    def gram_map(self, Q, params, ctx):
        for layer in self.layers:
            Q = layer.gram_map(Q, params, ctx)
        return Q


class MLP(Sequence):
    """Linear -> activation -> Linear, both linears with the same variances (paper B.6.2)."""

    def __init__(self, activation: str = "relu", weight: str = "sigma_w2", bias: str | None = "sigma_b2",
                 width: float = 1.0):
        super().__init__(Linear(weight, bias, width), Activation(activation),
                         Linear(weight, bias, 1.0 / width), name=None)
        object.__setattr__(self, "activation", activation)

    def lines(self):
        return [f"MLP({self.activation}): " + " -> ".join(str(layer) for layer in self.layers)]


@dataclass(frozen=True)
class Residual(Layer):
    """RES(X) = F(X) + alpha X (paper eq. 8): q -> q_F + alpha^2 q, p -> p_F + alpha^2 p.

    The cross terms E[F(X)_t . X_s] vanish because the branch ends linear in
    fresh zero-mean weights (checked, and the vanishing computed by Wick's
    theorem in :func:`_cross_term`).
    """

    branch: Layer
    alpha: str = "alpha_sa"
    label = "Residual"

    def __post_init__(self):
        if not isinstance(self.branch, Layer):
            raise ValueError(f"Residual branch must be a Layer, got {type(self.branch).__name__}")

    def parameters(self):
        return {self.alpha} | self.branch.parameters()

    def overlap_map(self, state, ctx):
        out = self.branch.overlap_map(State(state.q, state.p), ctx)
        if not out.centred:
            raise ValueError(f"the branch of Residual(alpha={self.alpha}) must end in a layer linear in "
                             f"fresh zero-mean weights (Linear or SelfAttention), got:\n{self.branch}")
        a2 = parameter(self.alpha) ** 2
        cross = _cross_term()
        q_new = out.q + a2 * state.q + 2 * parameter(self.alpha) * cross
        p_new = out.p + a2 * state.p + 2 * parameter(self.alpha) * cross
        return ctx.emit(f"Residual(alpha={self.alpha})", State(q_new, p_new))

    def lines(self):
        return [f"Residual(alpha={self.alpha}):"] + ["  " + line for line in self.branch.lines()]

    def __str__(self):
        return "\n".join(self.lines())

    def torch_init(self, d, n_seeds, generator, dtype, device):
        return {"branch": self.branch.torch_init(d, n_seeds, generator, dtype, device)}

    def torch_forward(self, x, weights, params):
        return self.branch.torch_forward(x, weights["branch"], params) + _value(params, self.alpha) * x

    def gram_map(self, Q, params, ctx):
        """branch(Q) + alpha^2 Q: the cross terms vanish as in :meth:`overlap_map` (same check on the branch)."""
        if not _ends_in_fresh_weights(self.branch):
            raise ValueError(f"the branch of Residual(alpha={self.alpha}) must end in a layer linear in "
                             f"fresh zero-mean weights (Linear or SelfAttention), got:\n{self.branch}")
        return self.branch.gram_map(Q, params, ctx) + _value(params, self.alpha) ** 2 * Q


def _entrywise(layer: Layer) -> sympy.Expr:
    """The off-diagonal entry of ``layer``'s (q, p) map with p = q_ts, checked not to involve the norm q."""
    q = sympy.Symbol("q_norm", positive=True)
    out = layer.overlap_map(State(q, QTS, gaussian=True, centred=True), Context())
    if out.p.has(q):
        raise ValueError(f"{layer}: the overlap map of a pair depends on the norms; no entrywise pair map")
    return out.p


def _cross_term() -> sympy.Expr:
    """(1/d) E_W[F(X)_t . X_s] for F = W H with W fresh and zero-mean: zero by Wick (odd order)."""
    d = sympy.Symbol("d", positive=True)
    ranges = {"i": d, "j": d}
    f = (g.tensor("W", "i", "j", ranges=ranges) * g.tensor("H", "t", "j", ranges=ranges)).summed_over("j")
    expr = (f * g.tensor("X", "s", "i", ranges=ranges)).summed_over("i").scaled(1 / d)
    expr = g.wick(expr, {"W": sympy.Symbol("sigma2", positive=True)})
    return sum((t.coeff for t in expr.terms), sympy.Integer(0))


def _gram_factor(Q):
    """F with F F^T = Q for positive semi-definite Q (..., T, T): Cholesky, or eigenvectors when Q is singular."""
    import numpy as np
    try:
        return np.linalg.cholesky(Q)
    except np.linalg.LinAlgError:
        values, vectors = np.linalg.eigh(Q)
        return vectors * np.sqrt(np.maximum(values, 0.0))[..., None, :]


def _ends_in_fresh_weights(layer: Layer) -> bool:
    """The layer's output is linear in fresh zero-mean weights (its last step is a Linear or SelfAttention)."""
    while isinstance(layer, Sequence) and layer.layers:
        layer = layer.layers[-1]
    return isinstance(layer, (Linear, SelfAttention))


_CLOSED_FORM_KERNELS: dict = {}


def closed_form_kernel(name: str):
    """K(q, c) of activation ``name`` as a vectorised NumPy function: the symbolic kernel of
    :mod:`derive.kernels` lambdified, c clipped to [-q, q] against rounding. ValueError for an
    activation without a closed form (tanh): :func:`numeric.gram_profile` supplies a tabulated one."""
    if name not in _CLOSED_FORM_KERNELS:
        q, c = sympy.symbols("q c", positive=True)
        expr = kernels.gaussian_kernel(name, q, c)
        if expr.atoms(kernels.OpaqueKernel):
            raise ValueError(f"activation {name!r} has no closed-form kernel (numeric.gram_profile tabulates one)")
        import numpy as np
        f = sympy.lambdify((q, c), expr, modules="numpy")
        _CLOSED_FORM_KERNELS[name] = lambda qq, cc: np.broadcast_to(f(qq, np.clip(cc, -qq, qq)), np.shape(cc))
    return _CLOSED_FORM_KERNELS[name]


@dataclass
class GramContext:
    """What a Gram-matrix map needs besides Q and the parameters: ``rng``, the NumPy Generator of the
    attention scores, and ``kernel``, activation name -> vectorised K(q, c)."""

    rng: object
    kernel: object = closed_form_kernel
