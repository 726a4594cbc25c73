"""Finding warps: a directory of FITS files, a manifest CSV, a bgdask store, or memory.

A :class:`Catalog` maps (visit, patch) to a warp source (the
:class:`~bgdask.io.warp.WarpSource` protocol: box, mask planes,
``read(plane, rows)``). Building one reads headers only, never pixels.
"""

from __future__ import annotations

import csv
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from .._safeio import read_text
from ..errors import InputError, StoreError
from ..geometry import Box, SkyMap, infer_skymap
from ..masks import canonical_planes
from .fits import WarpHeader, read_warp_header
from .warp import WarpSource

__all__ = ["Catalog", "catalog_from_rows", "find_warps", "from_warps"]

FITS_SUFFIXES = (".fits", ".fits.fz", ".fit", ".fz")


@dataclass
class Catalog:
    """The warps of one tract: (visit, patch) -> warp source, in sorted order."""

    entries: dict[tuple[int, int], WarpSource]
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

    def __getitem__(self, key: tuple[int, int]) -> WarpSource:
        return self.entries[key]

    def __contains__(self, key) -> bool:
        return key in self.entries

    def items(self):
        return self.entries.items()

    @property
    def visits(self) -> list[int]:
        return sorted({v for v, _ in self.entries})

    @property
    def patches(self) -> list[int]:
        return sorted({p for _, p in self.entries})

    def describe(self, key: tuple[int, int]) -> str:
        """How messages name a warp: ``warp (visit V, patch P) in PATH``."""
        path = getattr(self.entries.get(key), "path", None)
        where = f" in {path}" if path else ""
        return f"warp (visit {key[0]}, patch {key[1]}){where}"

    def boxes(self) -> dict[int, Box]:
        """Each patch's box (the same for all visits; checked by resolve_skymap)."""
        out: dict[int, Box] = {}
        for (_, p), e in self.entries.items():
            out.setdefault(p, e.box)
        return out

    def resolve_skymap(self, skymap: SkyMap | str | os.PathLike | None = None,
                       log: Callable[[str], None] | None = None) -> SkyMap:
        """The tract geometry: from ``skymap`` (object or YAML path) or
        inferred from the boxes; every warp's box is checked against it."""
        if skymap is None:
            boxes = self.boxes()
            for key, e in self.entries.items():
                first = boxes[key[1]]
                if e.box != first:
                    raise InputError(
                        f"{self.describe(key)}: box {e.box} differs from patch {key[1]}'s box {first} "
                        "in another warp"
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
        for key, e in self.entries.items():
            where = getattr(e, "path", None) or self.describe(key)
            if not 0 <= key[1] < skymap.n_patches:
                raise InputError(f"{where}: patch {key[1]} is not in the tract ({skymap})")
            skymap.check_box(key[1], e.box, where=where)
        return skymap


def find_warps(source: str | os.PathLike, max_workers: int | None = None) -> Catalog:
    """Find the warps of ``source``: a directory (searched recursively for
    FITS files), a manifest CSV (columns visit, patch, path; tract optional;
    relative paths are relative to the CSV), or a Zarr store in bgdask's
    output layout."""
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    from .store import is_store

    if is_store(path):
        return _from_store(path)
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

        max_workers = int(dask.config.get("bgdask.catalog-threads"))
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        headers = list(pool.map(lambda r: read_warp_header(r["path"]), rows))
    entries: dict[tuple[int, int], WarpHeader] = {}
    tracts: dict[int | None, str] = {}
    for row, hdr in zip(rows, headers):
        key, tract = _identify(row, hdr)
        if key in entries:
            raise InputError(f"two warps for (visit {key[0]}, patch {key[1]}): {entries[key].path} and {hdr.path}")
        entries[key] = hdr
        tracts.setdefault(tract, hdr.path)
    if len(set(tracts) - {None}) > 1:
        detail = "; ".join(f"tract {t}: {p}" for t, p in sorted(tracts.items(), key=str) if t is not None)
        raise InputError(f"{source}: warps of more than one tract ({detail}); match one tract at a time")
    tract = next(iter(set(tracts) - {None}), None)
    return Catalog(entries, source, tract)


def from_warps(warps: Mapping[tuple[int, int], WarpSource], source: str = "memory",
               tract: int | None = None) -> Catalog:
    """A catalog of warps already at hand (in-memory :class:`~bgdask.io.warp.Warp`
    objects, or any warp sources), keyed by (visit, patch)."""
    if not warps:
        raise InputError(f"{source}: no warps")
    return Catalog({(int(v), int(p)): w for (v, p), w in warps.items()}, source, tract)


def _read_manifest(path: Path) -> list[dict]:
    # a regular file of text (a byte-order mark, as spreadsheets write, is dropped)
    text = read_text(path, "manifest CSV")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    cols = {c.strip().lower() for c in (reader.fieldnames or [])}
    missing = {"visit", "patch", "path"} - cols
    if missing:
        raise InputError(f"{path}: manifest lacks column(s) {sorted(missing)} (needs visit, patch, path)")
    rows = []
    for n, raw in enumerate(reader, start=2):
        row = {k.strip().lower(): v.strip() if isinstance(v, str) else "" for k, v in raw.items() if k}
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
    if not rows:
        raise InputError(f"{path}: the manifest lists no warps")
    return rows


def _identify(row: Mapping, hdr: WarpHeader) -> tuple[tuple[int, int], int | None]:
    """(visit, patch) and tract of a listed file: its Butler cards, else the row's."""
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
    return (int(ids["visit"]), int(ids["patch"])), None if ids["tract"] is None else int(ids["tract"])


def _from_store(path: Path) -> Catalog:
    from .store import Store

    try:
        st = Store.open(path)
        done = st.done() & st.present
        keys = st.keys()
        skymap = st.skymap
    except StoreError as exc:
        raise InputError(f"{path}: not a Zarr store in bgdask's layout ({exc})") from None
    if not (done == st.present).all():
        raise InputError(f"{path}: the store is incomplete (some warps are not done); resume it first")
    if not keys:
        raise InputError(f"{path}: the store holds no warps")
    entries = {(v, p): st.warp_source(v, p) for v, p in keys}
    return Catalog(entries, str(path), skymap.tract if skymap else None, mask_planes=st.mask_planes)
