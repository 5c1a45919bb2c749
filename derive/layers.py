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
    #: Its pair map is a kernel of equal variances: a position-resolved map needs tokens of one norm.
    needs_common_norm = True

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
        return {"relu": torch.relu, "erf": torch.erf, "tanh": torch.tanh, "gelu": F.gelu, "identity": lambda z: z,
                "silu": F.silu, "gelu_new": lambda z: F.gelu(z, approximate="tanh")}[self.name](x)


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

    ``kv_heads`` (grouped-query / multi-query attention): W_K and W_V have ``kv_heads``
    heads, each shared by heads/kv_heads consecutive query heads (transformers' ``repeat_kv``).
    The expected map is unchanged: each head's output enters through its own block of
    the output (or W_O, independent across heads), so the cross-head terms vanish
    whatever the heads share (:func:`grouped_heads_cross_term`).

    ``rope`` (RoPE's base theta) with ``rope_dim`` (the head dimension d_h): queries and keys
    of position t rotated by R_t (:mod:`derive.rope`; transformers' ``rotate_half`` pairing
    (j, j + d_h/2), frequencies theta^(-2i/d_h)); values are not rotated. The (q, p) map
    evaluates the IPR at RoPE's effective key overlap and the pair term with the rows'
    correlation rho c(t - t') (:class:`derive.rope.RopeOverlap`, :class:`derive.rope.RopePair`).
    """

    gain: bool = False
    beta: str = "beta"
    sigma_v2: str = "sigma_v2"
    heads: int = 1
    mask: object = None
    kv_heads: int | None = None
    rope: float | None = None
    rope_dim: int | None = None
    label = "SelfAttention"

    def __post_init__(self):
        if not (isinstance(self.heads, int) and self.heads >= 1):
            raise ValueError(f"heads must be an integer >= 1, got {self.heads!r}")
        if self.kv_heads is not None and not (isinstance(self.kv_heads, int) and self.kv_heads >= 1
                                              and self.heads % self.kv_heads == 0):
            raise ValueError(f"kv_heads must be an integer >= 1 that divides heads = {self.heads}, "
                             f"got {self.kv_heads!r}")
        if self.rope is not None:
            if isinstance(self.rope, bool) or not (isinstance(self.rope, (int, float)) and math.isfinite(self.rope)
                                                   and self.rope > 1):
                raise ValueError(f"rope (RoPE's base theta) must be a finite number > 1, got {self.rope!r}")
            if not (isinstance(self.rope_dim, int) and self.rope_dim >= 2 and self.rope_dim % 2 == 0):
                raise ValueError(f"rope_dim (the head dimension RoPE rotates) must be an even integer >= 2, "
                                 f"got {self.rope_dim!r}")
            object.__setattr__(self, "rope", float(self.rope))
        elif self.rope_dim is not None:
            raise ValueError("rope_dim is the head dimension of RoPE: give rope (its base theta) too")
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
        if self.rope is None:
            moments = {name: ctx.define(f"attention moment {name}", name, fn(beta, state.q, state.p, ctx.T))
                       for name, fn in (("Y2", Y2), ("Yp", Yp))}
        else:
            from .rope import RopeOverlap, RopePair
            args = (beta, state.q, state.p, ctx.T, sympy.Float(self.rope), sympy.Integer(self.rope_dim))
            p_rope = ctx.define("RoPE effective key overlap", "p_rope", RopeOverlap(*args))
            moments = {"Y2": ctx.define("attention moment Y2", "Y2", Y2(beta, state.q, p_rope, ctx.T)),
                       "Yp": ctx.define("attention moment Yp (RoPE)", "Yp", RopePair(*args))}
        q_s, p_s = attention_map(beta, state.q, state.p, ctx.T, parameter(self.sigma_v2), self.gain, moments)
        return ctx.emit(str(self), State(q_s, p_s, gaussian=False, centred=True))

    def __str__(self):
        kind = "gain-controlled" if self.gain else "vanilla"
        heads = f", heads={self.heads}" if self.heads != 1 else ""
        kv = f", kv_heads={self.kv_heads}" if self.kv_heads is not None else ""
        mask = f", mask={self.mask}" if self.mask is not None else ""
        rope = f", rope={self.rope:g}/{self.rope_dim}" if self.rope is not None else ""
        return f"SelfAttention({kind}, beta={self.beta}, sigma_v2={self.sigma_v2}{heads}{kv}{mask}{rope})"

    def head_dim(self, d: int) -> int:
        """d / heads, checked against rope_dim when RoPE is on."""
        if d % self.heads:
            raise ValueError(f"d={d} is not divisible by heads={self.heads}")
        d_h = d // self.heads
        if self.rope is not None and d_h != self.rope_dim:
            raise ValueError(f"rope_dim = {self.rope_dim} but the heads have d/heads = {d_h} features")
        return d_h

    def torch_init(self, d, n_seeds, generator, dtype, device):
        d_kv = self.head_dim(d) * (self.kv_heads or self.heads)
        shapes = {"W_Q": (n_seeds, d, d), "W_K": (n_seeds, d_kv, d), "W_V": (n_seeds, d_kv, d)}
        return {k: _normal(shape, 1.0, generator, dtype, device) for k, shape in shapes.items()}

    def torch_scores(self, x, weights, params):
        """The scores a_ts (seeds, [batch...,] heads, T, T) of eq. (6) for input ``x``.

        W_Q, W_K entries N(0, beta sqrt(ln T)/d) (:meth:`query_key_std`), the product divided by
        sqrt(d_h); shared by :meth:`torch_forward` and :meth:`torch_attention`. With ``rope`` the
        queries and keys are rotated first (:meth:`rotate`).
        """
        T, d = x.shape[-2], x.shape[-1]
        queries, keys = self._heads(x, weights["W_Q"]), self._heads(x, weights["W_K"], self.kv_heads)
        if self.rope is not None:
            queries, keys = self.rotate(queries), self.rotate(keys)
        scores = (queries @ keys.transpose(-1, -2)) * (self.query_key_std(T, d, params) ** 2 / math.sqrt(d // self.heads))
        if self.mask is None:
            return scores
        import torch
        allowed = torch.as_tensor(self.mask.allowed(T), device=scores.device)
        return scores.masked_fill(~allowed, float("-inf"))

    def rotate(self, y):
        """RoPE on (..., T, d_h): y cos(t theta_i) + rotate_half(y) sin(t theta_i) with the frequencies
        theta^(-2i/d_h) repeated over both halves (transformers' LlamaRotaryEmbedding and apply_rotary_pos_emb)."""
        import torch
        T, d_h = y.shape[-2], y.shape[-1]
        inv = self.rope ** (-torch.arange(0, d_h, 2, dtype=torch.float64, device=y.device) / d_h)
        angles = torch.arange(T, dtype=torch.float64, device=y.device)[:, None] * inv[None, :]
        angles = torch.cat((angles, angles), dim=-1)
        half = torch.cat((-y[..., d_h // 2:], y[..., :d_h // 2]), dim=-1)
        return y * angles.cos().to(y.dtype) + half * angles.sin().to(y.dtype)

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

    def _heads(self, x, w, groups=None):
        """x W^T with unit-variance W, split into heads: (seeds, [batch...,] heads, T, d_h).

        ``groups`` (grouped-query attention): W has that many heads, each repeated for
        heads/groups consecutive query heads. The variances are applied to the (smaller)
        products, not to the weights.
        """
        y = x @ _per_seed(w, x).transpose(-1, -2)
        d_h = x.shape[-1] // self.heads
        y = y.reshape(*x.shape[:-1], y.shape[-1] // d_h, d_h).transpose(-2, -3)
        if groups is not None and groups != self.heads:
            y = y.repeat_interleave(self.heads // groups, dim=-3)
        return y

    def torch_forward(self, x, weights, params):
        import torch
        attention = torch.softmax(self.torch_scores(x, weights, params), dim=-1)
        values = self._heads(x, weights["W_V"], self.kv_heads)
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
            scores = self._gram_scores(factor, Q.shape, ctx.rng) * scale
            if allowed is not None:
                scores[..., ~allowed] = -np.inf
            scores -= scores.max(axis=-1, keepdims=True)          # log-sum-exp: no overflow at any beta
            attention = np.exp(scores)
            attention /= attention.sum(axis=-1, keepdims=True)
            if self.gain:
                attention -= uniform
            out += attention @ Q @ np.swapaxes(attention, -1, -2)
        return out * (_value(params, self.sigma_v2) / self.heads)

    def _gram_scores(self, factor, shape, rng):
        """Scores of unit scale with Cov(a_ts, a_kl) = Q_tk Q_sl c((l - k) - (s - t)) (c = 1 without RoPE):
        F G F^T, or with RoPE sum_i sqrt(4/d_h) Re(e^(i (s - t) theta_i) F G_i F^T) with standard complex G_i
        (E Re(w Z) Re(w' Z') = Re(w conj(w') E Z conj(Z'))/2 gives (2/d_h) sum_i cos, :mod:`derive.rope`)."""
        import numpy as np
        factor_t = np.swapaxes(factor, -1, -2)
        if self.rope is None:
            return factor @ rng.standard_normal(shape) @ factor_t
        T = shape[-1]
        lag = np.arange(T)[None, :] - np.arange(T)[:, None]                    # s - t
        out = np.zeros(shape)
        for theta_i in self.rope ** (-np.arange(0, self.rope_dim, 2) / self.rope_dim):
            G = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / math.sqrt(2.0)
            out += (np.exp(1j * lag * theta_i) * (factor @ G @ factor_t)).real
        return out * math.sqrt(4.0 / self.rope_dim)

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


@dataclass(frozen=True)
class RMSNorm(Layer):
    """X_t -> gamma * X_t / sqrt(|X_t|^2/d + eps) (LLaMA's RMSNorm; docs/design.md, "Conventions").

    No centring. ``gain``: the name of the parameter that is the mean square of the gain vector
    gamma (None: gamma = 1, as initialised). For tokens whose coordinates are exchangeable (the
    output of a layer linear in fresh weights, or its normalisation) (1/d) sum_i gamma_i^2 X_ti X_si
    has mean mean(gamma^2) Q_ts, so the map is LayerNorm's (eq. 5 with eps) times the gain:
    q -> g q/(q + eps), p -> g p/(q + eps); the pair map g q_ts / sqrt((q_tt + eps)(q_ss + eps)).
    """

    eps: float = 0.0
    gain: str | None = None
    label = "RMSNorm"

    def __post_init__(self):
        if not (isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and self.eps >= 0):
            raise ValueError(f"RMSNorm eps must be finite and >= 0, got {self.eps!r}")
        if self.gain is not None:
            parameter(self.gain)

    def parameters(self):
        return {self.gain} if self.gain else set()

    def _gain(self):
        return parameter(self.gain) if self.gain else sympy.Integer(1)

    def overlap_map(self, state, ctx):
        q_new, p_new = _layernorm_map(sympy.nsimplify(self.eps))
        table = {_Q: state.q, _P: state.p}
        g2 = self._gain()
        return ctx.emit(str(self), State(g2 * q_new.subs(table, simultaneous=True),
                                         g2 * p_new.subs(table, simultaneous=True)))

    def pair_map(self):
        """gain q_ts / sqrt((q_tt + eps)(q_ss + eps))."""
        return self._gain() * _layernorm_pair(sympy.nsimplify(self.eps))

    def gram_map(self, Q, params, ctx):
        import numpy as np
        scale = 1.0 / np.sqrt(np.diagonal(Q, axis1=-2, axis2=-1) + self.eps)
        g2 = _value(params, self.gain) if self.gain else 1.0
        return g2 * Q * scale[..., :, None] * scale[..., None, :]

    def torch_forward(self, x, weights, params):
        g = math.sqrt(_value(params, self.gain)) if self.gain else 1.0
        return g * x / (x.pow(2).mean(dim=-1, keepdim=True) + self.eps).sqrt()

    def __str__(self):
        opts = [f"eps={self.eps:g}"] if self.eps else []
        opts += [f"gain={self.gain}"] if self.gain else []
        return f"RMSNorm({', '.join(opts)})"


def _gated_product() -> sympy.Expr:
    """The coefficient of (gate overlap) x (up projection's overlap) in the gated product's overlap (it is 1).

    (1/d_ff) E_{W_up}[(G_t * W_up X_t) . (G_u * W_up X_u)] by Wick, G the gate's output (not averaged over W_up):
    one term, (variance/d_ff) sum_i G_ti G_ui Q_tu = [(1/d_ff) sum_i G_ti G_ui] x [variance Q_tu]."""
    d_in, d_ff, var = sympy.Symbol("d_in", positive=True), sympy.Symbol("d_ff", positive=True), \
        sympy.Symbol("sigma_up", positive=True)
    ranges = {"t": None, "u": None, "i": d_ff, "j": d_in, "l": d_in}

    def h(row, inner):
        up = (g.tensor("W", "i", inner, ranges=ranges) * g.tensor("X", row, inner, ranges=ranges)).summed_over(inner)
        return g.tensor("G", row, "i", ranges=ranges) * up

    expr = (h("t", "j") * h("u", "l")).summed_over("i").scaled(1 / d_ff)
    expr = g.contract(g.wick(expr, {"W": var / d_in}))
    if len(expr.terms) != 1:
        raise ValueError(f"expected one term G G Q after Wick's theorem, got {expr}")
    term = expr.terms[0]
    if sorted(f.name for f in term.factors) != ["G", "G", "Q"]:
        raise ValueError(f"the gated product did not factorise: {term}")
    return sympy.simplify(term.coeff * d_ff / var)


@dataclass(frozen=True)
class GatedMLP(Layer):
    """W_down (phi(W_gate x + b) * (W_up x + b_up)) + b_down: SwiGLU (phi = silu, LLaMA) and GeGLU (gelu).

    The gate and the up projection are independent at initialisation, so (Wick over W_up,
    :func:`_gated_product`) the product's overlap factorises into the gate's kernel and the up
    projection's overlap, E[phi(u) phi(u')] E[v v'] (docs/design.md, "Decoder-only conventions"):

        q_h = K_phi(s_g q + b, s_g q + b) (s_u q + b_u),   p_h = K_phi(s_g q + b, s_g p + b) (s_u p + b_u),

    then the down projection q' = s_d q_h + b_d. ``gate``, ``up``, ``down``: the names of the three weight
    variances (W entries N(0, s/fan_in)); ``bias``, ``bias_up``, ``bias_down``: bias variances or None;
    ``width``: d_ff/d in the torch view.
    """

    activation: str = "silu"
    gate: str = "sigma_w2"
    up: str = "sigma_w2_up"
    down: str = "sigma_w2_out"
    width: float = 1.0
    bias: str | None = None
    bias_up: str | None = None
    bias_down: str | None = None
    label = "GatedMLP"
    needs_common_norm = True

    def __post_init__(self):
        if self.activation not in kernels.ACTIVATIONS:
            raise ValueError(f"activation must be one of {kernels.ACTIVATIONS}, got {self.activation!r}")
        if not (isinstance(self.width, (int, float)) and math.isfinite(self.width) and self.width > 0):
            raise ValueError(f"width (d_ff/d) must be a finite number > 0, got {self.width!r}")

    def _linears(self):
        return (Linear(self.gate, self.bias, self.width), Linear(self.up, self.bias_up, self.width),
                Linear(self.down, self.bias_down, 1.0 / self.width))

    def parameters(self):
        return set().union(*(layer.parameters() for layer in self._linears()))

    def overlap_map(self, state, ctx):
        gate, up, down = self._linears()
        inner = Context(T=ctx.T)
        s_gate, s_up = gate.overlap_map(state, inner), up.overlap_map(state, inner)
        factor = _gated_product()
        q_h = factor * kernels.gaussian_kernel(self.activation, s_gate.q, s_gate.q) * s_up.q
        p_h = factor * kernels.gaussian_kernel(self.activation, s_gate.q, s_gate.p) * s_up.p
        product = ctx.emit(f"gate {self.activation}(W_gate x) * W_up x", State(q_h, p_h))
        return down.overlap_map(product, ctx)

    def pair_map(self):
        """s_d K_phi(s_g q_tt + b, s_g q_ts + b) (s_u q_ts + b_u) + b_d (tokens of one norm q_tt)."""
        gate, up, down = (_entrywise(layer) for layer in self._linears())
        product = _gated_product() * kernels.gaussian_kernel(self.activation, gate.subs(QTS, QT), gate) * up
        return down.subs(QTS, product)

    def gram_map(self, Q, params, ctx):
        """The pair map on every entry: the gate's kernel K(q, Q1) with the common norm q (tokens of equal norm)."""
        import numpy as np
        gate, up, down = self._linears()
        Q1, Q3 = gate.gram_map(Q, params, ctx), up.gram_map(Q, params, ctx)
        q1 = np.diagonal(Q1, axis1=-2, axis2=-1)
        if np.any(np.abs(q1 - q1[..., :1]) > 1e-9 * np.abs(q1[..., :1])):
            raise ValueError(f"{self} in a Gram-matrix map needs tokens of equal norm")
        return down.gram_map(ctx.kernel(self.activation)(q1[..., :1, None], Q1) * Q3, params, ctx)

    def out_features(self, d):
        return d

    def torch_init(self, d, n_seeds, generator, dtype, device):
        gate, up, down = self._linears()
        d_ff = gate.out_features(d)
        return {"gate": gate.torch_init(d, n_seeds, generator, dtype, device),
                "up": up.torch_init(d, n_seeds, generator, dtype, device),
                "down": down.torch_init(d_ff, n_seeds, generator, dtype, device)}

    def torch_forward(self, x, weights, params):
        gate, up, down = self._linears()
        h = Activation(self.activation).torch_forward(gate.torch_forward(x, weights["gate"], params), {}, params)
        return down.torch_forward(h * up.torch_forward(x, weights["up"], params), weights["down"], params)

    def __str__(self):
        width = f", width={self.width:g}d" if self.width != 1 else ""
        return f"GatedMLP({self.activation}, gate={self.gate}, up={self.up}, down={self.down}{width})"


@dataclass(frozen=True)
class Parallel(Layer):
    """PAR(X) = sum_b F_b(X) + alpha X: attention and MLP on the same input (GPT-J, GPT-NeoX's parallel residual).

    Each branch ends linear in its own fresh zero-mean weights, so the cross terms between
    branches and with the skip vanish (Wick, as :class:`Residual`): q -> sum_b q_b + alpha^2 q,
    p -> sum_b p_b + alpha^2 p.
    """

    branches: tuple = ()
    alpha: str = "alpha_sa"
    label = "Parallel"

    def __init__(self, *branches: Layer, alpha: str = "alpha_sa"):
        if len(branches) < 2:
            raise ValueError(f"Parallel needs at least two branches, got {len(branches)}")
        for k, branch in enumerate(branches):
            if not isinstance(branch, Layer):
                raise ValueError(f"Parallel branch {k} must be a Layer, got {type(branch).__name__}")
            if not _ends_in_fresh_weights(branch):
                raise ValueError(f"Parallel branch {k} must end in a layer linear in fresh zero-mean weights "
                                 f"(Linear, SelfAttention or GatedMLP), got:\n{branch}")
        object.__setattr__(self, "branches", tuple(branches))
        object.__setattr__(self, "alpha", alpha)

    def parameters(self):
        return {self.alpha}.union(*(branch.parameters() for branch in self.branches))

    def overlap_map(self, state, ctx):
        outs = [branch.overlap_map(State(state.q, state.p), ctx) for branch in self.branches]
        a2 = parameter(self.alpha) ** 2
        cross = _cross_term()
        q_new = sum(o.q for o in outs) + a2 * state.q + 2 * parameter(self.alpha) * cross
        p_new = sum(o.p for o in outs) + a2 * state.p + 2 * parameter(self.alpha) * cross
        return ctx.emit(f"Parallel(alpha={self.alpha})", State(q_new, p_new))

    def lines(self):
        return [f"Parallel(alpha={self.alpha}):"] + ["  " + line for b in self.branches for line in b.lines()]

    def __str__(self):
        return "\n".join(self.lines())

    def __repr__(self):
        return f"Parallel({', '.join(repr(b) for b in self.branches)}, alpha={self.alpha!r})"

    def torch_init(self, d, n_seeds, generator, dtype, device):
        return {str(k): b.torch_init(d, n_seeds, generator, dtype, device) for k, b in enumerate(self.branches)}

    def torch_forward(self, x, weights, params):
        out = _value(params, self.alpha) * x
        for k, branch in enumerate(self.branches):
            out = out + branch.torch_forward(x, weights[str(k)], params)
        return out

    def gram_map(self, Q, params, ctx):
        out = _value(params, self.alpha) ** 2 * Q
        for branch in self.branches:
            out = out + branch.gram_map(Q, params, ctx)
        return out


def grouped_heads_cross_term() -> sympy.Expr:
    """(1/d) E[O^h_t . O^h'_u] for two heads h != h' whose outputs go through independent blocks W_O^h, W_O^h'
    of the output projection, whatever they share (keys, values): zero by Wick (one entry of each block)."""
    d = sympy.Symbol("d", positive=True)
    ranges = {"i": d, "j": d, "l": d}
    a = (g.tensor("W_O1", "i", "j", ranges=ranges) * g.tensor("H1", "t", "j", ranges=ranges)).summed_over("j")
    b = (g.tensor("W_O2", "i", "l", ranges=ranges) * g.tensor("H2", "u", "l", ranges=ranges)).summed_over("l")
    expr = g.wick((a * b).summed_over("i").scaled(1 / d), {"W_O1": sympy.Symbol("s1"), "W_O2": sympy.Symbol("s2")})
    return sum((t.coeff for t in expr.terms), sympy.Integer(0))


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
    return isinstance(layer, (Linear, SelfAttention, GatedMLP))


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
