"""The index-sum algebra of derive.gaussian: every rewrite is checked numerically.

An IndexSum is evaluated with explicit small arrays (einsum). contract() must
preserve the value exactly (given rows of A summing to one and Q = X X^T/d);
wick() must equal a Monte Carlo average over the Gaussian tensor, within the
suite's statistical tolerance (verify.stats: Student t, declared false-alarm rate).
"""

import string

import numpy as np
import pytest
import sympy

from derive import gaussian as g
from derive.symbols import p, q, sigma_v2
from verify.stats import assert_agrees

T, d = sympy.symbols("T d", positive=True)
SIZES = {T: 4, d: 3}
RANGES = {"t": T, "u": T, "s": T, "v": T, "k": T, "l": T, "i": d, "j": d, "m": d}


def evaluate(expr: g.IndexSum, arrays: dict, free: dict, symbols: dict | None = None) -> float:
    """Numerical value of an IndexSum with ``arrays`` for its tensors and ``free`` index values."""
    symbols = {**{k: v for k, v in SIZES.items()}, **(symbols or {})}
    total = 0.0
    for term in expr.terms:
        letters = {}
        operands, subs = [], []
        for f in term.factors:
            arr = arrays[f.name] if f.name != "delta" else np.eye(SIZES[expr.ranges[f.idx[0]]])
            idx = []
            for k, i in enumerate(f.idx):
                if i in free:
                    arr = np.take(arr, free[i], axis=len(idx))
                    continue
                idx.append(letters.setdefault(i, string.ascii_letters[len(letters)]))
            operands.append(arr)
            subs.append("".join(idx))
        value = np.einsum(",".join(subs) + "->", *operands) if operands else 1.0
        for i in term.summed:
            if i not in letters:
                value = value * SIZES[expr.ranges[i]]
        total += float(term.coeff.subs(symbols)) * value
    return total


@pytest.fixture
def arrays():
    rng = np.random.default_rng(1)
    A = rng.random((4, 4))
    A /= A.sum(axis=1, keepdims=True)
    X = rng.standard_normal((4, 3))
    return {"A": A, "X": X, "Q": X @ X.T / 3}


def attention_output(row, s, i, j):
    return (g.tensor("A", row, s, ranges=RANGES) * g.tensor("W", i, j, ranges=RANGES)
            * g.tensor("X", s, j, ranges=RANGES)).summed_over(s, j)


def test_isserlis_counts_pairings():
    four = g.tensor("W", "i") * g.tensor("W", "j") * g.tensor("W", "k") * g.tensor("W", "l")
    assert len(g.wick(four, {"W": 1}).terms) == 3
    six = four * g.tensor("W", "m") * g.tensor("W", "n")
    assert len(g.wick(six, {"W": 1}).terms) == 15
    assert g.wick(four * g.tensor("W", "m"), {"W": 1}).terms == ()


def test_contract_preserves_value(arrays):
    expr = (attention_output("t", "s", "i", "j") * attention_output("u", "v", "i", "l")).summed_over("i")
    expr = expr.scaled(1 / d)
    averaged = g.wick(expr, {"W": sigma_v2 / d})
    contracted = g.contract(averaged)
    for free in ({"t": 0, "u": 1}, {"t": 2, "u": 3}):
        before = evaluate(averaged, arrays, free, {sigma_v2: 0.7})
        after = evaluate(contracted, arrays, free, {sigma_v2: 0.7})
        assert after == pytest.approx(before, rel=1e-12)
        A, Q = arrays["A"], arrays["Q"]
        direct = 0.7 * A[free["t"]] @ Q @ A[free["u"]]
        assert after == pytest.approx(direct, rel=1e-12)


def test_wick_matches_monte_carlo(arrays):
    rng = np.random.default_rng(2)
    expr = (attention_output("t", "s", "i", "j") * attention_output("t", "v", "i", "l")).summed_over("i")
    exact = evaluate(g.wick(expr, {"W": 0.5}), arrays, {"t": 1})
    A, X = arrays["A"], arrays["X"]
    W = rng.standard_normal((20000, 3, 3)) * np.sqrt(0.5)
    out = np.einsum("s,nij,sj->ni", A[1], W, X)
    samples = (out * out).sum(axis=1)
    se = samples.std(ddof=1) / np.sqrt(samples.size)
    assert_agrees(exact, samples.mean(), se=se, n=samples.size, what="Wick average of |sum_s A_ts W X_s|^2")


def test_mean_field_reads_moments():
    expr = (g.tensor("A", "t", "s", ranges=RANGES) * g.tensor("A", "u", "v", ranges=RANGES)
            * g.tensor("Q", "s", "v", ranges=RANGES)).summed_over("s", "v")
    moments = g.attention_moments(g.mean_field(expr))
    assert sympy.simplify(moments - (p + (q - p) * sympy.Symbol("Yp", positive=True))) == 0


def test_moment_names_keep_square_of_sum_distinct():
    expr = (g.tensor("A", "t", "s", ranges=RANGES) * g.tensor("A", "t", "s", ranges=RANGES)
            * g.tensor("A", "t", "v", ranges=RANGES) * g.tensor("A", "t", "v", ranges=RANGES)).summed_over("s", "v")
    assert g.attention_moments(expr) == sympy.Symbol("Y22", positive=True)
    cube = (g.tensor("A", "t", "s", ranges=RANGES) * g.tensor("A", "t", "s", ranges=RANGES)
            * g.tensor("A", "t", "s", ranges=RANGES)).summed_over("s")
    assert g.attention_moments(cube) == sympy.Symbol("Y3", positive=True)


def test_summed_row_gives_T_times_one_row():
    expr = (g.tensor("A", "k", "s", ranges=RANGES) * g.tensor("A", "k", "s", ranges=RANGES)).summed_over("k", "s")
    assert g.attention_moments(expr) == T * sympy.Symbol("Y2", positive=True)


def test_stein_derivative_numerically(arrays):
    """Stein: E[a f(a)] = sum Cov E[df/da]; check the softmax derivative (eq. 29) by finite differences."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, 4))

    def softmax(x):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    term = g.Term(sympy.Integer(1), (g.Factor("A", ("t", "s")), g.Factor("A", ("t", "s"))), frozenset())
    deriv = g.derivative(term, "k", "l")
    deriv = g.IndexSum(deriv.terms, {"t": T, "s": T, "k": T, "l": T})
    h = 1e-6
    for (t, s, k, l) in [(0, 1, 0, 1), (0, 1, 0, 2), (2, 2, 2, 0), (1, 3, 0, 3)]:
        bumped = a.copy()
        bumped[k, l] += h
        fd = (softmax(bumped)[t, s] ** 2 - softmax(a)[t, s] ** 2) / h
        value = evaluate(deriv, {"A": softmax(a)}, {"t": t, "s": s, "k": k, "l": l})
        assert value == pytest.approx(fd, abs=1e-5)


def test_product_rejects_clashing_summed_indices():
    a = g.tensor("A", "t", "s").summed_over("s")
    with pytest.raises(ValueError, match="rename"):
        a * a


def test_stein_needs_one_score_factor():
    with pytest.raises(ValueError, match="exactly one score"):
        g.stein(g.tensor("A", "t", "s").summed_over("s"), 1)
