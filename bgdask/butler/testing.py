"""Small Butler repositories of simulated warps, for tests, benchmarks and demos.

Two layouts of the same warps:

* Rubin's: ``psf_matched_warp`` as ``ExposureF`` files recorded with obs_base's
  formatter name, as a real repository holds them. obs_base and afw are not
  installed, so ``butler.get`` cannot read them: only their files can be.
  Ingesting needs the formatter class to import, so a stand-in module is on
  ``sys.path`` during the ingest only (:func:`standin_obs_base`).
* lsst.images': ``MaskedImageV2`` datasets put with ``butler.put``.

Dimension records are inserted by hand (no obs package): instrument,
physical_filter (and band), skymap, tract, patch, day_obs, visit.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

__all__ = ["INSTRUMENT", "OBS_BASE_FORMATTER", "SKYMAP", "add_dimensions", "ingest_exposure_warps",
           "make_repo", "put_masked_image_warps", "standin_obs_base"]

INSTRUMENT = "SimCam"
SKYMAP = "bgdask_sim"
DAY_OBS = 20260101
#: What Rubin's repositories record for ExposureF warps.
OBS_BASE_FORMATTER = "lsst.obs.base.formatters.fitsExposure.FitsExposureFormatter"
WARP_DIMENSIONS = ("instrument", "skymap", "tract", "patch", "visit")


def make_repo(root: str | os.PathLike, db: str | None = None):
    """A new repository at ``root`` (SQLite, or the registry database URL ``db``);
    returns a writeable Butler."""
    from lsst.daf.butler import Butler, Config

    config = Config({"registry": {"db": db}}) if db else None
    Butler.makeRepo(os.fspath(root), config=config)
    return Butler.from_config(os.fspath(root), writeable=True)


def add_dimensions(butler, sims: Iterable, *, instrument: str = INSTRUMENT, skymap: str = SKYMAP) -> None:
    """Insert the dimension records the simulated tracts ``sims`` need."""
    sims = list(sims)
    reg = butler.registry
    nx = max(s.skymap.num_patches[0] for s in sims)
    ny = max(s.skymap.num_patches[1] for s in sims)
    reg.syncDimensionData("instrument", {"name": instrument, "visit_max": 10**7, "exposure_max": 10**7,
                                         "detector_max": 1, "class_name": "bgdask.simulate"})
    reg.syncDimensionData("day_obs", {"instrument": instrument, "id": DAY_OBS})
    reg.syncDimensionData("skymap", {"name": skymap, "hash": hashlib.sha1(skymap.encode()).digest(),
                                     "tract_max": 10**5, "patch_nx_max": nx, "patch_ny_max": ny})
    for sim in sims:
        tract = int(sim.skymap.tract)
        reg.syncDimensionData("physical_filter", {"instrument": instrument, "name": f"{instrument}-{sim.band}",
                                                  "band": sim.band})
        reg.syncDimensionData("tract", {"skymap": skymap, "id": tract})
        px = sim.skymap.num_patches[0]
        for p in range(sim.skymap.n_patches):
            reg.syncDimensionData("patch", {"skymap": skymap, "tract": tract, "id": p,
                                            "cell_x": p % px, "cell_y": p // px})
        for v in sim.visits:
            reg.syncDimensionData("visit", {"instrument": instrument, "id": int(v), "name": f"sim{v}",
                                            "physical_filter": f"{instrument}-{sim.band}", "day_obs": DAY_OBS})


def _register(butler, name: str, storage_class: str):
    from lsst.daf.butler import DatasetType

    dtype = DatasetType(name, WARP_DIMENSIONS, storage_class, universe=butler.dimensions)
    butler.registry.registerDatasetType(dtype)
    return dtype


@contextlib.contextmanager
def standin_obs_base() -> Iterator[str]:
    """A stand-in ``lsst.obs.base.formatters.fitsExposure`` on ``sys.path``
    (a formatter class that reads nothing), removed again on exit."""
    import lsst

    with tempfile.TemporaryDirectory(prefix="bgdask-standin-") as tmp:
        pkg = Path(tmp, "lsst", "obs", "base", "formatters")
        pkg.mkdir(parents=True)
        for d in (pkg.parent.parent, pkg.parent, pkg):
            (d / "__init__.py").write_text("")
        (pkg / "fitsExposure.py").write_text(
            "from lsst.daf.butler import FormatterV2\n\n\n"
            "class FitsExposureFormatter(FormatterV2):\n"
            "    \"\"\"Stand-in for ingest only: no afw, reads nothing.\"\"\"\n\n"
            "    default_extension = '.fits'\n"
            "    supported_extensions = frozenset({'.fits', '.fits.fz'})\n"
        )
        root = str(Path(tmp, "lsst"))
        sys.path.insert(0, tmp)
        lsst.__path__.append(root)
        try:
            yield tmp
        finally:
            sys.path.remove(tmp)
            lsst.__path__.remove(root)
            for name in [m for m in sys.modules if m == "lsst.obs" or m.startswith("lsst.obs.")]:
                del sys.modules[name]


def ingest_exposure_warps(butler, files: dict[tuple[int, int, int], str], run: str, *,
                          dataset_type: str = "psf_matched_warp", instrument: str = INSTRUMENT,
                          skymap: str = SKYMAP, transfer: str = "copy") -> list:
    """Ingest afw FITS files, ``{(tract, visit, patch): path}``, as ``ExposureF``
    datasets recorded with obs_base's formatter name, into ``run``."""
    from lsst.daf.butler import DataCoordinate, DatasetRef, FileDataset

    dtype = _register(butler, dataset_type, "ExposureF")
    butler.collections.register(run)
    datasets = []
    for (tract, visit, patch), path in sorted(files.items()):
        data_id = DataCoordinate.standardize(instrument=instrument, skymap=skymap, tract=int(tract),
                                             patch=int(patch), visit=int(visit), universe=butler.dimensions)
        datasets.append(FileDataset(path=os.fspath(path), refs=[DatasetRef(dtype, data_id, run=run)],
                                    formatter=OBS_BASE_FORMATTER))
    with standin_obs_base():
        butler.ingest(*datasets, transfer=transfer)
    return [d.refs[0] for d in datasets]


def masked_image(warp):
    """An lsst.images MaskedImage of a bgdask Warp (mask bits kept where they are)."""
    from lsst.images import Box, Image, Mask, MaskedImage, MaskPlane, MaskSchema

    by_bit = {int(b): n for n, b in warp.mask_planes.items()}
    schema = MaskSchema([MaskPlane(by_bit[b], f"{by_bit[b]} pixels") if b in by_bit else None
                         for b in range(max(by_bit, default=-1) + 1)], dtype=np.int32)
    bbox = Box.factory[warp.y0:warp.y0 + warp.height, warp.x0:warp.x0 + warp.width]
    mask = Mask(np.asarray(warp.mask, dtype=np.int32)[:, :, None], schema=schema, bbox=bbox)
    return MaskedImage(Image(np.asarray(warp.image, dtype=np.float32), bbox=bbox), mask=mask,
                       variance=Image(np.asarray(warp.variance, dtype=np.float32), bbox=bbox))


def put_masked_image_warps(butler, sim, run: str, *, dataset_type: str = "psf_matched_warp",
                           instrument: str = INSTRUMENT, skymap: str = SKYMAP) -> list:
    """Put the simulated warps of ``sim`` as ``MaskedImageV2`` datasets into ``run``."""
    _register(butler, dataset_type, "MaskedImageV2")
    butler.collections.register(run)
    refs = []
    for (visit, patch), warp in sorted(sim.warps.items()):
        refs.append(butler.put(masked_image(warp), dataset_type, instrument=instrument, skymap=skymap,
                               tract=int(sim.skymap.tract), patch=int(patch), visit=int(visit), run=run))
    return refs
