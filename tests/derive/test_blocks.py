"""Block maps composed from specs against direct step-by-step evaluation of the algorithms (corrected)."""

import itertools

import mpmath
import pytest
import sympy

import derive
from derive import blocks
from derive.architectures import ARCHITECTURES, architecture
from derive.layers import MLP, Activation, LayerNorm, Linear, Residual, SelfAttention, Sequence
from derive.symbols import BY_NAME
from tests import reference

POINTS = [dict(q=1.0, p=0.0, beta=b, alpha_sa=a, alpha_mlp=am, sigma_v2=sv, sigma_w2=sw, sigma_b2=sb)
          for b, a, am, sv, sw, sb in itertools.product((0.3, 1.2, 2.5), (0.05, 0.7, 2.0), (1.0, 0.5),
                                                          (1.0, 0.24), (2.0, 0.9), (0.0, 0.1))]


def numeric(expr, values, dps=30):
    """Evaluate at 30 digits by name."""
    table = {BY_NAME[k]: sympy.Float(mpmath.mpf(v), dps) for k, v in values.items()}
    return float(sympy.N(expr.subs(table), dps))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_block_map_equals_the_algorithm(arch):
    qn, pn = derive.block_map(arch)
    free = {s.name for s in (qn.free_symbols | pn.free_symbols)}
    assert free <= {"q", "p", "beta", "alpha_sa", "alpha_mlp", "sigma_v2", "sigma_w2", "sigma_b2"}
    f_q = sympy.lambdify([BY_NAME[k] for k in POINTS[0]], qn, "mpmath")
    f_p = sympy.lambdify([BY_NAME[k] for k in POINTS[0]], pn, "mpmath")
    for point in POINTS:
        for q0, p0 in ((1.0, 0.0), (1.3, 0.4), (0.8, 0.79)):
            values = dict(point, q=q0, p=p0)
            want = reference.ALGORITHMS[arch](q0, p0, *(values[k] for k in list(values)[2:]))
            with mpmath.workdps(30):
                got = (float(f_q(*values.values())), float(f_p(*values.values())))
            assert got == pytest.approx(want, rel=1e-12, abs=1e-14), (arch, values)


def test_pre_ln_line_12_follows_the_derivation_not_the_print():
    """Alg. 2 line 12 prints q1 = sigma_w2/2 q_LN + sigma_b2; the Linear layer gives sigma_w2 q_LN + sigma_b2."""
    steps = derive.algorithm("pre-ln")
    linear = [s for s in steps if s.label.startswith("Linear")][0]
    (q1, q1_expr), (p1, p1_expr) = linear.assignments
    sigma_w2, sigma_b2 = BY_NAME["sigma_w2"], BY_NAME["sigma_b2"]
    q_ln = [s for s in steps if s.label == "LayerNorm"][1].assignments[0][0]
    assert sympy.simplify(q1_expr - (sigma_w2 * q_ln + sigma_b2)) == 0
    assert sympy.simplify(q1_expr - (sigma_w2 / 2 * q_ln + sigma_b2)) != 0


def test_compose_of_algorithm_is_block_map():
    for arch in ARCHITECTURES:
        composed = blocks.compose(derive.algorithm(arch))
        direct = derive.block_map(arch)
        point = {BY_NAME[k]: v for k, v in dict(POINTS[7], q=1.1, p=0.3).items()}
        for a, b in zip(composed, direct):
            assert float(a.subs(point)) == pytest.approx(float(b.subs(point)), rel=1e-13)


def test_formula_python_runs_and_matches():
    source = derive.formula("post-ln", form="python")
    namespace = {}
    exec(source, namespace)
    point = POINTS[10]
    args = {k: v for k, v in point.items() if k not in ("q", "p")}
    got = namespace["block"](1.0, 0.2, **args)
    want = reference.post_ln(1.0, 0.2, *args.values())
    assert got == pytest.approx(want, rel=1e-12)


def test_formula_latex_lists_every_layer():
    text = derive.formula("gain-pre-ln", form="latex")
    assert text.count(r"\text{LayerNorm") == 2
    assert "gain-controlled" in text and r"\begin{aligned}" in text


def test_spec_prints_readably():
    text = str(architecture("pre-ln", "gelu"))
    assert text.splitlines()[0] == "pre-ln:"
    assert "Residual(alpha=alpha_sa):" in text and "MLP(gelu)" in text and "SelfAttention(vanilla" in text


def test_finite_T_keeps_moments_symbolic():
    T = sympy.Symbol("T", positive=True, integer=True)
    qn, pn = derive.block_map("gain-post-ln", T=T)
    assert qn == 1  # post-LN ends in LayerNorm
    names = {type(f).__name__ for f in pn.atoms(sympy.Function)}
    assert {"Y2"} <= names
    assert T in pn.free_symbols  # the 1/T of the gain-controlled mean subtraction


def test_custom_spec_composes():
    spec = Sequence(Residual(SelfAttention(), "alpha_sa"), LayerNorm(),
                    Residual(MLP("erf", weight="sigma_w2", bias=None), "alpha_mlp"), LayerNorm(), name="no-bias")
    qn, pn = blocks.block_map(spec)
    assert qn == 1
    assert BY_NAME["sigma_b2"] not in pn.free_symbols


@pytest.mark.parametrize("bad, match", [
    (lambda: Sequence(LayerNorm(), Activation("relu")), "Gaussian pre-activations"),
    (lambda: Residual(Sequence(Linear(), Activation("relu"))), "must end in a layer linear"),
])
def test_specs_that_do_not_compose(bad, match):
    with pytest.raises(ValueError, match=match):
        blocks.block_map(bad())


@pytest.mark.parametrize("call, match", [
    (lambda: derive.block_map("mid-ln"), "arch must be one of"),
    (lambda: derive.block_map("post-ln", activation="swish"), "activation must be one of"),
    (lambda: Activation("softplus"), "activation"),
    (lambda: derive.block_map("post-ln", T=1), "T must be an integer >= 2"),
    (lambda: derive.formula("post-ln", form="rtf"), "form must be"),
    (lambda: LayerNorm(eps=-1.0), "eps"),
    (lambda: Sequence(LayerNorm(), "relu"), "must be a Layer"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
