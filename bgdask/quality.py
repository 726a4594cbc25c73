"""Match quality: how well each visit matched, and where the seams are.

Step 7 of docs/algorithm.md, as functions of NumPy arrays (no Dask, no I/O).
Stage C (:mod:`bgdask.stages`) maps :func:`quality_partial` over the row
blocks it writes, adds the partials of a visit in a fixed binary tree, and
combines the visits' levels in a fixed binary tree over the visits, so the
numbers are bitwise the same on any scheduler.

Per visit, over the superpixels it shares with the reference (those with at
least ``min_frac * x_bin * y_bin`` counted pixels in both):

* ``match_rms``: RMS of the superpixel statistic (the configured one,
  ``MEANCLIP`` by default, windows as in step 1) of ``reference - matched
  visit``;
* ``match_noise``: RMS of what the variance planes alone predict for it,
  ``sqrt(sum(var_ref + var_visit) / n**2)`` over the window's ``n`` counted
  pixels (the standard error of a mean of the difference);
* ``match_ratio = match_rms / match_noise``: near 1 when the visit is matched
  to the noise; above ``max_match_ratio`` the visit is flagged.

Per superpixel of the tract, the seam map: the spread (RMS about the mean)
of the visits' levels (the superpixel statistic of each visit's own image)
across the visits that measure it, before and after matching.

Every tract pixel counts once: only each warp's inner box (the patches'
inner boxes tile the tract) is measured. Stage C works on row blocks; a
window cut by a block's edge is measured in pieces whose sums add, as a
window cut by a patch's edge is in step 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .background import EMPTY, Accumulator, image_stats
from .config import MatchConfig
from .geometry import Box
from .kernels.centroid import window_sums
from .table import SEAM_PLANES

__all__ = ["QualityPartial", "VisitQuality", "Spread", "inner_part", "quality_partial", "window_total",
           "visit_quality", "visit_levels", "seam_map", "SEAM_PLANES"]

@dataclass(frozen=True)
class QualityPartial:
    """Superpixel sums over some blocks of one visit's warps (:func:`quality_partial`)."""

    resid: Accumulator = EMPTY    # statistic of reference - matched (where both count)
    noise: Accumulator = EMPTY    # S: sum of var_ref + var_visit over the counted pixels, N: their number (window_total)
    after: Accumulator = EMPTY    # statistic of the matched image
    before: Accumulator = EMPTY   # statistic of the input image

    def __add__(self, other: "QualityPartial") -> "QualityPartial":
        return QualityPartial(self.resid + other.resid, self.noise + other.noise,
                              self.after + other.after, self.before + other.before)


def inner_part(box: Box, inner: Box, rows: slice) -> tuple[slice, slice, Box] | None:
    """The part of rows ``rows`` (local to the warp's ``box``) inside the
    patch's ``inner`` box: (row slice within ``rows``, column slice within the
    box, its tract box), or None when they do not meet."""
    start, stop, _ = rows.indices(box.height)
    part = Box(box.x0, box.y0 + start, box.width, stop - start).intersection(inner)
    if part is None:
        return None
    return (slice(part.y0 - box.y0 - start, part.y1 - box.y0 - start),
            slice(part.x0 - box.x0, part.x1 - box.x0), part)


def quality_partial(matched: np.ndarray, image: np.ndarray | None, bad: np.ndarray, variance: np.ndarray,
                    ref: tuple[np.ndarray, np.ndarray, np.ndarray] | None, box: Box, grid_shape,
                    cfg: MatchConfig) -> QualityPartial:
    """The quality sums of one block of one warp (all arrays on tract box ``box``).

    ``matched``, ``image``: the block after and before matching (``image``
    None: unchanged, as the reference's); ``bad``: its excluded pixels;
    ``variance``: its variance plane; ``ref``: the reference's (image, bad,
    variance) on the same box, or None (the reference itself, or a patch the
    reference lacks)."""
    after = image_stats(matched, bad, box, grid_shape, cfg)
    before = after if image is None else image_stats(image, bad, box, grid_shape, cfg)
    if ref is None:
        return QualityPartial(after=after, before=before)
    r_image, r_bad, r_var = ref
    both = r_bad | bad
    diff = np.subtract(r_image, matched, dtype=np.float64)     # exact in float64, one temporary
    resid = image_stats(diff, both, box, grid_shape, cfg)
    var = np.add(r_var, variance, dtype=np.float64)
    return QualityPartial(resid, window_total(var, both, box, grid_shape, cfg), after, before)


def window_total(values: np.ndarray, bad: np.ndarray, box: Box, grid_shape, cfg: MatchConfig) -> Accumulator:
    """Per superpixel window (as in step 1) over the counted values (finite,
    not ``bad``): ``S``, their sum, and ``N``, their number (``V`` zero)."""
    ws = window_sums(values, bad, box.x0, box.y0, grid_shape, cfg.x_bin, cfg.y_bin,
                     window_scale=cfg.window_scale, plane=values)
    return Accumulator(ws.SP, ws.N, np.zeros_like(ws.N), int(ws.iy0), int(ws.ix0))


@dataclass(frozen=True)
class VisitQuality:
    """One visit's residual against the reference after matching."""

    visit: int
    match_rms: float
    match_noise: float
    n_superpixels: int

    @property
    def match_ratio(self) -> float:
        if not (self.match_noise > 0):
            return float("nan")
        return self.match_rms / self.match_noise


def visit_quality(total: QualityPartial, grid_shape, cfg: MatchConfig, visit: int) -> VisitQuality:
    """``match_rms`` and ``match_noise`` of a visit from the sum of its partials,
    over the superpixels good in the residual (NaN without any)."""
    r = total.resid.dense(grid_shape)
    q = total.noise.dense(grid_shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = r.S / r.N
        expected = q.S / (q.N * q.N)
    use = ((r.N >= cfg.good_pixel_threshold) & (r.N > 0) & (q.N > 0)
           & np.isfinite(value) & np.isfinite(expected))
    n = int(use.sum())
    if n == 0:
        return VisitQuality(visit, float("nan"), float("nan"), 0)
    v = value[use]
    return VisitQuality(visit, float(np.sqrt(np.mean(v * v))), float(np.sqrt(np.mean(expected[use]))), n)


@dataclass(frozen=True)
class Spread:
    """Per superpixel, for each plane of :data:`SEAM_PLANES`: how many visits
    measured a level there (``n``), their mean and the sum of squared
    deviations from it (``m2``). Adding two combines them exactly (Chan et
    al.'s pairwise update), so a fixed tree over the visits gives the same
    bits on any scheduler."""

    n: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    def __add__(self, other: "Spread") -> "Spread":
        n = self.n + other.n
        delta = other.mean - self.mean
        with np.errstate(invalid="ignore", divide="ignore"):
            w = np.where(n > 0, other.n / n, 0.0)
            mean = self.mean + delta * w
            m2 = self.m2 + other.m2 + np.where(n > 0, delta * delta * self.n * w, 0.0)
        return Spread(n, mean, m2)


def visit_levels(total: QualityPartial, grid_shape, cfg: MatchConfig) -> Spread:
    """One visit's levels (its superpixel statistic where good) before and
    after matching, as a :class:`Spread` of one visit."""
    n, mean = [], []
    for acc in (total.before, total.after):
        a = acc.dense(grid_shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            level = a.S / a.N
        good = (a.N >= cfg.good_pixel_threshold) & (a.N > 0) & np.isfinite(level)
        n.append(good.astype(np.float64))
        mean.append(np.where(good, level, 0.0))
    n, mean = np.stack(n), np.stack(mean)
    return Spread(n, mean, np.zeros_like(mean))


def seam_map(spread: Spread) -> np.ndarray:
    """The seam map (len(SEAM_PLANES), ny, nx): the RMS about the mean of
    the visits' levels, where at least two visits measure one (NaN elsewhere)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(spread.n >= 2, np.sqrt(spread.m2 / spread.n), np.nan)
