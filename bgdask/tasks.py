"""The per-warp and per-visit functions that the pipeline maps.

Each takes a *warp reference* — a :class:`~bgdask.io.catalog.WarpEntry`
(planes read from disk, only the ones needed) or an in-memory
:class:`~bgdask.io.warp.Warp` — and plain arrays, and returns small results.
The serial driver calls them directly and the Dask pipeline maps them as
tasks, so both give the same numbers bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .background import (
    Accumulator,
    VisitModel,
    apply_offset,
    coarse_cells,
    coarse_offsets,
    difference_model,
    difference_stats,
    image_stats,
    offset_rows,
    stats_image,
)
from .config import MatchConfig
from .errors import ModelError
from .io.catalog import WarpEntry, load_plane
from .io.warp import Warp
from .kernels.stats import bad_pixels
from .masks import plane_bits, remap_mask
from .reference import ReferenceFigures, reference_figures

WarpRef = WarpEntry | Warp


def read(w: WarpRef, plane: str, rows: slice | None = None) -> np.ndarray:
    """One plane (or rows of it) of a warp reference."""
    if isinstance(w, Warp):
        arr = getattr(w, plane)
        return arr if rows is None else arr[rows]
    return load_plane(w, plane, rows)


def _image_and_bad(w: WarpRef, cfg: MatchConfig, rows: slice | None = None):
    image = read(w, "image", rows)
    mask = read(w, "mask", rows)
    return image, bad_pixels(mask, plane_bits(w.mask_planes, cfg.bad_mask_planes), image)


@dataclass(frozen=True)
class Partial:
    """A (partial) sum over warps: the accumulator, and the usable pixel
    count of every warp read on the way, as ((visit, patch), count) pairs."""

    acc: Accumulator
    usable: tuple[tuple[tuple[int, int], int], ...] = ()

    def __add__(self, other: "Partial") -> "Partial":
        return Partial(self.acc + other.acc, self.usable + other.usable)


EMPTY = Accumulator(np.zeros((0, 0)), np.zeros((0, 0)), np.zeros((0, 0)))


def add(a: Partial, b: Partial) -> Partial:
    return a + b


def warp_partial(key, w: WarpRef, grid_shape, cfg: MatchConfig) -> Partial:
    """Stage A leaf: superpixel statistics of one warp."""
    image, bad = _image_and_bad(w, cfg)
    acc = image_stats(image, bad, w.box, grid_shape, cfg)
    return Partial(acc, ((key, int(np.count_nonzero(~bad))),))


def difference_partial(ref_key, ref: WarpRef, key, w: WarpRef, grid_shape, cfg: MatchConfig) -> Partial:
    """Stage B leaf: superpixel statistics of ref - warp on one patch."""
    ref_image, ref_bad = _image_and_bad(ref, cfg)
    image, bad = _image_and_bad(w, cfg)
    acc = difference_stats(ref_image, ref_bad, image, bad, w.box, grid_shape, cfg)
    return Partial(acc, ((key, int(np.count_nonzero(~bad))), (ref_key, int(np.count_nonzero(~ref_bad)))))


def usable_partial(key, w: WarpRef, cfg: MatchConfig) -> Partial:
    """Stage B for a warp no difference reads: only its usable pixel count."""
    _, bad = _image_and_bad(w, cfg)
    return Partial(EMPTY, ((key, int(np.count_nonzero(~bad))),))


def visit_figures(total: Partial, grid_shape, cfg: MatchConfig, visit: int) -> ReferenceFigures:
    """Stage A per visit: the reference-choice figures (undefined when the
    visit has no good superpixel: it then cannot be the reference)."""
    try:
        st = stats_image(total.acc, grid_shape, cfg, f"visit {visit}")
    except ModelError:
        return ReferenceFigures(visit, float("inf"), float("inf"), 0)
    return reference_figures(visit, st, cfg)


def visit_model(total: Partial, grid_shape, cfg: MatchConfig, visit: int) -> tuple[VisitModel, tuple]:
    """Stage B per visit: the difference model, and the usable counts read."""
    has_data = any(n > 0 for (v, _), n in total.usable if v == visit)
    model = difference_model(total.acc, grid_shape, cfg, visit, has_data=has_data)
    return model, total.usable


def warp_coarse(model: VisitModel, w: WarpRef, cfg: MatchConfig, coarse_shape) -> tuple[np.ndarray, int, int]:
    """Stage C per warp: its coarse offset cells and their first cell (ky0, kx0)."""
    kx, ky = coarse_cells(w.box, cfg, coarse_shape)
    if model.status != "matched":
        return np.zeros((ky[1] - ky[0], kx[1] - kx[0])), ky[0], kx[0]
    return coarse_offsets(model.model, cfg, kx, ky), ky[0], kx[0]


@dataclass(frozen=True)
class MatchedChunk:
    """Rows [start, stop) of a matched warp, mask in the canonical layout."""

    start: int
    stop: int
    image: np.ndarray
    mask: np.ndarray
    variance: np.ndarray


def match_chunk(w: WarpRef, rows: slice, coarse, matched: bool, cfg: MatchConfig,
                target_planes: dict[str, int]) -> MatchedChunk:
    """Stage C per chunk: image + offset on rows ``rows`` of one warp (the
    image unchanged when ``matched`` is false)."""
    grid, ky0, kx0 = coarse
    image = read(w, "image", rows)
    if matched:
        out = apply_offset(image, offset_rows(grid, kx0, ky0, w.box, rows, cfg))
    else:
        out = np.array(image, dtype=np.float32, copy=True)
    start, stop, _ = rows.indices(w.box.height)
    return MatchedChunk(
        start, stop, out, remap_mask(read(w, "mask", rows), w.mask_planes, target_planes),
        np.asarray(read(w, "variance", rows), dtype=np.float32),
    )
