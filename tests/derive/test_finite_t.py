"""derive.finite_t: the finite-T Laplace representations, each step done by SymPy."""

import sympy

from derive import finite_t as F
from derive.symbols import T, beta, p, q, r


def test_score_model_has_the_covariance_of_eq_9():
    """Cov(a_ts, a_kl) = sigma^2 q_tk q_sl for every index pattern (t = k, s = l, s = t, ...)."""
    idx = (1, 2, 3)
    for t in idx:
        for s in idx:
            for k in idx:
                for l in idx:
                    expected = F.overlap(t, k) * F.overlap(s, l)
                    assert sympy.simplify(F.score_covariance(t, s, k, l) - expected) == 0


def test_softmax_sees_b_squared_and_rho():
    """Row-constant terms cancel: b^2 = beta^2 ln T q (q - p), rows correlated by rho = p/q."""
    b2, rho = F.row_statistics()
    assert sympy.simplify(b2 - beta ** 2 * sympy.log(T) * q * (q - p)) == 0
    assert sympy.simplify(rho - p / q) == 0


def test_gamma_function_identity():
    assert F.gamma_identity_holds()
    assert F.gamma_identity_holds(sympy.Integer(2))


def test_fubini_turns_the_integral_into_T_times_one_weight_share():
    w = sympy.symbols("w1:5", positive=True)
    for n in (2, 4):
        assert sympy.simplify(F.fubini_integrand(r, w[:n]) - n * (w[0] / sum(w[:n])) ** r) == 0


def test_two_tokens_reduce_to_the_logistic_form():
    per_sample, explicit, share, logistic = F.two_token_ipr()
    assert sympy.simplify(per_sample - explicit) == 0
    assert sympy.simplify(share - logistic) == 0


def test_uniform_attention_limits():
    """b = 0: sum A^r = T^(1-r), (sum A^2)^2 = 1/T^2, sum_s A_ts A_t's = 1/T."""
    assert sympy.simplify(F.uniform_limit(F.ipr_integral()) - T ** (1 - r)) == 0
    assert sympy.simplify(F.uniform_limit(F.ipr_square_integral()) - T ** -2) == 0
    assert sympy.simplify(F.uniform_limit(F.ipr_pair_integral()) - 1 / T) == 0


def test_independent_rows_give_one_over_T():
    residual, value = F.independent_rows_pair()
    assert residual == 0
    assert sympy.simplify(value - 1 / T) == 0


def test_identical_rows_give_the_ipr():
    """At rho = 1 the second row's weight is the first's and the double integral is the IPR's."""
    w1, w2 = F.pair_weights(correlation=1)
    assert sympy.simplify(w1 - w2) == 0
    double, single = F.identical_rows_pair()
    assert sympy.simplify(double - single) == 0


def test_representations_are_stated_with_the_contract_symbols():
    names = {s.name for s in F.ipr_integral().free_symbols}
    assert {"T", "r", "b"} <= names
    assert {s.name for s in F.ipr_integral(scale=F.effective_b()).free_symbols} >= {"beta", "q", "p", "T", "r"}
    pair = F.ipr_pair_integral(scale=F.effective_b(), correlation=F.row_statistics()[1])
    assert {s.name for s in pair.free_symbols} >= {"beta", "q", "p", "T"}
