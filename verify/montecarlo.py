"""Monte Carlo measurements of the theory's quantities, each with a standard error over seeds.

Every function draws ``seeds`` independent initialisations in one batched
torch program (:mod:`verify.torch_view`), reduces each to one number per seed
(or one row of numbers), and returns an :class:`Estimate`: the per-seed
samples, their mean and the standard error of the mean. Seeds are the
independent units; everything inside one seed (tokens, rows, batch) is
averaged first.

Definitions, matching the theory (docs/design.md, paper eq. 1):

- per seed, q̂ = mean_t |X_t|^2/d and p̂ = mean_{t != s} X_t.X_s/d over the
  tokens of its sequences (averaged over its batch). The theory's ρ = p/q is
  the ratio of the *expected* overlap to the expected norm (B.6.1:
  ρ = E<q_ts>/E<q_tt>, E over the initialisation), so ρ̂ = mean(p̂)/mean(q̂)
  over the seeds — a ratio of averages, not an average of per-pair cosines nor
  of per-seed ratios (whose O(1/d) bias would not shrink with more seeds). Its
  standard error is the delta method's: :func:`ratio_estimate` stores the
  linearised per-seed samples ρ̂ + (p̂_i − ρ̂ q̂_i)/mean(q̂), whose mean is ρ̂;
- the attention moments of a row t (eqs. 2, 22): Y2 = Σ_s A_ts², Y3 = Σ_s A_ts³,
  (Y2)² and the pair term Σ_s A_ts A_t's (t != t'), averaged over the rows
  (pairs of rows) of one attention matrix;
- the query gradient (B.4-B.5): ||∂L/∂W_Q||_F² for L = Σ_{t,i} G_ti S(X)_ti,
  G i.i.d. N(0, 1), by autograd, with respect to W_Q itself (entries of
  variance β √(ln T)/d), not its unit-variance parametrisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from derive.layers import SelfAttention

from numeric import validation as check
from numeric.causal import positions

from .torch_view import build, iter_blocks, make_generator, resolve_device, resolve_dtype
from .torch_view import tokens as input_tokens

#: Most score entries (rows x T) held at once when sampling Gaussian scores.
GAUSSIAN_CHUNK = 1 << 22


# --- estimates ------------------------------------------------------------------------

@dataclass(frozen=True)
class Estimate:
    """Per-seed ``samples`` (n, *shape); ``mean`` and ``se`` = std/√n over the n seeds."""

    samples: np.ndarray

    @classmethod
    def of(cls, values) -> "Estimate":
        """From a tensor or array whose first axis runs over independent seeds."""
        if isinstance(values, torch.Tensor):
            values = values.detach().to("cpu", torch.float64).numpy()
        return cls(np.asarray(values, dtype=np.float64))

    @property
    def n(self) -> int:
        return int(self.samples.shape[0])

    @property
    def mean(self):
        return _scalar(self.samples.mean(axis=0))

    @property
    def se(self):
        if self.n < 2:
            return _scalar(np.full(self.samples.shape[1:], np.nan))
        return _scalar(self.samples.std(axis=0, ddof=1) / math.sqrt(self.n))

    def __getitem__(self, index) -> "Estimate":
        """The estimate of one entry (or slice) of a vector quantity, e.g. one block of a profile."""
        return Estimate(self.samples[:, index])

    def __repr__(self):
        return f"Estimate(mean={self.mean!r}, se={self.se!r}, n={self.n})"


def _scalar(x):
    return float(x) if np.ndim(x) == 0 else x


@dataclass(frozen=True)
class Profile:
    """q, p and ρ = p/q before the first block and after each block: Estimates of shape (depth + 1,)."""

    q: Estimate
    p: Estimate
    rho: Estimate


@dataclass(frozen=True)
class Moments:
    """Attention moments of one row (eqs. 2, 22; B.5): E Y2, E Y3, E (Y2)², E Σ_s A_ts A_t's."""

    ipr2: Estimate
    ipr3: Estimate
    ipr_square: Estimate
    pair: Estimate


@dataclass(frozen=True)
class ScoreStatistics:
    """Second moments of the scores a_ts (eq. 9 with eq. 6's convention).

    ``var``: E a_ts²; ``same_row``: E a_ts a_ts' (s != s'); ``same_column``:
    E a_ts a_t's (t != t'); ``disjoint``: E a_ts a_t's' (t != t', s != s').
    """

    var: Estimate
    same_row: Estimate
    same_column: Estimate
    disjoint: Estimate


# --- overlaps -------------------------------------------------------------------------

def overlap_samples(x: torch.Tensor):
    """Per-seed (q̂, p̂) of tokens x (seeds, [batch...,] T, d), averaged over the batch (module docstring).

    p̂ uses |Σ_t X_t|² = Σ_t |X_t|² + Σ_{t != s} X_t.X_s, so it costs O(T d).
    """
    T, d = x.shape[-2], x.shape[-1]
    norms = x.pow(2).sum(-1)
    q = norms.mean(-1) / d
    p = (x.sum(-2).pow(2).sum(-1) - norms.sum(-1)) / (d * T * (T - 1))
    batch_dims = tuple(range(1, q.dim()))
    if batch_dims:
        q, p = q.mean(batch_dims), p.mean(batch_dims)
    return q, p


def _check_sizes(T, d, seeds):
    return check.sequence_length(T, infinite=False), check.count("d", d), check.count("seeds", seeds)


def _setup(device, dtype, seed):
    device = resolve_device(device)
    return device, resolve_dtype(dtype), make_generator(seed, None, device)


def profile(arch, depth: int, *, beta: float, T: int, d: int, seeds: int, rho0: float = 0.0, q0: float = 1.0,
            activation: str = "relu", heads: int = 1, batch: int = 1, kind: str = "basis", device=None,
            dtype=torch.float64, seed: int = 0, mask=None, tokens=None, **params) -> Profile:
    """q, p, ρ before block 1 and after each of ``depth`` blocks of ``arch`` (compare numeric.cosine_profile).

    Blocks are sampled one at a time (:func:`verify.torch_view.iter_blocks`), so
    memory holds one block's weights whatever the depth.

    Inputs have norm ``q0`` (the theory's 1) and cosine similarity ``rho0`` (:func:`verify.torch_view.tokens`);
    ``batch`` sequences per seed share the seed's weights. ``params``: alpha_sa,
    alpha_mlp, sigma_v2, sigma_w2, sigma_b2. ``mask``: a named architecture's attention mask ("causal",
    "sliding:W"); ``tokens``: q and p over those positions only (None, "late", a slice or an index array).
    """
    T, d, seeds = _check_sizes(T, d, seeds)
    batch = check.count("batch", batch)
    device, dtype, generator = _setup(device, dtype, seed)
    x = input_tokens(seeds, T, d, rho0=rho0, q0=q0, batch=(batch,) if batch > 1 else (), kind=kind, device=device,
               dtype=dtype, generator=generator)
    blocks = iter_blocks(arch, d, seeds=seeds, depth=depth, params={"beta": beta, **params}, activation=activation,
                         heads=heads, device=device, dtype=dtype, generator=generator, mask=mask)
    index = None if tokens is None else torch.as_tensor(positions(tokens, T), device=device)

    def read(x):
        return overlap_samples(x if index is None else x[..., index, :])

    q, p = read(x)
    qs, ps = [q], [p]
    with torch.no_grad():
        for block in blocks:
            x = block(x)
            q, p = read(x)
            qs.append(q)
            ps.append(p)
    q, p = Estimate.of(torch.stack(qs, dim=1)), Estimate.of(torch.stack(ps, dim=1))
    return Profile(q, p, ratio_estimate(p, q))


def position_profile(arch, depth: int, *, beta: float, T: int, d: int, seeds: int, mask="causal",
                     activation: str = "relu", batch: int = 1, kind: str = "basis", device=None,
                     dtype=torch.float64, seed: int = 0, **params) -> Estimate:
    """rho_t of each position with the others (numeric.position_profile's reading), before block 1 and after
    each block: an Estimate of shape (depth + 1, T) over the seeds, each seed's Gram matrix averaged over its
    ``batch`` sequences first."""
    from numeric.causal import by_position

    T, d, seeds = _check_sizes(T, d, seeds)
    device, dtype, generator = _setup(device, dtype, seed)
    x = input_tokens(seeds, T, d, batch=(check.count("batch", batch),), kind=kind, device=device, dtype=dtype,
                     generator=generator)
    blocks = iter_blocks(arch, d, seeds=seeds, depth=depth, params={"beta": beta, **params}, activation=activation,
                         device=device, dtype=dtype, generator=generator, mask=mask)

    def read(x):
        gram = (x @ x.transpose(-1, -2) / d).mean(dim=1)
        return by_position(gram.to("cpu", torch.float64).numpy())

    out = [read(x)]
    with torch.no_grad():
        for block in blocks:
            x = block(x)
            out.append(read(x))
    return Estimate(np.stack(out, axis=1))


def ratio_estimate(numerator: Estimate, denominator: Estimate) -> Estimate:
    """E[num]/E[den] as ratio of seed means, with delta-method samples (module docstring)."""
    mean_den = denominator.samples.mean(axis=0)
    ratio = numerator.samples.mean(axis=0) / mean_den
    return Estimate(ratio + (numerator.samples - ratio * denominator.samples) / mean_den)


# --- attention alone ------------------------------------------------------------------

def _attention_layer(beta, T, d, seeds, q, p, heads, sigma_v2, gain, device, dtype, seed, kind="basis"):
    """(spec, stack of one attention layer, input tokens with overlaps (q, p), generator).

    ``kind="basis"`` gives the exact mean-field overlaps (needs T + 1 <= d);
    ``"gaussian"`` i.i.d. Gaussian tokens, overlaps exact only in expectation (any T).
    """
    T, d, seeds = _check_sizes(T, d, seeds)
    if not (q > 0 and 0.0 <= p <= q):
        raise ValueError(f"need q > 0 and 0 <= p <= q (tokens with a common component), got q={q}, p={p}")
    device, dtype, generator = _setup(device, dtype, seed)
    spec = SelfAttention(gain=gain, heads=check.count("heads", heads))
    stack = build(spec, d, seeds=seeds, params={"beta": beta, "sigma_v2": sigma_v2}, device=device, dtype=dtype,
                  generator=generator)
    x = input_tokens(seeds, T, d, rho0=p / q, q0=q, kind=kind, device=device, dtype=dtype, generator=generator)
    return spec, stack, x, generator


def row_moments(A: torch.Tensor):
    """Per-matrix (Y2, Y3, Y2², pair) of attention rows A (..., rows, T), averaged over rows / row pairs.

    The pair term uses Σ_{t != t'} Σ_s A_ts A_t's = Σ_s (Σ_t A_ts)² - Σ_t Σ_s A_ts².
    """
    n = A.shape[-2]
    y2 = A.pow(2).sum(-1)
    y3 = A.pow(3).sum(-1)
    pair = (A.sum(-2).pow(2).sum(-1) - y2.sum(-1)) / (n * (n - 1))
    return y2.mean(-1), y3.mean(-1), y2.pow(2).mean(-1), pair


def _moments(values) -> Moments:
    return Moments(*(Estimate.of(v.reshape(-1)) for v in values))


def attention_moments(beta: float, *, T: int, d: int, seeds: int, q: float = 1.0, p: float = 0.0, heads: int = 1,
                      device=None, dtype=torch.float64, seed: int = 0) -> Moments:
    """Row moments of a real attention layer (X, W_Q, W_K) fed exact tokens with overlaps (q, p).

    Every (seed, head) is an independent sample: the heads use disjoint rows
    of W_Q, W_K and the input Gram matrix is the same in every seed.
    """
    spec, stack, x, _ = _attention_layer(beta, T, d, seeds, q, p, heads, 1.0, False, device, dtype, seed)
    with torch.no_grad():
        A = spec.torch_attention(x, stack.blocks[0].layer_weights(), stack.params)
    return _moments(row_moments(A))


def gaussian_moments(beta: float, *, T: int, samples: int, q: float = 1.0, p: float = 0.0, rows: int = 32,
                     device=None, dtype=torch.float64, seed: int = 0) -> Moments:
    """Row moments from Gaussian scores with the exact covariance of eq. (9) (cheap; any T).

    With Cov(a_ts, a_kl) = β² ln T q_tk q_sl and q_ts = p + (q - p) δ_ts, a row
    is a row constant plus b x_ts with b = β √(ln T q (q - p)) and
    x_ts = √c v_s + √(1 - c) g_ts, c = p/q, v and g i.i.d. N(0, 1): rows are
    i.i.d. N(0, 1) within, and two rows t != t' correlate by c through the
    shared v_s (numeric/finite_t.py). The row constant cancels in the softmax.
    Each sample is ``rows`` rows sharing one v; its moments are averaged over
    its rows and its pair term over its row pairs, as for a real attention
    matrix. (One pair per sample would make the pair estimate heavy-tailed: near
    β_c, much of E Σ_s A_ts A_t's comes from the rare rows that condense on the
    same key, probability ~1/T per pair.)
    """
    T, samples = check.sequence_length(T, infinite=False), check.count("samples", samples)
    rows = check.count("rows", rows, minimum=2)
    if not (q > 0 and 0.0 <= p <= q):
        raise ValueError(f"need q > 0 and 0 <= p <= q, got q={q}, p={p}")
    device, dtype, generator = _setup(device, dtype, seed)
    b, c = beta * math.sqrt(math.log(T) * q * (q - p)), p / q
    chunk = max(1, GAUSSIAN_CHUNK // (T * rows))
    parts = []
    for start in range(0, samples, chunk):
        n = min(chunk, samples - start)
        shared = torch.randn(n, 1, T, generator=generator, dtype=dtype, device=device)
        own = torch.randn(n, rows, T, generator=generator, dtype=dtype, device=device)
        A = torch.softmax(b * (math.sqrt(c) * shared + math.sqrt(1.0 - c) * own), dim=-1)
        parts.append(torch.stack(row_moments(A), -1))
    return _moments(torch.cat(parts).unbind(-1))


def attention_overlaps(beta: float, *, T: int, d: int, seeds: int, q: float = 1.0, p: float = 0.0,
                       sigma_v2: float = 1.0, gain: bool = False, heads: int = 1, device=None,
                       dtype=torch.float64, seed: int = 0):
    """(q̂_S, p̂_S, moments) of S(X) for a self-attention layer alone (eqs. 7, 20-23; gain control, section 3).

    ``moments`` are the row moments of the same attention matrices (head-averaged
    per seed), so that E[q_S | A] = σ_v² (p + (q - p) Ŷ2) can be checked seed by seed.
    """
    spec, stack, x, _ = _attention_layer(beta, T, d, seeds, q, p, heads, sigma_v2, gain, device, dtype, seed)
    with torch.no_grad():
        out = stack(x)
        A = spec.torch_attention(x, stack.blocks[0].layer_weights(), stack.params)
    q_s, p_s = overlap_samples(out)
    moments = Moments(*(Estimate.of(v.mean(-1)) for v in row_moments(A)))
    return Estimate.of(q_s), Estimate.of(p_s), moments


def score_statistics(beta: float, *, T: int, d: int, seeds: int, q: float = 1.0, p: float = 0.0, heads: int = 1,
                     device=None, dtype=torch.float64, seed: int = 0) -> ScoreStatistics:
    """Second moments of the real scores a_ts (eq. 6) per (seed, head) sample.

    Theory (eq. 9 with Result 1's variances, exact at any d for exact tokens):
    E a_ts a_τσ = β² ln T q_tτ q_sσ, i.e. (var, same_row, same_column, disjoint)
    = β² ln T (q², q p, q p, p²).
    """
    spec, stack, x, _ = _attention_layer(beta, T, d, seeds, q, p, heads, 1.0, False, device, dtype, seed)
    with torch.no_grad():
        a = spec.torch_scores(x, stack.blocks[0].layer_weights(), stack.params)
    squares = a.pow(2).sum((-1, -2))
    rows, columns, total = a.sum(-1).pow(2).sum(-1), a.sum(-2).pow(2).sum(-1), a.sum((-1, -2)).pow(2)
    n = T * (T - 1)
    values = (squares / (T * T), (rows - squares) / (T * n), (columns - squares) / (T * n),
              (total - rows - columns + squares) / (n * n))
    return ScoreStatistics(*(Estimate.of(v.reshape(-1)) for v in values))


# --- the backward pass ----------------------------------------------------------------

@dataclass(frozen=True)
class QueryGradient:
    """Per-seed ||∂L/∂W_Q||_F²: by autograd for one draw of G, and its G-average in closed form."""

    autograd: Estimate
    jacobian: Estimate


def query_gradient(beta: float, *, T: int, d: int, seeds: int, q: float = 1.0, p: float = 0.0,
                   sigma_v2: float = 1.0, gain: bool = False, kind: str = "basis", device=None,
                   dtype=torch.float64, seed: int = 0) -> QueryGradient:
    """||∂L/∂W_Q||_F² per seed by autograd, L = Σ_{t,i} G_ti S(X)_ti with G i.i.d. N(0, 1) (B.4, eq. 26).

    W_Q = s Ŵ with Ŵ the unit-variance parameter and s = √(β √(ln T)/d), so
    ∂L/∂W_Q = (∂L/∂Ŵ)/s. Averaging over G gives the squared Frobenius norm of the
    Jacobian ∂S/∂W_Q (eq. 28), returned alongside from :func:`jacobian_sq_norm`
    for the same weights; averaging over seeds gives their expectation.
    ``kind``: the input tokens (:func:`verify.torch_view.tokens`); "basis" needs
    T + 1 <= d, "gaussian" (i.i.d. embeddings, as in the paper's Fig. 4) any T.
    """
    spec, stack, x, generator = _attention_layer(beta, T, d, seeds, q, p, 1, sigma_v2, gain, device, dtype, seed,
                                                 kind)
    G = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    (G * stack(x)).sum().backward()
    grad = stack.blocks[0].weights["W_Q"].grad / spec.query_key_std(T, d, stack.params)
    with torch.no_grad():
        exact = jacobian_sq_norm(spec, stack.blocks[0].layer_weights(), stack.params, x)
    return QueryGradient(Estimate.of(grad.pow(2).sum((-1, -2))), Estimate.of(exact))


def jacobian_sq_norm(spec: SelfAttention, weights: dict, params: dict, x: torch.Tensor) -> torch.Tensor:
    """||∂S/∂W_Q||_F² per seed in closed form: (1/d) Σ_t |X_t|² tr(D_t C D_t K) (B.5, eqs. 28-29).

    D_t = diag(A_t) − A_t A_tᵀ is the softmax Jacobian of row t (eq. 29), C_uu' = V_u·V_u'
    with V_u = W_V X_u, and K_ss' = k_s·k_s' with k_s = W_K X_s. Gain control subtracts a
    term independent of the scores, so the formula is the same. One head; x: (seeds, T, d).
    """
    if spec.heads != 1:
        raise ValueError("jacobian_sq_norm covers one head")
    d, T = x.shape[-1], x.shape[-2]
    A = spec.torch_attention(x, weights, params)[:, 0]
    values = x @ weights["W_V"].transpose(-1, -2) * spec.value_std(d, params)
    keys = x @ weights["W_K"].transpose(-1, -2) * spec.query_key_std(T, d, params)
    C, K = values @ values.transpose(-1, -2), keys @ keys.transpose(-1, -2)
    return (x.pow(2).sum(-1) * _softmax_trace(A, C, K)).sum(-1) / d


def _softmax_trace(A, C, K):
    """tr(D_t C D_t K) for every row a = A_t, with C, K symmetric, without forming D_t:

    a'(C∘K)a − 2 Σ_i a_i (Ca)_i (Ka)_i + (a'Ca)(a'Ka).
    """
    CA, KA = A @ C, A @ K
    hadamard = ((A @ (C * K)) * A).sum(-1)
    return hadamard - 2.0 * (A * CA * KA).sum(-1) + (CA * A).sum(-1) * (KA * A).sum(-1)
