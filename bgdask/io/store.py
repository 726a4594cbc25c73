"""The output store: Zarr v3, readable by ``xarray.open_zarr``.

:class:`Store` is the one place that knows the layout: it creates a store,
opens and decodes it (attributes, index arrays, table, models, flags), and
writes into it. The pipeline, ``bgdask inspect`` and ``export``, the report
and the catalog (a store as an input) all go through it.

Layout
------
* ``image``, ``mask``, ``variance`` (visit, patch, y, x): matched warps,
  padded to the largest warp (NaN, mask 0); chunks of ``chunk_rows`` rows of
  one warp; absent warps have no chunk on disk. ``mask`` is in one bit layout
  for all warps, named in the attribute ``mask_planes``.
* ``offset_coarse`` (visit, patch, cy, cx): each warp's coarse offset grid,
  its first cell at ``coarse_x0``, ``coarse_y0`` (patch).
* ``diff_model`` (visit, sy, sx): each visit's superpixel difference model.
* ``present``, ``done``, ``usable`` (visit, patch): which warps exist, which
  have been written completely, which had a usable pixel.
* ``x0``, ``y0``, ``width``, ``height`` (patch): the patches' outer boxes.
* the per-visit table (visit): the columns of :data:`bgdask.table.COLUMNS`
  (the quality columns, :data:`bgdask.table.QUALITY_COLUMNS`, written after stage C).
* ``seam`` (seam, sy, sx): per superpixel, the spread (RMS about the mean)
  of the visits' levels, before and after matching
  (:data:`bgdask.table.SEAM_PLANES`; :mod:`bgdask.quality`).
* attributes: ``reference_visit``, ``config``, ``skymap``, ``mask_planes``
  (JSON), ``fingerprint``, ``source``, ``models_done``, ``complete``,
  ``stage_times`` (JSON), ``bgdask_version``.
* the global method only: the per-pair table (pair): arrays ``pair_<column>``
  of :data:`bgdask.table.PAIR_COLUMNS`, and the attribute ``global_solve``
  (JSON: the solve's size, solver and residual).

The metadata is written once from a template built beside the target and
renamed into place; afterwards every writer covers whole chunks (one row
block of one warp, or one warp's flag), so concurrent writes from many
workers never share a chunk. ``done`` is set for a warp only after its rows
and coarse grid have landed, and ``complete`` only when every present warp is
done.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import StoreError
from ..geometry import Box, SkyMap, coarse_cells, coarse_shape, superpixel_shape
from ..table import (COLUMNS, PAIR_COLUMNS, QUALITY_COLUMNS, SEAM_PLANES, pair_table_from_arrays,
                     pair_table_to_arrays, table_from_arrays, table_to_arrays)
from .warp import PLANE_DTYPES, PLANE_FILL, PLANES

__all__ = ["Store", "StoreWarp", "fingerprint", "is_store", "check_replaceable"]

#: Arrays every bgdask store has.
REQUIRED = (*PLANES, "present", "done", "visit", "patch", "x0", "y0", "width", "height")
#: Attributes holding JSON text.
JSON_ATTRS = ("config", "skymap", "mask_planes", "stage_times", "global_solve")
#: The one message a zarr warning about consolidated metadata deserves: none
#: (it is a zarr-python extension of Zarr v3 that xarray reads).
_CONSOLIDATED_WARNING = "Consolidated metadata is currently not part"


def is_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory holding Zarr metadata."""
    path = Path(path)
    return path.is_dir() and ((path / "zarr.json").exists() or (path / ".zgroup").exists())


def check_replaceable(path: str | os.PathLike) -> None:
    """Raise unless ``path`` is a Zarr store or an empty directory (safe to replace)."""
    path = Path(path)
    if not (is_store(path) or (path.is_dir() and not any(path.iterdir()))):
        raise StoreError(f"{path}: exists and is not a Zarr store; refusing to overwrite it")


def fingerprint(items: Iterable[tuple[tuple[int, int], Any]], config_json: str, skymap_json: str,
                chunk_rows: int) -> str:
    """A hash of what defines a run: inputs ((visit, patch), source) with
    their files' size and mtime, the configuration and the geometry."""
    h = hashlib.sha256()
    h.update(config_json.encode())
    h.update(skymap_json.encode())
    h.update(str(chunk_rows).encode())
    for (visit, patch), source in items:
        path = getattr(source, "path", None)
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except (OSError, TypeError):
            stamp = "?"
        where = os.path.abspath(path) if path else "memory"
        h.update(f"{visit},{patch},{where},{stamp};".encode())
    return h.hexdigest()


def _zarr():
    import zarr

    return zarr


@functools.lru_cache(maxsize=256)
def _cached_array(where: str, mtime_ns: int, mode: str):
    """An array of a store, opened once per process (an LRU of open arrays,
    keyed by the metadata file's mtime so that a replaced store is reopened)."""
    return _zarr().open_array(where, mode=mode)


def _array(path: str, name: str, mode: str = "r+"):
    where = os.path.join(path, name)
    try:
        mtime = os.stat(os.path.join(where, "zarr.json")).st_mtime_ns
    except OSError as exc:
        raise StoreError(f"{path}: array {name!r} is missing ({exc.strerror})") from None
    return _cached_array(where, mtime, mode)


def _encode(v):
    return v if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(v)


@dataclass(frozen=True)
class StoreWarp:
    """A warp inside a store (a :class:`~bgdask.io.warp.WarpSource`): its
    planes are read from the store's arrays; its mask is in the store's layout."""

    path: str
    vi: int
    pi: int
    box: Box
    mask_planes: Mapping[str, int]

    def read(self, plane: str, rows: slice | None = None) -> np.ndarray:
        if plane not in PLANES:
            raise ValueError(f"plane must be one of {PLANES}, not {plane!r}")
        start, stop, _ = (rows or slice(None)).indices(self.box.height)
        arr = _array(self.path, plane, mode="r")
        return np.asarray(arr[self.vi, self.pi, start:stop, : self.box.width])


class Store:
    """A bgdask output store at ``path``.

    Construct with :meth:`open` (an existing store: its layout is checked) or
    :meth:`create`. An instance holds only its path, so it travels cheaply to
    the workers that write into it; what it reads is cached per instance.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)

    def __repr__(self) -> str:
        return f"Store({self.path!r})"

    def __reduce__(self):
        return (Store, (self.path,))

    # -- opening -------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike) -> "Store":
        """Open a store, checking that it is one of bgdask's; any problem is
        a :class:`~bgdask.errors.StoreError` naming the store."""
        st = cls(path)
        if not Path(st.path).exists():
            raise StoreError(f"{st.path}: no such store")
        try:
            group = st.group
            names = set(group.array_keys())
        except Exception as exc:  # noqa: BLE001 - zarr raises many kinds on damaged metadata
            raise StoreError(f"{st.path}: not a readable bgdask store ({type(exc).__name__}: {exc})") from None
        missing = [n for n in REQUIRED if n not in names]
        if missing:
            raise StoreError(f"{st.path}: not a bgdask store (no {', '.join(missing)} array)")
        return st

    @cached_property
    def group(self):
        return _zarr().open_group(self.path, mode="r")

    # -- attributes ----------------------------------------------------------
    @cached_property
    def attrs(self) -> dict[str, Any]:
        """The store's attributes with the JSON ones decoded."""
        out = dict(self.group.attrs)
        for key in JSON_ATTRS:
            if isinstance(out.get(key), str):
                try:
                    out[key] = json.loads(out[key])
                except json.JSONDecodeError:
                    raise StoreError(f"{self.path}: attribute {key!r} is not valid JSON") from None
        return out

    @property
    def config(self):
        from ..config import MatchConfig

        d = self.attrs.get("config")
        return None if d is None else MatchConfig.from_dict(d, source=f"{self.path} (config)")

    @property
    def skymap(self) -> SkyMap | None:
        d = self.attrs.get("skymap")
        return None if d is None else SkyMap.from_dict(d, source=f"{self.path} (skymap)")

    @property
    def mask_planes(self) -> dict[str, int]:
        return dict(self.attrs.get("mask_planes") or {})

    @property
    def reference_visit(self) -> int | None:
        ref = self.attrs.get("reference_visit")
        return None if ref is None else int(ref)

    @property
    def complete(self) -> bool:
        return bool(self.attrs.get("complete"))

    @property
    def models_done(self) -> bool:
        return bool(self.attrs.get("models_done"))

    @property
    def fingerprint(self) -> str | None:
        return self.attrs.get("fingerprint")

    @property
    def stage_times(self) -> dict[str, float]:
        return dict(self.attrs.get("stage_times") or {})

    # -- index arrays --------------------------------------------------------
    def _read(self, name: str) -> np.ndarray:
        try:
            return np.asarray(self.group[name][...])
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"{self.path}: cannot read array {name!r} ({type(exc).__name__}: {exc})") from None

    @cached_property
    def visits(self) -> list[int]:
        return [int(v) for v in self._read("visit")]

    @cached_property
    def patches(self) -> list[int]:
        return [int(p) for p in self._read("patch")]

    @cached_property
    def present(self) -> np.ndarray:
        return self._read("present").astype(bool)

    def done(self) -> np.ndarray:
        """Which warps are written completely (read afresh at every call)."""
        return self._read("done").astype(bool)

    @cached_property
    def usable(self) -> np.ndarray:
        return self._read("usable").astype(bool) if "usable" in self.group else self.present

    @cached_property
    def boxes(self) -> dict[int, Box]:
        """Each patch's outer box."""
        cols = [self._read(n) for n in ("x0", "y0", "width", "height")]
        return {p: Box(*(int(c[i]) for c in cols)) for i, p in enumerate(self.patches)}

    @cached_property
    def chunk_rows(self) -> int:
        return int(self.group["image"].chunks[2])

    def keys(self) -> list[tuple[int, int]]:
        """(visit, patch) of every present warp, sorted."""
        return [(v, p) for i, v in enumerate(self.visits) for j, p in enumerate(self.patches)
                if self.present[i, j]]

    def index(self, visit: int, patch: int) -> tuple[int, int]:
        return self.visits.index(visit), self.patches.index(patch)

    def warp_source(self, visit: int, patch: int) -> StoreWarp:
        vi, pi = self.index(visit, patch)
        return StoreWarp(self.path, vi, pi, self.boxes[patch], self.mask_planes)

    # -- results ----------------------------------------------------------------
    def table(self):
        """The per-visit table (a pandas DataFrame indexed by visit)."""
        names = set(self.group.array_keys())
        return table_from_arrays(self.visits, {name: self._read(name) for name in COLUMNS if name in names})

    def seam(self) -> dict[str, np.ndarray] | None:
        """The seam map, plane name -> (sy, sx) array (None in a store without one)."""
        if "seam" not in set(self.group.array_keys()):
            return None
        return dict(zip(SEAM_PLANES, self._read("seam")))
    def pairs(self):
        """The global method's per-pair table (a pandas DataFrame), or None
        (the reference method)."""
        names = set(self.group.array_keys())
        wanted = [f"pair_{n}" for n in PAIR_COLUMNS]
        if not all(n in names for n in wanted):
            return None
        return pair_table_from_arrays({n: self._read(n) for n in wanted})

    @property
    def solve_info(self) -> dict | None:
        """The global method's solve figures (attribute ``global_solve``), or None."""
        info = self.attrs.get("global_solve")
        return dict(info) if info else None

    def models(self) -> dict:
        """Each visit's :class:`~bgdask.background.VisitModel` as stage B stored it."""
        from ..background import VisitModel

        diff = self._read("diff_model")
        table = self.table()
        return {v: VisitModel(v, diff[i], int(table.loc[v, "n_good"]), table.loc[v, "model_mean"],
                              table.loc[v, "model_rms"], table.loc[v, "fit_rms"], table.loc[v, "status"],
                              extrap_frac=table.loc[v, "extrap_frac"])
                for i, v in enumerate(self.visits)}

    def coarse(self, visit: int, patch: int) -> tuple[np.ndarray, int, int]:
        """A warp's stored coarse offset grid and its first cell (ky0, kx0)."""
        sm, cfg = self.skymap, self.config
        kx, ky = coarse_cells(self.boxes[patch], cfg.binning, coarse_shape(sm.width, sm.height, cfg.binning))
        vi, pi = self.index(visit, patch)
        grid = np.asarray(self.group["offset_coarse"][vi, pi])
        return grid[: ky[1] - ky[0], : kx[1] - kx[0]], ky[0], kx[0]

    def dataset(self):
        """The store as a lazy xarray Dataset, its JSON attributes decoded."""
        import xarray as xr

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_CONSOLIDATED_WARNING)
            ds = xr.open_zarr(self.path)
        ds.attrs.update({k: v for k, v in self.attrs.items() if k in JSON_ATTRS})
        return ds

    # -- creating -----------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, *, visits, patches, present: np.ndarray, skymap: SkyMap,
               config, chunk_rows: int, attrs: Mapping[str, object], overwrite: bool = False) -> "Store":
        """Write a store's metadata and index variables; no pixel yet.

        Built beside the target and renamed into place, so a failure (full
        disk, kill) never leaves a half-made store under ``path``."""
        import dask.array as da
        import xarray as xr
        from zarr.codecs import BloscCodec

        from .. import __version__

        path = Path(path)
        if path.exists():
            if not overwrite:
                raise StoreError(f"{path}: already exists")
            check_replaceable(path)
            shutil.rmtree(path)
        nv, npch = len(visits), len(patches)
        h, w = skymap.max_outer_shape
        sy, sx = superpixel_shape(skymap.width, skymap.height, config.x_bin, config.y_bin)
        cshape = coarse_shape(skymap.width, skymap.height, config.binning)
        boxes = [skymap.outer_box(p) for p in patches]
        cells = [coarse_cells(b, config.binning, cshape) for b in boxes]
        cy = max(ky[1] - ky[0] for _, ky in cells)
        cx = max(kx[1] - kx[0] for kx, _ in cells)
        rows = min(chunk_rows, h)

        def lazy(shape, chunks, dtype, fill):
            return da.full(shape, fill, chunks=chunks, dtype=dtype)

        pix = ("visit", "patch", "y", "x")
        data_vars = {name: (pix, lazy((nv, npch, h, w), (1, 1, rows, w), PLANE_DTYPES[name], PLANE_FILL[name]))
                     for name in PLANES}
        data_vars.update({
            "offset_coarse": (("visit", "patch", "cy", "cx"), lazy((nv, npch, cy, cx), (1, 1, cy, cx), np.float64, np.nan)),
            "diff_model": (("visit", "sy", "sx"), lazy((nv, sy, sx), (1, sy, sx), np.float64, np.nan)),
            "seam": (("seam", "sy", "sx"), lazy((len(SEAM_PLANES), sy, sx), (len(SEAM_PLANES), sy, sx), np.float64,
                                                np.nan)),
            "done": (("visit", "patch"), lazy((nv, npch), (1, 1), bool, False)),
            "usable": (("visit", "patch"), lazy((nv, npch), (nv, npch), bool, False)),
            "present": (("visit", "patch"), np.asarray(present, dtype=bool)),
        })
        for name, (dtype, fill, _) in COLUMNS.items():
            data_vars[name] = (("visit",), lazy((nv,), (nv,), np.dtype(dtype), fill))
        coords = {
            "visit": np.asarray(visits, dtype=np.int64),
            "patch": np.asarray(patches, dtype=np.int64),
            "x0": ("patch", np.array([b.x0 for b in boxes], dtype=np.int64)),
            "y0": ("patch", np.array([b.y0 for b in boxes], dtype=np.int64)),
            "width": ("patch", np.array([b.width for b in boxes], dtype=np.int64)),
            "height": ("patch", np.array([b.height for b in boxes], dtype=np.int64)),
            "coarse_x0": ("patch", np.array([kx[0] for kx, _ in cells], dtype=np.int64)),
            "coarse_y0": ("patch", np.array([ky[0] for _, ky in cells], dtype=np.int64)),
        }
        ds = xr.Dataset(data_vars, coords=coords)
        from ..table import STATUS_CODES

        ds["status"].attrs.update(flag_values=list(STATUS_CODES.values()), flag_meanings=" ".join(STATUS_CODES))
        ds["image"].attrs["units"] = "nJy"
        ds["seam"].attrs.update(units="nJy", planes=list(SEAM_PLANES))
        ds.attrs.update({k: _encode(v) for k, v in attrs.items()})
        ds.attrs.update(bgdask_version=__version__, models_done=False, complete=False)
        encoding = {name: {"chunks": ds[name].data.chunksize} for name in ds.data_vars
                    if isinstance(ds[name].data, da.Array)}
        for name in PLANES:
            # lz4 with byte shuffle: 3.6x faster to write than zarr's default
            # zstd for a slightly better ratio on warps (BENCHMARKS.md)
            encoding[name]["compressors"] = [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            if tmp.exists():
                shutil.rmtree(tmp)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_CONSOLIDATED_WARNING)
                ds.to_zarr(tmp, mode="w-", compute=False, zarr_format=3, consolidated=True, encoding=encoding)
            os.replace(tmp, path)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StoreError(f"{path}: cannot create the store ({exc})") from None
        return cls(path)

    # -- writing (the client) --------------------------------------------------------
    def _writable(self):
        try:
            return _zarr().open_group(self.path, mode="r+")
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"{self.path}: cannot open the store for writing ({exc})") from None

    def _consolidate(self) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_CONSOLIDATED_WARNING)
            _zarr().consolidate_metadata(self.path)
        self.__dict__.pop("group", None)
        self.__dict__.pop("attrs", None)

    def set_attrs(self, **attrs) -> None:
        """Add attributes (and refresh the consolidated metadata)."""
        group = self._writable()
        group.attrs.update({k: _encode(v) for k, v in attrs.items()})
        self._consolidate()

    def write_models(self, models: Mapping, table, reference: int, usable: np.ndarray) -> None:
        """The per-visit models and table and the warps' usable flags (after stage B)."""
        group = self._writable()
        group["usable"][:] = usable
        diff = group["diff_model"]
        for vi, v in enumerate(self.visits):
            diff[vi] = models[v].model
        for name, values in table_to_arrays(table.loc[self.visits]).items():
            group[name][:] = values
        group.attrs.update(reference_visit=int(reference), models_done=True)
        self._consolidate()

    def write_quality(self, table, seam: np.ndarray) -> None:
        """The quality measured in stage C: the table's quality columns and the seam map."""
        group = self._writable()
        for name, values in table_to_arrays(table.loc[self.visits]).items():
            if name in QUALITY_COLUMNS:
                group[name][:] = values
        group["seam"][:] = seam
        self._consolidate()

    def write_pairs(self, table, solve_info: Mapping[str, Any]) -> None:
        """The global method's per-pair table (arrays along ``pair``) and its
        solve's figures (attribute ``global_solve``); before :meth:`write_models`."""
        group = self._writable()
        for name, values in pair_table_to_arrays(table).items():
            arr = group.create_array(name, shape=values.shape, dtype=values.dtype,
                                     chunks=(max(len(values), 1),), dimension_names=["pair"],
                                     fill_value=0, overwrite=True)
            if len(values):
                arr[:] = values
        group.attrs.update(global_solve=_encode(dict(solve_info)))
        self._consolidate()

    def mark_complete(self, **extra_attrs) -> bool:
        """Set ``complete`` when every present warp is done; returns it."""
        complete = bool(np.all(self.done()[self.present]))
        self.set_attrs(complete=complete, **extra_attrs)
        return complete

    # -- writing (the workers) ---------------------------------------------------------
    def write_rows(self, vi: int, pi: int, start: int, image: np.ndarray, mask: np.ndarray,
                   variance: np.ndarray) -> None:
        """Rows [start, start + len) of one warp: whole chunks, padded to the store's width."""
        for name, data in (("image", image), ("mask", mask), ("variance", variance)):
            arr = _array(self.path, name)
            width = arr.shape[-1]
            if data.shape[1] == width and data.dtype == arr.dtype:
                block = data
            else:
                block = np.full((data.shape[0], width), PLANE_FILL[name], dtype=arr.dtype)
                block[:, : data.shape[1]] = data
            arr[vi, pi, start:start + data.shape[0], :] = block

    def read_rows(self, vi: int, pi: int, plane: str, rows: slice, width: int) -> np.ndarray:
        """Rows ``rows`` of one warp's plane as written (``width`` columns, no padding)."""
        return np.asarray(_array(self.path, plane, mode="r")[vi, pi, rows, :width])

    def finish_warp(self, vi: int, pi: int, coarse: np.ndarray) -> None:
        """Write a warp's coarse offsets, then mark it done."""
        arr = _array(self.path, "offset_coarse")
        block = np.full(arr.shape[2:], np.nan)
        block[: coarse.shape[0], : coarse.shape[1]] = coarse
        arr[vi, pi] = block
        _array(self.path, "done")[vi, pi] = True
