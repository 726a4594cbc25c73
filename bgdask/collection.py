"""The lazy (visit, patch) collection of warps as an xarray Dataset."""

from __future__ import annotations

import hashlib
import os

import dask.array as da
import numpy as np
import xarray as xr

from .geometry import SkyMap
from .io.catalog import Catalog, WarpEntry, find_warps, load_plane
from .masks import remap_mask

__all__ = ["open_warps"]

FILL = {"image": np.float32(np.nan), "mask": np.int32(0), "variance": np.float32(np.nan)}
DTYPE = {"image": np.float32, "mask": np.int32, "variance": np.float32}


def open_warps(source, skymap: SkyMap | str | os.PathLike | None = None,
               chunks: dict[str, int] | None = None) -> xr.Dataset:
    """Open the warps of ``source`` lazily as one Dataset indexed by (visit, patch).

    ``image``, ``mask`` and ``variance`` are Dask arrays of dims (visit,
    patch, y, x), padded to the largest warp (padding: NaN, mask 0); each
    patch's box is in the coordinates ``x0``, ``y0``, ``width``, ``height``;
    ``present`` says which warps exist. Masks are in one bit layout for all
    files, named in ``attrs["mask_planes"]``; ``attrs["skymap"]`` holds the
    geometry. Only headers are read here: pixels are read (only the rows of
    the chunk asked for) when computed, and absent warps read nothing.

    ``chunks={"y": rows}`` splits each warp into row blocks (default: one
    chunk per warp).
    """
    catalog = source if isinstance(source, Catalog) else find_warps(source)
    sm = catalog.resolve_skymap(skymap)
    visits, patches = catalog.visits, catalog.patches
    h, w = sm.max_outer_shape
    rows = min(int((chunks or {}).get("y", h)), h)
    row_chunks = _split(h, rows)
    # one object cell per output chunk: each task gets only its own warp's entry
    table = np.empty((len(visits), len(patches), len(row_chunks), 1), dtype=object)
    present = np.zeros((len(visits), len(patches)), dtype=bool)
    for vi, v in enumerate(visits):
        for pi, p in enumerate(patches):
            table[vi, pi, :, 0] = catalog.entries.get((v, p))
            present[vi, pi] = (v, p) in catalog.entries
    token = _token(catalog, rows)
    refs = da.from_array(table, chunks=(1, 1, 1, 1), name=f"warp-refs-{token}")
    out_chunks = ((1,) * len(visits), (1,) * len(patches), row_chunks, (w,))
    data_vars = {}
    for plane in ("image", "mask", "variance"):
        arr = da.map_blocks(
            _load_block, refs, plane=plane, target=catalog.mask_planes, width=w, rows=rows, height=h,
            chunks=out_chunks, dtype=DTYPE[plane], name=f"open-warps-{plane}-{token}",
            meta=np.empty((0, 0, 0, 0), dtype=DTYPE[plane]),
        )
        data_vars[plane] = (("visit", "patch", "y", "x"), arr)
    data_vars["present"] = (("visit", "patch"), present)
    boxes = [sm.outer_box(p) for p in patches]
    coords = {
        "visit": np.asarray(visits, dtype=np.int64),
        "patch": np.asarray(patches, dtype=np.int64),
        "x0": ("patch", np.array([b.x0 for b in boxes], dtype=np.int64)),
        "y0": ("patch", np.array([b.y0 for b in boxes], dtype=np.int64)),
        "width": ("patch", np.array([b.width for b in boxes], dtype=np.int64)),
        "height": ("patch", np.array([b.height for b in boxes], dtype=np.int64)),
    }
    attrs = {"mask_planes": dict(catalog.mask_planes), "skymap": sm.to_dict(), "source": catalog.source}
    if sm.tract is not None:
        attrs["tract"] = sm.tract
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _split(n: int, size: int) -> tuple[int, ...]:
    return tuple(min(size, n - s) for s in range(0, n, size))


def _token(catalog: Catalog, rows: int) -> str:
    h = hashlib.sha1(f"{catalog.source}|{rows}".encode())
    for e in catalog:
        h.update(f"{e.visit},{e.patch},{e.path};".encode())
    return h.hexdigest()


def _load_block(refs: np.ndarray, plane: str, target: dict, width: int, rows: int, height: int,
                block_id=None) -> np.ndarray:
    """One chunk: rows of one warp's plane, padded; fill for absent warps."""
    y0 = block_id[2] * rows           # block_id: cheaper for Dask than block_info
    y1 = min(y0 + rows, height)
    out = np.full((1, 1, y1 - y0, width), FILL[plane], dtype=DTYPE[plane])
    entry: WarpEntry | None = refs[0, 0, 0, 0]
    if entry is None or y0 >= entry.box.height:
        return out
    stop = min(y1, entry.box.height)
    data = load_plane(entry, plane, slice(y0, stop))
    if plane == "mask" and entry.zarr_index is None:
        data = remap_mask(data, entry.mask_planes, target)
    out[0, 0, : stop - y0, : entry.box.width] = data
    return out
