"""numeric.shipped: the causal tables that come with the package."""

import pytest

from numeric import causal_width as cw
from numeric import shipped
from numeric import width_tables as wt


def test_the_shipped_tables_are_this_codes_and_read_without_building(tmp_path, monkeypatch):
    """Every table of shipped.CAUSAL is in the package's data folder under the digest of this code's sources (a
    change of cw.SOURCES without ``python -m numeric.shipped`` fails here: a fresh installation would build it),
    and with an empty cache causal_tables reads it (building refused) as the tables of its own (d, d_head, n_max,
    inputs); the data folder holds no other causal table (older code's are removed by ship)."""
    assert {path.name for path in wt.shipped_dir().glob("causal-*.npz")} == shipped.file_names()
    monkeypatch.setenv(wt.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(cw.CausalTables, "_node_values", lambda self: pytest.fail("built: the shipped table unread"))
    cw.causal_tables.cache_clear()
    try:
        for d, d_head, n_max, inputs in shipped.CAUSAL:
            table = cw.causal_tables(d, d_head, n_max, inputs)
            assert (table.d, table.d_head, table.n_max, table.inputs) == (d, d_head, n_max, inputs)
            assert table.row_values.shape[2] == (cw.ROW_RHO_NODES if inputs == "normalized" else 1)
    finally:
        cw.causal_tables.cache_clear()
    assert not list(tmp_path.iterdir())                             # nothing written to the cache
