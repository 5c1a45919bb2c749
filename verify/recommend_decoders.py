"""Recommend an initialisation for a Hugging Face decoder (GPT-2, the LLaMA family): beta and alpha_sa with a margin.

``recommend(model_or_config, seq_len)`` answers with the position-resolved theory of
:mod:`verify.adapters_decoders` at T = ``seq_len``:

- from a **built model**: every layer's actual weights (:func:`verify.adapters_decoders.read_model`) and its
  embedding statistics for random token ids;
- from a **config** (``GPT2Config``, ``LlamaConfig``, ``MistralConfig``, ``Qwen2Config``) without building it: the
  init rule (:func:`verify.adapters_decoders.config_readings`; every weight N(0, initializer_range^2), GPT-2's
  residual projections / sqrt(2 L), embeddings of that variance): a LLaMA config of hidden size 8192 and 80 layers
  is answered in seconds and a few MB.

1. **entropy collapse**: the first attention layer condenses once the mean IPR E sum_s A_ts^2 of its late rows
   (the last quarter of positions: rows with most of the context; row 0 has IPR 1 by construction) reaches
   ``ipr_threshold``; its input does not depend on beta, so the limit is a root in beta; recommended
   beta = min(model's beta, limit / (1 + margin)).
2. **rank collapse**: alpha_c, the smallest skip strength with rho (all pairs) after the last layer <= 1 - eps,
   by the one root finder :func:`numeric.solve.smallest_alpha` (bracketed first on a grid of alpha evaluated in
   one batched run); recommended alpha_sa = max(1, (1 + margin) alpha_c).

**The knob for alpha_sa** is the branch outputs, as for pre-LN encoders: both output projections of layer l (the
attention's and the MLP's) divided by alpha_sa^l is the alpha-model divided by alpha^l, exactly (the norms before
each branch and the final norm do not see the scale, eps aside). Scaling the embeddings instead sets only the
initial ratio of stream to branches, which the stream forgets as branch outputs accumulate: it is not a per-layer
skip strength, so it cannot realise the theory's alpha.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from numeric import solve
from numeric import validation

from . import adapters_decoders as ad
from .recommend import Answer

ALPHA_MAX = 1e3
#: The beta bracket of the entropy-collapse limit.
BETA_RANGE = (1e-4, 256.0)
#: The grid of alpha (geometric) evaluated in one batched run to bracket alpha_c: from 0.05 up to where the
#: alpha-model's stream, growing as alpha^L, stays within float64 (alpha^L <= 1e40: the position-resolved closure
#: multiplies overlaps, and products of streams of 1e120 overflow).
ALPHA_LOW, ALPHA_POINTS = 0.05, 6


def alpha_max(depth: int) -> float:
    """The largest skip strength the theory follows through ``depth`` layers in float64: 10^(40/L), at most 1e3."""
    return min(ALPHA_MAX, 10.0 ** (40.0 / depth))


def is_decoder_config(obj) -> bool:
    return type(obj).__name__ in ("GPT2Config", "LlamaConfig", "MistralConfig", "Qwen2Config")


def state_of(model_or_config, T: int):
    """(readings, Q0, final norm, source): a config by its init rule, a model by its weights."""
    if is_decoder_config(model_or_config):
        config = model_or_config
        readings = ad.config_readings(config)
        final = ("layernorm", float(config.layer_norm_epsilon)) if type(config).__name__ == "GPT2Config" else \
            ("rmsnorm", float(config.rms_norm_eps))
        return readings, ad.config_embedding_overlaps(config, T), final, "init rule of the config"
    base = ad.base_model(model_or_config)
    return ad.read_model(base), ad.embedding_overlaps(base, T), ad.final_norm_of(base), "weights of the model"


def first_attention_input(readings, Q0, T: int) -> np.ndarray:
    """The overlap matrix entering the first attention layer (its norm's output; it does not depend on beta)."""
    return ad.decoder_run(readings[:1], Q0, T, keep_inputs=True).attention_inputs[0]


def late_ipr(readings, Q_att, T: int, beta) -> np.ndarray:
    """The mean IPR of the first attention layer's late rows (the last quarter), every head at ``beta`` (array)."""
    from numeric.causal import late

    closure = ad.closure_of(readings[0], T)
    beta = np.asarray(beta, dtype=float)
    flat = beta.reshape(-1)
    Q = np.ascontiguousarray(np.broadcast_to(Q_att, flat.shape + (T, T)))
    return closure.row_ipr(Q, flat)[..., late(T)].mean(axis=-1).reshape(beta.shape)


def entropy_limit(readings, Q0, T: int, *, ipr_threshold: float = 0.5) -> float:
    """The beta at which the first attention layer's late rows reach ``ipr_threshold``: bracketed upward from
    beta = 1 by factors of 4 (the tree closure's grid, and so its cost, grows with beta: a bracket as wide as
    :data:`BETA_RANGE` from the start would cost minutes), then located by :func:`numeric.solve.increasing_root`."""
    Q_att = first_attention_input(readings, Q0, T)

    def excess(beta):
        return late_ipr(readings, Q_att, T, beta) - ipr_threshold

    def refuse():
        return ValueError(f"the first attention layer's late-row IPR does not cross ipr_threshold = "
                          f"{ipr_threshold:g} for beta in {BETA_RANGE} at T = {T}")

    lo, hi = BETA_RANGE[0], 1.0
    if float(excess(lo)) >= 0:
        raise refuse()
    while float(excess(hi)) <= 0:
        lo, hi = hi, 4.0 * hi
        if hi > BETA_RANGE[1]:
            raise refuse()
    return solve.increasing_root(excess, lo, hi, rtol=1e-7, name="entropy-collapse limit")


def final_rho(readings, Q0, T: int, alpha, beta) -> np.ndarray:
    """rho (all pairs) after the last layer for skip strengths ``alpha`` (array) and every head at ``beta``."""
    return ad.decoder_run(readings, Q0, T, alpha_sa=np.asarray(alpha, dtype=float), beta=beta).rho[-1]


def alpha_grid(depth: int, low: float = ALPHA_LOW) -> np.ndarray:
    """The skip strengths evaluated in one batched run to bracket alpha_c: :data:`ALPHA_POINTS` geometric from
    ``low`` to :func:`alpha_max`, and 1 (the model as it is). :func:`recommend` starts at 1/(1 + margin), below
    which alpha_c does not change the recommendation: a small alpha shrinks the stream toward the norms' eps,
    where the position-resolved kernels' equal-norm condition fails for narrow models."""
    return np.unique(np.append(np.geomspace(low, alpha_max(depth), ALPHA_POINTS), 1.0))


def critical_alpha(readings, Q0, T: int, beta: float, *, eps: float = 0.01, grid=None, needed_above: float = 0.0):
    """Smallest alpha_sa with rho_L <= 1 - eps: bracketed on :func:`alpha_grid` in one batched run (or ``grid`` =
    (alphas, rho_L at them), a run already made at this beta), then located by
    :func:`numeric.solve.smallest_alpha` inside the bracket to a relative 1e-3 (the recommendation's margin is
    25 %). A bracket whose upper end is <= ``needed_above`` is not refined (the recommendation does not depend
    on where alpha_c lies below it): its upper end is returned, an upper bound. Returns (alpha_c, exact)."""
    target, top = 1.0 - eps, alpha_max(len(readings))
    alphas, final = grid if grid is not None else (alpha_grid(len(readings)), None)
    if final is None:
        final = final_rho(readings, Q0, T, alphas, beta)
    passing = np.nonzero(np.asarray(final) - target <= 0)[0]
    if passing.size == 0:
        return math.inf, True
    lo, hi = (0.0, alphas[0]) if passing[0] == 0 else (alphas[passing[0] - 1], alphas[passing[0]])
    if hi <= needed_above:
        return float(hi), False

    def gap(alpha):
        return final_rho(readings, Q0, T, alpha, beta) - target

    return solve.smallest_alpha(gap, (), rtol=1e-3, alpha_max=top, bracket=(np.array(lo), np.array(hi))), True


def max_ipr(readings, Q0, T: int, beta) -> float:
    """The first attention layer's late-row IPR at ``beta`` (None: the heads' mean scale)."""
    if beta is None:
        beta = float(np.mean(readings[0].beta(T)))
    return float(late_ipr(readings, first_attention_input(readings, Q0, T), T, beta))


@dataclass
class DecoderRecommendation(Answer):
    """beta and alpha_sa for a decoder at T = seq_len, what they are now, and the predicted profiles (all pairs)."""

    beta: float
    alpha_sa: float
    seq_len: int
    margin: float
    eps: float
    ipr_threshold: float
    depth: int
    family: str
    source: str
    beta_model: float
    beta_limit: float
    alpha_critical: float
    alpha_critical_exact: bool
    rho_model: np.ndarray
    rho_recommended: np.ndarray
    rho_model_late: np.ndarray
    rho_recommended_late: np.ndarray
    ipr_model: float
    ipr_recommended: float
    readings: list = field(repr=False, default_factory=list)
    Q0: np.ndarray = field(repr=False, default=None)

    HIDDEN = ("readings", "Q0")

    def apply(self, model):
        """Rescale ``model`` in place (:func:`verify.adapters_decoders.apply_init`); return it."""
        return ad.apply_init(model, self.beta, self.alpha_sa, seq_len=self.seq_len)

    def diagram(self, betas=None, alphas=None):
        """The decoder's trainability diagram at T = seq_len over (beta, alpha_sa): :func:`diagram`."""
        top = max(4.0, 1.5 * self.beta_model)
        betas = np.linspace(0.05, top, 8) if betas is None else np.asarray(betas, dtype=float)
        alphas = np.linspace(0.5, max(3.0, 2 * self.alpha_sa), 8) if alphas is None else np.asarray(alphas, float)
        return diagram(self.readings, self.Q0, self.seq_len, betas=betas, alphas=alphas, eps=self.eps,
                       ipr_threshold=self.ipr_threshold, name=f"{self.family} ({self.depth} layers)")

    def __str__(self) -> str:
        L, T, r = self.depth, self.seq_len, self.readings[0]
        kv = f", {r.kv_heads} kv heads" if r.kv_heads != r.heads else ""
        rope = f", RoPE theta {r.rope:g}" if r.rope is not None else ""
        width = f", finite width (d = {r.d}, d_head = {r.head_dim})" if r.finite_width else ""
        head = (f"# {self.family} decoder ({self.source}), {L} layers, hidden {r.d}, {r.heads} heads{kv}, "
                f"d_ff {r.d_ff}, {r.activation}{' (gated)' if r.mlp == 'gated' else ''}{rope}, T = {T}{width}")
        lines = [head,
                 f"as initialised:  beta = {self.beta_model:.4g}, alpha_sa = 1 -> rho after {L} layers "
                 f"{self.rho_model[-1]:.4f} (late quarter {self.rho_model_late[-1]:.4f}), first-layer late IPR "
                 f"{self.ipr_model:.3g}",
                 f"entropy collapse: beta <= {self.beta_limit:.4g} (first attention layer's late rows reach IPR "
                 f"{self.ipr_threshold:g} at T = {T})",
                 (f"rank collapse:    alpha_sa >= {self.alpha_critical:.4g} at beta = {self.beta:.4g} "
                  f"(rho after {L} layers <= {1 - self.eps:g})" if self.alpha_critical_exact else
                  f"rank collapse:    alpha_c <= {self.alpha_critical:.4g} at beta = {self.beta:.4g} (rho after {L} "
                  f"layers <= {1 - self.eps:g} from there on; not refined: alpha_sa = 1 keeps the margin)"),
                 f"recommended (margin {self.margin:.0%}): beta = {self.beta:.4g}, alpha_sa = {self.alpha_sa:.4g} "
                 f"-> rho after {L} layers {self.rho_recommended[-1]:.4f} (late quarter "
                 f"{self.rho_recommended_late[-1]:.4f}), first-layer late IPR {self.ipr_recommended:.3g}"]
        if not self.changes_model:
            lines.append("the model is already in the trainable region with this margin: nothing to change")
        else:
            lines.append(f"apply: verify.adapters.apply_init(model, beta={self.beta:.6g}, "
                         f"alpha_sa={self.alpha_sa:.6g}, "
                         f"seq_len={T})  (query rows per head; both branch outputs of layer l / alpha_sa^l)")
        return "\n".join(lines)


def recommend(model_or_config, seq_len: int, *, margin: float = 0.25, eps: float = 0.01,
              ipr_threshold: float = 0.5, finite_width: bool = False) -> DecoderRecommendation:
    """beta and alpha_sa that put a decoder (model or config) in the trainable region at T = ``seq_len``.
    ``finite_width``: every layer at its own width and head size (:func:`verify.adapters_decoders.at_finite_width`:
    GPT-2; RoPE and sliding windows are refused by name)."""
    from numeric.causal import late

    config = model_or_config if is_decoder_config(model_or_config) else ad.base_model(model_or_config).config
    ad.check_config(config)
    T = ad.check_seq_len(config, seq_len)
    if not (0 < margin < 10):
        raise ValueError(f"margin must lie in (0, 10) (a relative margin), got {margin!r}")
    if not (0 < eps < 1):
        raise ValueError(f"eps must lie in (0, 1), got {eps!r}")
    if not (1.0 / T < ipr_threshold < 1):
        raise ValueError(f"ipr_threshold must lie in (1/T, 1) = ({1.0 / T:.4g}, 1), got {ipr_threshold!r}")
    readings, Q0, final, source = state_of(model_or_config, T)
    if finite_width:
        readings = ad.at_finite_width(readings)
    beta_model = float(np.mean([r.beta(T).mean() for r in readings]))
    beta_limit = entropy_limit(readings, Q0, T, ipr_threshold=ipr_threshold)
    beta = min(beta_model, beta_limit / (1.0 + margin))
    index = late(T)
    alphas = alpha_grid(len(readings), 1.0 / (1.0 + margin))
    grid = ad.decoder_run(readings, Q0, T, alpha_sa=alphas, beta=beta, index=index)
    alpha_c, exact = critical_alpha(readings, Q0, T, beta, eps=eps, grid=(alphas, grid.rho[-1]),
                                    needed_above=1.0 / (1.0 + margin))
    if not math.isfinite(alpha_c):
        raise ValueError(f"no alpha_sa up to {alpha_max(len(readings)):.4g} keeps rho after {len(readings)} layers "
                         f"below 1 - {eps:g}")
    alpha = max(1.0, (1.0 + margin) * alpha_c)
    # every head at one scale (a config's init rule): the grid's alpha = 1 column is the model as it is
    uniform = beta == beta_model and all(np.ptp(r.beta(T)) == 0 for r in readings)
    one = int(np.flatnonzero(alphas == 1.0)[0])
    as_is = _column(grid, one) if uniform else ad.decoder_run(readings, Q0, T, index=index)
    after = _column(grid, one) if uniform and alpha == 1.0 else \
        ad.decoder_run(readings, Q0, T, alpha_sa=alpha, beta=beta, index=index)
    return DecoderRecommendation(
        beta=beta, alpha_sa=alpha, seq_len=T, margin=float(margin), eps=float(eps), ipr_threshold=float(ipr_threshold),
        depth=len(readings), family=readings[0].family, source=source, beta_model=beta_model, beta_limit=beta_limit,
        alpha_critical=alpha_c, alpha_critical_exact=exact, rho_model=as_is.rho, rho_recommended=after.rho,
        rho_model_late=as_is.rho_tokens,
        rho_recommended_late=after.rho_tokens, ipr_model=max_ipr(readings, Q0, T, None),
        ipr_recommended=max_ipr(readings, Q0, T, beta), readings=[r.without_handles() for r in readings], Q0=Q0)


def _column(run, k: int):
    """The profiles of grid point ``k`` of a batched :func:`verify.adapters_decoders.decoder_run`."""
    return ad.DecoderRun(run.rho[:, k], run.rho_tokens[:, k], run.Q[k], [])


def diagram(readings, Q0, T: int, *, betas, alphas, eps: float = 0.01, ipr_threshold: float = 0.5, name="decoder"):
    """Phases of the decoder over (alphas x betas): a :class:`numeric.diagram.Diagram` (every head at beta).

    Rank collapse: rho (all pairs) after the last layer > 1 - eps (``late``: the last quarter's); entropy
    collapse: the first attention layer's late rows reach ``ipr_threshold``. All points run as one batch.
    """
    from numeric.causal import late
    from numeric.diagram import ENTROPY_COLLAPSE, RANK_COLLAPSE, TRAINABLE, Diagram

    betas, alphas = np.asarray(betas, dtype=float), np.asarray(alphas, dtype=float)
    validation.positive("betas", betas)
    validation.positive("alphas", alphas)
    B, A = np.meshgrid(betas, alphas)
    index = late(T)
    run = ad.decoder_run(readings, Q0, T, alpha_sa=A, beta=B, index=index)
    condensed = np.broadcast_to(late_ipr(readings, first_attention_input(readings, Q0, T), T, betas) > ipr_threshold,
                                A.shape)

    def phases(rho):
        return np.where(condensed, ENTROPY_COLLAPSE, np.where(rho > 1.0 - eps, RANK_COLLAPSE, TRAINABLE))

    boundary = np.array([critical_alpha(readings, Q0, T, float(b), eps=eps,
                                        grid=(alpha_grid(len(readings), float(alphas.min())), None),
                                        needed_above=float(alphas.min()))[0]
                         for b in betas])
    late_info = {"rho": run.rho_tokens[-1], "phase": phases(run.rho_tokens[-1]),
                 "critical_alpha": np.full(betas.size, np.nan),
                 "positions": index, "min_keys": int(index[0] + 1), "mask": readings[0].mask}
    return Diagram(betas, alphas, phases(run.rho[-1]), run.rho[-1], boundary, name, len(readings), eps, T, "first",
                   {"source": "verify.recommend_decoders"}, late=late_info)


# --- check: measure before and after ----------------------------------------------------------------------

def build(config, seed: int = 0):
    """The whole model of a decoder config at its own initialisation, seeded, eval mode, float64."""
    import torch
    from transformers import AutoModel

    with torch.random.fork_rng():
        torch.manual_seed(int(seed))
        return AutoModel.from_config(config).eval().double()


def check(config, seq_len: int, *, batch: int = 4, seed: int = 0, **options):
    """Build the whole model, recommend for it, measure before and after applying (one forward each)."""
    from .recommend import Check

    model = build(config, seed)
    result = recommend(model, seq_len, **options)
    ids = ad.random_ids(model, seq_len, batch=batch, seed=seed + 1)
    before = ad.measure(model, ids)
    result.apply(model)
    after = ad.measure(model, ids)
    theory_after = ad.predict(model, seq_len, finite_width=result.readings[0].finite_width)
    return Check(result, result.rho_model, before, theory_after, after)
