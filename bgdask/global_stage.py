"""The global method (``method: global``, docs/global.md) as Dask task layers.

It replaces stages A and B of the reference method; stage C is the same.

* **Coverage** (stage A of the global method): a leaf per warp, one read of
  its image and mask: the window sums of its counted and finite pixels
  (:func:`bgdask.kernels.centroid.window_sums`), its usable pixel count and,
  when the reference is to be chosen, the superpixel statistics of the
  reference choice (stage A's, so the reference is the one the reference
  method would choose). A fixed tree per visit; per visit its coverage
  ``N >= good_pixel_threshold``, its support ``F > 0`` and its criteria.
* **Pairs** (on the client): every pair of visits whose coverages overlap
  and which share a patch, then :func:`bgdask.kernels.solve.select_pairs`
  (``max_partners``; the reference's pairs and a spanning forest kept).
* **Pair statistics and the solve** (stage B of the global method): a leaf
  per (pair u < v, patch both have) reading both warps' image, mask and
  variance through the collection's read specs: the statistics of u - v
  with the window sums of its counted pixels' positions and of
  ``var_u + var_v`` (:func:`bgdask.background.difference_sums`); a fixed tree
  per pair over its patches; one task solving every visit's offset grid
  (:func:`bgdask.kernels.solve.solve_global`) on one worker.

The trees depend only on the lists of warps and pairs, and the solve holds
BLAS to one thread, so every scheduler gives the same bits. Each warp is read
once for its coverage, then once per pair it is in.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from . import background as bg
from .config import MatchConfig
from .errors import ModelError
from .stages import Solution, Tract, _common, _Graph, _image_and_bad, _planes_and_bad, cfg_token, read_notes

__all__ = ["Coverage", "PairSums", "check_config", "graph_coverage", "choose_pairs", "graph_pairs", "solve", "models_of",
           "solve_info_attrs", "SkippedVisitWarning"]


class SkippedVisitWarning(UserWarning):
    """Visits left unmatched with ``on_no_overlap: skip`` (no chain of pairs to the reference)."""


def _add_blocks(a, b, names):
    """The sum of two blocks of the superpixel grid (``iy0``, ``ix0`` and
    arrays ``names``), on the union of their regions: (arrays, iy0, ix0)."""
    sa, sb = getattr(a, names[0]).shape, getattr(b, names[0]).shape
    if (a.iy0, a.ix0, sa) == (b.iy0, b.ix0, sb):
        return [getattr(a, n) + getattr(b, n) for n in names], a.iy0, a.ix0
    iy0, ix0 = min(a.iy0, b.iy0), min(a.ix0, b.ix0)
    shape = (max(a.iy0 + sa[0], b.iy0 + sb[0]) - iy0, max(a.ix0 + sa[1], b.ix0 + sb[1]) - ix0)
    out = []
    for n in names:
        grid = np.zeros(shape)
        for blk in (a, b):
            arr = getattr(blk, n)
            grid[blk.iy0 - iy0: blk.iy0 - iy0 + arr.shape[0], blk.ix0 - ix0: blk.ix0 - ix0 + arr.shape[1]] += arr
        out.append(grid)
    return out, iy0, ix0


@dataclass(frozen=True)
class Coverage:
    """A (partial) sum over one visit's warps: counted (``N``) and finite
    (``F``) pixels per superpixel window on a block of the grid, and the
    reference choice's statistics with the usable counts (a
    :class:`~bgdask.background.Partial`)."""

    part: bg.Partial
    N: np.ndarray
    F: np.ndarray
    iy0: int
    ix0: int

    def __add__(self, other: "Coverage") -> "Coverage":
        if other.N.size == 0:
            return Coverage(self.part + other.part, self.N, self.F, self.iy0, self.ix0)
        if self.N.size == 0:
            return Coverage(self.part + other.part, other.N, other.F, other.iy0, other.ix0)
        (N, F), iy0, ix0 = _add_blocks(self, other, ("N", "F"))
        return Coverage(self.part + other.part, N, F, iy0, ix0)

    def dense(self, grid_shape) -> tuple[np.ndarray, np.ndarray]:
        N, F = np.zeros(grid_shape), np.zeros(grid_shape)
        h, w = self.N.shape
        N[self.iy0:self.iy0 + h, self.ix0:self.ix0 + w] = self.N
        F[self.iy0:self.iy0 + h, self.ix0:self.ix0 + w] = self.F
        return N, F


def _leaf_cover(key, image_blocks, mask_blocks, var_blocks, box, y_starts, bad_bits, grid, cfg,
                criteria: bool) -> Coverage:
    from .kernels.centroid import window_sums

    image, bad, note = _image_and_bad(key, image_blocks, mask_blocks, var_blocks, box, y_starts, bad_bits)
    ws = window_sums(image, bad, box.x0, box.y0, grid, cfg.x_bin, cfg.y_bin, window_scale=cfg.window_scale)
    part = bg.warp_partial(key, image, bad, box, grid, cfg) if criteria else bg.usable_partial(key, bad)
    return Coverage(part.noted(note), ws.N, ws.F, ws.iy0, ws.ix0)


def _visit_cover(total: Coverage, grid, cfg: MatchConfig, visit: int, criteria: bool):
    """Per visit: (reference criteria or None, counted N grid, finite F grid,
    what was read: a :class:`~bgdask.background.Partial` of usable counts and notes)."""
    from .reference import visit_criteria

    crit = visit_criteria(total.part, grid, cfg, visit) if criteria else None
    N, F = total.dense(grid)
    return crit, N, F, total.part.read()


def _tree(g: _Graph, kind: str, index, leaves: list):
    """The root of a fixed binary tree of ``+`` over ``leaves`` (keys), as
    :meth:`bgdask.stages._Graph.tree` builds it."""
    level, items = 0, list(leaves)
    while len(items) > 1:
        paired = []
        for i in range(0, len(items) - 1, 2):
            paired.append(g.task(g.key(kind, *index, level, i // 2), _plus, g.ref(items[i]), g.ref(items[i + 1])))
        if len(items) % 2:
            paired.append(items[-1])
        items, level = paired, level + 1
    return items[0]


def _plus(a, b):
    return a + b


def graph_coverage(tract: Tract, cfg: MatchConfig, criteria: bool):
    """The coverage graph and its outputs' keys, one per visit with a warp,
    and those visits."""
    grid, bits = _common(tract, cfg)
    g = _Graph(tract, "ga", cfg_token(cfg, criteria))
    ys = tract.row_starts
    keys, order = [], []
    for v in tract.visits:
        leaves = []
        for key in tract.keys_of[v]:
            vi, pi = tract.index(key)
            leaves.append(g.task(g.key("warp", vi, pi), _leaf_cover, key, *g.planes(vi, pi),
                                 tract.boxes[key[1]], ys, bits, grid, cfg, criteria))
        if not leaves:
            continue
        total = _tree(g, "sum", (tract._vidx[v],), leaves)
        keys.append(g.task(g.key("visit", tract._vidx[v]), _visit_cover, g.ref(total), grid, cfg, v, criteria))
        order.append(v)
    return g.graph(), keys, order


def choose_pairs(tract: Tract, counted: Mapping[int, np.ndarray], cfg: MatchConfig, ref: int) -> list[tuple[int, int]]:
    """The pairs to measure: visits whose coverages (``N >= good_pixel_threshold``)
    overlap and that share a patch, chosen by :func:`~bgdask.kernels.solve.select_pairs`."""
    from .kernels.solve import pair_overlaps, select_pairs

    cover = {v: n >= cfg.good_pixel_threshold for v, n in counted.items()}
    patches = {v: {p for _, p in tract.keys_of[v]} for v in counted}
    overlaps = {k: n for k, n in pair_overlaps(cover).items() if patches[k[0]] & patches[k[1]]}
    return select_pairs(overlaps, ref, cfg.max_partners)


@dataclass(frozen=True)
class PairSums:
    """One pair's statistics of u - v (an :class:`~bgdask.background.Accumulator`
    with its centroid and variance-plane sums)."""

    u: int
    v: int
    acc: bg.Accumulator

    def __add__(self, other: "PairSums") -> "PairSums":
        return PairSums(self.u, self.v, self.acc + other.acc)

    def data(self):
        from .kernels.solve import PairData

        a = self.acc
        return PairData(self.u, self.v, a.S, a.N, a.V, a.SX, a.SY, a.SP, a.iy0, a.ix0)


def _leaf_pair(u, u_image, u_mask, u_var, v, v_image, v_mask, v_var, box, y_starts, bad_bits, grid, cfg):
    iu, var_u, bu, _ = _planes_and_bad(u, u_image, u_mask, u_var, box, y_starts, bad_bits, notes=False)
    iv, var_v, bv, _ = _planes_and_bad(v, v_image, v_mask, v_var, box, y_starts, bad_bits, notes=False)
    var = var_u.astype(np.float64) + var_v
    return PairSums(u, v, bg.difference_sums(iu, bu, iv, bv, box, grid, cfg, plane=var))


def _solve(pairs: list, support: Mapping[int, np.ndarray], ref: int, cfg: MatchConfig):
    """The one solve task: every visit's offset grid from the pairs' sums."""
    from .kernels.solve import solve_global

    return solve_global([p.data() for p in pairs], support, ref, cfg.x_bin, cfg.y_bin,
                        min_count=cfg.good_pixel_threshold, smoothness=cfg.global_smoothness,
                        placement=cfg.value_placement, solver=cfg.solver, on_disconnected=cfg.on_no_overlap)


def graph_pairs(tract: Tract, cfg: MatchConfig, ref: int, pairs: list[tuple[int, int]],
                support: Mapping[int, np.ndarray]):
    """The pair statistics and the solve: the graph and the solve's key."""
    grid, bits = _common(tract, cfg)
    g = _Graph(tract, "gb", cfg_token(cfg, ref, pairs))
    ys = tract.row_starts
    present = set(tract.keys)
    roots = []
    for k, (u, v) in enumerate(pairs):
        leaves = []
        for _, p in tract.keys_of[u]:
            if (v, p) not in present:
                continue
            ui, pi = tract.index((u, p))
            vi, _ = tract.index((v, p))
            leaves.append(g.task(g.key("diff", k, pi), _leaf_pair,
                                 u, *g.planes(ui, pi),
                                 v, *g.planes(vi, pi),
                                 tract.boxes[p], ys, bits, grid, cfg))
        roots.append(_tree(g, "sum", (k,), leaves))
    key = g.task(g.key("solve"), _solve, g.seq([g.ref(r) for r in roots]), dict(support), ref, cfg)
    return g.graph(), key


def check_config(cfg: MatchConfig) -> None:
    """What can be checked of the global method before computing: the solver asked for is installed."""
    if cfg.method == "global":
        from .kernels.solve import check_solver

        check_solver(cfg.solver)


def solve(tract: Tract, cfg: MatchConfig, executor, timings: dict[str, float]) -> tuple[Solution, dict, dict]:
    """The global method's stages A and B: the reference (given or chosen as
    the reference method chooses it), every visit's model, every warp's usable
    count, the pair table and the solve's figures; the reference-choice
    criteria per visit; every warp's notes (:func:`bgdask.stages.read_notes`)."""
    from .matching import check_reference
    from .reference import choose_reference
    from .table import pair_table

    check_config(cfg)
    grid, _ = _common(tract, cfg)
    criteria_wanted = cfg.ref_visit is None
    if not criteria_wanted:
        check_reference(cfg, tract.visits)
    t0 = time.perf_counter()
    graph, keys, order = graph_coverage(tract, cfg, criteria_wanted)
    results = executor.compute(graph, keys, "stage A: coverage")
    counted, finite, crits = {}, {}, {}
    pixels, notes = read_notes([read for _, _, _, read in results])
    for v, (crit, N, F, read) in zip(order, results):
        if crit is not None:
            crits[v] = crit
        if any(n > 0 for _, n in read.usable_pixels):
            counted[v], finite[v] = N, F
    if criteria_wanted:
        ref, criteria = choose_reference(crits, cfg)
    else:
        ref, criteria = cfg.ref_visit, {}
    timings["stage A"] = time.perf_counter() - t0
    if ref not in counted:
        raise ModelError(f"the reference visit {ref} has no usable pixel (all NaN or under bad mask planes)")
    pairs = choose_pairs(tract, counted, cfg, ref)

    t0 = time.perf_counter()
    graph, key = graph_pairs(tract, cfg, ref, pairs, {v: f > 0 for v, f in finite.items()})
    (gsol,) = executor.compute(graph, [key], f"stage B: {len(pairs)} pairs, solve")
    timings["stage B"] = time.perf_counter() - t0
    info = gsol.info
    timings["global solve"] = info.t_build + info.t_factor + info.t_solve
    models = models_of(gsol, tract.visits, grid)
    skipped = sorted(v for v, m in models.items() if m.status == "skipped")
    if skipped:
        warnings.warn(f"visit(s) {', '.join(map(str, skipped))} share no chain of overlapping visits with the "
                      f"reference visit {ref}: left unmatched (on_no_overlap: skip)", SkippedVisitWarning,
                      stacklevel=3)
    sol = Solution(ref, models, pixels, pairs=pair_table(gsol.pair_table),
                   solve_info=solve_info_attrs(gsol, len(pairs)))
    return sol, criteria, notes


def models_of(gsol, visits, grid) -> dict[int, bg.VisitModel]:
    """Every visit's :class:`~bgdask.background.VisitModel` from the solve:
    its grid, and its figures over the superpixels where it has pair
    equations; visits that were not solved for are ``empty``."""
    out = {}
    for v in visits:
        if v not in gsol.grids:
            out[v] = bg.VisitModel.zero(v, grid, "empty")
            continue
        row = gsol.visit_table[v]
        model = gsol.grids[v]
        seen = gsol.observed.get(v, np.zeros(grid, bool))
        m = model[seen] if gsol.status[v] == "matched" else np.zeros(0)
        out[v] = bg.VisitModel.of(
            v, model, m, int(row["n_good"]), float(row["resid_rms"]) if gsol.status[v] == "matched" else 0.0,
            status=gsol.status[v], n_partners=int(row["n_partners"]), resid_rms=float(row["resid_rms"]),
            expected_rms=float(row["expected_rms"]), n_unknowns=int(row["n_unknowns"]))
    return out


#: The solve's figures kept in the store (attribute ``global_solve``): all of
#: them are results (equal on every scheduler); its times go to ``stage_times``.
SOLVE_FIGURES = ("n_unknowns", "n_data_rows", "n_smooth_rows", "nnz_normal", "nnz_factor", "factor_bytes",
                 "solver", "refinements", "residual", "median_weight", "blas_pinned")


def solve_info_attrs(gsol, n_pairs: int) -> dict[str, Any]:
    """The solve's size and accuracy (:class:`~bgdask.kernels.solve.SolveInfo`) as plain values."""
    info = gsol.info
    out: dict[str, Any] = {"n_pairs": int(n_pairs),
                           "n_pairs_used": int(sum(1 for r in gsol.pair_table.values() if r["n_overlap"] > 0))}
    for name in SOLVE_FIGURES:
        value = getattr(info, name)
        out[name] = value if isinstance(value, (str, bool)) else (int(value) if isinstance(value, (int, np.integer))
                                                                   else float(value))
    return out
