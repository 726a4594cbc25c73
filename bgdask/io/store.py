"""The output store: Zarr v3, readable by ``xarray.open_zarr``.

Layout (ARCHITECTURE.md): matched ``image``, ``mask``, ``variance`` (visit,
patch, y, x); ``offset_coarse`` (visit, patch, cy, cx) with each patch's
first coarse cell in ``coarse_x0``/``coarse_y0``; ``diff_model`` (visit, sy,
sx); ``present``, ``done``, ``usable`` (visit, patch); ``x0``, ``y0``,
``width``, ``height`` (patch); the per-visit table (visit). Attributes:
``reference_visit``, ``config``, ``skymap``, ``mask_planes``, ``fingerprint``,
``bgdask_version``, ``models_done``, ``complete``.

The metadata is written once from a template; afterwards every writer covers
whole chunks (one row block of one warp, or one warp's flag), so concurrent
writes from many workers never share a chunk. ``done`` is set for a warp
only after its rows and coarse grid have landed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Mapping

import warnings

import dask.array as da
import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec

from .. import __version__
from ..errors import StoreError

# Consolidated metadata is a zarr-python extension of Zarr v3 that xarray
# reads; zarr warns about it on every write.
warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part", module="zarr")

__all__ = [
    "STATUS_CODES",
    "TABLE_FIELDS",
    "create_store",
    "open_store",
    "check_resumable",
    "write_rows",
    "finish_warp",
    "write_models",
    "mark_complete",
    "set_attrs",
    "check_replaceable",
    "fingerprint",
]

STATUS_CODES = {"matched": 0, "reference": 1, "skipped": 2, "empty": 3}
TABLE_FIELDS = {
    "ref_chi2": "f8", "ref_variance": "f8", "ref_coverage": "i8", "ref_cost": "f8",
    "n_good": "i8", "model_mean": "f8", "model_rms": "f8", "fit_rms": "f8", "status": "i1",
}


def fingerprint(entries, config_json: str, skymap_json: str, chunk_rows: int) -> str:
    """A hash of what defines a run: inputs (path, size, mtime), config, geometry."""
    h = hashlib.sha256()
    h.update(config_json.encode())
    h.update(skymap_json.encode())
    h.update(str(chunk_rows).encode())
    for e in entries:
        try:
            st = os.stat(e.path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "?"
        h.update(f"{e.visit},{e.patch},{os.path.abspath(e.path)},{stamp};".encode())
    return h.hexdigest()


def create_store(
    path: str | os.PathLike,
    *,
    visits, patches, present: np.ndarray, boxes: Mapping[int, tuple[int, int, int, int]],
    coarse_origin: Mapping[int, tuple[int, int]], coarse_max: tuple[int, int],
    warp_shape: tuple[int, int], grid_shape: tuple[int, int], chunk_rows: int,
    attrs: Mapping[str, object], overwrite: bool = False,
) -> None:
    """Write the store's metadata and index variables; no pixel yet."""
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise StoreError(f"{path}: already exists; use --resume to finish it or --overwrite to replace it")
        _remove(path)
    nv, npch = len(visits), len(patches)
    h, w = warp_shape
    cy, cx = coarse_max
    sy, sx = grid_shape
    rows = min(chunk_rows, h)

    def lazy(shape, chunks, dtype, fill):
        return da.full(shape, fill, chunks=chunks, dtype=dtype)

    pix = (nv, npch, h, w)
    pix_chunks = (1, 1, rows, w)
    flag_chunks = (1, 1)
    data_vars = {
        "image": (("visit", "patch", "y", "x"), lazy(pix, pix_chunks, np.float32, np.nan)),
        "mask": (("visit", "patch", "y", "x"), lazy(pix, pix_chunks, np.int32, 0)),
        "variance": (("visit", "patch", "y", "x"), lazy(pix, pix_chunks, np.float32, np.nan)),
        "offset_coarse": (("visit", "patch", "cy", "cx"), lazy((nv, npch, cy, cx), (1, 1, cy, cx), np.float64, np.nan)),
        "diff_model": (("visit", "sy", "sx"), lazy((nv, sy, sx), (1, sy, sx), np.float64, np.nan)),
        "done": (("visit", "patch"), lazy((nv, npch), flag_chunks, bool, False)),
        "usable": (("visit", "patch"), lazy((nv, npch), (nv, npch), bool, False)),
        "present": (("visit", "patch"), np.asarray(present, dtype=bool)),
    }
    for name, dtype in TABLE_FIELDS.items():
        fill = 0 if dtype[0] == "i" else np.nan
        data_vars[name] = (("visit",), lazy((nv,), (nv,), np.dtype(dtype), fill))
    coords = {
        "visit": np.asarray(visits, dtype=np.int64),
        "patch": np.asarray(patches, dtype=np.int64),
        "x0": ("patch", np.array([boxes[p][0] for p in patches], dtype=np.int64)),
        "y0": ("patch", np.array([boxes[p][1] for p in patches], dtype=np.int64)),
        "width": ("patch", np.array([boxes[p][2] for p in patches], dtype=np.int64)),
        "height": ("patch", np.array([boxes[p][3] for p in patches], dtype=np.int64)),
        "coarse_x0": ("patch", np.array([coarse_origin[p][1] for p in patches], dtype=np.int64)),
        "coarse_y0": ("patch", np.array([coarse_origin[p][0] for p in patches], dtype=np.int64)),
    }
    ds = xr.Dataset(data_vars, coords=coords)
    ds["status"].attrs.update(
        flag_values=list(STATUS_CODES.values()), flag_meanings=" ".join(STATUS_CODES)
    )
    ds["image"].attrs["units"] = "nJy"
    ds.attrs.update({k: _attr(v) for k, v in attrs.items()})
    ds.attrs.update(bgdask_version=__version__, models_done=False, complete=False)
    encoding = {name: {"chunks": ds[name].data.chunksize} for name in ds.data_vars
                if isinstance(ds[name].data, da.Array)}
    for name in ("image", "mask", "variance"):
        # lz4 with byte shuffle: 3.6x faster to write than zarr's default zstd
        # for a slightly better ratio on warps (BENCHMARKS.md)
        encoding[name]["compressors"] = [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]
    # Build the template beside the target and rename it into place, so a
    # failure (full disk, kill) never leaves a half-made store under ``path``.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        ds.to_zarr(tmp, mode="w-", compute=False, zarr_format=3, consolidated=True, encoding=encoding)
        os.replace(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StoreError(f"{path}: cannot create the store ({exc})") from None


def _attr(v):
    return v if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(v)


def check_replaceable(path: str | os.PathLike) -> None:
    """Raise unless ``path`` is a Zarr store or an empty directory (safe to replace)."""
    path = Path(path)
    is_store = (path / "zarr.json").exists() or (path / ".zgroup").exists()
    if not (is_store or (path.is_dir() and not any(path.iterdir()))):
        raise StoreError(f"{path}: exists and is not a Zarr store; refusing to overwrite it")


def _remove(path: Path) -> None:
    check_replaceable(path)
    shutil.rmtree(path)


def open_store(path: str | os.PathLike, mode: str = "r") -> zarr.Group:
    try:
        return zarr.open_group(str(path), mode=mode)
    except Exception as exc:  # noqa: BLE001
        raise StoreError(f"{path}: not a bgdask store ({exc})") from None


def check_resumable(path: str | os.PathLike, expected_fingerprint: str) -> zarr.Group:
    group = open_store(path, mode="r+")
    found = group.attrs.get("fingerprint")
    if found != expected_fingerprint:
        raise StoreError(
            f"{path}: holds another run (its inputs, configuration or geometry differ); "
            "use --overwrite to replace it, or another output path"
        )
    return group


_OPEN: dict[tuple[str, int], zarr.Array] = {}


def _array(path: str, name: str) -> zarr.Array:
    """An array of the store opened for writing, cached per worker process
    (keyed by its metadata file's mtime, so a replaced store is reopened)."""
    where = os.path.join(path, name)
    key = (where, os.stat(os.path.join(where, "zarr.json")).st_mtime_ns)
    arr = _OPEN.get(key)
    if arr is None:
        if len(_OPEN) > 64:
            _OPEN.clear()
        arr = _OPEN[key] = zarr.open_array(where, mode="r+")
    return arr


def write_rows(path: str, vi: int, pi: int, start: int, stop: int, width: int,
               image: np.ndarray, mask: np.ndarray, variance: np.ndarray, warp_width: int) -> None:
    """Write rows [start, stop) of one warp: whole chunks (padded with fill values)."""
    for name, data, fill in (("image", image, np.nan), ("mask", mask, 0), ("variance", variance, np.nan)):
        arr = _array(path, name)
        if warp_width == width and data.dtype == arr.dtype:
            block = data
        else:
            block = np.full((stop - start, width), fill, dtype=arr.dtype)
            block[:, :warp_width] = data
        arr[vi, pi, start:stop, :] = block


def finish_warp(path: str, vi: int, pi: int, coarse: np.ndarray) -> None:
    """Write a warp's coarse offsets, then mark it done."""
    arr = _array(path, "offset_coarse")
    block = np.full(arr.shape[2:], np.nan)
    block[: coarse.shape[0], : coarse.shape[1]] = coarse
    arr[vi, pi] = block
    _array(path, "done")[vi, pi] = True


def write_models(path: str, visits, models, table: Mapping[int, Mapping[str, float]], reference: int,
                 usable: np.ndarray) -> None:
    """Write the per-visit models and table and the warps' usable flags (after stage B)."""
    group = open_store(path, mode="r+")
    group["usable"][:] = usable
    diff = group["diff_model"]
    for vi, v in enumerate(visits):
        diff[vi] = models[v].model
    for name in TABLE_FIELDS:
        values = np.array([table[v][name] for v in visits], dtype=group[name].dtype)
        group[name][:] = values
    group.attrs.update(reference_visit=int(reference), models_done=True)
    zarr.consolidate_metadata(str(path))


def mark_complete(path: str, extra_attrs: Mapping[str, object] | None = None) -> bool:
    """Set ``complete`` when every present warp is done; returns it."""
    group = open_store(path)
    present = np.asarray(group["present"][:])
    done = np.asarray(group["done"][:])
    complete = bool(np.all(done[present]))
    set_attrs(path, complete=complete, **(extra_attrs or {}))
    return complete


def read_models(path: str):
    """The stored reference visit, models and table (for --resume)."""
    group = open_store(path)
    visits = [int(v) for v in group["visit"][:]]
    diff = np.asarray(group["diff_model"][:])
    table = {
        v: {name: np.asarray(group[name][:])[i].item() for name in TABLE_FIELDS}
        for i, v in enumerate(visits)
    }
    return int(group.attrs["reference_visit"]), {v: diff[i] for i, v in enumerate(visits)}, table


def set_attrs(path: str, **attrs) -> None:
    """Add attributes to a store (and refresh its consolidated metadata)."""
    group = open_store(path, mode="r+")
    group.attrs.update({k: _attr(v) for k, v in attrs.items()})
    zarr.consolidate_metadata(str(path))
