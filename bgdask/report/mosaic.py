"""Binned tract mosaics of one visit: before and after matching, and against the reference.

The detail figures of a visit (:mod:`bgdask.report.figures`) show the tract
binned ``factor x factor`` pixels: the visit's matched image (the store),
its input image (the warps the store records as its source) and
``reference - visit`` before and after matching. Memory stays bounded
whatever the tract: warps are read one row block of one warp at a time (the
store's chunk rows), binned into the small mosaic (at most
:data:`MAX_MOSAIC_BINS` bins a side) and dropped. Only the patches' inner
boxes are binned: they tile the tract, so no pixel counts twice.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from ..io.store import Store

__all__ = ["MAX_MOSAIC_BINS", "MOSAIC_EXTRA_PLANES", "MosaicGrid", "VisitMosaic", "InputWarps", "visit_mosaic",
           "rms"]

#: The binned mosaics have at most this many bins along the tract's longer side.
MAX_MOSAIC_BINS = 300
#: Planes left out of the binned mosaics besides the configuration's bad planes
#: (sources would otherwise dominate the sky level of a bin).
MOSAIC_EXTRA_PLANES = ("DETECTED",)


@dataclass(frozen=True)
class MosaicGrid:
    """The mosaic grid: ``factor`` x ``factor`` tract pixels per bin over a
    tract of ``height`` x ``width`` pixels (the last bins may be partial)."""

    factor: int
    height: int
    width: int

    @classmethod
    def for_tract(cls, height: int, width: int, max_bins: int = MAX_MOSAIC_BINS) -> "MosaicGrid":
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

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Bin edges in tract pixel coordinates (pixel (x, y) spans x - 1/2 .. x + 1/2),
        the last ones at the tract's edge."""
        ny, nx = self.shape
        f = self.factor
        return (np.minimum(np.arange(nx + 1) * f, self.width) - 0.5,
                np.minimum(np.arange(ny + 1) * f, self.height) - 0.5)

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        xe, ye = self.edges()
        return 0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1])


@dataclass
class VisitMosaic:
    """Sums and counts on the mosaic grid for one visit (flattened)."""

    grid: MosaicGrid
    cover: np.ndarray          # finite pixels of the matched image
    n: np.ndarray              # valid pixels (finite, no bad plane)
    s_after: np.ndarray
    s_before: np.ndarray | None
    n_before: np.ndarray | None
    n_diff: np.ndarray | None  # valid in both the visit and the reference
    s_diff_after: np.ndarray | None
    s_diff_before: np.ndarray | None
    s_var: np.ndarray | None   # sum of var_ref + var_visit over those pixels
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
        return None if self.s_diff_before is None else self._mean(self.s_diff_before, self.n_diff)

    def diff_after_sigma(self) -> np.ndarray | None:
        """The binned reference - visit after matching over its standard error
        from the variance planes, sqrt(sum(var_ref + var_visit)) / n."""
        if self.s_diff_after is None:
            return None
        mean = self._mean(self.s_diff_after, self.n_diff)
        with np.errstate(invalid="ignore", divide="ignore"):
            error = np.sqrt(self.s_var) / self.n_diff
        return mean / error.reshape(mean.shape)

    def coverage(self) -> np.ndarray:
        ny, nx = self.grid.shape
        return (self.cover / self.grid.pixels_per_bin().ravel()).reshape(ny, nx)

    def overlap(self) -> np.ndarray | None:
        if self.n_diff is None:
            return None
        ny, nx = self.grid.shape
        return (self.n_diff / self.grid.pixels_per_bin().ravel()).reshape(ny, nx)


class InputWarps:
    """The input warps of a store (its ``source`` attribute), opened lazily
    with :func:`bgdask.open_warps`; ``note`` says why they are not available."""

    def __init__(self, store: Store):
        self.ds = None
        self.note = None
        source = store.attrs.get("source")
        if not source:
            self.note = "the store does not record its input warps"
            return
        if not os.path.exists(source):
            self.note = f"the input warps are no longer at\n{source}"
            return
        try:
            from ..collection import open_warps

            self.ds = open_warps(source, skymap=store.skymap, chunks={"y": store.chunk_rows})
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


def visit_mosaic(store: Store, visit: int, grid: MosaicGrid, inputs: InputWarps | None) -> VisitMosaic:
    """Bin visit ``visit`` (and, against the reference, ``reference - visit``) on ``grid``.

    Reads, per warp of the visit and per row block of its inner box: the
    matched image and mask (store), the input image (``inputs``), the
    reference's matched image and mask (store; the reference is unchanged by
    matching)."""
    from ..masks import plane_bits

    visits, patches = store.visits, store.patches
    present, done = store.present, store.done()
    vi = visits.index(visit)
    ref = store.reference_visit
    ri = visits.index(ref) if ref is not None and ref in visits and ref != visit else None
    cfg, sky = store.config, store.skymap
    bad = plane_bits(store.mask_planes, list(cfg.bad_mask_planes) + list(MOSAIC_EXTRA_PLANES))
    size = grid.size
    zeros = lambda: np.zeros(size)  # noqa: E731
    cover, n, s_after = zeros(), zeros(), zeros()
    with_before = inputs is not None and inputs.ds is not None
    s_before, n_before = (zeros(), zeros()) if with_before else (None, None)
    if ri is not None:
        n_diff, s_da, s_var = zeros(), zeros(), zeros()
        s_db = zeros() if with_before else None
    else:
        n_diff = s_da = s_db = s_var = None
    f = grid.factor
    nx_bins = grid.shape[1]
    rows = store.chunk_rows
    for pi, p in enumerate(patches):
        if not (present[vi, pi] and done[vi, pi]):
            continue
        box = store.boxes[p]
        inner = sky.inner_box(p)
        c0, c1 = inner.x0 - box.x0, inner.x1 - box.x0          # inner columns, warp-local
        r_lo, r_hi = inner.y0 - box.y0, inner.y1 - box.y0      # inner rows, warp-local
        with_ref = ri is not None and present[ri, pi] and done[ri, pi]
        own = store.warp_source(visit, p)
        other = store.warp_source(ref, p) if with_ref else None
        xbin = (np.arange(inner.x0, inner.x1) // f).astype(np.int64)
        # row blocks aligned with the store's chunks, clipped to the inner box
        for b0 in range((r_lo // rows) * rows, r_hi, rows):
            r0, r1 = max(b0, r_lo), min(b0 + rows, r_hi)
            ybin = ((np.arange(r0, r1) + box.y0) // f).astype(np.int64)
            idx = (ybin[:, None] * nx_bins + xbin[None, :]).ravel()
            img = np.asarray(own.read("image", slice(r0, r1))[:, c0:c1], dtype=np.float64).ravel()
            msk = own.read("mask", slice(r0, r1))[:, c0:c1].ravel()
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
            if other is not None:
                rimg = np.asarray(other.read("image", slice(r0, r1))[:, c0:c1], dtype=np.float64).ravel()
                rmsk = other.read("mask", slice(r0, r1))[:, c0:c1].ravel()
                both = ok & np.isfinite(rimg) & ((rmsk & bad) == 0)
                if before is not None:
                    both &= np.isfinite(before)
                var = (np.asarray(own.read("variance", slice(r0, r1))[:, c0:c1], dtype=np.float64)
                       + other.read("variance", slice(r0, r1))[:, c0:c1]).ravel()
                both &= np.isfinite(var)
                n_diff += np.bincount(idx, weights=both, minlength=size)
                s_da += np.bincount(idx[both], weights=rimg[both] - img[both], minlength=size)
                s_var += np.bincount(idx[both], weights=var[both], minlength=size)
                if s_db is not None and before is not None:
                    s_db += np.bincount(idx[both], weights=rimg[both] - before[both], minlength=size)
    return VisitMosaic(grid, cover, n, s_after, s_before, n_before, n_diff, s_da, s_db, s_var,
                       before_note=None if with_before else (inputs.note if inputs else None))


def rms(a: np.ndarray | None) -> float:
    """Root mean square of the finite values of ``a`` (NaN when there are none)."""
    if a is None:
        return float("nan")
    v = a[np.isfinite(a)]
    return float(np.sqrt(np.mean(v * v))) if v.size else float("nan")
