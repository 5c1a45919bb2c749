"""The finite-width tables that ship with the package (numeric/data), so that a fresh installation reads them.

A causal table (:func:`numeric.causal_width.causal_tables`) costs 2.7 minutes of two cores to build for
Gaussian tokens and 5 for normalized ones. Those of :data:`CAUSAL` -- what the test suite, the README's
examples, GPT-2 at width 64 and pre-LN encoders of width 64 at T <= 1024 read -- are kept in numeric/data under
their cache names (:func:`numeric.width_tables.cached_arrays` looks there after the cache), which carry the
digest of the code that built them. A change of :data:`numeric.causal_width.SOURCES` changes that digest:
``python -m numeric.shipped`` then builds and writes them again (tests/numeric/test_shipped.py fails until it
has). This module is not among the tables' sources, so editing the list keeps the tables' digest.
"""

from __future__ import annotations

#: (d, d_head, n_max, inputs) of the shipped causal tables.
CAUSAL = ((64, 32, 256, "gaussian"), (64, 32, 256, "normalized"), (64, 32, 1024, "normalized"))


def file_names() -> set:
    """The shipped causal tables' file names for this code (:data:`CAUSAL`)."""
    from .causal_width import SOURCES, VERSION, _stem
    from .width_tables import _file_name
    return {_file_name(_stem(*spec), VERSION, SOURCES) for spec in CAUSAL}


def ship() -> list:
    """Write the :data:`CAUSAL` tables of this code into the package's data folder (read from the disk cache, or
    built), removing those of older code there; returns their paths."""
    from .causal_width import SOURCES, VERSION, _stem, causal_tables
    from .width_tables import ship as save
    paths = []
    for spec in CAUSAL:
        tables = causal_tables(*spec)
        paths.append(save(_stem(*spec), VERSION, SOURCES, {"rows": tables.row_values, "pairs": tables.pair_values}))
    return paths


if __name__ == "__main__":
    for path in ship():
        print(f"wrote {path}")
