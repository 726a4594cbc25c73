import numpy as np
import pytest

from bgdask.masks import canonical_planes, plane_bits, remap_mask


def naive_remap(mask, layout, target):
    out = np.zeros(mask.shape, dtype=np.int64)
    m = mask.astype(np.int64) & 0xFFFFFFFF
    for name, bit in layout.items():
        if name in target:
            out |= ((m >> bit) & 1) << target[name]
    return out.astype(np.uint32).view(np.int32)


@pytest.mark.parametrize("seed", range(8))
def test_remap_equals_bit_by_bit(seed):
    rng = np.random.default_rng(seed)
    names = [f"P{i}" for i in range(rng.integers(1, 20))]
    layout = dict(zip(names, rng.permutation(32)[: len(names)].tolist()))
    target = dict(zip(names, rng.permutation(31)[: len(names)].tolist()))
    mask = rng.integers(-2**31, 2**31, size=(17, 13), dtype=np.int64).astype(np.int32)
    np.testing.assert_array_equal(remap_mask(mask, layout, target), naive_remap(mask, layout, target))
    # the same layout keeps only the named bits
    np.testing.assert_array_equal(remap_mask(mask, layout, layout), naive_remap(mask, layout, layout))


def test_uint16_masks_and_unknown_planes():
    mask = np.array([[0, 1, 2, 65535]], dtype=np.uint16)
    out = remap_mask(mask, {"BAD": 0, "SAT": 1, "X": 15}, {"SAT": 0, "BAD": 3})
    np.testing.assert_array_equal(out, [[0, 8, 1, 9]])


def test_canonical_layout():
    planes = canonical_planes([{"SAT": 5, "FOO": 0}, {"BAD": 2, "NO_DATA": 9}])
    assert list(planes) == ["BAD", "SAT", "EDGE", "NO_DATA", "FOO"]
    assert plane_bits(planes, ["BAD", "NO_DATA", "MISSING"]) == (1 << 0) | (1 << 3)


@pytest.mark.parametrize("seed", range(6))
def test_bad_pixels_need_no_remap(seed):
    """The bad pixels of a raw mask with bad_bits_of equal those of the remapped mask."""
    from bgdask.masks import bad_bits_of

    rng = np.random.default_rng(100 + seed)
    names = [f"P{i}" for i in range(rng.integers(1, 20))]
    layout = dict(zip(names, rng.permutation(32)[: len(names)].tolist()))
    target = dict(zip(names[: max(1, len(names) - 2)], rng.permutation(31)[: len(names)].tolist()))
    wanted = list(rng.choice(names + ["MISSING"], size=3))
    mask = rng.integers(-2**31, 2**31, size=(31, 7), dtype=np.int64).astype(np.int32)
    via_remap = (remap_mask(mask, layout, target) & plane_bits(target, wanted)) != 0
    np.testing.assert_array_equal((mask & bad_bits_of(layout, target, wanted)) != 0, via_remap)
