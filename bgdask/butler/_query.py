"""Warps from a Butler repository: the query, grouped by (skymap, tract, band).

The client asks the registry which datasets match and where their files are
(``get_many_uris``); it reads every file's headers once to build the catalog
(never pixels). The Dask workers then open the files themselves, exactly as
for warps listed in a directory: no Butler object, and no afw, is needed to
read a ``psf_matched_warp`` stored as ``ExposureF`` or ``MaskedImageV2``.

Visit, patch and tract are the dataset's data ID. A file whose own
``LSST BUTLER DATAID`` cards say otherwise is refused, naming the dataset:
the registry and the file disagree about what the file is, and matching it
as either could mix two visits' pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import InputError
from ..io.catalog import catalog_from_rows

__all__ = ["ButlerWarps", "DEFAULT_DATASET_TYPE", "find_warp_groups", "find_warps", "open_butler",
           "split_collections"]

#: Rubin's default input of background matching: ``{warpType}_warp``, warpType "psf_matched".
DEFAULT_DATASET_TYPE = "psf_matched_warp"

#: Dimensions an input dataset type needs.
_NEEDED = ("skymap", "tract", "patch", "visit")


@dataclass
class ButlerWarps:
    """The warps of one (skymap, tract, band) group of a Butler query.

    ``refs`` and ``paths`` map (visit, patch) to the dataset and its local
    file. :meth:`catalog` is what ``bgdask.match_backgrounds`` and
    ``bgdask.open_warps`` take.
    """

    repo: str
    dataset_type: str
    skymap: str
    tract: int
    band: str
    refs: dict[tuple[int, int], Any]
    paths: dict[tuple[int, int], str]
    collections: tuple[str, ...] = ()
    where: str = ""
    _catalog: Any = field(default=None, repr=False)

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.skymap, self.tract, self.band)

    @property
    def label(self) -> str:
        return f"skymap {self.skymap} tract {self.tract} band {self.band}"

    @property
    def visits(self) -> list[int]:
        return sorted({v for v, _ in self.refs})

    def store_name(self, with_skymap: bool = False) -> str:
        """The file name of this group's store under ``-o DIR/``."""
        name = f"tract{self.tract}-{self.band}.zarr"
        return f"{self.skymap}-{name}" if with_skymap else name

    def catalog(self):
        """The warps as a bgdask catalog (headers read once, no pixels)."""
        if self._catalog is None:
            rows = [{"path": self.paths[key], "visit": key[0], "patch": key[1], "tract": self.tract}
                    for key in sorted(self.refs)]
            source = f"{self.repo} [{self.dataset_type} {self.label}]"
            try:
                self._catalog = catalog_from_rows(rows, source)
            except InputError as exc:
                raise InputError(self._explain(str(exc))) from None
        return self._catalog

    def _explain(self, message: str) -> str:
        """Name the dataset behind a file that the catalog refused, and say
        so when the file's own data ID cards disagree with its data ID."""
        from ..io.fits import read_warp_header

        for key, path in self.paths.items():
            if not message.startswith(path):
                continue
            ref = self.refs[key]
            what = f"{ref.datasetType.name} {_data_id(ref)} in run {ref.run}"
            try:
                header = read_warp_header(path)
            except InputError:
                return f"{what}: {message}"
            said = {"visit": key[0], "patch": key[1], "tract": self.tract}
            for name, value in said.items():
                card = getattr(header, name)
                if card is not None and int(card) != int(value):
                    return (f"{what}: its file {path} says {name} {card} (card 'LSST BUTLER DATAID "
                            f"{name.upper()}') but the Butler data ID says {name} {value}; refused, as "
                            "which is right is unknown")
            return f"{what}: {message}"
        return message

    def __repr__(self) -> str:
        return (f"ButlerWarps({self.dataset_type}, {self.label}: {len(self.refs)} warps of "
                f"{len(self.visits)} visits)")


def split_collections(collections: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"a,b"`` or ``["a", "b"]`` -> ``("a", "b")``."""
    if collections is None:
        return ()
    if isinstance(collections, str):
        collections = collections.split(",")
    return tuple(c.strip() for c in collections if c and c.strip())


def open_butler(repo: str | os.PathLike, *, writeable: bool = False, butler: Any = None):
    """A Butler for ``repo`` (a directory holding butler.yaml, a Butler
    config file or URI, or a repository label); InputError when it is none."""
    if butler is not None:
        return butler
    from lsst.daf.butler import Butler

    text = os.fspath(repo)
    local = "://" not in text
    if local:
        path = Path(text)
        if path.is_dir() and not any((path / name).exists() for name in ("butler.yaml", "butler.json")):
            raise InputError(f"{text}: not a Butler repository (no butler.yaml in this directory)")
        if not path.exists() and (os.sep in text or text.startswith(".")):
            raise InputError(f"{text}: no such Butler repository (no such file or directory)")
    try:
        return Butler.from_config(text, writeable=writeable)
    except Exception as exc:  # noqa: BLE001 - any failure to open is a bad REPO
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{text}: cannot open it as a Butler repository ({reason})") from None


def find_warp_groups(
    repo: str | os.PathLike | Any,
    collections: str | Iterable[str],
    where: str = "",
    dataset_type: str = DEFAULT_DATASET_TYPE,
    *,
    bind: Mapping[str, Any] | None = None,
    butler: Any = None,
) -> list[ButlerWarps]:
    """Query ``repo`` for the ``dataset_type`` datasets in ``collections``
    that ``where`` selects; one :class:`ButlerWarps` per (skymap, tract,
    band), sorted. Every problem is an InputError naming what is wrong."""
    from lsst.daf.butler import (
        EmptyQueryResultError,
        InvalidQueryError,
        MissingCollectionError,
        MissingDatasetTypeError,
    )

    if butler is None and hasattr(repo, "query_datasets"):
        butler, repo = repo, "the Butler"         # a Butler passed as repo
    butler = open_butler(repo, butler=butler)
    repo = os.fspath(repo)
    colls = split_collections(collections)
    if not colls:
        raise InputError(f"{repo}: no collections to search; give --collections C1[,C2...]")
    try:
        dtype = butler.get_dataset_type(dataset_type)
    except MissingDatasetTypeError:
        raise InputError(f"{repo}: no dataset type {dataset_type!r} in this repository") from None
    names = set(dtype.dimensions.names)
    lacking = [d for d in _NEEDED if d not in names]
    if lacking:
        raise InputError(
            f"{repo}: dataset type {dataset_type!r} has dimensions {sorted(names)}, not the "
            f"{', '.join(_NEEDED)} of a warp"
        )
    for name in colls:
        try:
            butler.collections.get_info(name)
        except MissingCollectionError:
            raise InputError(f"{repo}: no collection {name!r} in this repository") from None
    try:
        refs = butler.query_datasets(dtype, collections=list(colls), where=where or "", bind=bind,
                                     with_dimension_records=True, find_first=True, limit=None,
                                     explain=False)
    except MissingCollectionError as exc:
        raise InputError(f"{repo}: {exc}") from None
    except InvalidQueryError as exc:
        reason = " ".join(str(exc).split())
        raise InputError(f"--where {where!r}: {reason}") from None
    except EmptyQueryResultError:
        refs = []
    if not refs:
        raise InputError(
            f"{repo}: no {dataset_type} datasets in collection(s) {', '.join(colls)}"
            + (f" match --where {where!r}" if where else "")
        )
    uris = butler.get_many_uris(refs)
    groups: dict[tuple[str, int, str], ButlerWarps] = {}
    for ref in refs:
        did = ref.dataId
        key = (str(did["skymap"]), int(did["tract"]), str(did["band"]))
        group = groups.get(key)
        if group is None:
            group = groups[key] = ButlerWarps(repo, dataset_type, *key, refs={}, paths={},
                                              collections=colls, where=where or "")
        vp = (int(did["visit"]), int(did["patch"]))
        if vp in group.refs:
            raise InputError(
                f"{repo}: two {dataset_type} datasets for visit {vp[0]}, patch {vp[1]} of "
                f"{group.label}: {_data_id(group.refs[vp])} and {_data_id(ref)}"
            )
        group.refs[vp] = ref
        group.paths[vp] = _local_file(ref, uris[ref])
    return [groups[k] for k in sorted(groups)]


def find_warps(
    repo: str | os.PathLike | Any,
    collections: str | Iterable[str],
    where: str = "",
    dataset_type: str = DEFAULT_DATASET_TYPE,
    *,
    bind: Mapping[str, Any] | None = None,
    butler: Any = None,
):
    """The warps the query selects as a catalog for ``bgdask.match_backgrounds``
    and ``bgdask.open_warps``. The query must select one (skymap, tract,
    band); for several, use :func:`find_warp_groups` (or ``bgdask match -o DIR/``)."""
    groups = find_warp_groups(repo, collections, where, dataset_type, bind=bind, butler=butler)
    if len(groups) > 1:
        labels = "; ".join(g.label for g in groups)
        raise InputError(
            f"the query selects {len(groups)} (skymap, tract, band) groups ({labels}); narrow "
            "where to one, or match them all with find_warp_groups / bgdask match -o DIR/"
        )
    return groups[0].catalog()


def _data_id(ref) -> str:
    did = ref.dataId
    keys = [k for k in ("instrument", "skymap", "tract", "patch", "visit") if k in did.dimensions.names]
    return "{" + ", ".join(f"{k}: {did[k]!r}" for k in keys) + "}"


def _local_file(ref, uris) -> str:
    """The local path of a single-file dataset; InputError when there is none."""
    what = f"{ref.datasetType.name} {_data_id(ref)} in run {ref.run}"
    uri = uris.primaryURI
    if uri is None:
        raise InputError(f"{what}: stored as separate components ({', '.join(uris.componentURIs)}); "
                         "bgdask reads warps stored as one file")
    if uri.scheme not in ("file", ""):
        raise InputError(f"{what}: its file {uri} is not on a local file system; bgdask's workers "
                         "read warp files directly (mount the datastore, or export the warps)")
    path = uri.ospath
    if not os.path.exists(path):
        raise InputError(f"{what}: its file {path} is missing from the datastore")
    return path
