"""One attention layer at finite width and long context (issue 19): numeric.attention_overlaps against torch.

Monte Carlo of verify.width (Gaussian tokens, the layer's own weights and score
convention, W_V averaged exactly). Each check passes when |theory - MC| <= k SE +
allowance (verify.stats: Student t, Bonferroni over q_out and p_out) with the
declared O(1/d^2) allowance of :func:`allowance`; the infinite-width theory
(d=None, the exact finite-T theory) must fail the same check wherever
T sigma_a^2/d >~ 1.
"""

import math
from functools import lru_cache

import numpy as np
import pytest

from numeric.finite_width import attention_overlaps
from verify import stats, width
from verify.montecarlo import Estimate

#: Why the allowance: the theory keeps the key-selection terms to first order in 1/d (the score law exactly),
#: so the next order is O(1/d) of the first-order term; and the query token is treated as one of its T keys (A3).
REASON = ("O(1/d^2): next order of the key-selection term, FINITE_D_COEFF |finite - infinite|/d, and the query "
          "token among its own keys (A3), FINITE_D_COEFF |value|/(d T)")

#: (d, heads, T, sigma_a, rho, seeds): the issue's two measured rows (d = 100, T = 1000, sigma_a = 0.36; d = 128,
#: d_head = 64, T = 2048, sigma_a = 1), the condensed phase at T/d = 16 with correlated inputs, a point where p_out
#: has its own term, T/d = 0.1 at rho = 0.9.
POINTS = [(100, 1, 1000, 0.36, 0.0, 32), (128, 2, 2048, 1.0, 0.0, 16), (64, 2, 1024, 5.0, 0.5, 16),
          (64, 2, 256, 3.0, 0.0, 32), (256, 4, 26, 3.0, 0.9, 32)]


def allowance(finite, infinite, d: int, T: int):
    """The declared O(1/d^2) allowance of :data:`REASON` (elementwise over q_out, p_out)."""
    finite, infinite = np.asarray(finite), np.asarray(infinite)
    return stats.FINITE_D_COEFF * (np.abs(finite - infinite) + np.abs(finite) / T) / d


@lru_cache(maxsize=None)
def measured(d, heads, T, sigma_a, rho, seeds):
    """(finite-width theory, infinite-width theory, Monte Carlo Estimate of (q_out, p_out)) at one point."""
    beta = sigma_a / math.sqrt(math.log(T))
    finite = np.array(attention_overlaps(beta, p=rho, T=T, d=d, d_head=d // heads))
    infinite = np.array(attention_overlaps(beta, p=rho, T=T))
    q_mc, p_mc = width.overlap_samples(beta, T=T, d=d, seeds=seeds, p=rho, heads=heads, seed=19)
    estimate = Estimate(np.stack([q_mc.samples, p_mc.samples], axis=1))
    return finite, infinite, estimate


@pytest.mark.parametrize("point", POINTS, ids=[f"d{p[0]}-h{p[1]}-T{p[2]}-s{p[3]}-r{p[4]}" for p in POINTS])
def test_finite_width_theory_within_monte_carlo_error(point):
    d, heads, T = point[:3]
    finite, infinite, estimate = measured(*point)
    stats.assert_agrees(finite, estimate, allowance=allowance(finite, infinite, d, T), reason=REASON,
                        what=f"(q_out, p_out) at d={d}, heads={heads}, T={T}, sigma_a={point[3]}, rho={point[4]}")


@pytest.mark.parametrize("sigma_a", [1.5, 5.0])
def test_short_context_is_within_one_percent_beyond_monte_carlo_noise(sigma_a):
    """T/d = 1/8 (d = 64, 2 heads, T = 8), where 32 seeds had put q_out 1.3-2.7 % above the theory at every
    sigma_a: with 4000 seeds both q_out and p_out are within the issue's 1 % plus k SE (measured with 8000 seeds
    at rho = 0, 0.5, 0.9 and sigma_a = 0.5-5: at most 0.24 % for q_out and 0.81 % for p_out, within 2 SE), and
    within the suite's own check (Student t, Bonferroni, the declared O(1/d^2) allowance)."""
    point = (64, 2, 8, sigma_a, 0.0, 4000)
    finite, infinite, estimate = measured(*point)
    k = stats.critical(estimate.n, 2)
    assert np.all(np.abs(estimate.mean - finite) <= 0.01 * np.abs(finite) + k * estimate.se), (estimate.mean, finite)
    stats.assert_agrees(finite, estimate, allowance=allowance(finite, infinite, 64, 8), reason=REASON,
                        what=f"(q_out, p_out) at d=64, T=8, sigma_a={sigma_a}")


def test_issue_table_rows():
    """The issue's measured E|o_t|^2/d: 0.00243 (d = 100, T = 1000, sigma_a = 0.36) and 0.0093 (d = 128, d_head = 64,
    T = 2048, sigma_a = 1), where the infinite-width prediction was 0.00114 and 0.0013."""
    for point, issue in ((POINTS[0], 0.00243), (POINTS[1], 0.0093)):
        finite, infinite, estimate = measured(*point)
        assert finite[0] == pytest.approx(issue, rel=0.02)
        assert abs(infinite[0] - issue) > 0.5 * issue


@pytest.mark.parametrize("point", [p for p in POINTS if p[2] * p[3] ** 2 / p[0] >= 1.0 and p[4] == 0.0],
                         ids=lambda p: f"d{p[0]}-T{p[2]}-s{p[3]}")
def test_infinite_width_theory_is_rejected_at_long_context(point):
    """T sigma_a^2/d >= 1 (orthogonal inputs, where the MC error is smallest): the infinite-width q_out is off by
    more than the tolerance (k SE + allowance) that the finite-width theory meets, so the check can fail and the
    O(1/d) term is what passes it; where the two rows' term is large (T sigma_a^2/d = 36), p_out too."""
    d, heads, T = point[:3]
    finite, infinite, estimate = measured(*point)
    tol = stats.tolerance(estimate.se, allowance(finite, infinite, d, T), estimate.n, family=2)
    gap = np.abs(infinite - estimate.mean)
    assert gap[0] > tol[0]
    assert gap[0] > 3.0 * abs(finite[0] - estimate.mean[0])
    if T * point[3] ** 2 / d > 30:
        assert gap[1] > tol[1]


#: One masked attention layer (numeric.finite_width.masked_overlaps): (d, heads, T, sigma_a, rho, rows, mask, seeds) --
#: causal rows with 101 and 256 keys at orthogonal inputs, causal rows far apart with correlated inputs in the
#: condensed range, and two rows of a sliding window that share 58 of their 128 keys.
MASKED = [(64, 2, 256, 1.5, 0.0, (100, 255), "causal", 4000), (64, 2, 256, 3.0, 0.5, (40, 200), "causal", 4000),
          (64, 2, 256, 3.0, 0.0, (150, 220), "sliding:128", 4000)]


@lru_cache(maxsize=None)
def masked(d, heads, T, sigma_a, rho, rows, mask, seeds):
    """(finite-width theory, infinite-width theory, Monte Carlo Estimate of (q_t, q_u, p_tu)) at one point."""
    from numeric.finite_width import masked_overlaps
    beta = sigma_a / math.sqrt(math.log(T))
    finite = np.array(masked_overlaps(beta, rows=rows, mask=mask, T=T, d=d, d_head=d // heads, p=rho))
    infinite = np.array(masked_overlaps(beta, rows=rows, mask=mask, T=T, p=rho))
    estimate = width.masked_overlap_samples(beta, rows=rows, mask=mask, T=T, d=d, seeds=seeds, p=rho, heads=heads,
                                            seed=23)
    return finite, infinite, estimate


@pytest.mark.parametrize("point", MASKED, ids=[f"{p[6]}-rows{p[5][0]}-{p[5][1]}-s{p[3]}-r{p[4]}" for p in MASKED])
def test_masked_layer_finite_width_within_monte_carlo_error(point):
    """Rows with their own key sets (causal, sliding window), T/d = 4: the finite-width norms and overlap within
    k SE (Student t, Bonferroni over the three) plus the declared allowance, with the rows' key counts in place of
    T; the infinite-width norms are rejected by the same tolerance (they are 15-58 SE off)."""
    d, _, T, sigma_a, _, rows, mask, _ = point
    finite, infinite, estimate = masked(*point)
    keys = np.array([rows[0] + 1, rows[1] + 1, rows[0] + 1]) if mask == "causal" else np.full(3, 128)
    allow = stats.FINITE_D_COEFF * (np.abs(finite - infinite) + np.abs(finite) / keys) / d
    stats.assert_agrees(finite, estimate, allowance=allow, reason=REASON,
                        what=f"(q_t, q_u, p_tu) of rows {rows} under {mask} at d={d}, T={T}, sigma_a={sigma_a}")
    tol = stats.tolerance(estimate.se, allow, estimate.n, family=3)
    assert np.all(np.abs(infinite - estimate.mean)[:2] > tol[:2])


def test_value_average_is_the_layers_forward_pass():
    """verify.width averages W_V by Wick's theorem; the layer's own forward pass (SelfAttention.torch_forward)
    over 512 draws of W_V, with the same tokens, W_Q and W_K, agrees within its standard error (two heads,
    correlated inputs, vanilla and gain-controlled)."""
    for gain in (False, True):
        averaged, (q_fwd, p_fwd) = width.check_value_average(1.2, T=24, d=32, heads=2, q=1.0, p=0.4, gain=gain,
                                                             draws=512, seed=3)
        stats.assert_agrees(averaged[0], q_fwd, what=f"E_V q_out (gain={gain})")
        stats.assert_agrees(averaged[1], p_fwd, what=f"E_V p_out (gain={gain})")


def test_deep_stack_finite_width_profile_is_closer_to_torch():
    """Pre-LN with a strong attention branch (sigma_v2 = 4, alpha_sa = 0.2, beta = 1) at d = 128 (two heads),
    T = 1024, 16 initialisations: over the first three blocks the finite-width profile deviates less from the torch
    stack than the infinite-width one, and at block 2 (where the averaging happens) the infinite-width rho is off
    by more than the tolerance (k SE + the suite's O(1/d) allowance) that the finite-width one meets."""
    import numeric
    from verify import montecarlo as mc

    T, d, heads, depth, params = 1024, 128, 2, 3, dict(sigma_v2=4.0, alpha_sa=0.2)
    finite = numeric.cosine_profile("pre-ln", depth, beta=1.0, T=T, d=d, d_head=d // heads, **params)
    infinite = numeric.cosine_profile("pre-ln", depth, beta=1.0, T=T, backend="numpy", **params)
    rho = mc.profile("pre-ln", depth, beta=1.0, T=T, d=d, seeds=16, heads=heads, kind="gaussian", seed=5,
                     **params).rho
    mean = np.asarray(rho.mean)
    assert np.max(np.abs(finite - mean)[1:]) < np.max(np.abs(infinite - mean)[1:])
    tol = stats.tolerance(rho.se[2], stats.finite_d_allowance(d, finite[2]), rho.n)
    assert abs(finite[2] - mean[2]) <= tol < abs(infinite[2] - mean[2])


def test_encoder_stack_with_normalized_tokens_is_closer_at_the_first_block():
    """The pre-LN encoder stack of the deep-stack test above at d = 64 (two heads), T = 256, 128 initialisations:
    its attention layers see LayerNorm'd tokens, and with inputs="normalized" (numeric.normalized_width) block 1's
    rho is within the tolerance (k SE, no allowance) and closer to torch than the Gaussian-token profile's
    (measured: -1.2 SE against -3.9 SE); the whole profile beats the infinite-width one. Blocks 2-3 are 4 and 9 SE
    high with either input kind (README: not modelled)."""
    import numeric
    from verify import montecarlo as mc

    T, d, heads, depth, params = 256, 64, 2, 3, dict(beta=1.0, sigma_v2=4.0, alpha_sa=0.2)
    normalized = numeric.cosine_profile("pre-ln", depth, T=T, d=d, d_head=d // heads, inputs="normalized", **params)
    gaussian = numeric.cosine_profile("pre-ln", depth, T=T, d=d, d_head=d // heads, **params)
    infinite = numeric.cosine_profile("pre-ln", depth, T=T, backend="numpy", **params)
    rho = mc.profile("pre-ln", depth, T=T, d=d, seeds=128, heads=heads, kind="gaussian", seed=5, **params).rho
    mean = np.asarray(rho.mean)
    assert abs(normalized[1] - mean[1]) <= stats.tolerance(rho.se[1], 0.0, rho.n)
    assert abs(normalized[1] - mean[1]) < abs(gaussian[1] - mean[1])
    assert np.max(np.abs(normalized - mean)[1:]) < np.max(np.abs(infinite - mean)[1:])


def test_deep_stack_gap_is_the_structure_of_the_first_blocks_tokens():
    """Why blocks 2-3 of the finite-width profile are high (README, errata 17): an attention-only pre-LN stack
    (alpha_mlp = 0, d = 64, two heads, T = 256, 256 initialisations). Block 2 fed tokens that are a common direction
    plus independent private parts at the theory's block-1 state (q1, p1) gives the theory's rho after block 2
    within k SE (measured 0.8487 +- 0.0026 against 0.8522; infinite width, 0.8902, is rejected); the same block
    fed the real block-1 outputs (same weights: a paired difference) gives a rho lower by 0.032 +- 0.004 (7 SE):
    the one-layer map is right, and what it misses is the block-1 outputs' Gram matrix beyond its mean (its pair cosines spread 0.165
    against 0.104, its second eigenvalue holds 8 % of the trace against 2 %)."""
    import torch

    import numeric
    from numeric.profile import iterate, prepare
    from verify.montecarlo import overlap_samples
    from verify.torch_view import iter_blocks, tokens

    seeds, T, d, heads = 256, 256, 64, 2
    params = dict(beta=1.0, sigma_v2=4.0, alpha_sa=0.2, alpha_mlp=0.0)
    width = dict(d=d, d_head=d // heads, inputs="normalized")
    theory = numeric.cosine_profile("pre-ln", 2, T=T, **width, **params)
    block, moments, values, _, _, rho0 = prepare("pre-ln", 1, beta=1.0, T=T, rho0=0.0, activation="relu",
                                                 params={k: v for k, v in params.items() if k != "beta"},
                                                 width=(d, d // heads, "normalized"))
    state = iterate(block, moments, values, 1, T, rho0)
    q1, p1 = float(state.q), float(state.p)
    g = torch.Generator().manual_seed(5)
    x0 = tokens(seeds, T, d, kind="gaussian", generator=g)
    first, second = iter_blocks("pre-ln", d, seeds=seeds, depth=2, params=params, heads=heads, generator=g)
    with torch.no_grad():
        common = torch.randn(seeds, 1, d, generator=g, dtype=x0.dtype)
        common = common / common.pow(2).mean(-1, keepdim=True).sqrt()
        private = torch.randn(seeds, T, d, generator=g, dtype=x0.dtype)
        synthetic = math.sqrt(p1) * common + math.sqrt(q1 - p1) * (private - private.mean(-2, keepdim=True))
        rho = {}
        for name, x in (("real", first(x0)), ("synthetic", synthetic)):
            q2, p2 = overlap_samples(second(x))
            rho[name] = (p2 / q2).numpy()
    mean, se = rho["synthetic"].mean(), rho["synthetic"].std(ddof=1) / math.sqrt(seeds)
    tol = stats.tolerance(se, 0.0, seeds)
    assert abs(theory[2] - mean) <= tol, (theory[2], mean, se)
    infinite = numeric.cosine_profile("pre-ln", 2, T=T, backend="numpy", **params)
    assert abs(infinite[2] - mean) > tol, (infinite[2], mean)                  # the check sees width
    gap = rho["real"] - rho["synthetic"]
    assert gap.mean() < -stats.tolerance(gap.std(ddof=1) / math.sqrt(seeds), 0.0, seeds), (gap.mean(), gap.std())


def test_causal_stack_finite_width_profile_is_closer_to_torch():
    """The causal (decoder) stack of the deep-stack test above at d = 64 (two heads), T = 256 (T/d = 4), 128
    initialisations, all-pairs rho: the position-resolved profile with the finite-width increments
    (numeric.causal_width's tables, every position) deviates less from torch over the first three blocks than the
    infinite-width one (every position), and at block 2 the infinite-width rho is off by more than the
    tolerance (k SE + the suite's O(1/d) allowance) that the finite-width one meets. The stack normalizes before
    attention: with inputs="normalized" block 1 is closer still (README: 0.2404 against torch 0.2457 and 0.2341
    for Gaussian tokens), and the whole profile beats the infinite-width one."""
    import numeric
    from verify import montecarlo as mc

    T, d, heads, depth, params = 256, 64, 2, 3, dict(sigma_v2=4.0, alpha_sa=0.2)
    finite = numeric.cosine_profile("pre-ln", depth, beta=1.0, T=T, mask="causal", d=d,
                                    d_head=d // heads, **params)
    infinite = numeric.cosine_profile("pre-ln", depth, beta=1.0, T=T, mask="causal", **params)
    rho = mc.profile("pre-ln", depth, beta=1.0, T=T, d=d, seeds=128, heads=heads, kind="gaussian", seed=5,
                     mask="causal", **params).rho
    mean = np.asarray(rho.mean)
    assert np.max(np.abs(finite - mean)[1:]) < np.max(np.abs(infinite - mean)[1:])
    tol = stats.tolerance(rho.se[2], stats.finite_d_allowance(d, finite[2]), rho.n)
    assert abs(finite[2] - mean[2]) <= tol < abs(infinite[2] - mean[2])
    normalized = numeric.cosine_profile("pre-ln", depth, beta=1.0, T=T, mask="causal", d=d, d_head=d // heads,
                                        inputs="normalized", **params)
    assert abs(normalized[1] - mean[1]) < abs(finite[1] - mean[1])          # the stack normalizes before attention
    assert np.max(np.abs(normalized - mean)[1:]) < np.max(np.abs(infinite - mean)[1:])


@pytest.mark.parametrize("kwargs,match", [(dict(mask=None), "mask"), (dict(rows=(3, 3)), "rows"),
                                          (dict(rows=(3, 16)), "rows"), (dict(p=-0.01), "p must be"),
                                          (dict(batch=0), "batch"), (dict(seeds=1), "seeds")])
def test_masked_samples_bad_input(kwargs, match):
    args = {"rows": (2, 9), "mask": "causal", "T": 16, "d": 8, "seeds": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        width.masked_overlap_samples(1.0, **args)


#: Normalized tokens (|x|^2 = d q, as after a LayerNorm): (T, beta, rho, rows, seeds) at d = 64 with two heads.
NORMALIZED = [(256, 1.5, 0.0, (128, 255), 4000), (256, 1.0, 0.5, (100, 255), 4000), (256, 2.5, 0.3, (60, 200), 4000)]


@pytest.mark.parametrize("point", NORMALIZED, ids=[f"T{p[0]}-b{p[1]}-r{p[2]}" for p in NORMALIZED])
def test_normalized_tokens_overlaps_within_monte_carlo_error(point):
    """Tokens of fixed norm (derive.finite_width steps 5-6): the causal rows' norms and overlap from
    numeric.masked_overlaps(inputs="normalized") within k SE (Student t, Bonferroni over the three) plus the
    declared allowance. Rejected by the same tolerance: the Gaussian-token finite-width overlaps (fluctuating
    norms: every norm), the infinite-width ones, and at rho > 0 the overlap without step 6 (the common
    direction's share: 25 SE off at rho = 0.3). Measured (2026-12-04, this seed): rho = 0.5 torch 0.5413, 0.5224,
    0.4988 against 0.5420, 0.5228, 0.4987; rho = 0.3 (condensed) torch 0.6829, 0.6299, 0.3047 against 0.6835,
    0.6307, 0.3027. At rho = 0, 24 000 seeds: overlap 0.00483 +- 0.00027 against 0.00508 (Gaussian tokens
    0.00722)."""
    from numeric.finite_width import common_direction, masked_overlaps
    T, beta, rho, rows, seeds = point
    d, heads = 64, 2
    estimate = width.masked_overlap_samples(beta, rows=rows, T=T, d=d, seeds=seeds, p=rho, heads=heads, seed=31,
                                            normalized=True)
    kw = dict(rows=rows, T=T, p=rho)
    theory = np.array(masked_overlaps(beta, d=d, d_head=d // heads, inputs="normalized", **kw))
    gaussian = np.array(masked_overlaps(beta, d=d, d_head=d // heads, **kw))
    infinite = np.array(masked_overlaps(beta, **kw))
    mean, se = np.asarray(estimate.mean), np.asarray(estimate.se)
    allow = stats.FINITE_D_COEFF * np.abs(gaussian - infinite) / d
    tol = stats.tolerance(se, allow, estimate.n, family=3)
    assert np.all(np.abs(theory - mean) <= tol), (theory, mean, se)
    assert np.all(np.abs(gaussian - mean)[:2] > tol[:2]), (gaussian, mean)
    assert np.any(np.abs(infinite - mean) > tol), (infinite, mean)
    if rho > 0:
        b2 = beta * beta * math.log(T) * (1.0 - rho)
        without = theory[2] - common_direction(b2, rho, d, (rows[0] + 1, rows[1] + 1), 0.0)[1]
        assert abs(without - mean[2]) > tol[2], (without, mean[2])


#: RoPE rows at orthogonal inputs (T, beta, inputs): the selection-dominated point (T = 1024, b^2 = 1.7), near
#: condensation at T = 256 and 1024, and Gaussian tokens. d = 64, 2 heads (d_h = 32), theta = 1e4, rows T - 1 and
#: T/2 - 1 under a causal mask.
ROPE_POINTS = [(1024, 0.5, "normalized"), (1024, 1.0, "normalized"), (256, 2.0, "normalized"), (1024, 1.0, "gaussian")]


@pytest.mark.parametrize("point", ROPE_POINTS, ids=[f"T{p[0]}-beta{p[1]}-{p[2]}" for p in ROPE_POINTS])
def test_rope_rows_at_finite_width_within_monte_carlo_error(point, monkeypatch):
    """numeric.rope_width against torch (queries and keys rotated, 1536 seeds): the two causal rows' q_out and IPR
    within k SE (Student t, Bonferroni over the four) plus the declared allowance. The same tolerance rejects, at
    every point, the closure with one scale per row (W_K's step not split per key: its IPR 5-10 SE low) and
    either infinite width (up to 72 SE) or the finite-width row without RoPE (every key meeting the same direction:
    the selection term not cut by c_bar_n, up to 155 SE). Measured (2048 seeds): T = 1024, beta = 1: q_t torch
    0.1064 +- 0.0016, theory 0.1085, one scale per row 0.0914, without RoPE 0.1409, infinite width 0.0876."""
    from numeric import rope_width
    from numeric.finite_width import masked_overlaps
    T, beta, inputs = point
    d, heads, theta = 64, 2, 1e4
    rows = (T - 1, T // 2 - 1)
    estimate = width.masked_overlap_samples(beta, rows=rows, T=T, d=d, seeds=1536, heads=heads, seed=41,
                                            normalized=inputs == "normalized", rope=theta, ipr=True)

    def theory():
        b2 = beta * beta * math.log(T)
        (ipr_t, q_t), (ipr_u, q_u) = (rope_width.row(b2, t + 1, d, d // heads, d // heads, theta, inputs) for t in rows)
        return np.array([q_t, q_u, ipr_t, ipr_u])

    mean, se = np.asarray(estimate.mean)[[0, 1, 3, 4]], np.asarray(estimate.se)[[0, 1, 3, 4]]
    finite = theory()
    plain = np.array(masked_overlaps(beta, rows=rows, T=T, d=d, d_head=d // heads, inputs=inputs)[:2])
    infinite = np.array(masked_overlaps(beta, rows=rows, T=T))
    infinite = np.concatenate([infinite[:2], infinite[:2]])          # at p = 0, q_out = IPR at infinite width
    allow = stats.FINITE_D_COEFF * np.abs(finite - infinite) / d
    tol = stats.tolerance(se, allow, estimate.n, family=4)
    assert np.all(np.abs(finite - mean) <= tol), (finite, mean, se, tol)
    monkeypatch.setattr(rope_width, "scale_share", lambda n, h, t: 1.0)
    one_scale = theory()
    assert np.any(np.abs(one_scale - mean) > tol), (one_scale, mean)
    assert np.any(np.abs(plain - mean[:2]) > tol[:2]) or np.any(np.abs(infinite - mean) > tol), (plain, infinite)


#: A RoPE layer's rows at input cosine p/q > 0 (p, beta): d = 64, 2 heads, theta = 1e4, T = 256, tokens of fixed norm.
ROPE_STACK_POINTS = [(0.05, 1.0), (0.2, 1.0), (0.5, 2.0)]


def test_rope_rows_at_positive_overlap_within_monte_carlo_error():
    """numeric.rope_width.RowTerms (the closure a LLaMA stack uses at finite width) against torch at p/q = 0.05,
    0.2 and 0.5 (1536 seeds each): q_t, q_u and p_tu of rows T - 1 and T/2 - 1 within k SE (Bonferroni over the
    nine) plus the declared O(1/d^2) allowance; the infinite-width closure is rejected at every point (its norms
    are up to 9 SE low at p/q = 0.05, its overlaps up to 6 SE high). Without the c_bar cut of the common
    direction's pulls and of the pairs' selection increment the closure fails the same check (measured at T = 1024:
    norms 7 SE high with neither term, pairs 17-33 SE low with both uncut)."""
    from derive import masks
    from numeric import causal
    T, d, heads = 256, 64, 2
    t, u = T - 1, T // 2 - 1
    finite_layer = causal.Attention(T, masks.parse("causal"), (1e4, d // heads), width=(d, d // heads, "normalized"))
    infinite_layer = causal.Attention(T, masks.parse("causal"), (1e4, d // heads))
    family = 3 * len(ROPE_STACK_POINTS)
    for p, beta in ROPE_STACK_POINTS:
        estimate = width.masked_overlap_samples(beta, rows=(t, u), T=T, d=d, seeds=1536, heads=heads, p=p, seed=11,
                                                normalized=True, rope=1e4)
        mean, se = np.asarray(estimate.mean)[:3], np.asarray(estimate.se)[:3]
        Q = (1.0 - p) * np.eye(T) + p

        finite, infinite = (_rows_and_pair(layer(Q, np.array(beta), np.array(1.0), False), t, u)
                            for layer in (finite_layer, infinite_layer))
        tol = stats.tolerance(se, stats.FINITE_D_COEFF * np.abs(finite - infinite) / d, estimate.n, family=family)
        assert np.all(np.abs(finite - mean) <= tol), (p, beta, finite, mean, se, tol)
        assert np.any(np.abs(infinite - mean) > tol), (p, beta, infinite, mean, tol)


def _rows_and_pair(out, t, u) -> np.ndarray:
    """(q_t, q_u, p_tu) of a layer's output overlaps ``out``."""
    return np.array([out[t, t], out[u, u], out[u, t]])
