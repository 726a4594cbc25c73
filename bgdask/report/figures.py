"""Figures of a bgdask output store (``bgdask plot``, and the report's images).

Summary figures (from the store's table, models and seam map: no pixel is read):

``reference_choice`` (only when the reference was chosen, step 3 of docs/algorithm.md)
    ref_chi2, ref_variance, ref_coverage and the cost per visit, stacked by
    term (:func:`bgdask.reference.cost_terms`), the reference marked.
``seams``
    the seam map before and after matching (:mod:`bgdask.quality`), on one
    logarithmic colour scale.
``quality``
    per visit: ``match_ratio`` against the flag threshold, and ``extrap_frac``.
``thumbnails``
    every visit's difference model (the offset step 6.1 gives, over the whole
    tract) on one diverging colour scale, flagged visits outlined.

Detail figures of a visit (flagged visits, and those asked for; they read the
visit's warps, the reference's and the input warps, one row block at a time):

``diff_model_<visit>``
    the visit's difference model over the tract, on the thumbnails' scale,
    with its footprint, its overlap with the reference and its patches.
``mosaic_<visit>`` (not for the reference)
    binned mosaics (:mod:`bgdask.report.mosaic`): the visit before and after
    matching and the reference; binned ``reference - visit`` before (nJy, the
    thumbnails' scale) and after (in units of its noise from the variance
    planes), and the histogram of the latter against a unit Gaussian.

Colour maps are colour-blind safe (viridis, RdBu, grey; bar colours from
Okabe and Ito's palette), every map has a colour bar with its unit, and tract
axes are in pixels. Matplotlib is used through its Agg canvas only (no
pyplot, no display, the global backend is left alone); figures are
deterministic bytes.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import StoreError
from ..io.store import Store
from .mosaic import MAX_MOSAIC_BINS, InputWarps, MosaicGrid, VisitMosaic, rms, visit_mosaic

__all__ = ["FIGURE_SIZES", "THUMBNAIL_PIXELS", "Figure", "ReportData", "Thumbnail", "render_figures",
           "write_figures", "thumbnails", "detail_visits"]

#: Pixel size (width, height) of each kind of figure; the thumbnails figure
#: is this wide and as tall as its rows need.
FIGURE_SIZES = {
    "reference_choice": (1200, 800),
    "seams": (1400, 640),
    "quality": (1200, 560),
    "thumbnails": (1500, None),
    "colorbar": (700, 90),
    "diff_model": (800, 650),
    "mosaic": (1500, 900),
}
DPI = 100
#: The longer side of a visit's thumbnail, in image pixels.
THUMBNAIL_PIXELS = 96
#: The after-matching residual maps span this many standard errors each way.
SIGMA_RANGE = 5.0

# Okabe and Ito's colour-blind-safe palette
VISIT_COLOUR = "#0072B2"   # blue
FLAG_COLOUR = "#D55E00"    # vermillion
REF_COLOUR = "#000000"     # black
OTHER_COLOUR = "#999999"
DIVERGING = "RdBu_r"
SEQUENTIAL = "viridis"
#: How a map shows "no value" (outside a visit's patches, no seam measured).
NO_VALUE = "#bdbdbd"


@dataclass
class Figure:
    """One rendered figure: its file stem, kind, title, alt text, caption, PNG bytes and size."""

    name: str
    kind: str
    title: str
    alt: str
    caption: str
    png: bytes
    width: int = 0
    height: int = 0

    @property
    def filename(self) -> str:
        return f"{self.name}.png"


@dataclass
class Thumbnail:
    """One visit's difference model as a small PNG (the report's thumbnail grid)."""

    visit: int
    png: bytes
    width: int
    height: int
    status: str
    flagged: bool
    match_ratio: float


# -- what the figures read -------------------------------------------------------------

@dataclass
class ReportData:
    """What the figures and the page need from a store, read once through
    :class:`~bgdask.io.store.Store` (small arrays only)."""

    store: Store
    table: object = field(repr=False)          # pandas DataFrame (bgdask.table)

    @classmethod
    def open(cls, path) -> "ReportData":
        st = Store.open(path)
        return cls(st, st.table())

    @property
    def ready(self) -> bool:
        return self.store.models_done and self.store.reference_visit is not None

    def require_models(self) -> None:
        if not self.ready:
            raise StoreError(f"{self.store.path}: the models are not computed yet; nothing to plot "
                             "(finish the run with bgdask match ... --resume)")

    @cached_property
    def config(self):
        return self.store.config

    @cached_property
    def skymap(self):
        return self.store.skymap

    @property
    def reference(self) -> int | None:
        return self.store.reference_visit

    @property
    def visits(self) -> list[int]:
        return self.store.visits

    @cached_property
    def models(self) -> dict:
        return self.store.models()

    @cached_property
    def seam(self) -> dict[str, np.ndarray] | None:
        seam = self.store.seam()
        if seam is None or not any(np.isfinite(a).any() for a in seam.values()):
            return None
        return seam

    @property
    def ref_given(self) -> bool:
        return self.config.ref_visit is not None

    @property
    def ref_chosen(self) -> bool:
        """Whether the reference was chosen by cost (its figures are in the table)."""
        return (not self.ref_given and "ref_cost" in self.table
                and bool(np.isfinite(np.asarray(self.table["ref_cost"], dtype=float)).any()))

    @cached_property
    def flagged(self) -> list[int]:
        from ..table import flagged_visits

        return flagged_visits(self.table)

    @property
    def tract_shape(self) -> tuple[int, int]:
        return self.skymap.height, self.skymap.width

    def status(self, visit: int) -> str:
        return str(self.table.loc[visit, "status"])

    def value(self, name: str, visit: int):
        return self.table.loc[visit, name]

    @cached_property
    def model_limit(self) -> float:
        """The one symmetric colour limit of every visit's difference model:
        the 99th percentile of |model| over the visits' patches."""
        vals = [np.abs(r[np.isfinite(r)]) for r in self.rasters.values()]
        vals = np.concatenate(vals) if vals else np.zeros(0)
        lim = float(np.percentile(vals, 99)) if vals.size else 0.0
        return lim if lim > 0 else 1.0

    @cached_property
    def raster_grid(self) -> MosaicGrid:
        h, w = self.tract_shape
        return MosaicGrid.for_tract(h, w, THUMBNAIL_PIXELS)

    @cached_property
    def rasters(self) -> dict[int, np.ndarray]:
        """Every visit's model sampled on :attr:`raster_grid`, NaN outside its patches."""
        return {v: model_raster(self, v, self.raster_grid, patches_only=True) for v in self.visits}


def model_raster(data: ReportData, visit: int, grid: MosaicGrid, patches_only: bool = False) -> np.ndarray:
    """The offset a visit's model gives (step 6.1: bilinear between superpixel
    centres, linear beyond the outermost ones) at the centres of ``grid``'s
    bins, over the whole tract; with ``patches_only``, NaN outside the inner
    boxes of the patches the visit has warps on."""
    from ..geometry import superpixel_centers
    from ..kernels.interp import linear_resample

    cfg = data.config
    model = np.asarray(data.models[visit].model, dtype=np.float64)
    ny, nx = model.shape
    xq, yq = grid.centres()
    out = linear_resample(linear_resample(model, superpixel_centers(nx, cfg.x_bin), xq, axis=1),
                          superpixel_centers(ny, cfg.y_bin), yq, axis=0)
    if patches_only:
        inside = np.zeros(out.shape, dtype=bool)
        vi = data.visits.index(visit)
        for pi, p in enumerate(data.store.patches):
            if data.store.present[vi, pi]:
                b = data.skymap.inner_box(p)
                inside |= (((yq >= b.y0 - 0.5) & (yq < b.y1 - 0.5))[:, None]
                           & ((xq >= b.x0 - 0.5) & (xq < b.x1 - 0.5))[None, :])
        out = np.where(inside, out, np.nan)
    return out


def detail_visits(data: ReportData, visits: Sequence[int] | None = None) -> list[int]:
    """The visits given detail figures: the flagged ones and ``visits``, in
    the store's order; an unknown visit is an error naming it."""
    asked = set(int(v) for v in (visits or ()))
    unknown = sorted(asked - set(data.visits))
    if unknown:
        raise StoreError(f"{data.store.path}: no visit {', '.join(map(str, unknown))} in the store "
                         f"(visits {data.visits[0]} .. {data.visits[-1]})")
    return [v for v in data.visits if v in asked or v in data.flagged]


# -- drawing helpers ------------------------------------------------------------------

def _new_figure(kind: str, height: int | None = None):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    w, h = FIGURE_SIZES[kind]
    fig = MplFigure(figsize=(w / DPI, (height or h) / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> tuple[bytes, int, int]:
    buf = io.BytesIO()
    # No bbox_inches="tight": the size must stay the one asked for.
    # No Software/date metadata: the same store gives the same bytes.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    w, h = fig.canvas.get_width_height()
    return buf.getvalue(), int(w), int(h)


def _figure(name, kind, title, alt, caption, fig) -> Figure:
    png, w, h = _png(fig)
    return Figure(name, kind, title, alt, caption, png, w, h)


def _cmap(name: str):
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad=NO_VALUE)


def _note(ax, text: str, **kw) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", wrap=True,
            fontsize=kw.pop("fontsize", 10), color=kw.pop("color", "0.3"), **kw)


def _tract_axes(ax, data: ReportData, title: str) -> None:
    h, w = data.tract_shape
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(-0.5, h - 0.5)
    ax.set_aspect("equal")
    ax.set_xlabel("tract x [pixel]")
    ax.set_ylabel("tract y [pixel]")
    ax.set_title(title, fontsize=10)


def _superpixel_edges(data: ReportData, shape) -> tuple[np.ndarray, np.ndarray]:
    """Edges of the superpixel grid's cells in tract pixels, the last row and
    column reaching the tract's edge (the pixels beyond the last whole bin
    are nearest to the last superpixels)."""
    ny, nx = shape
    h, w = data.tract_shape
    xe = np.arange(nx + 1) * data.config.x_bin - 0.5
    ye = np.arange(ny + 1) * data.config.y_bin - 0.5
    xe[-1], ye[-1] = w - 0.5, h - 0.5
    return xe, ye


def _patch_boxes(ax, data: ReportData, visit: int, **kw) -> None:
    from matplotlib.patches import Rectangle

    vi = data.visits.index(visit)
    for pi, p in enumerate(data.store.patches):
        if data.store.present[vi, pi]:
            b = data.skymap.inner_box(p)
            ax.add_patch(Rectangle((b.x0 - 0.5, b.y0 - 0.5), b.width, b.height, fill=False, **kw))


#: Gaps narrower than this (tract pixels), such as chip gaps, are closed in outlines.
OUTLINE_GAP = 64


def _outline(grid: MosaicGrid, frac: np.ndarray | None) -> np.ndarray | None:
    """The footprint of a coverage fraction as a 0/1 image: bins at least half
    covered, with gaps narrower than :data:`OUTLINE_GAP` (chip gaps) and holes closed."""
    if frac is None:
        return None
    from scipy import ndimage

    inside = frac >= 0.5
    k = max(1, math.ceil(OUTLINE_GAP / 2 / grid.factor))
    padded = np.pad(inside, k, mode="edge")
    closed = ndimage.binary_closing(padded, structure=np.ones((3, 3), bool), iterations=k)[k:-k, k:-k]
    return ndimage.binary_fill_holes(closed | inside).astype(np.float64)


def _contour(ax, grid: MosaicGrid, frac: np.ndarray | None, **kw) -> bool:
    """Outline the footprint of ``frac``; False when there is no edge to draw."""
    shape = _outline(grid, frac)
    if shape is None or not np.any(shape) or np.all(shape):
        return False
    xc, yc = grid.centres()
    ax.contour(xc, yc, shape, levels=[0.5], **kw)
    return True


def _limits(arrays, lo=1.0, hi=99.0) -> tuple[float, float]:
    vals = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays if a is not None] or [np.zeros(0)])
    if vals.size == 0:
        return 0.0, 1.0
    a, b = np.percentile(vals, [lo, hi])
    if not b > a:
        a, b = a - 1.0, b + 1.0
    return float(a), float(b)


def _fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}" if np.isfinite(x) else "n/a"


def _visit_axis(ax, data: ReportData, x, labels_every: int) -> None:
    visits = data.visits
    ticks = [i for i in range(len(visits)) if i % labels_every == 0 or visits[i] == data.reference]
    ax.set_xticks([x[i] for i in ticks], [str(visits[i]) for i in ticks],
                  rotation=90 if len(visits) > 12 else 0, fontsize=8)
    ax.set_xlabel("visit")
    for label, i in zip(ax.get_xticklabels(), ticks):
        if visits[i] == data.reference:
            label.set_fontweight("bold")
        if visits[i] in data.flagged:
            label.set_color(FLAG_COLOUR)


# -- summary figures -----------------------------------------------------------------------

def fig_reference_choice(data: ReportData) -> Figure:
    """Only for a reference chosen by cost."""
    from ..reference import cost_terms

    fig = _new_figure("reference_choice")
    ref, cfg, t = data.reference, data.config, data.table
    visits = data.visits
    x = np.arange(len(visits))
    every = max(1, math.ceil(len(visits) / 40))
    colours = [REF_COLOUR if v == ref else VISIT_COLOUR for v in visits]
    names = [("ref_chi2", "plane-fit chi2 / dof"), ("ref_variance", "mean variance [nJy²]"),
             ("ref_coverage", "good superpixels (coverage)"), ("ref_cost", "cost (least wins)")]
    for k, (name, label) in enumerate(names):
        ax = fig.add_subplot(2, 2, k + 1)
        vals = np.asarray(t[name], dtype=np.float64)
        if name == "ref_cost":
            terms = cost_terms(t["ref_chi2"], t["ref_variance"], t["ref_coverage"])
            bottom = np.zeros(len(x))
            for term, weight, colour in (("chi2", cfg.best_ref_weight_chi2, "#56B4E9"),
                                         ("variance", cfg.best_ref_weight_variance, "#009E73"),
                                         ("coverage", cfg.best_ref_weight_global_coverage, VISIT_COLOUR)):
                part = np.where(terms["ok"], weight * terms[term], 0.0)
                ax.bar(x, part, bottom=bottom, color=colour, label=f"{weight:g} x {term}")
                bottom += part
            i = visits.index(ref)
            ax.bar([x[i]], [vals[i]], fill=False, edgecolor=REF_COLOUR, linewidth=2.0, label="reference")
            ax.legend(fontsize=8, loc="upper right", ncol=4)
        else:
            ax.bar(x, np.where(np.isfinite(vals), vals, 0.0), color=colours)
        top = np.nanmax(np.where(np.isfinite(vals), vals, np.nan)) if np.isfinite(vals).any() else 1.0
        ax.set_ylim(0, (1.45 if name == "ref_cost" else 1.15) * (top if top > 0 else 1.0))
        ax.set_title(label, fontsize=10)
        _visit_axis(ax, data, x, every)
    fig.suptitle(f"Reference choice (step 3): visit {ref} has the least cost (black)", fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    alt = (f"Reference choice: bar charts of chi2, variance, coverage and cost per visit; "
           f"reference visit {ref} marked in black")
    caption = ("Per visit, the figures of the reference choice: the chi2 per degree of freedom of a plane "
               "fitted to the visit's own stats image, its mean variance, its number of good superpixels, "
               f"and the cost {cfg.best_ref_weight_chi2:g} chi2/max(chi2) + "
               f"{cfg.best_ref_weight_variance:g} var/max(var) + "
               f"{cfg.best_ref_weight_global_coverage:g} min(coverage)/coverage (maxima and minimum over the "
               "visits whose figures are defined), stacked by term. The reference (black) has the least cost.")
    return _figure("reference_choice", "reference_choice", "Reference choice", alt, caption, fig)


def fig_seams(data: ReportData) -> Figure:
    from matplotlib.colors import LogNorm

    fig = _new_figure("seams")
    seam = data.seam
    gs = fig.add_gridspec(1, 3, width_ratios=[1, 1, 0.04], left=0.06, right=0.9, top=0.88, bottom=0.1, wspace=0.25)
    axes = [fig.add_subplot(gs[0, k]) for k in range(2)]
    title = "Seams: spread of the visits' levels per superpixel"
    if seam is None:
        for ax, when in zip(axes, ("before", "after")):
            _tract_axes(ax, data, f"{when} matching")
            _note(ax, "no seam map in the store\n(a store of an older bgdask, or stage C not finished)")
        alt = "Seam maps: not available"
    else:
        vals = np.concatenate([a[np.isfinite(a) & (a > 0)] for a in seam.values()])
        lo, hi = (np.percentile(vals, [1, 99.5]) if vals.size else (0.01, 1.0))
        lo, hi = float(max(lo, 1e-6)), float(max(hi, lo * 10))
        norm = LogNorm(vmin=lo, vmax=hi, clip=True)
        im = None
        for ax, when in zip(axes, ("before", "after")):
            a = seam[when]
            xe, ye = _superpixel_edges(data, a.shape)
            im = ax.pcolormesh(xe, ye, np.ma.masked_invalid(a), cmap=_cmap(SEQUENTIAL), norm=norm)
            ax.set_facecolor(NO_VALUE)
            _tract_axes(ax, data, f"{when} matching: median {_fmt(float(np.nanmedian(a)) if np.isfinite(a).any() else np.nan)} nJy, "
                                  f"max {_fmt(float(np.nanmax(a)) if np.isfinite(a).any() else np.nan)} nJy")
        fig.colorbar(im, cax=fig.add_subplot(gs[0, 2]),
                     label="RMS of the visits' levels about their mean [nJy] (log scale)")
        alt = (f"Seam maps before and after matching on one logarithmic colour scale: median spread "
               f"{_fmt(float(np.nanmedian(seam['before'])))} nJy before, {_fmt(float(np.nanmedian(seam['after'])))} nJy after")
    fig.suptitle(title, fontsize=12)
    cfg = data.config
    caption = (f"Per superpixel ({cfg.x_bin} x {cfg.y_bin} pixels; its window as in step 1), the RMS about "
               "their mean of the levels (the superpixel statistic of each visit's own image, patches' inner "
               "boxes only) of every visit measuring it, before and after matching, on one logarithmic scale. "
               "After matching it is what a coadd feels as seams; grey: fewer than two visits measure the "
               "superpixel. The last row and column reach the tract's edge.")
    return _figure("seams", "seams", title, alt, caption, fig)


def fig_quality(data: ReportData) -> Figure:
    fig = _new_figure("quality")
    t, cfg, visits = data.table, data.config, data.visits
    x = np.arange(len(visits))
    every = max(1, math.ceil(len(visits) / 40))
    ratio = np.asarray(t["match_ratio"], dtype=np.float64)
    extrap = np.asarray(t["extrap_frac"], dtype=np.float64)
    colours = [FLAG_COLOUR if v in data.flagged else REF_COLOUR if v == data.reference else VISIT_COLOUR
               for v in visits]
    ax1 = fig.add_subplot(1, 2, 1)
    ax1.bar(x, np.where(np.isfinite(ratio), ratio, 0.0), color=colours, width=0.8)
    ax1.axhline(cfg.max_match_ratio, color=FLAG_COLOUR, linestyle="--", linewidth=1.2,
                label=f"flag threshold max_match_ratio = {cfg.max_match_ratio:g}")
    ax1.axhline(1.0, color="0.4", linestyle=":", linewidth=1.0, label="1: matched to the noise")
    top = np.nanmax(ratio) if np.isfinite(ratio).any() else 1.0
    ax1.set_ylim(0, 1.15 * max(top, cfg.max_match_ratio * 1.1))
    ax1.set_ylabel("match_ratio = match_rms / match_noise")
    ax1.set_title("residual against the reference after matching, in units of the noise", fontsize=10)
    ax1.legend(fontsize=8, loc="upper left")
    _visit_axis(ax1, data, x, every)
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.bar(x, np.where(np.isfinite(extrap), 100 * extrap, 0.0), color=colours, width=0.8)
    ax2.set_ylim(0, 105)
    ax2.set_ylabel("extrap_frac [% of the visit's usable pixels]")
    ax2.set_title("area whose offset is not measured against the reference", fontsize=10)
    _visit_axis(ax2, data, x, every)
    n_flag = len(data.flagged)
    fig.suptitle(f"Quality per visit: {n_flag} flagged (vermillion), reference {data.reference} (black)",
                 fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    alt = (f"Bar charts per visit of match_ratio against the flag threshold {cfg.max_match_ratio:g} and of the "
           f"extrapolated fraction; {n_flag} visit(s) flagged")
    caption = ("Left: per visit, the RMS over its superpixels shared with the reference of the superpixel "
               "statistic of reference - matched visit, over the RMS its variance planes alone predict "
               "(match_ratio; the reference and visits sharing nothing with it have none). Visits above the "
               "dashed line (max_match_ratio) are flagged. Right: the fraction of the visit's usable pixels "
               "in superpixels its model did not measure (interpolated or extrapolated offsets).")
    return _figure("quality", "quality", "Quality per visit", alt, caption, fig)


def _tile_layout(data: ReportData, n: int) -> tuple[int, int]:
    """(columns, rows) of the thumbnails figure."""
    cols = max(1, min(n, max(4, math.ceil(math.sqrt(2 * n)))))
    return cols, math.ceil(n / cols)


def fig_thumbnails(data: ReportData) -> Figure:
    """Every visit's model on one colour scale, in one image (``bgdask plot``)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    visits = data.visits
    ny, nx = data.raster_grid.shape
    cols, rows = _tile_layout(data, len(visits))
    gap = max(3, nx // 10)
    label = max(6, ny // 4)                       # room for the label above each tile
    shape = (rows * (ny + gap + label) + gap, cols * (nx + gap) + gap)
    cmap, norm = _cmap(DIVERGING), Normalize(-data.model_limit, data.model_limit)
    big = np.ones(shape + (4,))                   # white between the tiles
    places = {}
    for k, v in enumerate(visits):
        r, c = divmod(k, cols)
        y0 = shape[0] - (r + 1) * (ny + gap + label)
        x0 = gap + c * (nx + gap)
        big[y0:y0 + ny, x0:x0 + nx] = cmap(norm(np.ma.masked_invalid(data.rasters[v])))
        places[v] = (x0, y0)
    width = FIGURE_SIZES["thumbnails"][0]
    axes_w, top, bottom = 0.86, 50, 10
    height = int(round(width * axes_w * shape[0] / shape[1])) + top + bottom
    fig = _new_figure("thumbnails", height)
    ax = fig.add_axes((0.02, bottom / height, axes_w, 1 - (top + bottom) / height))
    ax.imshow(big, origin="lower", interpolation="nearest")
    tile_px = width * axes_w / shape[1] * nx                 # a tile's width in figure pixels
    size = float(np.clip(tile_px / 9, 6, 10))
    for v, (x0, y0) in places.items():
        colour = FLAG_COLOUR if v in data.flagged else REF_COLOUR if v == data.reference else "0.25"
        ax.text(x0 + nx / 2, y0 + ny + label * 0.1, f"{v}" + (" ref" if v == data.reference else ""),
                ha="center", va="bottom", fontsize=size, color=colour,
                fontweight="bold" if colour != "0.25" else "normal")
        if v in data.flagged:
            ax.add_patch(Rectangle((x0 - 1.5, y0 - 1.5), nx + 2, ny + 2, fill=False, edgecolor=FLAG_COLOUR,
                                   linewidth=2))
    ax.set_axis_off()
    cax = fig.add_axes((0.9, bottom / height + 0.05, 0.015, 1 - (top + bottom) / height - 0.1))
    fig.colorbar(ScalarMappable(norm, cmap), cax=cax, label="offset added (reference - visit) [nJy]")
    fig.suptitle(f"Difference models of the {len(visits)} visits on one colour scale; grey: outside the "
                 "visit's patches; flagged visits outlined in vermillion", fontsize=11, y=1 - 12 / height)
    alt = (f"Grid of {len(visits)} thumbnails: each visit's difference model over the tract on one diverging "
           f"colour scale of ±{data.model_limit:.3g} nJy")
    return _figure("thumbnails", "thumbnails", "Difference models of every visit", alt, _thumbnail_caption(data), fig)


def _thumbnail_caption(data: ReportData) -> str:
    return ("Each visit's difference model as step 6.1 applies it (bilinear between superpixel centres, linear "
            "beyond the outermost ones) over its patches' inner boxes, all on one diverging colour scale "
            f"(±{data.model_limit:.3g} nJy, the 99th percentile of |offset|; white is zero, the reference). "
            "Tract x to the right, y up.")


def fig_colorbar(data: ReportData) -> Figure:
    """The colour bar of the report's thumbnails."""
    from matplotlib.colorbar import ColorbarBase
    from matplotlib.colors import Normalize

    fig = _new_figure("colorbar")
    ax = fig.add_axes((0.05, 0.55, 0.9, 0.3))
    lim = data.model_limit
    ColorbarBase(ax, cmap=_cmap(DIVERGING), norm=Normalize(-lim, lim), orientation="horizontal",
                 label="offset added (reference - visit) [nJy]")
    alt = f"Colour bar of the thumbnails: -{lim:.3g} to +{lim:.3g} nJy, diverging, white at zero"
    return _figure("thumbnails_colorbar", "colorbar", "Thumbnails' colour scale", alt, "", fig)


def thumbnails(data: ReportData) -> list[Thumbnail]:
    """Every visit's model as a small PNG on the common scale (the report's grid)."""
    import matplotlib.image as mpimg
    from matplotlib.colors import Normalize

    cmap, norm = _cmap(DIVERGING), Normalize(-data.model_limit, data.model_limit)
    out = []
    for v in data.visits:
        rgba = cmap(norm(np.ma.masked_invalid(data.rasters[v][::-1])))  # rows top-down in an image
        buf = io.BytesIO()
        mpimg.imsave(buf, rgba, format="png", metadata={"Software": None})
        h, w = rgba.shape[:2]
        ratio = float(data.value("match_ratio", v))
        out.append(Thumbnail(v, buf.getvalue(), w, h, data.status(v), v in data.flagged, ratio))
    return out


# -- detail figures -----------------------------------------------------------------------

def fig_diff_model(data: ReportData, visit: int, m: VisitMosaic) -> Figure:
    from matplotlib.colors import Normalize

    fig = _new_figure("diff_model")
    ax = fig.add_subplot(1, 1, 1)
    status = data.status(visit)
    cfg = data.config
    title = f"visit {visit}: difference model (offset added, reference {data.reference} - visit) [nJy]"
    raster = model_raster(data, visit, m.grid)
    lim = data.model_limit
    xe, ye = m.grid.edges()
    im = ax.pcolormesh(xe, ye, raster, cmap=_cmap(DIVERGING), norm=Normalize(-lim, lim))
    fig.colorbar(im, ax=ax, shrink=0.85, label="offset [nJy] (scale shared by every visit)")
    _tract_axes(ax, data, title)
    _patch_boxes(ax, data, visit, edgecolor="0.45", linestyle="--", linewidth=0.8)
    drew = _contour(ax, m.grid, m.coverage(), colors="white", linewidths=2.4)
    _contour(ax, m.grid, m.coverage(), colors="black", linewidths=1.2)
    drew_overlap = _contour(ax, m.grid, m.overlap(), colors="#E69F00", linewidths=2.0, linestyles="--")
    info = (f"status {status}; n_good {int(data.value('n_good', visit))}; mean "
            f"{_fmt(float(data.value('model_mean', visit)))}, RMS {_fmt(float(data.value('model_rms', visit)))} nJy; "
            f"extrapolated {_fmt(100 * float(data.value('extrap_frac', visit)))}% of its pixels")
    if visit == data.reference:
        info += "\nthe reference: its model is zero everywhere"
    ax.text(0.01, 0.01, info, transform=ax.transAxes, fontsize=8, va="bottom",
            bbox=dict(facecolor="white", alpha=0.85, edgecolor="none"))
    legend = "black line: the visit's footprint; dashed grey: its patches' inner boxes"
    if drew_overlap:
        legend += "; orange dashed: overlap with the reference"
    fig.text(0.5, 0.01, legend, ha="center", fontsize=8)
    fig.subplots_adjust(left=0.1, right=0.95, top=0.93, bottom=0.1)
    alt = (f"Difference model of visit {visit} over the tract, status {status}, on the shared colour scale "
           f"of ±{lim:.3g} nJy, with its footprint outlined")
    caption = (f"The offset visit {visit}'s model adds (step 6.1 from its superpixel model of {cfg.x_bin} x "
               f"{cfg.y_bin}-pixel superpixels) over the whole tract, on the colour scale of every visit. "
               + ("" if drew else "The footprint covers the whole tract or nothing. ") + legend + ".")
    return _figure(f"diff_model_{visit}", "diff_model", f"Difference model, visit {visit}", alt, caption, fig)


def fig_mosaic(data: ReportData, visit: int, m: VisitMosaic, ref_mosaic: VisitMosaic | None) -> Figure:
    from matplotlib.colors import Normalize

    fig = _new_figure("mosaic")
    ref = data.reference
    before, after = m.before(), m.after()
    refimg = ref_mosaic.after() if ref_mosaic is not None else None
    d_before, sigma = m.diff_before(), m.diff_after_sigma()
    lo, hi = _limits([before, after, refimg])
    lim = data.model_limit
    xe, ye = m.grid.edges()
    f = m.grid.factor
    gs = fig.add_gridspec(2, 3, left=0.05, right=0.93, top=0.9, bottom=0.07, wspace=0.4, hspace=0.32)
    top_axes = [fig.add_subplot(gs[0, k]) for k in range(3)]
    bottom_axes = [fig.add_subplot(gs[1, k]) for k in range(3)]
    bar = dict(fraction=0.046, pad=0.03)
    im = None
    grey = _cmap("gray")
    for ax, (img, title) in zip(top_axes, [(before, f"visit {visit} before matching"),
                                           (after, f"visit {visit} after matching"),
                                           (refimg, f"reference visit {ref}")]):
        _tract_axes(ax, data, title)
        if img is None:
            _note(ax, "input warps not available:\n" + (m.before_note or "?"), fontsize=8)
            continue
        im = ax.pcolormesh(xe, ye, img, cmap=grey, norm=Normalize(lo, hi))
    if im is not None:
        fig.colorbar(im, ax=top_axes[2], label="binned sky [nJy] (one scale)", **bar)
    ax = bottom_axes[0]
    _tract_axes(ax, data, f"reference - visit before (RMS {_fmt(rms(d_before))} nJy)")
    if d_before is None:
        _note(ax, "not available:\n" + (m.before_note or "no overlap with the reference"), fontsize=8)
    else:
        im = ax.pcolormesh(xe, ye, d_before, cmap=_cmap(DIVERGING), norm=Normalize(-lim, lim))
        fig.colorbar(im, ax=ax, label="[nJy] (the models' scale)", **bar)
    ax = bottom_axes[1]
    rms_sigma = rms(sigma)
    _tract_axes(ax, data, f"after, in standard errors (RMS {_fmt(rms_sigma)})")
    if sigma is None:
        _note(ax, "no overlap with the reference", fontsize=8)
    else:
        im = ax.pcolormesh(xe, ye, sigma, cmap=_cmap(DIVERGING), norm=Normalize(-SIGMA_RANGE, SIGMA_RANGE))
        _contour(ax, m.grid, m.coverage(), colors="0.3", linewidths=0.8)
        fig.colorbar(im, ax=ax, label="(reference - visit) / its noise", **bar)
    for a in (top_axes[1], top_axes[2], bottom_axes[1]):
        a.set_ylabel("")
    ax = bottom_axes[2]
    ax.set_title("after matching: binned residual / noise", fontsize=10)
    if sigma is not None and np.isfinite(sigma).any():
        s = sigma[np.isfinite(sigma)]
        bins = np.linspace(-2 * SIGMA_RANGE, 2 * SIGMA_RANGE, 81)
        ax.hist(np.clip(s, bins[0], bins[-1]), bins=bins, density=True, color=VISIT_COLOUR, alpha=0.75,
                label=f"{s.size} bins, RMS {rms_sigma:.3g}")
        g = np.linspace(bins[0], bins[-1], 400)
        ax.plot(g, np.exp(-0.5 * g * g) / math.sqrt(2 * math.pi), color=REF_COLOUR, linewidth=1.2,
                label="unit Gaussian (noise alone)")
        ax.legend(fontsize=8)
    ax.set_xlabel("standard errors")
    ax.set_ylabel("density")
    fig.suptitle(f"Visit {visit} against reference visit {ref}: tract binned {f} x {f} pixels "
                 "(bad planes and DETECTED left out)", fontsize=12)
    alt = (f"Binned mosaics of visit {visit} before and after matching and of reference visit {ref}; "
           f"binned reference minus visit before (RMS {_fmt(rms(d_before))} nJy) and after matching in units "
           f"of its noise (RMS {_fmt(rms_sigma)})")
    caption = (f"Top: the tract binned {f} x {f} (mean of the pixels free of the bad mask planes and of "
               "DETECTED; patches' inner boxes), the visit before matching (input warps), after matching (the "
               "store) and the reference, on one grey scale. Bottom: binned reference - visit before matching "
               "(nJy, the difference models' scale), after matching divided by its standard error from the "
               f"variance planes (±{SIGMA_RANGE:g}), and the histogram of the latter: matched to the noise, it "
               "follows the unit Gaussian.")
    return _figure(f"mosaic_{visit}", "mosaic", f"Mosaics, visit {visit}", alt, caption, fig)


# -- public API -----------------------------------------------------------------------------

def summary_figures(data: ReportData) -> Iterator[Figure]:
    if data.ref_chosen:
        yield fig_reference_choice(data)
    yield fig_seams(data)
    yield fig_quality(data)


def detail_figures(data: ReportData, visits: Sequence[int], max_bins: int = MAX_MOSAIC_BINS) -> Iterator[Figure]:
    """``diff_model_<v>`` and (but the reference) ``mosaic_<v>`` of each of ``visits``."""
    if not visits:
        return
    h, w = data.tract_shape
    grid = MosaicGrid.for_tract(h, w, max_bins)
    inputs = InputWarps(data.store)
    ref_mosaic = visit_mosaic(data.store, data.reference, grid, None)
    for v in visits:
        m = ref_mosaic if v == data.reference else visit_mosaic(data.store, v, grid, inputs)
        yield fig_diff_model(data, v, m)
        if v != data.reference:
            yield fig_mosaic(data, v, m, ref_mosaic)


def render_figures(store, *, visits: Sequence[int] | None = None,
                   max_bins: int = MAX_MOSAIC_BINS) -> Iterator[Figure]:
    """Render the figures of ``store`` one by one (see the module doc), in a
    fixed order: ``reference_choice`` (when the reference was chosen),
    ``seams``, ``quality``, ``thumbnails``, then ``diff_model_<v>`` and
    ``mosaic_<v>`` of the flagged visits and of ``visits``."""
    data = ReportData.open(store)
    data.require_models()
    details = detail_visits(data, visits)
    yield from summary_figures(data)
    yield fig_thumbnails(data)
    yield from detail_figures(data, details, max_bins)


def write_figures(store, outdir, *, visits: Sequence[int] | None = None) -> list[Path]:
    """Write the PNG figures of ``store`` (:func:`render_figures`) into
    ``outdir`` (created); returns their paths (``<name>.png``)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fig in render_figures(store, visits=visits):
        path = outdir / fig.filename
        path.write_bytes(fig.png)
        paths.append(path)
    return paths
