"""Matching a collection of warps: :func:`match` and its result.

``bgdask.match(ds)`` takes the lazy (visit, patch) Dataset of
:func:`bgdask.open_warps` (or any Dataset with its variables and
coordinates), computes the reference visit and every visit's difference
model (stages A and B, reductions, computed here), and returns them with
``matched``: a Dataset like ``ds`` whose ``image`` is image + offset, lazy,
computed only when asked::

    ds = bgdask.open_warps("tract/warps")
    result = bgdask.match(ds)
    result.matched.image.sel(visit=1001).mean("patch").compute()

:func:`match_arrays` does the same on in-memory warps with the synchronous
scheduler and returns the matched warps computed.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from .background import VisitModel
from .config import MatchConfig
from .errors import (ConfigError, InputError, NothingMatchedWarning, UnnamedMaskBitsWarning, UnusableWarpWarning,
                     VarianceWarning)
from .executors import Executor, Progress
from .geometry import SkyMap
from .io.warp import Warp
from .masks import unnamed_name, with_unnamed
from .stages import Solution, Tract, coarse_geometry, matched_arrays, quality_graph, stage_a, stage_b, tract_of
from .table import SEAM_PLANES, visit_table, with_quality

__all__ = ["MatchResult", "match", "match_arrays", "solve"]

log = logging.getLogger("bgdask")


@dataclass
class MatchResult:
    """What a match produced.

    ``reference_visit``; ``table`` (pandas DataFrame, one row per visit:
    :data:`bgdask.table.COLUMNS`); ``models`` (visit ->
    :class:`~bgdask.background.VisitModel`); ``matched``: an xarray Dataset
    of the matched warps (image, mask, variance over visit, patch, y, x):
    lazy from :func:`match`, in memory from :func:`match_arrays`, the
    written store from :func:`bgdask.match_backgrounds` (then ``store`` is
    its path); ``unusable``: warps with no usable pixel (passed unchanged);
    ``timings``: seconds per stage; ``seam``: the seam map, plane ->
    (sy, sx) array (:mod:`bgdask.quality`), once stage C has run.

    The table's quality columns (``match_rms``, ``match_noise``,
    ``match_ratio``, ``flagged``) are measured in stage C: by
    :func:`match_arrays` and :func:`bgdask.match_backgrounds`; the lazy
    result of :func:`match` leaves them NaN (False).
    """

    reference_visit: int
    table: Any
    models: dict[int, VisitModel]
    skymap: SkyMap
    config: MatchConfig
    matched: Any
    mask_planes: dict[str, int] = field(default_factory=dict)
    unusable: list[tuple[int, int]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    store: str | None = None
    seam: dict[str, np.ndarray] | None = None
    #: the global method's per-pair table (pandas DataFrame: :data:`bgdask.table.PAIR_COLUMNS`)
    #: and its solve's figures; None for the reference method
    pairs: Any = None
    solve_info: dict | None = None

    def keys(self) -> list[tuple[int, int]]:
        """(visit, patch) of every matched warp, sorted."""
        present = np.asarray(self.matched["present"].values, dtype=bool)
        visits, patches = self.matched.visit.values, self.matched.patch.values
        return [(int(visits[i]), int(patches[j])) for i, j in zip(*np.nonzero(present))]

    def coarse(self, visit: int, patch: int) -> tuple[np.ndarray, int, int]:
        """One warp's coarse offset grid and its first cell (ky0, kx0): the
        offset image is this grid interpolated to every pixel."""
        from .geometry import coarse_cells, coarse_shape

        ds = self.matched.sel(visit=visit, patch=patch)
        box = self.warp_box(patch)
        kx, ky = coarse_cells(box, self.config.binning,
                              coarse_shape(self.skymap.width, self.skymap.height, self.config.binning))
        grid = np.asarray(ds.offset_coarse.values)[: ky[1] - ky[0], : kx[1] - kx[0]]
        return grid, ky[0], kx[0]

    def warp_box(self, patch: int):
        return self.skymap.outer_box(patch)

    def warp(self, visit: int, patch: int) -> Warp:
        """One matched warp, cropped to its box and computed, as a :class:`~bgdask.io.warp.Warp`
        (its mask in the layout ``mask_planes``)."""
        ds = self.matched.sel(visit=visit, patch=patch)
        h, w = int(ds.height), int(ds.width)
        planes = {n: np.asarray(ds[n].values)[:h, :w] for n in ("image", "mask", "variance")}
        return Warp(**planes, x0=int(ds.x0), y0=int(ds.y0), mask_planes=dict(self.mask_planes),
                    visit=int(visit), patch=int(patch), tract=self.skymap.tract)

    def __repr__(self) -> str:
        where = f", store={self.store!r}" if self.store else ""
        return f"MatchResult(reference_visit={self.reference_visit}, visits={len(self.models)}{where})"


def solve(tract: Tract, cfg: MatchConfig, executor: Executor,
          timings: dict[str, float] | None = None) -> tuple[Solution, dict]:
    """Stages A and B: the reference (given or chosen), every visit's model,
    every warp's usable count, the matched mask layout; and the
    reference-choice criteria per visit. Warns of what reading the warps
    showed (mask bits without a name, pixels of zero or negative variance)."""
    timings = {} if timings is None else timings
    if cfg.method == "global":
        from . import global_stage

        sol, criteria, notes = global_stage.solve(tract, cfg, executor, timings)
        log.info("global method: reference visit %s, %d pairs, %d unknowns (stage A %.2f s, stage B %.2f s)",
                 sol.reference, len(sol.pairs), sol.solve_info["n_unknowns"], timings["stage A"],
                 timings["stage B"])
    else:
        t0 = time.perf_counter()
        if cfg.ref_visit is None:
            ref, criteria = stage_a(tract, cfg, executor)
            timings["stage A"] = time.perf_counter() - t0
            log.info("stage A: reference visit %s (%.2f s)", ref, timings["stage A"])
        else:
            ref, criteria = cfg.ref_visit, {}
            check_reference(cfg, tract.visits)
        t0 = time.perf_counter()
        models, pixels, notes = stage_b(tract, cfg, ref, executor)
        timings["stage B"] = time.perf_counter() - t0
        log.info("stage B: %d difference models (%.2f s)", len(models) - 1, timings["stage B"])
        sol = Solution(ref, models, pixels)
    sol = replace(sol, mask_planes=mask_layout(tract, notes))
    warn_variance(tract, notes)
    warn_if_nothing_matched(sol)
    return sol, criteria


def mask_layout(tract: Tract, notes) -> dict[str, int]:
    """The matched warps' mask layout: the collection's, plus a plane
    UNNAMED_<bit> for each bit a file set without naming it (a warning
    names each file), or an InputError with dask config
    ``bgdask.unnamed-mask-bits: error``."""
    import dask.config

    describe = describe_warp(tract)
    found = {key: [b for b in range(32) if bits >> b & 1] for key, (bits, _) in sorted(notes.items()) if bits}
    if not found:
        return dict(tract.mask_planes)
    policy = str(dask.config.get("bgdask.unnamed-mask-bits", "keep")).lower()
    if policy not in ("keep", "error"):
        raise ConfigError(f"dask config bgdask.unnamed-mask-bits must be keep or error, got {policy!r}")
    if policy == "error":
        key, bits = next(iter(found.items()))
        raise InputError(f"{describe(key)}: mask bits {', '.join(map(str, bits))} are set but no MP_ card "
                         f"names them ({len(found)} warps like this)",
                         api="name them in the files, or set dask config bgdask.unnamed-mask-bits: keep",
                         cli="name them in the files, or set DASK_BGDASK__UNNAMED_MASK_BITS=keep")
    for key, bits in found.items():
        names = ", ".join(unnamed_name(b) for b in bits)
        warnings.warn(f"{describe(key)}: mask bits {', '.join(map(str, bits))} are set but no MP_ card names "
                      f"them; kept as the planes {names}", UnnamedMaskBitsWarning, stacklevel=4)
    return with_unnamed(tract.mask_planes, {b for bits in found.values() for b in bits})


def warn_variance(tract: Tract, notes) -> None:
    """A warning per warp with pixels of zero or negative variance (they were treated as bad)."""
    describe = describe_warp(tract)
    for key, (_, n) in sorted(notes.items()):
        if n:
            warnings.warn(f"{describe(key)}: {n} pixels of zero or negative variance; treated as bad "
                          "(left out of the statistics, like masked pixels)", VarianceWarning, stacklevel=4)


def warn_if_nothing_matched(sol: Solution) -> None:
    """Say so when no visit gets an offset: one visit, or all others skipped or empty."""
    others = [m for v, m in sol.models.items() if v != sol.reference]
    if not others:
        warnings.warn(f"only one visit ({sol.reference}): it is the reference and nothing is matched",
                      NothingMatchedWarning, stacklevel=3)
    elif not any(m.status == "matched" for m in others):
        states = ", ".join(f"{m.visit} {m.status}" for m in others)
        warnings.warn(f"no visit was matched to the reference {sol.reference} ({states})",
                      NothingMatchedWarning, stacklevel=3)


def check_reference(cfg: MatchConfig, visits) -> None:
    if cfg.ref_visit is not None and cfg.ref_visit not in visits:
        raise ConfigError(f"ref_visit {cfg.ref_visit} is not among the input visits {list(visits)}")


def unusable_warps(sol: Solution) -> list[tuple[int, int]]:
    return sorted(k for k, n in sol.usable_pixels.items() if n == 0)


def warn_unusable(keys, describe) -> None:
    for key in keys:
        warnings.warn(
            f"{describe(key)}: no usable pixel (all NaN or under bad mask planes); "
            "it adds nothing to any model and is written unchanged",
            UnusableWarpWarning, stacklevel=3,
        )


def describe_warp(tract: Tract):
    """How messages name a warp of ``tract``: with its file when known."""
    def describe(key):
        vi, pi = tract.index(key)
        spec = tract.blocks("image", vi, pi)[0]
        path = getattr(getattr(spec, "source", None), "path", None)
        return f"warp (visit {key[0]}, patch {key[1]})" + (f" in {path}" if path else "")
    return describe


def matched_dataset(tract: Tract, cfg: MatchConfig, sol: Solution):
    """The collection with its image replaced by the lazy matched image, and
    every warp's coarse offset grid (``offset_coarse``, its first cell at
    ``coarse_y0``, ``coarse_x0``)."""
    arrays = matched_arrays(tract, cfg, sol)
    _, first, _, _ = coarse_geometry(tract, cfg)
    out = tract.ds.copy()
    out["image"] = (tract.ds["image"].dims, arrays["image"], tract.ds["image"].attrs)
    if "mask" in arrays:  # with UNNAMED planes
        out["mask"] = (tract.ds["mask"].dims, arrays["mask"], tract.ds["mask"].attrs)
        out.attrs["mask_planes"] = dict(sol.mask_planes)
    out["offset_coarse"] = (("visit", "patch", "cy", "cx"), arrays["offset_coarse"])
    out = out.assign_coords(
        coarse_y0=("patch", np.array([first[p][0] for p in tract.patches], dtype=np.int64)),
        coarse_x0=("patch", np.array([first[p][1] for p in tract.patches], dtype=np.int64)))
    out.attrs.update(reference_visit=sol.reference)
    return out


def match(ds, config: MatchConfig | None = None, *, skymap: SkyMap | None = None, client=None,
          scheduler: str | None = None, progress: Progress | None = None) -> MatchResult:
    """Match the backgrounds of the warps in ``ds``.

    Stages A and B run now (on ``client``, the current Client, or the Dask
    ``scheduler`` named); stage C is returned lazily in ``result.matched``.
    """
    return _match(ds, config, skymap, Executor.resolve(client, scheduler, progress))[0]


def _match(ds, config, skymap, executor) -> tuple[MatchResult, Tract, Solution]:
    cfg = config or MatchConfig()
    tract = tract_of(ds, skymap)
    check_reference(cfg, tract.visits)
    cfg.check_mask_planes(list(tract.mask_planes))
    timings: dict[str, float] = {}
    sol, criteria = solve(tract, cfg, executor, timings)
    unusable = unusable_warps(sol)
    warn_unusable(unusable, describe_warp(tract))
    result = MatchResult(sol.reference, visit_table(tract.visits, criteria, sol.models), dict(sol.models),
                         tract.skymap, cfg, matched_dataset(tract, cfg, sol), dict(sol.mask_planes),
                         unusable, timings, pairs=sol.pairs, solve_info=sol.solve_info)
    return result, tract, sol


def match_arrays(
    warps: Mapping[tuple[int, int], Warp],
    skymap: SkyMap | None = None,
    config: MatchConfig | None = None,
    chunk_rows: int | None = None,
) -> MatchResult:
    """Match in-memory warps, serially, in this process.

    ``warps`` maps (visit, patch) to :class:`~bgdask.io.warp.Warp`. The
    result's ``matched`` is computed (``result.warp(visit, patch)`` gives one
    matched warp), and so is the quality (table columns and ``seam``); the
    pipeline gives the same numbers bit for bit (the quality, measured per
    row block, for the same ``chunk_rows``).
    """
    import dask.array as da
    import dask.config

    from .collection import open_warps
    from .pipeline import checked_chunk_rows

    rows = checked_chunk_rows(chunk_rows if chunk_rows is not None else dask.config.get("bgdask.chunk-rows"))
    ds = open_warps(warps, skymap=skymap, chunks={"y": rows})
    executor = Executor(scheduler="sync")
    result, tract, sol = _match(ds, config, skymap, executor)
    t0 = time.perf_counter()
    result.matched = result.matched.compute(scheduler="sync")
    image = da.from_array(result.matched.image.data, chunks=tract.array("image").chunks)
    graph, key = quality_graph(tract, result.config, sol, image)
    seam, figures = executor.compute(graph, [key])[0]
    result.table = with_quality(result.table, figures, result.config.max_match_ratio)
    result.seam = dict(zip(SEAM_PLANES, seam))
    result.timings["stage C"] = time.perf_counter() - t0
    return result
