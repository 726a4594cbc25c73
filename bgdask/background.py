"""Accumulators, stats images, difference models and offset images.

Steps 1, 2, 4, 5 and 6 of the method (docs/algorithm.md) as functions of
NumPy arrays and a :class:`~bgdask.config.MatchConfig`. No Dask and no I/O
here: the stages of a match (:mod:`bgdask.stages`) map these functions over
the warps, whichever scheduler runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence, TypeVar

import numpy as np

from .config import MatchConfig
from .errors import ModelError
from .geometry import Box, coarse_cells, coarse_centers, superpixel_centers
from .kernels.interp import (
    Separable,
    UndersampledError,
    fill_gaps,
    linear_resample,
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
    "difference_sums",
    "stats_image",
    "difference_model",
    "coarse_offsets",
    "offset_rows",
    "warp_offsets",
    "apply_offset",
    "Partial",
    "warp_partial",
    "difference_partial",
    "difference_partial_sums",
    "usable_partial",
    "visit_model",
    "cross_validated_rms",
    "overlap_bins",
    "extrapolated_fraction",
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

    Optionally (centroid placement, the global method's pairs) the same
    block carries the window sums of :func:`bgdask.kernels.centroid.window_sums`:
    ``SX``, ``SY`` (tract x and y of the counted pixels) and ``SP`` (the
    variance planes summed over them); they add like S, N and V.
    """

    S: np.ndarray
    N: np.ndarray
    V: np.ndarray
    iy0: int = 0
    ix0: int = 0
    SX: np.ndarray | None = None
    SY: np.ndarray | None = None
    SP: np.ndarray | None = None

    def _names(self) -> tuple[str, ...]:
        return ("S", "N", "V") + tuple(n for n in ("SX", "SY", "SP") if getattr(self, n) is not None)

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
        names = self._names()
        if names != other._names():
            raise ValueError(f"cannot add accumulators of planes {names} and {other._names()}")
        extra = names[3:]
        iy0, ix0 = min(self.iy0, other.iy0), min(self.ix0, other.ix0)
        iy1 = max(self.iy0 + self.shape[0], other.iy0 + other.shape[0])
        ix1 = max(self.ix0 + self.shape[1], other.ix0 + other.shape[1])
        if (self.iy0, self.ix0, self.shape) == (other.iy0, other.ix0, other.shape):
            return Accumulator(self.S + other.S, self.N + other.N, self.V + other.V, iy0, ix0,
                               **{n: getattr(self, n) + getattr(other, n) for n in extra})
        shape = (iy1 - iy0, ix1 - ix0)
        planes = {}
        for name in names:
            out = np.zeros(shape)
            for acc in (self, other):
                sl = (slice(acc.iy0 - iy0, acc.iy0 - iy0 + acc.shape[0]),
                      slice(acc.ix0 - ix0, acc.ix0 - ix0 + acc.shape[1]))
                out[sl] += getattr(acc, name)
            planes[name] = out
        return Accumulator(iy0=iy0, ix0=ix0, **planes)

    def dense(self, grid_shape: tuple[int, int]) -> "Accumulator":
        """This accumulator on the whole superpixel grid."""
        planes = {}
        for name in self._names():
            out = np.zeros(grid_shape)
            out[self.iy0:self.iy0 + self.shape[0], self.ix0:self.ix0 + self.shape[1]] = getattr(self, name)
            planes[name] = out
        return Accumulator(**planes)


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
    diff = np.subtract(ref_image, image, dtype=np.float64)    # exact in float64, one temporary
    return image_stats(diff, ref_bad | bad, box, grid_shape, cfg)


def difference_sums(ref_image, ref_bad, image, bad, box: Box, grid_shape, cfg: MatchConfig,
                    plane: np.ndarray | None = None) -> Accumulator:
    """:func:`difference_stats` of ``ref - image`` with the window sums of its
    counted pixels' positions (``SX``, ``SY``: centroid placement) and, with
    ``plane``, of ``plane`` over them (``SP``: e.g. the two variance planes summed)."""
    from .kernels.centroid import window_sums

    diff = np.subtract(ref_image, image, dtype=np.float64)
    either = ref_bad | bad
    acc = image_stats(diff, either, box, grid_shape, cfg)
    ws = window_sums(diff, either, box.x0, box.y0, grid_shape, cfg.x_bin, cfg.y_bin,
                     window_scale=cfg.window_scale, plane=plane)
    if (ws.iy0, ws.ix0, ws.N.shape) != (acc.iy0, acc.ix0, acc.shape):  # pragma: no cover - one geometry
        raise AssertionError("window sums and statistics cover different superpixel blocks")
    return Accumulator(acc.S, acc.N, acc.V, acc.iy0, acc.ix0, SX=ws.SX, SY=ws.SY, SP=ws.SP)


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
    filled = _filled(binned, good, cfg, label)
    return StatsImage(values=filled, binned=binned, good=good, variance=variance)


def _filled(binned: np.ndarray, good: np.ndarray, cfg: MatchConfig, label: str) -> np.ndarray:
    """Step 2 from the binned values: the ``good`` ones (smoothed with
    ``do_smooth``), the others filled by interpolation along rows, then columns."""
    values = np.where(good, binned, np.nan)
    defined = good
    if cfg.do_smooth:
        values, defined = smooth_gappy(values, good, cfg.smooth_scale)
    ny, nx = binned.shape
    xc = superpixel_centers(nx, cfg.x_bin)
    yc = superpixel_centers(ny, cfg.y_bin)
    try:
        return fill_gaps(values, defined, xc, yc, cfg.interpolation, cfg.extrapolation,
                         cfg.undersample_style == "REDUCE_INTERP_ORDER")
    except UndersampledError as exc:
        raise ModelError(f"{label}: {exc} (undersample_style THROW_EXCEPTION)") from None


# -- step 5: difference model -------------------------------------------------

@dataclass(frozen=True)
class VisitModel:
    """A visit's superpixel difference model and its figures (step 5)."""

    visit: int
    model: np.ndarray       # (ny, nx) superpixel model; zeros for the reference
    n_good: int
    model_mean: float
    model_rms: float
    fit_rms: float          # cross-validated: see cross_validated_rms
    status: str = "matched"  # matched | reference | skipped | empty
    # the global method's diagnostics (bgdask.table.COLUMNS); defaults for the reference method
    n_partners: int = 0
    resid_rms: float = float("nan")
    expected_rms: float = float("nan")
    n_unknowns: int = 0
    extrap_frac: float = float("nan")  # see extrapolated_fraction

    @classmethod
    def of(cls, visit: int, model: np.ndarray, values: np.ndarray, n_good: int, fit_rms: float,
           **figures) -> "VisitModel":
        """A visit's model with its mean and RMS over ``values`` (the model at
        its good superpixels; 0 without any) and the other ``figures``."""
        return cls(visit=visit, model=model, n_good=n_good,
                   model_mean=float(np.mean(values)) if values.size else 0.0,
                   model_rms=float(np.sqrt(np.mean(values * values))) if values.size else 0.0,
                   fit_rms=fit_rms, **figures)

    @classmethod
    def zero(cls, visit: int, shape, status: str) -> "VisitModel":
        return cls(visit, np.zeros(shape), 0, 0.0, 0.0, 0.0, status,
                   extrap_frac=0.0 if status == "reference" else float("nan"))


def difference_model(
    acc: Accumulator, grid_shape, cfg: MatchConfig, visit: int, has_data: bool = True,
    overlap: Accumulator | None = None,
) -> VisitModel:
    """The model of ``visit`` from its difference accumulator.

    A visit with no good superpixel in common with the reference is
    ``empty`` (zero model) when it has no usable pixel on the shared patches
    (``has_data`` False); otherwise it raises a ModelError naming it, or with
    ``on_no_overlap: skip`` it is ``skipped`` (zero model, left unmatched).

    The figures are over the good superpixels (where the visit overlaps the
    reference): mean and RMS (root mean square) of the model, and the
    cross-validated RMS of binned difference minus model
    (:func:`cross_validated_rms`); with ``overlap`` (:func:`overlap_bins`
    summed over its warps), the share of its pixels whose offset is
    extrapolated (:func:`extrapolated_fraction`).
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
    if acc.SX is not None and cfg.value_placement == "centroid":
        model = _centroid_model(acc, grid_shape, cfg, visit)
        return model if overlap is None else replace(model, extrap_frac=extrapolated_fraction(overlap, grid_shape, cfg))
    st = stats_image(acc, grid_shape, cfg, label)
    return VisitModel.of(visit, st.values, st.values[st.good], st.n_good, cross_validated_rms(st, cfg, label),
                         extrap_frac=float("nan") if overlap is None else extrapolated_fraction(overlap, grid_shape,
                                                                                                cfg))


#: The folds of :func:`cross_validated_rms`: superpixel (ix, iy) is in fold (ix + iy) % CV_FOLDS.
CV_FOLDS = 2


def cross_validated_rms(st: StatsImage, cfg: MatchConfig, label: str = "") -> float:
    """RMS over the good superpixels of (binned difference - the model made
    without them): the good superpixels are split into a checkerboard of
    :data:`CV_FOLDS` folds; each fold is predicted by step 2 from the others.

    Unlike the residual at the fitted superpixels (zero without smoothing:
    the model goes through them), it grows with noise and with structure the
    model cannot follow between superpixels. NaN when no fold can be
    predicted (too few good superpixels)."""
    ny, nx = st.good.shape
    fold = np.add.outer(np.arange(ny), np.arange(nx)) % CV_FOLDS
    resid = []
    for k in range(CV_FOLDS):
        held = st.good & (fold == k)
        train = st.good & ~held
        if not held.any() or not train.any():
            continue
        try:
            pred = _filled(st.binned, train, cfg, label)
        except ModelError:
            continue
        resid.append(st.binned[held] - pred[held])
    r = np.concatenate(resid) if resid else np.zeros(0)
    r = r[np.isfinite(r)]
    return float(np.sqrt(np.mean(r * r))) if r.size else float("nan")


def overlap_bins(bad: np.ndarray, ref_bad: np.ndarray | None, box: Box, inner: Box, grid_shape,
                 cfg: MatchConfig) -> Accumulator:
    """Per superpixel *bin* of one warp's inner box, its usable pixels
    (``N``) and those of them the reference has usable too (``S``; the
    reference lacks the patch when ``ref_bad`` is None). Pixel (x, y) is in
    bin (min(x // x_bin, nx - 1), min(y // y_bin, ny - 1)): the tract's last
    partial bins join the last superpixels. Inner boxes tile the tract, so
    summed over a visit's warps every pixel counts once."""
    part = box.intersection(inner)
    ny, nx = grid_shape
    if part is None or ny == 0 or nx == 0:
        return EMPTY
    from .kernels.pixels import bin_counts

    sl = (slice(part.y0 - box.y0, part.y1 - box.y0), slice(part.x0 - box.x0, part.x1 - box.x0))
    iy = np.minimum(np.arange(part.y0, part.y1) // cfg.y_bin, ny - 1)
    ix = np.minimum(np.arange(part.x0, part.x1) // cfg.x_bin, nx - 1)
    shape = (int(iy[-1] - iy[0]) + 1, int(ix[-1] - ix[0]) + 1)
    n, s = bin_counts(bad[sl], None if ref_bad is None else ref_bad[sl], iy - iy[0], ix - ix[0], shape)
    n = n.astype(np.float64)
    return Accumulator(s.astype(np.float64), n, np.zeros_like(n), int(iy[0]), int(ix[0]))


def extrapolated_fraction(bins: Accumulator, grid_shape, cfg: MatchConfig) -> float:
    """The share of a visit's usable pixels (``bins``: :func:`overlap_bins`
    summed over its warps) in superpixel bins where it shares fewer than
    ``min_frac * x_bin * y_bin`` usable pixels with the reference: there its
    offset is extrapolated from the overlap, not measured. NaN without pixels."""
    b = bins.dense(grid_shape)
    total = float(b.N.sum())
    if total == 0:
        return float("nan")
    return float(b.N[b.S < cfg.good_pixel_threshold].sum() / total)
def _centroid_model(acc: Accumulator, grid_shape, cfg: MatchConfig, visit: int) -> VisitModel:
    """The reference method with ``placement: centroid``: the good values of
    ref - visit, measured at their counted pixels' centroids, are moved to the
    nodes by a smoothing fit (:func:`bgdask.kernels.centroid.recentre_values`,
    weights N / var), then the stats image is made from them as usual.
    ``fit_rms`` is the RMS of the measured values minus the model read
    (bilinearly) at their centroids."""
    from .kernels.centroid import centroids, recentre_values
    from .kernels.solve import stencils

    dense = acc.dense(grid_shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        binned = dense.S / dense.N
        var = dense.V / dense.N
    good = (dense.N >= cfg.good_pixel_threshold) & (dense.N > 0) & np.isfinite(binned)
    cx, cy = centroids(dense.SX, dense.SY, dense.N)
    weights = np.where(good & (var > 0), dense.N / np.where(var > 0, var, 1.0), 0.0)
    moved = recentre_values(binned, good, cx, cy, cfg.x_bin, cfg.y_bin, method="fit", weights=weights,
                            smoothness=cfg.global_smoothness)
    recentred = Accumulator(np.where(good, moved * dense.N, dense.S), dense.N, dense.V)
    st = stats_image(recentred, grid_shape, cfg, f"visit {visit}")
    ok = good & np.isfinite(cx) & np.isfinite(cy)
    j, i, nodes, wts = stencils(ok, cfg.x_bin, cfg.y_bin, cx, cy)
    at_centroid = np.sum(np.where(nodes >= 0, st.values.ravel()[np.maximum(nodes, 0)] * wts, 0.0), axis=1)
    resid = binned[j, i] - at_centroid
    return VisitModel.of(visit, st.values, st.values[st.good], st.n_good,
                         float(np.sqrt(np.mean(resid * resid))) if resid.size else 0.0)


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
    return warp_offsets(coarse, kx0, ky0, box, cfg)(rows)


def warp_offsets(coarse: np.ndarray, kx0: int, ky0: int, box: Box, cfg: MatchConfig):
    """:func:`offset_rows` of one warp made ready for any of its rows: the
    interpolation along x and the interpolant along y are built once;
    ``warp_offsets(...)(rows)`` is ``offset_rows(..., rows, cfg)``, bit for bit."""
    cy, cx = coarse.shape
    xc = coarse_centers(kx0, kx0 + cx, cfg.binning)
    yc = coarse_centers(ky0, ky0 + cy, cfg.binning)
    xq = np.arange(box.x0, box.x1, dtype=np.float64)
    try:
        sep = Separable(coarse, xc, yc, xq, cfg.interpolation, cfg.extrapolation,
                        cfg.undersample_style == "REDUCE_INTERP_ORDER")
    except UndersampledError as exc:
        raise ModelError(f"warp box {box}: {exc} (undersample_style THROW_EXCEPTION)") from None

    def offsets(rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(box.height)
        return sep(np.arange(box.y0 + start, box.y0 + stop, dtype=np.float64))

    return offsets


def apply_offset(image: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The matched image: image + offset (computed in float64, in ``offset``'s
    buffer, which is consumed), as float32. NaN stays NaN."""
    np.add(offset, image, out=offset)     # float64, in place: no temporary
    return offset.astype(np.float32)


# -- what the stages map -------------------------------------------------------

EMPTY = Accumulator(np.zeros((0, 0)), np.zeros((0, 0)), np.zeros((0, 0)))


@dataclass(frozen=True)
class Partial:
    """A (partial) sum over warps: the accumulator, the number of usable
    pixels of every warp read on the way, as ((visit, patch), count) pairs,
    and (stage B) the visit's usable pixels and its overlap with the
    reference per superpixel bin (:func:`overlap_bins`)."""

    acc: Accumulator
    usable_pixels: tuple[tuple[tuple[int, int], int], ...] = ()
    overlap: Accumulator = EMPTY
    #: what reading the warps showed: ((visit, patch), mask bits set without
    #: a name, pixels of zero or negative variance) triples
    notes: tuple[tuple[tuple[int, int], int, int], ...] = ()

    def __add__(self, other: "Partial") -> "Partial":
        return Partial(self.acc + other.acc, self.usable_pixels + other.usable_pixels,
                       self.overlap + other.overlap, self.notes + other.notes)

    def noted(self, *notes) -> "Partial":
        """This partial with ``notes`` added."""
        return replace(self, notes=self.notes + tuple(notes))

    def read(self) -> "Partial":
        """What was read on the way: the usable counts and notes, without the sums."""
        return Partial(EMPTY, self.usable_pixels, notes=self.notes)


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


def difference_partial_sums(ref_key, ref_image, ref_bad, key, image, bad, box: Box, grid_shape,
                            cfg: MatchConfig) -> Partial:
    """:func:`difference_partial` with the window sums of the counted pixels'
    positions (the reference method with ``placement: centroid``)."""
    acc = difference_sums(ref_image, ref_bad, image, bad, box, grid_shape, cfg)
    return Partial(acc, ((key, _usable(bad)), (ref_key, _usable(ref_bad))))


def usable_partial(key, bad) -> Partial:
    """A warp no difference reads: only its usable pixel count."""
    return Partial(EMPTY, ((key, _usable(bad)),))


def visit_model(total: Partial, grid_shape, cfg: MatchConfig, visit: int) -> tuple["VisitModel", Partial]:
    """Step 5 of one visit from its summed differences, and what was read on
    the way (:meth:`Partial.read`)."""
    has_data = any(n > 0 for (v, _), n in total.usable_pixels if v == visit)
    return (difference_model(total.acc, grid_shape, cfg, visit, has_data=has_data, overlap=total.overlap),
            total.read())


def warp_coarse(model: "VisitModel", box: Box, cfg: MatchConfig, coarse_shape) -> tuple[np.ndarray, int, int]:
    """Step 6.1 of one warp: its coarse offset cells and their first cell (ky0, kx0)."""
    kx, ky = coarse_cells(box, cfg.binning, coarse_shape)
    if model.status != "matched":
        return np.zeros((ky[1] - ky[0], kx[1] - kx[0])), ky[0], kx[0]
    return coarse_offsets(model.model, cfg, kx, ky), ky[0], kx[0]


def matched_rows(image: np.ndarray, coarse, box: Box, rows: slice, apply: bool, cfg: MatchConfig,
                 offsets=None) -> np.ndarray:
    """Step 6.2 on rows ``rows`` of one warp: image + offset, float32 (the
    image unchanged when ``apply`` is false). ``offsets``: the warp's
    :func:`warp_offsets`, when several blocks of it are matched."""
    if not apply:
        return np.array(image, dtype=np.float32, copy=True)
    if offsets is None:
        grid, ky0, kx0 = coarse
        offsets = warp_offsets(grid, kx0, ky0, box, cfg)
    return apply_offset(image, offsets(rows))
