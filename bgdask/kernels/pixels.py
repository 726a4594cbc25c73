"""One-pass pixel kernels: mask bit remapping and counts per bin.

Pure functions of arrays (numba, ``nogil``, no ``parallel``), each a single
pass over the pixels that replaces several NumPy passes and their
temporaries:

* :func:`remap_bits`: a mask re-expressed in other bit numbers, through four
  256-entry tables (one per byte of the 32-bit mask).
* :func:`bin_counts`: per bin of a grid of rows x columns, how many pixels
  are usable, and how many are usable in a second mask too (integers, exact).

Both are exact (bits and integer counts): the same results as the NumPy
expressions they replace, bit for bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["remap_bits", "bit_tables", "bin_counts"]

_JIT = dict(nogil=True, cache=True, error_model="numpy")


# -- mask bits ----------------------------------------------------------------------

def bit_tables(moves) -> np.ndarray:
    """The four 256-entry tables of :func:`remap_bits` for ``moves``, pairs
    (source bit, target bit): table k maps byte k of a mask to its target bits."""
    tables = np.zeros((4, 256), dtype=np.uint32)
    values = np.arange(256, dtype=np.uint32)
    for src, dst in moves:
        byte, bit = divmod(int(src), 8)
        tables[byte] |= ((values >> np.uint32(bit)) & np.uint32(1)) << np.uint32(dst)
    return tables


@njit(**_JIT)
def _remap(flat, tables, out):
    for i in range(flat.size):
        v = flat[i]
        out[i] = (tables[0, v & 0xFF] | tables[1, (v >> 8) & 0xFF] | tables[2, (v >> 16) & 0xFF]
                  | tables[3, (v >> 24) & 0xFF])


def remap_bits(mask: np.ndarray, tables: np.ndarray) -> np.ndarray:
    """``mask`` (int32) with every source bit moved as ``tables`` (from
    :func:`bit_tables`) say: int32, bits not moved are dropped."""
    mask = np.ascontiguousarray(mask, dtype=np.int32)
    out = np.empty(mask.shape, dtype=np.uint32)
    _remap(mask.view(np.uint32).reshape(-1), tables, out.reshape(-1))
    return out.view(np.int32)


# -- counts per bin ---------------------------------------------------------------------

@njit(**_JIT)
def _bin_counts(bad, ref_bad, has_ref, rowbin, colbin, nby, nbx):
    n = np.zeros((nby, nbx), dtype=np.int64)
    s = np.zeros((nby, nbx), dtype=np.int64)
    h, w = bad.shape
    for r in range(h):
        by = rowbin[r]
        for c in range(w):
            if not bad[r, c]:
                bx = colbin[c]
                n[by, bx] += 1
                if has_ref and not ref_bad[r, c]:
                    s[by, bx] += 1
    return n, s


def bin_counts(bad: np.ndarray, ref_bad: np.ndarray | None, rowbin: np.ndarray, colbin: np.ndarray,
               shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per bin (``rowbin[r]``, ``colbin[c]`` of every pixel, bins ``shape``):
    the pixels not ``bad``, and those also not ``ref_bad`` (zeros without
    ``ref_bad``), as int64 arrays."""
    bad = np.asarray(bad, dtype=np.bool_)
    has_ref = ref_bad is not None
    ref = np.asarray(ref_bad, dtype=np.bool_) if has_ref else np.zeros((1, 1), dtype=np.bool_)
    return _bin_counts(bad, ref, has_ref, np.asarray(rowbin, dtype=np.int64), np.asarray(colbin, dtype=np.int64),
                       int(shape[0]), int(shape[1]))
