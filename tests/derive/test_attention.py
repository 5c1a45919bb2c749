"""The self-attention overlap map, derived by Wick/Stein, against the paper (B.2.3, Alg. 1, 3)."""

import sympy

from derive import attention
from derive.symbols import h, p, q, rho, sigma_v2

Y2, Yp = sympy.Symbol("Y2", positive=True), sympy.Symbol("Yp", positive=True)
T = attention.T_sym


def test_vanilla_norm_and_overlap_eq_23():
    assert sympy.simplify(attention.value_overlap(False, True) - sigma_v2 * (p + (q - p) * Y2)) == 0
    assert sympy.simplify(attention.value_overlap(False, False) - sigma_v2 * (p + (q - p) * Yp)) == 0


def test_gain_controlled_keeps_the_one_over_T_terms():
    """Alg. 3 lines 5-6 are the T -> oo limit of sigma_v2 (q - p)(Y - 1/T)."""
    assert sympy.simplify(attention.value_overlap(True, True) - sigma_v2 * (q - p) * (Y2 - 1 / T)) == 0
    assert sympy.simplify(attention.value_overlap(True, False) - sigma_v2 * (q - p) * (Yp - 1 / T)) == 0


def test_phi_s_follows_eq_3_not_the_last_display_of_B23():
    """rho_S = p_S/q_S with Yp -> 0: eq. (3) rho/((1-rho)Y + rho), not rho/(1 + (1-rho)Y)."""
    q_s = attention.value_overlap(False, True)
    p_s = attention.value_overlap(False, False).subs(Yp, 0)
    phi = sympy.simplify((p_s / q_s).subs(p, rho * q))
    eq3 = rho / ((1 - rho) * Y2 + rho)
    b23 = rho / (1 + (1 - rho) * Y2)
    assert sympy.simplify(phi - eq3) == 0
    assert sympy.simplify(phi - b23) != 0
    assert (phi - b23).subs({rho: sympy.Rational(1, 2), Y2: sympy.Rational(1, 2)}) != 0


def test_stein_relation_behind_eq_12():
    sigma_a2 = attention.sigma_a2
    assert sympy.simplify(attention.stein_relation() - h * sigma_a2 * q * (q - p) * (1 - Y2)) == 0
