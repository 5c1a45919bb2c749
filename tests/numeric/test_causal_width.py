"""numeric.causal_width: the finite-width increments of the position-resolved closure (issue 19).

One causal table, (d, d_head) = (64, 32) for T <= 256, serves every test here and verify/test_width.py, and
one of normalized tokens: both ship with the package (numeric.shipped), so a fresh installation reads them.
"""

import math

import numpy as np
import pytest

import numeric
from derive import masks
from numeric import causal_width as cw
from numeric import finite_width as fw
from numeric.causal import Attention

D, D_HEAD, T_TABLE = 64, 32, 256


@pytest.fixture(scope="module")
def tables():
    return cw.causal_tables(D, D_HEAD, cw.table_size(T_TABLE))


@pytest.mark.parametrize("b2,rho,keys", [(2.25, 0.0, (101, 0, 155)), (4.5, 0.5, (41, 0, 160)),
                                         (16.0, 0.7, (100, 0, 156))])
def test_profile_rule_is_close_to_the_full_rule(b2, rho, keys):
    """The profile's 48-node score-law rule is within 5e-4 relative of the full rule (1152 nodes); the
    increment over the infinite-width moment is at least 10 % of Yp_eff at these points, so the rule's error is
    below 0.5 % of the term it computes."""
    full = fw.pair_effective(b2, rho, None, 64, 32, keys=keys)
    rule = fw.pair_effective(b2, rho, None, 64, 32, keys=keys, nodes=cw.N_PAIR_PROFILE)
    assert rule == pytest.approx(full, rel=5e-4)
    infinite = fw.pair_and_selection(b2, b2, rho * b2, None, fw.TABLE, keys=keys)[0]
    assert abs(full - infinite) > 0.1 * full


def _between_nodes(rng, count: int, b_range: tuple[float, float], rho_max: float):
    """``count`` random points (n_t, n_u, b, rho) between the causal tables' nodes: whole key counts
    2 <= n_t < 200, n_t + 20 <= n_u <= 256, b uniform in ``b_range``, rho uniform in [0, rho_max]."""
    for _ in range(count):
        n_t = int(rng.integers(2, 200))
        n_u = int(rng.integers(n_t + 20, 257))
        yield n_t, n_u, float(rng.uniform(*b_range)), float(rng.uniform(0.0, rho_max))


def test_causal_table_matches_the_direct_increments(tables):
    """At 12 random points between the nodes (whole key counts 2 <= n_t <= n_u <= 256, b in [0.1, 8], rho in
    [0, 0.98]) the tables' dYp is within 1.5 % of the direct integral (the tables' worst of 40 points measured:
    0.7 %; 9.9 % when they held the increments themselves, not over selection_scale) and dY2, dIPR within 2e-6
    (measured 3.3e-7; 4e-5 with 15 nodes in b, ROW_NODES).
    The tables read with the rows' counts swapped (row u's count, and the ratio n_u/n_t) miss by more than 1e-2."""
    worst = 0.0
    for n_t, n_u, b, rho in _between_nodes(np.random.default_rng(7), 12, (0.1, 8.0), 0.98):
        direct = cw.pair_increment(b, rho, (n_t, 0, n_u - n_t), D, D_HEAD)
        assert float(tables.pair(b, rho, n_t, n_u)) == pytest.approx(direct, rel=1.5e-2, abs=1e-7)
        worst = max(worst, abs(float(tables.pair(b, rho, n_u, n_t)) - direct))
        norm, ipr = cw.row_increments(b, n_t, D, D_HEAD)
        assert float(tables.row(b, n_t)) == pytest.approx(norm, abs=2e-6)
        assert float(tables.row(b, n_t, kind="ipr")) == pytest.approx(ipr, abs=2e-6)
    assert worst > 1e-2


@pytest.mark.parametrize("inputs", ["gaussian", "normalized"])
def test_row_minus_pair_near_rho_one_on_an_encoders_diagonal(inputs):
    """An encoder's rows see the same T keys (n_t = n_u = 256) and their keys' spread shrinks as the inputs
    align (b^2 = 1 - rho at beta = 1): 1 - rho_out is made of dY2 - dYp there, which vanishes like (1 - rho) b^2.
    At rho = 0.9, 0.95, 0.98 the tables' difference is within 3 % of the direct one (measured: 0.4 %); tables of
    the increments themselves (not over selection_scale) gave it the wrong sign (Gaussian tokens: -4.1e-4 against
    4.0e-5 at 0.95)."""
    table = cw.causal_tables(D, D_HEAD, T_TABLE, inputs)
    for rho in (0.9, 0.95, 0.98):
        b = math.sqrt(1.0 - rho)
        direct = (cw.row_increments(b, T_TABLE, D, D_HEAD, inputs, rho)[0]
                  - cw.pair_increment(b, rho, (T_TABLE, 0, 0), D, D_HEAD, whole=False, inputs=inputs))
        tabulated = float(table.row(b, T_TABLE, rho=rho)) - float(table.pair(b, rho, T_TABLE, T_TABLE))
        assert tabulated == pytest.approx(direct, rel=3e-2)


def test_lookup_at_fixed_rows_is_the_table(tables, normalized_tables):
    """CausalLookup contracts the key-count axes once: at 16 carried rows and random widths (beyond B_MAX too)
    and correlations its rows and pairs are the tables' own look-ups to rounding, every channel of the normalized
    tables' rows too (each held over its own factor, HELD_OVER), and a lookup built with the pairs' rows and
    columns swapped is not."""
    rng = np.random.default_rng(3)
    n = np.concatenate([[1.0], np.sort(rng.integers(2, 257, 15)).astype(float)])
    rows, cols = np.triu_indices(n.size, 1)
    look = tables.at(n, rows, cols)
    b = rng.uniform(0.0, 14.0, (7, n.size))
    rho = rng.uniform(0.0, 1.0, (7, rows.size))
    for kind in ("norm", "ipr"):
        np.testing.assert_allclose(look.row(b, kind=kind), tables.row(b, n, kind=kind), rtol=0, atol=1e-14)
    cosine = rng.uniform(0.0, 1.0, b.shape)
    normalized = normalized_tables.at(n, rows, cols)
    for kind in cw.ROW_CHANNELS:
        np.testing.assert_allclose(normalized.row(b, kind=kind, rho=cosine),
                                   normalized_tables.row(b, n, kind=kind, rho=cosine), rtol=1e-12, atol=1e-14)
    direct = tables.pair(b[:, rows], rho, n[rows], n[cols])
    np.testing.assert_allclose(look.pair(b[:, rows], rho), direct, rtol=0, atol=1e-14)
    assert np.abs(direct).max() > 1e-2
    assert np.abs(tables.at(n, cols, rows).pair(b[:, cols], rho) - direct).max() > 1e-3


def test_fused_pairs_are_the_numpy_pairs(tables, monkeypatch):
    """The numba kernel of the pairs' increments (numeric._causal_jit.width_pairs) gives the NumPy look-ups'
    layer to 1e-14, for a batch of two grid points with different widths and spreads."""
    attention = Attention(T_TABLE, masks.parse("causal"), width=(D, D_HEAD), groups=16)
    P = attention.size
    rng = np.random.default_rng(5)
    A = rng.normal(size=(2, P, P + 4))
    Q = A @ np.swapaxes(A, -1, -2) / (P + 4) + 0.4
    beta, sigma_v2 = np.array([1.0, 2.5]), np.array([1.0, 3.0])
    out = {}
    for name in ("numpy", "fused"):
        monkeypatch.setenv("SIGPROP_BACKEND", name)
        out[name] = attention(Q, beta, sigma_v2, False)
    monkeypatch.setenv("SIGPROP_BACKEND", "numpy")
    infinite = Attention(T_TABLE, masks.parse("causal"), groups=16)(Q, beta, sigma_v2, False)
    np.testing.assert_allclose(out["fused"], out["numpy"], rtol=0, atol=1e-14)
    assert np.abs(out["numpy"] - infinite).max() > 1e-3


def test_one_layer_gets_the_masked_layers_increments():
    """One attention layer on Gaussian tokens (Q = (1 - rho) I + rho): the finite-width closure minus the
    infinite-width closure is masked_overlaps(d) - masked_overlaps(None) for every row's norm and every pair.
    Sliding window (direct integrals, T = 12, d = 32): within the profile rule's accuracy (2.5e-3 of the overlap);
    causal (the tables, T = 200, d = 64): within sigma_v2 (q - p) times 1.2e-3 (pairs; the tables' worst of 40
    random points is 3.5e-4) and 1e-4 (norms). The closure's own pair term cancels in the difference."""
    for mask, T, d, d_head, rho, pairs in [("sliding:5", 12, 32, 16, 0.3, [(1, 5), (3, 11), (7, 8), (0, 11)]),
                                           ("causal", 200, D, D_HEAD, 0.0, [(20, 150), (120, 199)]),
                                           ("causal", 200, D, D_HEAD, 0.5, [(60, 61), (30, 190)])]:
        beta, sigma_v2 = 1.3, 1.7
        Q = (1.0 - rho) * np.eye(T) + rho
        finite = Attention(T, masks.parse(mask), width=(d, d_head))(Q, np.array(beta), np.array(sigma_v2), False)
        closure = finite - Attention(T, masks.parse(mask))(Q, np.array(beta), np.array(sigma_v2), False)
        scale = sigma_v2 * (1.0 - rho)
        for t, u in pairs:
            kw = dict(rows=(t, u), mask=mask, T=T, p=rho, sigma_v2=sigma_v2)
            layer = fw.masked_overlaps(beta, d=d, d_head=d_head, **kw)
            exact = np.subtract(layer, fw.masked_overlaps(beta, **kw))
            rows_tol, pair_tol = (1e-9, 2.5e-3 * layer[2]) if mask != "causal" else (1e-4 * scale, 1.2e-3 * scale)
            assert closure[t, t] == pytest.approx(exact[0], abs=rows_tol)
            assert closure[u, u] == pytest.approx(exact[1], abs=rows_tol)
            assert closure[t, u] == pytest.approx(exact[2], abs=pair_tol)
            assert closure[u, t] == closure[t, u]
            assert abs(exact[2]) > 3.0 * pair_tol or mask != "causal" or rho == 0.0
        assert np.abs(closure).max() > 1e-3


def test_finite_width_profile_tends_to_the_infinite_width_one():
    """The increments are O(1/d): at d = 2^16 the windowed profile is the infinite-width one within 1e-4, while at
    d = 8 (T = 10) it differs by more than 3e-3."""
    kw = dict(beta=2.5, T=10, mask="sliding:6", sigma_v2=2.0, alpha_sa=0.3)
    infinite = numeric.cosine_profile("pre-ln", 2, **kw)
    wide = numeric.cosine_profile("pre-ln", 2, d=2**16, d_head=2**12, **kw)
    narrow = numeric.cosine_profile("pre-ln", 2, d=8, d_head=4, **kw)
    assert np.abs(wide - infinite).max() < 1e-4
    assert np.abs(narrow - infinite).max() > 3e-3


def test_critical_alpha_and_diagram_take_the_width(tables):
    """Causal post-LN, 10 blocks, T = 256, 16 position groups, d = 64 (2 heads): at the finite-width critical
    alpha the finite-width profile ends at rho = 1 - eps (so d reaches the root finder), while the
    infinite-width profile there does not (the boundary moves by more than 0.005); the diagram's final rho is the
    finite-width profile's at a grid point, and it records the width."""
    kw = dict(T=256, mask="causal", groups=16)
    betas = np.array([1.0, 2.0])
    alpha = numeric.critical_alpha("post-ln", 10, beta=betas, d=D, d_head=D_HEAD, **kw)
    alpha_inf = numeric.critical_alpha("post-ln", 10, beta=betas, **kw)
    for beta, a in zip(betas, alpha):
        assert numeric.cosine_profile("post-ln", 10, beta=beta, alpha_sa=a, d=D, d_head=D_HEAD, **kw)[-1] == \
            pytest.approx(0.99, abs=1e-5)
    assert np.all(np.abs(alpha - alpha_inf) > 5e-3)
    diagram = numeric.trainability_diagram("post-ln", 10, betas=betas, alphas=[0.5, 1.0], d=D, d_head=D_HEAD, **kw)
    profile = numeric.cosine_profile("post-ln", 10, beta=2.0, alpha_sa=1.0, d=D, d_head=D_HEAD, **kw)
    assert diagram.rho[1, 1] == pytest.approx(profile[-1], abs=1e-12)
    assert diagram.params["d"] == D and diagram.params["d_head"] == D_HEAD
    np.testing.assert_allclose(diagram.critical_alpha, alpha, rtol=1e-5)


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match="at most 64 positions"):
        numeric.cosine_profile("pre-ln", 1, beta=1.0, T=cw.MAX_POSITIONS + 1, mask="sliding:8", d=64)
    with pytest.raises(ValueError, match="at most 512 positions"):
        Attention(1024, masks.parse("causal"), width=(64, 32))
    with pytest.raises(ValueError, match="not in critical_alpha or diagrams"):
        numeric.critical_alpha("pre-ln", 2, beta=1.0, T=16, mask="sliding:4", d=64)
    with pytest.raises(ValueError, match="not in critical_alpha or diagrams"):
        numeric.trainability_diagram("pre-ln", 2, betas=[1.0], alphas=[0.5], T=8, mask="sliding:4", d=64)
    with pytest.raises(ValueError, match="d_head"):
        numeric.cosine_profile("pre-ln", 1, beta=1.0, T=16, mask="causal", d=64, d_head=48)
    with pytest.raises(ValueError, match="whole numbers"):
        fw.pair_and_selection(1.0, 1.0, 0.5, None, keys=(2.5, 0, 3))
    assert math.isfinite(float(numeric.cosine_profile("pre-ln", 1, beta=1.0, T=8, mask="sliding:4", d=64)[-1]))


#: The normalized tokens' causal table of these tests and of the GPT-2 adapters' (d, d_head) = (64, 32) for
#: T <= 256 (shipped; building it costs about 5 minutes on two cores).
D_NORM, D_HEAD_NORM, T_NORM = D, D_HEAD, T_TABLE


@pytest.fixture(scope="module")
def normalized_tables():
    return cw.causal_tables(D_NORM, D_HEAD_NORM, cw.table_size(T_NORM), "normalized")


def test_normalized_table_matches_the_direct_increments(normalized_tables):
    """Tokens of fixed norm: at 6 random points between the nodes (2 <= n_t < n_u <= 256, b in [0.3, 6], the
    keys' cosine in [0, 0.9]) the tables' pair increment is within 2e-3 of pair_increment(inputs="normalized"),
    the rows' norm and IPR increments within 1e-5 of row_increments at that cosine (measured 2.3e-6), their
    pulls X, J within 5e-4 of row_pulls and the pulls' scale within 1 % (relative; measured 7e-5 and 0.24 %,
    1.6e-4 and 0.41 % at 30 points with b in [0.05, 8]; held as they are, not over HELD_OVER, with 15 nodes in
    b, the scale was 8 % off at b = 0.74 and 60 % at 0.2);
    the Gaussian tokens' table differs from the normalized one by more than 1e-2 somewhere."""
    from numeric.finite_width import row_pulls
    differs = 0.0
    for n_t, n_u, b, rho in _between_nodes(np.random.default_rng(13), 6, (0.3, 6.0), 0.9):
        direct = cw.pair_increment(b, rho, (n_t, 0, n_u - n_t), D_NORM, D_HEAD_NORM, inputs="normalized")
        assert float(normalized_tables.pair(b, rho, n_t, n_u)) == pytest.approx(direct, abs=2e-3)
        norm, ipr = cw.row_increments(b, n_t, D_NORM, D_HEAD_NORM, "normalized", rho)
        assert float(normalized_tables.row(b, n_t, rho=rho)) == pytest.approx(norm, abs=1e-5)
        assert float(normalized_tables.row(b, n_t, kind="ipr", rho=rho)) == pytest.approx(ipr, abs=1e-5)
        X, J, scale = row_pulls(b * b, n_t)
        assert float(normalized_tables.row(b, n_t, kind="X")) == pytest.approx(X, rel=5e-4)
        assert float(normalized_tables.row(b, n_t, kind="J")) == pytest.approx(J, rel=5e-4)
        assert float(normalized_tables.row(b, n_t, kind="scale")) == pytest.approx(scale, rel=1e-2)
        gaussian = cw.row_increments(b, n_t, D_NORM, D_HEAD_NORM)[0]
        differs = max(differs, abs(gaussian - norm))
    assert differs > 1e-2


def test_one_normalized_layer_gets_the_masked_layers_overlaps(normalized_tables):
    """One causal attention layer on tokens of fixed norm (Q = (1 - rho) I + rho, T = 200, d = 64): the
    finite-width closure minus the infinite-width one is masked_overlaps(inputs="normalized") minus
    masked_overlaps(d=None) for the rows' norms and the pairs' overlaps, within the tables' accuracy (2e-4 and 2e-3
    of sigma_v2 (q - p)) plus the closure's dropped rho (1 - rho^2) Yp/(2d) of the pair; the Gaussian-token
    closure misses the norms by more than that."""
    T, beta, sigma_v2 = 200, 1.4, 1.3
    mask = masks.parse("causal")
    infinite_layer = Attention(T, mask)
    for rho, pairs in [(0.0, [(40, 190)]), (0.5, [(20, 150), (120, 199)])]:
        Q = (1.0 - rho) * np.eye(T) + rho
        args = (Q, np.array(beta), np.array(sigma_v2), False)
        infinite = infinite_layer(*args)
        closure = Attention(T, mask, width=(D_NORM, D_HEAD_NORM, "normalized"))(*args) - infinite
        gaussian = Attention(T, mask, width=(D_NORM, D_HEAD_NORM))(*args) - infinite
        scale = sigma_v2 * (1.0 - rho)
        for t, u in pairs:
            kw = dict(rows=(t, u), T=T, p=rho, sigma_v2=sigma_v2)
            layer = np.subtract(fw.masked_overlaps(beta, d=D_NORM, d_head=D_HEAD_NORM, inputs="normalized", **kw),
                                fw.masked_overlaps(beta, **kw))
            dropped = sigma_v2 * rho * (1.0 - rho * rho) * 0.5 / D_NORM      # times Yp <= 1
            assert closure[t, t] == pytest.approx(layer[0], abs=2e-4 * scale + 1e-6)
            assert closure[u, u] == pytest.approx(layer[1], abs=2e-4 * scale + 1e-6)
            assert closure[t, u] == pytest.approx(layer[2], abs=2e-3 * scale + dropped)
            assert abs(gaussian[u, u] - layer[1]) > 2e-4 * scale + 1e-3


def test_normalized_inputs_bad_input():
    """inputs='normalized' needs d, no sliding window, no gain-controlled attention (not derived), and a known
    name."""
    with pytest.raises(ValueError, match="needs a finite width d"):
        numeric.cosine_profile("pre-ln", 1, beta=1.0, T=16, mask="causal", inputs="normalized")
    for arch, mask in (("gain-pre-ln", None), ("gain-post-ln", "causal")):
        with pytest.raises(ValueError, match="gain-controlled"):
            numeric.cosine_profile(arch, 1, beta=1.0, T=16, mask=mask, d=32, inputs="normalized")
    with pytest.raises(ValueError, match="sliding window"):
        numeric.cosine_profile("pre-ln", 1, beta=1.0, T=16, mask="sliding:4", d=32, inputs="normalized")
    with pytest.raises(ValueError, match="inputs must be one of"):
        numeric.cosine_profile("pre-ln", 1, beta=1.0, T=16, mask="causal", d=32, inputs="layernorm")
