"""Position groups (numeric.position_groups): exact algebra on a group-constant Q, and the reduced causal
theory against the full one."""

import numpy as np
import pytest

from derive import masks
from numeric import causal
from numeric.position_groups import PositionGroups, boundaries


def _expanded(groups, d, O):
    """The T x T group-constant matrix of group values d (K,), O (K, K), built entry by entry."""
    T = groups.T
    member = np.searchsorted(groups.hi, np.arange(T), side="right")
    Q = O[member[:, None], member[None, :]].copy()
    Q[np.arange(T), np.arange(T)] = d[member]
    return Q


def _state(groups, seed):
    """A state on the groups' positions whose group values are a random symmetric (d, O)."""
    rng = np.random.default_rng(seed)
    K = groups.count
    O = rng.uniform(0.1, 0.6, (K, K))
    O = (O + O.T) / 2
    d = rng.uniform(1.0, 2.0, K)
    Q = np.zeros((groups.positions.size,) * 2)
    Q[groups.rep[:, None], groups.rep[None, :]] = O
    Q[groups.rep, groups.rep] = d
    Q[groups.rep, groups.twin] = np.where(groups.size > 1, np.diag(O), d)
    return Q, d, O


def test_boundaries_cover_the_positions_with_a_cut_at_the_late_quarter():
    edges = boundaries(256, 24)
    assert edges[0] == 0 and edges[-1] == 256 and np.all(np.diff(edges) > 0)
    assert 192 in edges and edges.size - 1 >= 24
    assert np.array_equal(edges[:6], np.arange(6))                       # the first positions stand alone


@pytest.mark.parametrize("T, count", [(40, 12), (256, 24), (1000, 32)])
def test_prefix_sums_are_those_of_the_expanded_matrix(T, count):
    groups = PositionGroups(T, count)
    Q, d, O = _state(groups, T)
    full = _expanded(groups, d, O)
    C_full, D_full = causal._prefix_sums(full)
    ends = np.concatenate([[0], groups.positions + 1])
    C, D = groups.prefix_sums(Q)
    np.testing.assert_allclose(C, C_full[np.ix_(ends, ends)], rtol=1e-12)
    np.testing.assert_allclose(D, D_full[ends], rtol=1e-12)


@pytest.mark.parametrize("index", [None, "late", np.array([0, 3, 17, 30, 31])])
def test_readings_are_those_of_the_expanded_matrix(index):
    groups = PositionGroups(40, 12)
    Q, d, O = _state(groups, 1)
    full = _expanded(groups, d, O)
    positions = None if index is None else causal.positions(index, 40)
    np.testing.assert_allclose(groups.ratio(Q, positions), causal.ratio(full, positions), rtol=1e-12)
    np.testing.assert_allclose(groups.by_position(Q), causal.by_position(full), rtol=1e-12)


def test_singleton_groups_are_the_full_theory():
    kw = dict(beta=np.array([0.5, 1.6]), alpha_sa=0.7, T=24)
    for arch in ("post-ln", "pre-ln"):
        np.testing.assert_allclose(causal.cosine_profile(arch, 6, groups=24, **kw),
                                   causal.cosine_profile(arch, 6, **kw), rtol=0, atol=1e-12)


@pytest.mark.parametrize("arch, beta, alpha_sa, extra", [("post-ln", 1.0, 1.0, {}), ("post-ln", 2.0, 0.6, {}),
                                                        ("pre-ln", 0.5, 0.5, {"sigma_v2": 4.0})])
def test_24_groups_follow_the_full_theory_at_T_128(arch, beta, alpha_sa, extra):
    """The group-constant reduction's error: within 2e-3 of the full closure at every block (all pairs and the
    late quarter), where the profiles themselves move by ~0.5."""
    kw = dict(beta=beta, alpha_sa=alpha_sa, T=128, **extra)
    for tokens in (None, "late"):
        full = causal.cosine_profile(arch, 20, tokens=tokens, **kw)
        grouped = causal.cosine_profile(arch, 20, tokens=tokens, groups=24, **kw)
        assert np.ptp(full) > 0.2
        np.testing.assert_allclose(grouped, full, rtol=0, atol=2e-3)


@pytest.mark.parametrize("arch", ["post-ln", "pre-ln"])
def test_16_groups_follow_the_full_theory_at_T_256(arch):
    """The reduction ``sigprop bench --causal`` times its 128 x 128 diagram with: 16 groups at T = 256 within
    5e-3 of the full closure at every one of 30 blocks, all pairs and late quarter, over beta across beta_c and
    alpha_sa from 0.2 to 6 (measured: 3.3e-3 at most, 1.6e-4 after 60 blocks)."""
    B, A = np.meshgrid([0.3, 1.2, 2.5], [0.2, 1.5, 6.0])
    kw = dict(beta=B.ravel(), alpha_sa=A.ravel(), T=256)
    for tokens in (None, "late"):
        full = causal.cosine_profile(arch, 30, tokens=tokens, **kw)
        grouped = causal.cosine_profile(arch, 30, tokens=tokens, groups=16, **kw)
        assert np.ptp(full) > 0.2
        np.testing.assert_allclose(grouped, full, rtol=0, atol=5e-3)


def test_grouped_diagram_has_the_full_phases():
    kw = dict(betas=np.array([0.3, 1.0, 3.0]), alphas=np.array([0.2, 1.0, 3.0]), T=48)
    full = causal.trainability_diagram("post-ln", 8, **kw)
    grouped = causal.trainability_diagram("post-ln", 8, groups=12, **kw)
    assert np.array_equal(grouped.phase, full.phase) and len(set(full.phase.ravel())) >= 2
    np.testing.assert_allclose(grouped.rho, full.rho, atol=3e-3)
    np.testing.assert_allclose(grouped.critical_alpha, full.critical_alpha, rtol=0.02)


@pytest.mark.parametrize("kw, match", [(dict(groups=3), "groups must be an integer >= 8"),
                                       (dict(groups=16, mask="sliding:8"), "groups: position groups serve"),
                                       (dict(groups=2.5), "groups")])
def test_bad_groups_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        causal.cosine_profile("post-ln", 3, beta=1.0, T=64, **{"mask": "causal", **kw})


def test_groups_need_a_causal_mask_without_rope():
    with pytest.raises(ValueError, match="RoPE"):
        causal.Attention(32, masks.Mask(), rope=(10000.0, 16), groups=8)
