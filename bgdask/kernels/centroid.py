"""Where a superpixel's value sits: window sums of pixel positions (issue 18).

A superpixel's clipped mean is the sky at the centroid of the pixels it
counted, not at the superpixel's centre: where a window is only partly
covered (a footprint's edge, a chip gap, a masked star, the edge of an
overlap) the two differ by up to half a window. :func:`window_sums` gives,
per superpixel window, the number of counted pixels and the sums of their
tract x and y, so that ``SX / N``, ``SY / N`` is that centroid; with the
window geometry of :func:`bgdask.kernels.stats.superpixel_stats` exactly
(same ``window_scale``, same clipping to the box, same block of superpixels),
so its blocks add on the tract grid like the statistics' ``S, N, V``.

Positions follow the project's convention: pixel (x, y) of the tract sits at
(x, y) (see :mod:`bgdask.simulate`), and the offsets are evaluated there
(:func:`bgdask.background.offset_rows`). Superpixel ``ix`` is centred on
``(ix + 0.5) * x_bin`` (:func:`bgdask.geometry.superpixel_centers`), while a
fully covered window's pixels have their centroid at ``(ix + 0.5) * x_bin -
0.5``: a centred value is placed half a pixel off even with full coverage.

Also returned: ``F``, the finite pixels per window (counted or not: a BAD
column's pixels are finite but not counted, and need an offset all the
same), which gives the superpixels where a visit needs a model; and
optionally ``SP``, the sum of another plane (e.g. the variance planes of a
difference's two warps) over the counted pixels.

The sums are over the *counted* pixels (finite and not bad), before clipping.
The clipped pixels are mostly sources and cosmic rays, scattered at random
within the window: ``benchmarks/bench_centroid.py`` measures how far the
centroid of the pixels that survive clipping lies from this one.

One numba pass over the pixels (``nogil``, no ``parallel``) accumulates per
*cell* (the pieces into which the windows' clipped limits cut the box, as in
the statistics kernel) integer sums, then adds each window's cells: the
counts and coordinate sums are exact integers, so results are bitwise
reproducible and independent of any grouping of the warps.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from . import PLACEMENTS
from .stats import _block_range, _cells, checked_block
from ..errors import ConfigError

__all__ = ["WindowSums", "window_sums", "centroids", "recentre_values", "PLACEMENTS", "RECENTRE_METHODS"]


_JIT = dict(nogil=True, cache=True, error_model="numpy")


class WindowSums(NamedTuple):
    """Position sums of one image on a block of the tract superpixel grid
    (the same block as :func:`~bgdask.kernels.stats.superpixel_stats`)."""

    N: np.ndarray   #: float64 (nby, nbx): counted pixels (finite, not bad)
    SX: np.ndarray  #: float64: sum of the tract x of the counted pixels
    SY: np.ndarray  #: float64: sum of the tract y of the counted pixels
    F: np.ndarray   #: float64: finite pixels (counted or not)
    SP: np.ndarray | None  #: float64: sum of ``plane`` over the counted pixels, or None
    iy0: int
    ix0: int


def _lookup(edges: np.ndarray, used: np.ndarray, length: int) -> np.ndarray:
    """Cell index of every local position (-1 outside a used cell)."""
    out = np.full(length, -1, dtype=np.int64)
    for k in range(edges.size - 1):
        if used[k]:
            out[edges[k]:edges[k + 1]] = k
    return out


@njit(**_JIT)
def _cell_sums(image, bad, plane, has_plane, rowcell, colcell, ncy, ncx):
    cn = np.zeros((ncy, ncx), dtype=np.int64)
    cx_ = np.zeros((ncy, ncx), dtype=np.int64)
    cy_ = np.zeros((ncy, ncx), dtype=np.int64)
    cf = np.zeros((ncy, ncx), dtype=np.int64)
    cp = np.zeros((ncy, ncx), dtype=np.float64)
    h, w = image.shape
    for r in range(h):
        ky = rowcell[r]
        if ky < 0:
            continue
        for c in range(w):
            kx = colcell[c]
            if kx < 0:
                continue
            v = np.float64(image[r, c])
            if v - v == 0.0:  # finite
                cf[ky, kx] += 1
                if not bad[r, c]:
                    cn[ky, kx] += 1
                    cx_[ky, kx] += c
                    cy_[ky, kx] += r
                    if has_plane:
                        cp[ky, kx] += np.float64(plane[r, c])
    return cn, cx_, cy_, cf, cp


@njit(**_JIT)
def _window_add(cn, cx_, cy_, cf, cp, cy0s, cy1s, cx0s, cx1s, x0, y0):
    nby = cy0s.size
    nbx = cx0s.size
    N = np.zeros((nby, nbx))
    SX = np.zeros((nby, nbx))
    SY = np.zeros((nby, nbx))
    F = np.zeros((nby, nbx))
    SP = np.zeros((nby, nbx))
    for j in range(nby):
        for i in range(nbx):
            n = 0
            sx = 0
            sy = 0
            f = 0
            sp = 0.0
            for ky in range(cy0s[j], cy1s[j]):
                for kx in range(cx0s[i], cx1s[i]):
                    n += cn[ky, kx]
                    sx += cx_[ky, kx]
                    sy += cy_[ky, kx]
                    f += cf[ky, kx]
                    sp += cp[ky, kx]
            N[j, i] = n
            SX[j, i] = sx + n * x0  # exact integers up to 2**53
            SY[j, i] = sy + n * y0
            F[j, i] = f
            SP[j, i] = sp
    return N, SX, SY, F, SP


def window_sums(image, bad, x0, y0, grid_shape, x_bin, y_bin, *, window_scale=2.0,
                plane=None) -> WindowSums:
    """Counted pixels and the sums of their tract x and y, per superpixel window.

    Parameters are those of :func:`~bgdask.kernels.stats.superpixel_stats`
    (``image`` float32/float64, ``bad`` bool, the box's origin ``x0, y0``,
    the tract grid's ``grid_shape``, the bins and ``window_scale``); a pixel
    is counted when it is finite and not ``bad``, exactly as there.
    ``plane``: an optional array of the image's shape whose values are summed
    over the counted pixels (``SP``).

    Returns
    -------
    WindowSums
        Over the superpixels ``iy0 <= iy < iy0 + nby``, ``ix0 <= ix < ix0 +
        nbx`` whose window meets the box (the statistics kernel's block):
        ``N``, ``SX``, ``SY``, ``F`` and ``SP`` (None without ``plane``).
    """
    image, bad, x0, y0, ny, nx, x_bin, y_bin, wx, wy = checked_block(image, bad, x0, y0, grid_shape, x_bin,
                                                                     y_bin, window_scale)
    has_plane = plane is not None
    if has_plane:
        plane = np.ascontiguousarray(plane)
        if plane.dtype.kind != "f" or not plane.dtype.isnative:
            plane = plane.astype(np.float64)
        if plane.shape != image.shape:
            raise ValueError(f"plane has shape {plane.shape}, image has shape {image.shape}")
    else:
        plane = np.zeros((1, 1))
    h, w = image.shape
    ix0, nbx = _block_range(nx, x_bin, wx, x0, w)
    iy0, nby = _block_range(ny, y_bin, wy, y0, h)
    if nbx == 0 or nby == 0:
        empty = np.zeros((nby, nbx))
        return WindowSums(empty, empty.copy(), empty.copy(), empty.copy(),
                          empty.copy() if has_plane else None, iy0, ix0)
    ex, usedx, cx0s, cx1s = _cells(x_bin, wx, x0, w, ix0, nbx)
    ey, usedy, cy0s, cy1s = _cells(y_bin, wy, y0, h, iy0, nby)
    rowcell = _lookup(ey, usedy, h)
    colcell = _lookup(ex, usedx, w)
    cells = _cell_sums(image, bad, plane, has_plane, rowcell, colcell, ey.size - 1, ex.size - 1)
    N, SX, SY, F, SP = _window_add(*cells, cy0s, cy1s, cx0s, cx1s, x0, y0)
    return WindowSums(N, SX, SY, F, SP if has_plane else None, iy0, ix0)


def centroids(SX, SY, N):
    """Centroid (x, y) of the counted pixels, NaN where ``N == 0``."""
    N = np.asarray(N, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = np.where(N > 0, np.asarray(SX) / N, np.nan)
        cy = np.where(N > 0, np.asarray(SY) / N, np.nan)
    return cx, cy


#: Ways of moving values from their centroids to the nodes, for a method
#: that needs values *at* the nodes (the reference method's tensor-product
#: spline): see :func:`recentre_values`.
RECENTRE_METHODS = ("none", "gradient", "fit", "scattered")
#: Most passes of the gradient correction (each re-estimates the gradient
#: from the corrected values; a fixed-point iteration that shrinks the error
#: by about shift / (2 bin) per pass) and the change that stops it.
GRADIENT_PASSES = 30
GRADIENT_TOL = 1e-10


def _node_gradient(values, good, xc, yc):
    """d/dx and d/dy of the gappy grid at every node: the good values filled
    along rows then columns (Akima, linear beyond the ends), then central
    differences (one-sided at the edges). NaN where undefined -> 0."""
    from .interp import fill_gaps

    filled = fill_gaps(values, good, xc, yc, "AKIMA_SPLINE", "linear")
    gx = np.gradient(filled, xc, axis=1) if xc.size > 1 else np.zeros_like(filled)
    gy = np.gradient(filled, yc, axis=0) if yc.size > 1 else np.zeros_like(filled)
    return np.nan_to_num(gx), np.nan_to_num(gy)


def recentre_values(values, good, cx, cy, x_bin, y_bin, *, method="fit", weights=None,
                    smoothness=None):
    """Values measured at the centroids ``(cx, cy)`` of the good nodes, moved to the nodes.

    ``values``, ``good``, ``cx``, ``cy``: (ny, nx) grids (tract coordinates).
    Returns a grid equal to ``values`` except at the good nodes:

    * ``none``: unchanged (a centroid's value read as the node's: Rubin's);
    * ``gradient``: ``value - grad . (centroid - node)``, the gradient taken
      at the node from the grid of corrected values (iterated towards a
      fixed point while the passes contract, at most :data:`GRADIENT_PASSES`):
      the first-order Taylor correction;
    * ``fit`` (the default: the most accurate, see docs/global.md): a
      smoothing fit on the grid with the values at their centroids (bilinear
      stencils, ``weights``, thin-plate prior of ``smoothness``, by default
      :data:`bgdask.kernels.solve.DEFAULT_SMOOTHNESS`, as in
      :func:`bgdask.kernels.solve.solve_global`), read at the nodes;
    * ``scattered``: a Clough-Tocher interpolant of the scattered values,
      read at the nodes (outside the values' convex hull: ``gradient``).
    """
    if method not in RECENTRE_METHODS:
        raise ConfigError(f"recentre method must be one of {list(RECENTRE_METHODS)}, got {method!r}")
    values = np.asarray(values, dtype=np.float64)
    good = np.asarray(good, dtype=bool) & np.isfinite(values) & np.isfinite(cx) & np.isfinite(cy)
    ny, nx = values.shape
    xc = (np.arange(nx) + 0.5) * x_bin
    yc = (np.arange(ny) + 0.5) * y_bin
    out = values.copy()
    if method == "none" or not good.any():
        return out
    dx = np.where(good, cx - xc[None, :], 0.0)
    dy = np.where(good, cy - yc[:, None], 0.0)
    if method in ("gradient", "scattered"):
        est = values.copy()
        scale = max(float(np.max(np.abs(values[good]))), 1.0)
        last = np.inf
        for _ in range(GRADIENT_PASSES):
            gx, gy = _node_gradient(est, good, xc, yc)
            new = np.where(good, values - gx * dx - gy * dy, values)
            change = float(np.max(np.abs(new - est)[good]))
            if not change < last:   # no longer contracting (large shifts): keep the last estimate
                break
            est, last = new, change
            if change <= GRADIENT_TOL * scale:
                break
        out = est
        if method == "scattered" and good.sum() >= 3:
            from scipy.interpolate import CloughTocher2DInterpolator

            pts = np.column_stack([cx[good], cy[good]])
            try:
                f = CloughTocher2DInterpolator(pts, values[good])
            except Exception:  # noqa: BLE001 - degenerate point sets (collinear): keep the gradient's
                return out
            gy_, gx_ = np.nonzero(good)
            got = f(np.column_stack([xc[gx_], yc[gy_]]))
            ok = np.isfinite(got)
            out[gy_[ok], gx_[ok]] = got[ok]
        return out
    # fit: the global solve with one pair (a pseudo-reference and this grid)
    from .solve import DEFAULT_SMOOTHNESS, PairData, solve_global

    if smoothness is None:
        smoothness = DEFAULT_SMOOTHNESS

    w = np.where(good, 1.0 if weights is None else np.asarray(weights, dtype=np.float64), 0.0)
    good &= w > 0
    n = np.where(good, 1.0, 0.0)
    var = np.where(good, 1.0 / np.where(good, w, 1.0), 0.0)
    pair = PairData(-1, 0, S=np.where(good, values, 0.0), N=n, V=var * n,
                    SX=np.where(good, cx, 0.0), SY=np.where(good, cy, 0.0))
    sol = solve_global([pair], {-1: good, 0: good}, -1, x_bin, y_bin, min_count=1.0,
                       smoothness=smoothness, placement="centroid")
    out[good] = sol.grids[0][good]
    return out
