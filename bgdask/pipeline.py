"""Stages A-C: the serial driver and the Dask pipeline share one plan.

* Stage A (only without a reference visit): per-warp superpixel sums, a
  fixed binary tree of sums per visit, the reference-choice figures per
  visit, then the reference.
* Stage B: per patch the statistics of ref - visit, a tree of sums per
  visit, the difference model per visit.
* Stage C: per row block of each warp, image + offset; the serial driver
  keeps the result in memory, the pipeline writes it to the Zarr store and
  marks the warp done.

The same plan runs on an *executor*: :class:`SerialExecutor` calls the task
functions at once; :class:`DaskExecutor` builds Dask delayed graphs and runs
them on a distributed Client or any Dask scheduler. The task functions and
the reduction trees are the same, so the numbers are bitwise the same.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from . import tasks
from .background import VisitModel, coarse_cells, tree_reduce
from .config import MatchConfig
from .errors import ConfigError, StoreError
from .geometry import SkyMap, coarse_shape, superpixel_shape
from .io import store as zstore
from .io.catalog import Catalog, find_warps
from .io.warp import Warp
from .masks import canonical_planes
from .reference import choose_reference

__all__ = ["MatchResult", "match_arrays", "match_backgrounds", "SerialExecutor", "DaskExecutor",
           "DEFAULT_CHUNK_ROWS"]

log = logging.getLogger("bgdask")

#: Rows per stage-C block (dask config ``bgdask.chunk-rows``, bgdask.yaml).
DEFAULT_CHUNK_ROWS = 1024


def default_chunk_rows() -> int:
    import dask.config

    return int(dask.config.get("bgdask.chunk-rows", DEFAULT_CHUNK_ROWS))



class UnusableWarpWarning(UserWarning):
    """A warp has no usable pixel (all NaN or all under bad mask planes)."""


# -- executors ---------------------------------------------------------------

class SerialExecutor:
    """Runs every task at once, in this process."""

    def task(self, fn: Callable) -> Callable:
        return fn

    def value(self, obj):
        return obj

    def compute(self, objs: list, label: str = "") -> list:
        return list(objs)


class DaskExecutor:
    """Builds Dask delayed graphs; runs them on ``client`` (with progress)
    or on a Dask scheduler by name (``"sync"``, ``"threads"``, ...)."""

    def __init__(self, client=None, scheduler: str | None = None,
                 progress: Callable[[str, int, int], None] | None = None):
        self.client = client
        self.scheduler = scheduler
        self.progress = progress

    def task(self, fn: Callable) -> Callable:
        import dask

        return dask.delayed(fn, pure=False, traverse=False)

    def value(self, obj):
        import dask

        return dask.delayed(obj, pure=True, traverse=False)

    def compute(self, objs: list, label: str = "") -> list:
        import dask

        if not objs:
            return []
        if self.client is None:
            return list(dask.compute(*objs, scheduler=self.scheduler))
        from distributed import as_completed

        futures = self.client.compute(objs)
        try:
            total = len(futures)
            for n, _ in enumerate(as_completed(futures), start=1):
                if self.progress:
                    self.progress(label, n, total)
            return self.client.gather(futures)
        except BaseException:
            self.client.cancel(futures)
            raise


# -- results -----------------------------------------------------------------

@dataclass
class MatchResult:
    """What a match produced: the reference visit, the per-visit table, the
    models, and (serial driver) the matched warps or (pipeline) the store."""

    reference_visit: int
    table: Any                     # pandas.DataFrame indexed by visit
    models: dict[int, VisitModel]
    skymap: SkyMap
    config: MatchConfig
    store: str | None = None
    matched: dict[tuple[int, int], dict[str, np.ndarray]] = field(default_factory=dict)
    coarse: dict[tuple[int, int], tuple[np.ndarray, int, int]] = field(default_factory=dict)
    unusable: list[tuple[int, int]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    mask_planes: dict[str, int] = field(default_factory=dict)

    def __repr__(self) -> str:
        where = f", store={self.store!r}" if self.store else ""
        return f"MatchResult(reference_visit={self.reference_visit}, visits={len(self.models)}{where})"


# -- the plan ----------------------------------------------------------------

@dataclass
class _Plan:
    warps: dict[tuple[int, int], Any]
    skymap: SkyMap
    cfg: MatchConfig
    grid: tuple[int, int]
    coarse: tuple[int, int]

    @classmethod
    def make(cls, warps, skymap, cfg):
        warps = dict(sorted(warps.items()))
        return cls(warps, skymap, cfg,
                   superpixel_shape(skymap.width, skymap.height, cfg.x_bin, cfg.y_bin),
                   coarse_shape(skymap.width, skymap.height, cfg.binning))

    @property
    def visits(self) -> list[int]:
        return sorted({v for v, _ in self.warps})

    @property
    def patches(self) -> list[int]:
        return sorted({p for _, p in self.warps})


def _stage_a(plan: _Plan, ex) -> tuple[int, dict]:
    cfg = plan.cfg
    add = ex.task(tasks.add)
    figs = []
    for v in plan.visits:
        leaves = [ex.task(tasks.warp_partial)(key, w, plan.grid, cfg)
                  for key, w in plan.warps.items() if key[0] == v]
        total = tree_reduce(leaves, add)
        figs.append(ex.task(tasks.visit_figures)(total, plan.grid, cfg, v))
    figures = ex.compute(figs, "stage A: reference choice")
    return choose_reference({f.visit: f for f in figures}, cfg)


def _stage_b(plan: _Plan, ref: int, ex) -> tuple[dict[int, VisitModel], dict[tuple[int, int], int]]:
    """Difference models per visit, and every warp's usable pixel count."""
    cfg = plan.cfg
    add, diff, count = ex.task(tasks.add), ex.task(tasks.difference_partial), ex.task(tasks.usable_partial)
    jobs, order, read_refs = [], [], set()
    for v in plan.visits:
        if v == ref:
            continue
        leaves = []
        for key, w in plan.warps.items():
            if key[0] != v:
                continue
            ref_key = (ref, key[1])
            if ref_key in plan.warps:
                leaves.append(diff(ref_key, plan.warps[ref_key], key, w, plan.grid, cfg))
                read_refs.add(ref_key)
            else:
                leaves.append(count(key, w, cfg))
        jobs.append(ex.task(tasks.visit_model)(tree_reduce(leaves, add), plan.grid, cfg, v))
        order.append(v)
    rest = [count(key, w, cfg) for key, w in plan.warps.items() if key[0] == ref and key not in read_refs]
    results = ex.compute(jobs + rest, "stage B: difference models")
    models = {v: model for v, (model, _) in zip(order, results[: len(jobs)])}
    models[ref] = VisitModel.zero(ref, plan.grid, "reference")
    usable: dict[tuple[int, int], int] = {}
    for _, pairs in results[: len(jobs)]:
        usable.update(pairs)
    for part in results[len(jobs):]:
        usable.update(part.usable)
    return dict(sorted(models.items())), usable


def _table(visits, ref_table, models) -> Any:
    import pandas as pd

    rows = []
    for v in visits:
        m = models[v]
        r = ref_table.get(v, {})
        rows.append({
            "visit": v,
            "ref_chi2": r.get("ref_chi2", np.nan),
            "ref_variance": r.get("ref_variance", np.nan),
            "ref_coverage": r.get("ref_coverage", 0),
            "ref_cost": r.get("ref_cost", np.nan),
            "n_good": m.n_good,
            "model_mean": m.model_mean,
            "model_rms": m.model_rms,
            "fit_rms": m.fit_rms,
            "status": m.status,
        })
    return pd.DataFrame(rows).set_index("visit")


def _row_blocks(height: int, chunk_rows: int) -> list[slice]:
    return [slice(s, min(s + chunk_rows, height)) for s in range(0, height, chunk_rows)]


def _models_and_reference(plan: _Plan, ex, timings) -> tuple[int, dict, dict, dict]:
    cfg = plan.cfg
    t0 = time.perf_counter()
    if cfg.ref_visit is None:
        ref, ref_table = _stage_a(plan, ex)
        timings["stage A"] = time.perf_counter() - t0
        log.info("stage A: reference visit %s (%.2f s)", ref, timings["stage A"])
    else:
        ref, ref_table = cfg.ref_visit, {}
        if ref not in plan.visits:
            raise ConfigError(f"ref_visit {ref} is not among the input visits {plan.visits}")
    t0 = time.perf_counter()
    models, usable = _stage_b(plan, ref, ex)
    timings["stage B"] = time.perf_counter() - t0
    log.info("stage B: %d difference models (%.2f s)", len(models) - 1, timings["stage B"])
    return ref, ref_table, models, usable


def _unusable(usable: Mapping[tuple[int, int], int]) -> list[tuple[int, int]]:
    return sorted(k for k, n in usable.items() if n == 0)


def _is_matched(model: VisitModel, key, usable) -> bool:
    """Whether a warp gets its visit's offset: unusable warps are written unchanged."""
    return model.status == "matched" and usable.get(key, 1) > 0


def _warn_unusable(keys, where: Mapping) -> None:
    for key in keys:
        warnings.warn(
            f"{where.get(key, key)}: no usable pixel (all NaN or under bad mask planes); "
            "it adds nothing to any model and is written unchanged",
            UnusableWarpWarning, stacklevel=3,
        )


# -- serial driver -------------------------------------------------------------

def match_arrays(
    warps: Mapping[tuple[int, int], Warp],
    skymap: SkyMap | None = None,
    config: MatchConfig | None = None,
    chunk_rows: int | None = None,
) -> MatchResult:
    """Match in-memory warps, serially, in this process.

    ``warps`` maps (visit, patch) to :class:`~bgdask.io.warp.Warp`. The
    result's ``matched`` maps (visit, patch) to the matched ``image``,
    ``mask`` (canonical layout, ``result.mask_planes``) and ``variance``.
    The Dask pipeline gives the same numbers bit for bit.
    """
    cfg = config or MatchConfig()
    chunk_rows = int(chunk_rows or default_chunk_rows())
    if skymap is None:
        from .geometry import infer_skymap

        skymap = infer_skymap({p: w.box for (_, p), w in warps.items()})
    for (v, p), w in warps.items():
        skymap.check_box(p, w.box, where=f"warp (visit {v}, patch {p})")
    plan = _Plan.make(warps, skymap, cfg)
    ex = SerialExecutor()
    timings: dict[str, float] = {}
    ref, ref_table, models, usable = _models_and_reference(plan, ex, timings)
    unusable = _unusable(usable)
    _warn_unusable(unusable, {})
    planes = canonical_planes(w.mask_planes for w in plan.warps.values())
    t0 = time.perf_counter()
    matched, coarse = {}, {}
    for key, w in plan.warps.items():
        model = models[key[0]]
        c = tasks.warp_coarse(model, w, cfg, plan.coarse)
        chunks = [tasks.match_chunk(w, rows, c, _is_matched(model, key, usable), cfg, planes)
                  for rows in _row_blocks(w.box.height, chunk_rows)]
        matched[key] = {name: np.concatenate([getattr(ch, name) for ch in chunks])
                        for name in ("image", "mask", "variance")}
        coarse[key] = c
    timings["stage C"] = time.perf_counter() - t0
    return MatchResult(ref, _table(plan.visits, ref_table, models), models, skymap, cfg,
                       matched=matched, coarse=coarse, unusable=unusable, timings=timings,
                       mask_planes=planes)


# -- the Dask pipeline -----------------------------------------------------------

def match_backgrounds(
    source,
    output: str | os.PathLike,
    config: MatchConfig | None = None,
    client=None,
    *,
    skymap: SkyMap | str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    scheduler: str | None = None,
    chunk_rows: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    echo: Callable[[str], None] | None = None,
) -> MatchResult:
    """Match the warps of ``source`` and write the matched tract to ``output``.

    ``source``: a directory of warp FITS files, a manifest CSV, a Zarr store
    in the output layout, or a :class:`~bgdask.io.catalog.Catalog`.
    ``client``: a ``distributed.Client``; by default the current client if
    there is one, else the Dask ``scheduler`` named (the threaded one when
    None). ``resume`` finishes a store from the same run; ``overwrite``
    replaces whatever is at ``output``.
    """
    cfg = config or MatchConfig()
    chunk_rows = int(chunk_rows or default_chunk_rows())
    say = echo or (lambda msg: log.info(msg))
    if client is None and scheduler is None:
        try:
            from distributed import get_client

            client = get_client()
        except (ImportError, ValueError):
            client = None
    catalog = source if isinstance(source, Catalog) else find_warps(source)
    sm = catalog.resolve_skymap(skymap, log=say)
    output = str(Path(output).resolve())
    if os.path.abspath(catalog.source) == output:
        raise StoreError(f"{output}: the output is the input store")
    plan = _Plan.make(catalog.entries, sm, cfg)
    if cfg.ref_visit is not None and cfg.ref_visit not in plan.visits:
        raise ConfigError(f"ref_visit {cfg.ref_visit} is not among the input visits {plan.visits}")
    visits, patches = plan.visits, plan.patches
    vidx = {v: i for i, v in enumerate(visits)}
    pidx = {p: i for i, p in enumerate(patches)}
    fp = zstore.fingerprint(catalog, cfg.to_json(), json.dumps(sm.to_dict(), sort_keys=True), chunk_rows)
    ex = DaskExecutor(client, scheduler, progress)
    timings: dict[str, float] = {}

    group = None
    out_path = Path(output)
    if resume and out_path.is_dir() and not any(out_path.iterdir()):
        overwrite = True                      # an empty directory holds nothing to resume
    elif resume and out_path.exists():
        group = zstore.check_resumable(output, fp)
        if not group.attrs.get("models_done"):
            group, overwrite = None, True     # same run, nothing kept yet: start it afresh
    elif out_path.exists():
        if not overwrite:
            raise StoreError(f"{output}: already exists; use --resume to finish it or --overwrite to replace it")
        zstore.check_replaceable(output)

    if group is not None and group.attrs.get("models_done"):
        ref, ref_table, models, usable = _stored_models(output, visits, patches)
        table = _table(visits, ref_table, models)
        say(f"resuming {output}: models from the store, reference visit {ref}")
    else:
        # stages A and B first: bad input fails here, before any store exists
        ref, ref_table, models, usable = _models_and_reference(plan, ex, timings)
        table = _table(visits, ref_table, models)
        _warn_unusable(_unusable(usable), {k: str(e) for k, e in catalog.entries.items()})
        try:
            if group is None:
                _create(output, plan, catalog, fp, chunk_rows, overwrite)
            zstore.write_models(output, visits, models, _table_dict(table),
                                ref, _usable_array(usable, vidx, pidx))
        except OSError as exc:
            raise StoreError(f"{output}: cannot write the store ({exc})") from None

    say(f"reference visit: {ref}")
    t0 = time.perf_counter()
    try:
        _stage_c(plan, models, usable, catalog, output, vidx, pidx, chunk_rows, ex)
        timings["stage C"] = time.perf_counter() - t0
        log.info("stage C: matched warps written (%.2f s)", timings["stage C"])
        complete = zstore.mark_complete(output, {"stage_times": json.dumps(timings)})
    except OSError as exc:
        raise StoreError(
            f"{output}: cannot write the store ({exc}); the warps written so far are kept: "
            "fix the cause and run again with --resume"
        ) from None
    unusable = _unusable(usable)
    if not complete:
        raise StoreError(f"{output}: some warps were not written; run again with --resume")
    return MatchResult(ref, table, models, sm, cfg, store=output, unusable=unusable, timings=timings,
                       mask_planes=dict(catalog.mask_planes))


def _create(output, plan, catalog, fp, chunk_rows, overwrite) -> None:
    """The store's template: metadata, index variables, no pixel."""
    sm, cfg, visits, patches = plan.skymap, plan.cfg, plan.visits, plan.patches
    cells = {p: coarse_cells(sm.outer_box(p), cfg, plan.coarse) for p in patches}
    present = np.zeros((len(visits), len(patches)), dtype=bool)
    vidx = {v: i for i, v in enumerate(visits)}
    pidx = {p: i for i, p in enumerate(patches)}
    for v, p in catalog.entries:
        present[vidx[v], pidx[p]] = True
    zstore.create_store(
        output, visits=visits, patches=patches, present=present,
        boxes={p: (b.x0, b.y0, b.width, b.height) for p, b in ((p, sm.outer_box(p)) for p in patches)},
        coarse_origin={p: (c[1][0], c[0][0]) for p, c in cells.items()},
        coarse_max=(max(c[1][1] - c[1][0] for c in cells.values()),
                    max(c[0][1] - c[0][0] for c in cells.values())),
        warp_shape=sm.max_outer_shape, grid_shape=plan.grid, chunk_rows=chunk_rows, overwrite=overwrite,
        attrs={"config": cfg.to_json(), "skymap": json.dumps(sm.to_dict()),
               "mask_planes": json.dumps(catalog.mask_planes), "fingerprint": fp,
               "source": os.path.abspath(catalog.source)},
    )


def _usable_array(usable, vidx, pidx) -> np.ndarray:
    out = np.zeros((len(vidx), len(pidx)), dtype=bool)
    for (v, p), n in usable.items():
        out[vidx[v], pidx[p]] = n > 0
    return out


def _stored_models(output, visits, patches):
    """Reference, reference table, models and usable flags as a finished stage B stored them."""
    ref, stored, rows = zstore.read_models(output)
    names = {c: s for s, c in zstore.STATUS_CODES.items()}
    models = {v: VisitModel(v, stored[v], int(rows[v]["n_good"]), rows[v]["model_mean"],
                            rows[v]["model_rms"], rows[v]["fit_rms"], names[int(rows[v]["status"])])
              for v in visits}
    ref_table = {v: {k: rows[v][k] for k in ("ref_chi2", "ref_variance", "ref_coverage", "ref_cost")}
                 for v in visits}
    group = zstore.open_store(output)
    flags, present = np.asarray(group["usable"][:]), np.asarray(group["present"][:])
    usable = {(v, p): int(flags[i, j]) for i, v in enumerate(visits) for j, p in enumerate(patches)
              if present[i, j]}
    return ref, ref_table, models, usable


def _table_dict(table) -> dict[int, dict]:
    out = {}
    for v, row in table.iterrows():
        d = row.to_dict()
        d["status"] = zstore.STATUS_CODES[d["status"]]
        out[int(v)] = d
    return out


def _match_and_write(path, vi, pi, w, rows, coarse, matched, cfg, planes, store_width) -> None:
    ch = tasks.match_chunk(w, rows, coarse, matched, cfg, planes)
    zstore.write_rows(path, vi, pi, ch.start, ch.stop, store_width, ch.image, ch.mask, ch.variance, w.box.width)


def _finish(path, vi, pi, coarse, *written) -> None:
    """Mark a warp done once all its row blocks (``written``) have landed."""
    zstore.finish_warp(path, vi, pi, coarse[0])


def _stage_c(plan, models, usable, catalog, output, vidx, pidx, chunk_rows, ex) -> None:
    import zarr

    group = zarr.open_group(output, mode="r")
    done = np.asarray(group["done"][:])
    store_width = int(group["image"].shape[-1])
    cfg = plan.cfg
    model_values = {v: ex.value(m) for v, m in models.items()}
    warp_coarse = ex.task(tasks.warp_coarse)
    write = ex.task(_match_and_write)
    finish = ex.task(_finish)
    jobs = []
    for key, w in plan.warps.items():
        vi, pi = vidx[key[0]], pidx[key[1]]
        if done[vi, pi]:
            continue
        coarse = warp_coarse(model_values[key[0]], w, cfg, plan.coarse)
        matched = _is_matched(models[key[0]], key, usable)
        written = [write(output, vi, pi, w, rows, coarse, matched, cfg, catalog.mask_planes, store_width)
                   for rows in _row_blocks(w.box.height, chunk_rows)]
        jobs.append(finish(output, vi, pi, coarse, *written))
    ex.compute(jobs, "stage C: warps matched")
