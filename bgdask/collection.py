"""The lazy (visit, patch) collection of warps: an xarray Dataset on Dask.

:func:`open_warps` turns warps (files, a store, a Butler query, memory) into
one Dataset whose ``image``, ``mask`` and ``variance`` are Dask arrays of
dims (visit, patch, y, x). It is what :func:`bgdask.match` takes.

Each chunk is one block of rows of one warp, read by one task. Those tasks
are *read tasks* (:class:`BlockRead`): the stages of a match find them in
the graph and read the same pixels inside their own tasks (each task reads
what it needs, as a plain file reader would), rather than holding a read
block in memory for all its consumers. Any other Dataset with the same
variables works too; its chunks are then ordinary dependencies.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .geometry import Box, SkyMap
from .io.catalog import Catalog, find_warps, from_warps
from .io.warp import PLANE_DTYPES, PLANE_FILL, PLANES, WarpSource, grid_coords
from .masks import remap_mask, unnamed_bits

__all__ = ["open_warps", "BlockRead", "read_block", "ReadLayer", "REQUIRED_VARIABLES"]

#: What a Dataset needs for :func:`bgdask.match`.
REQUIRED_VARIABLES = ("image", "mask", "variance")
REQUIRED_COORDS = ("visit", "patch", "x0", "y0", "width", "height")


@dataclass(frozen=True)
class BlockRead:
    """Rows [start, stop) of one plane of one warp, as the collection holds
    them: padded to ``width`` columns, the mask in the collection's layout
    ``target`` (None: already in it)."""

    source: WarpSource | None
    plane: str
    start: int
    stop: int
    width: int
    target: Mapping[str, int] | None = None

    def rows(self, box: Box | None = None) -> np.ndarray:
        """The block's rows without padding (``box``: the warp's box; only
        its rows and columns are returned)."""
        return self.rows_and_unnamed()[0]

    def rows_and_unnamed(self) -> tuple[np.ndarray, int]:
        """The block's rows, and (a mask block remapped to ``target``) the
        bits its file set there without naming them (0 otherwise)."""
        src = self.source
        h, w = src.box.height, src.box.width
        stop = min(self.stop, h)
        if self.start >= stop:
            return np.empty((0, w), dtype=PLANE_DTYPES[self.plane]), 0
        data = src.read(self.plane, slice(self.start, stop))
        unnamed = 0
        if self.plane == "mask" and self.target is not None:
            unnamed = unnamed_bits(data, src.mask_planes)
            data = remap_mask(data, src.mask_planes, self.target)
        return np.asarray(data, dtype=PLANE_DTYPES[self.plane]), unnamed

    def padded(self) -> np.ndarray:
        """The chunk: shape (1, 1, stop - start, width), filled beyond the warp."""
        out = np.full((1, 1, self.stop - self.start, self.width), PLANE_FILL[self.plane],
                      dtype=PLANE_DTYPES[self.plane])
        if self.source is not None:
            data = self.rows()
            out[0, 0, : data.shape[0], : data.shape[1]] = data
        return out


def read_block(spec: BlockRead) -> np.ndarray:
    """The task that makes one chunk of the collection."""
    return spec.padded()


def _layer_class():
    from dask.highlevelgraph import MaterializedLayer

    class ReadLayer(MaterializedLayer):
        """A graph layer of read tasks that also holds their specs
        (``specs[vi, pi, yi]``), so that later stages can read the same rows."""

        def __init__(self, mapping, specs: np.ndarray):
            super().__init__(mapping)
            self.specs = specs

    return ReadLayer


ReadLayer = None  # set on first use (keeps `import bgdask.collection` free of dask's graph modules)


def open_warps(source, skymap: SkyMap | str | os.PathLike | None = None,
               chunks: dict[str, int] | None = None):
    """Open the warps of ``source`` lazily as one Dataset indexed by (visit, patch).

    ``source``: a directory of warp FITS files, a manifest CSV, a bgdask
    store, a :class:`~bgdask.io.catalog.Catalog`, or a mapping (visit, patch)
    -> warp (in-memory :class:`~bgdask.io.warp.Warp` objects).

    ``image``, ``mask`` and ``variance`` are Dask arrays of dims (visit,
    patch, y, x), padded to the largest warp (padding: NaN, mask 0); each
    patch's box is in the coordinates ``x0``, ``y0``, ``width``, ``height``;
    ``present`` says which warps exist. Masks are in one bit layout for all
    warps, named in ``attrs["mask_planes"]``; ``attrs["skymap"]`` holds the
    geometry. Only headers are read here: pixels are read (only the rows of
    the chunk asked for) when computed, and absent warps read nothing.

    ``chunks={"y": rows}`` splits each warp into row blocks (default: one
    chunk per warp).
    """
    import dask.array as da
    import xarray as xr
    from dask.highlevelgraph import HighLevelGraph

    from ._compat import Task

    global ReadLayer
    if ReadLayer is None:
        ReadLayer = _layer_class()

    if isinstance(source, Catalog):
        catalog = source
    elif isinstance(source, Mapping):
        catalog = from_warps(source)
    else:
        catalog = find_warps(source)
    sm = catalog.resolve_skymap(skymap)
    visits, patches = catalog.visits, catalog.patches
    h, w = sm.max_outer_shape
    rows = max(1, min(int((chunks or {}).get("y", h)), h))
    starts = list(range(0, h, rows))
    row_chunks = tuple(min(rows, h - s) for s in starts)
    present = np.zeros((len(visits), len(patches)), dtype=bool)
    token = _token(catalog, rows)
    target = dict(catalog.mask_planes)
    data_vars = {}
    for plane in PLANES:
        name = f"open-warps-{plane}-{token}"
        specs = np.empty((len(visits), len(patches), len(starts)), dtype=object)
        layer = {}
        for vi, v in enumerate(visits):
            for pi, p in enumerate(patches):
                src = catalog.entries.get((v, p))
                present[vi, pi] = src is not None
                remap = target if plane == "mask" else None
                for yi, y0 in enumerate(starts):
                    spec = BlockRead(src, plane, y0, y0 + row_chunks[yi], w, remap)
                    specs[vi, pi, yi] = spec
                    key = (name, vi, pi, yi, 0)
                    layer[key] = Task(key, read_block, spec)
        graph = HighLevelGraph({name: ReadLayer(layer, specs)}, {name: set()})
        arr = da.Array(graph, name, chunks=((1,) * len(visits), (1,) * len(patches), row_chunks, (w,)),
                       dtype=PLANE_DTYPES[plane], meta=np.empty((0, 0, 0, 0), dtype=PLANE_DTYPES[plane]))
        data_vars[plane] = (("visit", "patch", "y", "x"), arr)
    data_vars["present"] = (("visit", "patch"), present)
    boxes = [sm.outer_box(p) for p in patches]
    coords = grid_coords(visits, patches, boxes)
    attrs = {"mask_planes": target, "skymap": sm.to_dict(), "source": catalog.source}
    if sm.tract is not None:
        attrs["tract"] = sm.tract
    ds = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    ds.image.attrs["units"] = "nJy"
    return ds


def _token(catalog: Catalog, rows: int) -> str:
    h = hashlib.sha1(f"{catalog.source}|{rows}|{sorted(catalog.mask_planes.items())}".encode())
    for (v, p), src in catalog.items():
        h.update(f"{v},{p},{getattr(src, 'path', None) or id(src)};".encode())
    return h.hexdigest()
