"""``match_backgrounds``: open the warps, match them, persist the result to a store.

It is two steps, which the command line runs on either side of starting a
cluster:

* :func:`prepare` checks everything that can be checked without computing:
  the warps are found and their headers read, the geometry resolved, the
  output path and the configuration checked. Bad input fails here, in
  seconds, before a worker starts.
* :func:`run` computes stages A and B, creates the store, writes the models,
  then stage C, and marks the store complete.

The store is the resumable record of a run: its template is created once
stages A and B have succeeded (so bad input never leaves a store behind),
then stage C writes every warp's rows and marks it done; ``complete`` is set
when all are. A run interrupted in stage C is finished with ``resume=True``:
the inputs, configuration and geometry must be those of the stored run (a
fingerprint), the stored models are reused and only the warps not done are
written.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .config import MatchConfig
from .errors import ConfigError, StoreError
from .geometry import SkyMap
from .io.catalog import Catalog, find_warps
from .io.store import Store, check_replaceable, fingerprint, is_store

# The rest (xarray, scipy, numba, distributed) is imported by run(): prepare()
# finds bad input in well under two seconds, before any of it loads.

__all__ = ["match_backgrounds", "prepare", "run", "Prepared"]

log = logging.getLogger("bgdask")


@dataclass
class Prepared:
    """A match that passed every check that needs no computation."""

    catalog: Catalog
    skymap: SkyMap
    config: MatchConfig
    output: str
    chunk_rows: int
    fingerprint: str
    resume_store: Store | None   # a store of this run to finish
    overwrite: bool


def _resolved(path) -> str:
    return str(Path(path).expanduser().resolve())


def prepare(
    source,
    output: str | os.PathLike,
    config: MatchConfig | None = None,
    *,
    skymap: SkyMap | str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    chunk_rows: int | None = None,
    echo: Callable[[str], None] | None = None,
) -> Prepared:
    """Check a match before anything is computed: inputs (headers), geometry,
    output path, reference visit, configuration. See :func:`match_backgrounds`."""
    import dask.config

    cfg = config or MatchConfig()
    rows = int(chunk_rows or dask.config.get("bgdask.chunk-rows"))
    say = echo or (lambda msg: log.info(msg))
    catalog = source if isinstance(source, Catalog) else find_warps(source)
    sm = catalog.resolve_skymap(skymap, log=say)
    cfg.check_mask_planes(list(catalog.mask_planes), source=f"the inputs ({catalog.source})")
    output = _resolved(output)
    if os.path.exists(catalog.source) and _resolved(catalog.source) == output:
        raise StoreError(f"{output}: the output is the input store")
    if cfg.ref_visit is not None and cfg.ref_visit not in catalog.visits:
        raise ConfigError(f"ref_visit {cfg.ref_visit} is not among the input visits {catalog.visits}")
    fp = fingerprint(catalog.items(), cfg.to_json(), json.dumps(sm.to_dict(), sort_keys=True), rows)

    store, out_path = None, Path(output)
    if out_path.exists() and not out_path.is_dir():
        raise StoreError(f"{output}: exists and is not a directory; choose another output path")
    if resume and out_path.is_dir() and not any(out_path.iterdir()):
        overwrite = True                      # an empty directory holds nothing to resume
    elif resume and out_path.exists():
        if not is_store(out_path):
            raise StoreError(f"{output}: exists and is not a bgdask store; choose another output path")
        store = Store.open(output)
        if store.fingerprint != fp:
            raise StoreError(f"{output}: holds another run (its inputs, configuration or geometry differ)",
                             api="pass overwrite=True to replace it, or choose another output",
                             cli="use --overwrite to replace it, or another output path")
        if not store.models_done:
            store, overwrite = None, True     # same run, nothing kept yet: start it afresh
    elif out_path.exists():
        if not overwrite:
            raise StoreError(f"{output}: already exists",
                             api="pass resume=True to finish it or overwrite=True to replace it",
                             cli="use --resume to finish it or --overwrite to replace it")
        check_replaceable(output)
    return Prepared(catalog, sm, cfg, output, rows, fp, store, overwrite)


def run(prepared: Prepared, client=None, *, scheduler: str | None = None, progress=None,
        echo: Callable[[str], None] | None = None) -> "MatchResult":  # noqa: F821
    """Compute a prepared match and write its store (see :func:`match_backgrounds`)."""
    from .collection import open_warps
    from .executors import Executor
    from .matching import MatchResult, describe_warp, solve, unusable_warps, warn_unusable
    from .stages import Solution, tract_of, write_graph
    from .table import visit_table

    p = prepared
    say = echo or (lambda msg: log.info(msg))
    executor = Executor.resolve(client, scheduler, progress)
    tract = tract_of(open_warps(p.catalog, p.skymap, chunks={"y": p.chunk_rows}), p.skymap)
    cfg, output = p.config, p.output
    timings: dict[str, float] = {}
    store = p.resume_store
    if store is not None:
        table = store.table()
        sol = Solution(store.reference_visit, store.models(), _stored_usable(store), store.mask_planes)
        say(f"resuming {output}: models from the store, reference visit {sol.reference}")
    else:
        # stages A and B first: bad input fails here, before any store exists
        sol, criteria = solve(tract, cfg, executor, timings)
        table = visit_table(tract.visits, criteria, sol.models)
        warn_unusable(unusable_warps(sol), describe_warp(tract))
        try:
            store = Store.create(
                output, visits=tract.visits, patches=tract.patches, present=tract.present, skymap=p.skymap,
                config=cfg, chunk_rows=p.chunk_rows, overwrite=p.overwrite,
                attrs={"config": cfg.to_json(), "skymap": p.skymap.to_dict(), "mask_planes": sol.mask_planes,
                       "fingerprint": p.fingerprint, "source": os.path.abspath(p.catalog.source)})
            store.write_models(sol.models, table, sol.reference, _usable_array(tract, sol))
        except OSError as exc:
            raise StoreError(f"{output}: cannot write the store ({exc})") from None
    t0 = time.perf_counter()
    try:
        done = store.done()
        todo = [k for k in tract.keys if not done[tract.index(k)]]
        graph, ends = write_graph(tract, cfg, sol, store, todo)
        executor.compute(graph, ends, "stage C: warps matched")
        timings["stage C"] = time.perf_counter() - t0
        log.info("stage C: matched warps written (%.2f s)", timings["stage C"])
        complete = store.mark_complete(stage_times=timings)
    except OSError as exc:
        raise StoreError(f"{output}: cannot write the store ({exc}); the warps written so far are kept",
                         api="fix the cause and run again with resume=True",
                         cli="fix the cause and run again with --resume") from None
    if not complete:
        raise StoreError(f"{output}: some warps were not written", api="run again with resume=True",
                         cli="run again with --resume")
    return MatchResult(sol.reference, table, dict(sol.models), p.skymap, cfg, store.dataset(),
                       dict(sol.mask_planes or tract.mask_planes), unusable_warps(sol), timings, store=output)


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
    progress=None,
    echo: Callable[[str], None] | None = None,
) -> "MatchResult":  # noqa: F821
    """Match the warps of ``source`` and write the matched tract to ``output``.

    ``source``: a directory of warp FITS files, a manifest CSV, a Zarr store
    in the output layout, or a :class:`~bgdask.io.catalog.Catalog`.
    ``client``: a ``distributed.Client``; by default the current client if
    there is one, else the Dask ``scheduler`` named (the threaded one when
    None). ``resume=True`` finishes a store of the same run; ``overwrite=True``
    replaces whatever store is at ``output``. ``chunk_rows``: rows per chunk
    of the store and per stage-C task (default: dask config
    ``bgdask.chunk-rows``). ``echo`` receives the lines worth showing a user.
    """
    prepared = prepare(source, output, config, skymap=skymap, resume=resume, overwrite=overwrite,
                       chunk_rows=chunk_rows, echo=echo)
    return run(prepared, client, scheduler=scheduler, progress=progress, echo=echo)


def _usable_array(tract, sol) -> Any:
    import numpy as np

    out = np.zeros(tract.present.shape, dtype=bool)
    for key, n in sol.usable_pixels.items():
        out[tract.index(key)] = n > 0
    return out


def _stored_usable(store: Store) -> dict[tuple[int, int], int]:
    flags = store.usable
    return {(v, p): int(flags[store.index(v, p)]) for v, p in store.keys()}
