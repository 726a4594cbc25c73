"""Fuzzing: random small tracts and configurations through the serial driver,
and randomly corrupted warp files through the FITS reader and the catalog.

Whatever the input, bgdask either works or raises one of its documented
errors (:class:`bgdask.errors.BgdaskError`); the FITS reader and the catalog
raise only :class:`~bgdask.errors.InputError` and never hang.
"""

from __future__ import annotations

import functools
import tempfile
import threading
import traceback
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, Phase, assume, given, note, settings
from hypothesis import strategies as st

from bgdask.config import EXTRAPOLATIONS, INTERPOLATIONS, STATISTICS, MatchConfig
from bgdask.errors import BgdaskError, ConfigError, InputError
from bgdask.geometry import SkyMap
from bgdask.io import Warp, read_warp, write_warp
from bgdask.io.catalog import find_warps
from bgdask.kernels.stats import bad_pixels
from bgdask.masks import plane_bits
from bgdask import match_arrays

# Corrupted files make astropy warn (truncation, bad cards): expected here.
pytestmark = [
    pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyWarning"),
    pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning"),
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),
    pytest.mark.filterwarnings("ignore::bgdask.errors.UnusableWarpWarning"),
]

#: Mask planes of the fuzzed warps (each visit numbers them differently).
PLANE_NAMES = ("BAD", "SAT", "EDGE", "NO_DATA", "DETECTED", "CR")

#: Seconds one read of a corrupted file may take before it counts as a hang.
READ_TIMEOUT = 30.0

FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
#: Shrinking the many draws of a tract takes minutes: report the first failure as found.
NO_SHRINK = settings(FUZZ, max_examples=400, phases=[Phase.explicit, Phase.generate])


# -- random tracts ------------------------------------------------------------------

KINDS = ("noise", "constant", "zeros", "ramp", "all_nan", "some_nan", "some_inf",
         "all_bad", "some_bad", "nan_rows", "single_good")


def _warp_pixels(kind: str, shape, rng: np.random.Generator, level: float, sigma: float,
                 layout: dict[str, int]):
    h, w = shape
    image = (level + sigma * rng.standard_normal(shape)).astype(np.float32)
    mask = np.zeros(shape, dtype=np.int32)
    if kind == "constant":
        image[:] = np.float32(level)
    elif kind == "zeros":
        image[:] = 0
    elif kind == "ramp":
        yy, xx = np.mgrid[0:h, 0:w]
        image = (level + 0.5 * xx - 0.25 * yy).astype(np.float32)
    elif kind == "all_nan":
        image[:] = np.nan
    elif kind == "some_nan":
        image[rng.random(shape) < rng.uniform(0.05, 0.95)] = np.nan
    elif kind == "some_inf":
        image[rng.random(shape) < 0.1] = np.float32(np.inf)
        image[rng.random(shape) < 0.05] = np.float32(-np.inf)
    elif kind == "all_bad":
        mask[:] = 1 << layout["BAD"]
    elif kind == "some_bad":
        bits = rng.integers(0, len(PLANE_NAMES), size=shape)
        hit = rng.random(shape) < rng.uniform(0.1, 0.9)
        for name, bit in layout.items():
            mask[hit & (bits == PLANE_NAMES.index(name))] |= 1 << bit
    elif kind == "nan_rows":
        image[rng.random(h) < 0.5, :] = np.nan
        mask[rng.random(h) < 0.3, :] |= 1 << layout["NO_DATA"]
    elif kind == "single_good":
        image[:] = np.nan
        image[rng.integers(h), rng.integers(w)] = np.float32(level)
    nan = ~np.isfinite(image)
    mask[np.isnan(image)] |= 1 << layout["NO_DATA"]
    variance = np.full(shape, np.float32(max(sigma, 1.0) ** 2))
    variance[nan] = np.nan
    return image, mask, variance


@st.composite
def tracts(draw):
    """(skymap, warps): 1-3 visits on a tiny tract (boxes down to one pixel)."""
    px, py = draw(st.integers(1, 32)), draw(st.integers(1, 32))
    border = draw(st.integers(0, 3))
    nx, ny = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    skymap = SkyMap((px, py), border, (nx, ny), tract=7)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    warps: dict[tuple[int, int], Warp] = {}
    for index in range(draw(st.integers(1, 3))):
        visit = 100 + index
        layout = dict(zip(PLANE_NAMES, draw(st.permutations(range(len(PLANE_NAMES))))))
        level = draw(st.floats(-200.0, 200.0, allow_nan=False))
        sigma = draw(st.sampled_from([0.0, 0.5, 5.0, 50.0]))
        patches = draw(st.lists(st.sampled_from(skymap.patches), min_size=1, unique=True))
        for p in sorted(patches):
            box = skymap.outer_box(p)
            kind = draw(st.sampled_from(KINDS))
            image, mask, variance = _warp_pixels(kind, box.shape, rng, level, sigma, layout)
            warps[(visit, p)] = Warp(image=image, mask=mask, variance=variance, x0=box.x0, y0=box.y0,
                                     mask_planes=dict(layout), visit=visit, patch=p, tract=7)
    return skymap, warps


def config_fields(visits):
    """Keyword arguments of a MatchConfig, each field within its documented range."""
    weights = st.floats(0.0, 1.0)
    bins = st.one_of(st.integers(1, 6), st.integers(1, 48))
    return st.fixed_dictionaries({
        "ref_visit": st.one_of(st.none(), st.sampled_from(sorted(visits))),
        "x_bin": bins, "y_bin": bins,
        "min_frac": st.one_of(st.just(0.0), st.floats(0.0, 0.2), st.floats(0.0, 1.0)),
        "bad_mask_planes": st.lists(st.sampled_from(PLANE_NAMES + ("NOT_A_PLANE",)), max_size=4).map(tuple),
        "grid_statistic": st.sampled_from(STATISTICS),
        "num_sigma_clip": st.floats(0.1, 10.0),
        "num_iter": st.integers(0, 5),
        "interpolation": st.sampled_from(INTERPOLATIONS),
        "undersample_style": st.sampled_from(["REDUCE_INTERP_ORDER", "THROW_EXCEPTION"]),
        "do_smooth": st.booleans(),
        "smooth_scale": st.floats(0.1, 5.0),
        "binning": bins,
        "best_ref_weight_chi2": weights, "best_ref_weight_variance": weights,
        "best_ref_weight_global_coverage": weights,
        "extrapolation": st.sampled_from(EXTRAPOLATIONS),
        "window_scale": st.one_of(st.sampled_from([1.0, 2.0]), st.floats(0.05, 4.0)),
        "on_no_overlap": st.sampled_from(["raise", "skip"]),
    })


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


@pytest.mark.slow
@NO_SHRINK
@given(data=st.data())
def test_match_arrays_fuzz(data):
    skymap, warps = data.draw(tracts(), label="tract")
    fields = data.draw(config_fields({v for v, _ in warps}), label="config")
    try:
        cfg = MatchConfig(**fields)
    except ConfigError:  # a combination the configuration rejects: documented
        return
    chunk_rows = data.draw(st.integers(1, 12), label="chunk_rows")
    originals = {k: (w.image.copy(), w.mask.copy(), w.variance.copy()) for k, w in warps.items()}
    try:
        result = match_arrays(warps, skymap, cfg, chunk_rows=chunk_rows)
    except BgdaskError as exc:
        note(f"documented error: {type(exc).__name__}: {exc}")
        return
    except Exception:  # noqa: BLE001 - anything else is a bug: show where
        pytest.fail("match_arrays raised an undocumented exception:\n" + traceback.format_exc())

    # the inputs are not modified
    for k, w in warps.items():
        image, mask, variance = originals[k]
        assert _bits(w.image) == _bits(image) and _bits(w.mask) == _bits(mask), f"input {k} modified"
        assert _bits(w.variance) == _bits(variance), f"input variance {k} modified"

    visits = sorted({v for v, _ in warps})
    assert sorted(result.table.index) == visits
    status = result.table["status"].to_dict()
    assert status[result.reference_visit] == "reference"
    assert set(status.values()) <= {"matched", "reference", "skipped", "empty"}
    assert result.keys() == sorted(warps)

    for (v, p), w in warps.items():
        m = result.warp(v, p)
        assert m.image.shape == w.image.shape and m.image.dtype == np.float32
        assert m.mask.shape == w.mask.shape
        assert _bits(m.variance) == _bits(w.variance.astype(np.float32)), f"variance of {(v, p)}"
        finite = np.isfinite(w.image)
        if status[v] == "matched":
            offset = m.image.astype(np.float64) - w.image.astype(np.float64)
            bad = finite & ~np.isfinite(offset)
            assert not bad.any(), (
                f"warp {(v, p)} of matched visit {v}: offset not finite at {int(bad.sum())} of "
                f"{int(finite.sum())} finite input pixels (model finite: "
                f"{bool(np.isfinite(result.models[v].model).all())})"
            )
            assert np.isfinite(result.models[v].model).all(), f"model of matched visit {v}"
        else:
            assert _bits(m.image) == _bits(w.image), f"unmatched warp {(v, p)} ({status[v]}) changed"
        assert np.isnan(m.image[np.isnan(w.image)]).all(), f"NaN input of {(v, p)} became a number"

    # a warp is flagged unusable exactly when it has no usable pixel
    expected = sorted(
        k for k, w in warps.items()
        if bad_pixels(w.mask, plane_bits(w.mask_planes, cfg.bad_mask_planes), w.image).all()
    )
    assert sorted(result.unusable) == expected
    for k in expected:  # and written unchanged
        assert _bits(result.warp(*k).image) == _bits(warps[k].image), f"unusable warp {k} changed"


def test_window_smaller_than_a_pixel_is_a_documented_error():
    """window_scale * x_bin rounding to 0 pixels is within each field's range:
    a documented error (once a bare ValueError from the superpixel kernel)."""
    sm = SkyMap((8, 8), 0, (1, 1))
    rng = np.random.default_rng(0)
    warps = {
        (v, 0): Warp(image=rng.normal(v, 1, (8, 8)).astype(np.float32), mask=np.zeros((8, 8), np.int32),
                     variance=np.ones((8, 8), np.float32), mask_planes={"BAD": 0}, visit=v, patch=0)
        for v in (1, 2)
    }
    with pytest.raises(BgdaskError, match="window_scale"):
        match_arrays(warps, sm, MatchConfig(x_bin=1, y_bin=4, window_scale=0.4))


# -- corrupted FITS files ------------------------------------------------------------

def _base_warp() -> Warp:
    from bgdask.simulate import tract_wcs

    rng = np.random.default_rng(5)
    sm = SkyMap((16, 16), 2, (2, 1), tract=9813)
    box = sm.outer_box(1)
    image = rng.normal(10, 3, box.shape).astype(np.float32)
    image[0, :3] = np.nan
    mask = rng.integers(0, 16, box.shape).astype(np.int32)
    variance = np.full(box.shape, 9.0, np.float32)
    return Warp(image=image, mask=mask, variance=variance, x0=box.x0, y0=box.y0,
                mask_planes={"BAD": 0, "SAT": 1, "EDGE": 2, "NO_DATA": 3}, visit=1234, patch=1,
                tract=9813, band="r", wcs=tract_wcs(sm, box.x0, box.y0))


@functools.cache
def base_files() -> dict[str, bytes]:
    """The bytes of one good warp, plain and tile-compressed (made once)."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="bgdask-fuzz-base-") as d:
        for name, compress in (("warp.fits", False), ("warp.fits.fz", True)):
            path = Path(d) / name
            write_warp(path, _base_warp(), compress=compress)
            read_warp(path)  # the uncorrupted file reads
            out[name] = path.read_bytes()
    return out


def _check_reads(name: str, data: bytes) -> None:
    """read_warp and find_warps on ``data`` written as ``name``: success or
    InputError naming the file; no other exception, no hang."""
    with tempfile.TemporaryDirectory(prefix="bgdask-fuzz-") as d:
        path = Path(d) / name
        path.write_bytes(data)
        for fn, arg in ((read_warp, path), (find_warps, Path(d))):
            _, exc, tb = _call_with_timeout(fn, arg)
            if exc is not None and not isinstance(exc, InputError):
                pytest.fail(f"{fn.__name__} raised {type(exc).__module__}.{type(exc).__name__} "
                            f"(not InputError) on a corrupted {name}:\n{tb}")
            if isinstance(exc, InputError):
                assert str(path) in str(exc) or str(d) in str(exc), f"message does not name the file: {exc}"


def _call_with_timeout(fn, *args):
    """(result, exception) of fn(*args) run in a daemon thread; fails on a hang."""
    box: dict = {}

    def run():
        try:
            box["result"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            box["exc"] = exc
            box["tb"] = traceback.format_exc()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(READ_TIMEOUT)
    if t.is_alive():
        pytest.fail(f"{getattr(fn, '__name__', fn)} hung (> {READ_TIMEOUT:g} s) on a corrupted file")
    return box.get("result"), box.get("exc"), box.get("tb")


# Characters that make header cards say something else.
_HEADER_BYTES = list(b" ='/0123456789-+.EXNAIMGTVLPK\x00\xff")

edits = st.lists(
    st.one_of(
        # anywhere in the file
        st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)),
        # in the first header blocks, where the cards are
        st.tuples(st.floats(0.0, 1.0, exclude_max=True).map(lambda f: -1.0 - f),
                  st.sampled_from(_HEADER_BYTES)),
    ),
    min_size=0, max_size=8,
)


def _corrupt(data: bytes, changes, truncate: float | None, junk: bytes) -> bytes:
    buf = bytearray(data)
    n_header = min(len(buf), 4 * 2880)
    for where, value in changes:
        pos = int(where * len(buf)) if where >= 0 else int((-where - 1.0) * n_header)
        buf[pos] = value
    if truncate is not None:
        del buf[int(truncate * len(buf)):]
    return bytes(buf) + junk


@FUZZ
@given(
    changes=edits,
    truncate=st.one_of(st.none(), st.floats(0.0, 1.0, exclude_max=True)),
    junk=st.one_of(st.just(b""), st.binary(min_size=1, max_size=3000)),
)
@pytest.mark.slow
@pytest.mark.parametrize("name", ["warp.fits", "warp.fits.fz"])
def test_corrupted_fits_gives_input_error(name, changes, truncate, junk):
    good = base_files()[name]
    data = _corrupt(good, changes, truncate, junk)
    assume(data != good)
    _check_reads(name, data)


def _hdu_data_start(data: bytes, name: str, index: int) -> int:
    """Byte offset of HDU ``index``'s data (for compressed planes: of the binary table)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(data)
        with fits.open(path, disable_image_compression=True) as hdul:
            return hdul.fileinfo(index)["datLoc"]


def _set_byte(data: bytes, pos: int, value: int) -> bytes:
    b = bytearray(data)
    b[pos] = value
    return bytes(b)


def _inflate_naxis1(data: bytes) -> bytes:
    """IMAGE header: NAXIS1 = 18 becomes 185 (one byte written after the value)."""
    card = data.index(b"NAXIS1  = ", 2880)
    assert data[card + 28:card + 31] == b"18 ", data[card:card + 80]
    return _set_byte(data, card + 30, ord("5"))


def _bad_tform(data: bytes) -> bytes:
    """IMAGE table: TFORM1 '1PB(..)' becomes '8PB(..)'."""
    i = data.index(b"TFORM1  = '1PB(")
    return _set_byte(data, i + 11, ord("8"))


def _bad_gzip_stream(data: bytes) -> bytes:
    """A byte inside the first GZIP tile's deflate stream, inverted."""
    g = data.index(b"\x1f\x8b\x08")
    return _set_byte(data, g + 20, data[g + 20] ^ 0xFF)


def _bad_tile_descriptor(data: bytes) -> bytes:
    """MASK table: the heap offset of the first tile made huge."""
    pos = _hdu_data_start(data, "warp.fits.fz", 2) + 4
    return _set_byte(data, pos, 0x58)


# Single-byte corruptions the fuzzer found, each ending in another exception
# type than InputError (AttributeError, RuntimeError, zlib.error, CfitsioException).
@pytest.mark.parametrize("name, corrupt", [
    ("warp.fits", _inflate_naxis1),
    ("warp.fits.fz", _bad_tform),
    ("warp.fits.fz", _bad_gzip_stream),
    ("warp.fits.fz", _bad_tile_descriptor),
], ids=["naxis1-past-eof", "tform", "gzip-stream", "tile-descriptor"])
def test_known_corruptions_give_input_error(name, corrupt):
    _check_reads(name, corrupt(base_files()[name]))
