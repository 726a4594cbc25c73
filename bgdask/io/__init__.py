"""Input and output: afw-format FITS warps, warp catalogs, the output store."""

from .fits import read_plane, read_warp, read_warp_header, write_warp, WarpHeader
from .warp import PLANES, Warp

__all__ = ["PLANES", "Warp", "WarpHeader", "read_plane", "read_warp", "read_warp_header", "write_warp"]
