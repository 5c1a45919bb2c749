"""Finite width: one attention layer's output overlaps with their O(1/d) terms, at finite T and any beta (issue 19).

The derivation is :mod:`derive.finite_width` (assumptions A1-A4 there;
docs/design.md "Finite width"). For input overlaps (q, p), width d, head width
d_h and T keys, one attention layer outputs

    q_out = sigma_v2 (p + (q - p) Y2_eff),   p_out = sigma_v2 (p + (q - p) Yp_eff)

(gain control: sigma_v2 (q - p)(Y_eff - 1/T)), the infinite-width map (eq. 23)
at the effective moments

    Y2_eff = E_xi [(1 - 1/d) Y2(b sqrt(xi)) + Z2(b sqrt(xi))/d],
    Yp_eff = E_S  [(1 - 2/d) Yp(S) + W(S)/d],

where b^2 = beta^2 ln T q (q - p) (paper eq. 9 with Result 1's scale) and

- Z2 = Y2 + b^2 (1 - Y2 - 6 Y3 + 6 Y22) and W(S) are the key-selection terms:
  the softmax picks keys aligned with its query direction, so the keys it
  weights overlap (their O(1/sqrt d) overlaps add up over T^2 pairs to O(b^2/d),
  which is larger than the 1/T of Y2 once T >~ d/b^2);
- xi and S are the finite-width law of the rows' score scale and covariance:
  a chain of three Wishart steps with d, d_h and d degrees of freedom
  (:mod:`numeric.width_law`). This is the score distribution's own finite-d_h
  correction; it is large where attention is near condensation (T Yp from 1 to
  1.6-4 at orthogonal inputs, d_h = 32-64, T >> d) and is kept, not expanded: the averages are Gauss
  quadratures over the exact law, not a Taylor series in 1/d.

Tokens of fixed norm (``inputs="normalized"``: a LayerNorm or RMSNorm before attention, as in every real
stack; derive.finite_width steps 5-6) change three things: the diagonal keys lose their norm coupling
(Y2_eff = Y2 + (Z2 - Z2_diag)/d, Yp_eff = Yp + (W - W_diag)/d), the keys' projections follow the law of
:func:`numeric.width_law.key_density` (the sphere law at p = 0) instead of N(0, 1), and at p > 0 the common
direction's share of the outputs moves by O(1/d) (:func:`common_direction`): two normalized keys' mean
cosine is below p/q, and the softmax selects keys of small raw norm, whose normalized common component is
smaller.

``d=None`` is infinite width: the exact finite-T theory of :mod:`numeric.finite_t`.
:func:`attention_overlaps` evaluates the quadratures directly (about 2.5-3 s of
CPU per point); :mod:`numeric.width_tables` tabulates Y2_eff and Yp_eff for depth
profiles and diagrams.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from . import _generated_width as gen
from . import validation as check
from .blas import single_threaded_blas
from .laplace import finite_state, plain, row_moments
from .smoothing import EXACT, TABLE, Accuracy
from .two_rows import pair_and_selection
from .width_law import chain_dofs, normalized_pair_rule, pair_rule, product_rule

#: Widths beyond which Z2 is read between Z2(B_Z) and its frozen limit (cancellation in the Stein form).
B_Z = 30.0
#: Gauss nodes of the one-row average over xi (Y2_eff): converged to ~1e-10 relative.
N_XI = 16
#: Gauss nodes of the two-row average over S (numeric.width_law.pair_rule); see tests/numeric/test_finite_width.py.
N_PAIR = (3, 4, 4, 3, 8)

__all__ = ["attention_overlaps", "ipr_width", "masked_overlaps", "output_norm", "pair_effective", "row_effective",
           "row_pair", "sphere_row", "width"]


def width(d, d_head):
    """Checked (d, d_head): integers >= 1 with d_head dividing d (d_head=None: one head, d_head = d).

    ``d=None`` is infinite width; then d_head must be None too.
    """
    if d is None:
        if d_head is not None:
            raise ValueError(f"d_head={d_head!r} needs a finite width d (d=None is infinite width)")
        return None, None
    d = check.count("d", d)
    d_head = d if d_head is None else check.count("d_head", d_head)
    check.divides("d_head", d_head, "d", d, " (heads of d_head features each)")
    return d, d_head


def frozen_z2(T: int) -> float:
    """Z2 at b = oo: E (max_s z_s)^2 for T i.i.d. N(0, 1) (the row attends to its largest score only)."""
    from scipy import special
    z = np.linspace(-12.0, 12.0, 24001)
    density = T * np.exp(-0.5 * z * z + (T - 1) * special.log_ndtr(z)) / math.sqrt(2.0 * math.pi)
    return float(np.trapezoid(z * z * density, z))


def _one_row(b: float, T: int, acc: Accuracy) -> tuple[float, float]:
    """(Y2, Z2) of one row of T keys with log-weight width b (Z2 from the moments, derived by Stein's lemma).

    Z2 = Y2 + b^2 (...) loses b^2 times the moments' absolute error; beyond :data:`B_Z` it is read on the
    line in 1/b between Z2(B_Z) and the frozen limit Z2(oo) = E max^2 (both exact; error O(1/b^2)).
    """
    if b == 0.0:
        return 1.0 / T, 1.0 / T
    if np.isinf(b):
        return 1.0, frozen_z2(T)
    m = row_moments(min(b, B_Z), T, rs=(2.0, 3.0), square=True, acc=acc)
    z2 = float(gen.selection_one_row(min(b, B_Z) ** 2, m[2.0], m[3.0], m["square"]))
    if b <= B_Z:
        return m[2.0], z2
    y2 = float(row_moments(b, T, rs=(2.0,), acc=acc)[2.0])
    frozen = frozen_z2(T)
    return y2, frozen + (z2 - frozen) * B_Z / b


#: Inputs of an attention layer: "gaussian" tokens (norms fluctuating, A1) or "normalized" ones (fixed norm, as
#: after a LayerNorm or RMSNorm: derive.finite_width step 5).
INPUTS = ("gaussian", "normalized")
#: Gauss-Jacobi nodes of the sphere law of a normalized key's projection at small d (at least).
N_SPHERE = 96


def row_effective(b2: float, T: int, d: int, d_head: int, *, acc: Accuracy = EXACT, nodes: int = N_XI,
                  inputs: str = "gaussian", rho: float = 0.0):
    """(E_xi Y2, Y2_eff) at mean log-weight variance b2: the finite-width IPR and the effective moment of q_out.

    ``inputs="normalized"``: tokens of fixed norm (derive.finite_width step 5): the scale law without the query
    token's chi-square, Y2 under the keys' projection law at input cosine ``rho`` (:func:`sphere_row`),
    Y2_eff = Y2 + (Z2 - Z2_diag)/d.
    """
    normalized = _inputs(inputs) == "normalized"
    dofs = chain_dofs(d, d_head)
    xi, weight = product_rule(dofs[1:] if normalized else dofs, nodes)   # normalized: the query's norm is fixed
    ipr = eff = 0.0
    for x, w in zip(xi, weight):
        b = math.sqrt(b2 * x)
        y2, y2_eff = _normalized_node(b, T, d, rho) if normalized else _gaussian_node(b, T, d, acc)
        ipr += w * y2
        eff += w * y2_eff
    return ipr, eff


def _finite_inputs(inputs: str, d) -> str:
    """``inputs`` checked (:func:`_inputs`); "normalized" needs a finite d >= :data:`D_NORMALIZED`."""
    if _inputs(inputs) == "normalized" and (d is None or d < D_NORMALIZED):
        raise ValueError(f"inputs='normalized' needs a finite width d >= {D_NORMALIZED} (the sphere law of the "
                         f"keys' projections), got d={d!r}")
    return inputs


#: Smallest width of normalized tokens: the two-projection sphere law (1 - |z|^2/d)^((d-4)/2) is sampled on a
#: lattice, which needs a density bounded at its edge.
D_NORMALIZED = 8


def _inputs(inputs: str) -> str:
    """``inputs`` checked: one of :data:`INPUTS`."""
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {INPUTS}, got {inputs!r}")
    return inputs


def _gaussian_node(b: float, n: float, d: int, acc: Accuracy) -> tuple[float, float]:
    """(Y2, Y2_eff) of a row of n Gaussian tokens at width b: (1 - 1/d) Y2 + Z2/d."""
    y2, z2 = _one_row(b, n, acc)
    return y2, float(gen.effective_same(float(d), y2, z2))


def _normalized_node(b: float, n: float, d: int, rho: float = 0.0) -> tuple[float, float]:
    """(Y2_sph, Y2_eff) of a row of n tokens of fixed norm at width b: Y2_sph + (Z2 - Z2_diag)/d."""
    y2 = sphere_row(b, n, d, rho=rho)
    return y2, float(gen.effective_same_normalized(float(d), y2, *selection_terms(b, n)))


def selection_terms(b: float, n: float) -> tuple[float, float]:
    """(Z2, Z2_diag) of a row of n keys at width b: E (sum_s A_s z_s)^2 and its diagonal keys' part
    E sum_s A_s^2 z_s^2 (derive.finite_width steps 3 and 5), read at min(b, :data:`B_Z`) (beyond, the row is
    frozen and the distinct keys' term Z2 - Z2_diag ~ 0 in the Stein form)."""
    s2 = min(b, B_Z) ** 2
    y2, y3, y4, y22 = _row_powers(s2, n)
    return float(gen.selection_one_row(s2, y2, y3, y22)), float(gen.selection_diagonal_one_row(s2, y2, y3, y4))


def sphere_row(b: float, n: float, d: int, acc: Accuracy = EXACT, rho: float = 0.0) -> float:
    """E sum_s A_s^2 of a row of n keys with log-weights b z_s, z_s of the sphere law of
    :func:`derive.finite_width.sphere_projection_density` (a normalized key's projection; at input cosine
    rho > 0 the law of :func:`numeric.width_law.key_density`): :func:`law_row` at that law's nodes
    (:func:`_sphere_nodes`, :func:`_key_nodes`)."""
    if n <= 1 or b == 0.0:
        return 1.0 / max(n, 1.0)
    z, w = _key_nodes(int(d), rho, b) if rho > 0.0 else _sphere_nodes(int(d), _sphere_count(b, d))
    return law_row(b, n, z, w, acc)


def law_row(b: float, n: float, z: np.ndarray, w: np.ndarray, acc: Accuracy = EXACT) -> float:
    """E sum_s A_s^2 of a row of n > 1 keys with i.i.d. log-weights b z_s, z_s of the law with nodes ``z`` and
    weights ``w`` (summing to 1): the finite-n Laplace form n int M_2(t) L(t)^(n-1) dt (paper eq. 2's exact
    form, :mod:`numeric.laplace`) with each key's expectations taken over the nodes."""
    from .laplace import _row_grid
    from .smoothing import _kernels, log_L
    t, dt = _row_grid(b, n, 2.0, 2.0, acc, acc.h)
    G, L, M = _kernels(t[:, None] + b * z[None, :], (2.0,))
    decay = np.exp((n - 1) * log_L(G @ w, L @ w))
    return float(n * dt * (M[2.0] @ w) @ decay)


def pair_effective(b2: float, rho: float, T: int, d: int, d_head: int, *, acc: Accuracy = TABLE,
                   nodes: tuple[int, ...] = N_PAIR, keys=None, whole: bool = True, inputs: str = "gaussian") -> float:
    """Yp_eff at mean log-weight variance b2 and input cosine rho: E_S[(1 - 2/d) Yp(S) + W(S)/d]
    over the chain's law of S (:func:`numeric.width_law.pair_rule`). ``keys``: None (both rows see the T keys)
    or (n, m1, m2) of :func:`numeric.two_rows.pair_and_selection` (rows under a mask; ``whole``: as there).

    ``inputs="normalized"``: tokens of fixed norm (derive.finite_width step 5): E_S[Yp_sph(S) + (W - W_diag)/d]
    over :func:`numeric.width_law.normalized_pair_rule` (``nodes`` there: r, A, c'_2, c'_3, z)."""
    normalized = _inputs(inputs) == "normalized"
    dofs = chain_dofs(d, d_head)
    if normalized:                                    # the rule's factor holds the normalized tokens' cosine
        m11, m21, m22, weight = normalized_pair_rule(dofs, nodes, rho)
        S11, S12, S22 = gen.covariance_from_factor(b2, 0.0, m11, m21, m22)
    else:
        m11, m21, m22, weight = pair_rule(dofs, nodes)
        S11, S12, S22 = gen.covariance_from_factor(b2, rho, m11, m21, m22)
    total = 0.0
    with single_threaded_blas():
        for s11, s12, s22, w in zip(S11, S12, S22, weight):
            if s11 <= 0.0 or s22 <= 0.0:
                yp, sel = _uniform_pair(T, keys)          # a row of width 0 attends uniformly
                value = gen.effective_pair(float(d), yp, sel)
            elif normalized:
                yp, sel, diag = pair_and_selection(float(s11), float(s22), float(s12), T, acc, keys=keys,
                                                   whole=whole, sphere=d, cosine=rho)
                value = gen.effective_pair_normalized(float(d), yp, sel, diag)
            else:
                yp, sel = pair_and_selection(float(s11), float(s22), float(s12), T, acc, keys=keys, whole=whole)
                value = gen.effective_pair(float(d), yp, sel)
            total += w * float(value)
    return total


def _uniform_pair(T, keys) -> tuple[float, float]:
    """(Yp, W) of two rows attending uniformly: n/(n1 n2) and 2 n/(n1 n2) (T keys each if ``keys`` is None)."""
    n, m1, m2 = (T, 0, 0) if keys is None else keys
    share = n / ((n + m1) * (n + m2))
    return share, 2.0 * share


def masked_overlaps(beta, *, rows, mask="causal", q=1.0, p=0.0, T, d=None, d_head=None, sigma_v2=1.0,
                    inputs="gaussian"):
    """(q_t, q_u, p_tu): E|o_t|^2/d, E|o_u|^2/d and E o_t.o_u/d of one masked attention layer (rows t != u).

    Tokens as in :func:`attention_overlaps` (overlaps q, p); row t sees the keys ``mask`` allows
    (:mod:`derive.masks`: "causal" or "sliding:W"). The same derivation with the rows' own key sets: the
    norms are the one-row effective moments at n_t keys, the overlap the two-row one with n shared keys and
    m1, m2 of each row's own (:func:`derive.finite_width.selection_mixed_integrands`). The log-weight scale
    is b^2 = beta^2 ln T q (q - p) as for the whole sequence. ``d=None``: infinite width (the exact finite-n
    moments of the rows, without the position-resolved profile's closure of the pair term). ``inputs``: as
    :func:`attention_overlaps`.
    """
    from derive import masks
    d, d_head = width(d, d_head)
    inputs = _finite_inputs(inputs, d)
    T = check.sequence_length(T, infinite=False)
    m = masks.parse(mask)
    if m is None:
        raise ValueError("mask must be 'causal' or 'sliding:W' (None: use attention_overlaps)")
    t, u = row_pair(rows, T)
    beta = _number("beta", check.positive("beta", beta))
    q, p = (_number(name, x) for name, x in zip(("q", "p"), check.overlaps(q, p, T)))
    sigma_v2 = _number("sigma_v2", check.positive("sigma_v2", sigma_v2))
    finite_state(beta, q, p, T)
    counts = m.key_counts(t, u)
    b2 = beta * beta * math.log(T) * q * (q - p)
    y2 = [_row_moment(b2, counts[0] + own, d, d_head, inputs, p / q) for own in counts[1:]]
    n_rows = [counts[0] + own for own in counts[1:]]
    if d is None:
        S = b2 * np.array([1.0, p / q, 1.0])
        yp = pair_and_selection(S[0], S[2], S[1], None, EXACT, keys=counts)[0] if b2 > 0 else _uniform_pair(0, counts)[0]
    else:
        yp = pair_effective(b2, p / q, None, d, d_head, keys=counts, inputs=inputs)
    q_t, q_u = (float(gen.attention_output(q, p, sigma_v2, 0.0, y, y)[0]) for y in y2)
    p_tu = float(gen.attention_output(q, p, sigma_v2, 0.0, yp, yp)[1])
    if inputs == "normalized":
        (dq_t, dq_u), dp = common_direction(b2, p / q, d, n_rows, yp)
        q_t, q_u, p_tu = q_t + sigma_v2 * q * dq_t, q_u + sigma_v2 * q * dq_u, p_tu + sigma_v2 * q * dp
    return q_t, q_u, p_tu


def common_direction(b2: float, rho: float, d: int, keys, yp: float):
    """((dq_t, dq_u), dp): the O(1/d) changes of q_out/(sigma_v2 q) of rows with ``keys`` = (n_t, n_u) keys
    and of their p_out/(sigma_v2 q), for normalized tokens at input cosine rho > 0 (derive.finite_width step 6:
    the common direction's share of the outputs; the mean cosine of two normalized keys is below rho, and the
    softmax selects keys whose normalized common component is smaller). Each row's moments are the
    infinite-width ones at width b (the change is already O(1/d)); ``yp``: the pair moment."""
    if rho <= 0.0:
        return (0.0, 0.0), 0.0
    norms, pulls = [], []
    for n in keys:
        powers = _row_powers(b2, n)
        X, J, scale = _pulls(b2, powers)
        norms.append(float(gen.common_direction_norm(float(d), rho, powers[0], J, scale)))
        pulls.append(X)
    return tuple(norms), float(gen.common_direction_pair(float(d), rho, yp, *pulls))


def row_pulls(b2: float, n: int) -> tuple[float, float, float]:
    """(X, J, scale) of one row of n keys at width sqrt(b2) (derive.finite_width.selection_pulls)."""
    return _pulls(b2, _row_powers(b2, n))


def _pulls(b2: float, powers) -> tuple[float, float, float]:
    """(X, J, scale) from a row's (Y2, Y3, Y4, Y22) (:func:`_row_powers`)."""
    y2, y3, y4, y22 = powers
    return (float(gen.selection_pull(b2, y2, y3)), float(gen.selection_pull_offdiagonal(b2, y2, y3, y4)),
            float(gen.selection_pull_scale(b2, y2, y3, y22)))


def _row_powers(b2: float, n: int) -> tuple[float, float, float, float]:
    """(Y2, Y3, Y4, Y22) of one row of n keys at width sqrt(b2) (exact finite n; uniform weights at b = 0)."""
    if b2 == 0.0 or n == 1:
        return 1.0 / n, 1.0 / n ** 2, 1.0 / n ** 3, 1.0 / n ** 2
    m = row_moments(math.sqrt(b2), n, rs=(2.0, 3.0, 4.0), square=True, acc=EXACT)
    return m[2.0], m[3.0], m[4.0], m["square"]


def _number(name: str, value) -> float:
    """One point: the one-row functions (masked_overlaps, output_norm, rope_width's) are not vectorised
    (ValueError naming ``name`` for an array)."""
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a number (one point: this function is not vectorised), got shape "
                         f"{np.shape(value)}")
    return float(value)


def row_pair(rows, T: int) -> tuple[int, int]:
    """Two distinct integer positions in [0, T) (ValueError naming ``rows`` otherwise)."""
    import operator
    try:
        t, u = (operator.index(r) for r in rows)
    except (TypeError, ValueError):
        raise ValueError(f"rows must be two integer positions (t, u), got {rows!r}") from None
    if t == u or not (0 <= t < T and 0 <= u < T):
        raise ValueError(f"rows must be two distinct positions in [0, T) = [0, {T}), got {rows!r}")
    return t, u


def _row_moment(b2: float, n: int, d, d_head, inputs: str = "gaussian", rho: float = 0.0) -> float:
    """Y2 of a row of n keys (n = 1: 1, all weight on its one key), effective at finite width for ``inputs``
    (at input cosine ``rho``)."""
    if n == 1:
        return 1.0
    if d is None:
        return _one_row(math.sqrt(b2), n, EXACT)[0]
    return row_effective(b2, n, d, d_head, inputs=inputs, rho=rho)[1]


def attention_overlaps(beta, *, q=1.0, p=0.0, T, d=None, d_head=None, sigma_v2=1.0, gain=False,
                       inputs="gaussian"):
    """(q_out, p_out): E|o_t|^2/d and E o_t.o_t'/d (t != t') of one attention layer at input overlaps (q, p).

    ``d=None``: infinite width (the exact finite-T theory, eqs. 2, 22, 23). An integer ``d`` (and
    ``d_head`` dividing it; default one head) adds the finite-width terms of the module docstring.
    ``gain``: gain-controlled attention. ``T``: an integer >= 2 (``None``, the T -> oo limit, only at
    infinite width). Vectorised over beta, q, p (broadcast); float64. ``inputs``: "gaussian" tokens (A1) or
    "normalized" ones of fixed norm d q (a LayerNorm or RMSNorm before attention; derive.finite_width step 5;
    finite d only, at least 8).
    """
    d, d_head = width(d, d_head)
    inputs = _finite_inputs(inputs, d)
    if gain and inputs == "normalized":
        raise ValueError("inputs='normalized' with gain=True: gain-controlled attention of normalized tokens is not "
                         "derived (use inputs='gaussian')")
    T = check.sequence_length(T)
    if T is None and d is not None:
        raise ValueError("finite width needs a finite T: the key-selection term grows like beta^2 ln T / d")
    beta = check.positive("beta", beta)
    q, p = check.overlaps(q, p, T)
    sigma_v2 = check.positive("sigma_v2", sigma_v2)
    beta, q, p, sigma_v2 = np.broadcast_arrays(beta, q, p, sigma_v2)
    if T is None:
        from .moments import ipr, ipr_pair
        y2, yp = ipr(beta, q=q, p=p), ipr_pair(beta, q=q, p=p)
    else:
        finite_state(beta, q, p, T)                     # the finite-T domain: 0 <= p < q
        y2, yp = _effective(beta, q, p, T, d, d_head, inputs)
    output = gen.attention_output_gain if gain else gen.attention_output
    q_out, p_out = output(q, p, sigma_v2, np.inf if T is None else float(T), y2, yp)
    if inputs == "normalized":
        q_out, p_out = _with_common_direction(beta, q, p, T, d, sigma_v2, yp, np.array(q_out), np.array(p_out))
    return plain(np.asarray(q_out, dtype=float)), plain(np.asarray(p_out, dtype=float))


def _with_common_direction(beta, q, p, T, d, sigma_v2, yp, q_out, p_out):
    """q_out, p_out of normalized tokens plus :func:`common_direction`'s changes, point by point (rows of T keys)."""
    for index in np.ndindex(beta.shape):
        b2 = float(beta[index]) ** 2 * math.log(T) * float(q[index]) * float(q[index] - p[index])
        (dq, _), dp = common_direction(b2, float(p[index] / q[index]), d, (T, T), float(yp[index]))
        q_out[index] += float(sigma_v2[index]) * float(q[index]) * dq
        p_out[index] += float(sigma_v2[index]) * float(q[index]) * dp
    return q_out, p_out


def _effective(beta, q, p, T, d, d_head, inputs="gaussian"):
    """(Y2_eff, Yp_eff) per point; at infinite width the exact finite-T Y2 and Yp."""
    y2, yp = np.empty(beta.shape), np.empty(beta.shape)
    for index in np.ndindex(beta.shape):
        b2 = float(beta[index]) ** 2 * math.log(T) * float(q[index]) * float(q[index] - p[index])
        rho = float(p[index] / q[index])
        if d is None:
            from .laplace import pair_moment
            b = math.sqrt(b2)
            y2[index] = _one_row(b, T, EXACT)[0]
            yp[index] = pair_moment(b, rho, T, EXACT) if rho > 0 else 1.0 / T
        else:
            y2[index] = row_effective(b2, T, d, d_head, inputs=inputs, rho=rho)[1]
            yp[index] = pair_effective(b2, rho, T, d, d_head, inputs=inputs)
    return y2, yp


#: Below this d the sphere law's nodes are Gauss-Jacobi (its density has edges at +-sqrt(d)); from it on, the
#: trapezoid rule in z (the density is smooth, C^6 at least, and a few nodes per 1/b resolve the integrand).
D_TRAPEZOID = 16


def _sphere_count(b: float, d: int) -> int:
    """The sphere law's node count at width b: Gauss-Jacobi N_SPHERE (at most 20 per unit of b), or the
    trapezoid rule with spacing min(0.05, 0.25/b) on |z| <= min(sqrt(d), 12)."""
    if d < D_TRAPEZOID:
        return max(N_SPHERE, 64 * math.ceil(20.0 * b / 64))
    return _trapezoid_count(min(math.sqrt(d), 12.0), b)


def _trapezoid_count(z_max: float, b: float) -> int:
    """Nodes of the trapezoid rule in a key's projection on |z| <= z_max at width b: spacing min(0.05, 0.25/b)."""
    return 2 * math.ceil(z_max / min(0.05, 0.25 / max(b, 1e-12))) + 1


@lru_cache(maxsize=32)
def _sphere_nodes(d: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(z, weights) of the sphere law of :func:`sphere_row` (:func:`_sphere_count` nodes): Gauss-Jacobi nodes of
    (1 - x^2)^((d-3)/2), z = sqrt(d) x, below :data:`D_TRAPEZOID`; else the trapezoid rule on
    |z| <= min(sqrt(d), 12) with the exact density (below e^-70 beyond 12)."""
    from scipy import special
    if d < 3:
        raise ValueError(f"d must be >= 3 for normalized tokens (the sphere law of a key's projection), got {d}")
    if d < D_TRAPEZOID:
        alpha = 0.5 * (d - 3)
        x, w = special.roots_jacobi(count, alpha, alpha)
        return math.sqrt(d) * x, w / w.sum()
    z_max = min(math.sqrt(d), 12.0)
    z = np.linspace(-z_max, z_max, count)
    with np.errstate(divide="ignore"):                 # the edges z = +-sqrt(d) have density 0
        log_density = 0.5 * (d - 3) * np.log1p(-np.minimum(z * z / d, 1.0))
    w = np.exp(log_density - log_density.max())
    w[[0, -1]] *= 0.5
    return z, w / w.sum()


def _key_nodes(d: int, rho: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """(z, weights): the trapezoid rule of :func:`numeric.width_law.key_density` (k = 1) at input cosine rho, with
    spacing min(0.05, 0.25/b) on |z| <= the law's edge (at most 12)."""
    from .width_law import key_density
    r, density = key_density(d, rho, 1)
    z_max = min(r[-1], 12.0)
    z = np.linspace(-z_max, z_max, _trapezoid_count(z_max, b))
    w = np.interp(np.abs(z), r, density, right=0.0)
    w[[0, -1]] *= 0.5
    return z, w / w.sum()


def output_norm(beta, *, q=1.0, p=0.0, T, n=None, d, d_head=None, inputs="gaussian", sigma_v2=1.0) -> float:
    """E|o_t|^2/d of one attention row of n keys (default T; fewer: a causal row) at finite width, for
    ``inputs`` "gaussian" (tokens of fluctuating norm, A1: the q_out of :func:`attention_overlaps` and
    :func:`masked_overlaps`) or "normalized" (tokens of fixed norm |x|^2 = d q, as after a LayerNorm or RMSNorm:
    derive.finite_width step 5). The log-weight scale is b^2 = beta^2 ln T q (q - p) as for the whole
    sequence. One point (ValueError naming an array argument)."""
    d, d_head = width(d, d_head)
    if d is None:
        raise ValueError("output_norm needs a finite d (attention_overlaps with d=None is infinite width)")
    _finite_inputs(inputs, d)
    beta, q, p, T, n = row_point(beta, q, p, T, n)
    sigma_v2 = _number("sigma_v2", check.positive("sigma_v2", sigma_v2))
    finite_state(beta, q, p, T)
    b2 = beta * beta * math.log(T) * q * (q - p)
    y2 = _row_moment(b2, n, d, d_head, inputs, p / q)
    q_out = float(gen.attention_output(q, p, sigma_v2, 0.0, y2, y2)[0])
    if inputs == "normalized":
        q_out += sigma_v2 * q * common_direction(b2, p / q, d, (n, n), y2)[0][0]
    return q_out


def row_point(beta, q, p, T, n) -> tuple[float, float, float, int, int]:
    """(beta, q, p, T, n) of one attention row checked, each one number: T >= 2, n keys in [1, T] (None: T)."""
    T = check.sequence_length(T, infinite=False)
    n = T if n is None else check.count("n", n)
    if n > T:
        raise ValueError(f"n must lie in [1, T] = [1, {T}] (the row's keys), got {n}")
    beta = _number("beta", check.positive("beta", beta))
    q, p = (_number(name, x) for name, x in zip(("q", "p"), check.overlaps(q, p, T)))
    return beta, q, p, T, n


def ipr_width(beta, *, q=1.0, p=0.0, T, d, d_head=None):
    """E sum_s A_ts^2 at finite width: the exact finite-T IPR averaged over the row's finite-width scale xi.

    What the entropy-collapse criterion reads (the key-selection term Z2 belongs to the output
    overlap, not to the IPR). Vectorised over beta, q, p.
    """
    d, d_head = width(d, d_head)
    if d is None:
        raise ValueError("ipr_width needs a finite d (numeric.ipr is the infinite-width IPR)")
    T = check.sequence_length(T, infinite=False)
    beta = check.positive("beta", beta)
    q, p = check.overlaps(q, p, T)
    beta, q, p = np.broadcast_arrays(beta, q, p)
    out = np.empty(beta.shape)
    for index in np.ndindex(beta.shape):
        b2 = float(beta[index]) ** 2 * math.log(T) * float(q[index]) * float(q[index] - p[index])
        out[index] = row_effective(b2, T, d, d_head)[0]
    return plain(out)
