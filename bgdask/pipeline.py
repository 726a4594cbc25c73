"""``match_backgrounds``: open the warps, match them, persist the result to a store.

It is two steps, which the command line runs on either side of starting a
cluster:

* :func:`prepare` checks everything that can be checked without computing:
  the warps are found and their headers read, the geometry resolved, the
  output path and the configuration checked. Bad input fails here, in
  seconds, before a worker starts.
* :func:`run` computes stages A and B, creates the store, writes the models,
  then stage C, and marks the store complete.

One run at a time writes a store: :func:`prepare` takes the store's lock
(:meth:`bgdask.io.store.Store.lock`) after checking the inputs and before
looking at what the output holds, and :func:`run` releases it when the store
is complete or the run fails (:meth:`Prepared.release` releases a prepared
run that is not run). A second run on the same output stops in
:func:`prepare`, naming the holder, before anything is computed.

The store is the resumable record of a run: its template is created once
stages A and B have succeeded (so bad input never leaves a store behind),
then stage C writes every warp's rows and marks it done; ``complete`` is set
when all are. A run interrupted in stage C is finished with ``resume=True``:
the inputs, configuration and geometry must be those of the stored run (a
fingerprint), the stored models are reused and only the warps not done are
written; done warps are first checked against their checksums (unless
``verify=False``) and the damaged ones written again.
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
from .errors import ConfigError, DamagedStoreError, StoreError
from .geometry import SkyMap
from .io.catalog import Catalog, find_warps
from .io.store import Store, StoreLock, check_replaceable, fingerprint, is_store, write_error

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
    lock: StoreLock | None = None   # held from prepare() until run() ends
    verify: bool = True             # resume: check done warps against their checksums

    def release(self) -> None:
        """Release the output's lock (a prepared run that will not be run)."""
        if self.lock is not None:
            self.lock.release()


#: The most rows per chunk (--chunk-rows).
MAX_CHUNK_ROWS = 1 << 20


def _resolved(path) -> str:
    return str(Path(path).expanduser().resolve())


def _within(inner: Path, outer: Path) -> bool:
    """``inner`` is ``outer`` or lies inside it (both resolved)."""
    return inner == outer or outer in inner.parents


def check_apart(catalog: Catalog, output: str | os.PathLike) -> None:
    """Raise a StoreError unless the output and every input are different
    things that do not nest: compared after resolving symlinks and ``..``,
    for the input store, directory (searched recursively) or manifest and
    for every warp file. Replacing such an output (``--overwrite``) would
    delete inputs; writing inside an input directory would write inputs."""
    out = Path(_resolved(output))
    source = Path(catalog.source)
    if source.exists():
        src = Path(_resolved(source))
        kind = ("input store" if is_store(src) else "input directory" if src.is_dir() else "input manifest")
        if src == out:
            raise StoreError(f"{output}: the output is the {kind} {catalog.source}"
                             + (f" (both are {src})" if str(src) != str(catalog.source) else ""),
                             api="choose another output", cli="choose another output path")
        if src.is_dir() and _within(out, src):
            raise StoreError(f"{output}: the output is inside the {kind} {catalog.source}, which is "
                             "read for warps; write it elsewhere",
                             api="choose an output outside the input", cli="choose an output path outside the input")
        if _within(src, out):
            raise StoreError(f"{output}: the {kind} {catalog.source} is inside the output",
                             api="choose another output", cli="choose another output path")
    seen: set[Path] = set()
    for key, entry in catalog.items():
        path = getattr(entry, "path", None)
        if not path:
            continue
        p = Path(_resolved(path))
        if p in seen:
            continue
        seen.add(p)
        if _within(p, out):
            where = "is" if p == out else "is inside"
            raise StoreError(f"{output}: the input {catalog.describe(key)} {where} the output ({p})",
                             api="choose another output", cli="choose another output path")


def prepare(
    source,
    output: str | os.PathLike,
    config: MatchConfig | None = None,
    *,
    skymap: SkyMap | str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    chunk_rows: int | None = None,
    verify: bool = True,
    echo: Callable[[str], None] | None = None,
) -> Prepared:
    """Check a match before anything is computed: inputs (headers), geometry,
    output path, reference visit, configuration; then take the output's lock
    and check what the output holds. See :func:`match_backgrounds`."""
    import dask.config

    cfg = config or MatchConfig()
    rows = checked_chunk_rows(chunk_rows if chunk_rows is not None else dask.config.get("bgdask.chunk-rows"))
    say = echo or (lambda msg: log.info(msg))
    catalog = source if isinstance(source, Catalog) else find_warps(source)
    sm = catalog.resolve_skymap(skymap, log=say)
    cfg.check_mask_planes(list(catalog.mask_planes), source=f"the inputs ({catalog.source})")
    given, output = output, _resolved(output)
    check_apart(catalog, given)
    if cfg.ref_visit is not None and cfg.ref_visit not in catalog.visits:
        raise ConfigError(f"ref_visit {cfg.ref_visit} is not among the input visits {catalog.visits}")
    if cfg.method == "global" and cfg.solver == "cholmod":
        from .kernels.solve import check_solver

        check_solver(cfg.solver)
    fp = fingerprint(catalog.items(), cfg.to_json(), json.dumps(sm.to_dict(), sort_keys=True), rows)
    if Path(output).exists() and not Path(output).is_dir():
        raise StoreError(f"{output}: exists and is not a directory; choose another output path")
    # one run at a time: from here until run() ends, nobody else writes the output
    lock = Store.lock(output)
    try:
        store, overwrite = _check_output(output, fp, resume, overwrite)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return Prepared(catalog, sm, cfg, output, rows, fp, store, overwrite, lock, verify)


def checked_chunk_rows(value) -> int:
    """``value`` as rows per chunk: an integer from 1 to :data:`MAX_CHUNK_ROWS`, or a ConfigError."""
    try:
        rows = int(value)
        ok = rows == value and 1 <= rows <= MAX_CHUNK_ROWS
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ConfigError(f"chunk_rows must be an integer from 1 to {MAX_CHUNK_ROWS}, got {value!r}",
                          cli=f"--chunk-rows takes 1 to {MAX_CHUNK_ROWS}")
    return rows


def _check_output(output: str, fp: str, resume: bool, overwrite: bool) -> tuple[Store | None, bool]:
    """What to do with what ``output`` holds: (a store of this run to finish, overwrite)."""
    store, out_path = None, Path(output)
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
        else:
            store.check_models()              # what a resume reuses must read back as written
    elif out_path.exists():
        if not overwrite:
            raise StoreError(f"{output}: already exists",
                             api="pass resume=True to finish it or overwrite=True to replace it",
                             cli="use --resume to finish it or --overwrite to replace it")
        check_replaceable(output)
    return store, overwrite


def run(prepared: Prepared, client=None, *, scheduler: str | None = None, progress=None,
        echo: Callable[[str], None] | None = None, attrs: dict | None = None) -> "MatchResult":  # noqa: F821
    """Compute a prepared match and write its store (see :func:`match_backgrounds`);
    ``attrs`` are added to the store's attributes when it is complete. The
    output's lock is released when it ends, however it ends."""
    p = prepared
    if p.lock is not None and not p.lock.held:
        raise StoreError(f"{p.output}: this prepared run has ended (its lock is released)",
                         api="call prepare() again", cli="run the command again")
    try:
        return _run(p, client, scheduler, progress, echo, attrs or {})
    finally:
        p.release()


def _run(p: Prepared, client, scheduler, progress, echo, attrs: dict) -> "MatchResult":  # noqa: F821
    from .collection import open_warps
    from .executors import Executor
    from .matching import MatchResult, describe_warp, solve, unusable_warps, warn_unusable
    from .stages import Solution, tract_of, write_graph
    from .table import visit_table, with_quality

    say = echo or (lambda msg: log.info(msg))
    executor = Executor.resolve(client, scheduler, progress)
    tract = tract_of(open_warps(p.catalog, p.skymap, chunks={"y": p.chunk_rows}), p.skymap)
    cfg, output = p.config, p.output
    timings: dict[str, float] = {}
    store = p.resume_store
    if store is not None:
        table = store.table()
        sol = Solution(store.reference_visit, store.models(), _stored_usable(store), pairs=store.pairs(),
                       solve_info=store.solve_info, mask_planes=store.mask_planes)
        say(f"resuming {output}: models from the store, reference visit {sol.reference}")
        if p.verify:
            _repair(store, executor, timings, say)
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
            if sol.pairs is not None:      # the global method's pair table, before models_done
                store.write_pairs(sol.pairs, sol.solve_info)
            store.write_models(sol.models, table, sol.reference, _usable_array(tract, sol))
        except OSError as exc:
            raise write_error(output, exc) from None
    t0 = time.perf_counter()
    try:
        done = store.done()
        todo = [k for k in tract.keys if not done[tract.index(k)]]
        graph, ends, quality = write_graph(tract, cfg, sol, store, todo)
        seam, figures = executor.compute(graph, ends + [quality], "stage C: warps matched", keep={quality})[-1]
        table = with_quality(table, figures, cfg.max_match_ratio)
        store.write_quality(table, seam)
        timings["stage C"] = time.perf_counter() - t0
        log.info("stage C: matched warps written, quality measured (%.2f s)", timings["stage C"])
        complete = store.mark_complete(stage_times=timings, **attrs)
    except OSError as exc:
        raise write_error(output, exc) from None
    if not complete:
        raise StoreError(f"{output}: some warps were not written", api="run again with resume=True",
                         cli="run again with --resume")
    return MatchResult(sol.reference, table, dict(sol.models), p.skymap, cfg, store.dataset(),
                       dict(sol.mask_planes or tract.mask_planes), unusable_warps(sol), timings, store=output,
                       pairs=sol.pairs, solve_info=sol.solve_info, seam=store.seam())


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
    verify: bool = True,
    progress=None,
    echo: Callable[[str], None] | None = None,
) -> "MatchResult":  # noqa: F821
    """Match the warps of ``source`` and write the matched tract to ``output``.

    ``source``: a directory of warp FITS files, a manifest CSV, a Zarr store
    in the output layout, or a :class:`~bgdask.io.catalog.Catalog`.
    ``client``: a ``distributed.Client``; by default the current client if
    there is one, else the Dask ``scheduler`` named (the threaded one when
    None). ``resume=True`` finishes a store of the same run, first checking
    its done warps against their checksums and writing the damaged ones again
    (``verify=False`` trusts them); ``overwrite=True`` replaces whatever
    store is at ``output``. ``chunk_rows``: rows per chunk of the store, and
    per block a stage-C task holds in memory (default: dask config
    ``bgdask.chunk-rows``). ``echo``
    receives the lines worth showing a user. Another run writing ``output``
    at the same time is refused (StoreLockedError, naming it).
    """
    prepared = prepare(source, output, config, skymap=skymap, resume=resume, overwrite=overwrite,
                       chunk_rows=chunk_rows, verify=verify, echo=echo)
    return run(prepared, client, scheduler=scheduler, progress=progress, echo=echo)


def _verify_one(store: Store, vi: int, pi: int) -> str | None:
    return store.verify_warp(vi, pi)


def _repair(store: Store, executor, timings: dict, say) -> None:
    """Check the done warps of a store being resumed against their
    checksums (tasks on the executor) and mark the damaged ones not done."""
    import hashlib

    from dask.highlevelgraph import HighLevelGraph

    from ._compat import Task

    if not store.has_checksums():
        raise DamagedStoreError(f"{store.path}: the store records no checksums (made before bgdask had them)",
                                api="pass verify=False to trust its done warps, or overwrite=True",
                                cli="use --no-verify to trust its done warps, or --overwrite")
    t0 = time.perf_counter()
    done = store.done() & store.present
    keys = [k for k in store.keys() if done[store.index(*k)]]
    name = "bgdask-verify-" + hashlib.sha1(f"{store.path}{time.time()}".encode()).hexdigest()[:12]
    layer = {(name, i): Task((name, i), _verify_one, store, *store.index(*k)) for i, k in enumerate(keys)}
    reasons = executor.compute(HighLevelGraph({name: layer}, {name: set()}), list(layer),
                               "resume: done warps verified")
    damaged = [(k, r) for k, r in zip(keys, reasons) if r is not None]
    timings["verify"] = time.perf_counter() - t0
    for (v, p), why in damaged:
        say(f"warp (visit {v}, patch {p}) of {store.path} is damaged ({why}): writing it again")
    if damaged:
        store.reset_warps([k for k, _ in damaged])
    log.info("%d done warps verified, %d damaged (%.2f s)", len(keys), len(damaged), timings["verify"])


def _usable_array(tract, sol) -> Any:
    import numpy as np

    out = np.zeros(tract.present.shape, dtype=bool)
    for key, n in sol.usable_pixels.items():
        out[tract.index(key)] = n > 0
    return out


def _stored_usable(store: Store) -> dict[tuple[int, int], int]:
    flags = store.usable
    return {(v, p): int(flags[store.index(v, p)]) for v, p in store.keys()}
