"""The packages import one way: derive <- numeric <- verify, and each imports alone.

derive needs SymPy and mpmath only; numeric needs NumPy and SciPy (SymPy only
to compile a custom spec, on use); verify adds torch. Commands and figures of
verify reach the ``sigprop`` command line through entry points, not imports.
"""

import ast
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: Which packages each package may import (its own, and the ones below it).
ALLOWED = {"derive": {"derive"}, "numeric": {"derive", "numeric"}, "verify": {"derive", "numeric", "verify"}}


def imported_packages(path: pathlib.Path) -> set[str]:
    """The project packages a module imports anywhere in its text (top level or inside functions)."""
    package = path.relative_to(ROOT).parts[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(package if node.level else (node.module or "").split(".")[0])
    return names & set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_import_against_the_flow(package):
    """No module of a package imports a package above it (the old numeric/cli.py imported verify)."""
    offenders = {str(path.relative_to(ROOT)): sorted(imported_packages(path) - ALLOWED[package])
                 for path in sorted((ROOT / package).glob("*.py"))}
    assert {k: v for k, v in offenders.items() if v} == {}


def loaded_after(statement: str) -> set[str]:
    """Top-level modules in sys.modules after running ``statement`` in a fresh interpreter."""
    code = f"import sys, json; {statement}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("statement, absent", [
    ("import derive.parameters", {"sympy", "numpy", "numeric", "verify", "torch"}),
    ("import derive; derive.block_map('post-ln')", {"numeric", "verify", "torch", "numba"}),
    ("import numeric", {"sympy", "verify", "torch", "numba", "scipy", "xarray"}),
    ("import numeric.cli; numeric.cli.build_parser()", {"sympy", "torch", "numba", "xarray"}),
    ("import numeric; numeric.trainability_diagram('post-ln', 4, betas=[1.0], alphas=[1.0])",
     {"sympy", "verify", "torch", "xarray"}),
    ("import numeric; numeric.sweep; numeric.position_profile", {"sympy", "torch", "numba", "xarray"}),
])
def test_each_package_imports_alone(statement, absent):
    """Importing (and using) a package loads nothing above it; the parameter table needs no SymPy."""
    assert loaded_after(statement) & absent == set()


def test_cli_finds_verify_commands_through_entry_points():
    """`sigprop recommend` and the torch figures are registered without numeric importing verify."""
    from numeric.cli import build_parser
    from numeric.figures import registry

    commands = build_parser()._subparsers._group_actions[0].choices
    assert "recommend" in commands
    assert {"1d", "3", "4", "clusters", "2-measured"} <= set(registry())


@pytest.mark.parametrize("backend, numba", [("auto", True), ("numpy", False)])
def test_numba_loads_when_a_fused_kernel_runs(backend, numba):
    """numba is imported by the first fused kernel (the default path), not by ``import numeric``; the NumPy
    reference path (``SIGPROP_BACKEND=numpy``) runs without it."""
    code = ("import sys, numeric; numeric.cosine_profile('post-ln', 3, beta=1.0); "
            "print('numba' in sys.modules, 'sympy' in sys.modules)")
    env = {**os.environ, "SIGPROP_BACKEND": backend}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True, env=env)
    assert out.stdout.split() == [str(numba), "False"]
