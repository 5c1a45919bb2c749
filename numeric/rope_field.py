"""RoPE rows by field quadrature: a row's IPR exact in its i.i.d. part, averaged over its rotary field's law.

A RoPE row of n consecutive keys has log-weights l_s = m_s + sigma zeta_s: zeta_s i.i.d. N(0, 1) (the keys'
private parts, variance sigma^2 = b0^2 (qbar - a)), and the *field* m_s = sqrt(b0^2 a) g_s that the keys' common
part makes through the rotated query (:mod:`derive.rope`; b0^2 = beta^2 ln T Q_tt, ``a`` the rotated overlap).

**The field's law at head size d_h.** Per head, g_s = (R_(t-s) v) . w / norms, v = W_Q x_t and w = W_K c: given
the query v, g is Gaussian with covariance c_v(D) = sum_i omega_i cos(D theta_i) / sum_i omega_i, omega_i =
v_(2i)^2 + v_(2i+1)^2 the query's energy at frequency theta_i. v has i.i.d. Gaussian entries, so the weights
omega_i are i.i.d. exponential: a row's spectrum is random, and only its mean is c(D) (Wick: derive.rope.
score_covariance averages over v). This holds at every width d (it is an effect of the head size, d_h/2
frequencies; it vanishes only as d_h -> oo): ``spectrum="query"``. ``spectrum="mean"`` takes every row at
the mean spectrum (omega_i = 1), the field the tree closure of :mod:`numeric.rope` approximates.

**The IPR given the field is exact.** With 1/Z^2 = int tau e^(-tau Z) d tau (derive.rope.inverse_square) and
y = ln tau,

    E_zeta sum_s A_s^2 = int dy [sum_s (M/F)(y + m_s)] exp(sum_r ln F(y + m_r)),
    F(x) = E exp(-e^(x + sigma zeta)),   M(x) = E e^(2(x + sigma zeta)) exp(-e^(x + sigma zeta)),

which depends on the field only through the histogram of its values m_s: both sums are correlations of that
histogram with ln F and M/F, one FFT each (:func:`_given_fields`). No closure: the only errors are the grid
(step :data:`STEP` in y, linear binning of m) and the average over :data:`SAMPLES` fields drawn with a fixed
seed (:func:`field_ipr` returns its standard error; the within-row variance of the field, whose mean is
known, is the control variate).

It measures the tree closure's error and the random spectrum's share (docs/errata.md 19).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.fft import irfft, next_fast_len, rfft
from scipy.special import logsumexp

from . import validation as check
from .rope import frequencies, pair_mean, rope_setting

#: Grid step in y = ln tau and in the field's values.
STEP = 0.04
#: Fields drawn per row (fixed seeds from :data:`SEED`), at most CHUNK field values at a time.
SAMPLES = 8192
SEED = 20261205
CHUNK = 2**21
#: Trapezoid nodes in zeta for F and M, on |zeta| <= :data:`ZETA_MAX`.
ZETA_NODES, ZETA_MAX = 1201, 9.0
SPECTRA = ("query", "mean")
#: ln F below -LOG_FLOOR counts as -LOG_FLOOR (e^-60 ~ 1e-26).
LOG_FLOOR = 60.0

__all__ = ["SPECTRA", "field_ipr", "fields"]


def fields(n: int, head_dim: int, theta: float, spectrum: str = "query", samples: int = SAMPLES,
           seed: int = SEED) -> np.ndarray:
    """(samples, n) unit-variance rotary fields g_s of a row of n consecutive keys (module docstring)."""
    _check_spectrum(spectrum)
    rng = np.random.default_rng(seed)
    freq = frequencies(head_dim, theta)
    omega = rng.exponential(size=(samples, freq.size)) if spectrum == "query" else np.ones((samples, freq.size))
    omega /= omega.mean(axis=1, keepdims=True)
    cos_part, sin_part = np.sqrt(omega / freq.size) * rng.standard_normal((2, samples, freq.size))
    phase = np.arange(n)[:, None] * freq[None, :]
    return cos_part @ np.cos(phase).T + sin_part @ np.sin(phase).T


def _check_spectrum(spectrum) -> None:
    if spectrum not in SPECTRA:
        raise ValueError(f"spectrum must be one of {SPECTRA}, got {spectrum!r}")


def _chunks(n: int, head_dim: int, theta: float, spectrum: str):
    """:data:`SAMPLES` fields in chunks of at most :data:`CHUNK` values (seeds SEED, SEED + 1, ...)."""
    size = max(16, min(SAMPLES, CHUNK // n))
    for k, start in enumerate(range(0, SAMPLES, size)):
        yield fields(n, head_dim, theta, spectrum, min(size, SAMPLES - start), SEED + k)


def _kernels(sigma: float, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ln F, M/F) on the grid x (module docstring), in log space. ln F is floored at -:data:`LOG_FLOOR`: a key
    there already makes exp(sum ln F) negligible, and the floor keeps both the FFT's round-off (relative to the
    largest |ln F|) and M/F (M is below F e^(2x) where F is floored) small."""
    zeta = np.linspace(-ZETA_MAX, ZETA_MAX, ZETA_NODES)
    log_w = -0.5 * zeta * zeta
    log_w -= logsumexp(log_w)
    u = x[:, None] + sigma * zeta[None, :]
    e = np.exp(np.minimum(u, 700.0))
    log_f = np.maximum(logsumexp(log_w - e, axis=1), -LOG_FLOOR)
    log_m = logsumexp(log_w + 2.0 * u - e, axis=1)
    return log_f, np.exp(log_m - log_f)


def _histograms(m: np.ndarray, lo: float, size: int) -> np.ndarray:
    """(samples, size) linear-binned counts of each row's field values on the grid lo + k STEP."""
    pos = (m - lo) / STEP
    k = np.floor(pos).astype(int)
    frac = pos - k
    rows = np.broadcast_to(np.arange(m.shape[0])[:, None], m.shape)
    h = np.zeros((m.shape[0], size))
    np.add.at(h, (rows, k), 1.0 - frac)
    np.add.at(h, (rows, k + 1), frac)
    return h


def _given_fields(m: np.ndarray, sigma: float, n: int) -> np.ndarray:
    """E_zeta sum_s A_s^2 for each row of field values m (samples, n), by two FFT correlations per row."""
    m_lo, m_hi = float(m.min()) - 2 * STEP, float(m.max()) + 2 * STEP
    size_m = math.ceil((m_hi - m_lo) / STEP) + 2
    y_lo = -math.log(n) - m_hi - 7.0 * sigma - 6.0
    y_hi = -m_lo + 7.0 * sigma + 6.0
    size_y = math.ceil((y_hi - y_lo) / STEP) + 1
    size_x = size_y + size_m - 1
    x = y_lo + m_lo + STEP * np.arange(size_x)                  # x_(j + k) = y_j + m_k
    log_f, ratio = _kernels(sigma, x)
    length = next_fast_len(size_x + size_m, real=True)
    H = np.conj(rfft(_histograms(m, m_lo, size_m), n=length, axis=1))
    S = irfft(H * rfft(log_f, n=length), n=length, axis=1)[:, :size_y]
    R = irfft(H * rfft(ratio, n=length), n=length, axis=1)[:, :size_y]
    return STEP * np.sum(np.maximum(R, 0.0) * np.exp(np.minimum(S, 0.0)), axis=1)


def field_ipr(beta, *, T, rope, q=1.0, p=0.0, n=None, spectrum="query") -> tuple[float, float]:
    """(E sum_s A_s^2, its standard error) of a RoPE row of n consecutive keys (default T) at overlaps (q, p):
    the IPR exact given the field, averaged over :data:`SAMPLES` fields of the law ``spectrum`` (module
    docstring), the log-weight scale b0^2 = beta^2 ln T q (Result 1, eq. 3) split into the i.i.d. part
    b0^2 (q - p) and the field b0^2 p. ``rope``: (theta, head_dim)."""
    theta, head_dim = rope_setting(rope)
    T = check.sequence_length(T, infinite=False)
    n = T if n is None else check.count("n", n, 1)
    if n > T:
        raise ValueError(f"n must be <= T = {T} (a row sees at most T keys), got {n}")
    beta = float(check.nonnegative("beta", check._scalar_real("beta", beta)))
    q, p = (float(x) for x in check.overlaps(q, p, T))
    if p < 0:
        raise ValueError(f"p must be >= 0 (the keys' common part drives the rotary field), got {p!r}")
    _check_spectrum(spectrum)
    if n == 1:
        return 1.0, 0.0
    b0sq = beta * beta * math.log(T) * q
    if p == 0.0:                                    # no field: every row is the exchangeable one
        return float(_given_fields(np.zeros((1, n)), math.sqrt(b0sq * q), n)[0]), 0.0
    values, spread = [], []
    for g in _chunks(n, head_dim, theta, spectrum):
        values.append(_given_fields(math.sqrt(b0sq * p) * g, math.sqrt(b0sq * (q - p)), n))
        spread.append(g.var(axis=1))
    spread_mean = (1.0 - 1.0 / n) * (1.0 - pair_mean(n, head_dim, theta))      # E (1/n) sum_s (g_s - g_bar)^2
    return _control(np.concatenate(values), np.concatenate(spread), spread_mean)


def _control(values: np.ndarray, control: np.ndarray, control_mean: float) -> tuple[float, float]:
    """(mean, standard error) of ``values`` with ``control`` (of known mean) as a regression control variate."""
    c = control - control.mean()
    slope = float(np.dot(c, values - values.mean()) / max(np.dot(c, c), 1e-300))
    adjusted = values - slope * (control - control_mean)
    return float(adjusted.mean()), float(adjusted.std(ddof=1) / math.sqrt(values.size))
