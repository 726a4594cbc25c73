"""Matched warps back into the Butler, from a finished store.

Per (visit, patch): ``{dataset_type}_background_matched`` (``MaskedImageV2``:
the matched warp, its mask planes by name) and
``{dataset_type}_background_diff`` (``ImageV2``, float64: the offset image
that was added, so ``float32(input + diff) == matched`` bit for bit). Per
(skymap, tract, band): ``{dataset_type}_background_table`` (``ArrowAstropy``:
the per-visit table, one row a visit).

The Zarr store stays the resumable record: putting is the last step, run
only on a complete store, and idempotent: a dataset already in the output
run is left alone.

Everything this module knows about the store's layout is in
:func:`read_store`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import InputError, StoreError

__all__ = ["StoredWarp", "StoreView", "output_dataset_types", "put_outputs", "read_store"]


@dataclass
class StoredWarp:
    """One matched warp of a store: its box, planes, and the offset added."""

    visit: int
    patch: int
    x0: int
    y0: int
    image: np.ndarray      # float32, matched
    mask: np.ndarray       # int32, bits of StoreView.mask_planes
    variance: np.ndarray   # float32
    offset: np.ndarray     # float64, what was added to the input image


@dataclass
class StoreView:
    path: str
    complete: bool
    reference_visit: int
    mask_planes: dict[str, int]
    units: str | None
    table: Any                                # astropy Table, one row a visit
    keys: list[tuple[int, int]]               # (visit, patch) of the present warps
    warps: Callable[[], Iterator[StoredWarp]]  # reads them one at a time
    warp: Callable[[int, int], StoredWarp]     # reads one, by (visit, patch)


def read_store(path: str | os.PathLike) -> StoreView:
    """What a finished bgdask store holds, for the Butler: the one place
    that knows the store's layout (``xarray.open_zarr``)."""
    import xarray as xr
    from astropy.table import Table

    from ..background import offset_rows
    from ..config import MatchConfig
    from ..geometry import Box

    path = os.fspath(path)
    try:
        ds = xr.open_zarr(path)
        attrs = ds.attrs
        cfg = MatchConfig.from_dict(json.loads(attrs["config"]))
        planes = {str(k): int(v) for k, v in json.loads(attrs["mask_planes"]).items()}
        present = ds["present"].values
        usable = ds["usable"].values if "usable" in ds else present
        visits = [int(v) for v in ds["visit"].values]
        patches = [int(p) for p in ds["patch"].values]
        x0, y0 = ds["x0"].values, ds["y0"].values
        width, height = ds["width"].values, ds["height"].values
        cx0, cy0 = ds["coarse_x0"].values, ds["coarse_y0"].values
        columns = {"visit": np.asarray(visits, dtype=np.int64)}
        for name, var in ds.data_vars.items():
            if var.dims == ("visit",):
                values = var.values
                meanings = var.attrs.get("flag_meanings")
                if meanings is not None:          # status codes -> names
                    names = dict(zip(var.attrs["flag_values"], meanings.split()))
                    values = np.array([names[int(v)] for v in values])
                columns[name] = values
        reference = int(attrs["reference_visit"])
        complete = bool(attrs.get("complete"))
    except (KeyError, ValueError, OSError, TypeError) as exc:
        raise StoreError(f"{path}: not a finished bgdask store ({type(exc).__name__}: {exc})") from None
    columns["reference"] = columns["visit"] == reference
    table = Table(columns)
    status = dict(zip(visits, columns.get("status", ["matched"] * len(visits))))
    keys = [(v, p) for i, v in enumerate(visits) for j, p in enumerate(patches) if present[i, j]]

    def warp(v: int, p: int) -> StoredWarp:
        i, j = visits.index(v), patches.index(p)
        if not present[i, j]:
            raise StoreError(f"{path}: holds no warp of visit {v}, patch {p}")
        h, w = int(height[j]), int(width[j])
        sel = dict(visit=i, patch=j)
        image = ds["image"][sel].values[:h, :w]
        if status[v] == "matched" and usable[i, j]:
            # the warp's coarse cells: the finite block at the start of its padded grid
            grid = ds["offset_coarse"][sel].values
            grid = grid[: int(np.isfinite(grid[:, 0]).sum()), : int(np.isfinite(grid[0]).sum())]
            box = Box(int(x0[j]), int(y0[j]), w, h)
            offset = offset_rows(grid, int(cx0[j]), int(cy0[j]), box, slice(0, h), cfg)
        else:                     # reference, unmatched visit, or warp without usable pixel
            offset = np.zeros((h, w))
        return StoredWarp(v, p, int(x0[j]), int(y0[j]), image, ds["mask"][sel].values[:h, :w],
                          ds["variance"][sel].values[:h, :w], offset)

    def warps() -> Iterator[StoredWarp]:
        for v, p in keys:
            yield warp(v, p)

    return StoreView(path, complete, reference, planes, ds["image"].attrs.get("units"), table, keys,
                     warps, warp)


def output_dataset_types(dataset_type: str) -> dict[str, str]:
    """The names of the outputs made from ``dataset_type``'s warps."""
    return {
        "matched": f"{dataset_type}_background_matched",
        "diff": f"{dataset_type}_background_diff",
        "table": f"{dataset_type}_background_table",
    }


def _register(butler, warps) -> dict[str, Any]:
    """Register the three output dataset types where absent (same dimensions as the input)."""
    from lsst.daf.butler import DatasetType

    names = output_dataset_types(warps.dataset_type)
    universe = butler.dimensions
    warp_dims = butler.get_dataset_type(warps.dataset_type).dimensions.required
    wanted = {
        names["matched"]: DatasetType(names["matched"], warp_dims, "MaskedImageV2", universe=universe),
        names["diff"]: DatasetType(names["diff"], warp_dims, "ImageV2", universe=universe),
        names["table"]: DatasetType(names["table"], ("skymap", "tract", "band"), "ArrowAstropy",
                                    universe=universe),
    }
    for dtype in wanted.values():
        try:
            butler.registry.registerDatasetType(dtype)
        except Exception as exc:  # ConflictingDefinitionError: same name, other definition
            raise InputError(f"cannot register dataset type {dtype.name} ({exc})") from None
    return wanted


def check_output_run(butler, run: str) -> None:
    """InputError unless ``run`` is absent or a RUN collection."""
    from lsst.daf.butler import CollectionType, MissingCollectionError

    try:
        info = butler.collections.get_info(run)
    except MissingCollectionError:
        return
    if info.type != CollectionType.RUN:
        raise InputError(f"--output-run {run}: the collection exists and is {info.type.name}, not RUN")


def _masked_image(w: StoredWarp, planes: dict[str, int], units: str | None):
    import astropy.units as u
    from lsst.images import Box, Image, Mask, MaskedImage, MaskPlane, MaskSchema

    if planes and max(planes.values()) > 30:
        raise StoreError(f"mask plane bits {planes} do not fit lsst.images' 31 bits per int32 mask")
    by_bit = {bit: name for name, bit in planes.items()}
    schema = MaskSchema([MaskPlane(by_bit[b], by_bit[b]) if b in by_bit else None
                         for b in range(max(by_bit, default=-1) + 1)], dtype=np.int32)
    h, wd = w.image.shape
    bbox = Box.factory[w.y0:w.y0 + h, w.x0:w.x0 + wd]
    unit = u.Unit(units) if units else None
    mask = Mask(np.ascontiguousarray(w.mask, dtype=np.int32)[:, :, None], schema=schema, bbox=bbox)
    return MaskedImage(
        Image(np.ascontiguousarray(w.image, dtype=np.float32), bbox=bbox, unit=unit),
        mask=mask,
        variance=Image(np.ascontiguousarray(w.variance, dtype=np.float32), bbox=bbox,
                       unit=None if unit is None else unit**2),
    )


def _diff_image(w: StoredWarp, units: str | None):
    import astropy.units as u
    from lsst.images import Box, Image

    h, wd = w.offset.shape
    return Image(np.ascontiguousarray(w.offset, dtype=np.float64),
                 bbox=Box.factory[w.y0:w.y0 + h, w.x0:w.x0 + wd], unit=u.Unit(units) if units else None)


def _existing(butler, dataset_type: str, run: str, group) -> set:
    """Data IDs (required values) of ``dataset_type`` already in ``run`` for ``group``."""
    from lsst.daf.butler import EmptyQueryResultError, MissingCollectionError, MissingDatasetTypeError

    try:
        refs = butler.query_datasets(
            dataset_type, collections=[run], where="skymap = sk AND tract = tr",
            bind={"sk": group.skymap, "tr": group.tract}, find_first=True, limit=None, explain=False,
        )
    except (MissingCollectionError, MissingDatasetTypeError, EmptyQueryResultError):
        return set()
    return {tuple(ref.dataId.required_values) for ref in refs}


def _write_files(store: str, visit: int, patch: int, kinds: tuple[str, ...], directory: str) -> dict[str, str]:
    """Write one warp's outputs as lsst.images FITS files (on a Dask worker)."""
    from lsst.images import fits as lsst_fits

    view = read_store(store)
    w = view.warp(visit, patch)
    made = {"matched": lambda: _masked_image(w, view.mask_planes, view.units),
            "diff": lambda: _diff_image(w, view.units)}
    paths = {}
    for kind in kinds:
        paths[kind] = os.path.join(directory, f"{kind}_{visit}_{patch}.fits")
        if os.path.exists(paths[kind]):
            os.remove(paths[kind])            # left by an interrupted earlier attempt
        lsst_fits.write(made[kind](), paths[kind])
    return paths


def put_outputs(butler, warps, store: str | os.PathLike, run: str, *, client=None,
                echo: Callable[[str], None] | None = None, lock=None) -> dict[str, int]:
    """Put a finished store's matched warps, offset images and table into
    ``run``: the datasets it does not hold yet. Returns counts put / kept.

    The files are written by the Dask workers of ``client`` (in this process
    without one) beside the store, then ingested in one registry
    transaction: all of a group's warps are in the run, or none. ``lock``
    (a threading.Lock) guards the registry when groups put concurrently."""
    from lsst.daf.butler import DataCoordinate, DatasetRef, FileDataset

    say = echo or (lambda msg: None)
    store = os.path.abspath(os.fspath(store))
    view = read_store(store)
    if not view.complete:
        raise StoreError(f"{store}: the store is incomplete; finish it with --resume before --output-run")
    if sorted(view.keys) != sorted(warps.refs):
        raise StoreError(f"{store}: holds other warps than {warps.label} of the query")
    guard = lock if lock is not None else contextlib.nullcontext()
    names = output_dataset_types(warps.dataset_type)
    with guard:
        check_output_run(butler, run)
        dtypes = _register(butler, warps)
        butler.collections.register(run)
        have = {name: _existing(butler, name, run, warps) for name in names.values()}
    counts = {"put": 0, "kept": 0}
    todo: dict[tuple[int, int], tuple[str, ...]] = {}
    data_ids = {}
    for key in view.keys:
        data_ids[key] = warps.refs[key].dataId.subset(dtypes[names["matched"]].dimensions)
        kinds = tuple(k for k in ("matched", "diff")
                      if tuple(data_ids[key].required_values) not in have[names[k]])
        counts["kept"] += 2 - len(kinds)
        if kinds:
            todo[key] = kinds
    if todo:
        staging = tempfile.mkdtemp(prefix=f".{os.path.basename(store)}.butler-", dir=os.path.dirname(store))
        try:
            args = [(store, v, p, kinds, staging) for (v, p), kinds in sorted(todo.items())]
            if client is not None:
                futures = [client.submit(_write_files, *a, pure=False) for a in args]
                written = client.gather(futures)
            else:
                written = [_write_files(*a) for a in args]
            datasets = []
            for ((v, p), _), paths in zip(sorted(todo.items()), written):
                for kind, path in paths.items():
                    ref = DatasetRef(dtypes[names[kind]], data_ids[(v, p)], run=run)
                    datasets.append(FileDataset(path=path, refs=[ref], formatter=_FORMATTER))
            with guard:
                butler.ingest(*datasets, transfer="move")
            counts["put"] += len(datasets)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    table_id = DataCoordinate.standardize(skymap=warps.skymap, tract=warps.tract, band=warps.band,
                                          universe=butler.dimensions)
    if tuple(table_id.required_values) in have[names["table"]]:
        counts["kept"] += 1
    else:
        table = view.table.copy()
        table.meta.update(reference_visit=view.reference_visit, store=store,
                          mask_planes=json.dumps(view.mask_planes))
        with guard:
            butler.put(table, names["table"], table_id, run=run)
        counts["put"] += 1
    say(f"{warps.label}: {counts['put']} datasets put into run {run}"
        + (f", {counts['kept']} already there kept" if counts["kept"] else ""))
    return counts


#: The Butler formatter of lsst.images' FITS files (what butler.put of ImageV2 / MaskedImageV2 records).
_FORMATTER = "lsst.images.formatters.GenericFormatter"
