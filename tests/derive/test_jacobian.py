"""The backward-pass derivation (derive.jacobian) term by term against the paper's B.5."""

import numpy as np
import pytest
import sympy

from derive import jacobian as J
from derive.symbols import p, q, sigma_v2

Y2, Y3, Y22 = J.Y2, J.Y3, J.Y22


def test_terms_1_to_3_equal_the_paper_term_4_does_not():
    ours, paper = J.trace_terms(), J.paper_trace_terms()
    for k in (1, 2, 3):
        assert sympy.simplify(ours[k] - paper[k]) == 0
    # term (4) factorises: E[(p + (q-p) Y2)^2], with E[Y2^2] = Y22, not (E Y2)^2 and not p(q-p) Y2^2
    assert sympy.simplify(ours[4] - sympy.expand((p**2 + 2 * p * (q - p) * Y2 + (q - p) ** 2 * Y22))) == 0
    assert sympy.simplify(ours[4] - paper[4]) != 0


def test_row_trace_is_the_sum_of_the_terms():
    t = J.trace_terms()
    assert sympy.simplify(J.row_trace() - (t[1] - t[2] - t[3] + t[4])) == 0
    assert sympy.simplify(J.row_trace() - (q - p) ** 2 * (Y2 - 2 * Y3 + Y22)) == 0


def _row_moments(rows):
    return (rows**2).sum(1), (rows**3).sum(1), (rows**2).sum(1) ** 2


def test_trace_is_nonnegative_for_every_attention_row():
    """Y2 - 2 Y3 + Y22 >= 0 row by row (a squared norm), for any probability vector."""
    rng = np.random.default_rng(0)
    for alpha in (0.01, 0.3, 1.0, 10.0):
        rows = rng.dirichlet(np.full(16, alpha), size=2000)
        y2, y3, y22 = _row_moments(rows)
        assert np.all(y2 - 2 * y3 + y22 >= -1e-15)


def test_paper_bracket_is_negative_in_the_frozen_phase():
    """Frozen REM, m = beta_c/beta: Y2 = 1-m, Y3 = (1-m)(2-m)/2; at p = 0 the bracket is -(1-m)^2 q^2 < 0."""
    m = sympy.Rational(1, 2)
    values = {Y2: 1 - m, Y3: (1 - m) * (2 - m) / 2, Y22: (1 - m) * (3 - 2 * m) / 3, q: 1, p: 0}
    assert J.paper_bracket().subs(values) < 0
    assert J.row_trace().subs(values) == m * (1 - m) / 3  # = Var Y2 > 0


def test_trace_equals_direct_evaluation_for_a_fixed_attention_matrix():
    """Before any averaging over A: sum D D q q with explicit mean-field Q equals the moment form."""
    rng = np.random.default_rng(1)
    T, q0, p0 = 7, 1.3, 0.4
    A = rng.dirichlet(np.ones(T), size=T)
    Q = (q0 - p0) * np.eye(T) + p0
    for t in range(T):
        a = A[t]
        D = np.diag(a) - np.outer(a, a)            # D[u, s] = A_u delta_us - A_u A_s
        direct = np.einsum("us,vw,sw,uv->", D, D, Q, Q)
        y2, y3, y22 = (a**2).sum(), (a**3).sum(), (a**2).sum() ** 2
        moment = float(J.row_trace().subs({q: q0, p: p0, Y2: y2, Y3: y3, Y22: y22}))
        assert moment == pytest.approx(direct, rel=1e-12)


def test_gradient_norms_scale():
    d, T, sk = J.d_sym, J.T_sym, J.sigma_k2
    wq = J.gradient_square_norm("W_Q")
    assert sympy.simplify(wq - T * d**3 * q * sk * sigma_v2 * J.row_trace()) == 0
    assert sympy.simplify(J.gradient_square_norm("W_K") - wq) == 0
    assert sympy.simplify(J.gradient_square_norm("W_V") - T * d**2 * (p + (q - p) * Y2)) == 0


def test_bad_weight():
    with pytest.raises(ValueError, match="weight"):
        J.gradient_square_norm("W_O")
