"""Warps and where they come from.

A *warp* is one visit resampled onto one patch's outer box: an image, a mask
and a variance plane, and the box's origin in tract pixels. bgdask reads
warps through one small protocol, :class:`WarpSource`: a box, the names of
its mask bits, and ``read(plane, rows)``. Three classes implement it:

* :class:`Warp` (here): a warp held in memory;
* :class:`bgdask.io.fits.WarpHeader`: an afw-format FITS file, known by its headers;
* :class:`bgdask.io.store.StoreWarp`: a warp inside a bgdask output store.

A new kind of input is one new class with these four members.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np

from ..geometry import Box

__all__ = ["PLANES", "PLANE_DTYPES", "PLANE_FILL", "Warp", "WarpSource", "grid_coords"]

#: The three planes of a warp, in file order.
PLANES = ("image", "mask", "variance")
#: Each plane's type in memory, in the collection and in the output store.
PLANE_DTYPES = {"image": np.dtype(np.float32), "mask": np.dtype(np.int32), "variance": np.dtype(np.float32)}
#: What pads a warp to the collection's shape, and fills absent warps.
PLANE_FILL = {"image": np.float32(np.nan), "mask": np.int32(0), "variance": np.float32(np.nan)}


def grid_coords(visits, patches, boxes) -> dict:
    """The (visit, patch) coordinates of a collection of warps and of a store:
    the visits, the patches, and each patch's outer box (``x0``, ``y0``,
    ``width``, ``height``, in tract pixels), as xarray coordinates."""
    boxes = list(boxes)
    return {
        "visit": np.asarray(visits, dtype=np.int64),
        "patch": np.asarray(patches, dtype=np.int64),
        **{name: ("patch", np.array([getattr(b, name) for b in boxes], dtype=np.int64))
           for name in ("x0", "y0", "width", "height")},
    }


@runtime_checkable
class WarpSource(Protocol):
    """Where one warp's pixels can be read from."""

    @property
    def box(self) -> Box:
        """The warp's box in tract pixels."""

    @property
    def mask_planes(self) -> Mapping[str, int]:
        """Mask plane name -> bit number, in this source's own mask."""

    @property
    def path(self) -> str | None:
        """A file or store to name in messages (None for memory)."""

    def read(self, plane: str, rows: slice | None = None) -> np.ndarray:
        """One plane (``image``, ``mask`` or ``variance``), or a block of its
        rows: float32 image and variance, int32 mask in this source's bits."""


@dataclass
class Warp:
    """Image, mask and variance of one warp with its box origin in the tract.

    ``mask`` holds the file's own bits; ``mask_planes`` maps each plane name
    to its bit number *in this warp* (bit numbers differ between files).
    ``wcs`` is the celestial WCS (``astropy.wcs.WCS``) when the file had one.
    A Warp is also a :class:`WarpSource` (its planes are in memory).
    """

    image: np.ndarray
    mask: np.ndarray
    variance: np.ndarray
    x0: int = 0
    y0: int = 0
    mask_planes: dict[str, int] = field(default_factory=dict)
    visit: int | None = None
    patch: int | None = None
    tract: int | None = None
    band: str | None = None
    wcs: Any = None
    path: str | None = None

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def box(self) -> Box:
        return Box(int(self.x0), int(self.y0), self.width, self.height)

    def read(self, plane: str, rows: slice | None = None) -> np.ndarray:
        if plane not in PLANES:
            raise ValueError(f"plane must be one of {PLANES}, not {plane!r}")
        arr = getattr(self, plane)
        return arr if rows is None else arr[rows]

    def __repr__(self) -> str:
        ident = f"visit={self.visit}, patch={self.patch}, " if self.visit is not None else ""
        return f"Warp({ident}box={self.box}, planes={sorted(self.mask_planes)})"
