"""Finding warps: a directory of FITS files, a manifest CSV, or a Zarr store.

A :class:`Catalog` maps (visit, patch) to a :class:`WarpEntry` that says
where the warp's planes are and what its headers say (box, mask planes,
Butler ids). Building one reads headers only, never pixels.
"""

from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ..errors import InputError
from ..geometry import Box, SkyMap, infer_skymap
from ..masks import canonical_planes
from .fits import WarpHeader, read_plane, read_warp_header

__all__ = ["WarpEntry", "Catalog", "catalog_from_rows", "find_warps", "load_plane"]

FITS_SUFFIXES = (".fits", ".fits.fz", ".fit", ".fz")


@dataclass(frozen=True)
class WarpEntry:
    """Where one warp lives and what its headers say."""

    visit: int
    patch: int
    path: str
    box: Box
    mask_planes: Mapping[str, int]
    tract: int | None = None
    band: str | None = None
    header: WarpHeader | None = None           # FITS warps
    zarr_index: tuple[int, int] | None = None  # warps inside an input Zarr store

    @property
    def key(self) -> tuple[int, int]:
        return (self.visit, self.patch)

    def __str__(self) -> str:
        return f"warp (visit {self.visit}, patch {self.patch}) in {self.path}"


@dataclass
class Catalog:
    """The warps of one tract, keyed by (visit, patch), in sorted order."""

    entries: dict[tuple[int, int], WarpEntry]
    source: str
    tract: int | None = None
    mask_planes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.entries = dict(sorted(self.entries.items()))
        if not self.mask_planes:
            self.mask_planes = canonical_planes(e.mask_planes for e in self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries.values())

    def __getitem__(self, key: tuple[int, int]) -> WarpEntry:
        return self.entries[key]

    def __contains__(self, key) -> bool:
        return key in self.entries

    @property
    def visits(self) -> list[int]:
        return sorted({v for v, _ in self.entries})

    @property
    def patches(self) -> list[int]:
        return sorted({p for _, p in self.entries})

    def patches_of(self, visit: int) -> list[int]:
        return [p for v, p in self.entries if v == visit]

    def boxes(self) -> dict[int, Box]:
        """Each patch's box (the same for all visits; checked by resolve_skymap)."""
        out: dict[int, Box] = {}
        for e in self.entries.values():
            out.setdefault(e.patch, e.box)
        return out

    def resolve_skymap(self, skymap: SkyMap | str | os.PathLike | None = None,
                       log: Callable[[str], None] | None = None) -> SkyMap:
        """The tract geometry: from ``skymap`` (object or YAML path) or
        inferred from the boxes; every warp's box is checked against it."""
        if skymap is None:
            boxes = self.boxes()
            for e in self.entries.values():
                first = boxes[e.patch]
                if e.box != first:
                    raise InputError(
                        f"{e.path}: box {e.box} differs from patch {e.patch}'s box {first} in another warp"
                    )
            skymap = infer_skymap(boxes, tract=self.tract)
            if log:
                log(f"inferred tract geometry: {skymap}")
        elif not isinstance(skymap, SkyMap):
            skymap = SkyMap.from_yaml(skymap)
        if skymap.tract is None and self.tract is not None:
            skymap = SkyMap(skymap.patch_inner, skymap.patch_border, skymap.num_patches, self.tract)
        elif skymap.tract is not None and self.tract is not None and skymap.tract != self.tract:
            raise InputError(f"the skymap is for tract {skymap.tract} but the warps are of tract {self.tract}")
        for e in self.entries.values():
            if not 0 <= e.patch < skymap.n_patches:
                raise InputError(f"{e.path}: patch {e.patch} is not in the tract ({skymap})")
            skymap.check_box(e.patch, e.box, where=e.path)
        return skymap


def find_warps(source: str | os.PathLike, max_workers: int | None = None) -> Catalog:
    """Find the warps of ``source``: a directory (searched recursively for
    FITS files), a manifest CSV (columns visit, patch, path; tract optional;
    relative paths are relative to the CSV), or a Zarr store in bgdask's
    output layout."""
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.is_dir() and ((path / "zarr.json").exists() or (path / ".zgroup").exists()):
        return _from_zarr(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(FITS_SUFFIXES))
        if not files:
            raise InputError(f"{path}: no FITS files (*.fits, *.fits.fz) in this directory")
        rows = [{"path": str(f)} for f in files]
    elif path.suffix.lower() == ".csv":
        rows = _read_manifest(path)
    else:
        raise InputError(f"{path}: not a directory, a manifest CSV or a Zarr store")
    return catalog_from_rows(rows, str(path), max_workers=max_workers)


def catalog_from_rows(rows: list[Mapping], source: str, max_workers: int | None = None) -> Catalog:
    """A catalog of warp files listed as rows: ``path`` and optionally
    ``visit``, ``patch``, ``tract`` (which, when the file's Butler cards are
    present, must agree with them). Reads every file's headers (no pixels)."""
    rows = [dict(r) for r in rows]
    if not rows:
        raise InputError(f"{source}: no warps")
    if max_workers is None:
        import dask.config

        max_workers = int(dask.config.get("bgdask.catalog-threads", 8))
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        headers = list(pool.map(lambda r: read_warp_header(r["path"]), rows))
    entries: dict[tuple[int, int], WarpEntry] = {}
    for row, hdr in zip(rows, headers):
        entry = _entry(row, hdr)
        if entry.key in entries:
            raise InputError(
                f"two warps for (visit {entry.visit}, patch {entry.patch}): "
                f"{entries[entry.key].path} and {entry.path}"
            )
        entries[entry.key] = entry
    tracts = {e.tract for e in entries.values()}
    if len(tracts - {None}) > 1:
        by_tract = {}
        for e in entries.values():
            by_tract.setdefault(e.tract, e.path)
        detail = "; ".join(f"tract {t}: {p}" for t, p in sorted(by_tract.items(), key=str))
        raise InputError(f"{source}: warps of more than one tract ({detail}); match one tract at a time")
    tract = next(iter(tracts - {None}), None)
    return Catalog(entries, source, tract)


def _read_manifest(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            cols = {c.strip().lower() for c in (reader.fieldnames or [])}
            missing = {"visit", "patch", "path"} - cols
            if missing:
                raise InputError(f"{path}: manifest lacks column(s) {sorted(missing)} (needs visit, patch, path)")
            rows = []
            for n, raw in enumerate(reader, start=2):
                row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k}
                try:
                    visit, patch = int(row["visit"]), int(row["patch"])
                    tract = int(row["tract"]) if row.get("tract") else None
                except ValueError:
                    raise InputError(f"{path}, line {n}: visit, patch and tract must be integers") from None
                p = Path(row["path"])
                if not p.is_absolute():
                    p = path.parent / p
                if not p.exists():
                    raise InputError(f"{path}, line {n}: warp file {p} does not exist")
                rows.append({"path": str(p), "visit": visit, "patch": patch, "tract": tract})
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text CSV file") from None
    if not rows:
        raise InputError(f"{path}: the manifest lists no warps")
    return rows


def _entry(row: dict, hdr: WarpHeader) -> WarpEntry:
    ids = {}
    for key in ("visit", "patch", "tract"):
        card, listed = getattr(hdr, key), row.get(key)
        if card is not None and listed is not None and int(card) != int(listed):
            raise InputError(f"{hdr.path}: header says {key} {card} but the manifest says {listed}")
        ids[key] = card if card is not None else listed
    if ids["visit"] is None or ids["patch"] is None:
        raise InputError(
            f"{hdr.path}: no 'LSST BUTLER DATAID VISIT'/'PATCH' cards; list the file in a "
            "manifest CSV with visit and patch columns"
        )
    return WarpEntry(
        visit=int(ids["visit"]), patch=int(ids["patch"]), path=hdr.path, box=hdr.box,
        mask_planes=dict(hdr.mask_planes), tract=None if ids["tract"] is None else int(ids["tract"]),
        band=hdr.band, header=hdr,
    )


def _from_zarr(path: Path) -> Catalog:
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
        visits = np.asarray(group["visit"][:])
        patches = np.asarray(group["patch"][:])
        present = np.asarray(group["present"][:])
        done = np.asarray(group["done"][:]) if "done" in group else present
        x0, y0 = np.asarray(group["x0"][:]), np.asarray(group["y0"][:])
        width, height = np.asarray(group["width"][:]), np.asarray(group["height"][:])
    except Exception as exc:  # noqa: BLE001 - any zarr failure is a bad input
        raise InputError(f"{path}: not a Zarr store in bgdask's layout ({exc})") from None
    if not np.array_equal(done & present, present):
        raise InputError(f"{path}: the store is incomplete (some warps are not done); resume it first")
    planes = json.loads(attrs["mask_planes"]) if isinstance(attrs.get("mask_planes"), str) else dict(attrs.get("mask_planes", {}))
    tract = json.loads(attrs["skymap"]).get("tract") if isinstance(attrs.get("skymap"), str) else None
    entries = {}
    for vi, v in enumerate(visits):
        for pi, p in enumerate(patches):
            if present[vi, pi]:
                box = Box(int(x0[pi]), int(y0[pi]), int(width[pi]), int(height[pi]))
                entries[(int(v), int(p))] = WarpEntry(
                    int(v), int(p), str(path), box, planes, tract, zarr_index=(vi, pi)
                )
    if not entries:
        raise InputError(f"{path}: the store holds no warps")
    return Catalog(entries, str(path), tract, mask_planes=dict(planes))


def load_plane(entry: WarpEntry, plane: str, rows: slice | None = None) -> np.ndarray:
    """Read one plane (or a block of rows of it) of one warp, in the file's
    own mask bits for FITS warps."""
    if entry.zarr_index is None:
        return read_plane(entry.header if entry.header is not None else entry.path, plane, rows)
    import zarr

    vi, pi = entry.zarr_index
    arr = zarr.open_array(str(Path(entry.path) / plane), mode="r")
    rows = rows or slice(0, entry.box.height)
    start, stop, _ = rows.indices(entry.box.height)
    return np.asarray(arr[vi, pi, start:stop, : entry.box.width])
