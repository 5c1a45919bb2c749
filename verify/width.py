"""Monte Carlo of one attention layer at finite width and long context (issue 19), with standard errors.

Each seed draws Gaussian tokens x_s = sqrt(p) c + sqrt(q - p) g_s (c, g_s i.i.d.
N(0, I_d); assumption A1 of :mod:`derive.finite_width`) and the weights W_Q, W_K of
``derive.layers.SelfAttention`` with ``heads`` heads (its own score convention:
:meth:`~derive.layers.SelfAttention.query_key_std`, the head split of
``_heads``). Two exact averages keep the noise small without changing the
expectation:

- over W_V (Wick's theorem; an output projection folds into sigma_v2): per head
  h, E_V |o^h_t|^2 = (d_h sigma_v2 / d) |y^h_t|^2 with y^h_t = sum_s A^h_ts x_s, so
  q_out = sigma_v2 mean_h mean_t |y^h_t|^2/d and p_out the same over pairs t != t'
  (:func:`check_value_average` compares this with the layer's own forward pass);
- the control variates p (|c|^2/d - 1) and 2 sqrt(p (q - p)) c.g_mean/d (g_mean
  the mean of the private parts over the T tokens; both of mean exactly 0, c
  being independent of the g's) are subtracted from both: the first is the
  part of every output overlap carried by the common component, the second the
  leading part of its cross term with the private ones at near-uniform weights.

Rows are processed in chunks and heads one at a time, so T = 10^4 fits in memory.
"""

from __future__ import annotations

import math

import torch

from derive.layers import SelfAttention

from .montecarlo import Estimate
from .torch_view import make_generator, resolve_device

#: Rows of one attention chunk (rows x T scores held at once).
ROWS = 1024


def _layer_sizes(d: int, heads: int) -> int:
    if d % heads:
        raise ValueError(f"d={d} is not divisible by heads={heads}")
    return d // heads


def _one_seed(x, spec, weights, params, gain):
    """(q, p) of one seed's attention output, W_V averaged: mean over heads of |y_t|^2/d and y_t.y_t'/d."""
    T, d = x.shape
    d_head = d // spec.heads
    scale = spec.query_key_std(T, d, params) ** 2 / math.sqrt(d_head)
    queries = (x @ weights["W_Q"].T).reshape(T, spec.heads, d_head).transpose(0, 1)
    keys = (x @ weights["W_K"].T).reshape(T, spec.heads, d_head).transpose(0, 1)
    mean_x = x.mean(0)
    q_sum, p_sum = 0.0, 0.0
    for h in range(spec.heads):
        norms, total = 0.0, torch.zeros(d, dtype=x.dtype, device=x.device)
        for start in range(0, T, ROWS):
            A = torch.softmax((queries[h, start:start + ROWS] @ keys[h].T) * scale, dim=-1)
            y = A @ x
            if gain:
                y = y - mean_x
            norms += float(y.pow(2).sum())
            total += y.sum(0)
        q_sum += norms / (T * d)
        p_sum += (float(total @ total) - norms) / (T * (T - 1) * d)
    return q_sum / spec.heads, p_sum / spec.heads


def overlap_samples(beta: float, *, T: int, d: int, seeds: int, q: float = 1.0, p: float = 0.0, heads: int = 1,
                    sigma_v2: float = 1.0, gain: bool = False, device=None, seed: int = 0):
    """(q_out, p_out) Estimates of one attention layer over ``seeds`` independent draws (module docstring)."""
    _layer_sizes(d, heads)
    device = resolve_device(device)
    generator = make_generator(seed, None, device)
    spec = SelfAttention(gain=gain, heads=heads)
    params = {"beta": beta, "sigma_v2": sigma_v2}
    qs, ps = [], []
    with torch.no_grad():
        for _ in range(seeds):
            c = torch.randn(d, generator=generator, dtype=torch.float64, device=device)
            g = torch.randn(T, d, generator=generator, dtype=torch.float64, device=device)
            x = math.sqrt(p) * c + math.sqrt(q - p) * g
            weights = {k: torch.randn(d, d, generator=generator, dtype=torch.float64, device=device)
                       for k in ("W_Q", "W_K")}
            q_hat, p_hat = _one_seed(x, spec, weights, params, gain)
            control = 0.0 if gain else (p * (float(c @ c) / d - 1.0)
                                        + 2.0 * math.sqrt(p * (q - p)) * float(c @ g.mean(0)) / d)
            qs.append(sigma_v2 * (q_hat - control))
            ps.append(sigma_v2 * (p_hat - control))
    return Estimate.of(qs), Estimate.of(ps)


def masked_overlap_samples(beta: float, *, rows, mask="causal", T: int, d: int, seeds: int, q: float = 1.0,
                           p: float = 0.0, heads: int = 1, sigma_v2: float = 1.0, batch: int = 256, device=None,
                           seed: int = 0, normalized: bool = False, rope: float | None = None, ipr: bool = False):
    """(q_t, q_u, p_tu) Estimates of one masked attention layer's rows t, u (numeric.finite_width.masked_overlaps).

    As :func:`overlap_samples` (Gaussian tokens, the layer's weights and score convention, W_V averaged by
    Wick's theorem), with only rows t and u computed, their scores restricted to the keys ``mask`` allows, and
    ``batch`` seeds drawn at once. Control variates of mean exactly 0: p (|c|^2/d - 1) for every entry, and the
    cross term of c with the mean private part of each row's keys, 2 sqrt(p (q - p)) c.g_K/d (the norms) and
    sqrt(p (q - p)) c.(g_Kt + g_Ku)/d (the overlap). ``normalized``: every token rescaled to |x|^2 = d q (as after
    a LayerNorm or RMSNorm; the control variates keep mean 0). ``rope``: RoPE's base theta (queries and keys of
    every head rotated to their positions, :meth:`derive.layers.SelfAttention.rotate`). ``ipr``: two more
    columns, the rows' E sum_s A_s^2 (mean over heads).
    """
    from derive import masks
    from numeric import validation as check
    from numeric.finite_width import row_pair
    d_head = _layer_sizes(d, heads)
    m = masks.parse(mask)
    if m is None:
        raise ValueError("mask must be 'causal' or 'sliding:W' (None: use overlap_samples)")
    T = check.sequence_length(T, infinite=False)
    t, u = row_pair(rows, T)
    q, p = (float(x) for x in check.overlaps(q, p, T))
    if p < 0:
        raise ValueError(f"p must be >= 0 (tokens sqrt(p) c + sqrt(q - p) g), got {p!r}")
    seeds, batch = check.count("seeds", seeds, 2), check.count("batch", batch)
    device = resolve_device(device)
    allowed = torch.as_tensor(m.allowed(T)[[t, u]], device=device)                     # (2, T)
    generator = make_generator(seed, None, device)
    spec = SelfAttention(heads=heads) if rope is None else SelfAttention(heads=heads, rope=rope, rope_dim=d_head)
    scale = spec.query_key_std(T, d, {"beta": beta}) ** 2 / math.sqrt(d_head)
    cross = math.sqrt(p * (q - p))
    out = []
    with torch.no_grad():
        for start in range(0, seeds, batch):
            n = min(batch, seeds - start)
            draw = lambda *shape: torch.randn(*shape, generator=generator, dtype=torch.float64, device=device)
            c, g = draw(n, 1, d), draw(n, T, d)
            x = math.sqrt(p) * c + math.sqrt(q - p) * g
            if normalized:
                x = x * torch.sqrt(q * d / x.pow(2).sum(-1, keepdim=True))
            W_Q, W_K = draw(n, d, d), draw(n, d, d)
            keys = (x @ W_K.transpose(1, 2)).reshape(n, T, heads, d_head).transpose(1, 2)
            if rope is None:
                queries = (x[:, [t, u]] @ W_Q.transpose(1, 2)).reshape(n, 2, heads, d_head).transpose(1, 2)
            else:
                queries = (x @ W_Q.transpose(1, 2)).reshape(n, T, heads, d_head).transpose(1, 2)
                queries, keys = spec.rotate(queries)[:, :, [t, u]], spec.rotate(keys)
            scores = (queries @ keys.transpose(-1, -2)) * scale                        # (n, heads, 2, T)
            A = torch.softmax(scores.masked_fill(~allowed, -math.inf), dim=-1)
            y = A @ x[:, None]                                                          # (n, heads, 2, d)
            norms = y.pow(2).sum(-1).mean(1) / d                                       # (n, 2)
            overlap = (y[:, :, 0] * y[:, :, 1]).sum(-1).mean(1) / d
            g_rows = (allowed.to(g.dtype) / allowed.sum(-1, keepdim=True)) @ g           # (n, 2, d)
            c_g = (c * g_rows).sum(-1) / d                                              # (n, 2)
            common = p * (c.pow(2).sum((-1, -2)) / d - 1.0)
            values = torch.stack([norms[:, 0] - common - 2 * cross * c_g[:, 0],
                                  norms[:, 1] - common - 2 * cross * c_g[:, 1],
                                  overlap - common - cross * c_g.sum(-1)], dim=1)
            values = sigma_v2 * values
            if ipr:
                values = torch.cat([values, A.pow(2).sum(-1).mean(1)], dim=1)
            out.append(values.cpu())
    return Estimate(torch.cat(out).numpy())


def check_value_average(beta: float, *, T: int, d: int, heads: int, q: float, p: float, gain: bool,
                        draws: int = 256, seed: int = 0):
    """(averaged, forward): this module's W_V-averaged (q, p) for one draw of tokens, W_Q and W_K, and
    Estimates of the layer's own forward pass (``SelfAttention.torch_forward``) over ``draws`` draws of W_V
    with those tokens, W_Q and W_K -- equal in expectation (Wick's theorem over W_V)."""
    cpu = torch.device("cpu")
    generator = make_generator(seed, None, cpu)
    spec = SelfAttention(gain=gain, heads=heads)
    params = {"beta": beta, "sigma_v2": 1.0}
    c = torch.randn(d, generator=generator, dtype=torch.float64)
    x = math.sqrt(p) * c + math.sqrt(q - p) * torch.randn(T, d, generator=generator, dtype=torch.float64)
    weights = spec.torch_init(d, draws, generator, torch.float64, cpu)
    for name in ("W_Q", "W_K"):
        weights[name] = weights[name][:1].expand(draws, d, d)
    averaged = _one_seed(x, spec, {k: v[0] for k, v in weights.items()}, params, gain)
    with torch.no_grad():
        out = spec.torch_forward(x.expand(draws, T, d), weights, params)
    norms = out.pow(2).sum(-1)
    total = out.sum(-2)
    q_draws = norms.mean(-1) / d
    p_draws = ((total * total).sum(-1) - norms.sum(-1)) / (T * (T - 1) * d)
    return averaged, (Estimate.of(q_draws), Estimate.of(p_draws))


# --- the grid of issue 19 (README "Finite width: attention at long context"; verify/test_width.py runs parts) ---

#: The CPU grid: (d, heads, T) with T/d = 0.1 ... 16 (8 at d = 256), score scales sigma_a = beta sqrt(ln T) (q = 1) and
#: input cosines rho = p/q.
CPU_SIZES = ((64, 2, 8), (64, 2, 256), (64, 2, 1024), (256, 4, 26), (256, 4, 1024), (256, 4, 2048))
SIGMAS = (0.5, 1.5, 3.0, 5.0)
RHOS = (0.0, 0.5, 0.9)


def grid_point(d: int, heads: int, T: int, sigma_a: float, rho: float, seeds: int, *, seed: int = 0,
               device=None) -> dict:
    """Theory (finite and infinite width) and Monte Carlo of (q_out, p_out) at one point, as a JSON-ready dict."""
    from numeric.finite_width import attention_overlaps
    beta = sigma_a / math.sqrt(math.log(T))
    finite = attention_overlaps(beta, p=rho, T=T, d=d, d_head=d // heads)
    infinite = attention_overlaps(beta, p=rho, T=T)
    q_mc, p_mc = overlap_samples(beta, T=T, d=d, seeds=seeds, p=rho, heads=heads, seed=seed, device=device)
    return {"d": d, "heads": heads, "T": T, "sigma_a": sigma_a, "beta": beta, "rho": rho, "seeds": seeds,
            "q_finite": finite[0], "p_finite": finite[1], "q_infinite": infinite[0], "p_infinite": infinite[1],
            "q_mc": q_mc.mean, "q_se": q_mc.se, "p_mc": p_mc.mean, "p_se": p_mc.se}


def seeds_for(d: int, heads: int, T: int, budget: float = 4e10) -> int:
    """Seeds for a flop budget per point (16 to 128): a seed costs about 2 T^2 (d/heads + d) heads flops."""
    cost = 2.0 * T * T * (d // heads + d) * heads + 4.0 * T * d * d
    return int(min(128, max(16, budget // cost)))


def main(argv=None) -> None:
    """``python -m verify.width OUT.jsonl``: the CPU grid, one JSON line per point (appends; resumes)."""
    import json
    import pathlib
    import sys
    out = pathlib.Path((argv or sys.argv[1:])[0])
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["d"], r["T"], r["sigma_a"], r["rho"]))
    for d, heads, T in CPU_SIZES:
        for sigma_a in SIGMAS:
            for rho in RHOS:
                if (d, T, sigma_a, rho) in done:
                    continue
                row = grid_point(d, heads, T, sigma_a, rho, seeds_for(d, heads, T))
                with out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
