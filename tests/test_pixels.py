"""The one-pass pixel kernels (bgdask.kernels.pixels, bad_pixels) against
their NumPy definitions."""

from __future__ import annotations

import numpy as np
import pytest

from bgdask.kernels.pixels import bin_counts, bit_tables, remap_bits
from bgdask.kernels.stats import bad_pixels, superpixel_stats


@pytest.mark.parametrize("seed", range(4))
def test_bad_pixels_is_the_numpy_expression(seed):
    rng = np.random.default_rng(seed)
    mask = rng.integers(-2**31, 2**31, size=(37, 23), dtype=np.int64).astype(np.int32)
    image = rng.normal(size=mask.shape).astype(np.float32)
    image[rng.random(mask.shape) < 0.1] = np.nan
    image[0, :3] = [np.inf, -np.inf, np.nan]
    for bits in (0, 1, 0x1F0, -2**31, -1):
        want = ((mask & bits) != 0) | ~np.isfinite(image)
        np.testing.assert_array_equal(bad_pixels(mask, bits, image), want)
        np.testing.assert_array_equal(bad_pixels(mask, bits), (mask & bits) != 0)
        np.testing.assert_array_equal(bad_pixels(mask[:, 3:], bits, image[:, 3:].astype(np.float64)),
                                      want[:, 3:])                      # not contiguous: NumPy's path
        np.testing.assert_array_equal(bad_pixels(mask.astype(np.int64), bits, image), want)


def _naive_bins(bad, ref_bad, rowbin, colbin, shape):
    n = np.zeros(shape, np.int64)
    s = np.zeros(shape, np.int64)
    for r in range(bad.shape[0]):
        for c in range(bad.shape[1]):
            if not bad[r, c]:
                n[rowbin[r], colbin[c]] += 1
                if ref_bad is not None and not ref_bad[r, c]:
                    s[rowbin[r], colbin[c]] += 1
    return n, s


def test_bin_counts():
    rng = np.random.default_rng(1)
    bad = rng.random((30, 41)) < 0.3
    ref = rng.random((30, 41)) < 0.5
    rowbin = np.minimum(np.arange(30) // 7, 3)
    colbin = np.minimum(np.arange(41) // 9, 4)
    for r in (ref, None):
        got = bin_counts(bad[:, 1:], None if r is None else r[:, 1:], rowbin, colbin[1:] - colbin[1], (4, 5))
        want = _naive_bins(bad[:, 1:], None if r is None else r[:, 1:], rowbin, colbin[1:] - colbin[1], (4, 5))
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def _remap_two_halves(mask, moves):
    """The remapping as bgdask did it before (two 65,536-entry lookup tables)."""
    bits = mask.view(np.uint32)
    index = np.arange(1 << 16, dtype=np.int64)
    out = np.zeros(mask.shape, dtype=np.int32)
    for half in (0, 1):
        lut = np.zeros(1 << 16, dtype=np.int64)
        for src, dst in moves:
            if 16 * half <= src < 16 * (half + 1):
                lut |= ((index >> (src - 16 * half)) & 1) << dst
        if lut.any():
            key = (bits >> 16 if half else bits & 0xFFFF).astype(np.uint16)
            out |= lut.astype(np.uint32).view(np.int32)[key]
    return out


@pytest.mark.parametrize("seed", range(6))
def test_remap_bits_is_the_two_table_remap(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 33))
    moves = list(zip(rng.permutation(32)[:n].tolist(), rng.permutation(32)[:n].tolist()))
    mask = rng.integers(-2**31, 2**31, size=(29, 13), dtype=np.int64).astype(np.int32)
    mask[0, :4] = [0, -1, -2**31, 2**31 - 1]
    got = remap_bits(mask, bit_tables(moves))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, _remap_two_halves(mask, moves))
