"""Gaussian expectations over random weights: index sums, Wick pairings, Stein's lemma.

The overlap maps of the paper are expectations over Gaussian weight matrices
(W_V, W_1, W_2, the loss weights G) of products of entries with explicit
index sums, e.g. (paper eq. 20)

    (1/d) E_V[S(X)_t . S(X)_t'] = (1/d) sum_{i,s,j,u,l} A_ts A_t'u W_ij W_il X_sj X_ul.

This module does that algebra symbolically:

- :class:`IndexSum` is a sum of terms ``coeff * prod(factors)`` with summed
  indices, each index ranging over the tokens (``T``) or the features (``d``);
- :func:`wick` takes the expectation over i.i.d. Gaussian tensors by
  Isserlis' theorem (sum over perfect pairings);
- :func:`stein` applies Stein's lemma E[a f(a)] = sum Cov(a, a') E[df/da'] to
  the attention scores, with the softmax derivative of paper eq. (29);
- :func:`contract` removes Kronecker deltas, sums an index that appears nowhere
  (a factor of its range), turns X X^T into the overlap matrix Q = X X^T / d,
  and uses that every attention row sums to one;
- :func:`mean_field` replaces Q by its mean q delta + p (1 - delta), the
  paper's leading-order assumption (B.2.3, eq. 21);
- :func:`attention_moments` reads the remaining sums of attention entries as
  expectations of attention moments: E sum_s A_ts^r, E sum_s A_ts A_t's,
  E (sum_s A_ts^2)^2, ... (:data:`MOMENT_NAMES`), never merging E[Y^2] into
  (E Y)^2.

Tensor names with a fixed meaning: ``A`` (attention, token x token), ``a``
(scores), ``Q`` (overlaps), ``X`` (tokens, token x feature), ``delta``.
Free indices are taken as *distinct* (t != t'); use one name for the diagonal.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import sympy

from .symbols import p, q

#: Names of attention-moment expectations, by canonical column signature
#: (see :func:`_canonical`). Each name is an expectation over W_Q, W_K:
#:   Y{r} = E sum_s A_ts^r (the IPR, eq. 2), Yp = E sum_s A_ts A_t's (t != t'),
#:   Y22 = E (sum_s A_ts^2)^2, Y23 = E[(sum A^2)(sum A^3)], ...
MOMENT_NAMES: dict[tuple, str] = {}


@dataclass(frozen=True, order=True)
class Factor:
    """One tensor entry, e.g. ``Factor("A", ("t", "s"))`` for A_ts."""

    name: str
    idx: tuple[str, ...]

    def renamed(self, old: str, new: str) -> "Factor":
        return Factor(self.name, tuple(new if i == old else i for i in self.idx))

    def __str__(self) -> str:
        return f"{self.name}[{','.join(self.idx)}]"


@dataclass(frozen=True)
class Term:
    """``coeff * prod(factors)`` summed over ``summed``."""

    coeff: sympy.Expr
    factors: tuple[Factor, ...]
    summed: frozenset[str] = frozenset()

    def renamed(self, old: str, new: str) -> "Term":
        summed = frozenset(new if i == old else i for i in self.summed)
        return Term(self.coeff, tuple(sorted(f.renamed(old, new) for f in self.factors)), summed)

    def indices(self) -> set[str]:
        return {i for f in self.factors for i in f.idx}

    def __str__(self) -> str:
        body = " ".join(str(f) for f in self.factors) or "1"
        sums = "".join(f"sum_{i} " for i in sorted(self.summed))
        return f"({self.coeff}) {sums}{body}"


@dataclass(frozen=True)
class IndexSum:
    """A sum of :class:`Term` s with the range (``T``, ``d``, ...) of every index."""

    terms: tuple[Term, ...]
    ranges: dict[str, sympy.Expr] = field(default_factory=dict, compare=False)

    def __add__(self, other: "IndexSum") -> "IndexSum":
        return IndexSum(self.terms + other.terms, {**self.ranges, **other.ranges})

    def __sub__(self, other: "IndexSum") -> "IndexSum":
        return self + other.scaled(-1)

    def __mul__(self, other: "IndexSum") -> "IndexSum":
        clash = {i for t in self.terms for i in t.summed} & {i for t in other.terms for i in t.indices() | t.summed}
        clash |= {i for t in other.terms for i in t.summed} & {i for t in self.terms for i in t.indices()}
        if clash:
            raise ValueError(f"summed indices {sorted(clash)} appear in both factors; rename them first")
        terms = tuple(
            Term(a.coeff * b.coeff, tuple(sorted(a.factors + b.factors)), a.summed | b.summed)
            for a in self.terms for b in other.terms
        )
        return IndexSum(terms, {**self.ranges, **other.ranges})

    def scaled(self, c) -> "IndexSum":
        return IndexSum(tuple(Term(t.coeff * c, t.factors, t.summed) for t in self.terms), self.ranges)

    def summed_over(self, *indices: str) -> "IndexSum":
        return IndexSum(tuple(Term(t.coeff, t.factors, t.summed | set(indices)) for t in self.terms), self.ranges)

    def __str__(self) -> str:
        return " + ".join(str(t) for t in self.terms) or "0"


def tensor(name: str, *idx: str, ranges: dict[str, sympy.Expr] | None = None) -> IndexSum:
    """A single tensor entry as an :class:`IndexSum` (``ranges`` gives each index's range)."""
    return IndexSum((Term(sympy.Integer(1), (Factor(name, tuple(idx)),)),), dict(ranges or {}))


def scalar(c) -> IndexSum:
    """The constant ``c`` as an :class:`IndexSum`."""
    return IndexSum((Term(sympy.sympify(c), ()),), {})


def delta(i: str, j: str) -> Factor:
    """Kronecker delta factor."""
    return Factor("delta", (i, j))


# --- Wick / Isserlis -----------------------------------------------------------

def _pairings(items: list[int]):
    """All perfect matchings of ``items`` (Isserlis' theorem)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for k, other in enumerate(rest):
        for tail in _pairings(rest[:k] + rest[k + 1:]):
            yield [(first, other)] + tail


def wick(expr: IndexSum, variances: dict[str, sympy.Expr]) -> IndexSum:
    """Expectation over independent Gaussian tensors with i.i.d. zero-mean entries.

    ``variances[name]`` is the variance of one entry of tensor ``name``;
    E[W_ij W_kl] = var * delta_ik delta_jl, and an odd number of entries of any
    one tensor averages to zero (Isserlis' theorem).
    """
    out = []
    for term in expr.terms:
        out.extend(_wick_term(term, variances))
    return IndexSum(tuple(out), expr.ranges)


def _wick_term(term: Term, variances: dict[str, sympy.Expr]) -> list[Term]:
    terms = [term]
    for name, var in variances.items():
        terms = [t for tt in terms for t in _wick_one(tt, name, var)]
    return terms


def _wick_one(term: Term, name: str, var) -> list[Term]:
    positions = [k for k, f in enumerate(term.factors) if f.name == name]
    if len(positions) % 2:
        return []
    rest = [f for k, f in enumerate(term.factors) if f.name != name]
    out = []
    for pairing in _pairings(positions):
        deltas = [delta(a, b) for i, j in pairing
                  for a, b in zip(term.factors[i].idx, term.factors[j].idx)]
        coeff = term.coeff * var ** len(pairing)
        out.append(Term(coeff, tuple(sorted(rest + deltas)), term.summed))
    return out


# --- Stein's lemma on the attention scores ---------------------------------------

def softmax_derivative(factor: Factor, row: str, col: str, h=1) -> IndexSum:
    """d A_ij / d a_kl = h delta_ik (delta_jl A_ij - A_ij A_il)  (paper eq. 29, A = softmax(h a))."""
    i, j = factor.idx
    t1 = Term(sympy.sympify(h), tuple(sorted((delta(i, row), delta(j, col), factor))))
    t2 = Term(-sympy.sympify(h), tuple(sorted((delta(i, row), factor, Factor("A", (i, col))))))
    return IndexSum((t1, t2), {})


def derivative(term: Term, row: str, col: str, h=1) -> IndexSum:
    """Derivative of a product of attention entries with respect to the score a_{row,col}."""
    out: list[Term] = []
    for k, f in enumerate(term.factors):
        if f.name != "A":
            continue
        others = term.factors[:k] + term.factors[k + 1:]
        for d in softmax_derivative(f, row, col, h).terms:
            out.append(Term(term.coeff * d.coeff, tuple(sorted(others + d.factors)), term.summed))
    return IndexSum(tuple(out), {})


def stein(expr: IndexSum, score_variance, h=1, fresh=("k", "l")) -> IndexSum:
    """Stein's lemma for the scores: E[a_ts F(A)] = sum_{k,l} Cov(a_ts, a_kl) E[dF/da_kl].

    Every term must hold exactly one score factor ``a``; the score covariance
    is eq. (9): Cov(a_ts, a_kl) = sigma_a^2 q_tk q_sl with sigma_a^2 = ``score_variance``.
    """
    k, l = fresh
    out: list[Term] = []
    ranges = dict(expr.ranges)
    for term in expr.terms:
        scores = [f for f in term.factors if f.name == "a"]
        if len(scores) != 1:
            raise ValueError(f"stein needs exactly one score factor per term, got {len(scores)} in {term}")
        (a,) = scores
        t, s = a.idx
        rest = Term(term.coeff, tuple(f for f in term.factors if f is not a), term.summed)
        cov = (Factor("Q", (t, k)), Factor("Q", (s, l)))
        for d in derivative(rest, k, l, h).terms:
            out.append(Term(d.coeff * score_variance, tuple(sorted(d.factors + cov)), d.summed | {k, l}))
        ranges.setdefault(k, ranges.get(t))
        ranges.setdefault(l, ranges.get(s))
    return IndexSum(tuple(out), ranges)


# --- contraction --------------------------------------------------------------

def contract(expr: IndexSum) -> IndexSum:
    """Apply the exact identities until none applies; then collect equal terms.

    delta_ii = 1; sum_j delta_ij f(j) = f(i); delta_ij = 0 for distinct free
    indices; sum_j X_tj X_sj = d Q_ts; sum_s A_ts = 1 (rows of the softmax);
    a summed index that appears nowhere contributes its range.
    """
    out = []
    for term in expr.terms:
        reduced = _contract_term(term, expr.ranges)
        if reduced is not None:
            out.append(reduced)
    return _collect(IndexSum(tuple(out), expr.ranges))


def _contract_term(term: Term, ranges) -> Term | None:
    changed = True
    while changed:
        changed = False
        for rule in (_rule_delta, _rule_overlap, _rule_row_sum, _rule_empty_sum):
            result = rule(term, ranges)
            if result is None:
                return None
            if result is not term:
                term, changed = result, True
                break
    return term


def _rule_delta(term: Term, ranges):
    for f in term.factors:
        if f.name != "delta":
            continue
        i, j = f.idx
        rest = list(term.factors)
        rest.remove(f)
        if i == j:
            return Term(term.coeff, tuple(rest), term.summed)
        if j in term.summed or i in term.summed:
            keep, gone = (i, j) if j in term.summed else (j, i)
            t = Term(term.coeff, tuple(rest), term.summed - {gone})
            return t.renamed(gone, keep)
        return None  # two distinct free indices
    return term


def _rule_overlap(term: Term, ranges):
    for j in sorted(term.summed):
        holders = [f for f in term.factors if j in f.idx]
        if len(holders) == 2 and all(f.name == "X" and f.idx[1] == j for f in holders):
            rest = list(term.factors)
            for f in holders:
                rest.remove(f)
            qf = Factor("Q", (holders[0].idx[0], holders[1].idx[0]))
            return Term(term.coeff * ranges[j], tuple(sorted(rest + [qf])), term.summed - {j})
    return term


def _rule_row_sum(term: Term, ranges):
    for s in sorted(term.summed):
        holders = [f for f in term.factors if s in f.idx]
        if len(holders) == 1 and holders[0].name == "A" and holders[0].idx[1] == s and holders[0].idx[0] != s:
            rest = list(term.factors)
            rest.remove(holders[0])
            return Term(term.coeff, tuple(rest), term.summed - {s})
    return term


def _rule_empty_sum(term: Term, ranges):
    used = term.indices()
    for s in sorted(term.summed):
        if s not in used:
            return Term(term.coeff * ranges[s], term.factors, term.summed - {s})
    return term


def _collect(expr: IndexSum) -> IndexSum:
    """Add the coefficients of terms equal up to renaming of summed indices."""
    acc: dict[tuple, list] = {}
    for term in expr.terms:
        key = _term_key(term)
        if key in acc:
            acc[key][1] += term.coeff
        else:
            acc[key] = [term, term.coeff]
    terms = []
    for term, coeff in acc.values():
        coeff = sympy.expand(coeff)
        if coeff != 0:
            terms.append(Term(coeff, term.factors, term.summed))
    return IndexSum(tuple(terms), expr.ranges)


def _term_key(term: Term) -> tuple:
    """A key equal for terms that differ only by the names of their summed indices."""
    summed = sorted(term.summed)
    best = None
    for perm in itertools.permutations(range(len(summed))):
        names = {s: f"_{perm[k]}" for k, s in enumerate(summed)}
        key = tuple(sorted((f.name, tuple(names.get(i, i) for i in f.idx)) for f in term.factors))
        if best is None or key < best:
            best = key
    return best, len(summed)


# --- mean field and moments ------------------------------------------------------

def mean_field(expr: IndexSum, q_diag=q, p_off=p) -> IndexSum:
    """Replace every overlap Q_ts by its mean: q on the diagonal, p off it (eq. 21)."""
    out: list[Term] = []
    for term in expr.terms:
        out.extend(_mean_field_term(term, q_diag, p_off))
    return contract(IndexSum(tuple(out), expr.ranges))


def _mean_field_term(term: Term, q_diag, p_off) -> list[Term]:
    terms = [Term(term.coeff, (), term.summed)]
    for f in term.factors:
        if f.name != "Q":
            terms = [Term(t.coeff, t.factors + (f,), t.summed) for t in terms]
            continue
        i, j = f.idx
        if i == j:
            terms = [Term(t.coeff * q_diag, t.factors, t.summed) for t in terms]
            continue
        new = []
        for t in terms:
            new.append(Term(t.coeff * (q_diag - p_off), t.factors + (delta(i, j),), t.summed))
            new.append(Term(t.coeff * p_off, t.factors, t.summed))
        terms = new
    return [Term(t.coeff, tuple(sorted(t.factors)), t.summed) for t in terms]


def attention_moments(expr: IndexSum) -> sympy.Expr:
    """Read a fully contracted sum of attention products as attention moments.

    Each term must be a product of attention entries whose column indices are
    summed; its rows are free (distinct) token indices, or one summed row
    index, which contributes T times one row by exchangeability. Each term
    becomes ``coeff * M`` with ``M`` an expectation symbol named in
    :data:`MOMENT_NAMES` (e.g. ``Y2``, ``Yp``, ``Y22``).
    """
    total = sympy.Integer(0)
    for term in expr.terms:
        total += term.coeff * _moment_of(term, expr.ranges)
    return sympy.expand(total)


def _moment_of(term: Term, ranges) -> sympy.Expr:
    if any(f.name != "A" for f in term.factors):
        bad = [str(f) for f in term.factors if f.name != "A"]
        raise ValueError(f"cannot read {bad} as attention moments; contract and apply mean_field first")
    if not term.factors:
        return sympy.Integer(1)
    columns = {f.idx[1] for f in term.factors}
    rows = {f.idx[0] for f in term.factors}
    if rows & columns:
        raise ValueError(f"an index is both a row and a column in {term}")
    if not columns <= term.summed:
        raise ValueError(f"free column index in {term}")
    summed_rows = rows & term.summed
    if len(summed_rows) > 1:
        raise NotImplementedError(f"more than one summed row index in {term}")
    factor = sympy.Integer(1)
    for i in summed_rows:
        factor *= ranges[i]
    return factor * moment_symbol(_canonical(term))


def _canonical(term: Term) -> tuple:
    """Canonical signature: per summed column, the sorted (row label, power) pairs."""
    rows = sorted({f.idx[0] for f in term.factors})
    best = None
    for perm in itertools.permutations(range(len(rows))):
        label = dict(zip(rows, perm))
        cols: dict[str, dict[int, int]] = {}
        for f in term.factors:
            col = cols.setdefault(f.idx[1], {})
            col[label[f.idx[0]]] = col.get(label[f.idx[0]], 0) + 1
        sig = tuple(sorted(tuple(sorted(c.items())) for c in cols.values()))
        if best is None or sig < best:
            best = sig
    return best


def moment_symbol(signature: tuple) -> sympy.Symbol:
    """The expectation symbol of a column signature (see :data:`MOMENT_NAMES`)."""
    if signature not in MOMENT_NAMES:
        MOMENT_NAMES[signature] = _moment_name(signature)
    return sympy.Symbol(MOMENT_NAMES[signature], positive=True)


def _moment_name(signature: tuple) -> str:
    if all(len(col) == 1 and col[0][0] == 0 for col in signature):
        return "Y" + "".join(str(col[0][1]) for col in signature)
    if signature == (((0, 1), (1, 1)),):
        return "Yp"
    parts = ["*".join(f"A{r}^{k}" for r, k in col) for col in signature]
    return "E[" + " ".join(f"sum({p})" for p in parts) + "]"
