"""numeric.rope_field: a RoPE row's IPR exact given its field, against the exchangeable row and sampled scores
(torch: verify/test_rope.py)."""

import math

import numpy as np
import pytest

from numeric import laplace, rope_field
from numeric.rope import frequencies
from verify import stats

ROPE = (1e4, 32)


@pytest.mark.parametrize("beta, n", [(0.7, 256), (2.5, 256), (1.5, 37)])
def test_without_field_is_the_exchangeable_row(beta, n):
    """At p = 0 the field vanishes and every row is the exchangeable row of n keys: the histogram quadrature (FFT
    correlations, kernels in log space) equals numeric.laplace's finite-n IPR (eq. 2) to 2e-5."""
    T = 256
    value, se = rope_field.field_ipr(beta, T=T, rope=ROPE, n=n)
    b = float(laplace.effective_b(beta, 1.0, 0.0, T))
    assert se == 0.0
    assert value == pytest.approx(float(laplace.row_moment(b, 2.0, n)), rel=2e-5)


def _sampled_ipr(beta, p, T, spectrum, rows=20000, seed=7):
    """IPR of sampled rows, the field built from explicit rotations: g_s = (R_s v) . w / |v|, w ~ N(0, I) (given
    v, Gaussian of covariance sum_i omega_i cos(D theta_i) / sum omega); v ~ N(0, I) ("query") or of equal energy
    at every frequency ("mean")."""
    rng = np.random.default_rng(seed)
    theta, d_h = ROPE
    freq = frequencies(d_h, theta)
    v = rng.standard_normal((rows, d_h // 2, 2))
    if spectrum == "mean":
        v /= np.linalg.norm(v, axis=-1, keepdims=True)
    w = rng.standard_normal((rows, d_h // 2, 2))
    angle = np.arange(T)[:, None] * freq[None, :]                              # (T, d_h/2)
    cos, sin = np.cos(angle), np.sin(angle)
    dot = (v * w).sum(-1)                                                      # v_i . w_i
    cross = v[..., 0] * w[..., 1] - v[..., 1] * w[..., 0]                      # v_i x w_i
    g = (dot @ cos.T - cross @ sin.T) / np.linalg.norm(v.reshape(rows, -1), axis=1, keepdims=True)
    B = beta * math.sqrt(math.log(T))
    logits = B * (math.sqrt(p) * g + math.sqrt(1.0 - p) * rng.standard_normal((rows, T)))
    A = np.exp(logits - logits.max(1, keepdims=True))
    A /= A.sum(1, keepdims=True)
    y2 = (A * A).sum(1)
    return y2.mean(), y2.std(ddof=1) / math.sqrt(rows), rows


@pytest.mark.parametrize("spectrum", rope_field.SPECTRA)
def test_field_quadrature_is_the_sampled_rows_ipr(spectrum):
    """At p/q = 0.9, beta = 1.5, T = 128 the quadrature is within k SE (both errors, Bonferroni over the two
    spectra) of 20000 sampled rows whose field is built from explicit rotations; the other spectrum is rejected
    by the same tolerance (the query's random spectrum lowers the IPR by ~10 % there)."""
    beta, p, T = 1.5, 0.9, 128
    mean, se, n = _sampled_ipr(beta, p, T, spectrum)
    value, value_se = rope_field.field_ipr(beta, T=T, rope=ROPE, p=p, spectrum=spectrum)
    other, _ = rope_field.field_ipr(beta, T=T, rope=ROPE, p=p, spectrum=({*rope_field.SPECTRA} - {spectrum}).pop())
    tol = stats.tolerance(math.hypot(se, value_se), n=n, family=2)
    assert abs(value - mean) <= tol, (value, mean, se, tol)
    assert abs(other - mean) > tol, (other, mean, tol)


@pytest.mark.parametrize("kwargs, match", [
    (dict(spectrum="flat"), "spectrum"), (dict(n=300), "n must be <= T"), (dict(p=-0.001), "p must be >= 0"), (dict(p=-0.1), "p/q must lie"),
    (dict(rope=(1e4,)), "rope must be"), (dict(rope=(1e4, 31)), "head_dim"), (dict(beta=-1.0), "beta"),
    (dict(p=1.0), "p must be below q"), (dict(T=0), "T"),
])
def test_bad_input(kwargs, match):
    args = dict(beta=1.0, T=256, rope=ROPE, p=0.5) | kwargs
    with pytest.raises(ValueError, match=match):
        rope_field.field_ipr(args.pop("beta"), **args)
