"""Fast finite-width moments for profiles and diagrams: Y2_eff(b), Yp_eff(b, rho) tabulated per (T, d, d_head).

:func:`numeric.finite_width.attention_overlaps` averages the exact one- and
two-row moments over the finite-width law of the score covariance by Gauss
quadrature, about 2.5-3 s of CPU per point. A depth profile needs the effective
moments at every block and grid point, so they are tabulated in the layouts of
:class:`numeric.tables.Y2Table` and :class:`numeric.tables.YpTable` (same
coordinates, same cells): :class:`WidthY2Table` and :class:`WidthYpTable` are
drop-in replacements, and the fused kernels read their cells as they read the
infinite-width ones.

Two levels:

1. Per T (shared by every width; :func:`row_base`, :func:`pair_base`):
   Y2(s) and Z2(s) of one row (Chebyshev in xi = s/(s + sqrt(2 ln T)), s in [0, oo]);
   for two rows of equal width s and score correlation r in [-1, 1], Yp(s, r),
   W(s, r) and their curvatures C = d^2/d lambda^2 at lambda = 0 along
   S11 = s^2 e^(2 lambda), S22 = s^2 e^(-2 lambda) at fixed S12 (both are even in
   lambda) -- :func:`numeric.two_rows.pair_and_selection` at the nodes. Cached on
   disk (:func:`cache_dir`): about 5 s of CPU per T to build.
2. Per (T, d, d_head): the quadrature of :mod:`numeric.finite_width` with
   the two-row moments read as Yp(S) = Yp(s, r) + C lambda^2/2 with
   s^2 = sqrt(S11 S22), r = S12/s^2, lambda = ln(S11/S22)/4 (measured against the
   direct quadrature, tests/numeric/test_width_tables.py).

Beyond b = :data:`numeric.tables.B_PAIR_MAX` (deep in the frozen phase) the pair
moments are computed directly (:func:`numeric.finite_width.pair_effective`).
"""

from __future__ import annotations

import hashlib
import math
import os
import pathlib
from functools import lru_cache

import numpy as np

from . import _generated_width as gen
from . import validation as check
from .finite_width import N_PAIR, N_XI, _one_row
from .interpolation import bicubic, bicubic_cells, cell_inplace, cheb_resample, cubic_cells, horner_inplace, lobatto
from .laplace import plain, z_star
from .smoothing import TABLE
from .tables import (B_PAIR_MAX, FINE_1D, FINE_2D, N_Y2, Y2Table, Yp_table, _b_of_xi, _fast_state, _pair_w_nodes,
                     _pair_xi_nodes, _rho_of_w, _unchecked_state, _w_of_rho)
from .two_rows import pair_and_selection
from .width_law import chain_dofs, pair_rule, product_rule

#: The coarse two-row base tables cover widths s up to this (beyond: frozen phase, values at S_W).
S_W = 24.0
#: Chebyshev-Lobatto nodes of the coarse two-row base tables: in xi(s) on [0, xi(S_W)] and in w (each sign of r).
N_BASE = (17, 9)
#: lambda step of the curvature's difference quotient (C = 2 (Y(lambda0) - Y(0))/lambda0^2; error O(lambda0^2)).
LAMBDA0 = 0.1
#: Version of the cached base tables (bump when their definition changes).
VERSION = 1


# --- 1-D cells in xi = s/(s + sqrt(2 ln T)) -------------------------------------------------------

def _cells_1d(values: np.ndarray) -> np.ndarray:
    """Cubic Hermite cells on FINE_1D points of xi in [0, 1] from values at the N_Y2 Lobatto nodes."""
    value, slope = cheb_resample(values, np.linspace(0.0, 1.0, FINE_1D))
    return np.ascontiguousarray(cubic_cells(value, slope, 1.0 / (FINE_1D - 1)))


def _lookup_1d(cells: np.ndarray, b, scale: float) -> np.ndarray:
    """A 1-D table at widths b >= 0 (b = oo allowed)."""
    shape = np.shape(b)
    b = np.ravel(np.asarray(b, dtype=float))
    with np.errstate(invalid="ignore"):
        xi = np.divide(b, b + scale)
    xi[np.isinf(b)] = 1.0
    i, s = cell_inplace(xi, FINE_1D)
    return horner_inplace(np.take(cells, i, axis=0).T, s).reshape(shape)


class RowBase:
    """Y2(s) and Z2(s) of one row of T keys, s in [0, oo] (level 1 of the module docstring)."""

    def __init__(self, T: int):
        self.T = check.sequence_length(T, infinite=False)
        self.scale = z_star(self.T)
        s = _b_of_xi(lobatto(N_Y2, 0.0, 1.0), self.scale)
        y2, z2 = np.array([_one_row(float(b), self.T, TABLE) for b in s]).T
        self.y2_cells, self.z2_cells = _cells_1d(y2), _cells_1d(z2)

    def at(self, s):
        """(Y2, Z2) at widths s (arrays)."""
        return _lookup_1d(self.y2_cells, s, self.scale), _lookup_1d(self.z2_cells, s, self.scale)


# --- the two-row base table ---------------------------------------------------------------------

def _pair_values(T: int, s: float, r: float) -> np.ndarray:
    """(Yp, W, C_Yp, C_W) at equal widths s and correlation r (C: the lambda-curvatures)."""
    if s == 0.0:
        return np.array([1.0 / T, 2.0 / T, 0.0, 0.0])
    S = s * s
    yp, w = pair_and_selection(S, S, r * S, T, TABLE)
    if r == 0.0:
        return np.array([yp, w, 0.0, 0.0])                # independent rows: no dependence on the widths
    up = math.exp(2.0 * LAMBDA0)
    yp1, w1 = pair_and_selection(S * up, S / up, r * S, T, TABLE)
    return np.array([yp, w, 2.0 * (yp1 - yp) / LAMBDA0 ** 2, 2.0 * (w1 - w) / LAMBDA0 ** 2])


class PairBase:
    """Two rows of equal width s <= S_W and score correlation r in [-1, 1]: Yp (r < 0), W and the
    lambda-curvatures C_Yp, C_W, on a coarse grid (they enter p_out as W/d or as corrections; Yp at
    r >= 0 is :class:`numeric.tables.YpTable`'s, exact to 1e-8). Two bicubic tables (r >= 0, r <= 0),
    each in YpTable's coordinates (xi(s)/xi(S_W) and the stretched w of |r|); beyond S_W the values at
    S_W are used (the frozen phase, where they vary by O(1/s)).
    """

    def __init__(self, T: int):
        self.T = check.sequence_length(T, infinite=False)
        self.scale = z_star(self.T)
        self.xi_max = S_W / (S_W + self.scale)
        s_nodes = _b_of_xi(lobatto(N_BASE[0], 0.0, self.xi_max), self.scale)
        fine_x, fine_w = (np.linspace(0.0, 1.0, n) for n in FINE_2D)
        w = lobatto(N_BASE[1], 0.0, 1.0)
        self.cells = {}
        for sign in (1.0, -1.0):
            rows = []
            for s in s_nodes:
                r = np.clip(_rho_of_w(w, float(s)), 0.0, 1.0)
                values = np.array([_pair_values(self.T, float(s), sign * float(rr)) for rr in r])
                rows.append(cheb_resample(values, fine_w))
            f0, fw0 = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
            f, fx = cheb_resample(f0, fine_x)
            fw, fxw = cheb_resample(fw0, fine_x)
            cells = bicubic_cells(f, fx, fw, fxw, 1.0 / (FINE_2D[0] - 1), 1.0 / (FINE_2D[1] - 1))
            self.cells[sign] = np.ascontiguousarray(np.moveaxis(cells, 2, -1).reshape(-1, 16, 4))

    @classmethod
    def from_cells(cls, T: int, plus: np.ndarray, minus: np.ndarray) -> "PairBase":
        """The base table of T from its cells (:func:`pair_base`'s disk cache)."""
        table = cls.__new__(cls)
        table.T, table.scale = T, z_star(T)
        table.xi_max = S_W / (S_W + table.scale)
        table.cells = {1.0: plus, -1.0: minus}
        return table

    def at(self, s, r) -> np.ndarray:
        """(..., 4): Yp, W, C_Yp, C_W at widths s >= 0 (read at min(s, S_W)) and correlations r in [-1, 1]."""
        s, r = np.broadcast_arrays(np.minimum(np.asarray(s, dtype=float), S_W), np.asarray(r, dtype=float))
        out = np.empty(s.shape + (4,))
        for sign, mask in ((1.0, r >= 0), (-1.0, r < 0)):
            if np.any(mask):
                out[mask] = self._interpolate(s[mask], np.abs(r[mask]), self.cells[sign])
        return out

    def _interpolate(self, s, r, cells):
        i, u = cell_inplace(np.divide(s, s + self.scale), FINE_2D[0], 1.0 / self.xi_max)
        j, v = cell_inplace(_w_of_rho(r, s), FINE_2D[1])
        a = np.take(cells, i * (FINE_2D[1] - 1) + j, axis=0)          # (n, 16, 4)
        return np.stack([bicubic(a[..., k].T, u, v) for k in range(4)], axis=-1)


def pair_equal(T: int, s, r) -> np.ndarray:
    """(..., 4): Yp, W, C_Yp, C_W of two rows of equal width s and correlation r; Yp at r >= 0 from
    :func:`numeric.tables.Yp_table` (s read at min(s, B_PAIR_MAX)), the rest from :func:`pair_base`."""
    s, r = np.broadcast_arrays(np.asarray(s, dtype=float), np.asarray(r, dtype=float))
    out = pair_base(T).at(s, r)
    plus = r >= 0
    if np.any(plus):
        out[plus, 0] = Yp_table(T).at(np.minimum(s[plus], B_PAIR_MAX), r[plus])
    return out


# --- disk cache of the per-T tables ---------------------------------------------------------------

CACHE_ENV = "SIGPROP_WIDTH_CACHE"


def cache_dir() -> pathlib.Path | None:
    """``$SIGPROP_WIDTH_CACHE``, else ``$XDG_CACHE_HOME/sigprop/width`` (None where nothing is writable)."""
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "sigprop", "width")
    path = pathlib.Path(root)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


#: The modules each kind of cached table is computed by: its file name carries their digest.
BASE_SOURCES = ("two_rows.py", "_generated_width.py", "width_tables.py", "laplace.py", "smoothing.py", "tables.py",
                "interpolation.py")
WIDTH_SOURCES = BASE_SOURCES + ("finite_width.py", "width_law.py")


@lru_cache(maxsize=4)
def _source_digest(sources=BASE_SOURCES) -> str:
    """A digest of the code a kind of table comes from, so a changed derivation never reads a stale table."""
    here = pathlib.Path(__file__).parent
    text = "".join((here / name).read_text() for name in sources)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def shipped_dir() -> pathlib.Path:
    """The package's data folder, where tables built by this code may ship (:mod:`numeric.shipped`) under the same
    names as in the cache."""
    return pathlib.Path(__file__).parent / "data"


def _file_name(stem: str, version: int, sources: tuple) -> str:
    return f"{stem}-v{version}-{_source_digest(tuple(sources))}.npz"


def cached_arrays(stem: str, version: int, sources: tuple, build) -> dict:
    """The arrays of one table, kept in :func:`cache_dir` as ``{stem}-v{version}-{digest of sources}.npz``: read
    back when the file is there or ships with the package (:func:`shipped_dir`, same name: the same code built
    it), else ``build()`` (a dict of arrays) and saved (:func:`_save`, which removes the same table of other
    code). Without a writable cache folder, built every session."""
    name = _file_name(stem, version, sources)
    folder = cache_dir()
    path = None if folder is None else folder / name
    for found in (path, shipped_dir() / name):
        if found is not None and found.exists():
            with np.load(found) as data:
                return {key: data[key] for key in data.files}
    arrays = build()
    if path is not None:
        _save(path, **arrays)
    return arrays


def ship(stem: str, version: int, sources: tuple, arrays: dict) -> pathlib.Path:
    """Save a table's ``arrays`` in :func:`shipped_dir` under its cache name, removing the same table of older
    code there; returns the path."""
    path = shipped_dir() / _file_name(stem, version, sources)
    _save(path, **arrays)
    return path


def _save(path: pathlib.Path, **arrays) -> None:
    """Write ``arrays`` to ``path`` atomically: a temporary file of this process and thread, then a rename, so
    that concurrent builders (threads, processes) never read or rename a half-written table."""
    import tempfile
    import threading

    handle, tmp = tempfile.mkstemp(prefix=f"{path.stem}-{threading.get_ident()}-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, **arrays)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)                  # as a plain open() would (mkstemp makes it owner-only)
        os.replace(tmp, path)
        _prune(path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _prune(path: pathlib.Path) -> None:
    """Remove the files of the same table (kind, T, widths) written by other versions of the code: their digest
    or version differ from ``path``'s (a per-T base table is ~130 MB)."""
    import re

    stem = path.name.rsplit("-v", 1)[0]
    final = re.compile(re.escape(stem) + r"-v\d+-[0-9a-f]{16}\.npz")   # not another writer's temporary file
    for other in path.parent.glob(f"{stem}-v*.npz"):
        if other != path and final.fullmatch(other.name):
            other.unlink(missing_ok=True)


@lru_cache(maxsize=16)
def row_base(T: int) -> RowBase:
    """The :class:`RowBase` of T (built once per session)."""
    return RowBase(T)


@lru_cache(maxsize=16)
def pair_base(T: int) -> PairBase:
    """The :class:`PairBase` of T: from the disk cache when there, else built (about 10 s) and saved."""
    T = check.sequence_length(T, infinite=False)

    def build():
        table = PairBase(T)
        return {"plus": table.cells[1.0], "minus": table.cells[-1.0]}

    cells = cached_arrays(f"pair-T{T}", VERSION, BASE_SOURCES, build)
    return PairBase.from_cells(T, cells["plus"], cells["minus"])


# --- level 2: the effective moments of one width -----------------------------------------------

def _row_mixture(b, T: int, d: int, d_head: int):
    """(E_xi Y2, Y2_eff) at mean widths b (array): the quadrature of numeric.finite_width on the base table."""
    xi, weight = product_rule(chain_dofs(d, d_head), N_XI)
    s = np.asarray(b, dtype=float)[..., None] * np.sqrt(xi)
    y2, z2 = row_base(T).at(s)
    return y2 @ weight, gen.effective_same(float(d), y2, z2) @ weight


def _pair_mixture(b, rho, T: int, d: int, d_head: int):
    """Yp_eff at mean widths b and input cosines rho (arrays, broadcast), read from the base table."""
    m11, m21, m22, weight = pair_rule(chain_dofs(d, d_head), N_PAIR)
    b, rho = np.broadcast_arrays(np.asarray(b, dtype=float), np.asarray(rho, dtype=float))
    S11, S12, S22 = gen.covariance_from_factor((b * b)[..., None], rho[..., None], m11, m21, m22)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.sqrt(S11 * S22)
        r = np.clip(np.where(g > 0, S12 / g, 0.0), -1.0, 1.0)
        lam = np.where(g > 0, 0.25 * np.log(S11 / S22), 0.0)
    values = pair_equal(T, np.sqrt(g), r)
    yp = values[..., 0] + 0.5 * lam * lam * values[..., 2]
    w = values[..., 1] + 0.5 * lam * lam * values[..., 3]
    return gen.effective_pair(float(d), yp, w) @ weight


class WidthY2Table(Y2Table):
    """Y2_eff(b) (``effective``) or the finite-width IPR E_xi Y2 (``ipr``) at one (T, d, d_head): a
    :class:`numeric.tables.Y2Table` (its ``fast`` and ``__call__``) with its own nodes and an unclipped
    look-up."""

    def __init__(self, T: int, d: int, d_head: int, kind: str = "effective"):
        if kind not in ("effective", "ipr"):
            raise ValueError(f"kind must be 'effective' or 'ipr', got {kind!r}")
        self.T, self.d, self.d_head, self.kind = T, d, d_head, kind
        self.scale = z_star(T)
        b = _b_of_xi(lobatto(N_Y2, 0.0, 1.0), self.scale)
        ipr, eff = _row_mixture(np.where(np.isinf(b), 1e300, b), T, d, d_head)
        self._cells = _cells_1d(eff if kind == "effective" else ipr)

    def at_b(self, b):
        return _lookup_1d(self._cells, b, self.scale)

    @classmethod
    def from_cells(cls, T: int, d: int, d_head: int, kind: str, cells: np.ndarray) -> "WidthY2Table":
        """The table of (T, d, d_head, kind) from its cells (:func:`width_tables`' disk cache)."""
        table = cls.__new__(cls)
        table.T, table.d, table.d_head, table.kind, table.scale, table._cells = T, d, d_head, kind, z_star(T), cells
        return table


class WidthYpTable:
    """Yp_eff(b, rho) at one (T, d, d_head) in :class:`numeric.tables.YpTable`'s layout; b beyond
    B_PAIR_MAX is computed directly (:func:`numeric.finite_width.pair_effective`)."""

    def __init__(self, T: int, d: int, d_head: int):
        self.T, self.d, self.d_head = T, d, d_head
        self.scale = z_star(T)
        self.xi_max = B_PAIR_MAX / (B_PAIR_MAX + self.scale)
        b = _b_of_xi(lobatto(_pair_xi_nodes(T), 0.0, self.xi_max), self.scale)
        fine_x, fine_w = (np.linspace(0.0, 1.0, n) for n in FINE_2D)
        rows = []
        for bb in b:
            w = lobatto(_pair_w_nodes(float(bb)), 0.0, 1.0)
            rho = np.clip(_rho_of_w(w, float(bb)), 0.0, 1.0)
            rows.append(cheb_resample(_pair_mixture(float(bb), rho, T, d, d_head), fine_w))
        f0, fw0 = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
        f, fx = cheb_resample(f0, fine_x)
        fw, fxw = cheb_resample(fw0, fine_x)
        cells = bicubic_cells(f, fx, fw, fxw, 1.0 / (FINE_2D[0] - 1), 1.0 / (FINE_2D[1] - 1))
        self._cells = np.ascontiguousarray(cells.reshape(-1, 16))

    @classmethod
    def from_cells(cls, T: int, d: int, d_head: int, cells: np.ndarray) -> "WidthYpTable":
        """The table of (T, d, d_head) from its cells (:func:`width_tables`' disk cache)."""
        table = cls.__new__(cls)
        table.T, table.d, table.d_head, table.scale = T, d, d_head, z_star(T)
        table.xi_max, table._cells = B_PAIR_MAX / (B_PAIR_MAX + table.scale), cells
        return table

    def at(self, b, rho):
        b, rho = np.broadcast_arrays(np.asarray(b, dtype=float), np.asarray(rho, dtype=float))
        inside = b <= B_PAIR_MAX
        out = np.empty(b.shape)
        out[inside] = self._interpolate(b[inside], rho[inside])
        if np.any(~inside):
            out[~inside] = [_direct(float(bb), float(rr), self.T, self.d, self.d_head)
                            for bb, rr in zip(b[~inside], rho[~inside])]
        return out

    def _interpolate(self, b, rho):
        shape = np.shape(b)
        b, rho = np.ravel(b), np.ravel(rho)
        i, s = cell_inplace(np.divide(b, b + self.scale), FINE_2D[0], 1.0 / self.xi_max)
        j, v = cell_inplace(_w_of_rho(rho, b), FINE_2D[1])
        i *= FINE_2D[1] - 1
        i += j
        return bicubic(np.take(self._cells, i, axis=0).T, s, v).reshape(shape)   # unclipped: Yp_eff exceeds 1

    def fast(self, beta, q, p):
        b, rho = _unchecked_state(beta, q, p, self.T)
        return self.at(b, rho)

    def __call__(self, beta, q, p, T=None):
        b, rho = _fast_state(beta, q, p, self.T if T is None else T, self.T)
        return plain(self.at(b, rho))


@lru_cache(maxsize=1024)
def _direct(b: float, rho: float, T: int, d: int, d_head: int) -> float:
    """Yp_eff by the direct quadrature (beyond the table's b range), cached."""
    from .finite_width import pair_effective
    return pair_effective(b * b, rho, T, d, d_head)


@lru_cache(maxsize=32)
def width_tables(T: int, d: int, d_head: int):
    """(Y2_eff table, Yp_eff table, finite-width IPR table) of (T, d, d_head): from the disk cache when there
    (:func:`cache_dir`, as the per-T base tables), else built (about 2 s of CPU) and saved."""
    def build():
        return {"y2": WidthY2Table(T, d, d_head)._cells, "yp": WidthYpTable(T, d, d_head)._cells,
                "ipr": WidthY2Table(T, d, d_head, "ipr")._cells}

    cells = cached_arrays(f"width-T{T}-d{d}-h{d_head}", VERSION, WIDTH_SOURCES, build)
    return (WidthY2Table.from_cells(T, d, d_head, "effective", cells["y2"]),
            WidthYpTable.from_cells(T, d, d_head, cells["yp"]),
            WidthY2Table.from_cells(T, d, d_head, "ipr", cells["ipr"]))
