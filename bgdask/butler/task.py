"""``MatchBackgroundsDaskTask``: bgdask as a PipelineTask, for ``pipetask run``.

Connections as Rubin's ``MatchBackgroundsTask`` (lsst.pipe.tasks): the
``{warpType}_warp`` warps of one (skymap, tract, band) quantum, all of them
(``multiple``) and unread (``deferLoad``): the task hands their files to Dask
workers, which read them. Outputs per (visit, patch):
``{warpType}_warp_background_matched`` (MaskedImageV2) and
``{warpType}_warp_background_diff`` (ImageV2, the offset image added); per
quantum ``{warpType}_warp_background_table`` (ArrowAstropy, per visit).

The config has one field per ``bgdask.MatchConfig`` field (same name, same
default), plus where Dask runs: ``scheduler_address`` of a running scheduler,
or ``n_workers`` local worker processes (bound to 127.0.0.1).

Run it with the shipped pipeline::

    pipetask run -b REPO -i warps -o u/me/matched --register-dataset-types \\
        -p resource://bgdask.butler/pipelines/MatchBackgroundsDask.yaml \\
        -d "skymap='s' AND tract=9813 AND band='r'"
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile

from lsst.pex.config import Field, ListField
from lsst.pipe.base import PipelineTask, PipelineTaskConfig, PipelineTaskConnections, Struct
from lsst.pipe.base import connectionTypes as cT

from ..config import MatchConfig
from ..errors import BgdaskError
from ._query import ButlerWarps, _local_file
from ._sink import _diff_image, _masked_image, read_store

__all__ = ["MatchBackgroundsDaskConfig", "MatchBackgroundsDaskConnections", "MatchBackgroundsDaskTask"]


class MatchBackgroundsDaskConnections(
    PipelineTaskConnections,
    dimensions=("skymap", "tract", "band"),
    defaultTemplates={"warpType": "psf_matched", "warpTypeSuffix": ""},
):
    warps = cT.Input(
        doc="Warps whose backgrounds are matched; read by the Dask workers from their files.",
        name="{warpType}_warp",
        storageClass="ExposureF",
        dimensions=("skymap", "tract", "patch", "visit"),
        deferLoad=True,
        multiple=True,
    )
    backgroundInfoList = cT.Output(
        doc="Offset image added to each warp (float64; matched = float32(warp + offset)).",
        name="{warpType}_warp_background_diff",
        storageClass="ImageV2",
        dimensions=("skymap", "tract", "visit", "patch"),
        multiple=True,
    )
    matchedImageList = cT.Output(
        doc="Background-matched warps, with their mask planes by name.",
        name="{warpType}_warp_background_matched",
        storageClass="MaskedImageV2",
        dimensions=("skymap", "tract", "visit", "patch"),
        multiple=True,
    )
    matchTable = cT.Output(
        doc="Per-visit table of the match: reference choice figures, model figures, status.",
        name="{warpType}_warp_background_table",
        storageClass="ArrowAstropy",
        dimensions=("skymap", "tract", "band"),
    )


    def __init__(self, *, config=None):
        super().__init__(config=config)
        if config is not None and config.warp_storage_class != self.warps.storageClass:
            # the repository's storage class of the warps (read from files either way)
            self.warps = dataclasses.replace(self.warps, storageClass=config.warp_storage_class)


class MatchBackgroundsDaskConfig(PipelineTaskConfig, pipelineConnections=MatchBackgroundsDaskConnections):
    """bgdask.MatchConfig's fields (added below, one per field) and where Dask runs."""

    scheduler_address = Field[str](
        doc="Address of a running Dask scheduler (tcp://host:8786); empty: start local workers",
        default="",
    )
    n_workers = Field[int](doc="Local Dask worker processes when no scheduler_address", default=1)
    threads_per_worker = Field[int](doc="Threads per local worker process", default=1)
    skymap_file = Field[str](
        doc="bgdask skymap YAML of the tract geometry; empty: inferred from the warps' boxes", default=""
    )
    store_dir = Field[str](
        doc="Directory to keep each quantum's Zarr store in (tract{T}-{band}.zarr); empty: a "
            "temporary directory, removed when the outputs are in the Butler",
        default="",
    )
    warp_storage_class = Field[str](
        doc="Storage class of the input warps in the repository: ExposureF (Rubin's) or "
            "MaskedImageV2 (lsst.images'); bgdask reads their files either way",
        default="ExposureF",
    )
    chunk_rows = Field[int](doc="Rows per stage-C block; 0: bgdask's default", default=0)

    def to_match_config(self) -> MatchConfig:
        """The bgdask.MatchConfig of this config's mirrored fields."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(MatchConfig)}
        values["bad_mask_planes"] = tuple(values["bad_mask_planes"])
        return MatchConfig.from_dict(values, source="MatchBackgroundsDaskConfig")

    def validate(self):
        super().validate()
        if self.n_workers < 1 or self.threads_per_worker < 1:
            raise ValueError("n_workers and threads_per_worker must be >= 1")
        try:
            self.to_match_config()
        except BgdaskError as exc:
            raise ValueError(str(exc)) from None


def _mirror_match_config() -> None:
    """One config field per MatchConfig field: same name, default and meaning."""
    for f in dataclasses.fields(MatchConfig):
        doc = f"{f.metadata.get('doc', f.name)} (bgdask MatchConfig.{f.name})"
        if isinstance(f.default, tuple):
            field = ListField[str](doc=doc, default=list(f.default))
        elif f.default is None:                      # ref_visit: an optional integer
            field = Field[int](doc=doc, default=None, optional=True)
        else:
            field = Field(doc=doc, dtype=type(f.default), default=f.default)
        setattr(MatchBackgroundsDaskConfig, f.name, field)


_mirror_match_config()


class MatchBackgroundsDaskTask(PipelineTask):
    """Match the backgrounds of one tract's warps in one band, on Dask."""

    ConfigClass = MatchBackgroundsDaskConfig
    _DefaultName = "matchBackgroundsDask"
    config: MatchBackgroundsDaskConfig

    def runQuantum(self, butlerQC, inputRefs, outputRefs):
        handles = butlerQC.get(inputRefs.warps)
        group = self._group(butlerQC.quantum.dataId, handles)
        keep = bool(self.config.store_dir)
        root = self.config.store_dir or tempfile.mkdtemp(prefix="bgdask-quantum-")
        os.makedirs(root, exist_ok=True)
        store = os.path.join(root, group.store_name())
        try:
            result = self.run(group, store)
            self._put(butlerQC, outputRefs, store)
        finally:
            if not keep:
                shutil.rmtree(root, ignore_errors=True)
        return result

    def _group(self, quantum_id, handles) -> ButlerWarps:
        refs, paths = {}, {}
        uris = handles[0].butler.get_many_uris([h.ref for h in handles]) if handles else {}
        for h in handles:
            key = (int(h.ref.dataId["visit"]), int(h.ref.dataId["patch"]))
            refs[key] = h.ref
            paths[key] = _local_file(h.ref, uris[h.ref])
        dataset_type = handles[0].ref.datasetType.name if handles else "warp"
        return ButlerWarps("quantum", dataset_type, str(quantum_id["skymap"]), int(quantum_id["tract"]),
                           str(quantum_id["band"]), refs, paths)

    def run(self, group: ButlerWarps, store: str) -> Struct:
        """Match ``group``'s warps into the Zarr store ``store`` on Dask."""
        from ..cluster import ClusterOptions, KernelWarmUp, connect
        from ..pipeline import match_backgrounds

        cfg = self.config.to_match_config()
        options = ClusterOptions(kind="local", scheduler=self.config.scheduler_address or None,
                                 workers=self.config.n_workers,
                                 threads_per_worker=self.config.threads_per_worker, dashboard=False)
        self.log.info("Matching %d warps of %d visits (%s) on Dask", len(group.refs), len(group.visits),
                      group.label)
        with KernelWarmUp() as warming, connect(options) as client:
            warming.wait()
            result = match_backgrounds(
                group.catalog(), store, cfg, client, skymap=self.config.skymap_file or None,
                overwrite=True, chunk_rows=self.config.chunk_rows or None,
                echo=lambda msg: self.log.info("%s", msg),
            )
        self.log.info("Reference visit %d; %d warp(s) had no usable pixel", result.reference_visit,
                      len(result.unusable))
        return Struct(result=result, store=store)

    def _put(self, butlerQC, outputRefs, store: str) -> None:
        view = read_store(store)
        matched = {(int(r.dataId["visit"]), int(r.dataId["patch"])): r for r in outputRefs.matchedImageList}
        diff = {(int(r.dataId["visit"]), int(r.dataId["patch"])): r for r in outputRefs.backgroundInfoList}
        for w in view.warps():
            key = (w.visit, w.patch)
            if key in matched:
                butlerQC.put(_masked_image(w, view.mask_planes, view.units), matched[key])
            if key in diff:
                butlerQC.put(_diff_image(w, view.units), diff[key])
        table = view.table.copy()
        table.meta.update(reference_visit=view.reference_visit)
        butlerQC.put(table, outputRefs.matchTable)
