"""The in-memory warp: one visit resampled onto one patch's outer box."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..geometry import Box

__all__ = ["Warp", "PLANES"]

#: The three planes of a warp, in file order.
PLANES = ("image", "mask", "variance")


@dataclass
class Warp:
    """Image, mask and variance of one warp with its box origin in the tract.

    ``mask`` holds the file's own bits; ``mask_planes`` maps each plane name
    to its bit number *in this warp* (bit numbers differ between files).
    ``wcs`` is the celestial WCS (``astropy.wcs.WCS``) when the file had one.
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

    def __repr__(self) -> str:
        ident = f"visit={self.visit}, patch={self.patch}, " if self.visit is not None else ""
        return f"Warp({ident}box={self.box}, planes={sorted(self.mask_planes)})"
