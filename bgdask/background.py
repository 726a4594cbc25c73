"""Accumulators, stats images, difference models and offset images.

Steps 1, 2, 4, 5 and 6 of the method (docs/algorithm.md) as functions of
NumPy arrays and a :class:`~bgdask.config.MatchConfig`. No Dask and no I/O
here: the stages of a match (:mod:`bgdask.stages`) map these functions over
the warps, whichever scheduler runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import numpy as np

from .config import MatchConfig
from .errors import ModelError
from .geometry import Box, coarse_cells, coarse_centers, superpixel_centers
from .kernels.interp import (
    UndersampledError,
    fill_gaps,
    linear_resample,
    separable_interpolate,
    smooth_gappy,
)
from .kernels.stats import SuperpixelBlock, superpixel_stats

__all__ = [
    "Accumulator",
    "StatsImage",
    "VisitModel",
    "tree_reduce",
    "image_stats",
    "difference_stats",
    "stats_image",
    "difference_model",
    "coarse_offsets",
    "offset_rows",
    "apply_offset",
    "Partial",
    "warp_partial",
    "difference_partial",
    "usable_partial",
    "visit_model",
    "warp_coarse",
    "matched_rows",
]

T = TypeVar("T")


# -- step 1: accumulation ---------------------------------------------------

@dataclass(frozen=True)
class Accumulator:
    """Sums over a region of the tract's superpixel grid: S = mean * N, N,
    V = var * N, for superpixels [iy0, iy0 + ny) x [ix0, ix0 + nx).

    Cells outside the region are zero, so one warp's accumulator stays
    small; adding two covers the union of their regions. Addition is
    element-wise, so the sum of any tree of accumulators equals the dense
    sum bit for bit when the tree is the same.
    """

    S: np.ndarray
    N: np.ndarray
    V: np.ndarray
    iy0: int = 0
    ix0: int = 0

    @classmethod
    def from_block(cls, block: SuperpixelBlock) -> "Accumulator":
        return cls(block.S, block.N, block.V, int(block.iy0), int(block.ix0))

    @property
    def shape(self) -> tuple[int, int]:
        return self.N.shape

    def __add__(self, other: "Accumulator") -> "Accumulator":
        if other.N.size == 0:
            return self
        if self.N.size == 0:
            return other
        iy0, ix0 = min(self.iy0, other.iy0), min(self.ix0, other.ix0)
        iy1 = max(self.iy0 + self.shape[0], other.iy0 + other.shape[0])
        ix1 = max(self.ix0 + self.shape[1], other.ix0 + other.shape[1])
        if (self.iy0, self.ix0, self.shape) == (other.iy0, other.ix0, other.shape):
            return Accumulator(self.S + other.S, self.N + other.N, self.V + other.V, iy0, ix0)
        shape = (iy1 - iy0, ix1 - ix0)
        planes = []
        for name in ("S", "N", "V"):
            out = np.zeros(shape)
            for acc in (self, other):
                sl = (slice(acc.iy0 - iy0, acc.iy0 - iy0 + acc.shape[0]),
                      slice(acc.ix0 - ix0, acc.ix0 - ix0 + acc.shape[1]))
                out[sl] += getattr(acc, name)
            planes.append(out)
        return Accumulator(*planes, iy0, ix0)

    def dense(self, grid_shape: tuple[int, int]) -> "Accumulator":
        """This accumulator on the whole superpixel grid."""
        planes = []
        for name in ("S", "N", "V"):
            out = np.zeros(grid_shape)
            out[self.iy0:self.iy0 + self.shape[0], self.ix0:self.ix0 + self.shape[1]] = getattr(self, name)
            planes.append(out)
        return Accumulator(*planes)


def tree_reduce(items: Sequence[T], combine: Callable[[T, T], T]) -> T:
    """Combine ``items`` pairwise in a fixed binary tree.

    The tree depends only on ``len(items)``, so sums are bitwise the same
    whichever scheduler evaluates ``combine`` (it may return Dask delayed
    objects)."""
    items = list(items)
    if not items:
        raise ValueError("nothing to reduce")
    while len(items) > 1:
        paired = [combine(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)]
        if len(items) % 2:
            paired.append(items[-1])
        items = paired
    return items[0]


def _kernel_args(cfg: MatchConfig) -> dict:
    return dict(
        window_scale=cfg.window_scale,
        statistic=cfg.grid_statistic,
        num_sigma_clip=cfg.num_sigma_clip,
        num_iter=cfg.num_iter,
    )


def image_stats(image, bad, box: Box, grid_shape, cfg: MatchConfig) -> Accumulator:
    """Step 1 for one image (a warp) as a tract accumulator."""
    block = superpixel_stats(
        image, bad, box.x0, box.y0, grid_shape, cfg.x_bin, cfg.y_bin, **_kernel_args(cfg)
    )
    return Accumulator.from_block(block)


def difference_stats(ref_image, ref_bad, image, bad, box: Box, grid_shape, cfg: MatchConfig) -> Accumulator:
    """Step 4 for one patch: statistics of ``ref - image``, masked where
    either is bad or not finite."""
    diff = ref_image.astype(np.float64) - image.astype(np.float64)
    return image_stats(diff, ref_bad | bad, box, grid_shape, cfg)


# -- step 2: stats image ------------------------------------------------------

@dataclass(frozen=True)
class StatsImage:
    """The filled stats image of an accumulator and what it was made from."""

    values: np.ndarray     # filled model, (ny, nx)
    binned: np.ndarray     # S / N (NaN where N == 0)
    good: np.ndarray       # N >= threshold and finite
    variance: np.ndarray   # V / N (NaN where N == 0)

    @property
    def n_good(self) -> int:
        return int(self.good.sum())


def stats_image(acc: Accumulator, grid_shape, cfg: MatchConfig, label: str) -> StatsImage:
    """Step 2: S / N on the tract's superpixel grid with bad superpixels
    filled; ``label`` names the visit in errors."""
    acc = acc.dense(grid_shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        binned = acc.S / acc.N
        variance = acc.V / acc.N
    good = (acc.N >= cfg.good_pixel_threshold) & (acc.N > 0) & np.isfinite(binned)
    if not good.any():
        raise ModelError(f"{label}: no good superpixel (every superpixel has fewer than "
                         f"{cfg.good_pixel_threshold:g} usable pixels)")
    values = np.where(good, binned, np.nan)
    defined = good
    if cfg.do_smooth:
        values, defined = smooth_gappy(values, good, cfg.smooth_scale)
    ny, nx = acc.shape
    xc = superpixel_centers(nx, cfg.x_bin)
    yc = superpixel_centers(ny, cfg.y_bin)
    try:
        filled = fill_gaps(values, defined, xc, yc, cfg.interpolation, cfg.extrapolation,
                           cfg.undersample_style == "REDUCE_INTERP_ORDER")
    except UndersampledError as exc:
        raise ModelError(f"{label}: {exc} (undersample_style THROW_EXCEPTION)") from None
    return StatsImage(values=filled, binned=binned, good=good, variance=variance)


# -- step 5: difference model -------------------------------------------------

@dataclass(frozen=True)
class VisitModel:
    """A visit's superpixel difference model and its figures (step 5)."""

    visit: int
    model: np.ndarray       # (ny, nx) superpixel model; zeros for the reference
    n_good: int
    model_mean: float
    model_rms: float
    fit_rms: float
    status: str = "matched"  # matched | reference | skipped | empty

    @classmethod
    def zero(cls, visit: int, shape, status: str) -> "VisitModel":
        return cls(visit, np.zeros(shape), 0, 0.0, 0.0, 0.0, status)


def difference_model(
    acc: Accumulator, grid_shape, cfg: MatchConfig, visit: int, has_data: bool = True
) -> VisitModel:
    """The model of ``visit`` from its difference accumulator.

    A visit with no good superpixel in common with the reference is
    ``empty`` (zero model) when it has no usable pixel on the shared patches
    (``has_data`` False); otherwise it raises a ModelError naming it, or with
    ``on_no_overlap: skip`` it is ``skipped`` (zero model, left unmatched).

    The figures are over the good superpixels (where the visit overlaps the
    reference): mean and RMS (root mean square) of the model, and RMS of
    binned difference minus model.
    """
    label = f"visit {visit}"
    if not (acc.N >= cfg.good_pixel_threshold).any():
        if not has_data:
            return VisitModel.zero(visit, grid_shape, "empty")
        if cfg.on_no_overlap == "skip":
            return VisitModel.zero(visit, grid_shape, "skipped")
        raise ModelError(
            f"{label} shares no good superpixel with the reference visit; "
            "set on_no_overlap: skip to leave it unmatched"
        )
    st = stats_image(acc, grid_shape, cfg, label)
    m = st.values[st.good]
    resid = st.binned[st.good] - m
    return VisitModel(
        visit=visit,
        model=st.values,
        n_good=st.n_good,
        model_mean=float(np.mean(m)),
        model_rms=float(np.sqrt(np.mean(m * m))),
        fit_rms=float(np.sqrt(np.mean(resid * resid))),
    )


# -- step 6: offsets ------------------------------------------------------------

def coarse_offsets(model: np.ndarray, cfg: MatchConfig, kx: tuple[int, int], ky: tuple[int, int]) -> np.ndarray:
    """Step 6.1: the superpixel model sampled bilinearly at the centres of the
    tract-anchored coarse cells ``kx[0] <= k < kx[1]`` (and likewise ky).
    Outside the outermost superpixel centres the sampling extrapolates linearly."""
    ny, nx = model.shape
    xs = superpixel_centers(nx, cfg.x_bin)
    ys = superpixel_centers(ny, cfg.y_bin)
    xq = coarse_centers(kx[0], kx[1], cfg.binning)
    yq = coarse_centers(ky[0], ky[1], cfg.binning)
    along_x = linear_resample(model, xs, xq, axis=1)
    return linear_resample(along_x, ys, yq, axis=0)


def offset_rows(
    coarse: np.ndarray,
    kx0: int,
    ky0: int,
    box: Box,
    rows: slice,
    cfg: MatchConfig,
) -> np.ndarray:
    """Step 6.2: the offset at every pixel of rows ``rows`` (local to the
    box) of a warp, interpolated from its coarse cells ``coarse`` whose first
    cell is (ky0, kx0). Returns float64 (n_rows, box.width)."""
    cy, cx = coarse.shape
    xc = coarse_centers(kx0, kx0 + cx, cfg.binning)
    yc = coarse_centers(ky0, ky0 + cy, cfg.binning)
    xq = np.arange(box.x0, box.x1, dtype=np.float64)
    start, stop, _ = rows.indices(box.height)
    yq = np.arange(box.y0 + start, box.y0 + stop, dtype=np.float64)
    try:
        return separable_interpolate(
            coarse, xc, yc, xq, yq, cfg.interpolation, cfg.extrapolation,
            cfg.undersample_style == "REDUCE_INTERP_ORDER",
        )
    except UndersampledError as exc:
        raise ModelError(f"warp box {box}: {exc} (undersample_style THROW_EXCEPTION)") from None


def apply_offset(image: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The matched image: image + offset (computed in float64, in ``offset``'s
    buffer, which is consumed), as float32. NaN stays NaN."""
    np.add(offset, image, out=offset)     # float64, in place: no temporary
    return offset.astype(np.float32)


# -- what the stages map -------------------------------------------------------

@dataclass(frozen=True)
class Partial:
    """A (partial) sum over warps: the accumulator, and the number of usable
    pixels of every warp read on the way, as ((visit, patch), count) pairs;
    ``notes``: what reading the warps showed, as ((visit, patch), mask bits
    set without a name, pixels of zero or negative variance) triples."""

    acc: Accumulator
    usable_pixels: tuple[tuple[tuple[int, int], int], ...] = ()
    notes: tuple[tuple[tuple[int, int], int, int], ...] = ()

    def __add__(self, other: "Partial") -> "Partial":
        return Partial(self.acc + other.acc, self.usable_pixels + other.usable_pixels, self.notes + other.notes)

    def noted(self, *notes) -> "Partial":
        """This partial with ``notes`` added."""
        return Partial(self.acc, self.usable_pixels, self.notes + tuple(notes))


EMPTY = Accumulator(np.zeros((0, 0)), np.zeros((0, 0)), np.zeros((0, 0)))


def _usable(bad: np.ndarray) -> int:
    return int(np.count_nonzero(~bad))


def warp_partial(key, image, bad, box: Box, grid_shape, cfg: MatchConfig) -> Partial:
    """Step 1 of one warp (reference choice): its superpixel sums and usable count."""
    return Partial(image_stats(image, bad, box, grid_shape, cfg), ((key, _usable(bad)),))


def difference_partial(ref_key, ref_image, ref_bad, key, image, bad, box: Box, grid_shape,
                       cfg: MatchConfig) -> Partial:
    """Step 4 on one patch: superpixel sums of ref - warp, and both usable counts."""
    acc = difference_stats(ref_image, ref_bad, image, bad, box, grid_shape, cfg)
    return Partial(acc, ((key, _usable(bad)), (ref_key, _usable(ref_bad))))


def usable_partial(key, bad) -> Partial:
    """A warp no difference reads: only its usable pixel count."""
    return Partial(EMPTY, ((key, _usable(bad)),))


def visit_model(total: Partial, grid_shape, cfg: MatchConfig, visit: int) -> tuple["VisitModel", Partial]:
    """Step 5 of one visit from its summed differences, and what was read on
    the way (the usable counts and notes, without the accumulator)."""
    has_data = any(n > 0 for (v, _), n in total.usable_pixels if v == visit)
    return (difference_model(total.acc, grid_shape, cfg, visit, has_data=has_data),
            Partial(EMPTY, total.usable_pixels, total.notes))


def warp_coarse(model: "VisitModel", box: Box, cfg: MatchConfig, coarse_shape) -> tuple[np.ndarray, int, int]:
    """Step 6.1 of one warp: its coarse offset cells and their first cell (ky0, kx0)."""
    kx, ky = coarse_cells(box, cfg.binning, coarse_shape)
    if model.status != "matched":
        return np.zeros((ky[1] - ky[0], kx[1] - kx[0])), ky[0], kx[0]
    return coarse_offsets(model.model, cfg, kx, ky), ky[0], kx[0]


def matched_rows(image: np.ndarray, coarse, box: Box, rows: slice, apply: bool, cfg: MatchConfig) -> np.ndarray:
    """Step 6.2 on rows ``rows`` of one warp: image + offset, float32 (the
    image unchanged when ``apply`` is false)."""
    if not apply:
        return np.array(image, dtype=np.float32, copy=True)
    grid, ky0, kx0 = coarse
    return apply_offset(image, offset_rows(grid, kx0, ky0, box, rows, cfg))
