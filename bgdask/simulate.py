"""Synthetic tracts with known truth: warps of several visits over one tract.

:func:`make_tract` builds, deterministically for a seed, the warps of
``n_visits`` visits over a tract of ``num_patches`` patches, together with the
truth they were made from; :func:`write_tract` writes them as afw-format FITS
files with a manifest, a skymap file and the truth; :func:`simulate` does both.

Conventions (all positions in tract pixel coordinates, arrays indexed [y, x]):

- A pixel's position is its integer index: pixel (x, y) is centred on (x, y).
- **Sky.** Visit v's sky is ``level + gx*u + gy*v + cxx*u**2 + cyy*v**2 +
  cxy*u*v`` with ``u = x / W - 0.5`` and ``v = y / H - 0.5`` (W x H: the
  tract's size), see :class:`VisitTruth`. The image of a warp is
  ``sky + sources + noise``, except in masked special pixels (below).
- **Footprint.** Each visit covers a focal-plane footprint: an octagon (a
  rotated rectangle with cut corners) with a square grid of chip gaps in the
  focal-plane frame. The first ``n_full`` visits (default one) cover the
  whole tract; with ``partial=True`` the others cover only part of it and miss
  at least one patch entirely (when the tract has more than one patch). A
  (visit, patch) warp exists only when the visit covers at least one pixel of
  the patch's outer box with data; there is no Warp at all otherwise.
  :meth:`SimulatedTract.footprint` is the set of pixels covered *with data*
  (inside the octagon and outside the chip gaps); ``chip_gaps=False`` gives
  the octagon alone.
- **No data.** Pixels outside the footprint or in a chip gap have image NaN,
  variance NaN and the NO_DATA bit, and no other bit. Exactly these pixels are
  NaN: nothing else in a warp is NaN.
- **EDGE**: covered pixels within ``EDGE_WIDTH`` pixels of the octagon's
  boundary or of a chip gap.
- **Sources**: one catalog for the tract (stars, galaxies, a few bright
  stars), the same for every visit, rendered with a per-visit Gaussian PSF
  (elliptical Gaussian galaxies convolved with it), sampled at pixel centres
  and truncated where the profile drops below ``1e-3 * noise_sigma``. Where
  ``sky + sources`` reaches :data:`SATURATION` the image is clipped to it and
  the pixel gets SAT. DETECTED marks pixels whose noiseless source flux
  exceeds ``DETECT_NSIGMA * noise_sigma``, and saturated pixels.
- **Noise**: Gaussian, variance ``noise_sigma**2 + SHOT_NOISE * sources``; the
  variance plane holds exactly that variance (float32). Noise is drawn on
  tract-aligned tiles (the patches' inner boxes), seeded by (seed, visit
  index, tile), so the warps of one visit agree bit for bit on the pixels they
  share.
- **BAD**: a few column segments per visit, image :data:`BAD_VALUE` (garbage).
- **CR | INTRP**: a few short cosmic-ray streaks per tile whose pixels were
  "interpolated": their values are the ordinary sky + sources + noise.
- **Mask bits** differ between visits: each visit (but the first, which keeps
  Rubin's usual layout) permutes the bit numbers of :data:`MASK_PLANES`;
  ``Warp.mask_planes`` gives the mapping.

Everything (truth, footprints, catalog, noise) is drawn from NumPy generators
seeded by ``seed`` and the visit's *index* (0, 1, ...), so the first visits of
a simulation do not change when ``n_visits`` grows, and ``first_visit`` only
relabels them.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from . import __version__
from .errors import InputError
from .geometry import Box, SkyMap
from .io.warp import Warp

if TYPE_CHECKING:   # astropy.wcs takes longer to import than the rest of the command line
    from astropy.wcs import WCS

__all__ = [
    "MASK_PLANES",
    "LAYOUTS",
    "CHAIN_OVERLAP",
    "VisitTruth",
    "Footprint",
    "SourceCatalog",
    "SimulatedTract",
    "make_tract",
    "write_tract",
    "load_truth",
    "simulate",
    "warp_filename",
    "tract_wcs",
    "render_sources",
]

#: Mask planes of every simulated warp, in Rubin's usual bit order.
MASK_PLANES = (
    "BAD", "SAT", "INTRP", "CR", "EDGE", "DETECTED", "DETECTED_NEGATIVE", "SUSPECT", "NO_DATA",
)
#: Image value (nJy) at and above which a pixel saturates.
SATURATION = 3.0e4
#: Image value of BAD-column pixels (garbage).
BAD_VALUE = 1.0e4
#: Width (pixels) of the EDGE band inside the footprint boundary and along chip gaps.
EDGE_WIDTH = 3.0
#: Full width (pixels) of a chip gap.
GAP_WIDTH = 3.0
#: Source-flux variance factor (nJy): variance = noise_sigma**2 + SHOT_NOISE * sources.
SHOT_NOISE = 1.0
#: DETECTED where the noiseless source flux exceeds this many noise_sigma.
DETECT_NSIGMA = 2.0
#: Profiles are truncated where they fall below this fraction of noise_sigma.
TRUNCATION = 1.0e-3
#: Pixel scale (arcsec) and tract centre (deg) of the simulated celestial WCS.
PIXEL_SCALE = 0.2
TRACT_CENTER = (150.0, 2.2)

# Salts that separate the random streams.
_SALT_VISIT, _SALT_CATALOG, _SALT_NOISE, _SALT_CR, _SALT_BAD = 11, 12, 13, 14, 15


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


# -- truth ------------------------------------------------------------------

@dataclass
class VisitTruth:
    """The injected sky of one visit, a quadratic in normalised tract coordinates.

    ``sky = level + gx*u + gy*v + cxx*u**2 + cyy*v**2 + cxy*u*v`` with
    ``u = x / width - 0.5`` and ``v = y / height - 0.5`` (x, y: tract pixel
    indices; width, height: the tract's size). ``gx``, ``gy`` are thus the
    change of sky across the whole tract along x and y (nJy).
    """

    visit: int
    level: float
    gx: float
    gy: float
    cxx: float
    cyy: float
    cxy: float
    #: A sharp step that no smooth model follows: ``step_amp`` (nJy) added
    #: where ``x >= step_x`` (0 and None: no step, the default).
    step_amp: float = 0.0
    step_x: float | None = None

    def sky(self, x, y, width: int, height: int) -> np.ndarray:
        """Sky (float64) at tract positions ``x``, ``y`` (broadcast together)."""
        u = np.asarray(x, dtype=np.float64) / width - 0.5
        v = np.asarray(y, dtype=np.float64) / height - 0.5
        sky = (self.level + self.gx * u + self.gy * v
               + self.cxx * u * u + self.cyy * v * v + self.cxy * u * v)
        if self.step_amp and self.step_x is not None:
            sky = sky + np.where(np.asarray(x, dtype=np.float64) >= self.step_x, self.step_amp, 0.0)
        return sky

    def to_dict(self) -> dict:
        d = asdict(self)
        if not self.step_amp:  # without a step: exactly the fields of earlier versions
            del d["step_amp"], d["step_x"]
        return d


def _draw_truth(seed: int, index: int, visit: int) -> tuple[VisitTruth, float]:
    """The sky of visit number ``index`` and its PSF sigma (pixels)."""
    r = _rng(seed, _SALT_VISIT, index)
    level, gx, gy = r.uniform(100.0, 200.0), r.uniform(-8.0, 8.0), r.uniform(-8.0, 8.0)
    cxx, cyy, cxy = r.uniform(-10.0, 10.0, size=3)
    psf_sigma = r.uniform(1.5, 2.2)
    truth = VisitTruth(int(visit), float(level), float(gx), float(gy),
                       float(cxx), float(cyy), float(cxy))
    return truth, float(psf_sigma)


# -- footprint --------------------------------------------------------------

@dataclass(frozen=True)
class Footprint:
    """A visit's focal plane on the tract: an octagon with chip gaps.

    In the focal-plane frame ``s = (x - cx) cos(angle) + (y - cy) sin(angle)``,
    ``t = -(x - cx) sin(angle) + (y - cy) cos(angle)`` the octagon is
    ``|s| <= hx``, ``|t| <= hy``, ``|s| + |t| <= hx + hy - cut``. Chip gaps are
    the bands ``|s - k*pitch| < gap/2`` and ``|t - k*pitch| < gap/2`` (k integer).
    """

    cx: float
    cy: float
    hx: float
    hy: float
    cut: float
    angle: float
    pitch: float
    gap: float = GAP_WIDTH
    edge: float = EDGE_WIDTH

    def frame(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Focal-plane coordinates (s, t) of tract positions (broadcast)."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        dx = np.asarray(x, dtype=np.float64) - self.cx
        dy = np.asarray(y, dtype=np.float64) - self.cy
        return dx * c + dy * s, dy * c - dx * s

    def inset(self, s: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Distance inside the octagon's boundary (negative outside)."""
        a, b = np.abs(s), np.abs(t)
        d = np.minimum(self.hx - a, self.hy - b)
        return np.minimum(d, (self.hx + self.hy - self.cut - a - b) * (1.0 / math.sqrt(2.0)))

    def gap_distance(self, s: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Distance to the nearest chip-gap centre line."""
        ds = np.abs(s - self.pitch * np.round(s / self.pitch))
        dt = np.abs(t - self.pitch * np.round(t / self.pitch))
        return np.minimum(ds, dt)

    def planes(self, x, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(inside octagon, covered with data, EDGE) at tract positions."""
        s, t = self.frame(x, y)
        inset = self.inset(s, t)
        gapd = self.gap_distance(s, t)
        inside = inset >= 0
        covered = inside & (gapd >= 0.5 * self.gap)
        edge = covered & ((inset < self.edge) | (gapd < 0.5 * self.gap + self.edge))
        return inside, covered, edge

    def vertices(self) -> np.ndarray:
        """The octagon's corners in tract coordinates, shape (8, 2), counter-clockwise."""
        hx, hy, c = self.hx, self.hy, self.cut
        st = np.array([(hx, -(hy - c)), (hx, hy - c), (hx - c, hy), (-(hx - c), hy),
                       (-hx, hy - c), (-hx, -(hy - c)), (-(hx - c), -hy), (hx - c, -hy)])
        co, si = math.cos(self.angle), math.sin(self.angle)
        x = self.cx + st[:, 0] * co - st[:, 1] * si
        y = self.cy + st[:, 0] * si + st[:, 1] * co
        return np.stack([x, y], axis=1)

    def intersects(self, box: Box) -> bool:
        """Whether the octagon may hold a pixel centre of ``box``.

        Exact separating-axis test between the octagon and the hull of the
        box's pixel centres: False guarantees the box has no covered pixel.
        """
        return _convex_overlap(self.vertices(), _box_hull(box))

    def to_dict(self) -> dict:
        return asdict(self)


def _box_hull(box: Box) -> np.ndarray:
    """The corners of the hull of a box's pixel centres, shape (4, 2)."""
    return np.array([(box.x0, box.y0), (box.x1 - 1, box.y0),
                     (box.x1 - 1, box.y1 - 1), (box.x0, box.y1 - 1)], dtype=float)


def _convex_overlap(p: np.ndarray, q: np.ndarray) -> bool:
    """Separating-axis test for two convex polygons given by their vertices
    (every edge normal of both at once)."""
    edges = np.concatenate([p[1:] - p[:-1], p[:1] - p[-1:], q[1:] - q[:-1], q[:1] - q[-1:]])
    edges = edges[(edges[:, 0] != 0) | (edges[:, 1] != 0)]
    axes = np.stack([-edges[:, 1], edges[:, 0]])          # (2, n_axes)
    pp, qq = p @ axes, q @ axes
    return not np.any((pp.max(axis=0) < qq.min(axis=0)) | (qq.max(axis=0) < pp.min(axis=0)))


def _full_footprint(r: np.random.Generator, width: int, height: int, pitch: float) -> Footprint:
    """A footprint holding the whole tract (its boundary lies outside it)."""
    size = max(width, height)
    cx = width * (0.5 + r.uniform(-0.05, 0.05))
    cy = height * (0.5 + r.uniform(-0.05, 0.05))
    h = 0.9 * size + 2 * EDGE_WIDTH
    return Footprint(cx, cy, h, h, 0.3 * h, r.uniform(-math.pi / 4, math.pi / 4), pitch)


def _partial_footprint(r: np.random.Generator, skymap: SkyMap, pitch: float) -> Footprint:
    """A footprint covering part of the tract and missing at least one patch."""
    w, h = skymap.width, skymap.height
    hulls = [_box_hull(skymap.outer_box(p)) for p in skymap.patches]
    gx, gy = np.meshgrid(np.linspace(0, w - 1, 48), np.linspace(0, h - 1, 48))
    fp = None
    for _ in range(200):
        hx, hy = r.uniform(0.25, 0.4) * w, r.uniform(0.25, 0.4) * h
        phi, rad = r.uniform(0, 2 * math.pi), r.uniform(0.1, 0.35)
        fp = Footprint(
            cx=w * (0.5 + rad * math.cos(phi)), cy=h * (0.5 + rad * math.sin(phi)),
            hx=hx, hy=hy, cut=r.uniform(0.15, 0.3) * min(hx, hy),
            angle=r.uniform(-math.pi / 4, math.pi / 4), pitch=pitch,
        )
        frac = float(np.mean(fp.inset(*fp.frame(gx, gy)) >= 0))
        if frac >= 0.1 and (len(hulls) == 1
                            or not all(_convex_overlap(fp.vertices(), h) for h in hulls)):
            return fp
    return fp


#: Layouts of the visits' footprints (``make_tract(layout=...)``).
LAYOUTS = ("random", "chain")
#: Chain layout: fraction of a footprint's width shared with the next one
#: along the chain. Below 0.5, footprints two apart share no pixel.
CHAIN_OVERLAP = 0.45


def _chain_footprint(r: np.random.Generator, skymap: SkyMap, index: int, n: int,
                     pitch: float, gap: float) -> Footprint:
    """Footprint number ``index`` of ``n`` in a chain along the tract's longer
    axis: each overlaps the next by about :data:`CHAIN_OVERLAP` of its width,
    so footprints two apart share nothing. Slightly rotated and offset across
    the chain, so its edges run obliquely through the superpixels."""
    w, h = skymap.width, skymap.height
    along, across = (w, h) if w >= h else (h, w)
    step = 1.0 - CHAIN_OVERLAP
    length = along / (1.0 + (n - 1) * step)     # footprint extent along the chain
    c_along = 0.5 * length + index * step * length
    c_across = across * (0.5 + r.uniform(-0.04, 0.04))
    ha = 0.5 * length * 0.96                    # room for the rotation
    hc = across * r.uniform(0.38, 0.45)
    angle = r.uniform(-0.04, 0.04)
    cut = r.uniform(0.1, 0.2) * min(ha, hc)
    if w >= h:
        return Footprint(c_along, c_across, ha, hc, cut, angle, pitch, gap)
    return Footprint(c_across, c_along, hc, ha, cut, angle, pitch, gap)


# -- sources ----------------------------------------------------------------

@dataclass(frozen=True)
class SourceCatalog:
    """The tract's sources: position (tract pixels), total flux (nJy) and the
    intrinsic Gaussian covariance (pixels**2; zero for stars)."""

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    cxx: np.ndarray
    cyy: np.ndarray
    cxy: np.ndarray
    kind: np.ndarray  # 0 star, 1 galaxy, 2 bright (saturating) star

    def __len__(self) -> int:
        return int(self.x.size)


def _draw_catalog(seed: int, width: int, height: int) -> SourceCatalog:
    """Stars and galaxies at ~1 per 1500 pixels, plus a few saturating stars."""
    r = _rng(seed, _SALT_CATALOG)
    area = width * height
    n = int(r.poisson(area / 1500.0))
    n_bright = max(3, int(round(area / 5.0e5)))
    x = r.uniform(-10, width + 10, n + n_bright)
    y = r.uniform(-10, height + 10, n + n_bright)
    # Power-law fluxes (nJy), capped below saturation.
    flux = np.minimum(100.0 * (1.0 - r.uniform(size=n)) ** -1.0, 2.0e5)
    flux = np.concatenate([flux, 10.0 ** r.uniform(6.3, 7.0, n_bright)])
    kind = np.concatenate([(r.uniform(size=n) > 0.3).astype(np.int8), np.full(n_bright, 2, np.int8)])
    # Galaxies: elliptical Gaussians.
    sig = np.exp(r.uniform(math.log(0.5), math.log(4.0), n + n_bright))
    q = r.uniform(0.3, 1.0, n + n_bright)
    theta = r.uniform(0, math.pi, n + n_bright)
    a2, b2 = sig ** 2, (sig * q) ** 2
    c, s = np.cos(theta), np.sin(theta)
    gal = kind == 1
    cxx = np.where(gal, a2 * c * c + b2 * s * s, 0.0)
    cyy = np.where(gal, a2 * s * s + b2 * c * c, 0.0)
    cxy = np.where(gal, (a2 - b2) * c * s, 0.0)
    return SourceCatalog(x, y, flux, cxx, cyy, cxy, kind)


def render_sources(catalog: SourceCatalog, psf_sigma: float, box: Box, floor: float) -> np.ndarray:
    """Noiseless source image (float64) on ``box`` for a Gaussian PSF.

    Each source is an elliptical Gaussian (intrinsic covariance plus
    ``psf_sigma**2``) sampled at pixel centres, rendered into a square stamp
    around its nearest pixel, truncated where the profile falls below
    ``floor``. Stamps are grouped by radius and rendered vectorised.
    """
    out = np.zeros(box.width * box.height, dtype=np.float64)
    if len(catalog) == 0:
        return out.reshape(box.shape)
    p2 = psf_sigma * psf_sigma
    a, b, c = catalog.cxx + p2, catalog.cyy + p2, catalog.cxy
    det = a * b - c * c
    ia, ib, ic = b / det, a / det, -c / det
    peak = catalog.flux / (2.0 * math.pi * np.sqrt(det))
    lam = 0.5 * (a + b) + np.sqrt(0.25 * (a - b) ** 2 + c * c)
    reach = np.sqrt(lam * 2.0 * np.log(np.maximum(peak / floor, 1.0 + 1e-9)))
    radius = (4 * np.ceil(np.maximum(reach, 1.0) / 4.0)).astype(np.int64)
    ix = np.floor(catalog.x + 0.5).astype(np.int64)
    iy = np.floor(catalog.y + 0.5).astype(np.int64)
    near = ((ix + radius >= box.x0) & (ix - radius < box.x1)
            & (iy + radius >= box.y0) & (iy - radius < box.y1))
    for rad in np.unique(radius[near]):
        sel = np.flatnonzero(near & (radius == rad))
        off = np.arange(-rad, rad + 1)
        chunk = max(1, 2_000_000 // off.size ** 2)
        for k in range(0, sel.size, chunk):
            i = sel[k:k + chunk]
            px = ix[i, None, None] + off[None, None, :]
            py = iy[i, None, None] + off[None, :, None]
            dx = px - catalog.x[i, None, None]
            dy = py - catalog.y[i, None, None]
            q = ia[i, None, None] * dx * dx + 2.0 * ic[i, None, None] * dx * dy + ib[i, None, None] * dy * dy
            val = peak[i, None, None] * np.exp(-0.5 * q)
            ok = ((px >= box.x0) & (px < box.x1) & (py >= box.y0) & (py < box.y1)
                  & (val >= floor))
            flat = (py - box.y0) * box.width + (px - box.x0)
            out += np.bincount(flat[ok], weights=val[ok], minlength=out.size)
    return out.reshape(box.shape)


# -- celestial WCS ---------------------------------------------------------

def tract_wcs(skymap: SkyMap, x0: int = 0, y0: int = 0) -> WCS:
    """A gnomonic (TAN) WCS of the tract, for an array whose first pixel is
    tract pixel (x0, y0): FITS pixel (1, 1) is tract pixel (x0, y0). The tract
    centre (W/2, H/2) lies at :data:`TRACT_CENTER`, north up, east left."""
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = list(TRACT_CENTER)
    wcs.wcs.crpix = [skymap.width / 2 - x0 + 1, skymap.height / 2 - y0 + 1]
    scale = PIXEL_SCALE / 3600.0
    wcs.wcs.cd = [[-scale, 0.0], [0.0, scale]]
    wcs.wcs.radesys = "ICRS"
    return wcs


# -- per-visit model --------------------------------------------------------

@dataclass(frozen=True)
class _VisitModel:
    index: int
    truth: VisitTruth
    psf_sigma: float
    footprint: Footprint
    mask_planes: dict
    bad_columns: np.ndarray  # (n, 4): x, width, y0, y1 (half-open in y)


def _mask_layout(seed: int, index: int) -> dict[str, int]:
    """Bit numbers of :data:`MASK_PLANES` for visit number ``index``.

    The first visit keeps Rubin's usual layout; others get a random
    permutation that differs from it.
    """
    n = len(MASK_PLANES)
    if index == 0:
        return {name: i for i, name in enumerate(MASK_PLANES)}
    r = _rng(seed, _SALT_VISIT, index, 1)
    perm = r.permutation(n)
    while np.array_equal(perm, np.arange(n)):
        perm = r.permutation(n)
    return {name: int(b) for name, b in zip(MASK_PLANES, perm)}


def _draw_bad_columns(seed: int, index: int, width: int, height: int) -> np.ndarray:
    r = _rng(seed, _SALT_BAD, index)
    n = 2 + width // 1500
    x = r.integers(0, width, n)
    w = r.integers(1, 3, n)
    length = (r.uniform(0.2, 1.0, n) * height).astype(np.int64)
    y0 = r.integers(0, height, n) - length // 2
    return np.stack([x, w, np.maximum(y0, 0), np.minimum(y0 + length, height)], axis=1)


def _bad_column_mask(cols: np.ndarray, box: Box) -> np.ndarray:
    x = np.arange(box.x0, box.x1)[None, :]
    y = np.arange(box.y0, box.y1)[:, None]
    out = np.zeros(box.shape, dtype=bool)
    for cx, cw, y0, y1 in cols:
        if cx + cw <= box.x0 or cx >= box.x1 or y1 <= box.y0 or y0 >= box.y1:
            continue
        out |= (x >= cx) & (x < cx + cw) & (y >= y0) & (y < y1)
    return out


def _cosmic_rays(seed: int, index: int, tile: int, box: Box) -> np.ndarray:
    """Short streaks at random in the tile (pixels of the tile only)."""
    r = _rng(seed, _SALT_CR, index, tile)
    n = int(r.poisson(box.width * box.height / 1.0e5))
    out = np.zeros(box.shape, dtype=bool)
    if n == 0:
        return out
    x0 = r.uniform(0, box.width, n)
    y0 = r.uniform(0, box.height, n)
    ang = r.uniform(0, 2 * math.pi, n)
    length = r.integers(1, 7, n)
    t = np.arange(7)[None, :]
    keep = t < length[:, None]
    xs = np.floor(x0[:, None] + t * np.cos(ang)[:, None]).astype(np.int64)
    ys = np.floor(y0[:, None] + t * np.sin(ang)[:, None]).astype(np.int64)
    keep &= (xs >= 0) & (xs < box.width) & (ys >= 0) & (ys < box.height)
    out[ys[keep], xs[keep]] = True
    return out


@dataclass
class _Planes:
    image: np.ndarray
    mask: np.ndarray
    variance: np.ndarray


def _empty_planes(shape: tuple[int, int], layout: Mapping[str, int]) -> _Planes:
    return _Planes(
        np.full(shape, np.nan, np.float32),
        np.full(shape, 1 << layout["NO_DATA"], np.int32),
        np.full(shape, np.nan, np.float32),
    )


# -- the simulated tract ----------------------------------------------------

@dataclass
class SimulatedTract:
    """A simulated tract: its warps (in memory) and the truth they come from.

    ``warps`` maps (visit, patch) to a :class:`~bgdask.io.warp.Warp`; a patch
    that a visit does not touch has no entry. See the module docstring for
    the conventions.
    """

    skymap: SkyMap
    visits: list[int]
    truth: dict[int, VisitTruth]
    warps: dict[tuple[int, int], Warp]
    noise_sigma: float
    band: str = "r"
    seed: int = 0
    psf_sigma: dict[int, float] = field(default_factory=dict)
    footprints: dict[int, Footprint] = field(default_factory=dict)
    mask_planes: dict[int, dict[str, int]] = field(default_factory=dict)
    catalog: SourceCatalog | None = field(default=None, repr=False)
    _models: dict[int, _VisitModel] = field(default_factory=dict, repr=False)

    # -- truth on a box ----------------------------------------------------
    def _xy(self, box: Box) -> tuple[np.ndarray, np.ndarray]:
        return (np.arange(box.x0, box.x1, dtype=np.float64)[None, :],
                np.arange(box.y0, box.y1, dtype=np.float64)[:, None])

    def truth_sky(self, visit: int, box: Box) -> np.ndarray:
        """The injected sky of ``visit`` on ``box`` (float64, shape box.shape)."""
        x, y = self._xy(box)
        return np.broadcast_to(
            self.truth[visit].sky(x, y, self.skymap.width, self.skymap.height), box.shape
        ).copy()

    def truth_offset(self, ref: int, visit: int, box: Box) -> np.ndarray:
        """sky(ref) - sky(visit) on ``box``: the offset that matches ``visit`` to ``ref``."""
        return self.truth_sky(ref, box) - self.truth_sky(visit, box)

    def footprint(self, visit: int, box: Box, *, chip_gaps: bool = True) -> np.ndarray:
        """Pixels of ``box`` that ``visit`` covers *with data* (bool).

        True exactly where the visit's warps are not NO_DATA (inside the
        octagon and outside the chip gaps). With ``chip_gaps=False``: inside
        the octagon, gaps included.
        """
        x, y = self._xy(box)
        inside, covered, _ = self.footprints[visit].planes(x, y)
        return np.broadcast_to(covered if chip_gaps else inside, box.shape).copy()

    def source_image(self, visit: int, box: Box) -> np.ndarray:
        """Noiseless source flux of ``visit`` on ``box`` (float64, before saturation)."""
        return render_sources(self.catalog, self.psf_sigma[visit], box,
                              TRUNCATION * self.noise_sigma)

    def source_mask(self, box: Box, visit: int | None = None, threshold: float = 0.0) -> np.ndarray:
        """Pixels where a source adds more than ``threshold`` nJy (any visit when
        ``visit`` is None). With the default 0 the complement is exactly
        source-free (profiles are truncated, not tapered)."""
        visits = self.visits if visit is None else [visit]
        out = np.zeros(box.shape, dtype=bool)
        for v in visits:
            out |= self.source_image(v, box) > threshold
        return out

    def patches_of(self, visit: int) -> list[int]:
        """Patches that ``visit`` has a warp on."""
        return sorted(p for v, p in self.warps if v == visit)

    def truth_dict(self) -> dict:
        """Everything truth.json holds."""
        return {
            "format": "bgdask-simulation-truth",
            "bgdask_version": __version__,
            "sky_model": ("level + gx*u + gy*v + cxx*u^2 + cyy*v^2 + cxy*u*v, "
                          "u = x/W - 0.5, v = y/H - 0.5, x, y = tract pixel indices"),
            "noise_sigma": self.noise_sigma,
            "seed": self.seed,
            "band": self.band,
            "tract": self.skymap.tract,
            "skymap": self.skymap.to_dict(),
            "visits": [
                {
                    **self.truth[v].to_dict(),
                    "psf_sigma": self.psf_sigma.get(v),
                    "footprint": self.footprints[v].to_dict() if v in self.footprints else None,
                    "mask_planes": self.mask_planes.get(v),
                    "patches": self.patches_of(v),
                }
                for v in self.visits
            ],
        }


def _render_tile(sim: SimulatedTract, model: _VisitModel, tile: int, box: Box) -> _Planes:
    """All planes of one visit on one tile (a patch's inner box)."""
    layout = model.mask_planes
    if not model.footprint.intersects(box):
        return _empty_planes(box.shape, layout)
    shape = box.shape
    x, y = sim._xy(box)
    _, covered, edge = model.footprint.planes(x, y)
    covered = np.broadcast_to(covered, shape)
    sky = model.truth.sky(x, y, sim.skymap.width, sim.skymap.height)
    src = render_sources(sim.catalog, model.psf_sigma, box, TRUNCATION * sim.noise_sigma)
    var = sim.noise_sigma ** 2 + SHOT_NOISE * src
    noise = _rng(sim.seed, _SALT_NOISE, model.index, tile).standard_normal(shape, dtype=np.float32)
    noiseless = sky + src
    image = noiseless + noise * np.sqrt(var)
    sat = noiseless >= SATURATION
    image[sat] = SATURATION
    bad = _bad_column_mask(model.bad_columns, box) & covered
    image[bad] = BAD_VALUE
    cr = _cosmic_rays(sim.seed, model.index, tile, box) & covered
    detected = (src > DETECT_NSIGMA * sim.noise_sigma) | sat

    mask = np.zeros(shape, dtype=np.int32)
    for name, plane in (("BAD", bad), ("SAT", sat), ("EDGE", edge), ("CR", cr),
                        ("INTRP", cr), ("DETECTED", detected)):
        mask |= (plane & covered).astype(np.int32) << layout[name]
    no_data = ~covered
    mask[no_data] = 1 << layout["NO_DATA"]
    image[no_data] = np.nan
    var = np.array(var, dtype=np.float32)
    var[no_data] = np.nan
    return _Planes(image.astype(np.float32), mask, var)


def _assemble(tiles: Mapping[int, tuple[Box, _Planes]], box: Box) -> _Planes:
    """Cut ``box`` out of the tiles that cover it."""
    out = _Planes(np.empty(box.shape, np.float32), np.empty(box.shape, np.int32),
                  np.empty(box.shape, np.float32))
    for tbox, planes in tiles.values():
        common = box.intersection(tbox)
        if common is None:
            continue
        dst = (slice(common.y0 - box.y0, common.y1 - box.y0),
               slice(common.x0 - box.x0, common.x1 - box.x0))
        src = (slice(common.y0 - tbox.y0, common.y1 - tbox.y0),
               slice(common.x0 - tbox.x0, common.x1 - tbox.x0))
        out.image[dst] = planes.image[src]
        out.mask[dst] = planes.mask[src]
        out.variance[dst] = planes.variance[src]
    return out


def _visit_warps(sim: SimulatedTract, model: _VisitModel, visit: int) -> dict[int, Warp]:
    """The warps of one visit, keyed by patch (only patches it covers with data)."""
    sm = sim.skymap
    candidates = [p for p in sm.patches if model.footprint.intersects(sm.outer_box(p))]
    needed = {t for p in candidates for t in sm.patches
              if sm.inner_box(t).intersection(sm.outer_box(p)) is not None}
    tiles = {t: (sm.inner_box(t), _render_tile(sim, model, t, sm.inner_box(t)))
             for t in sorted(needed)}
    no_data = 1 << model.mask_planes["NO_DATA"]
    warps = {}
    for p in candidates:
        box = sm.outer_box(p)
        planes = _assemble(tiles, box)
        if np.all(planes.mask & no_data):
            continue
        warps[p] = Warp(
            image=planes.image, mask=planes.mask, variance=planes.variance,
            x0=box.x0, y0=box.y0, mask_planes=dict(model.mask_planes),
            visit=visit, patch=p, tract=sm.tract, band=sim.band,
            wcs=tract_wcs(sm, box.x0, box.y0),
        )
    return warps


def make_tract(
    *,
    n_visits: int = 4,
    num_patches: tuple[int, int] | int = (3, 3),
    patch_inner: int | tuple[int, int] = 400,
    patch_border: int = 20,
    seed: int = 0,
    noise_sigma: float = 5.0,
    partial: bool = True,
    sources: bool = True,
    tract: int = 9813,
    band: str = "r",
    first_visit: int = 1000,
    n_full: int = 1,
    layout: str = "random",
    gradient_scale: float = 1.0,
    curvature_scale: float = 1.0,
    chip_pitch: float | None = None,
    gap_width: float = GAP_WIDTH,
    step_visit: int | None = None,
    step_amp: float = 5.0,
) -> SimulatedTract:
    """Simulate the warps of ``n_visits`` visits over one tract, with their truth.

    Visits are numbered ``first_visit, first_visit + 1, ...``. The first
    ``n_full`` of them cover the whole tract (chip gaps aside); with
    ``partial=True`` the others cover only part of it, otherwise all do.
    ``sources=False`` leaves out stars and galaxies (and so SAT and DETECTED).
    Deterministic: equal arguments give bitwise-equal warps.

    Options for testing the matching methods (their defaults give exactly
    the tracts of earlier versions):

    * ``layout="chain"``: the footprints form a chain along the tract's
      longer axis, each overlapping the next by :data:`CHAIN_OVERLAP` of its
      width, so the first visit shares no pixel with the third and beyond
      (``n_full`` and ``partial`` are then ignored).
    * ``gradient_scale``, ``curvature_scale``: multiply the drawn gradients
      (``gx``, ``gy``) and curvatures (``cxx``, ``cyy``, ``cxy``) of every sky
      (the levels are unchanged): ``gradient_scale=5`` gives gradients of up
      to 40 nJy across the tract. The curvatures are per tract (normalised
      coordinates), so a small tract has a strongly curved sky; a
      superpixel's mean then differs from the sky at its centroid by about
      ``f'' * window**2 / 24``, a bias of both matching methods.
    * ``chip_pitch``, ``gap_width``: chip size and gap width (pixels) of the
      focal planes (default: a quarter of the tract's smaller side, and
      :data:`GAP_WIDTH`); wide gaps empty part of the superpixels they cross.
    * ``step_visit``, ``step_amp``: visit ``step_visit`` gets a sharp step of
      ``step_amp`` nJy in its sky along the vertical line through its
      footprint's centre, a structure no smooth model follows.
    """
    if n_visits < 1:
        raise InputError(f"simulate: n_visits must be >= 1, got {n_visits}")
    if not noise_sigma > 0:
        raise InputError(f"simulate: noise_sigma must be positive, got {noise_sigma}")
    if seed < 0:
        raise InputError(f"simulate: seed must be >= 0, got {seed}")
    if layout not in LAYOUTS:
        raise InputError(f"simulate: layout must be one of {list(LAYOUTS)}, got {layout!r}")
    for name, scale in (("gradient_scale", gradient_scale), ("curvature_scale", curvature_scale)):
        if not (math.isfinite(scale) and scale >= 0):
            raise InputError(f"simulate: {name} must be >= 0, got {scale}")
    if not gap_width >= 0:
        raise InputError(f"simulate: gap_width must be >= 0, got {gap_width}")
    if step_visit is not None and not first_visit <= step_visit < first_visit + n_visits:
        raise InputError(f"simulate: step_visit {step_visit} is not one of the simulated visits "
                         f"{first_visit}..{first_visit + n_visits - 1}")
    pair = lambda v: (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))  # noqa: E731
    skymap = SkyMap(patch_inner=pair(patch_inner), patch_border=int(patch_border),
                    num_patches=pair(num_patches), tract=tract)
    w, h = skymap.width, skymap.height
    pitch = min(w, h) / 4.0 if chip_pitch is None else float(chip_pitch)
    if not pitch > 0:
        raise InputError(f"simulate: chip_pitch must be positive, got {chip_pitch}")
    if sources:
        catalog = _draw_catalog(seed, w, h)
    else:
        catalog = SourceCatalog(*(np.zeros(0) for _ in range(6)), np.zeros(0, np.int8))
    sim = SimulatedTract(skymap=skymap, visits=[], truth={}, warps={},
                         noise_sigma=float(noise_sigma), band=band, seed=int(seed),
                         catalog=catalog)
    for index in range(n_visits):
        visit = first_visit + index
        truth, psf = _draw_truth(seed, index, visit)
        if gradient_scale != 1.0:
            truth = replace(truth, gx=truth.gx * gradient_scale, gy=truth.gy * gradient_scale)
        if curvature_scale != 1.0:
            truth = replace(truth, cxx=truth.cxx * curvature_scale, cyy=truth.cyy * curvature_scale,
                            cxy=truth.cxy * curvature_scale)
        r = _rng(seed, _SALT_VISIT, index, 2)
        if layout == "chain":
            fp = _chain_footprint(r, skymap, index, n_visits, pitch, float(gap_width))
        elif index < n_full or not partial:
            fp = _full_footprint(r, w, h, pitch)
        else:
            fp = _partial_footprint(r, skymap, pitch)
        if fp.gap != gap_width:
            fp = replace(fp, gap=float(gap_width))
        if visit == step_visit:
            truth = replace(truth, step_amp=float(step_amp), step_x=float(round(fp.cx)))
        model = _VisitModel(index, truth, psf, fp, _mask_layout(seed, index),
                            _draw_bad_columns(seed, index, w, h))
        sim.visits.append(visit)
        sim.truth[visit] = truth
        sim.psf_sigma[visit] = psf
        sim.footprints[visit] = fp
        sim.mask_planes[visit] = dict(model.mask_planes)
        sim._models[visit] = model
        for p, warp in _visit_warps(sim, model, visit).items():
            sim.warps[(visit, p)] = warp
    return sim


# -- files ------------------------------------------------------------------

def warp_filename(visit: int, patch: int, compress: bool = False) -> str:
    """Path of a warp relative to the output directory."""
    ext = ".fits.fz" if compress else ".fits"
    return f"warps/{visit}/warp_{visit}_{patch}{ext}"


def write_tract(sim: SimulatedTract, outdir: str | Path, *, compress: bool = False) -> Path:
    """Write the simulation under ``outdir`` and return ``outdir``.

    Writes ``warps/<visit>/warp_<visit>_<patch>.fits`` (``.fits.fz``,
    tile-compressed, with ``compress``) in afw format with the Butler cards,
    ``manifest.csv`` (visit, patch, tract, path relative to ``outdir``),
    ``skymap.yaml`` and ``truth.json``. Existing files are overwritten.
    """
    from .io.fits import write_warp

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for (visit, patch), warp in sorted(sim.warps.items()):
        rel = warp_filename(visit, patch, compress)
        path = outdir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_warp(path, warp, overwrite=True, compress=compress)
        rows.append((visit, patch, sim.skymap.tract, rel))
    with open(outdir / "manifest.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["visit", "patch", "tract", "path"])
        writer.writerows(rows)
    sim.skymap.to_yaml(outdir / "skymap.yaml")
    (outdir / "truth.json").write_text(json.dumps(sim.truth_dict(), indent=2) + "\n")
    return outdir


def load_truth(outdir: str | Path) -> tuple[SkyMap, dict[int, VisitTruth], float]:
    """Read ``outdir/truth.json``: the skymap, each visit's sky, and noise_sigma."""
    path = Path(outdir)
    if path.is_dir():
        path = path / "truth.json"
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: truth file not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    try:
        skymap = SkyMap.from_dict(d["skymap"], source=str(path))
        names = [f.name for f in fields(VisitTruth)]
        optional = {"step_amp", "step_x"}  # absent from files without a step
        truth = {}
        for entry in d["visits"]:
            t = VisitTruth(**{n: entry[n] for n in names if n in entry or n not in optional})
            t.visit = int(t.visit)
            truth[t.visit] = t
        return skymap, truth, float(d["noise_sigma"])
    except (KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a bgdask truth file ({exc!r})") from None


def simulate(outdir: str | Path, *, compress: bool = False, **kwargs) -> SimulatedTract:
    """:func:`make_tract` with ``kwargs``, then :func:`write_tract` to ``outdir``."""
    sim = make_tract(**kwargs)
    write_tract(sim, outdir, compress=compress)
    return sim


def offset_error(sim: SimulatedTract, ref: int, matched) -> tuple[float, float]:
    """How well matching recovered the truth.

    ``matched(visit, patch)`` returns a warp's matched image. Returns the RMS
    of (applied offset - true offset) and the RMS of the true offsets, over
    the pixels where a non-reference visit and the reference both have data.
    """
    se = so = n = 0.0
    for (v, p), w in sim.warps.items():
        if v == ref or (ref, p) not in sim.warps:
            continue
        offset = np.asarray(matched(v, p), dtype=np.float64)[: w.height, : w.width] - w.image
        truth = sim.truth_offset(ref, v, w.box)
        ok = np.isfinite(offset) & np.isfinite(sim.warps[(ref, p)].image)
        se += float(np.sum((offset[ok] - truth[ok]) ** 2))
        so += float(np.sum(truth[ok] ** 2))
        n += int(ok.sum())
    return float(np.sqrt(se / max(n, 1))), float(np.sqrt(so / max(n, 1)))


def store_offset_error(sim: SimulatedTract, store) -> tuple[float, float]:
    """:func:`offset_error` of a bgdask output store."""
    import xarray as xr

    ds = xr.open_zarr(store)
    return offset_error(sim, int(ds.attrs["reference_visit"]),
                        lambda v, p: ds.image.sel(visit=v, patch=p).values)
