"""Figures and the run report of a bgdask output store.

* :func:`write_figures` writes PNG figures of a store (``bgdask plot``);
* :func:`write_report` writes one self-contained HTML page (``bgdask report``,
  ``bgdask demo``): configuration, geometry, the reference visit, the
  per-visit table, completeness, stage times and the figures, embedded as
  base64 PNG data URIs (no external resource is loaded);

Figures (file names are deterministic; sizes in pixels are fixed, see
:data:`FIGURE_SIZES`):

``reference_choice.png``
    ref_chi2, ref_variance, ref_coverage and ref_cost per visit with the
    reference marked (step 3 of docs/algorithm.md); when the reference was given in
    the configuration these figures were never computed, and the figure says so.
``diff_model_<visit>.png``
    the visit's superpixel difference model over the tract (step 5), with the
    visit's footprint (binned coverage of its matched warps) and its overlap
    with the reference outlined, and the boxes of the patches it has.
``mosaic_<visit>.png`` (every visit but the reference)
    binned mosaics of the tract: the visit before matching (input warps), after
    matching (the store) and the reference, on one colour scale; below, the
    binned ``reference - visit`` before and after, on one diverging scale, and
    their histograms.
``residuals.png``
    per visit: the fit residual RMS and the model RMS of the table (step 5),
    and the RMS of the binned ``reference - visit`` over the overlap before
    and after matching.

Memory stays bounded whatever the tract: warps are read one row block of one
warp at a time (the store's chunk rows), binned into small tract mosaics
(at most :data:`MAX_MOSAIC_BINS` bins a side) and dropped; one visit's
mosaics are kept at a time. Matplotlib is used through its Agg canvas only
(no pyplot, no display, the global backend is left alone).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = [
    "FIGURE_SIZES",
    "MAX_MOSAIC_BINS",
    "Figure",
    "render_figures",
    "write_figures",
    "write_report",
]

#: Pixel size (width, height) of each kind of figure.
FIGURE_SIZES = {
    "reference_choice": (1200, 800),
    "diff_model": (800, 650),
    "mosaic": (1500, 900),
    "residuals": (1200, 500),
}
DPI = 100
#: The binned mosaics have at most this many bins along the tract's longer side.
MAX_MOSAIC_BINS = 300
#: Planes left out of the binned mosaics besides the configuration's bad planes
#: (sources would otherwise dominate the sky level of a bin).
MOSAIC_EXTRA_PLANES = ("DETECTED",)

from .table import COLUMNS, STATUS_CODES

STATUS_NAMES = {code: name for name, code in STATUS_CODES.items()}
TABLE_FIELDS = tuple(COLUMNS)

REF_COLOUR = "#d62728"
VISIT_COLOUR = "#1f77b4"


@dataclass
class Figure:
    """One rendered figure: its file stem, title, alt text, caption and PNG bytes."""

    name: str
    kind: str
    title: str
    alt: str
    caption: str
    png: bytes

    @property
    def filename(self) -> str:
        return f"{self.name}.png"


# -- reading the store ---------------------------------------------------------

def _attr_json(attrs, key, default=None):
    value = attrs.get(key)
    if value is None:
        return default
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return default
    return value


@dataclass
class _Store:
    """What the figures and the report need from a store, read once (small arrays only)."""

    path: str
    group: object
    attrs: dict
    visits: list[int]
    patches: list[int]
    boxes: dict[int, tuple[int, int, int, int]]  # outer boxes: x0, y0, width, height
    present: np.ndarray
    done: np.ndarray
    usable: np.ndarray
    table: dict[str, np.ndarray]
    config: dict
    skymap: dict | None
    mask_planes: dict[str, int]
    reference: int | None
    models_done: bool
    chunk_rows: int

    @classmethod
    def open(cls, path) -> "_Store":
        from .io.store import Store

        st = Store.open(path)
        g = st.group
        table = {n: np.asarray(v) for n, v in st.table().reset_index(drop=True).items()}
        table["status"] = np.array([STATUS_CODES.get(s, -1) for s in table["status"]])
        return cls(
            path=st.path, group=g, attrs=st.attrs, visits=st.visits, patches=st.patches,
            boxes={p: (b.x0, b.y0, b.width, b.height) for p, b in st.boxes.items()},
            present=st.present, done=st.done(), usable=st.usable, table=table,
            config=st.attrs.get("config") or {}, skymap=st.attrs.get("skymap"),
            mask_planes=st.mask_planes, reference=st.reference_visit, models_done=st.models_done,
            chunk_rows=st.chunk_rows,
        )

    # geometry
    @property
    def sky(self):
        from .geometry import SkyMap

        return SkyMap.from_dict(self.skymap) if self.skymap else None

    @property
    def tract_shape(self) -> tuple[int, int]:
        """(height, width) of the tract."""
        sm = self.sky
        if sm is not None:
            return sm.height, sm.width
        return (max(y0 + h for _, y0, _, h in self.boxes.values()),
                max(x0 + w for x0, _, w, _ in self.boxes.values()))

    def inner_box(self, patch: int) -> tuple[int, int, int, int]:
        sm = self.sky
        if sm is not None:
            b = sm.inner_box(patch)
            return b.x0, b.y0, b.width, b.height
        return self.boxes[patch]

    @property
    def bins(self) -> tuple[int, int]:
        return self.cfg.x_bin, self.cfg.y_bin

    @property
    def cfg(self):
        from .config import MatchConfig

        return MatchConfig.from_dict(self.config)

    def status(self, visit: int) -> str:
        if "status" not in self.table:
            return "?"
        return STATUS_NAMES.get(int(self.table["status"][self.visits.index(visit)]), "?")

    def value(self, name: str, visit: int):
        return self.table[name][self.visits.index(visit)]

    def bad_bits(self, extra=()) -> int:
        from .masks import plane_bits

        names = list(self.cfg.bad_mask_planes) + list(extra)
        return plane_bits(self.mask_planes, names)

    def ref_given(self) -> bool:
        return self.cfg.ref_visit is not None


# -- binned mosaics -----------------------------------------------------------------

@dataclass
class _Grid:
    """The mosaic grid: ``factor`` x ``factor`` tract pixels per bin."""

    factor: int
    height: int  # tract pixels
    width: int

    @classmethod
    def for_tract(cls, height: int, width: int, max_bins: int = MAX_MOSAIC_BINS) -> "_Grid":
        return cls(max(1, math.ceil(max(height, width) / max_bins)), height, width)

    @property
    def shape(self) -> tuple[int, int]:
        return math.ceil(self.height / self.factor), math.ceil(self.width / self.factor)

    @property
    def size(self) -> int:
        ny, nx = self.shape
        return ny * nx

    def pixels_per_bin(self) -> np.ndarray:
        ny, nx = self.shape
        f = self.factor
        wy = np.minimum(f, self.height - f * np.arange(ny))
        wx = np.minimum(f, self.width - f * np.arange(nx))
        return (wy[:, None] * wx[None, :]).astype(np.float64)

    def extent(self) -> tuple[float, float, float, float]:
        ny, nx = self.shape
        return (-0.5, nx * self.factor - 0.5, -0.5, ny * self.factor - 0.5)

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        ny, nx = self.shape
        f = self.factor
        return (np.minimum((np.arange(nx) + 0.5) * f, self.width) - 0.5,
                np.minimum((np.arange(ny) + 0.5) * f, self.height) - 0.5)


@dataclass
class _VisitMosaic:
    """Sums and counts on the mosaic grid for one visit (flattened)."""

    grid: _Grid
    cover: np.ndarray          # finite pixels of the matched image
    n: np.ndarray              # valid pixels (finite, no bad plane)
    s_after: np.ndarray
    s_before: np.ndarray | None
    n_before: np.ndarray | None
    n_diff: np.ndarray | None  # valid in both the visit and the reference
    s_diff_after: np.ndarray | None
    s_diff_before: np.ndarray | None
    before_note: str | None = None

    def _mean(self, s, n, frac=0.2) -> np.ndarray:
        ny, nx = self.grid.shape
        need = np.maximum(1.0, frac * self.grid.pixels_per_bin().ravel())
        out = np.full(s.shape, np.nan)
        ok = n >= need
        out[ok] = s[ok] / n[ok]
        return out.reshape(ny, nx)

    def after(self) -> np.ndarray:
        return self._mean(self.s_after, self.n)

    def before(self) -> np.ndarray | None:
        return None if self.s_before is None else self._mean(self.s_before, self.n_before)

    def diff_after(self) -> np.ndarray | None:
        return None if self.s_diff_after is None else self._mean(self.s_diff_after, self.n_diff)

    def diff_before(self) -> np.ndarray | None:
        if self.s_diff_before is None:
            return None
        return self._mean(self.s_diff_before, self.n_diff)

    def coverage(self) -> np.ndarray:
        ny, nx = self.grid.shape
        return (self.cover / self.grid.pixels_per_bin().ravel()).reshape(ny, nx)

    def overlap(self) -> np.ndarray | None:
        if self.n_diff is None:
            return None
        ny, nx = self.grid.shape
        return (self.n_diff / self.grid.pixels_per_bin().ravel()).reshape(ny, nx)


class _Inputs:
    """The input warps (``attrs["source"]``), opened lazily with ``bgdask.open_warps``."""

    def __init__(self, st: _Store):
        self.ds = None
        self.note = None
        source = st.attrs.get("source")
        if not source:
            self.note = "the store does not record its input warps"
            return
        if not os.path.exists(source):
            self.note = f"the input warps are no longer at\n{source}"
            return
        try:
            from .collection import open_warps

            self.ds = open_warps(source, skymap=st.sky, chunks={"y": st.chunk_rows})
        except Exception as exc:  # noqa: BLE001 - a figure without "before" beats no figure
            self.note = f"the input warps at\n{source}\ncannot be opened ({exc})"
            return
        self.visits = {int(v): i for i, v in enumerate(self.ds.visit.values)}
        self.patches = {int(p): i for i, p in enumerate(self.ds.patch.values)}
        self.present = np.asarray(self.ds.present.values, dtype=bool)

    def rows(self, visit: int, patch: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray | None:
        if self.ds is None:
            return None
        vi, pi = self.visits.get(visit), self.patches.get(patch)
        if vi is None or pi is None or not self.present[vi, pi]:
            return None
        import dask

        # One block of one warp, read in this process, whatever scheduler is current.
        with dask.config.set(scheduler="sync"):
            return np.asarray(self.ds.image[vi, pi, r0:r1, c0:c1].values)


def _visit_mosaic(st: _Store, visit: int, grid: _Grid, inputs: _Inputs | None) -> _VisitMosaic:
    """Bin visit ``visit`` (and, against the reference, ``reference - visit``) on ``grid``.

    Reads, per warp of the visit and per row block of its inner box: the
    matched image and mask (store), the input image (``inputs``), the
    reference's matched image and mask (store; the reference is unchanged by
    matching). Only the inner boxes are binned: they tile the tract, so no
    pixel counts twice.
    """
    g = st.group
    image, mask = g["image"], g["mask"]
    vi = st.visits.index(visit)
    ref = st.reference
    ri = st.visits.index(ref) if ref is not None and ref in st.visits and ref != visit else None
    bad = st.bad_bits(MOSAIC_EXTRA_PLANES)
    size = grid.size
    zeros = lambda: np.zeros(size)  # noqa: E731
    cover, n, s_after = zeros(), zeros(), zeros()
    with_before = inputs is not None and inputs.ds is not None
    s_before, n_before = (zeros(), zeros()) if with_before else (None, None)
    if ri is not None:
        n_diff, s_da = zeros(), zeros()
        s_db = zeros() if with_before else None
    else:
        n_diff = s_da = s_db = None
    f = grid.factor
    nx_bins = grid.shape[1]
    rows = st.chunk_rows
    for pi, p in enumerate(st.patches):
        if not (st.present[vi, pi] and st.done[vi, pi]):
            continue
        x0, y0, _, h = st.boxes[p]
        ix0, iy0, iw, ih = st.inner_box(p)
        c0, c1 = ix0 - x0, ix0 - x0 + iw          # inner columns, warp-local
        r_lo, r_hi = iy0 - y0, iy0 - y0 + ih      # inner rows, warp-local
        with_ref = ri is not None and st.present[ri, pi] and st.done[ri, pi]
        xbin = (np.arange(ix0, ix0 + iw) // f).astype(np.int64)
        # row blocks aligned with the store's chunks, clipped to the inner box
        for b0 in range((r_lo // rows) * rows, r_hi, rows):
            r0, r1 = max(b0, r_lo), min(b0 + rows, r_hi)
            ybin = ((np.arange(r0, r1) + y0) // f).astype(np.int64)
            idx = (ybin[:, None] * nx_bins + xbin[None, :]).ravel()
            img = np.asarray(image[vi, pi, r0:r1, c0:c1], dtype=np.float64).ravel()
            msk = np.asarray(mask[vi, pi, r0:r1, c0:c1]).ravel()
            finite = np.isfinite(img)
            ok = finite & ((msk & bad) == 0)
            cover += np.bincount(idx, weights=finite, minlength=size)
            n += np.bincount(idx, weights=ok, minlength=size)
            s_after += np.bincount(idx[ok], weights=img[ok], minlength=size)
            before = None
            if with_before:
                raw = inputs.rows(visit, p, r0, r1, c0, c1)
                if raw is not None:
                    before = np.asarray(raw, dtype=np.float64).ravel()
                    okb = ok & np.isfinite(before)
                    n_before += np.bincount(idx, weights=okb, minlength=size)
                    s_before += np.bincount(idx[okb], weights=before[okb], minlength=size)
            if with_ref:
                rimg = np.asarray(image[ri, pi, r0:r1, c0:c1], dtype=np.float64).ravel()
                rmsk = np.asarray(mask[ri, pi, r0:r1, c0:c1]).ravel()
                both = ok & np.isfinite(rimg) & ((rmsk & bad) == 0)
                if before is not None:
                    both &= np.isfinite(before)
                n_diff += np.bincount(idx, weights=both, minlength=size)
                s_da += np.bincount(idx[both], weights=rimg[both] - img[both], minlength=size)
                if s_db is not None:
                    if before is not None:
                        s_db += np.bincount(idx[both], weights=rimg[both] - before[both], minlength=size)
    return _VisitMosaic(grid, cover, n, s_after, s_before, n_before, n_diff, s_da, s_db,
                        before_note=None if with_before else (inputs.note if inputs else None))


def _fmt_rms(a: np.ndarray | None) -> str:
    r = _rms(a)
    return f"{r:.3g}" if np.isfinite(r) else "n/a"


def _rms(a: np.ndarray | None) -> float:
    if a is None:
        return float("nan")
    v = a[np.isfinite(a)]
    return float(np.sqrt(np.mean(v * v))) if v.size else float("nan")


# -- drawing ------------------------------------------------------------------------

def _new_figure(kind: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    w, h = FIGURE_SIZES[kind]
    fig = MplFigure(figsize=(w / DPI, h / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    # No bbox_inches="tight": the size must stay the one of FIGURE_SIZES.
    # No Software/date metadata: the same store gives the same bytes.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _note(ax, text: str, **kw) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", wrap=True,
            fontsize=kw.pop("fontsize", 10), color=kw.pop("color", "0.3"), **kw)


def _tract_axes(ax, st: _Store, title: str) -> None:
    h, w = st.tract_shape
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(-0.5, h - 0.5)
    ax.set_aspect("equal")
    ax.set_xlabel("tract x [pixel]")
    ax.set_ylabel("tract y [pixel]")
    ax.set_title(title, fontsize=10)


def _patch_boxes(ax, st: _Store, visit: int, inner: bool = False, **kw) -> None:
    from matplotlib.patches import Rectangle

    vi = st.visits.index(visit)
    for pi, p in enumerate(st.patches):
        if not st.present[vi, pi]:
            continue
        x0, y0, w, h = st.inner_box(p) if inner else st.boxes[p]
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), w, h, fill=False, **kw))


#: Gaps narrower than this (tract pixels), such as chip gaps, are closed in outlines.
OUTLINE_GAP = 64


def _outline(grid: _Grid, frac: np.ndarray | None) -> np.ndarray | None:
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


def _contour(ax, grid: _Grid, frac: np.ndarray | None, **kw) -> bool:
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


def _sym_limit(arrays) -> float:
    vals = np.concatenate([np.abs(a[np.isfinite(a)]).ravel() for a in arrays if a is not None] or [np.zeros(0)])
    lim = float(np.percentile(vals, 99)) if vals.size else 0.0
    return lim if lim > 0 else 1.0


def _fig_reference_choice(st: _Store) -> Figure:
    fig = _new_figure("reference_choice")
    ref = st.reference
    names = [("ref_chi2", "plane-fit chi2 / dof"), ("ref_variance", "mean variance [nJy^2]"),
             ("ref_coverage", "good superpixels (coverage)"), ("ref_cost", "cost (least wins)")]
    computed = ("ref_cost" in st.table and np.any(np.isfinite(st.table["ref_cost"])))
    visits = st.visits
    x = np.arange(len(visits))
    labels = [str(v) for v in visits]
    colours = [REF_COLOUR if v == ref else VISIT_COLOUR for v in visits]
    if not computed:
        ax = fig.add_subplot(1, 1, 1)
        ax.set_axis_off()
        why = (f"The reference visit {ref} was given in the configuration (ref_visit = {ref}):\n"
               "the reference-choice figures (chi2, variance, coverage, cost) were not computed,\n"
               "so every value is NaN." if st.ref_given()
               else "The reference-choice figures are not in the store (NaN): "
                    "the models were not computed yet, or the reference was given.")
        _note(ax, why, fontsize=13)
        fig.suptitle(f"Reference visit {ref}: given, not chosen", fontsize=14, color=REF_COLOUR)
        alt = f"Reference choice: reference visit {ref} was given in the configuration; no cost figures were computed"
    else:
        for k, (name, label) in enumerate(names):
            ax = fig.add_subplot(2, 2, k + 1)
            vals = np.asarray(st.table[name], dtype=np.float64)
            if name == "ref_cost":
                _cost_bars(ax, st, x, vals)
            else:
                ax.bar(x, vals, color=colours)
            ax.set_xticks(x, labels, rotation=90 if len(visits) > 12 else 0, fontsize=8)
            ax.set_title(label, fontsize=10)
            ax.set_xlabel("visit")
            top = np.nanmax(vals) if np.any(np.isfinite(vals)) else 1.0
            ax.set_ylim(0, (1.45 if name == "ref_cost" else 1.15) * (top if top > 0 else 1.0))
            if ref in visits:
                i = visits.index(ref)
                if np.isfinite(vals[i]):
                    ax.annotate("ref", (i, vals[i]), xytext=(0, 3), textcoords="offset points",
                                ha="center", va="bottom", color=REF_COLOUR, fontsize=9, fontweight="bold")
        fig.suptitle(f"Reference choice (step 3): reference visit {ref} has the least cost",
                     fontsize=13)
        alt = (f"Reference choice: bar charts of chi2, variance, coverage and cost per visit; "
               f"reference visit {ref} marked in red")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    from .config import MatchConfig

    cfg = MatchConfig.from_dict(st.config)
    caption = ("Per visit, the figures of the reference choice: the chi2 per degree of freedom of a plane "
               "fitted to the visit's own stats image, its mean variance, its number of good superpixels, "
               f"and the cost {cfg.best_ref_weight_chi2:g} chi2/max(chi2) + "
               f"{cfg.best_ref_weight_variance:g} var/max(var) + "
               f"{cfg.best_ref_weight_global_coverage:g} min(coverage)/coverage, stacked by term. "
               "The reference (red) has the least cost.")
    if not computed:
        caption = "The reference visit was given in the configuration; the cost figures were not computed."
    return Figure("reference_choice", "reference_choice", "Reference choice", alt, caption, _png(fig))


def _cost_bars(ax, st: _Store, x, cost) -> None:
    from .config import MatchConfig
    from .reference import cost_terms

    cfg = MatchConfig.from_dict(st.config)
    t = cost_terms(st.table["ref_chi2"], st.table["ref_variance"], st.table["ref_coverage"])
    terms = [
        ("chi2", cfg.best_ref_weight_chi2 * t["chi2"], "#9ecae1"),
        ("variance", cfg.best_ref_weight_variance * t["variance"], "#6baed6"),
        ("coverage", cfg.best_ref_weight_global_coverage * t["coverage"], "#2171b5"),
    ]
    bottom = np.zeros(len(x))
    for label, vals, colour in terms:
        vals = np.where(np.isfinite(vals), vals, 0.0)
        ax.bar(x, vals, bottom=bottom, color=colour, label=label)
        bottom += vals
    ref = st.reference
    if ref in st.visits:
        i = st.visits.index(ref)
        ax.bar([x[i]], [cost[i]], fill=False, edgecolor=REF_COLOUR, linewidth=2.0, label="reference")
    ax.legend(fontsize=8, loc="upper right", ncol=4)


def _fig_diff_model(st: _Store, visit: int, m: _VisitMosaic) -> Figure:
    fig = _new_figure("diff_model")
    ax = fig.add_subplot(1, 1, 1)
    vi = st.visits.index(visit)
    xb, yb = st.bins
    model = np.asarray(st.group["diff_model"][vi], dtype=np.float64)
    status = st.status(visit)
    sy, sx = model.shape
    title = f"visit {visit}: difference model (reference {st.reference} - visit) [nJy]"
    if not np.any(np.isfinite(model)):
        _tract_axes(ax, st, title)
        _note(ax, f"no model for visit {visit} (status: {status})", fontsize=12)
    else:
        lo, hi = np.nanmin(model), np.nanmax(model)
        if not hi > lo:
            lo, hi = lo - 1.0, hi + 1.0
        im = ax.imshow(model, origin="lower", extent=(-0.5, sx * xb - 0.5, -0.5, sy * yb - 0.5),
                       cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.85, label="model [nJy]")
        _tract_axes(ax, st, title)
    _patch_boxes(ax, st, visit, inner=True, edgecolor="0.75", linestyle="--", linewidth=0.8)
    drew = _contour(ax, m.grid, m.coverage(), colors="white", linewidths=2.2)
    _contour(ax, m.grid, m.coverage(), colors="black", linewidths=1.2)
    drew_overlap = _contour(ax, m.grid, m.overlap(), colors=REF_COLOUR, linewidths=2.0, linestyles="--")
    extra = []
    if visit == st.reference:
        extra.append("the reference: its model is zero everywhere")
    ng = int(st.value("n_good", visit)) if "n_good" in st.table else None
    info = (f"status {status}; n_good {ng}; mean {st.value('model_mean', visit):.3g}, "
            f"RMS {st.value('model_rms', visit):.3g} nJy" if "model_mean" in st.table else f"status {status}")
    ax.text(0.01, 0.01, "\n".join([info] + extra), transform=ax.transAxes, fontsize=8, va="bottom",
            color="black", bbox=dict(facecolor="white", alpha=0.8, edgecolor="none"))
    legend = "black line: the visit's footprint (binned coverage); dashed grey: its patches"
    if drew_overlap:
        legend += "; red dashed: overlap with the reference"
    fig.text(0.5, 0.01, legend, ha="center", fontsize=8)
    fig.subplots_adjust(left=0.1, right=0.95, top=0.93, bottom=0.1)
    alt = (f"Difference model of visit {visit} over the tract ({sy} x {sx} superpixels), "
           f"status {status}, with its footprint outlined")
    caption = (f"The superpixel difference model of visit {visit} (step 5): the offset that "
               f"matching adds to the visit, one value per {xb} x {yb} superpixel, gaps filled. "
               + ("" if drew else "The footprint covers the whole tract or nothing. ")
               + legend + ".")
    return Figure(f"diff_model_{visit}", "diff_model", f"Difference model, visit {visit}", alt, caption, _png(fig))


def _fig_mosaic(st: _Store, visit: int, m: _VisitMosaic, ref_mosaic: _VisitMosaic | None) -> Figure:
    fig = _new_figure("mosaic")
    ref = st.reference
    before, after = m.before(), m.after()
    refimg = ref_mosaic.after() if ref_mosaic is not None else None
    d_before, d_after = m.diff_before(), m.diff_after()
    lo, hi = _limits([before, after, refimg])
    lim = _sym_limit([d_before, d_after] if d_before is not None else [d_after])
    ext = m.grid.extent()
    f = m.grid.factor
    # columns: image, image, [bottom colour bar], image or histogram, [top colour bar]
    gs = fig.add_gridspec(2, 6, width_ratios=[1, 1, 0.05, 0.22, 1, 0.05], left=0.05, right=0.94,
                          top=0.9, bottom=0.07, wspace=0.25, hspace=0.3)
    axes = [fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1]), fig.add_subplot(gs[0, 4]),
            fig.add_subplot(gs[1, 0]), fig.add_subplot(gs[1, 1]), fig.add_subplot(gs[1, 4])]
    cbar_top, cbar_bottom = fig.add_subplot(gs[0, 5]), fig.add_subplot(gs[1, 2])
    top = [(before, f"visit {visit} before matching"), (after, f"visit {visit} after matching"),
           (refimg, f"reference visit {ref}")]
    im = None
    for ax, (img, title) in zip(axes[:3], top):
        _tract_axes(ax, st, title)
        if img is None:
            _note(ax, "input warps not available:\n" + (m.before_note or "?"), fontsize=8)
            continue
        im = ax.imshow(img, origin="lower", extent=ext, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    if im is not None:
        fig.colorbar(im, cax=cbar_top, label="binned sky [nJy]")
    else:
        cbar_top.set_axis_off()
    bottom = [(d_before, f"reference - visit, before (RMS {_fmt_rms(d_before)})"),
              (d_after, f"reference - visit, after (RMS {_fmt_rms(d_after)})")]
    im = None
    for ax, (img, title) in zip(axes[3:5], bottom):
        _tract_axes(ax, st, title)
        if img is None:
            _note(ax, "not available:\n" + (m.before_note or "no overlap with the reference"), fontsize=8)
            continue
        im = ax.imshow(img, origin="lower", extent=ext, cmap="RdBu_r", vmin=-lim, vmax=lim,
                       interpolation="nearest")
        _contour(ax, m.grid, m.coverage(), colors="0.3", linewidths=0.8)
    if im is not None:
        fig.colorbar(im, cax=cbar_bottom, label="reference - visit [nJy]")
    else:
        cbar_bottom.set_axis_off()
    for ax in (axes[1], axes[4]):
        ax.set_ylabel("")
    ax = axes[5]
    ax.set_title("binned reference - visit", fontsize=10)
    hist_lim = max(lim, _sym_limit([d_before]) if d_before is not None else lim)
    bins = np.linspace(-hist_lim, hist_lim, 61)
    for img, label, colour in ((d_before, "before", "0.55"), (d_after, "after", VISIT_COLOUR)):
        if img is not None and np.any(np.isfinite(img)):
            ax.hist(np.clip(img[np.isfinite(img)], -hist_lim, hist_lim), bins=bins, color=colour,
                    alpha=0.7, label=f"{label}: RMS {_rms(img):.3g} nJy")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("[nJy]")
    ax.set_ylabel("bins")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.suptitle(f"Visit {visit} against reference visit {ref}: binned tract mosaics "
                 f"({f} x {f} pixels per bin; bad planes and sources left out)", fontsize=12)
    alt = (f"Binned mosaics of visit {visit} before and after matching and of reference visit {ref}, "
           f"and binned reference minus visit before (RMS {_fmt_rms(d_before)} nJy) and after "
           f"(RMS {_fmt_rms(d_after)} nJy)")
    caption = (f"Top: the tract binned {f} x {f} (mean of the pixels free of the bad mask planes and of "
               "DETECTED), visit before matching (input warps), after matching (the store) and the reference, "
               "on one grey scale. Bottom: binned reference - visit before and after on one diverging scale, "
               "and their histograms; after matching it is zero up to noise where the two overlap.")
    return Figure(f"mosaic_{visit}", "mosaic", f"Mosaics, visit {visit}", alt, caption, _png(fig))


def _fig_residuals(st: _Store, rms: dict[int, tuple[float, float]], grid_factor: int) -> Figure:
    fig = _new_figure("residuals")
    visits = st.visits
    x = np.arange(len(visits))
    labels = [str(v) for v in visits]
    ref = st.reference
    ax1 = fig.add_subplot(1, 2, 1)
    width = 0.4
    fit = np.asarray(st.table.get("fit_rms", np.full(len(visits), np.nan)), dtype=np.float64)
    mrms = np.asarray(st.table.get("model_rms", np.full(len(visits), np.nan)), dtype=np.float64)
    ax1.bar(x - width / 2, np.nan_to_num(fit), width, color=VISIT_COLOUR, label="fit residual RMS")
    ax1.bar(x + width / 2, np.nan_to_num(mrms), width, color="0.7", label="model RMS")
    ax1.set_title("per-visit table: fit residual RMS and model RMS [nJy]", fontsize=10)
    if np.all(np.nan_to_num(fit) == 0):
        ax1.text(0.02, 0.97, "fit residual RMS is 0 for every visit: without\nsmoothing the model equals "
                 "the binned\ndifference on the good superpixels (as in Rubin)",
                 transform=ax1.transAxes, fontsize=8, va="top")
    ax2 = fig.add_subplot(1, 2, 2)
    b = np.array([rms.get(v, (np.nan, np.nan))[0] for v in visits])
    a = np.array([rms.get(v, (np.nan, np.nan))[1] for v in visits])
    ax2.bar(x - width / 2, np.nan_to_num(b), width, color="0.55", label="before matching")
    ax2.bar(x + width / 2, np.nan_to_num(a), width, color=VISIT_COLOUR, label="after matching")
    ax2.set_title("RMS of binned reference - visit over the overlap [nJy]", fontsize=10)
    # What pixel noise alone leaves in a bin of f x f pixels: sqrt(var_ref + var_visit) / f,
    # with the mean pixel variances of the reference choice (step 3), when measured.
    f = grid_factor
    var = np.asarray(st.table.get("ref_variance", np.full(len(visits), np.nan)), dtype=np.float64)
    if ref in visits and np.isfinite(var[visits.index(ref)]):
        floor = np.sqrt(var + var[visits.index(ref)]) / f
        for xx, v, fl in zip(x, visits, floor):
            if v != ref and np.isfinite(fl):
                ax2.plot([xx - 0.45, xx + 0.45], [fl, fl], color="black", linestyle="--", linewidth=1.0,
                         label="pixel-noise floor" if xx == x[0] or "pixel-noise floor" not in
                         ax2.get_legend_handles_labels()[1] else None)
    if len(visits) <= 12:
        for xs, vals in ((x - width / 2, b), (x + width / 2, a)):
            for xx, vv in zip(xs, vals):
                if np.isfinite(vv):
                    ax2.annotate(f"{vv:.3g}", (xx, vv), xytext=(0, 2), textcoords="offset points",
                                 ha="center", va="bottom", fontsize=8)
    for ax in (ax1, ax2):
        lo, hi = ax.get_ylim()
        ax.set_ylim(0, 1.35 * hi if hi > 0 else 1.0)
        ax.set_xticks(x, labels, rotation=90 if len(visits) > 12 else 0, fontsize=8)
        ax.set_xlabel("visit")
        ax.legend(fontsize=8, loc="upper right")
        if ref in visits:
            ax.get_xticklabels()[visits.index(ref)].set_color(REF_COLOUR)
    fig.suptitle(f"Residuals per visit (reference visit {ref}, red label)", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    alt = "Bar charts per visit: fit residual RMS and model RMS; RMS of binned reference minus visit before and after matching"
    caption = ("Left: the table's fit residual RMS (binned difference - model over the good superpixels) "
               "and model RMS. Right: the RMS of the binned reference - visit (mosaic bins) where the visit "
               "and the reference overlap, before and after matching; the dashed marks are what pixel noise "
               "alone leaves in a full bin, sqrt(variance_ref + variance_visit) / bin size, from the "
               "reference-choice variances when they were measured.")
    return Figure("residuals", "residuals", "Residuals per visit", alt, caption, _png(fig))


# -- public API ---------------------------------------------------------------------

def render_figures(store, *, max_bins: int = MAX_MOSAIC_BINS) -> Iterator[Figure]:
    """Render the figures of ``store`` one by one (see the module doc), in a fixed order:
    ``reference_choice``, then per visit ``diff_model_<v>`` and (but the reference)
    ``mosaic_<v>``, then ``residuals``."""
    st = _Store.open(store)
    if not st.models_done or st.reference is None:
        from .errors import StoreError

        raise StoreError(f"{store}: the models are not computed yet; nothing to plot "
                         "(finish the run with bgdask match ... --resume)")
    h, w = st.tract_shape
    grid = _Grid.for_tract(h, w, max_bins)
    yield _fig_reference_choice(st)
    inputs = _Inputs(st)
    ref_mosaic = _visit_mosaic(st, st.reference, grid, None)
    rms: dict[int, tuple[float, float]] = {}
    for v in st.visits:
        m = ref_mosaic if v == st.reference else _visit_mosaic(st, v, grid, inputs)
        yield _fig_diff_model(st, v, m)
        if v != st.reference:
            rms[v] = (_rms(m.diff_before()), _rms(m.diff_after()))
            yield _fig_mosaic(st, v, m, ref_mosaic)
        del m
    yield _fig_residuals(st, rms, grid.factor)


def write_figures(store, outdir) -> list[Path]:
    """Write the PNG figures of ``store`` into ``outdir`` (created); returns their paths.

    File names: ``reference_choice.png``, ``diff_model_<visit>.png``,
    ``mosaic_<visit>.png`` (every visit but the reference), ``residuals.png``.
    Sizes: :data:`FIGURE_SIZES`.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fig in render_figures(store):
        path = outdir / fig.filename
        path.write_bytes(fig.png)
        paths.append(path)
    return paths


# -- the HTML report ---------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1550px;
       color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.l, th.l { text-align: left; }
tr.ref td { background: #fde0dd; font-weight: bold; }
tr.changed td { background: #fff7d6; }
#reference-visit { font-size: 1.6em; margin: 0.6em 0; padding: 0.4em 0.8em; border-left: 6px solid #d62728;
                   background: #fdf1f0; display: inline-block; }
.ok { color: #1a7f37; font-weight: bold; } .bad { color: #c62828; font-weight: bold; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; max-width: 1200px; }
.matrix td { padding: 0 0.3em; text-align: center; font-family: monospace; }
.muted { color: #666; font-size: 0.9em; }
"""

# Sets data attributes on <html> once every image has loaded (or failed): how many
# images there are, how many loaded with a size, and how many are broken. Headless
# browsers (tests) read them from the DOM; nothing is fetched.
_SCRIPT = """
(function () {
  function check() {
    var imgs = Array.prototype.slice.call(document.images);
    var loaded = imgs.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
    var broken = imgs.filter(function (im) { return im.complete && im.naturalWidth === 0; }).length;
    var root = document.documentElement;
    root.setAttribute("data-images-total", imgs.length);
    root.setAttribute("data-images-loaded", loaded);
    root.setAttribute("data-images-broken", broken);
    root.setAttribute("data-images-ok", (loaded === imgs.length) ? "true" : "false");
  }
  window.addEventListener("load", check);
})();
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v):
            return "NaN"
        return f"{v:.4g}"
    if v is None:
        return "None"
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    return str(v)


def _table(headers, rows, row_classes=None, left=()) -> str:
    out = ["<table>"]
    if headers:
        out.append("<tr>" + "".join(f'<th class="{"l" if i in left else ""}">{_e(h)}</th>'
                                    for i, h in enumerate(headers)) + "</tr>")
    for k, row in enumerate(rows):
        cls = (row_classes or {}).get(k)
        out.append(f'<tr class="{cls}">' if cls else "<tr>")
        out.append("".join(f'<td class="{"l" if i in left else ""}">{_e(c)}</td>' for i, c in enumerate(row)))
        out.append("</tr>")
    out.append("</table>")
    return "\n".join(out)


def _config_section(st: _Store) -> str:
    from .config import MatchConfig

    docs = {name: (default, doc) for name, default, doc in MatchConfig.field_docs()}
    rows, classes = [], {}
    for k, name in enumerate(sorted(st.config, key=lambda n: list(docs).index(n) if n in docs else 999)):
        value = st.config[name]
        default, doc = docs.get(name, (None, ""))
        if isinstance(default, tuple):
            default = list(default)
        if name in docs and value != default:
            classes[k] = "changed"
        rows.append([name, _fmt(value), _fmt(default) if name in docs else "", doc])
    return ("<h2>Configuration</h2>\n<p class=\"muted\">attrs[\"config\"] of the store; rows whose value "
            "differs from the default are highlighted.</p>\n"
            + _table(["field", "value", "default", "meaning"], rows, classes, left=(0, 1, 2, 3)))


def _geometry_section(st: _Store) -> str:
    rows = []
    sm = st.skymap or {}
    for key in ("tract", "patch_inner", "patch_border", "num_patches"):
        if key in sm:
            rows.append([key, _fmt(sm[key])])
    h, w = st.tract_shape
    xb, yb = st.bins
    rows.append(["tract size (W x H)", f"{w} x {h} pixels"])
    rows.append(["superpixel grid", f"{h // yb} x {w // xb} superpixels of {xb} x {yb} pixels"])
    rows.append(["patches with warps", str(len(st.patches))])
    rows.append(["visits", str(len(st.visits))])
    return "<h2>Geometry</h2>\n" + _table(None, rows, left=(0, 1))


def _visit_section(st: _Store) -> str:
    headers = ["visit", "status"] + list(TABLE_FIELDS[:-1]) + ["warps", "done", "usable"]
    rows, classes = [], {}
    for k, v in enumerate(st.visits):
        vi = st.visits.index(v)
        row = [v, st.status(v)] + [_fmt(st.value(n, v)) if n in st.table else "" for n in TABLE_FIELDS[:-1]]
        row += [int(st.present[vi].sum()), int((st.done[vi] & st.present[vi]).sum()),
                int((st.usable[vi] & st.done[vi] & st.present[vi]).sum())]
        rows.append(row)
        if v == st.reference:
            classes[k] = "ref"
    note = ("<p class=\"muted\">ref_*: the reference-choice figures (step 3 of docs/algorithm.md; NaN when the reference "
            "was given). n_good, model_mean, model_rms, fit_rms: the difference model (step 5) in nJy. "
            "warps / done / usable: warps present, written completely, with usable pixels.</p>")
    return "<h2>Visits</h2>\n" + note + "\n" + _table(headers, rows, classes, left=(1,))


def _completeness_section(st: _Store) -> str:
    present, done = st.present, st.done & st.present
    n_p, n_d = int(present.sum()), int(done.sum())
    complete = bool(st.attrs.get("complete")) and n_p == n_d
    state = ('<span class="ok">complete</span>' if complete else
             f'<span class="bad">INCOMPLETE</span>: {n_p - n_d} warp(s) not written; finish the run with '
             "<code>bgdask match INPUT -o STORE --resume</code>")
    out = [f"<h2>Completeness</h2>\n<p id=\"completeness\">{state}: {n_d} of {n_p} warps written; "
           f"{int((st.usable & done).sum())} with usable pixels.</p>"]
    if len(st.visits) * len(st.patches) <= 4000:
        head = "<tr><th>visit \\ patch</th>" + "".join(f"<th>{p}</th>" for p in st.patches) + "</tr>"
        body = []
        for vi, v in enumerate(st.visits):
            cells = []
            for pi in range(len(st.patches)):
                if not present[vi, pi]:
                    cells.append("<td></td>")
                elif not done[vi, pi]:
                    cells.append('<td class="bad" title="present, not written">&#9675;</td>')
                elif not st.usable[vi, pi]:
                    cells.append('<td title="written, no usable pixel">&#9680;</td>')
                else:
                    cells.append('<td class="ok" title="written">&#9679;</td>')
            cls = ' class="ref"' if v == st.reference else ""
            body.append(f"<tr{cls}><th>{v}</th>{''.join(cells)}</tr>")
        out.append('<table class="matrix">' + head + "".join(body) + "</table>")
        out.append("<p class=\"muted\">&#9679; written; &#9680; written, no usable pixel; "
                   "&#9675; present, not written yet; empty: the visit has no warp on that patch.</p>")
    return "\n".join(out)


def _times_section(st: _Store, report_path: Path) -> str:
    out = ["<h2>Run time</h2>"]
    times = _attr_json(st.attrs, "stage_times")
    if times:
        rows = [[k, f"{float(v):.2f} s"] for k, v in times.items()]
        out.append(_table(["stage", "wall time"], rows, left=(0,)))
    else:
        out.append("<p class=\"muted\">No stage times recorded in the store.</p>")
    perf = st.attrs.get("performance_report")
    if perf:
        target = Path(str(perf))
        if not target.is_absolute():
            target = (Path(st.path).parent / target)
        try:
            href = os.path.relpath(target.resolve(), report_path.resolve().parent)
        except ValueError:  # another drive (Windows)
            href = target.resolve().as_uri()
        exists = "" if target.exists() else " (file not found)"
        out.append(f'<p id="performance-report">Dask performance report: '
                   f'<a href="{_e(href)}">{_e(target)}</a>{_e(exists)}</p>')
    return "\n".join(out)


def _figures_section(figures: list[Figure]) -> str:
    out = ["<h2>Figures</h2>"]
    for fig in figures:
        data = base64.b64encode(fig.png).decode("ascii")
        w, h = FIGURE_SIZES[fig.kind]
        out.append(
            f'<figure id="fig-{_e(fig.name)}">\n<h3>{_e(fig.title)}</h3>\n'
            f'<img src="data:image/png;base64,{data}" alt="{_e(fig.alt)}" width="{w}" height="{h}" '
            f'data-name="{_e(fig.name)}">\n<figcaption>{_e(fig.caption)}</figcaption>\n</figure>'
        )
    return "\n".join(out)


def write_report(store, path) -> Path:
    """Write one self-contained HTML page about ``store`` to ``path``; returns the path.

    The page holds the reference visit (element ``id="reference-visit"``), the
    configuration, geometry, per-visit table, completeness, stage times, a link
    to the Dask performance report when the store records one
    (``attrs["performance_report"]``: a path, best absolute; a relative one is
    taken relative to the store's parent directory), and every figure of
    :func:`render_figures`, embedded as a PNG data URI. Nothing external is loaded.
    """
    path = Path(path)
    st = _Store.open(store)
    figures: list[Figure] = []
    fig_note = ""
    if st.models_done and st.reference is not None:
        figures = list(render_figures(store))
    else:
        fig_note = "<p class=\"bad\">The models are not computed yet: no figures.</p>"
    ref = st.reference
    how = ("given in the configuration" if st.ref_given() else "chosen by least cost") if ref is not None else ""
    name = Path(st.path).name
    tract = (st.skymap or {}).get("tract")
    title = f"bgdask report: {name}" + (f" (tract {tract})" if tract is not None else "")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        f"<script>{_SCRIPT}</script>",
        "</head>",
        "<body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">store <code>{_e(os.path.abspath(st.path))}</code>; input '
        f'<code>{_e(st.attrs.get("source", "?"))}</code>; bgdask {_e(st.attrs.get("bgdask_version", "?"))}</p>',
        (f'<div id="reference-visit" data-visit="{_e(ref)}">Reference visit: <strong>{_e(ref)}</strong> '
         f'<span class="muted">({_e(how)})</span></div>' if ref is not None else
         '<div id="reference-visit" data-visit="">Reference visit: not chosen yet</div>'),
        _completeness_section(st),
        _visit_section(st),
        _config_section(st),
        _geometry_section(st),
        _times_section(st, path),
        fig_note or _figures_section(figures),
        "</body>",
        "</html>",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


# -- configuration reference ----------------------------------------------------------
