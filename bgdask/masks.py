"""Mask planes: one canonical bit layout across files, and remapping into it.

Bit numbers differ between afw files; names do not. bgdask maps every file's
mask into one layout: Rubin's usual planes first in Rubin's order, then any
other names in alphabetical order.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from .errors import InputError

__all__ = ["RUBIN_PLANES", "canonical_planes", "plane_bits", "remap_mask", "bad_bits_of"]

RUBIN_PLANES = (
    "BAD", "SAT", "INTRP", "CR", "EDGE", "DETECTED", "DETECTED_NEGATIVE",
    "SUSPECT", "NO_DATA", "CROSSTALK", "NOT_DEBLENDED", "UNMASKEDNAN",
    "CLIPPED", "INEXACT_PSF", "REJECTED", "SENSOR_EDGE", "STREAK",
)


def canonical_planes(layouts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """One name -> bit layout holding every plane named in ``layouts``."""
    names: set[str] = set()
    for layout in layouts:
        names.update(layout)
    names.update(("BAD", "SAT", "EDGE", "NO_DATA"))
    ordered = [n for n in RUBIN_PLANES if n in names] + sorted(names - set(RUBIN_PLANES))
    if len(ordered) > 31:
        raise InputError(f"more than 31 distinct mask planes across the warps: {ordered}")
    return {name: bit for bit, name in enumerate(ordered)}


def plane_bits(layout: Mapping[str, int], names: Iterable[str]) -> int:
    """OR of the bits that ``layout`` gives the named planes (absent names add nothing)."""
    value = 0
    for name in names:
        if name in layout:
            value |= 1 << int(layout[name])
    return value


def remap_mask(mask: np.ndarray, layout: Mapping[str, int], target: Mapping[str, int]) -> np.ndarray:
    """Re-express ``mask`` (bits of ``layout``) in the bits of ``target`` (int32).

    One AND when every bit stays where it is; otherwise one pass through four
    256-entry tables, one per byte of the mask
    (:func:`bgdask.kernels.pixels.remap_bits`).
    """
    mask = np.asarray(mask).astype(np.int32, copy=False)
    moves = [(int(bit), int(target[name])) for name, bit in layout.items() if name in target]
    if all(src == dst for src, dst in moves):
        keep = sum(1 << src for src, _ in moves)
        return mask & np.uint32(keep).view(np.int32)
    from .kernels.pixels import bit_tables, remap_bits

    return remap_bits(mask, bit_tables(moves))


def bad_bits_of(layout: Mapping[str, int], target: Mapping[str, int], names: Iterable[str]) -> int:
    """The bits, in a mask of layout ``layout``, of the planes ``names`` as
    they survive :func:`remap_mask` into ``target``: ``(mask & bits) != 0``
    equals ``(remap_mask(mask, layout, target) & plane_bits(target, names)) != 0``
    (for the int32 mask), so a mask need not be remapped to find its bad pixels.
    Returned as an int32 value (bit 31 is the sign bit)."""
    bits = plane_bits({n: b for n, b in layout.items() if n in target}, names)
    return bits - (1 << 32) if bits >= 1 << 31 else bits
