"""numeric._generated is what numeric.codegen makes from derive today (drift test)."""

import re
import subprocess
import sys

import numpy as np
import pytest
import sympy

from numeric import _generated, codegen
from numeric.moments import ipr2_asymptotic, ipr_pair_asymptotic


def _recorded():
    header = _generated.__doc__
    version = re.search(r"sympy (\S+);", header).group(1)
    digest = re.search(r"sha256 ([0-9a-f]+)", header).group(1)
    return version, digest


def test_generated_from_current_derive_sources():
    _, digest = _recorded()
    assert digest == codegen.derive_digest(), "derive changed: run `python -m numeric.codegen` and commit"


@pytest.fixture(scope="module")
def regenerated():
    return codegen.module_source()


def test_regenerating_gives_the_same_code(regenerated):
    version, _ = _recorded()
    committed = codegen.GENERATED.read_text()
    if version == sympy.__version__:
        assert regenerated == committed
    else:  # another SymPy may print differently: compare what the code computes instead
        namespace = {}
        exec(compile(regenerated, "<regenerated>", "exec"), vars(_generated).copy() | namespace, namespace)
        rng = np.random.default_rng(0)
        args = [rng.uniform(0.8, 1.2, 50), rng.uniform(-0.5, 0.7, 50)] + [rng.uniform(0.1, 3, 50) for _ in range(6)]
        for key, fn in _generated.ASYMPTOTIC_BLOCK_MAPS.items():
            if key[1] == "tanh":
                continue
            new = namespace["ASYMPTOTIC_BLOCK_MAPS"][key]
            for a, b in zip(fn(*args, np.inf, ipr2_asymptotic, ipr_pair_asymptotic),
                            new(*args, np.inf, ipr2_asymptotic, ipr_pair_asymptotic)):
                np.testing.assert_allclose(a, b, rtol=1e-13)


def test_import_numeric_needs_no_sympy_or_torch():
    code = "import sys, numeric; numeric.cosine_profile('post-ln', 3, beta=1.0); " \
           "print('sympy' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_every_named_map_is_generated():
    from numeric.validation import ACTIVATIONS, ARCHITECTURES
    assert set(_generated.BLOCK_MAPS) == {(a, f) for a in ARCHITECTURES for f in ACTIVATIONS}
    assert set(_generated.ASYMPTOTIC_BLOCK_MAPS) == set(_generated.BLOCK_MAPS)
