"""Interpolation kernels: 1-D styles with Rubin's extrapolation, gap filling,
Gaussian smoothing of a gappy grid, and separable resampling.

Pure functions of NumPy arrays. Styles are Rubin's names (``CONSTANT``,
``LINEAR``, ``NATURAL_SPLINE``, ``AKIMA_SPLINE``; ``NONE`` behaves as
``CONSTANT``, the nearest point). Beyond the outermost points a style
extrapolates from the end point ``x_e`` by

* ``quadratic`` (Rubin): ``f(x_e) + f'(x_e) dx + f''(x_e) dx**2 / 2``,
* ``linear``: ``f(x_e) + f'(x_e) dx``,
* ``nearest``: ``f(x_e)``,

with the derivatives of the interpolant at the end point.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import EXTRAPOLATIONS, MIN_POINTS, STYLES

__all__ = [
    "STYLES",
    "MIN_POINTS",
    "EXTRAPOLATIONS",
    "UndersampledError",
    "effective_style",
    "interpolate_1d",
    "fill_gaps",
    "smooth_gappy",
    "linear_resample",
    "separable_interpolate",
    "Interpolant",
    "Separable",
]




class UndersampledError(ValueError):
    """Too few points for the interpolation style, and no fallback allowed."""


def effective_style(style: str, n_points: int, reduce_order: bool = True) -> str:
    """The style used for ``n_points`` points: ``style`` itself, or with
    ``reduce_order`` the richest style the count allows."""
    if style not in MIN_POINTS:
        raise ValueError(f"unknown interpolation style {style!r}")
    if n_points >= MIN_POINTS[style]:
        return style
    if not reduce_order:
        raise UndersampledError(
            f"{style} interpolation needs at least {MIN_POINTS[style]} points, got {n_points}"
        )
    for candidate in ("NATURAL_SPLINE", "LINEAR", "CONSTANT"):
        if STYLES.index(candidate) < STYLES.index(style) and n_points >= MIN_POINTS[candidate]:
            return candidate
    raise UndersampledError(f"no interpolation style works with {n_points} points")


def interpolate_1d(
    x: np.ndarray,
    y: np.ndarray,
    xq: np.ndarray,
    style: str = "AKIMA_SPLINE",
    extrapolation: str = "quadratic",
    reduce_order: bool = True,
) -> np.ndarray:
    """Interpolate samples ``y`` at increasing ``x`` to ``xq``.

    ``y`` may be 2-D, shape (len(x), m): every column is interpolated at
    once and the result has shape (len(xq), m).
    """
    return Interpolant(x, y, style, extrapolation, reduce_order)(xq)


class Interpolant:
    """Samples ``y`` at increasing ``x`` (``y`` 1-D or (len(x), m)) made
    ready to interpolate, so that several calls share the work of building
    the interpolant: ``Interpolant(x, y, ...)(xq)`` is ``interpolate_1d(x, y, xq, ...)``,
    bit for bit."""

    def __init__(self, x, y, style: str = "AKIMA_SPLINE", extrapolation: str = "quadratic",
                 reduce_order: bool = True):
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.ndim != 1 or y.shape[0] != x.shape[0]:
            raise ValueError("x must be 1-D and match y's first axis")
        if x.size > 1 and not np.all(np.diff(x) > 0):
            raise ValueError("x must be strictly increasing")
        self.x, self.y, self.extrapolation = x, y, extrapolation
        self.style = style = effective_style(style, x.size, reduce_order)
        if style in ("NONE", "CONSTANT"):
            self.interp = None
        elif style == "LINEAR":
            self.interp = _Linear(x, y)
        elif style == "NATURAL_SPLINE":
            from scipy.interpolate import CubicSpline

            self.interp = CubicSpline(x, y, axis=0, bc_type="natural", extrapolate=True)
        else:
            self.interp = _AkimaSpline(x, y)

    def __call__(self, xq) -> np.ndarray:
        x, interp = self.x, self.interp
        xq = np.asarray(xq, dtype=np.float64)
        if interp is None:
            return _nearest(x, self.y, xq)
        out = _evaluate(interp, xq)
        lo, hi = xq < x[0], xq > x[-1]
        for mask, xe in ((lo, x[0]), (hi, x[-1])):
            if np.any(mask):
                out[mask] = _extrapolate(interp, xe, xq[mask], self.extrapolation)
        return out


def _evaluate(interp, xq: np.ndarray) -> np.ndarray:
    """``interp(xq)``; for scipy's natural spline along axis 0 with many
    columns (the offsets of a warp's rows), a compiled loop that does
    scipy's arithmetic in scipy's order, so the values are bitwise scipy's
    (:class:`_AkimaSpline` evaluates with the same loop itself)."""
    c = getattr(interp, "c", None)
    if (isinstance(interp, _AkimaSpline) or c is None or c.ndim != 3 or c.dtype != np.float64
            or getattr(interp, "axis", 0) != 0 or c.shape[2] < 64 or xq.size < 16):
        return interp(xq)
    out = np.empty((xq.size, c.shape[2]), dtype=np.float64)
    _ppoly_eval(np.ascontiguousarray(c), np.ascontiguousarray(interp.x, dtype=np.float64),
                np.ascontiguousarray(xq), 0, out)
    return out


class _AkimaSpline:
    """scipy's ``Akima1DInterpolator(x, y, axis=0, extrapolate=True)``, bit
    for bit, without importing scipy.interpolate (0.4-0.7 s in every process
    that models a background) nor its per-call costs (a row of
    :func:`fill_gaps` in 74 µs rather than 830 µs): the slopes and the coefficients computed with
    the NumPy expressions of scipy's ``Akima1DInterpolator`` and
    ``CubicHermiteSpline`` (checked with scipy 1.17; a slope is defined where
    ``f1 + f2 > 1e-9 * max(f1 + f2)``, the maximum over every column), the
    evaluation and its derivatives by :func:`_ppoly_eval`. At least 3
    points; non-finite samples or slopes are refused with scipy's messages."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        if not np.isfinite(x).all():
            raise ValueError("`x` must contain only finite values.")
        if not np.isfinite(y).all():
            raise ValueError("`y` must contain only finite values.")
        dx = np.diff(x)
        dxr = dx.reshape((-1,) + (1,) * (y.ndim - 1))
        m = np.empty((x.shape[0] + 3,) + y.shape[1:])
        m[2:-2] = np.diff(y, axis=0) / dxr
        m[1] = 2. * m[2] - m[3]
        m[0] = 2. * m[1] - m[2]
        m[-2] = 2. * m[-3] - m[-4]
        m[-1] = 2. * m[-2] - m[-3]
        t = .5 * (m[3:] + m[:-3])
        dm = np.abs(np.diff(m, axis=0))
        f1, f2 = dm[2:], dm[:-2]
        f12 = f1 + f2
        ind = np.nonzero(f12 > 1.e-9 * (np.max(f12) if f12.size else -np.inf))
        x_ind, y_ind = ind[0], ind[1:]
        t[ind] = m[(x_ind + 1,) + y_ind] + ((f2[ind] / f12[ind]) * (m[(x_ind + 2,) + y_ind] - m[(x_ind + 1,) + y_ind]))
        if not np.isfinite(t).all():
            raise ValueError("`dydx` must contain only finite values.")
        slope = m[2:-2]            # scipy's CubicHermiteSpline computes it again: the same bits
        tt = (t[:-1] + t[1:] - 2 * slope) / dxr
        self.x = x
        self.c = np.stack((tt / dxr, (slope - t[:-1]) / dxr - tt, t[:-1], y[:-1]))   # C-contiguous

    def __call__(self, xq, nu: int = 0) -> np.ndarray:
        xq = np.asarray(xq, dtype=np.float64)
        c = self.c.reshape(4, self.x.shape[0] - 1, -1)   # a view: columns as the last axis
        out = np.empty((xq.size, c.shape[2]), dtype=np.float64)
        _ppoly_eval(c, self.x, np.ascontiguousarray(xq.ravel()), nu, out)
        return out.reshape(xq.shape + self.c.shape[2:])


@njit(nogil=True, cache=True, error_model="numpy")
def _ppoly_eval(c, x, xq, nu, out):
    """scipy.interpolate's PPoly evaluation (``_ppoly.evaluate``, the
    ``nu``-th derivative, extrapolating): the interval with x[i] <= xq <
    x[i + 1] (the first or last beyond the ends, the last at x[-1]), then
    res = 0.0, and res = res + c[k-1-j] * s**(j-nu) * j!/(j-nu)! for j = nu
    .. k-1, with s**(j-nu) built by repeated multiplication and the factor
    as a product of floats, as scipy does."""
    k, _, m = c.shape
    nx = x.shape[0]
    z = np.empty(k)
    f = np.empty(k)       # j!/(j-nu)!, the same for every query
    for kp in range(k):
        prefactor = 1.0
        for kk in range(kp, kp - nu, -1):
            prefactor *= kk
        f[kp] = prefactor
    for ip in range(xq.shape[0]):
        xv = xq[ip]
        if not (x[0] <= xv <= x[nx - 1]):
            if xv < x[0]:
                i = 0
            elif xv > x[nx - 1]:
                i = nx - 2
            else:
                for jp in range(m):
                    out[ip, jp] = np.nan
                continue
        elif xv == x[nx - 1]:
            i = nx - 2
        else:
            lo, hi = 0, nx - 2
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if xv < x[mid]:
                    hi = mid - 1
                else:
                    lo = mid
            i = lo
        s = xv - x[i]
        zz = 1.0
        for kp in range(k):
            z[kp] = zz
            if kp < k - 1 and kp >= nu:
                zz *= s
        for jp in range(m):
            out[ip, jp] = 0.0
        for kp in range(nu, k):
            zk, fk = z[kp], f[kp]
            for jp in range(m):
                out[ip, jp] = out[ip, jp] + c[k - 1 - kp, i, jp] * zk * fk


def _nearest(x, y, xq):
    if x.size == 1:
        return np.broadcast_to(y[0], (xq.size,) + y.shape[1:]).copy()
    right = np.clip(np.searchsorted(x, xq), 1, x.size - 1)
    left = right - 1
    # ties go to the left point
    idx = np.where(xq - x[left] <= x[right] - xq, left, right)
    return y[idx].copy()


def _extrapolate(interp, xe, xq, mode):
    y0 = interp(np.array([xe]))[0]
    if mode == "nearest":
        return np.broadcast_to(y0, (xq.size,) + np.shape(y0)).copy()
    dx = (xq - xe).reshape((-1,) + (1,) * np.ndim(y0))
    d1 = interp(np.array([xe]), 1)[0]
    out = y0 + dx * d1
    if mode == "quadratic":
        d2 = interp(np.array([xe]), 2)[0]
        out = out + 0.5 * dx * dx * d2
    elif mode != "linear":
        raise ValueError(f"unknown extrapolation {mode!r}")
    return out


class _Linear:
    """Piecewise-linear interpolant with derivatives, like scipy's PPoly."""

    def __init__(self, x, y):
        self.x, self.y = x, y
        self.slope = np.diff(y, axis=0) / np.diff(x).reshape((-1,) + (1,) * (y.ndim - 1))

    def __call__(self, xq, nu=0):
        i = np.clip(np.searchsorted(self.x, xq, side="right") - 1, 0, self.x.size - 2)
        if nu == 1:
            return self.slope[i]
        if nu >= 2:
            return np.zeros_like(self.slope[i])
        dx = (xq - self.x[i]).reshape((-1,) + (1,) * (self.y.ndim - 1))
        return self.y[i] + dx * self.slope[i]


def fill_gaps(
    values: np.ndarray,
    good: np.ndarray,
    xc: np.ndarray,
    yc: np.ndarray,
    style: str = "AKIMA_SPLINE",
    extrapolation: str = "quadratic",
    reduce_order: bool = True,
) -> np.ndarray:
    """Fill the bad cells of a 2-D grid: along each row through that row's
    good values, then along each column for what is still undefined.

    ``xc``, ``yc`` are the cell centres along x and y. Cells of a row or
    column with no good value stay NaN after that pass.
    """
    out = np.where(good, values, np.nan).astype(np.float64)
    for j in range(out.shape[0]):
        ok = np.isfinite(out[j])
        if ok.any() and not ok.all():
            out[j, ~ok] = interpolate_1d(xc[ok], out[j, ok], xc[~ok], style, extrapolation, reduce_order)
    for i in range(out.shape[1]):
        ok = np.isfinite(out[:, i])
        if ok.any() and not ok.all():
            out[~ok, i] = interpolate_1d(yc[ok], out[ok, i], yc[~ok], style, extrapolation, reduce_order)
    return out


def smooth_gappy(values: np.ndarray, good: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian smoothing that ignores bad cells (normalised convolution).

    Returns the smoothed values and the cells that are defined after
    smoothing (some good cell within the kernel's reach).
    """
    from scipy.ndimage import gaussian_filter

    w = good.astype(np.float64)
    v = np.where(good, values, 0.0)
    num = gaussian_filter(v * w, sigma, mode="constant", cval=0.0)
    den = gaussian_filter(w, sigma, mode="constant", cval=0.0)
    defined = den > 1e-12 * max(den.max(), 1e-300)
    out = np.full(values.shape, np.nan)
    out[defined] = num[defined] / den[defined]
    return out, defined


def linear_resample(grid: np.ndarray, centers: np.ndarray, xq: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``grid`` along ``axis`` from sample positions
    ``centers`` (evenly spaced) to ``xq``, extrapolating linearly past the
    ends. One sample gives a constant."""
    grid = np.moveaxis(np.asarray(grid, dtype=np.float64), axis, 0)
    n = centers.size
    if n == 1:
        out = np.broadcast_to(grid[:1], (xq.size,) + grid.shape[1:]).copy()
        return np.moveaxis(out, 0, axis)
    step = centers[1] - centers[0]
    t = (xq - centers[0]) / step
    i0 = np.clip(np.floor(t).astype(np.int64), 0, n - 2)
    f = (t - i0).reshape((-1,) + (1,) * (grid.ndim - 1))
    out = grid[i0] * (1.0 - f) + grid[i0 + 1] * f
    return np.moveaxis(out, 0, axis)


def separable_interpolate(
    grid: np.ndarray,
    xc: np.ndarray,
    yc: np.ndarray,
    xq: np.ndarray,
    yq: np.ndarray,
    style: str = "AKIMA_SPLINE",
    extrapolation: str = "quadratic",
    reduce_order: bool = True,
) -> np.ndarray:
    """Interpolate a fully defined grid (len(yc), len(xc)) to the points
    ``yq`` x ``xq``: along rows (x) first, then along columns (y)."""
    return Separable(grid, xc, yc, xq, style, extrapolation, reduce_order)(yq)


class Separable:
    """:func:`separable_interpolate` of a grid to the columns ``xq``, made
    ready for any rows: the pass along x and the interpolant along y are
    built once; ``Separable(grid, xc, yc, xq, ...)(yq)`` is
    ``separable_interpolate(grid, xc, yc, xq, yq, ...)``, bit for bit, for
    every part of ``yq`` (each row is evaluated on its own)."""

    def __init__(self, grid, xc, yc, xq, style: str = "AKIMA_SPLINE", extrapolation: str = "quadratic",
                 reduce_order: bool = True):
        rows = interpolate_1d(xc, grid.T, xq, style, extrapolation, reduce_order)  # (len(xq), len(yc))
        self._along_y = Interpolant(yc, rows.T, style, extrapolation, reduce_order)

    def __call__(self, yq) -> np.ndarray:
        return self._along_y(yq)  # (len(yq), len(xq))
