"""derive.causal: the overlaps of masked attention rows, against the uniform law, the encoder and sampling."""

import numpy as np
import pytest
import sympy

from derive import attention, causal
from derive.symbols import p, q, sigma_v2
from verify import stats

ORTHOGONAL = {causal.qbar: 1, causal.pbar: 0, causal.r_u: 0, causal.r_t: 0, causal.r_o: 0}


def test_uniform_causal_averaging_gives_the_square_root_law():
    """At beta -> 0 the outputs of orthogonal tokens at positions t < u have cosine sqrt((t+1)/(u+1))."""
    uniform = causal.uniform_moments()
    norm = causal.value_overlap(True, False).subs(uniform).subs(ORTHOGONAL)
    overlap = causal.nested(causal.value_overlap(False, False).subs(uniform)).subs(ORTHOGONAL)
    cosine = sympy.simplify(overlap / sympy.sqrt(norm * norm.subs(causal.n_t, causal.n_u)))
    assert sympy.simplify(cosine - sympy.sqrt(causal.n_t / causal.n_u)) == 0


def test_full_attention_is_the_encoder_map():
    """With every row seeing all T keys (n_t = n_u = n_s = T, Pi = Yp) the map is eq. (23)'s."""
    T = sympy.Symbol("T", positive=True, integer=True)
    full = {causal.n_t: T, causal.n_u: T, causal.n_s: T, causal.qbar: q, causal.pbar: p, causal.Pi: causal.Yp}
    for gain in (False, True):
        encoder_q = attention.value_overlap(gain, True).subs(attention.T_sym, T)
        encoder_p = attention.value_overlap(gain, False).subs(attention.T_sym, T)
        assert sympy.simplify(causal.value_overlap(True, gain).subs(full) - encoder_q) == 0
        yp = sympy.Symbol("Yp", positive=True)
        assert sympy.simplify(causal.value_overlap(False, gain).subs(full) - encoder_p.subs(yp, causal.Yp)) == 0


def test_rows_without_shared_keys_average_their_own_keys():
    """Windows far apart share no key: the overlap is sigma_v2 r_o, and gain control removes it."""
    apart = {causal.n_s: 0, causal.Pi: 0}
    assert sympy.simplify(causal.value_overlap(False, False).subs(apart) - sigma_v2 * causal.r_o) == 0
    assert causal.value_overlap(False, True).subs(apart) == 0


R_O = 0.1


def _sampled_overlap(n_t, n_u, n_s, qbar, pbar, b, rho, samples, rng, gain):
    """E S_t.S_u/d over Gaussian scores and exact Gram means.

    Keys 0..n_t-1 are row t's, row u's are n_t-n_s..n_t-n_s+n_u-1 (its first n_s keys shared). Each row's
    keys are exchangeable (norms qbar, overlaps pbar); keys that only one row sees overlap R_O across the
    rows. The scores of the two rows are b z with corr(z_t, z_u) = rho. Returns per-sample overlaps and the
    moments (Y2 of row t, Pi on the shared keys) that the derived formula takes.
    """
    K = n_t - n_s + n_u
    Q = pbar + (qbar - pbar) * np.eye(K)
    Q[:n_t - n_s, n_t:] = Q[n_t:, :n_t - n_s] = R_O
    t_keys, u_keys = np.arange(n_t), np.arange(n_t - n_s, K)
    shared = rng.standard_normal((samples, K))
    zt = np.sqrt(rho) * shared + np.sqrt(1 - rho) * rng.standard_normal((samples, K))
    zu = np.sqrt(rho) * shared + np.sqrt(1 - rho) * rng.standard_normal((samples, K))
    A = np.zeros((samples, K))
    B = np.zeros((samples, K))
    A[:, t_keys] = _softmax(b * zt[:, t_keys])
    B[:, u_keys] = _softmax(b * zu[:, u_keys])
    if gain:
        A[:, t_keys] -= 1.0 / n_t
        B[:, u_keys] -= 1.0 / n_u
    overlap = np.einsum("ns,sv,nv->n", A, Q, B)
    y2 = (_softmax(b * zt[:, t_keys]) ** 2).sum(-1)
    common = np.arange(n_t - n_s, n_t)
    pi = (_softmax(b * zt[:, t_keys])[:, n_t - n_s:] * _softmax(b * zu[:, u_keys])[:, :n_s]).sum(-1)
    return overlap, y2, pi, common


def _softmax(a):
    a = a - a.max(-1, keepdims=True)
    e = np.exp(a)
    return e / e.sum(-1, keepdims=True)


def _decomposition_residuals(layouts, seed):
    """Per sample and layout (x gain): sampled overlap minus the derived one with the sampled Y2 and Pi."""
    rng = np.random.default_rng(seed)
    qbar, pbar = 1.3, 0.4
    columns = []
    for n_t, n_u, n_s in layouts:
        for gain in (False, True):
            overlap, y2, pi, _ = _sampled_overlap(n_t, n_u, n_s, qbar, pbar, 1.7, 0.5, 40_000, rng, gain)
            means = {causal.qbar: qbar, causal.pbar: pbar, causal.r_u: pbar, causal.r_t: pbar, causal.r_o: R_O,
                     causal.n_t: n_t, causal.n_u: n_u, causal.n_s: n_s, sigma_v2: 1}
            formula = sympy.lambdify(causal.Pi, causal.value_overlap(False, gain).subs(means))
            columns.append(overlap - formula(pi))
    return np.stack(columns, axis=1)


def test_class_decomposition_is_exact_for_nested_and_disjoint_key_sets():
    """Causal prefixes (row t's keys inside row u's) and windows that share no key: the class sums are
    exact for exchangeable keys, so the derived overlap with the sampled Y2 and Pi equals the sampled one."""
    res = _decomposition_residuals(((5, 9, 5), (2, 7, 2), (3, 5, 0)), seed=3)
    stats.assert_agrees(np.zeros(res.shape[1]), res.mean(0), res.std(0, ddof=1) / np.sqrt(len(res)), n=len(res),
                        what="derived minus sampled overlap (nested and disjoint)")


def test_partly_shared_windows_within_the_declared_approximation():
    """Windows that share some keys: the masses on the shared keys are taken independent (E m_t m_u =
    E m_t E m_u), which the sampled rows (score correlation 0.5) show to be off by ~1.5 % of the overlap."""
    res = _decomposition_residuals(((6, 6, 3), (4, 7, 2)), seed=5)
    stats.assert_agrees(np.zeros(res.shape[1]), res.mean(0), res.std(0, ddof=1) / np.sqrt(len(res)), n=len(res),
                        allowance=0.01, reason="independent shared-key masses (windows only; 0.4 overlap scale)",
                        what="derived minus sampled overlap (partly shared windows)")


def test_class_decomposition_rejects_a_wrong_weight():
    """The same check fails if the shared-key class carried m_t m_u instead of m_t m_u - Pi."""
    rng = np.random.default_rng(4)
    overlap, y2, pi, _ = _sampled_overlap(5, 9, 5, 1.3, 0.4, 1.7, 0.5, 40_000, rng, False)
    means = {causal.qbar: 1.3, causal.pbar: 0.4, causal.r_u: 0.4, causal.r_t: 0.4, causal.r_o: R_O,
             causal.n_t: 5, causal.n_u: 9, causal.n_s: 5, sigma_v2: 1}
    wrong = sympy.lambdify(causal.Pi, (causal.value_overlap(False, False) + sigma_v2 * causal.Pi * causal.pbar)
                           .subs(means))
    diff = overlap - wrong(pi)
    with pytest.raises(AssertionError):
        stats.assert_agrees(0.0, diff.mean(), diff.std(ddof=1) / np.sqrt(diff.size), n=diff.size)


@pytest.mark.parametrize("mask", ["causal", "sliding:1", "sliding:5", "sliding:16"])
def test_key_counts_are_the_allowed_matrix_rows_overlap(mask):
    """Mask.key_counts(t, u) (shared, own to t, own to u) counted from the allowed (T, T) matrix itself."""
    from derive import masks
    m, T = masks.parse(mask), 20
    allowed = m.allowed(T)
    for t in range(T):
        for u in range(T):
            both = int(np.sum(allowed[t] & allowed[u]))
            assert m.key_counts(t, u) == (both, int(allowed[t].sum()) - both, int(allowed[u].sum()) - both)
