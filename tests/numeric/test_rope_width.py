"""numeric.rope_width: a RoPE row at finite width, its limits and its laws (torch: verify/test_width.py)."""

import math
import re

import numpy as np
import pytest
import sympy

from derive import rope as derived
from numeric import finite_width, rope, rope_width

ROPE = (1e4, 32)


def test_scale_correlation_is_derives_expression():
    """kappa(D) of numeric is derive.rope.key_scale_correlation evaluated, at lags 0 .. 300 (theta = 500, d_h = 16)."""
    theta, head_dim = 500.0, 16
    kappa = sympy.lambdify((derived.D,), derived.key_scale_correlation().subs(
        {derived.head_dim: head_dim, derived.theta_base: theta}).doit())
    D = np.arange(0, 301, 7)
    np.testing.assert_allclose(rope_width.scale_correlation(D, head_dim, theta), [float(kappa(int(k))) for k in D],
                               rtol=1e-12)


def test_scale_share_is_the_mean_over_the_rows_pairs():
    """kappa_bar_n against the explicit mean over the ordered pairs of a row of 50 keys; 1 for one key."""
    n, theta, head_dim = 50, 1e4, 32
    D = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])
    explicit = rope_width.scale_correlation(D[~np.eye(n, dtype=bool)], head_dim, theta).mean()
    assert rope_width.scale_share(n, head_dim, theta) == pytest.approx(explicit, rel=1e-12)
    assert rope_width.scale_share(1, head_dim, theta) == 1.0


@pytest.mark.parametrize("normalized", [True, False])
def test_key_law_is_the_scale_mixture(normalized):
    """The keys' scale-mixed projection law: unit variance (E y^2 E xi = 1), and the kurtosis of a scale mixture,
    E xi^2 E y^4 = (1 + 2/nu) 3 (1 - 2/(d + 2) for the sphere law): a mixture in xi instead of sqrt(xi), or
    without the mixing, fails both."""
    d, nu, b = 64, 40.0, 1.0
    z, w = rope_width.key_nodes(d, normalized, nu, b)
    y4 = 3.0 * (d / (d + 2.0) if normalized else 1.0)
    assert w @ z ** 2 == pytest.approx(1.0, rel=1e-6)
    assert w @ z ** 4 == pytest.approx((1.0 + 2.0 / nu) * y4, rel=1e-4)


@pytest.mark.parametrize("inputs, b2", [("gaussian", 4.0), ("normalized", 4.0), ("gaussian", 1000.0)])
def test_without_rotation_the_row_is_the_plain_finite_width_row(inputs, b2, monkeypatch):
    """With every key meeting the same direction (kappa_bar = c_bar = 1) the RoPE row is the row without RoPE:
    (E Y2, Y2_eff) equal numeric.finite_width.row_effective to 1e-6 at n = 300, b^2 = 4 and, for Gaussian tokens,
    beyond B_Z (b^2 = 1000: Z2 read towards its frozen limit, as there)."""
    monkeypatch.setattr(rope_width, "scale_share", lambda n, h, t: 1.0)
    monkeypatch.setattr(rope_width, "pair_mean", lambda n, h, t: 1.0)
    mine = rope_width.row(b2, 300, 64, 32, 32, 1e4, inputs)
    plain = finite_width.row_effective(b2, 300, 64, 32, inputs=inputs)
    np.testing.assert_allclose(mine, plain, rtol=1e-6)


@pytest.mark.parametrize("normalized", [True, False])
def test_mixture_row_ipr_matches_sampled_rows(normalized):
    """law_row at the heavier-tailed scale-mixed law (own scale of 40 dofs, d = 64), deep in the condensed phase
    (b = 5, n = 256): within 4 SE of 20 000 sampled rows of i.i.d. log-weights b y sqrt(xi); the same rows reject
    the law without its mixture (the plain sphere or Gaussian law)."""
    d, nu, b, n = 64, 40.0, 5.0, 256
    rng = np.random.default_rng(11)
    y = rng.standard_normal((20_000, n))
    if normalized:                                    # a coordinate of a uniform point on the sphere of radius sqrt d
        y = math.sqrt(d) * y / np.sqrt(y * y + rng.chisquare(d - 1, y.shape))
    logits = b * y * np.sqrt(rng.chisquare(nu, (20_000, n)) / nu)
    A = np.exp(logits - logits.max(1, keepdims=True))
    ipr = ((A / A.sum(1, keepdims=True)) ** 2).sum(1)
    se = ipr.std() / math.sqrt(ipr.size)
    theory = finite_width.law_row(b, n, *rope_width.key_nodes(d, normalized, nu, b))
    without = finite_width.law_row(b, n, *rope_width.key_nodes(d, normalized, math.inf, b))
    assert abs(theory - ipr.mean()) < 4 * se, (theory, ipr.mean(), se)
    assert abs(without - ipr.mean()) > 4 * se, (without, ipr.mean(), se)


def test_rope_lowers_selection_and_raises_the_ipr():
    """At b^2 = 1.7 (T = 1024, d = 64, d_h = 32): the RoPE row's q_out lies between infinite width and the plain
    finite-width row (the selection term times c_bar_n = 0.32), and its IPR above the plain row's (each key's own
    scale: heavier tails)."""
    beta = 0.5
    kw = {"T": 1024, "d": 64, "d_head": 32}
    mine = rope_width.output_norm(beta, rope=ROPE, **kw)
    plain = finite_width.output_norm(beta, inputs="normalized", **kw)
    infinite = float(rope.ipr(beta, 1.0, 0.0, 1024, *ROPE))
    assert infinite < mine < plain
    b2 = beta ** 2 * math.log(1024)
    assert rope_width.row(b2, 1024, 64, 32, 32, 1e4, "normalized")[0] > \
        finite_width.row_effective(b2, 1024, 64, 32, inputs="normalized")[0]


@pytest.mark.parametrize("kwargs, message", [
    ({"p": 0.3}, "p must be 0 with RoPE at finite width"),
    ({"rope": (1e4, 16)}, "rope head_dim = 16 but d_head = 32"),
    ({"rope": (1e4,)}, "rope must be RoPE's (theta, head_dim)"),
    ({"rope": (0.5, 32)}, "rope theta must be a finite number > 1"),
    ({"d": None}, "d must be a finite width"),
    ({"d": 64, "d_head": 24}, "d_head"),
    ({"n": 2000}, "n must lie in [1, T] = [1, 1024] (the row's keys)"),
    ({"inputs": "layernorm"}, "inputs must be one of"),
    ({"rope": 1e4}, "rope must be RoPE's (theta, head_dim)"),
    ({"d": 6, "d_head": 6, "rope": (1e4, 6)}, "inputs='normalized' needs a finite width d >= 8"),
    ({"q": [1.0, 2.0]}, "q must be a number"),
])
def test_bad_input_is_refused_by_name(kwargs, message):
    args = {"T": 1024, "rope": ROPE, "d": 64, "d_head": 32, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        rope_width.output_norm(1.0, **args)


@pytest.fixture(scope="module")
def rope_stack():
    """A causal RoPE layer of T = 256 at width 64 with 2 heads (d_h = 32, theta = 1e4), tokens of fixed norm (its
    pairs read the shipped normalized table of numeric.causal_width)."""
    from derive import masks
    from numeric import causal
    return causal.Attention(256, masks.parse("causal"), ROPE, width=(64, 32, "normalized"))


@pytest.mark.parametrize("beta", [0.7, 1.3, 2.2])
def test_stack_rows_at_orthogonal_inputs_are_the_rope_rows(rope_stack, beta):
    """At orthogonal inputs (Q = I) every row of the stack's closure (numeric.rope_width.RowTerms: its table in
    (xi, ln n), the tree's width at p = 0) gives rope_width.output_norm and rope_width.ipr of its n = t + 1 keys to
    1e-3, rows on and between the table's key counts, and its error is below a tenth of the finite-width increment
    (the infinite-width rows' distance: the increments are read, not dropped)."""
    T = 256
    Q = np.eye(T)
    out = rope_stack(Q, np.array(beta), np.array(1.0), False)
    ipr = rope_stack.row_ipr(Q, np.array(beta))
    rows = np.array([1, 5, 20, 37, 150, 255])
    norm = np.array([rope_width.output_norm(beta, T=T, rope=ROPE, d=64, d_head=32, n=int(t) + 1) for t in rows])
    iprs = [rope_width.ipr(beta, T=T, rope=ROPE, d=64, d_head=32, n=int(t) + 1) for t in rows]
    np.testing.assert_allclose(out[rows, rows], norm, rtol=1e-3)
    np.testing.assert_allclose(ipr[rows], iprs, rtol=1e-3)
    from derive import masks
    from numeric import causal
    infinite = causal.Attention(T, masks.parse("causal"), ROPE)(Q, np.array(beta), np.array(1.0), False)
    assert np.max(np.abs(out[rows, rows] - norm)) < 0.1 * np.max(np.abs(infinite[rows, rows] - norm))


def test_stack_rows_under_a_sliding_window_have_the_windows_key_counts():
    """Under a sliding window of 12 keys every row t takes rope_width's row of min(t + 1, 12) keys (to 3e-4), at
    orthogonal inputs: the rows' table is indexed by key count, whatever the mask."""
    from derive import masks
    from numeric import causal
    T, beta = 40, 1.3
    layer = causal.Attention(T, masks.parse("sliding:12"), ROPE, width=(64, 32, "normalized"))
    out = layer(np.eye(T), np.array(beta), np.array(1.0), False)
    rows = np.array([3, 11, 25, 39])
    norm = [rope_width.output_norm(beta, T=T, rope=ROPE, d=64, d_head=32, n=min(int(t) + 1, 12)) for t in rows]
    np.testing.assert_allclose(out[rows, rows], norm, rtol=3e-4)


def test_stack_rows_refuse_what_is_not_computed():
    """RoPE at finite width in a stack: Gaussian tokens (the cross term at p > 0) and a head dimension other than
    d_head are refused by name."""
    from derive import masks
    from numeric import causal
    with pytest.raises(ValueError, match="inputs='gaussian' with RoPE at finite width"):
        causal.Attention(32, masks.parse("causal"), ROPE, width=(64, 32))
    with pytest.raises(ValueError, match="head_dim = 32 but d_head = 16"):
        causal.Attention(32, masks.parse("causal"), ROPE, width=(64, 16, "normalized"))
