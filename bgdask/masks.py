"""Mask planes: one canonical bit layout across files, and remapping into it.

Bit numbers differ between afw files; names do not. bgdask maps every file's
mask into one layout: Rubin's usual planes first in Rubin's order, then any
other names in alphabetical order.

A bit that a file sets but names with no ``MP_`` card is not dropped: it
becomes the plane ``UNNAMED_<bit>`` (its bit number in that file), added
after the named planes once the pixels have shown it (:func:`with_unnamed`;
the match finds such bits while it reads every mask in stage B and warns
naming the file). :func:`remap_mask` moves a file's unnamed bit ``b`` to the
target's ``UNNAMED_<b>`` plane when the target has one.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from .errors import InputError

__all__ = ["RUBIN_PLANES", "MAX_PLANES", "canonical_planes", "plane_bits", "remap_mask", "unnamed_bits",
           "unnamed_name", "with_unnamed", "bad_bits_of"]

#: The most planes one layout holds (bits 0-30 of an int32 mask).
MAX_PLANES = 31
#: How a bit with no name is called: UNNAMED_<its bit in the file>.
UNNAMED = "UNNAMED_"

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
    if len(ordered) > MAX_PLANES:
        raise InputError(f"more than {MAX_PLANES} distinct mask planes across the warps: {ordered}")
    return {name: bit for bit, name in enumerate(ordered)}


def unnamed_name(bit: int) -> str:
    return f"{UNNAMED}{int(bit)}"


def unnamed_bits(mask: np.ndarray, layout: Mapping[str, int]) -> int:
    """The bits set somewhere in ``mask`` that ``layout`` does not name (an int)."""
    mask = np.asarray(mask)
    if not mask.size:
        return 0
    named = 0
    for bit in layout.values():
        named |= 1 << int(bit)
    flat = np.ascontiguousarray(mask).ravel()
    if flat.dtype.kind == "i":  # the bits, without sign extension
        flat = flat.view(flat.dtype.str.replace("i", "u"))
    seen = int(np.bitwise_or.reduce(flat)) & 0xFFFFFFFF
    return seen & ~named & 0xFFFFFFFF


def with_unnamed(target: Mapping[str, int], bits: Iterable[int], where: str = "the warps") -> dict[str, int]:
    """``target`` with a plane ``UNNAMED_<b>`` for each of ``bits`` it lacks,
    on the next free bits (the named planes keep theirs)."""
    out = dict(target)
    for bit in sorted(set(int(b) for b in bits)):
        name = unnamed_name(bit)
        if name not in out:
            out[name] = max(out.values(), default=-1) + 1
    if len(out) > MAX_PLANES:
        raise InputError(f"{where}: {len(out)} mask planes with the unnamed bits kept as UNNAMED_<bit> "
                         f"planes; at most {MAX_PLANES} fit: {sorted(out, key=out.get)}")
    return out


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
    if any(name.startswith(UNNAMED) for name in target):
        named = {int(b) for b in layout.values()}
        moves += [(b, int(target[unnamed_name(b)])) for b in range(32)
                  if b not in named and unnamed_name(b) in target]
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
