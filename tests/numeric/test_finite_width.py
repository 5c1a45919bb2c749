"""numeric.attention_overlaps and its pieces (issue 19): each against a reference it does not compute itself.

References: the infinite-width finite-T moments (numeric.ipr, numeric.ipr_pair), exact
moments of chi-square products, Monte Carlo of explicit Gaussian keys (NumPy), the
identities of the shift-invariant softmax (independent rows, identical rows) and the
small-score limit sigma_a^2/d of the key-selection term (the issue's measurement).
"""

import math
import subprocess
import sys

import numpy as np
import pytest
import sympy

import numeric
from numeric import codegen, codegen_width
from numeric import finite_width as fw
from numeric.smoothing import EXACT
from numeric.two_rows import pair_and_selection
from numeric.width_law import chain_dofs, m21_variance, pair_rule, product_rule


def test_generated_width_formulas_match_derive():
    """numeric/_generated_width.py is what derive.finite_width derives now (python -m numeric.codegen_width)."""
    header, committed = codegen.split_module(codegen_width.GENERATED.read_text())
    regenerated = codegen_width.code_source()
    assert codegen.code_digest(committed) in header, "numeric/_generated_width.py was edited by hand"
    if f"sympy {sympy.__version__};" in header:
        changed = codegen.changed_definitions(committed, regenerated)
        assert not changed, (f"derive changed these finite-width formulas: {changed}; run "
                             "python -m numeric.codegen_width and commit numeric/_generated_width.py")


def test_attention_overlaps_is_exported_lazily():
    """``import numeric`` stays light: finite_width (SciPy) loads on first use of numeric.attention_overlaps."""
    code = ("import sys, numeric; assert 'numeric.finite_width' not in sys.modules; assert 'scipy' not in sys.modules;"
            "f = numeric.attention_overlaps; assert 'numeric.finite_width' in sys.modules; print(f.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "attention_overlaps"


@pytest.mark.parametrize("beta,q,p,T", [(0.5, 1.0, 0.0, 64), (1.2, 1.0, 0.5, 256), (2.0, 1.5, 0.9, 1000),
                                        (3.0, 0.7, 0.3, 32)])
def test_infinite_width_is_the_finite_T_theory(beta, q, p, T):
    """d=None: sigma_v2 (p + (q - p) Y) with the finite-T IPR and pair moment (eq. 23), and the
    gain-controlled form sigma_v2 (q - p)(Y - 1/T)."""
    y2, yp = numeric.ipr(beta, q=q, p=p, T=T), numeric.ipr_pair(beta, q=q, p=p, T=T)
    q_out, p_out = numeric.attention_overlaps(beta, q=q, p=p, T=T, sigma_v2=1.3)
    np.testing.assert_allclose([q_out, p_out], [1.3 * (p + (q - p) * y2), 1.3 * (p + (q - p) * yp)], rtol=1e-9)
    q_gain, p_gain = fw.attention_overlaps(beta, q=q, p=p, T=T, gain=True)
    np.testing.assert_allclose([q_gain, p_gain], [(q - p) * (y2 - 1 / T), (q - p) * (yp - 1 / T)], rtol=1e-8,
                               atol=1e-15)


@pytest.mark.parametrize("kwargs,match", [
    (dict(d=0), "d must be an integer >= 1"),
    (dict(d=64.5), "d must be an integer >= 1"),
    (dict(d=True), "d must be an integer >= 1"),
    (dict(d=64, d_head=0), "d_head must be an integer >= 1"),
    (dict(d=64, d_head=24), "d_head = 24 must divide d = 64"),
    (dict(d_head=32), "needs a finite width d"),
    (dict(d=64, T=None), "finite width needs a finite T"),
    (dict(d=64, T=1), "T must be"),
])
def test_bad_width_is_a_value_error(kwargs, match):
    args = {"T": 128, **kwargs}
    with pytest.raises(ValueError, match=match):
        numeric.attention_overlaps(1.0, **args)


def test_small_scores_add_sigma_a_squared_over_d():
    """sigma_a -> 0 at fixed T: the key-selection term adds sigma_a^2 (1 - 1/T)/d to q_out (Z2 - Y2 =
    b^2 (1 - Y2 - 6 Y3 + 6 Y22) with Y ~ uniform weights), the issue's measured cross term
    0.00128 ~ sigma_a^2/d; and nothing to p_out at orthogonal inputs (rows of independent scores)."""
    T, d, sigma_a = 1000, 100, 0.1
    beta = sigma_a / math.sqrt(math.log(T))
    finite = fw.attention_overlaps(beta, T=T, d=d)
    infinite = fw.attention_overlaps(beta, T=T)
    assert finite[0] - infinite[0] == pytest.approx(sigma_a ** 2 * (1 - 1 / T) / d, rel=0.03)
    assert abs(finite[1] - infinite[1]) < 0.02 * sigma_a ** 2 / d


def test_correction_is_first_order_in_one_over_d():
    """d (q_out(d) - q_out(oo)) converges as d grows (the O(1/d) term): equal at d = 1024 and 4096 to within the
    O(1/d) change, and large enough to matter (sigma_a = 1.5, T = 512, input cosine 0.5)."""
    beta, T = 1.5 / math.sqrt(math.log(512)), 512
    infinite = fw.attention_overlaps(beta, p=0.5, T=T)
    scaled = {}
    for d in (1024, 4096):
        finite = fw.attention_overlaps(beta, p=0.5, T=T, d=d)
        scaled[d] = [d * (f - i) for f, i in zip(finite, infinite)]
    for k in range(2):
        assert scaled[1024][k] > 0.05
        assert scaled[4096][k] == pytest.approx(scaled[1024][k], rel=0.05)


# --- the pieces --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dofs", [(64, 32, 64), (256, 64, 256), (32, 16, 32)])
def test_product_rule_reproduces_chi_square_product_moments(dofs):
    """E xi^k for xi = prod chi2(n)/n: prod_n prod_{j<k} (1 + 2 j/n) exactly (k = 1..4; the rule is Gauss in
    ln xi, so powers of xi are integrated to its convergence, not exactly)."""
    x, w = product_rule(dofs, 16)
    for k in range(1, 5):
        exact = math.prod(math.prod(1 + 2 * j / n for j in range(k)) for n in dofs)
        assert float(w @ x ** k) == pytest.approx(exact, rel=1e-8)


@pytest.mark.parametrize("d,d_head", [(64, 32), (256, 64), (100, 100)])
def test_pair_rule_keeps_the_chain_mean(d, d_head):
    """The two-row rule: E m11^2 = 1, E m11 m21 = 0, E m21^2 + E m22^2 = 1 (each Wishart step is unbiased, so
    E S = b^2 [[1, rho], [rho, 1]]) and E m21^2 the chain's exact value."""
    dofs = chain_dofs(d, d_head)
    m11, m21, m22, w = pair_rule(dofs)
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    assert float(w @ m11 ** 2) == pytest.approx(1.0, rel=1e-6)
    assert abs(float(w @ (m11 * m21))) < 1e-12
    assert float(w @ m21 ** 2) == pytest.approx(m21_variance(dofs), rel=1e-6)
    assert float(w @ (m21 ** 2 + m22 ** 2)) == pytest.approx(1.0, rel=1e-6)


def test_pair_rule_second_moment_of_the_covariance_against_sampled_chain():
    """E S12^2 of the rule (m21 Gaussian given the chi-squares, with the regressed middle term) against a sampled
    Wishart chain tokens -> W_Q -> W_K at rho = 0 (where S12 is carried by m11 m21 alone)."""
    rng = np.random.default_rng(5)
    d, d_head = 16, 8
    m11, m21, m22, w = pair_rule(chain_dofs(d, d_head))
    rule = float(w @ (m11 * m21) ** 2)
    G = np.broadcast_to(np.eye(2), (200_000, 2, 2))
    for n in (d, d_head, d):
        X = rng.standard_normal((G.shape[0], n, 2)) @ np.swapaxes(np.linalg.cholesky(G), -1, -2)
        G = np.swapaxes(X, -1, -2) @ X / n
    draws = G[:, 0, 1] ** 2
    assert abs(rule - draws.mean()) < 5 * draws.std() / math.sqrt(draws.size) + 0.01 * rule


def _two_rows_monte_carlo(S11, S22, S12, T, n, rng):
    """(Yp, W) of two rows sharing T Gaussian keys zeta_s in R^2, log-weights v.zeta_s and v'.zeta_s."""
    C = np.array([[S11, S12], [S12, S22]])
    V = np.linalg.cholesky(C)                           # rows: v, v' with Gram matrix S
    yp, w = np.empty(n), np.empty(n)
    zeta = rng.standard_normal((n, T, 2))
    logits = zeta @ V.T                                   # (n, T, 2)
    logits -= logits.max(1, keepdims=True)
    A = np.exp(logits)
    A /= A.sum(1, keepdims=True)
    yp = (A[..., 0] * A[..., 1]).sum(1)
    m1 = (A[..., 0, None] * zeta).sum(1)
    m2 = (A[..., 1, None] * zeta).sum(1)
    w = (m1 * m2).sum(1)
    return yp, w


@pytest.mark.parametrize("S11,S22,S12,T", [(1.0, 1.0, 0.5, 16), (4.0, 2.0, -1.2, 8), (9.0, 6.0, 3.0, 32)])
def test_pair_and_selection_against_explicit_keys(S11, S22, S12, T):
    rng = np.random.default_rng(11)
    yp, w = _two_rows_monte_carlo(S11, S22, S12, T, 200_000, rng)
    theory = pair_and_selection(S11, S22, S12, T, EXACT)
    for value, draws in zip(theory, (yp, w)):
        assert abs(value - draws.mean()) < 5 * draws.std() / math.sqrt(draws.size)


@pytest.mark.parametrize("S11,S22,T", [(1.0, 4.0, 64), (9.0, 2.0, 16)])
def test_independent_rows_select_nothing(S11, S22, T):
    """S12 = 0: Yp = 1/T (independent rows) and W = 2/T (the softmax shift identity along each row's own axis),
    so Yp_eff = 1/T at every d: uncorrelated rows get no finite-width term."""
    yp, w = pair_and_selection(S11, S22, 0.0, T, EXACT)
    assert yp == pytest.approx(1 / T, rel=1e-7)
    assert w == pytest.approx(2 / T, rel=1e-6)


@pytest.mark.parametrize("b,T", [(0.8, 64), (2.0, 256)])
def test_identical_rows_are_one_row(b, T):
    """S11 = S22 = S12 (almost): Yp -> Y2 and W -> Z2 + Y2 (the orthogonal key component adds Y2) from the one-row
    Stein form, a different derivation."""
    y2, z2 = fw._one_row(b, T, EXACT)
    S = b * b
    yp, w = pair_and_selection(S, S, S * (1 - 1e-9), T, EXACT)
    assert yp == pytest.approx(y2, rel=1e-4)
    assert w == pytest.approx(z2 + y2, rel=1e-3)


def test_one_row_continues_to_the_frozen_limit():
    """Z2 of a frozen row (b -> oo) is E max_s z_s^2 over T Gaussians (sampled here); Z2 grows monotonically in b
    towards it through the interpolated range beyond B_Z."""
    rng = np.random.default_rng(2)
    T = 64
    draws = rng.standard_normal((200_000, T)).max(1) ** 2
    assert abs(fw.frozen_z2(T) - draws.mean()) < 5 * draws.std() / math.sqrt(draws.size)
    z2 = [fw._one_row(b, T, EXACT)[1] for b in (2.0, 8.0, 20.0, 40.0, 200.0)]
    assert all(a < b for a, b in zip(z2, z2[1:]))
    assert z2[-1] < fw.frozen_z2(T)


# --- profiles and diagrams at finite width (the effective moments through numeric.maps.moment_functions) --------

def test_profile_with_width_iterates_the_attention_layer():
    """A stack of bare attention layers at d = 32 (two heads of 16): the profile's rho after each layer is the
    direct quadrature (numeric.attention_overlaps) iterated, to the tables' interpolation error."""
    from derive.layers import SelfAttention, Sequence
    beta, T, d, d_head = 1.2, 64, 32, 16
    profile = numeric.cosine_profile(Sequence(SelfAttention()), 2, beta=beta, T=T, rho0=0.3, d=d, d_head=d_head)
    q, p = 1.0, 0.3
    for block in (1, 2):
        q, p = numeric.attention_overlaps(beta, q=q, p=p, T=T, d=d, d_head=d_head)
        assert profile[block] == pytest.approx(p / q, rel=1e-3)
    infinite = numeric.cosine_profile(Sequence(SelfAttention()), 2, beta=beta, T=T, rho0=0.3)
    assert abs(profile[1] - infinite[1]) > 0.01                    # width matters here (T/d = 2, sigma_a ~ 2.4)


def test_diagram_with_width_is_its_profiles_and_boundary():
    """trainability_diagram(d=) at each grid point is cosine_profile(d=)'s final rho, and its boundary is
    critical_alpha(d=): the width reaches every entry point."""
    T, d, d_head, depth = 64, 32, 16, 4
    betas, alphas = np.array([0.5, 1.5]), np.array([0.2, 1.0])
    diagram = numeric.trainability_diagram("post-ln", depth, betas=betas, alphas=alphas, T=T, d=d, d_head=d_head)
    for i, alpha in enumerate(alphas):
        for j, beta in enumerate(betas):
            rho = numeric.cosine_profile("post-ln", depth, beta=beta, alpha_sa=alpha, T=T, d=d, d_head=d_head)[-1]
            assert diagram.rho[i, j] == pytest.approx(rho, rel=1e-9)
    boundary = numeric.critical_alpha("post-ln", depth, beta=betas, T=T, d=d, d_head=d_head)
    np.testing.assert_allclose(diagram.critical_alpha, boundary, rtol=1e-5)
    assert (diagram.params["d"], diagram.params["d_head"]) == (d, d_head)
    infinite = numeric.trainability_diagram("post-ln", depth, betas=betas, alphas=alphas, T=T, backend="numpy")
    assert np.max(np.abs(diagram.rho - infinite.rho)) > 1e-4


@pytest.mark.parametrize("arch", ["post-ln", "pre-ln", "gain-post-ln"])
@pytest.mark.parametrize("T, d, d_head", [(128, 64, 32), (64, 8, 4)])
def test_fused_finite_width_diagram_is_the_numpy_one(arch, T, d, d_head):
    """The fused kernels on the effective moments' tables (the finite-width diagram's default path) give the NumPy
    path's rho to 1e-9 (measured: at most 2.5e-10; at infinite width the two agree to 2e-16, and the source of
    this small difference is not found), its phases (entropy collapse on the finite-width IPR, first attention layer) and its
    boundary, over a grid reaching deep into the condensed phase (beta up to 5: pair moments beyond the tables,
    recomputed on the NumPy path); with criterion "any" (every layer's IPR) too. At d = 8 the effective moments
    exceed 1 (Y2_eff up to 1.5 where the softmax selects aligned keys): neither path may clip them, and the
    diagram's final rho is the profile's."""
    depth = 6
    betas, alphas = np.array([0.3, 1.0, 1.6, 2.5, 5.0]), np.array([0.1, 0.5, 1.0, 3.0])
    for criterion in ("first", "any"):
        runs = {backend: numeric.trainability_diagram(arch, depth, betas=betas, alphas=alphas, T=T, d=d,
                                                      d_head=d_head, backend=backend, criterion=criterion)
                for backend in ("fused", "numpy")}
        np.testing.assert_allclose(runs["fused"].rho, runs["numpy"].rho, rtol=0, atol=1e-9)
        assert np.array_equal(runs["fused"].phase, runs["numpy"].phase)
        np.testing.assert_allclose(runs["fused"].critical_alpha, runs["numpy"].critical_alpha, rtol=1e-5)
    assert 2 in runs["numpy"].phase and (arch != "post-ln" or d < 64 or set(np.unique(runs["numpy"].phase))
                                         == {0, 1, 2})
    profile = numeric.cosine_profile(arch, depth, beta=betas[-1], alpha_sa=alphas[1], T=T, d=d, d_head=d_head)
    assert runs["fused"].rho[1, -1] == pytest.approx(profile[-1], rel=1e-7)


@pytest.mark.parametrize("kwargs,match", [(dict(d=64, T=None), "needs a finite T"),
                                          (dict(d=64, d_head=48, T=64), "d_head = 48 must divide d = 64"),
                                          (dict(d_head=16, T=64), "needs a finite width d"),
                                          (dict(d=64, T=65, mask="sliding:8"), "at most 64 positions"),
                                          (dict(d=64, T=513, mask="causal"), "at most 512 positions")])
def test_profile_bad_width_is_a_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        numeric.cosine_profile("pre-ln", 3, beta=1.0, **kwargs)


def test_width_tables_are_read_back_from_the_disk_cache(tmp_path, monkeypatch):
    """width_tables(T, d, d_head) saved on its first call in a fresh cache (removing the same table of older code,
    not another writer's temporary file nor another T's table) is read back by a later session
    (lru caches cleared, building refused): the same Y2_eff, Yp_eff and IPR at points inside and between the
    nodes, and the look-up beyond the table (b > B_PAIR_MAX) still the direct quadrature of its (T, d, d_head).
    The per-T base tables come from the session's own cache (shared with the other T = 64 tests)."""
    from numeric import width_tables as wt
    from numeric.tables import B_PAIR_MAX

    T, d, d_head = 64, 32, 16
    wt.row_base(T), wt.pair_base(T)                                 # in memory from here on
    monkeypatch.setenv(wt.CACHE_ENV, str(tmp_path))
    wt.width_tables.cache_clear()
    stale = tmp_path / f"width-T{T}-d{d}-h{d_head}-v1-0123456789abcdef.npz"        # an older code's table
    others = [tmp_path / f"width-T{T}-d{d}-h{d_head}-v1-0123456789abcdef-140-x1y2z3.npz",   # a writer's temporary
              tmp_path / f"width-T{T}0-d{d}-h{d_head}-v1-0123456789abcdef.npz"]         # another T's table
    for path in (stale, *others):
        path.write_bytes(b"")
    built = wt.width_tables(T, d, d_head)
    assert not stale.exists() and all(path.exists() for path in others)
    for path in others:
        path.unlink()
    assert len(list(tmp_path.glob(f"width-T{T}-d{d}-h{d_head}-*.npz"))) == 1
    wt.width_tables.cache_clear()

    def refuse(*args, **kwargs):
        raise AssertionError("built again: the disk cache was not read")

    monkeypatch.setattr(wt.WidthY2Table, "__init__", refuse)
    monkeypatch.setattr(wt.WidthYpTable, "__init__", refuse)
    loaded = wt.width_tables(T, d, d_head)
    b = np.array([0.1, 0.77, 1.9, 3.3])
    rho = np.array([0.0, 0.35, 0.8, 0.99])
    for one, other in ((built[0], loaded[0]), (built[2], loaded[2])):
        np.testing.assert_array_equal(one.at_b(b), other.at_b(b))
    np.testing.assert_array_equal(built[1].at(b, rho), loaded[1].at(b, rho))
    calls = []
    monkeypatch.setattr(wt, "_direct", lambda *args: calls.append(args) or -1.0)
    assert loaded[1].at(np.array([B_PAIR_MAX * 1.5]), [0.5]).tolist() == [-1.0]
    assert calls == [(B_PAIR_MAX * 1.5, 0.5, T, d, d_head)]
    wt.width_tables.cache_clear()


def _masked_rows_monte_carlo(S11, S22, S12, keys, n, rng):
    """(Yp, W) of two rows that share keys[0] keys and see keys[1], keys[2] of their own (explicit Gaussian keys)."""
    shared, own1, own2 = keys
    V = np.linalg.cholesky(np.array([[S11, S12], [S12, S22]]))
    zeta = rng.standard_normal((n, shared + own1 + own2, 2))
    logits = zeta @ V.T
    first, second = slice(0, own1 + shared), slice(own1, None)          # row 1: own then shared; row 2: shared then own
    weights = []
    for rows, column in ((first, 0), (second, 1)):
        x = logits[:, rows, column]
        a = np.exp(x - x.max(1, keepdims=True))
        weights.append(a / a.sum(1, keepdims=True))
    A1, A2 = weights
    yp = (A1[:, own1:] * A2[:, :shared]).sum(1)
    w = ((A1[..., None] * zeta[:, first]).sum(1) * (A2[..., None] * zeta[:, second]).sum(1)).sum(1)
    return yp, w


#: Rows under a mask: (S11, S22, S12, (shared, own of row 1, own of row 2)), each term of W exercised: causal
#: prefixes (one row's own keys), a window (both rows' own keys), a row of one key, disjoint windows.
MASKED_ROWS = [(1.0, 1.0, 0.5, (8, 0, 8)), (4.0, 2.0, 1.2, (6, 4, 0)), (9.0, 6.0, 3.0, (5, 3, 4)),
               (2.0, 2.0, 1.5, (1, 0, 12)), (4.0, 4.0, 3.0, (0, 5, 5))]


@pytest.mark.parametrize("S11,S22,S12,keys", MASKED_ROWS, ids=[str(r[3]) for r in MASKED_ROWS])
def test_masked_rows_against_explicit_keys(S11, S22, S12, keys):
    """Rows with different key sets (derive.finite_width.selection_mixed_integrands): Yp and W within 4 SE of
    400 000 draws of explicit keys (Bonferroni over 10 values: 3.5 SE); the rows' shared keys alone (the two-row
    formula at T = shared keys, or with both rows extended to all keys) fail the same check where they differ."""
    rng = np.random.default_rng(17)
    yp, w = _masked_rows_monte_carlo(S11, S22, S12, keys, 400_000, rng)
    theory = pair_and_selection(S11, S22, S12, None, EXACT, keys=keys)
    for value, draws in zip(theory, (yp, w)):
        se = draws.std() / math.sqrt(draws.size)
        assert abs(value - draws.mean()) <= 4 * se + 1e-12
    if keys[0] >= 2:
        wrong = pair_and_selection(S11, S22, S12, keys[0], EXACT)[1]
        assert abs(wrong - w.mean()) > 10 * w.std() / math.sqrt(w.size)
    wrong = pair_and_selection(S11, S22, S12, sum(keys), EXACT)[1]
    assert abs(wrong - w.mean()) > 10 * w.std() / math.sqrt(w.size)


def test_masked_rows_reject_bad_key_counts():
    with pytest.raises(ValueError, match="keys"):
        pair_and_selection(1.0, 1.0, 0.5, None, EXACT, keys=(0, 0, 3))
    with pytest.raises(ValueError, match="keys"):
        pair_and_selection(1.0, 1.0, 0.5, None, EXACT, keys=(4, -1, 3))
    with pytest.raises(ValueError, match="keys"):
        pair_and_selection(1.0, 1.0, 0.5, None, EXACT, keys=5)
    with pytest.raises(ValueError, match="whole numbers"):
        pair_and_selection(1.0, 1.0, 0.5, None, EXACT, keys=(0.5, 0.5, 0.5))


def test_masked_layer_rows_that_see_every_key_are_the_unmasked_layer():
    """The last causal row sees all T keys: its norm is attention_overlaps' q_out at every width; two rows of one
    key each (the first position of a window of 1) attend to themselves: q_t = sigma_v2 q."""
    for d in (None, 64):
        q_t, q_u, _ = fw.masked_overlaps(1.2, rows=(10, 63), T=64, d=d, d_head=None if d is None else 32, p=0.3)
        assert q_u == pytest.approx(fw.attention_overlaps(1.2, T=64, d=d, d_head=None if d is None else 32,
                                                          p=0.3)[0], rel=1e-9)
    q_t, q_u, p_tu = fw.masked_overlaps(1.2, rows=(3, 7), mask="sliding:1", T=16, p=0.3, sigma_v2=2.0)
    assert (q_t, q_u, p_tu) == pytest.approx((2.0, 2.0, 0.6))


def test_masked_layer_bad_input():
    for kwargs, name in [(dict(rows=(3, 3)), "rows"), (dict(rows=(3, 64)), "rows"), (dict(rows=3), "rows"),
                         (dict(rows=(1, 2), mask=None), "mask"), (dict(rows=(1, 2), mask="sliding:0"), "sliding"),
                         (dict(rows=(1, 2), d=64, d_head=48), "d_head"), (dict(rows=(1.7, 3)), "rows"),
                         (dict(rows=(1, 2), beta=[1.0, 2.0]), "beta must be a number")]:
        with pytest.raises(ValueError, match=name):
            fw.masked_overlaps(**{"beta": 1.0, "T": 64, **kwargs})


def test_diagonal_selection_term_is_the_monte_carlo_moment():
    """Z2_diag = E sum_s A_s^2 z_s^2 (derive.finite_width.selection_diagonal_one_row, from the row moments) at
    b = 2, n = 50 within 4 SE of 200 000 softmax draws; Z2 = E (sum_s A_s z_s)^2 (the whole Gaussian selection term)
    is rejected at the same draws."""
    from numeric import _generated_width as gen
    from numeric.laplace import row_moments
    from numeric.smoothing import EXACT
    b, n = 2.0, 50
    rng = np.random.default_rng(3)
    z = rng.standard_normal((200_000, n))
    A = np.exp(b * z - (b * z).max(1, keepdims=True))
    A /= A.sum(1, keepdims=True)
    draws = (A * A * z * z).sum(1)
    m = row_moments(b, n, rs=(2.0, 3.0, 4.0), square=True, acc=EXACT)
    diag = float(gen.selection_diagonal_one_row(b * b, m[2.0], m[3.0], m[4.0]))
    whole = float(gen.selection_one_row(b * b, m[2.0], m[3.0], m["square"]))
    se = draws.std(ddof=1) / math.sqrt(draws.size)
    assert abs(diag - draws.mean()) < 4 * se
    assert abs(whole - draws.mean()) > 100 * se


@pytest.mark.parametrize("d", [8, 64])
def test_sphere_row_is_the_ipr_of_keys_of_fixed_norm(d):
    """sphere_row: E sum_s A_s^2 for log-weights b z_s with z_s = sqrt(d) x_1/|x| (x ~ N(0, I_d)), b = 2, n = 64,
    within 4 SE of 320 000 draws; the Gaussian-score IPR is rejected (the sphere law's lighter tails lower it)."""
    from numeric.laplace import row_moments
    from numeric.smoothing import EXACT
    b, n = 2.0, 64
    rng = np.random.default_rng(11)
    means = []
    for _ in range(8):
        g, rest = rng.standard_normal((40_000, n)), rng.chisquare(d - 1, size=(40_000, n))
        z = math.sqrt(d) * g / np.sqrt(g * g + rest)
        A = np.exp(b * z - (b * z).max(1, keepdims=True))
        A /= A.sum(1, keepdims=True)
        means.append((A * A).sum(1).mean())
    mean, se = np.mean(means), np.std(means, ddof=1) / math.sqrt(len(means))
    assert abs(fw.sphere_row(b, n, d) - mean) < 4 * se
    assert abs(row_moments(b, n, acc=EXACT)[2.0] - mean) > 10 * se
    assert fw.sphere_row(b, n, 10**7) == pytest.approx(row_moments(b, n, acc=EXACT)[2.0], rel=1e-5)


def test_sphere_row_resolves_large_widths():
    """At b = 12 and 20 (n = 4096) the sphere law's nodes follow b: doubling them moves sphere_row by < 1e-9 at
    d = 8 (Gauss-Jacobi) and d = 256 (trapezoid), and at d = 10^7 it is the Gaussian IPR to 1e-5 (a fixed 96-node
    rule was 5e-2 off at d = 256, b = 20)."""
    from numeric.laplace import row_moments
    from numeric.smoothing import EXACT
    for b in (12.0, 20.0):
        for d in (8, 256):
            refined = fw._sphere_nodes(d, 2 * fw._sphere_count(b, d) - 1)
            z, w = refined
            from numeric.laplace import _row_grid
            from numeric.smoothing import _kernels, log_L
            t, dt = _row_grid(b, 4096, 2.0, 2.0, EXACT, EXACT.h)
            G, L, M = _kernels(t[:, None] + b * z[None, :], (2.0,))
            fine = float(4096 * dt * (M[2.0] @ w) @ np.exp(4095 * log_L(G @ w, L @ w)))
            assert fw.sphere_row(b, 4096, d) == pytest.approx(fine, abs=1e-9)
        assert fw.sphere_row(b, 4096, 10**7) == pytest.approx(row_moments(b, 4096, acc=EXACT)[2.0], abs=1e-5)


@pytest.mark.parametrize("kwargs,match", [(dict(inputs="layernorm"), "inputs must be one of"),
                                          (dict(n=300), "n must lie in"), (dict(d=None, d_head=None), "needs a finite d"),
                                          (dict(d=4, d_head=None, inputs="normalized"), "d >= 8"),
                                          (dict(beta=np.array([1.0, 2.0])), "beta must be a number")])
def test_output_norm_bad_input(kwargs, match):
    args = {"beta": 1.0, "T": 256, "d": 64, "d_head": 32, **kwargs}
    with pytest.raises(ValueError, match=match):
        fw.output_norm(**args)


def _key_projections(shape, d, rho, rng):
    """Explicit normalized keys x = sqrt(rho) c + sqrt(1 - rho) g (|c|^2 = d along axis 3, g ~ N(0, I_d)) scaled to
    norm sqrt(d): their projections on axes 1 and 2 (orthogonal to c) over sqrt(1 - rho), shape (..., 2); the
    chi-square of the other d - 3 coordinates is drawn directly."""
    g = rng.standard_normal(shape + (3,))
    rest = rng.chisquare(d - 3, size=shape + (1,))
    norm2 = rho * d + 2.0 * math.sqrt(rho * (1.0 - rho) * d) * g[..., 2:] + (1.0 - rho) * ((g * g).sum(-1, keepdims=True)
                                                                                         + rest)
    return math.sqrt(d) * g[..., :2] / np.sqrt(norm2)


def _sphere_pair_monte_carlo(S, keys, d, draws, rng, rho=0.0):
    """Yp = E sum A_s A'_s for rows with key counts ``keys`` = (n, m1, m2) whose keys are normalized tokens at input
    cosine rho (:func:`_key_projections`; at rho = 0 points uniform on the sphere of radius sqrt(d)), log-weights
    (l, l') = L zeta with L L^T = S."""
    n, m1, m2 = keys
    size = n + m1 + m2
    L = np.linalg.cholesky(np.array([[S[0], S[2]], [S[2], S[1]]]))
    out = []
    for _ in range(draws // 2000):
        logits = _key_projections((2000, size), d, rho, rng) @ L.T
        rows = [logits[:, :n + m1, 0], np.concatenate([logits[:, :n, 1], logits[:, n + m1:, 1]], axis=1)]
        A = [np.exp(r - r.max(1, keepdims=True)) for r in rows]
        A = [a / a.sum(1, keepdims=True) for a in A]
        out.append((A[0][:, :n] * A[1][:, :n]).sum(1))
    return np.concatenate(out)


@pytest.mark.parametrize("S,keys,d,rho", [((4.5, 4.5, 1.35), (96, 0, 0), 32, 0.0), ((4.5, 4.5, 1.35), (32, 0, 0), 8, 0.0),
                                          ((9.0, 9.0, 5.4), (40, 0, 40), 64, 0.0),
                                          ((4.5, 4.5, 0.0), (64, 0, 0), 16, 0.0),
                                          ((9.0, 9.0, 2.7), (48, 0, 48), 16, 0.5)])
def test_sphere_pair_moment_is_yp_of_keys_of_fixed_norm(S, keys, d, rho):
    """pair_and_selection(sphere=d, cosine=rho): Yp of rows whose keys are normalized tokens, within 4 SE of
    40 000 draws of explicit keys (shared keys, causal prefixes; at rho = 0.5 the keys' law of
    numeric.width_law.key_density); the Gaussian-key Yp is rejected (measured: 12 % higher at d = 64,
    rho = 0.6; at S12 = 0 the sphere law's dependence lowers Yp below 1/n), and so is the sphere law where the
    input cosine is 0.5."""
    rng = np.random.default_rng(23)
    draws = _sphere_pair_monte_carlo(S, keys, d, 40_000, rng, rho)
    se = draws.std() / math.sqrt(draws.size)
    yp, w, w_diag = pair_and_selection(S[0], S[1], S[2], None, keys=keys, sphere=d, cosine=rho)
    assert abs(yp - draws.mean()) < 4 * se
    gaussian, w_gauss = pair_and_selection(S[0], S[1], S[2], None, keys=keys)
    assert abs(gaussian - draws.mean()) > 6 * se
    assert w == pytest.approx(w_gauss, rel=1e-12) and 0.0 < w_diag
    if rho > 0:
        sphere = pair_and_selection(S[0], S[1], S[2], None, keys=keys, sphere=d)[0]
        assert abs(sphere - draws.mean()) > 6 * se


@pytest.mark.parametrize("rho", [0.3, 0.7])
def test_key_density_is_the_law_of_normalized_keys(rho):
    """numeric.width_law.key_density at d = 16: its one-projection moments E zeta^2, E zeta^4 and P(|zeta| > 2.5)
    within 4 SE of 10^6 explicit normalized keys (:func:`_key_projections`), the sphere law's rejected; at
    rho -> 0 it is the sphere law pointwise; its two-projection law integrates to 1 with E |zeta|^2 = 2 E zeta^2."""
    from numeric.width_law import key_density
    d = 16
    zeta = _key_projections((1_000_000,), d, rho, np.random.default_rng(29))[:, 0]
    r, f = key_density(d, rho, 1)
    sphere = (1.0 - np.minimum(r * r / d, 1.0)) ** (0.5 * (d - 3))
    sphere /= 2.0 * np.trapezoid(sphere, r)
    for g, value in ((lambda x: x ** 2, zeta ** 2), (lambda x: x ** 4, zeta ** 4),
                     (lambda x: (x > 2.5).astype(float), (np.abs(zeta) > 2.5).astype(float))):
        se = value.std() / math.sqrt(value.size)
        assert abs(2.0 * np.trapezoid(g(r) * f, r) - value.mean()) < 4 * se
        assert abs(2.0 * np.trapezoid(g(r) * sphere, r) - value.mean()) > 4 * se
    r0, f0 = key_density(d, 1e-12, 1)
    exact = (1.0 - np.minimum(r0 * r0 / d, 1.0)) ** (0.5 * (d - 3))
    np.testing.assert_allclose(f0, exact / (2.0 * np.trapezoid(exact, r0)), rtol=0, atol=5e-8)   # 16-node mixture
    r2, f2 = key_density(d, rho, 2)
    assert np.trapezoid(2 * np.pi * r2 * f2, r2) == pytest.approx(1.0, abs=1e-5)
    assert np.trapezoid(2 * np.pi * r2 ** 3 * f2, r2) == pytest.approx(2 * 2.0 * np.trapezoid(r * r * f, r), rel=1e-5)


def test_normalized_pair_rule_keeps_the_derived_moments():
    """normalized_pair_rule (tokens of fixed norm): E m11^2 = E A = 1, E m11 m21 = 0, E m22^2 and E m11^2 m21^2 as
    derive.finite_width.normalized_chain_factor gives them (E r^2 = 1/n1, chi-square moments), to 2e-3 (the
    regression of c_3 on A is the rule's one approximation); the Gaussian chain's rule has E m11^4 larger by
    (2/n1)(1 + 2/n2)(1 + 2/n3). At rho = 0.5 both rows' S_ii have the same variance (a first version fixed
    only row 1's norm: 13 % apart) and E S12 is the normalized tokens' mean cosine rho (1 - (1 - rho^2)/(2 n1))."""
    from derive import finite_width as dfw
    from numeric.width_law import normalized_pair_rule
    d, d_head = 64, 16
    m11, m21, m22, w = normalized_pair_rule(chain_dofs(d, d_head))
    n1, n2, n3 = chain_dofs(d, d_head)
    chain = dfw.normalized_chain_factor()
    c2, c3 = chain["c"]
    cp2, cp3 = chain["cp"]
    moments = {chain["r"]: lambda k: sympy.Rational(1, n1),
               c2: lambda k: sympy.rf(sympy.Rational(n2, 2), k) * 2 ** k,
               c3: lambda k: sympy.rf(sympy.Rational(n3, 2), k) * 2 ** k,
               cp2: lambda k: sympy.rf(sympy.Rational(n2 - 1, 2), k) * 2 ** k,
               cp3: lambda k: sympy.rf(sympy.Rational(n3 - 1, 2), k) * 2 ** k}

    def mean(expr):
        total = sympy.Integer(0)
        for term in sympy.Add.make_args(sympy.expand(expr.subs(dict(zip(dfw.n_syms, (n1, n2, n3)))))):
            value = sympy.Integer(1)
            for base, power in term.as_powers_dict().items():
                value *= moments[base](int(power)) if base in moments else base ** power
            total += value
        return float(total)
    assert float(w @ m11 ** 2) == pytest.approx(1.0, abs=1e-6)          # the product rule's fine grid
    assert abs(float(w @ (m11 * m21))) < 1e-12
    assert float(w @ m22 ** 2) == pytest.approx(mean(chain["m22"] ** 2), rel=2e-3)
    second = chain["m11"] ** 2 * (chain["m21_mean"] ** 2 + chain["m21_variance"])
    assert float(w @ (m11 * m21) ** 2) == pytest.approx(mean(second), rel=2e-3)
    g11, _, _, gw = pair_rule(chain_dofs(d, d_head))
    from numeric._generated_width import covariance_from_factor
    n11, n21, n22, nw = normalized_pair_rule(chain_dofs(d, d_head), rho=0.5)       # both rows' norms stay fixed
    S11, S12, S22 = covariance_from_factor(1.0, 0.0, n11, n21, n22)
    variance = lambda S: float(nw @ S ** 2 - (nw @ S) ** 2)
    assert variance(S22) == pytest.approx(variance(S11), rel=2e-2)
    assert float(nw @ S12) == pytest.approx(0.5 * (1.0 - 0.75 / (2 * n1)), abs=2e-3)       # the mean cosine
    excess = (2.0 / n1) * (1.0 + 2.0 / n2) * (1.0 + 2.0 / n3)          # E m11^4: the query norm's chi-square
    assert float(gw @ g11 ** 4) - float(w @ m11 ** 4) == pytest.approx(excess, rel=5e-3)


def test_common_direction_is_zero_at_orthogonal_inputs_and_first_order_in_one_over_d():
    """Step 6 of derive.finite_width: the common direction's changes vanish at rho = 0, scale as 1/d, and at
    rho = 0.5, b^2 = 2.8 (T = 256, beta = 1) lower the pair overlap by about (1 - rho^2)/(2d) rho plus the
    pull of both rows (X_t + X_u ~ 4.7: 0.0166 at d = 64, measured against torch in verify/test_width.py)."""
    assert fw.common_direction(4.0, 0.0, 64, (100, 256), 0.01) == ((0.0, 0.0), 0.0)
    b2 = math.log(256) * 0.5
    (dq64, _), dp64 = fw.common_direction(b2, 0.5, 64, (101, 256), 0.0125)
    (dq640, _), dp640 = fw.common_direction(b2, 0.5, 640, (101, 256), 0.0125)
    assert dp64 == pytest.approx(10 * dp640, rel=1e-12) and dq64 == pytest.approx(10 * dq640, rel=1e-12)
    assert -0.018 < dp64 < -0.015


@pytest.mark.parametrize("kwargs,match", [(dict(d=None, d_head=None), "needs a finite width"),
                                          (dict(d=4, d_head=None), "needs a finite width d >= 8"),
                                          (dict(gain=True), "gain-controlled attention of normalized")])
def test_normalized_overlaps_bad_input(kwargs, match):
    args = {"beta": 1.0, "T": 64, "d": 64, "d_head": 32, "inputs": "normalized", **kwargs}
    with pytest.raises(ValueError, match=match):
        fw.attention_overlaps(**args)
