"""Tests of bgdask.io.fits: afw-format warp files, read and written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from hypothesis import given, settings
from hypothesis import strategies as st

from bgdask.errors import InputError
from bgdask.geometry import Box
from bgdask.io import PLANES, Warp, WarpHeader, read_plane, read_warp, read_warp_header, write_warp

FIXTURES = Path(__file__).resolve().parent / "data" / "afw"
EXPOSURE = FIXTURES / "exposure-version-2.fits"
PARENT = FIXTURES / "parent.fits"
EMPTY = FIXTURES / "ticket2233.fits"

AFW_MASK_PLANES = {
    "BAD": 0, "SAT": 1, "INTRP": 2, "CR": 3, "EDGE": 4, "DETECTED": 5, "DETECTED_NEGATIVE": 6
}


def tan_wcs() -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.1, 2.2]
    wcs.wcs.crpix = [-120.5, 40.25]
    wcs.wcs.cd = [[-5.5e-5, 1.0e-7], [2.0e-7, 5.5e-5]]
    return wcs


def make_warp(height: int = 12, width: int = 9, seed: int = 0, **fields) -> Warp:
    rng = np.random.default_rng(seed)
    defaults = dict(
        image=rng.normal(size=(height, width)).astype(np.float32),
        mask=rng.integers(0, 2**9, size=(height, width), dtype=np.int32),
        variance=rng.uniform(0.5, 2.0, size=(height, width)).astype(np.float32),
        x0=1200,
        y0=3400,
        mask_planes={"BAD": 0, "SAT": 1, "DETECTED": 5, "DETECTED_NEGATIVE": 6, "NO_DATA": 8},
        visit=903334,
        patch=42,
        tract=9813,
        band="r",
        wcs=tan_wcs(),
    )
    return Warp(**{**defaults, **fields})


def assert_same_planes(got: Warp, expected: Warp) -> None:
    for plane in PLANES:
        a, b = getattr(got, plane), getattr(expected, plane)
        assert a.dtype == (np.int32 if plane == "mask" else np.float32)
        assert a.shape == b.shape
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), plane  # bit-exact, NaN-safe


def pixel_to_sky(wcs: WCS) -> np.ndarray:
    x, y = np.meshgrid([0.0, 4.5, 8.0, 250.0], [0.0, 3.0, 11.0, -40.0])
    return np.array(wcs.pixel_to_world_values(x, y))


# -- the Rubin stack's own files -------------------------------------------


def test_exposure_version_2():
    header = read_warp_header(EXPOSURE)
    assert header.path == str(EXPOSURE)
    assert header.box == Box(0, 0, 10, 10)
    assert header.hdus == {"image": 1, "mask": 2, "variance": 3}
    assert header.mask_planes == {**AFW_MASK_PLANES, "SUSPECT": 7, "NO_DATA": 8}
    assert not header.compressed
    assert (header.visit, header.patch, header.tract, header.band) == (None, None, None, None)

    warp = read_warp(EXPOSURE)
    assert warp.mask_planes == header.mask_planes
    with fits.open(EXPOSURE) as raw:
        for plane, index in header.hdus.items():
            data = getattr(warp, plane)
            assert data.shape == (10, 10)
            assert data.dtype == (np.int32 if plane == "mask" else np.float32)
            np.testing.assert_array_equal(data, raw[index].data)
        expected_sky = pixel_to_sky(WCS(raw[1].header))
    np.testing.assert_allclose(pixel_to_sky(warp.wcs), expected_sky, rtol=0, atol=1e-12)


def test_parent_image_in_primary_and_unsigned_mask():
    header = read_warp_header(PARENT)
    assert header.hdus == {"image": 0, "mask": 1, "variance": 2}
    assert header.box == Box(0, 0, 256, 256)
    assert header.mask_planes == AFW_MASK_PLANES

    warp = read_warp(PARENT)
    with fits.open(PARENT, do_not_scale_image_data=True) as raw:
        assert raw[1].header["BZERO"] == 32768 and raw[1].data.dtype.kind == "i"
        stored = raw[1].data.astype(np.int64)
        np.testing.assert_array_equal(warp.image, raw[0].data)
        np.testing.assert_array_equal(warp.variance, raw[2].data)
    assert warp.mask.dtype == np.int32
    np.testing.assert_array_equal(warp.mask, stored + 32768)
    assert warp.wcs is not None


def test_empty_exposure_is_a_clear_error():
    with pytest.raises(InputError, match=r"IMAGE plane is empty \(0 x 0") as caught:
        read_warp(EMPTY)
    assert str(caught.value).startswith(str(EMPTY))


def test_uint16_mask_keeps_high_bits(tmp_path):
    path = tmp_path / "u16.fits"
    warp = make_warp(height=4, width=5)
    mask = np.array([[0, 1, 32767, 32768, 65535]] * 4, dtype=np.uint16)
    hdus = [fits.PrimaryHDU()]
    for plane, data in (("IMAGE", warp.image), ("MASK", mask), ("VARIANCE", warp.variance)):
        hdus.append(fits.ImageHDU(data, fits.Header([("EXTTYPE", plane)])))
    fits.HDUList(hdus).writeto(path)
    got = read_plane(path, "mask")
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, mask.astype(np.int32))


# -- writing ---------------------------------------------------------------


def test_round_trip(tmp_path):
    path = tmp_path / "warp.fits"
    warp = make_warp()
    write_warp(path, warp)
    got = read_warp(path)
    assert_same_planes(got, warp)
    assert (got.x0, got.y0) == (1200, 3400)
    assert got.box == Box(1200, 3400, 9, 12) == read_warp_header(path).box
    assert got.mask_planes == warp.mask_planes
    assert (got.visit, got.patch, got.tract, got.band) == (903334, 42, 9813, "r")
    assert got.path == str(path)
    np.testing.assert_allclose(pixel_to_sky(got.wcs), pixel_to_sky(warp.wcs), rtol=0, atol=1e-12)


def test_written_layout_is_afw(tmp_path):
    path = tmp_path / "warp.fits"
    write_warp(path, make_warp())
    with fits.open(path) as raw:
        assert len(raw) == 4 and raw[0].data is None
        primary = raw[0].header
        assert primary["LSST BUTLER DATAID VISIT"] == 903334
        assert primary["LSST BUTLER DATAID PATCH"] == 42
        assert primary["LSST BUTLER DATAID TRACT"] == 9813
        assert primary["LSST BUTLER DATAID BAND"] == "r"
        for index, (plane, bitpix) in enumerate(zip(PLANES, (-32, 32, -32)), start=1):
            header = raw[index].header
            assert header["EXTNAME"] == header["EXTTYPE"] == plane.upper()
            assert header["BITPIX"] == bitpix
            assert (header["LTV1"], header["LTV2"]) == (-1200, -3400)
            assert (header["CRVAL1A"], header["CRVAL2A"]) == (1200, 3400)
            assert (header["CRPIX1A"], header["CRPIX2A"]) == (1, 1)
            assert header["CTYPE1A"] == header["CTYPE2A"] == "LINEAR"
            assert header["CUNIT1A"] == header["CUNIT2A"] == "PIXEL"
            assert header["CTYPE1"] == "RA---TAN"
        assert raw[2].header["MP_DETECTED_NEGATIVE"] == 6
        assert raw[2].header["MP_BAD"] == 0


def test_round_trip_without_wcs_or_ids(tmp_path):
    path = tmp_path / "bare.fits"
    write_warp(path, make_warp(wcs=None, visit=None, patch=None, tract=None, band=None, x0=0, y0=0))
    got = read_warp(path)
    assert got.wcs is None
    assert (got.visit, got.patch, got.tract, got.band) == (None, None, None, None)
    with fits.open(path) as raw:
        assert not any(key.startswith("LSST") for key in raw[0].header)


@settings(max_examples=25, deadline=None)
@given(
    x0=st.integers(-(10**6), 10**6),
    y0=st.integers(-(10**6), 10**6),
    bits=st.lists(st.integers(0, 31), min_size=0, max_size=8, unique=True),
)
def test_round_trip_origin_and_mask_planes(x0, y0, bits):
    planes = {f"PLANE_{bit}": bit for bit in bits}
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "warp.fits"
        write_warp(path, make_warp(height=3, width=4, x0=x0, y0=y0, mask_planes=planes))
        header = read_warp_header(path)
    assert header.box == Box(x0, y0, 4, 3)
    assert header.mask_planes == planes


def test_compressed_round_trip_is_bit_exact(tmp_path):
    path = tmp_path / "warp.fits.fz"
    warp = make_warp(height=20, width=16)
    special = [np.nan, np.inf, -np.inf, -0.0, 1e-42, np.finfo(np.float32).max]
    warp.image[0, : len(special)] = special
    warp.variance[3, : len(special)] = special
    warp.mask[5, :3] = [2**31 - 1, -(2**31), -1]
    write_warp(path, warp, compress=True)
    header = read_warp_header(path)
    assert header.compressed
    got = read_warp(path)
    assert_same_planes(got, warp)
    assert got.mask_planes == warp.mask_planes and got.box == warp.box
    np.testing.assert_array_equal(read_plane(header, "variance", slice(2, 7)), warp.variance[2:7])
    with fits.open(path) as raw:
        assert [type(hdu).__name__ for hdu in raw[1:]] == ["CompImageHDU"] * 3
        assert [hdu.name for hdu in raw[1:]] == ["IMAGE", "MASK", "VARIANCE"]


# -- row blocks ------------------------------------------------------------


@pytest.fixture(scope="module")
def block_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("blocks") / "warp.fits"
    warp = make_warp(height=37, width=11, seed=3)
    write_warp(path, warp)
    return read_warp_header(path), warp


@settings(max_examples=60, deadline=None)
@given(rows=st.slices(37), plane=st.sampled_from(PLANES))
def test_row_blocks_equal_the_full_planes_rows(block_file, rows, plane):
    header, warp = block_file
    got = read_plane(header, plane, rows)
    expected = getattr(warp, plane)[rows]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(got, expected)
    assert got.flags.writeable and got.flags.c_contiguous


def test_read_plane_takes_a_path_or_a_header(block_file):
    header, warp = block_file
    np.testing.assert_array_equal(read_plane(Path(header.path), "mask"), warp.mask)
    np.testing.assert_array_equal(read_plane(header.path, "image", slice(30, None)), warp.image[30:])
    with pytest.raises(ValueError, match="plane must be one of"):
        read_plane(header, "weights")


@pytest.mark.filterwarnings("ignore:File may have been truncated")
def test_row_block_needs_no_byte_past_it(tmp_path):
    """Cut the file right after the block: the block still reads, the plane does not."""
    path = tmp_path / "warp.fits"
    warp = make_warp(height=30, width=13)
    write_warp(path, warp)
    header = read_warp_header(path)
    with fits.open(path) as raw:
        start = raw.fileinfo(header.hdus["image"])["datLoc"]
    with open(path, "r+b") as stream:
        stream.truncate(start + 12 * 13 * 4)  # rows 0-11 of the IMAGE plane survive
    np.testing.assert_array_equal(read_plane(header, "image", slice(4, 12)), warp.image[4:12])
    with pytest.raises(InputError, match="truncated"):
        read_plane(header, "image")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
def test_row_block_reads_only_its_bytes(tmp_path):
    """Count the bytes this process reads (rchar): a block costs its rows, not the plane."""

    def bytes_read() -> int:
        with open("/proc/self/io") as stream:
            return int(next(line for line in stream if line.startswith("rchar:")).split()[1])

    path = tmp_path / "big.fits"
    height = width = 1024  # 4 MiB per float32 plane
    warp = make_warp(height=height, width=width)
    write_warp(path, warp)
    header = read_warp_header(path)

    before = bytes_read()
    block = read_plane(header, "variance", slice(500, 508))
    block_cost = bytes_read() - before
    before = bytes_read()
    read_plane(header, "variance")
    full_cost = bytes_read() - before

    np.testing.assert_array_equal(block, warp.variance[500:508])
    assert full_cost >= height * width * 4
    assert block_cost < 100_000  # 8 rows are 32 KiB, plus the headers


# -- bad input -------------------------------------------------------------


def write_planes(path: Path, planes: dict[str, np.ndarray], **cards) -> Path:
    """An afw-like file with the given planes (label -> data) and extra cards in each."""
    hdus = [fits.PrimaryHDU()]
    for label, data in planes.items():
        hdus.append(fits.ImageHDU(data, fits.Header([("EXTTYPE", label), *cards.items()])))
    fits.HDUList(hdus).writeto(path)
    return path


def good_planes(height: int = 6, width: int = 5) -> dict[str, np.ndarray]:
    warp = make_warp(height=height, width=width)
    return {"IMAGE": warp.image, "MASK": warp.mask, "VARIANCE": warp.variance}


def written(path: Path) -> Path:
    write_warp(path, make_warp())
    return path


def cut(path: Path, keep: int) -> Path:
    data = written(path).read_bytes()
    path.write_bytes(data[:keep])
    return path


def text_file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def replace_bytes(path: Path, old: bytes, new: bytes) -> Path:
    data = written(path).read_bytes()
    assert old in data and len(new) <= len(old)
    path.write_bytes(data.replace(old, new.ljust(len(old)), 1))
    return path


def edit_header(path: Path, index: int, **cards) -> Path:
    with fits.open(written(path), mode="update") as raw:
        raw[index].header.update(cards)
    return path


BAD_FILES = {
    "not FITS": (lambda p: text_file(p, "plain text\n" * 400), "not a readable FITS file"),
    "empty file": (lambda p: text_file(p, ""), "not a readable FITS file"),
    "missing file": (lambda p: p, "not found"),
    "truncated data": (lambda p: cut(p, -2700), "truncated"),  # into VARIANCE's 432 bytes
    "truncated header": (lambda p: cut(p, 2880 * 2 + 1000), "truncated"),
    "no MASK": (
        lambda p: write_planes(p, {k: v for k, v in good_planes().items() if k != "MASK"}),
        "no MASK plane",
    ),
    "no VARIANCE": (
        lambda p: write_planes(p, {k: v for k, v in good_planes().items() if k != "VARIANCE"}),
        "no VARIANCE plane",
    ),
    "shapes differ": (
        lambda p: write_planes(p, {**good_planes(), "VARIANCE": good_planes(7, 5)["VARIANCE"]}),
        "disagree on their shape",
    ),
    "0 x 0 planes": (
        lambda p: write_planes(p, {k: np.zeros((0, 0), v.dtype) for k, v in good_planes().items()}),
        "empty",
    ),
    "one-dimensional plane": (
        lambda p: write_planes(p, {k: v[0] for k, v in good_planes().items()}),
        "1 axes",
    ),
    "unparsable card": (
        lambda p: replace_bytes(p, b"LTV1    =                -1200", b"LTV1    = 1.5.3 / not a number"),
        "unreadable FITS header",
    ),
    "garbled mask bit card": (
        lambda p: replace_bytes(p, b"MP_BAD  =                    0", b"MP_BAD  = 'no closing quote"),
        "MP_BAD",
    ),
    "mask bit not a number": (lambda p: edit_header(p, 2, MP_BAD="zero"), "MP_BAD"),
    "mask bit out of range": (lambda p: edit_header(p, 2, MP_BAD=40), "bit number"),
    "float mask": (
        lambda p: write_planes(p, {**good_planes(), "MASK": good_planes()["IMAGE"]}),
        "BITPIX = -32",
    ),
    "LTV and CRVAL1A disagree": (lambda p: edit_header(p, 1, LTV1=-5), "disagree on the box origin"),
    "fractional LTV": (lambda p: edit_header(p, 1, LTV1=-2.5, CRVAL1A=2.5), "whole pixel"),
    "planes disagree on origin": (
        lambda p: edit_header(p, 3, LTV1=-7, CRVAL1A=7),
        "disagree on their box origin",
    ),
    "two IMAGE HDUs": (
        lambda p: write_planes(p, {"IMAGE": good_planes()["IMAGE"], "image": good_planes()["MASK"]}),
        "both labeled IMAGE",
    ),
    "visit not an integer": (
        lambda p: edit_header(p, 0, **{"HIERARCH LSST BUTLER DATAID VISIT": "v12"}),
        "LSST BUTLER DATAID VISIT",
    ),
    "bad celestial WCS": (lambda p: edit_header(p, 1, CTYPE1="RA---TAN", CTYPE2="RA---TAN"), "WCS"),
}


@pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyUserWarning")
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_raise_input_error_naming_the_file(tmp_path, case):
    build, reason = BAD_FILES[case]
    path = build(tmp_path / "bad.fits")
    with pytest.raises(InputError, match=reason) as caught:
        read_warp(path)
    assert str(caught.value).startswith(str(path))
    if case != "bad celestial WCS":  # the WCS is only parsed by read_warp
        with pytest.raises(InputError) as caught:
            read_warp_header(path)
        assert str(caught.value).startswith(str(path))


@pytest.mark.parametrize(
    "fields, reason",
    [
        ({"variance": np.zeros((3, 3), np.float32)}, "shapes"),
        ({"mask": np.zeros((12, 9), np.float32)}, "must be integer"),
        ({"mask_planes": {"bad plane": 1}}, "mask plane"),
    ],
)
def test_unwritable_warps_raise_input_error(tmp_path, fields, reason):
    path = tmp_path / "warp.fits"
    with pytest.raises(InputError, match=reason) as caught:
        write_warp(path, make_warp(**fields))
    assert str(caught.value).startswith(str(path))
    assert list(tmp_path.iterdir()) == []


# -- other layouts ---------------------------------------------------------


def test_unlabeled_planes_are_taken_in_order(tmp_path):
    path = tmp_path / "plain.fits"
    planes = good_planes()
    fits.HDUList([fits.PrimaryHDU(), *(fits.ImageHDU(data) for data in planes.values())]).writeto(path)
    assert read_warp_header(path).hdus == {"image": 1, "mask": 2, "variance": 3}
    np.testing.assert_array_equal(read_plane(path, "variance"), planes["VARIANCE"])


def test_mask_planes_from_the_primary_header(tmp_path):
    path = tmp_path / "primary-mp.fits"
    hdus = [fits.PrimaryHDU(header=fits.Header([("MP_BAD", 0), ("HIERARCH MP_NO_DATA", 8)]))]
    hdus += [fits.ImageHDU(data, name=label) for label, data in good_planes().items()]
    fits.HDUList(hdus).writeto(path)
    assert read_warp_header(path).mask_planes == {"BAD": 0, "NO_DATA": 8}


def test_extra_hdus_are_ignored(tmp_path):
    path = tmp_path / "tables.fits"
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="J", array=[1, 2])])
    planes = good_planes()
    images = [fits.ImageHDU(data, name=label) for label, data in planes.items()]
    hdus = [fits.PrimaryHDU(), table, *images, table.copy()]
    fits.HDUList(hdus).writeto(path)
    assert read_warp_header(path).hdus == {"image": 2, "mask": 3, "variance": 4}
    np.testing.assert_array_equal(read_warp(path).mask, planes["MASK"])


def test_warp_header_is_plain_data():
    header = read_warp_header(EXPOSURE)
    assert isinstance(header, WarpHeader)
    with pytest.raises(AttributeError):
        header.x0 = 3


# -- atomic writes ---------------------------------------------------------


def test_write_leaves_only_the_file(tmp_path):
    path = tmp_path / "warp.fits"
    write_warp(path, make_warp())
    assert [p.name for p in tmp_path.iterdir()] == ["warp.fits"]


def test_refuses_to_overwrite_unless_asked(tmp_path):
    path = tmp_path / "warp.fits"
    write_warp(path, make_warp(seed=1))
    before = path.read_bytes()
    with pytest.raises(InputError, match="exists") as caught:
        write_warp(path, make_warp(seed=2))
    assert str(caught.value).startswith(str(path))
    assert path.read_bytes() == before
    write_warp(path, make_warp(seed=2), overwrite=True)
    assert_same_planes(read_warp(path), make_warp(seed=2))
    assert [p.name for p in tmp_path.iterdir()] == ["warp.fits"]


def test_a_crash_mid_write_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "warp.fits"
    write_warp(path, make_warp(seed=1))
    before = path.read_bytes()

    def crash(self, fileobj, *args, **kwargs):
        fileobj.write(b"SIMPLE  =                    T" + b" " * 50)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(fits.HDUList, "writeto", crash)
    for target, overwrite in ((path, True), (tmp_path / "new.fits", False)):
        with pytest.raises(RuntimeError, match="disk on fire"):
            write_warp(target, make_warp(seed=2), overwrite=overwrite)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["warp.fits"]


def test_unwritable_directory_is_an_input_error(tmp_path):
    path = tmp_path / "no-such-dir" / "warp.fits"
    with pytest.raises(InputError, match="cannot write") as caught:
        write_warp(path, make_warp())
    assert str(caught.value).startswith(str(path))
    assert not os.path.exists(path.parent)


@pytest.mark.parametrize("name", ["exposure-version-2.fits", "parent.fits"])
def test_reads_through_a_header_equal_astropy_reads(name, tmp_path):
    """read_plane(WarpHeader) seeks to the recorded data offset; it must give
    what astropy gives, BZERO included, and a clear error once truncated."""
    from bgdask.io.fits import read_plane, read_warp_header

    path = FIXTURES / name
    header = read_warp_header(path)
    assert header.layout is not None
    for plane in ("image", "mask", "variance"):
        for rows in (None, slice(2, 7), slice(0, 1)):
            fast = read_plane(header, plane, rows)
            slow = read_plane(path, plane, rows)
            assert fast.dtype == slow.dtype
            np.testing.assert_array_equal(fast, slow)
    cut = tmp_path / name
    data = path.read_bytes()
    cut.write_bytes(data)
    header = read_warp_header(cut)
    offset = header.layout["variance"][0]
    cut.write_bytes(data[: offset + 10])
    with pytest.raises(InputError, match="truncated"):
        read_plane(header, "variance")


# -- lsst.images files (tests/data/lsst_images/README.md) --------------------------

LSST_IMAGES = Path(__file__).resolve().parent / "data" / "lsst_images"


def _check_lsst_images_file(path, x0, y0, height, width, image_of):
    warp = read_warp(path)
    assert (warp.x0, warp.y0, warp.height, warp.width) == (x0, y0, height, width)
    # MSKN/MSKM cards: plane 3 was unnamed in the schema; the file numbers the named planes 0-4
    assert warp.mask_planes == {"BAD": 0, "SAT": 1, "EDGE": 2, "DETECTED": 3, "NO_DATA": 4}
    y, x = np.mgrid[0:height, 0:width]
    np.testing.assert_array_equal(warp.image, image_of(y, x))
    np.testing.assert_array_equal(warp.variance, np.float32(2.5) + y.astype(np.float32))
    expected = {
        "BAD": x == 3, "SAT": (y == 5) & (x >= 10), "EDGE": (y == 0) | (x == width - 1),
        "DETECTED": (y >= 8) & (y < 12) & (x >= 20) & (x < 26), "NO_DATA": y >= height - 2,
    }
    for name, where in expected.items():
        np.testing.assert_array_equal((warp.mask >> warp.mask_planes[name]) & 1 == 1, where, err_msg=name)
    assert int(np.bitwise_or.reduce(warp.mask.ravel())) == 0b11111
    header = read_warp_header(path)
    assert header.compressed and header.mask_planes == warp.mask_planes
    for plane in PLANES:      # row blocks of the tile-compressed planes
        np.testing.assert_array_equal(read_plane(header, plane, slice(5, 9)), getattr(warp, plane)[5:9])


def test_reads_the_committed_lsst_images_file():
    """A MaskedImage written by lsst.images: mask planes by name (MSKN cards),
    origin from CRVAL1A/2A, tile-compressed planes."""
    _check_lsst_images_file(LSST_IMAGES / "masked_image.fits", 4200, -12, 24, 40,
                            lambda y, x: (10.0 * y + x / 8.0).astype(np.float32))


def test_lsst_images_mask_split_over_hdus_is_refused(tmp_path):
    """More than 31 planes: lsst.images writes a second MASK HDU; refused by name."""
    path = tmp_path / "split.fits"
    hdus = [fits.PrimaryHDU()]
    for name, n in (("IMAGE", None), ("MASK", 0), ("MASK", 31), ("VARIANCE", None)):
        data = np.zeros((4, 5), dtype=np.int32 if n is not None else np.float32)
        header = fits.Header([("EXTNAME", name)])
        if n is not None:
            header[f"MSKN{0:04d}"] = f"P{n}"
            header[f"MSKM{0:04d}"] = 1
        hdus.append(fits.ImageHDU(data, header))
    fits.HDUList(hdus).writeto(path)
    with pytest.raises(InputError, match=r"split.fits: the mask is split over HDUs 2 and 3.*31 mask planes"):
        read_warp_header(path)


@pytest.mark.parametrize("cards, reason", [
    ({"MSKN0000": "BAD", "MSKM0000": 3}, "MSKM0000 = 3 is not one bit"),
    ({"MSKN0000": "BAD", "MSKN0001": "BAD"}, "BAD is named twice"),
    ({"MSKN0000": ""}, "is not a plane name"),
], ids=["two-bits", "twice", "empty-name"])
def test_bad_lsst_images_mask_cards(tmp_path, cards, reason):
    path = tmp_path / "bad.fits"
    mask_header = fits.Header([("EXTNAME", "MASK"), *cards.items()])
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((3, 3), np.float32), fits.Header([("EXTNAME", "IMAGE")])),
                  fits.ImageHDU(np.zeros((3, 3), np.int32), mask_header),
                  fits.ImageHDU(np.zeros((3, 3), np.float32), fits.Header([("EXTNAME", "VARIANCE")]))]).writeto(path)
    with pytest.raises(InputError, match=reason):
        read_warp_header(path)
