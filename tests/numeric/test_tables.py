"""The fast finite-T tables (numeric.tables): agree with the direct functions, drop-in moment functions."""

import math

import numpy as np
import pytest

from numeric import finite_t as ft
from numeric import tables


@pytest.mark.parametrize("T", [64, 4096])
def test_tables_match_the_direct_functions(T):
    """Interpolation error < 1e-7 absolute (measured: ~1e-11 for Y2, ~3e-8 for Yp)."""
    rng = np.random.default_rng(11)
    beta = np.concatenate([rng.uniform(0.02, 6.0, 40), [1e-6, 50.0]])
    p = np.concatenate([rng.uniform(0.0, 0.995, 40), [0.3, 0.9]])
    q = rng.uniform(0.5, 2.0, beta.size)
    p = p * q
    assert np.abs(ft.ipr2_fast(beta, q, p, T) - ft.ipr(beta, q=q, p=p, T=T)).max() < 1e-7
    assert np.abs(ft.ipr_pair_fast(beta, q, p, T) - ft.ipr_pair(beta, q=q, p=p, T=T)).max() < 1e-7


def test_fast_functions_are_drop_in_moment_functions():
    T = 64
    beta = np.linspace(0.5, 3.0, 6)[:, None]
    p = np.array([0.0, 0.4, 1.0])
    y2, yp = ft.ipr2_fast(beta, 1.0, p, T), ft.ipr_pair_fast(beta, 1.0, p, T)
    assert y2.shape == yp.shape == (6, 3)
    np.testing.assert_allclose(y2[:, 2], 1.0 / T, rtol=1e-12)            # p = q: uniform attention
    np.testing.assert_allclose(yp[:, [0, 2]], 1.0 / T, rtol=1e-9)        # independent rows; p = q
    assert isinstance(ft.ipr2_fast(1.0, 1.0, 0.2, T), float)
    assert ft.Y2_table(T) is ft.Y2_table(64.0)
    assert ft.ipr2_fast(1.0, 1.0, 1.0 + 1e-15, T) == pytest.approx(1.0 / T)   # rounding above q is clipped
    with pytest.raises(ValueError, match="T=65"):
        ft.Y2_table(T)(1.0, 1.0, 0.0, 65)
    with pytest.raises(ValueError, match="p must lie in"):
        ft.ipr_pair_fast(1.0, 1.0, 1.1, T)


def test_beyond_the_pair_table_is_computed_directly():
    T = 64
    b = tables.B_PAIR_MAX * 1.5
    beta = b / math.sqrt(math.log(T) * 0.5)
    assert ft.ipr_pair_fast(beta, 1.0, 0.5, T) == pytest.approx(ft.ipr_pair(beta, p=0.5, T=T), rel=1e-13)
    # the block maps' entry point, with a scalar beta: it used to interpolate beyond the table (NaN index)
    assert float(ft.Yp_table(T).fast(beta, 1.0, 0.5)) == pytest.approx(ft.ipr_pair(beta, p=0.5, T=T), rel=1e-13)


def test_tables_take_T_by_the_one_sequence_length_rule():
    assert tables.Y2_table(64.0) is tables.Y2_table(64) is ft.Y2_table(np.int64(64))
    for bad in (1, 64.5, None, True, "64"):
        with pytest.raises(ValueError, match="T must be"):
            tables.Yp_table(bad)
        with pytest.raises(ValueError, match="T must be"):
            tables.ipr2_fast(1.0, 1.0, 0.2, bad)

