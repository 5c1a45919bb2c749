"""numeric._generated is what numeric.codegen makes from derive today (drift test), and runs without SymPy.

The drift test compares *generated code*, a function of derive's expressions
only: a changed derived expression fails it (shown below with a perturbed
kernel), an edit of derive's docstrings or comments does not (shown below by
regenerating from a copy of derive with all of them removed).
"""

import ast
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import sympy

from derive.parameters import ACTIVATIONS, ARCHITECTURES, NAMED_ACTIVATIONS
from numeric import _generated, codegen
from numeric.moments import ipr2_asymptotic, ipr_pair_asymptotic

ROOT = pathlib.Path(__file__).resolve().parents[2]
REGENERATE = "run `python -m numeric.codegen` and commit numeric/_generated.py"


def _committed():
    """(SymPy version recorded, code sha256 recorded, committed code) of numeric/_generated.py."""
    header, code = codegen.split_module(codegen.GENERATED.read_text())
    version = re.search(r"sympy (\S+);", header).group(1)
    digest = re.search(r"code sha256 ([0-9a-f]{64})", header).group(1)
    return version, digest, code


@pytest.fixture(scope="module")
def regenerated():
    return codegen.code_source()


def test_committed_module_is_what_derive_generates_now(regenerated):
    version, _, committed = _committed()
    if version != sympy.__version__:
        pytest.skip(f"generated with sympy {version}, running {sympy.__version__}: compared by value instead")
    changed = codegen.changed_definitions(committed, regenerated)
    assert not changed, f"derive's expressions changed ({', '.join(changed)}): {REGENERATE}"


def test_committed_maps_compute_what_derive_generates_now(regenerated):
    """Under another SymPy the printed text may differ: compare what the closed-form maps compute."""
    version, _, _ = _committed()
    if version == sympy.__version__:
        pytest.skip("generated with this SymPy: the text comparison is exact")
    namespace = {"__name__": "numeric._generated_now", "__package__": "numeric"}
    exec(compile(regenerated, str(codegen.GENERATED), "exec"), namespace)
    rng = np.random.default_rng(0)
    args = [rng.uniform(0.8, 1.2, 50), rng.uniform(-0.5, 0.7, 50)] + [rng.uniform(0.1, 3, 50) for _ in range(6)]
    for key, committed in _generated.ASYMPTOTIC_BLOCK_MAPS.items():
        if key[1] == "tanh":  # a quadrature: the same KERNELS call in both, and slow
            continue
        now = namespace["ASYMPTOTIC_BLOCK_MAPS"][key]
        for a, b in zip(committed(*args, np.inf, ipr2_asymptotic, ipr_pair_asymptotic),
                        now(*args, np.inf, ipr2_asymptotic, ipr_pair_asymptotic)):
            np.testing.assert_allclose(a, b, rtol=1e-13, err_msg=f"{key}: {REGENERATE}")


def test_committed_module_was_not_edited_by_hand():
    _, digest, code = _committed()
    assert digest == codegen.code_digest(code), f"numeric/_generated.py was edited by hand: {REGENERATE}"


def test_a_changed_derived_expression_fails_the_drift_check(monkeypatch):
    """The same comparison as the drift test: equal before, and names the map after erf's kernel
    is scaled by 1 + 1e-6 (as a wrong step in a derivation would change it)."""
    from derive import kernels
    from derive.architectures import architecture

    _, _, committed = _committed()
    name = codegen.function_name("post-ln", "erf")
    spec = architecture("post-ln", "erf")
    old = codegen.definitions(committed)[name]
    assert codegen.changed_definitions(old, codegen.function_source(name, spec)) == []
    original = kernels.gaussian_kernel
    monkeypatch.setattr(kernels, "gaussian_kernel",
                        lambda activation, q, c: original(activation, q, c) * (1 + sympy.Rational(1, 10**6)))
    assert codegen.changed_definitions(old, codegen.function_source(name, spec)) == [name]


def _without_docstrings_and_comments(source: str) -> str:
    """The module with every docstring removed (a body left empty gets ``pass``); unparsing drops comments."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        documented = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        if isinstance(node, documented) and ast.get_docstring(node, clean=False) is not None:
            node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree) + "\n"


@pytest.mark.slow
def test_derive_docstrings_and_comments_do_not_enter_the_generated_code(tmp_path, regenerated):
    """Regenerate from a copy of derive stripped of every docstring and comment: the same code.

    (The former check, a hash of derive's source text, failed on any such edit.)
    """
    stripped = tmp_path / "derive"
    stripped.mkdir()
    for path in (ROOT / "derive").glob("*.py"):
        text = path.read_text()
        (stripped / path.name).write_text(_without_docstrings_and_comments(text))
        assert ast.get_docstring(ast.parse(text)) is not None
        assert ast.get_docstring(ast.parse((stripped / path.name).read_text())) is None
    code = ("import derive, sys\nfrom numeric import codegen\n"
            f"assert derive.__file__.startswith({str(tmp_path)!r}), derive.__file__\n"
            "sys.stdout.write(codegen.code_source())\n")
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert codegen.changed_definitions(regenerated, out.stdout) == []


def test_every_shipped_map_runs_without_sympy_or_torch():
    """Every named architecture x activation (tanh's kernel by quadrature), T -> oo and finite T, in a
    fresh interpreter: NumPy only, on the reference path (the fused kernels add numba: tests/test_imports.py).
    (A tanh profile used to import SymPy through derive.layers.)"""
    code = ("import sys, numeric\nfrom derive.parameters import ARCHITECTURES, NAMED_ACTIVATIONS\n"
            "numeric.cosine_profile('post-ln', 5, beta=1.0, activation='tanh')\n"
            "for arch in ARCHITECTURES:\n"
            "    for activation in NAMED_ACTIVATIONS:\n"
            "        for T in (None, 64):\n"
            "            numeric.cosine_profile(arch, 3, beta=1.0, T=T, rho0=0.2, activation=activation)\n"
            "print(sorted(m for m in ('sympy', 'torch', 'numba') if m in sys.modules))\n")
    env = os.environ | {"SIGPROP_BACKEND": "numpy"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["[]"]


def test_every_named_map_and_activation_is_generated():
    assert set(_generated.BLOCK_MAPS) == {(a, f) for a in ARCHITECTURES for f in NAMED_ACTIVATIONS}
    assert set(_generated.ASYMPTOTIC_BLOCK_MAPS) == set(_generated.BLOCK_MAPS)
    assert set(_generated.ACTIVATION_FUNCTIONS) == set(ACTIVATIONS)
