"""A serial, in-memory prototype of both matching methods, with centre or
centroid placement, and the measures that compare them (not a benchmark itself).

Everything is driven from bgdask's pure functions: the statistics
(:func:`bgdask.background.difference_stats`), the stats image and its gap
filling (:func:`bgdask.background.stats_image`), the coarse offsets and the
per-pixel interpolation (:func:`bgdask.background.coarse_offsets`,
:func:`bgdask.background.offset_rows`), and the new kernels
(:mod:`bgdask.kernels.centroid`, :mod:`bgdask.kernels.solve`). The Dask
pipeline will map the same functions per (pair, patch); here they run in a
loop. ``benchmarks/bench_global.py``, ``benchmarks/bench_centroid.py`` and
``tests/test_global_proto.py`` use it.

Measures (all on the patches' inner boxes, so no pixel counts twice):

* **seam** of visits u, v at a pixel both have data (finite image):
  ``(sky_u + offset_u) - (sky_v + offset_v)`` with the injected skies: what a
  coadd of the matched warps feels, free of pixel noise. Its RMS per pair,
  over the pixels where the reference has data ("inside") and where it has
  none ("outside").
* **noise floor** of a pair: the standard error of one superpixel mean of
  the difference u - v from the variance planes,
  ``sqrt(median over the pair's good superpixels of sum(var_u + var_v) / N**2)``
  (sum over the window's counted pixels).
* **offset error**: ``offset_v - (sky_ref - sky_v)`` over every non-reference
  visit's pixels with data, inside and outside the reference's footprint.
  Outside, the data cannot see the reference's sky: the global method's
  offsets there are relative (visits agree with each other).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from bgdask.background import (
    Accumulator,
    coarse_cells,
    coarse_offsets,
    difference_stats,
    image_stats,
    offset_rows,
    stats_image,
)
from bgdask.config import MatchConfig
from bgdask.errors import ModelError
from bgdask.geometry import coarse_shape, superpixel_centers, superpixel_shape
from bgdask.kernels.centroid import centroids, window_sums
from bgdask.kernels.solve import (
    DEFAULT_SMOOTHNESS,
    MARGIN,
    MAX_PARTNERS,
    PairData,
    pair_overlaps,
    select_pairs,
    solve_global,
)
from bgdask.kernels.stats import bad_pixels
from bgdask.masks import plane_bits
from bgdask.reference import choose_reference, reference_criteria


# -- inputs ----------------------------------------------------------------------

@dataclass
class Tract:
    """A simulated tract's warps as arrays: image (float64), bad, variance, box."""

    sim: object
    cfg: MatchConfig
    grid: tuple[int, int]
    warps: dict = field(default_factory=dict)   # (v, p) -> (image, bad, var, box)

    @classmethod
    def from_sim(cls, sim, cfg: MatchConfig | None = None) -> "Tract":
        cfg = cfg or MatchConfig()
        sm = sim.skymap
        t = cls(sim, cfg, superpixel_shape(sm.width, sm.height, cfg.x_bin, cfg.y_bin))
        for (v, p), w in sorted(sim.warps.items()):
            bad = bad_pixels(w.mask, plane_bits(w.mask_planes, cfg.bad_mask_planes), w.image)
            t.warps[(v, p)] = (w.image, bad, w.variance, w.box)
        return t

    @property
    def visits(self) -> list[int]:
        return sorted({v for v, _ in self.warps})

    def patches(self, v) -> list[int]:
        return sorted(p for vv, p in self.warps if vv == v)


def _add(grid, block, name, iy0, ix0):
    a = getattr(block, name) if not isinstance(block, np.ndarray) else block
    grid[iy0:iy0 + a.shape[0], ix0:ix0 + a.shape[1]] += a


def pair_stats(t: Tract, u: int, v: int, with_sums: bool = True) -> PairData:
    """Statistics of u - v summed over the patches both have, on the whole grid."""
    cfg = t.cfg
    S, N, V = (np.zeros(t.grid) for _ in range(3))
    SX, SY, SP = (np.zeros(t.grid) for _ in range(3))
    for p in t.patches(u):
        if (v, p) not in t.warps:
            continue
        iu, bu, vu, box = t.warps[(u, p)]
        iv, bv, vv, _ = t.warps[(v, p)]
        acc = difference_stats(iu, bu, iv, bv, box, t.grid, cfg)
        for name, g in (("S", S), ("N", N), ("V", V)):
            _add(g, acc, name, acc.iy0, acc.ix0)
        if with_sums:
            diff = iu.astype(np.float64) - iv.astype(np.float64)
            ws = window_sums(diff, bu | bv, box.x0, box.y0, t.grid, cfg.x_bin, cfg.y_bin,
                             window_scale=cfg.window_scale,
                             plane=vu.astype(np.float64) + vv.astype(np.float64))
            for name, g in (("SX", SX), ("SY", SY), ("SP", SP)):
                _add(g, ws, name, ws.iy0, ws.ix0)
    if not with_sums:
        return PairData(u, v, S, N, V)
    return PairData(u, v, S, N, V, SX, SY, SP)


def flipped(pd: PairData) -> PairData:
    """The statistics of v - u from those of u - v (the clipped mean is odd,
    the counts, variances and positions are the same)."""
    return PairData(pd.v, pd.u, -pd.S, pd.N, pd.V, pd.SX, pd.SY, pd.SP, pd.iy0, pd.ix0)


def visit_coverage(t: Tract) -> tuple[dict, dict]:
    """Per visit: counted pixels per window (N) and finite pixels (F), summed over warps."""
    counted, finite = {}, {}
    for (v, p), (img, bad, _, box) in t.warps.items():
        ws = window_sums(img, bad, box.x0, box.y0, t.grid, t.cfg.x_bin, t.cfg.y_bin,
                         window_scale=t.cfg.window_scale)
        for d, name in ((counted, "N"), (finite, "F")):
            g = d.setdefault(v, np.zeros(t.grid))
            _add(g, ws, name, ws.iy0, ws.ix0)
    return counted, finite


def choose_ref(t: Tract) -> int:
    """The reference as bgdask chooses it today (stage A)."""
    figs = {}
    for v in t.visits:
        acc = None
        for p in t.patches(v):
            img, bad, _, box = t.warps[(v, p)]
            a = image_stats(img, bad, box, t.grid, t.cfg)
            acc = a if acc is None else acc + a
        st = stats_image(acc, t.grid, t.cfg, f"visit {v}")
        figs[v] = reference_criteria(v, st, t.cfg)
    return choose_reference(figs, t.cfg)[0]


# -- the reference method ----------------------------------------------------------

def reference_models(t: Tract, ref: int, placement: str = "centre", recentre: str = "fit",
                     fit_smoothness: float = DEFAULT_SMOOTHNESS, pairs: dict | None = None, skip: bool = False
                     ) -> tuple[dict, dict]:
    """Rubin's method: per visit the stats image of ref - visit. With
    ``placement="centroid"`` the good values are first moved from their
    centroids to the nodes by ``recentre`` (:func:`bgdask.kernels.centroid.recentre_values`).
    A visit sharing no good superpixel with the reference raises, or with
    ``skip`` gets a zero model (listed in ``timings["unmatched"]``).
    Returns (models, timings)."""
    from bgdask.kernels.centroid import recentre_values

    cfg = t.cfg
    models, times = {ref: np.zeros(t.grid)}, {"stats": 0.0, "model": 0.0, "unmatched": []}
    for v in t.visits:
        if v == ref:
            continue
        t0 = time.perf_counter()
        if pairs is not None:
            pd = pairs[(ref, v)] if (ref, v) in pairs else flipped(pairs[(v, ref)])
        else:
            pd = pair_stats(t, ref, v, placement == "centroid")
        t1 = time.perf_counter()
        acc = Accumulator(pd.S, pd.N, pd.V)
        if not (pd.N >= cfg.good_pixel_threshold).any():
            if not skip:
                raise ModelError(f"visit {v} shares no good superpixel with the reference visit {ref}")
            models[v] = np.zeros(t.grid)          # on_no_overlap: skip
            times["unmatched"].append(v)
            continue
        if placement == "centroid":
            with np.errstate(invalid="ignore", divide="ignore"):
                binned = pd.S / pd.N
                var = pd.V / pd.N
            good = (pd.N >= cfg.good_pixel_threshold) & np.isfinite(binned)
            cx, cy = centroids(pd.SX, pd.SY, pd.N)
            moved = recentre_values(binned, good, cx, cy, cfg.x_bin, cfg.y_bin, method=recentre,
                                    weights=np.where(good & (var > 0), pd.N / np.where(var > 0, var, 1), 0.0),
                                    smoothness=fit_smoothness)
            acc = Accumulator(np.where(good, moved * pd.N, pd.S), pd.N, pd.V)
        models[v] = stats_image(acc, t.grid, cfg, f"visit {v}").values
        times["stats"] += t1 - t0
        times["model"] += time.perf_counter() - t1
    return models, times


# -- the global method ---------------------------------------------------------------

def global_models(t: Tract, ref: int, placement: str = "centroid", smoothness: float = DEFAULT_SMOOTHNESS,
                  max_partners: int = MAX_PARTNERS, margin: int = MARGIN, weighting: str = "inverse_variance",
                  solver: str = "auto", pairs: dict | None = None, on_disconnected: str = "raise"):
    """The global solve. Returns (models, solution, timings)."""
    cfg = t.cfg
    t0 = time.perf_counter()
    counted, finite = visit_coverage(t)
    cover = {v: counted[v] >= cfg.good_pixel_threshold for v in t.visits}
    chosen = select_pairs(pair_overlaps(cover), ref, max_partners)
    t1 = time.perf_counter()
    data = [pairs[k] if pairs is not None and k in pairs else pair_stats(t, *k) for k in chosen]
    t2 = time.perf_counter()
    sol = solve_global(data, {v: finite[v] > 0 for v in t.visits}, ref, cfg.x_bin, cfg.y_bin,
                       min_count=cfg.good_pixel_threshold, smoothness=smoothness, placement=placement,
                       weighting=weighting, margin=margin, solver=solver, on_disconnected=on_disconnected)
    t3 = time.perf_counter()
    return sol.grids, sol, {"coverage": t1 - t0, "stats": t2 - t1, "solve": t3 - t2, "n_pairs": len(chosen)}


# -- offsets and measures -----------------------------------------------------------

def offsets(t: Tract, models: dict) -> tuple[dict, float]:
    """Every warp's offset image (float64) from its visit's grid, as stage C makes it."""
    cfg = t.cfg
    sm = t.sim.skymap
    cs = coarse_shape(sm.width, sm.height, cfg.binning)
    out = {}
    t0 = time.perf_counter()
    for (v, p), (_, _, _, box) in t.warps.items():
        kx, ky = coarse_cells(box, cfg.binning, cs)
        coarse = coarse_offsets(models[v], cfg, kx, ky)
        out[(v, p)] = offset_rows(coarse, kx[0], ky[0], box, slice(None), cfg)
    return out, time.perf_counter() - t0


def pipeline_offsets(t: Tract, result) -> dict:
    """Every warp's offset image (float64) as the pipeline's stage C applies
    it, from a :class:`bgdask.MatchResult`'s models (its functions:
    :func:`bgdask.background.warp_coarse`, then :func:`offset_rows`); a warp
    stage C leaves unchanged gets 0."""
    from bgdask.background import warp_coarse

    cfg = result.config
    sm = t.sim.skymap
    cs = coarse_shape(sm.width, sm.height, cfg.binning)
    unusable = set(result.unusable)
    out = {}
    for (v, p), (_, _, _, box) in t.warps.items():
        model = result.models[v]
        if (v, p) in unusable or model.status != "matched":
            out[(v, p)] = np.zeros(box.shape)
            continue
        grid, ky0, kx0 = warp_coarse(model, box, cfg, cs)
        out[(v, p)] = offset_rows(grid, kx0, ky0, box, slice(None), cfg)
    return out


def _inner(t: Tract, v, p, arr):
    sm = t.sim.skymap
    inner, box = sm.inner_box(p), t.warps[(v, p)][3]
    return arr[inner.y0 - box.y0: inner.y1 - box.y0, inner.x0 - box.x0: inner.x1 - box.x0]


def pair_floor(t: Tract, u: int, v: int, pd: PairData | None = None) -> float:
    """The pair's noise floor from the variance planes (module docstring)."""
    pd = pd if pd is not None and pd.SP is not None else pair_stats(t, u, v)
    good = pd.N >= t.cfg.good_pixel_threshold
    if not good.any():
        return float("nan")
    return float(np.sqrt(np.median(pd.SP[good] / pd.N[good] ** 2)))


@dataclass
class Measures:
    seam_in: float
    seam_out: float
    worst_in: float        # max over pairs of seam RMS / floor, inside
    worst_out: float
    err_in: float
    err_out: float
    n_out_pixels: int
    pairs: dict            # (u, v) -> dict(seam_in, seam_out, floor, n_in, n_out)


def measure(t: Tract, ref: int, offs: dict, floors: dict | None = None, min_pixels: int = 2000) -> Measures:
    sim = t.sim
    sm = sim.skymap
    visits = t.visits
    sky, have = {}, {}
    for (v, p), (img, *_rest) in t.warps.items():
        inner = sm.inner_box(p)
        have[(v, p)] = np.isfinite(_inner(t, v, p, img))
        sky[(v, p)] = sim.truth_sky(v, inner) + _inner(t, v, p, offs[(v, p)])
    pairs = {}
    tot = {"in": [0.0, 0], "out": [0.0, 0]}
    for a in range(len(visits)):
        for b in range(a + 1, len(visits)):
            u, v = visits[a], visits[b]
            s = {"in": [0.0, 0], "out": [0.0, 0]}
            for p in sm.patches:
                if (u, p) not in have or (v, p) not in have:
                    continue
                both = have[(u, p)] & have[(v, p)]
                if not both.any():
                    continue
                refin = have[(ref, p)] if (ref, p) in have else np.zeros_like(both)
                d = sky[(u, p)] - sky[(v, p)]
                for key, m in (("in", both & refin), ("out", both & ~refin)):
                    s[key][0] += float(np.sum(d[m] ** 2))
                    s[key][1] += int(m.sum())
            if s["in"][1] + s["out"][1] == 0:
                continue
            row = {f"n_{k}": s[k][1] for k in s}
            for k in s:
                row[f"seam_{k}"] = float(np.sqrt(s[k][0] / s[k][1])) if s[k][1] else float("nan")
                tot[k][0] += s[k][0]
                tot[k][1] += s[k][1]
            pairs[(u, v)] = row
    if floors is None:
        floors = {k: pair_floor(t, *k) for k in pairs}
    worst = {}
    for k in ("in", "out"):
        ratios = [r[f"seam_{k}"] / floors[uv] for uv, r in pairs.items()
                  if r[f"n_{k}"] >= min_pixels and np.isfinite(floors.get(uv, np.nan))]
        worst[k] = max(ratios) if ratios else float("nan")
    for uv, r in pairs.items():
        r["floor"] = floors.get(uv, float("nan"))
    e = {"in": [0.0, 0], "out": [0.0, 0]}
    for (v, p) in t.warps:
        if v == ref:
            continue
        inner = sm.inner_box(p)
        err = _inner(t, v, p, offs[(v, p)]) - sim.truth_offset(ref, v, inner)
        m = have[(v, p)]
        refin = have[(ref, p)] if (ref, p) in have else np.zeros_like(m)
        for key, mm in (("in", m & refin), ("out", m & ~refin)):
            e[key][0] += float(np.sum(err[mm] ** 2))
            e[key][1] += int(mm.sum())
    rms = lambda a: float(np.sqrt(a[0] / a[1])) if a[1] else float("nan")  # noqa: E731
    return Measures(rms(tot["in"]), rms(tot["out"]), worst["in"], worst["out"], rms(e["in"]), rms(e["out"]),
                    e["out"][1], pairs)


def node_truth(t: Tract, ref: int, v: int) -> np.ndarray:
    """The true offset sky_ref - sky_v at the superpixel centres."""
    sm = t.sim.skymap
    ny, nx = t.grid
    xc = superpixel_centers(nx, t.cfg.x_bin)[None, :]
    yc = superpixel_centers(ny, t.cfg.y_bin)[:, None]
    return (t.sim.truth[ref].sky(xc, yc, sm.width, sm.height)
            - t.sim.truth[v].sky(xc, yc, sm.width, sm.height))
