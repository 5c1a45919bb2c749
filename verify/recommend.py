"""Recommend an initialisation for a real encoder: beta and alpha_sa in the trainable region, with a margin.

``recommend(model_or_config, seq_len, *, margin=0.25)`` reads the model (or a
one-layer model built from its config, repeated to the config's depth) with
:mod:`verify.adapters_read` and answers with the finite-T theory at
T = ``seq_len`` for *this* model's parameters (each layer's own variances):

1. **entropy collapse** (Result 1; at finite T the IPR criterion of
   :func:`numeric.trainability_diagram`): the first attention layer condenses
   once its IPR E sum_s A_ts^2 exceeds ``ipr_threshold`` (0.5: half of a row's
   weight on one key). Its input does not depend on beta or alpha_sa, so the limit
   ``beta_limit`` solves IPR(beta) = ipr_threshold there; the recommended beta is
   min(model's beta, beta_limit / (1 + margin)): a model already below the limit
   keeps its query/key scale. (This is the paper's first-layer criterion; the IPR of
   every layer at the recommendation is reported as ``ipr_recommended``, which a
   caller with q0 < 1, where later layers can condense first, should check.)
2. **rank collapse** (Fig. 1c): alpha_c(beta) is the smallest skip strength with
   rho after the last layer <= 1 - eps (``eps`` = 0.01 as in numeric); the
   recommended alpha_sa is max(1, (1 + margin) alpha_c): PyTorch's and BERT's
   skip (1) is kept when it already clears the margin.

``Recommendation.apply(model)`` calls :func:`verify.adapters.apply_init`; a fresh
measurement of the applied model is what the prediction ``rho_recommended`` states
(verify/test_recommend.py checks it). ``Recommendation.diagram()`` draws the
model's trainability diagram with :func:`numeric.trainability_diagram` (the
layer-pooled parameters; refused when the layers differ).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from numeric import solve
from numeric import validation
from numeric.maps import ipr_function, moment_functions

from . import adapters
from .adapters_read import LayerReading, read

#: Relative spread of a variance across layers above which the layers count as differently initialised.
HOMOGENEOUS_RTOL = 0.1
ALPHA_MAX = 1e6
#: The beta bracket of the entropy-collapse limit (the IPR runs from 1/T to 1 across it).
BETA_RANGE = (1e-4, 1e3)


@dataclass(frozen=True)
class EncoderConfig:
    """A stack of ``torch.nn.TransformerEncoderLayer`` as its constructor arguments (PyTorch's defaults)."""

    num_layers: int = 6
    d_model: int = 512
    nhead: int = 8
    dim_feedforward: int = 2048
    norm_first: bool = False
    activation: str = "relu"
    layer_norm_eps: float = 1e-5
    bias: bool = True

    #: The activations a TransformerEncoderLayer takes by name and the adapters read.
    ACTIVATIONS = ("relu", "gelu")

    def __post_init__(self):
        """Each field checked at the boundary: a ValueError naming it, not an error from deep inside torch."""
        validation.count("num_layers", self.num_layers)
        validation.count("d_model", self.d_model)
        validation.count("nhead", self.nhead)
        validation.count("dim_feedforward", self.dim_feedforward)
        validation.divides("nhead", self.nhead, "d_model", self.d_model)
        if self.activation not in self.ACTIVATIONS:
            raise ValueError(f"activation must be one of {self.ACTIVATIONS} (the stock layer's names the adapters "
                             f"read), got {self.activation!r}")
        validation.nonnegative("layer_norm_eps", self.layer_norm_eps)
        for name in ("norm_first", "bias"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def build(self, seed: int = 0, num_layers: int | None = None) -> list:
        """The layers at PyTorch's default initialisation, drawn from ``torch.manual_seed(seed)``, in eval mode."""
        with torch.random.fork_rng():
            torch.manual_seed(int(seed))
            return [nn.TransformerEncoderLayer(self.d_model, self.nhead, self.dim_feedforward, dropout=0.0,
                                               activation=self.activation, layer_norm_eps=self.layer_norm_eps,
                                               batch_first=True, norm_first=self.norm_first, bias=self.bias).eval()
                    for _ in range(self.num_layers if num_layers is None else num_layers)]


def build_bert(config, seed: int = 0, num_layers: int | None = None):
    """``transformers.BertModel(config)`` at its own initialisation (std ``initializer_range``), eval mode, seeded."""
    from transformers import BertModel

    if num_layers is not None:
        config = type(config).from_dict({**config.to_dict(), "num_hidden_layers": int(num_layers)})
    with torch.random.fork_rng():
        torch.manual_seed(int(seed))
        return BertModel(config, add_pooling_layer=False).eval()


def _is_bert_config(obj) -> bool:
    return type(obj).__name__ == "BertConfig"


def _is_decoder(obj) -> bool:
    """A Hugging Face decoder (GPT-2, LLaMA family) or its config: answered by :mod:`verify.recommend_decoders`."""
    from . import adapters_decoders, recommend_decoders
    return recommend_decoders.is_decoder_config(obj) or adapters_decoders.is_decoder(obj)


def readings_of(model_or_config, seed: int = 0) -> list[LayerReading]:
    """Per-layer readings: of the model's layers, or of one layer built from a config, repeated to its depth."""
    if isinstance(model_or_config, dict):
        model_or_config = EncoderConfig(**model_or_config)
    if isinstance(model_or_config, EncoderConfig):
        one = read(model_or_config.build(seed, num_layers=1))[0]
        return [one] * model_or_config.num_layers
    if _is_bert_config(model_or_config):
        one = read(build_bert(model_or_config, seed, num_layers=1))[0]
        return [one] * model_or_config.num_hidden_layers
    return read(model_or_config)


def default_rho0(model_or_config, seq_len: int, seed: int = 0) -> float:
    """rho0 of the stack's usual input: BERT's embedding output at random token ids, else 0 (orthogonal tokens)."""
    if _is_bert_config(model_or_config):
        return adapters.embedding_state(build_bert(model_or_config, seed, num_layers=1), seq_len)[1]
    if hasattr(model_or_config, "embeddings") and hasattr(model_or_config, "encoder"):
        return adapters.embedding_state(model_or_config, seq_len)[1]
    return 0.0


# --- the two limits ---------------------------------------------------------------------

def width_of(readings, finite_width: bool):
    """The first attention layer's width for the finite-width theory (issue 19;
    :func:`verify.adapters.attention_width`: normalized tokens in a pre-LN stack), None at infinite width."""
    return adapters.attention_width(readings, 0, finite_width)


def ipr_of(T: int, width):
    """E sum_s A_ts^2 as a function of (beta, q, p, T): finite T, at finite width where ``width`` is given
    (:func:`numeric.maps.ipr_function`)."""
    return moment_functions(T)[0] if width is None else ipr_function(T, width)


def entropy_limit(readings, T: int, *, rho0: float, q0: float = 1.0, ipr_threshold: float = 0.5,
                  finite_width: bool = False) -> float:
    """The beta at which the first attention layer's finite-T IPR reaches ``ipr_threshold``."""
    run = adapters.theory_run(readings[:1], T, rho0=rho0, q0=q0, finite_width=finite_width)
    q_att, p_att, _ = run.attention[0]
    Y2 = ipr_of(T, width_of(readings, finite_width))

    def excess(log_beta):
        return Y2(np.exp(log_beta), float(q_att), float(p_att), T) - ipr_threshold

    try:
        log_beta = solve.increasing_root(excess, math.log(BETA_RANGE[0]), math.log(BETA_RANGE[1]),
                                         name="entropy-collapse limit")
    except ValueError:
        raise ValueError(f"the first attention layer's IPR does not cross ipr_threshold = {ipr_threshold:g} for "
                         f"beta in {BETA_RANGE} (its input overlap p/q = {float(p_att) / float(q_att):.6g} at "
                         f"T = {T}): no entropy-collapse limit to recommend against") from None
    return math.exp(log_beta)


def final_rho(readings, T: int, alpha_sa, beta, *, rho0: float, q0: float = 1.0, finite_width: bool = False):
    """rho after the last layer with skip strength ``alpha_sa`` and every head at ``beta`` (broadcasts)."""
    return adapters.theory_run(readings, T, rho0=rho0, q0=q0, alpha_sa=alpha_sa, beta=beta,
                               finite_width=finite_width).rho[-1]


def critical_alpha(readings, T: int, beta: float, *, eps: float = 0.01, rho0: float, q0: float = 1.0,
                   finite_width: bool = False) -> float:
    """Smallest alpha_sa with rho_L <= 1 - eps for this stack (0 if any works, inf if none up to ALPHA_MAX).

    rho_L decreases with alpha_sa (a stronger skip keeps more of the input), so the root finder of
    :func:`numeric.critical_alpha`, :func:`numeric.solve.smallest_alpha`, finds it.
    """
    def gap(alpha):
        return final_rho(readings, T, alpha, beta, rho0=rho0, q0=q0, finite_width=finite_width) - (1.0 - eps)

    return solve.smallest_alpha(gap, (), rtol=1e-8, alpha_max=ALPHA_MAX)


def max_ipr(run, T: int, readings, finite_width: bool = False) -> float:
    """The largest finite-T IPR over all heads of all attention layers of a theory run of ``readings`` (at each
    layer's own width, :func:`verify.adapters.attention_width`, where ``finite_width``)."""
    return max(float(np.max(ipr_of(T, adapters.attention_width(readings, index, finite_width))(b, q, p, T)))
               for index, (q, p, betas) in enumerate(run.attention) for b in betas)


# --- the recommendation -------------------------------------------------------------------

class Answer:
    """What an encoder's and a decoder's recommendation share: whether applying it changes the model, its
    JSON-ready summary and its plot (subclasses are dataclasses with beta, beta_model, alpha_sa, margin and a
    ``diagram`` method)."""

    #: Fields left out of :meth:`summary` (the model's readings and other large inputs).
    HIDDEN = ("readings",)

    @property
    def changes_model(self) -> bool:
        """Whether :meth:`apply` changes anything beyond equalising the heads' query/key scales."""
        return self.alpha_sa != 1.0 or not math.isclose(self.beta, self.beta_model, rel_tol=1e-12)

    def summary(self) -> dict:
        """JSON-ready numbers (profiles as lists)."""
        out = {k: v for k, v in asdict(self).items() if k not in self.HIDDEN}
        for k, v in out.items():
            if isinstance(v, np.ndarray):
                out[k] = [float(x) for x in v]
        out["changes_model"] = self.changes_model
        return out

    def plot(self, path=None, betas=None, alphas=None):
        """:meth:`diagram` drawn with the model as initialised (beta_model, 1) and the recommendation marked
        (:func:`plot_marked`); returns the matplotlib figure (saved to ``path`` if given)."""
        return plot_marked(self, self.diagram(betas, alphas), path)


@dataclass
class Recommendation(Answer):
    """beta and alpha_sa for a model at T = seq_len, what they are now, and the predicted profiles.

    ``beta_model``: the model's query/key scale (mean over heads and layers);
    ``beta_limit``: entropy-collapse limit; ``alpha_critical``: rank-collapse limit
    at the recommended beta; ``rho_model`` / ``rho_recommended``: predicted profiles
    (L+1,) as initialised and after :meth:`apply`; ``ipr_*``: the largest IPR.
    """

    beta: float
    alpha_sa: float
    seq_len: int
    margin: float
    eps: float
    ipr_threshold: float
    depth: int
    arch: str
    rho0: float
    beta_model: float
    beta_limit: float
    alpha_critical: float
    rho_model: np.ndarray
    rho_recommended: np.ndarray
    ipr_model: float
    ipr_recommended: float
    readings: list = field(repr=False, default_factory=list)
    finite_width: bool = False

    def apply(self, model):
        """Rescale ``model`` in place (:func:`verify.adapters.apply_init`); return it."""
        return adapters.apply_init(model, self.beta, self.alpha_sa, seq_len=self.seq_len)

    def diagram(self, betas=None, alphas=None):
        """The model's trainability diagram at T = seq_len (numeric.trainability_diagram, criterion "any")."""
        import numeric
        from numeric.profile import width_arguments

        values, spec = pooled_values(self.readings), adapters.spec_of(self.readings[0])
        betas = np.linspace(0.05, 3.0, 64) if betas is None else betas
        alphas = np.linspace(0.0, max(4.0, 2 * self.alpha_sa), 64) if alphas is None else alphas
        width = width_of(self.readings, self.finite_width)
        return numeric.trainability_diagram(spec, self.depth, betas=betas, alphas=alphas, eps=self.eps,
                                            T=self.seq_len, rho0=self.rho0, criterion="any",
                                            ipr_threshold=self.ipr_threshold, alpha_mlp=1.0,
                                            **width_arguments(width), **values)

    def __str__(self) -> str:
        L, T = self.depth, self.seq_len
        r = self.readings[0]
        head = (f"# {r.kind} encoder, {self.arch}, {r.activation}, {L} layers, d_model {r.d}, {r.heads} heads, "
                f"d_ff {r.d_ff}, T = {T}, rho0 = {self.rho0:.3g}"
                + (f", finite width (d = {r.d}, d_head = {r.d // r.heads})" if self.finite_width else ""))
        lines = [head,
                 f"as initialised:  beta = {self.beta_model:.4g}, alpha_sa = 1 -> rho after {L} layers "
                 f"{self.rho_model[-1]:.4f}, largest IPR {self.ipr_model:.3g}",
                 f"entropy collapse: beta <= {self.beta_limit:.4g} (first attention layer's IPR reaches "
                 f"{self.ipr_threshold:g} at T = {T})",
                 f"rank collapse:    alpha_sa >= {self.alpha_critical:.4g} at beta = {self.beta:.4g} "
                 f"(rho after {L} layers <= {1 - self.eps:g})",
                 f"recommended (margin {self.margin:.0%}): beta = {self.beta:.4g}, alpha_sa = {self.alpha_sa:.4g} "
                 f"-> rho after {L} layers {self.rho_recommended[-1]:.4f}, largest IPR {self.ipr_recommended:.3g}"]
        if not self.changes_model:
            lines.append("the model is already in the trainable region with this margin: nothing to change")
        else:
            lines.append(f"apply: verify.adapters.apply_init(model, beta={self.beta:.6g}, alpha_sa={self.alpha_sa:.6g}, "
                         f"seq_len={T})")
        return "\n".join(lines)


def pooled_values(readings) -> dict:
    """The layer-mean of every variance (beta and the skip strengths excluded); refused if the layers differ."""
    table = {k: np.array([r.values()[k] for r in readings]) for k in readings[0].values()}
    structures = {r.structure() for r in readings}
    if len(structures) > 1:
        raise ValueError("the layers differ in structure (norm placement, activation, eps, heads or width)")
    for name, column in table.items():
        mean = column.mean()
        if mean > 0 and np.max(np.abs(column - mean)) > HOMOGENEOUS_RTOL * mean:
            raise ValueError(f"{name} differs across layers by more than {HOMOGENEOUS_RTOL:.0%} (e.g. after "
                             "apply_init on a pre-LN stack): a single diagram does not describe this stack")
    return {k: float(v.mean()) for k, v in table.items()}


def plot_marked(result, diagram, path=None):
    """``diagram`` drawn with the model as initialised (``result.beta_model``, 1) and the recommendation
    (``result.beta``, ``result.alpha_sa``) marked: the one drawing of an encoder's and a decoder's answer."""
    from numeric.plotting import save

    fig = diagram.plot()
    ax = fig.axes[0]
    legend = ax.get_legend()
    handles = list(legend.legend_handles) if legend is not None else []
    handles += ax.plot([result.beta_model], [1.0], "o", ms=7, mfc="white", mec="k", label="as initialised")
    handles += ax.plot([result.beta], [result.alpha_sa], "*", ms=13, color="k",
                       label=f"recommended ({result.margin:.0%} margin)")
    ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.9)
    return save(fig, path)


def recommend(model_or_config, seq_len: int, *, margin: float = 0.25, eps: float = 0.01, rho0: float | None = None,
              q0: float = 1.0, ipr_threshold: float = 0.5, seed: int = 0, finite_width: bool = False) -> Recommendation:
    """beta and alpha_sa that put ``model_or_config`` in the trainable region at T = ``seq_len`` (module docstring).

    ``model_or_config``: a model the adapters read, an :class:`EncoderConfig` (or
    its dict), or a transformers ``BertConfig``; a Hugging Face decoder or its config (GPT-2, the LLaMA family)
    is answered by :func:`verify.recommend_decoders.recommend`. ``rho0``: the inputs' cosine
    similarity (default: :func:`default_rho0`). ``seed``: the draw of the layer
    built from a config. ``finite_width``: every limit and profile at the model's own width and head size
    (issue 19's effective moments and finite-width IPR; decoders: GPT-2, the causal tables of
    :mod:`numeric.causal_width`).
    """
    if _is_decoder(model_or_config):
        if rho0 is not None or q0 != 1.0:
            raise ValueError("rho0 / q0: a decoder starts from its own embedding statistics; do not pass them")
        from . import recommend_decoders
        return recommend_decoders.recommend(model_or_config, seq_len, margin=margin, eps=eps,
                                            ipr_threshold=ipr_threshold, finite_width=finite_width)
    T = validation.sequence_length(seq_len, name="seq_len", infinite=False)
    if not (0 < margin < 10):
        raise ValueError(f"margin must lie in (0, 10) (a relative margin), got {margin!r}")
    if not (0 < eps < 1):
        raise ValueError(f"eps must lie in (0, 1), got {eps!r}")
    if not (1.0 / T < ipr_threshold < 1):
        raise ValueError(f"ipr_threshold must lie in (1/T, 1) = ({1.0 / T:.4g}, 1) (the IPR of a row runs from 1/T, "
                         f"uniform, to 1, one key), got {ipr_threshold!r}")
    validation.positive("q0", q0)
    if rho0 is not None and validation.rho0(rho0, T) >= 1 - eps:
        raise ValueError(f"rho0 must be < 1 - eps = {1 - eps:g}: inputs at rho0 >= 1 - eps are rank-collapsed "
                         f"before the first layer, got {rho0!r}")
    readings = readings_of(model_or_config, seed)
    rho0 = default_rho0(model_or_config, T, seed) if rho0 is None else float(rho0)
    beta_model = float(np.mean([r.beta(T).mean() for r in readings]))
    fw = dict(finite_width=bool(finite_width))
    beta_limit = entropy_limit(readings, T, rho0=rho0, q0=q0, ipr_threshold=ipr_threshold, **fw)
    beta = min(beta_model, beta_limit / (1.0 + margin))
    alpha_c = critical_alpha(readings, T, beta, eps=eps, rho0=rho0, q0=q0, **fw)
    if not math.isfinite(alpha_c):
        raise ValueError(f"no alpha_sa up to {ALPHA_MAX:g} keeps rho after {len(readings)} layers below 1 - {eps:g}: "
                         "the MLP residuals alone collapse the tokens at this depth")
    alpha = max(1.0, (1.0 + margin) * alpha_c)
    as_is = adapters.theory_run(readings, T, rho0=rho0, q0=q0, **fw)
    after = adapters.theory_run(readings, T, rho0=rho0, q0=q0, alpha_sa=alpha, beta=beta, **fw)
    return Recommendation(beta=beta, alpha_sa=alpha, seq_len=T, margin=float(margin), eps=float(eps),
                          ipr_threshold=float(ipr_threshold), depth=len(readings),
                          arch="pre-ln" if readings[0].norm_first else "post-ln", rho0=rho0,
                          beta_model=beta_model, beta_limit=beta_limit, alpha_critical=alpha_c,
                          rho_model=as_is.rho, rho_recommended=after.rho,
                          ipr_model=max_ipr(as_is, T, readings, finite_width),
                          ipr_recommended=max_ipr(after, T, readings, finite_width),
                          readings=[r.without_handles() for r in readings],
                          finite_width=bool(finite_width))


# --- check: measure before and after -------------------------------------------------------

@dataclass
class Check:
    """A whole model's profiles before and after :meth:`Recommendation.apply`: theory and one measurement."""

    recommendation: Recommendation
    theory_before: np.ndarray
    measured_before: np.ndarray
    theory_after: np.ndarray
    measured_after: np.ndarray

    def measured(self) -> dict:
        """JSON-ready profiles."""
        return {k: [float(x) for x in getattr(self, k)]
                for k in ("theory_before", "measured_before", "theory_after", "measured_after")}

    def table(self, rows: int = 13) -> str:
        """The four profiles at about ``rows`` layers (every layer for short stacks)."""
        depth = len(self.theory_before) - 1
        step = max(1, math.ceil(depth / (rows - 1)))
        layers = sorted(set(range(0, depth + 1, step)) | {depth})
        r = self.recommendation
        lines = [f"# rho by layer: as initialised (alpha_sa = 1, beta = {r.beta_model:.4g}) and after "
                 f"apply_init (alpha_sa = {r.alpha_sa:.4g}, beta = {r.beta:.4g}); one measurement, T = {r.seq_len}",
                 f"{'layer':>5}  {'theory':>8}  {'measured':>8}  |  {'theory':>8}  {'measured':>8}"]
        for k in layers:
            lines.append(f"{k:>5}  {self.theory_before[k]:>8.4f}  {self.measured_before[k]:>8.4f}  |  "
                         f"{self.theory_after[k]:>8.4f}  {self.measured_after[k]:>8.4f}")
        return "\n".join(lines)


def build(config, seed: int = 0):
    """The whole model of an EncoderConfig (list of layers) or a BertConfig (BertModel), seeded."""
    if _is_bert_config(config):
        return build_bert(config, seed)
    return config.build(seed)


def inputs_for(model, seq_len: int, *, batch: int = 2, rho0: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Random inputs: token ids uniform over the vocabulary for a BertModel, else (batch, T, d) tokens
    with |X_t|^2/d = 1 and cosine similarity rho0 (an exact random frame when T + 1 <= d)."""
    from .torch_view import tokens

    generator = torch.Generator().manual_seed(int(seed))
    if hasattr(model, "embeddings"):
        vocab = model.embeddings.word_embeddings.num_embeddings
        return torch.randint(0, vocab, (batch, seq_len), generator=generator)
    d = read(model, independent=False)[0].d
    kind = "frame" if seq_len + 1 <= d else "gaussian"
    return tokens(1, seq_len, d, batch=(batch,), kind=kind, rho0=rho0, generator=generator, dtype=torch.float32)[0]


def check(config, seq_len: int, *, batch: int = 2, seed: int = 0, **options) -> Check:
    """Build the whole model, recommend for it, and measure its profile before and after applying."""
    if _is_decoder(config):
        from . import recommend_decoders
        return recommend_decoders.check(config, seq_len, batch=batch, seed=seed, **options)
    model = build(config, seed)
    result = recommend(model, seq_len, seed=seed, **options)
    x = inputs_for(model, seq_len, batch=batch, rho0=result.rho0, seed=seed + 1)
    before = adapters.measure_cosine_profile(model, x)
    result.apply(model)
    after = adapters.measure_cosine_profile(model, x)
    theory_after = adapters.predict_cosine_profile(model, seq_len, rho0=result.rho0, finite_width=result.finite_width)
    return Check(result, result.rho_model, before, theory_after, after)
