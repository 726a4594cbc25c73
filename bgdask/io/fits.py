"""Read and write warps in the afw FITS layout of the Rubin stack.

An afw ``ExposureF`` / ``MaskedImageF`` file holds three image planes, IMAGE
(float), MASK (integer bit mask) and VARIANCE (float), each in its own HDU and
named by an ``EXTTYPE`` (or ``EXTNAME``) card. The box origin of the warp in
tract pixels is ``(x0, y0) = (-LTV1, -LTV2)``, repeated as the alternate
linear WCS ``CRVAL1A``/``CRVAL2A``. ``MP_<NAME> = <bit>`` cards name the mask
bits; the primary header carries the Butler data id as HIERARCH cards
(``LSST BUTLER DATAID VISIT`` ...). Binary tables after the planes (PSF,
archive components) are ignored. Planes may be tile-compressed
(``CompImageHDU``, ``.fits.fz``).

- :func:`read_warp_header` learns everything from the headers alone.
- :func:`read_plane` reads one plane, or a block of its rows; for plain
  (uncompressed) HDUs only the bytes of those rows are read from disk.
- :func:`read_warp` reads the three planes, the header information and the
  celestial WCS (in the FITS pixel frame of the arrays) into a :class:`Warp`.
- :func:`write_warp` writes the same layout, atomically.

Every problem with a file raises :class:`~bgdask.errors.InputError` whose
message starts with the file's path.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import uuid
import warnings
from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np
from astropy.io import fits

from .._safeio import open_regular
from ..errors import InputError
from ..geometry import Box
from .warp import PLANE_DTYPES, PLANES, Warp

__all__ = ["WarpHeader", "read_plane", "read_warp", "read_warp_header", "write_warp"]

#: Errors astropy and numpy raise on unreadable or inconsistent FITS content.
#: What reading a damaged file can raise. astropy and the codecs behind
#: compressed HDUs raise almost anything on corrupted bytes (zlib.error,
#: CfitsioException, RuntimeError for a bad TFORM, AttributeError for a
#: mangled HDU), so every error while a file is open names the file.
_FITS_ERRORS = (Exception,)

#: Prefix of the primary-header HIERARCH cards holding the Butler data id.
_BUTLER = "LSST BUTLER DATAID"


#: Lossless tile compression per plane: GZIP without quantization keeps
#: floats bit-exact (RICE would quantize them); RICE is lossless on integers.
_COMPRESSION = {
    "image": {"compression_type": "GZIP_2", "quantize_level": 0},
    "mask": {"compression_type": "RICE_1"},
    "variance": {"compression_type": "GZIP_2", "quantize_level": 0},
}

#: Characters a mask plane name may hold to survive as an ``MP_`` card.
_MASK_NAME = re.compile(r"[A-Z0-9_-]+")


@dataclass(frozen=True)
class WarpHeader:
    """What the headers of one warp file say, learned without reading pixels.

    It is also the :class:`~bgdask.io.warp.WarpSource` of a FITS warp:
    ``read(plane, rows)`` reads its pixels.

    ``hdus`` maps each plane name to its HDU index; ``mask_planes`` maps mask
    plane names to bit numbers of this file.
    """

    path: str
    x0: int
    y0: int
    width: int
    height: int
    mask_planes: dict[str, int]
    visit: int | None
    patch: int | None
    tract: int | None
    band: str | None
    hdus: dict[str, int]
    compressed: bool
    #: plain (uncompressed) files: plane -> (data offset in bytes, BITPIX, BZERO, BSCALE)
    layout: dict[str, tuple[int, int, float, float]] | None = None

    @property
    def box(self) -> Box:
        return Box(self.x0, self.y0, self.width, self.height)

    def read(self, plane: str, rows: slice | None = None) -> np.ndarray:
        """One plane, or a block of its rows (the :class:`~bgdask.io.warp.WarpSource` protocol)."""
        return read_plane(self, plane, rows)


# -- opening -----------------------------------------------------------------

#: The most bytes one HDU's header may take (afw headers take tens of KB).
MAX_HEADER_BYTES = 4 * 2**20
#: The most HDUs looked at for the IMAGE, MASK and VARIANCE planes.
MAX_HDUS = 1000
_BLOCK = 2880
_CARD = 80


@contextlib.contextmanager
def _open(path: str) -> Iterator[fits.HDUList]:
    """Open ``path`` lazily (no pixels read); astropy errors become InputErrors.

    Only a regular file is opened (a FIFO or a device would block or never
    end), and its headers are first walked by :func:`_scan_headers`, which
    reads at most :data:`MAX_HEADER_BYTES` a header and checks that each
    HDU's data fits in the file, so astropy then reads bounded headers."""
    fh = open_regular(path)
    try:
        _scan_headers(path, fh)
        fh.seek(0)
        hdul = fits.open(fh, memmap=False, lazy_load_hdus=True)
    except InputError:
        fh.close()
        raise
    except _FITS_ERRORS as exc:
        fh.close()
        raise InputError(f"{path}: not a readable FITS file ({exc})") from None
    try:
        yield hdul
    except InputError:
        raise
    except _FITS_ERRORS as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise InputError(f"{path}: unreadable FITS header or data ({reason})") from None
    finally:
        hdul.close()
        fh.close()


def _card_value(card: bytes) -> str | None:
    """The value of a fixed-format card (``KEY     = value / comment``), or None."""
    if card[8:10] != b"= ":
        return None
    text = card[10:].decode("ascii", "replace")
    if text.lstrip().startswith("'"):
        body = text.lstrip()[1:]
        return body.split("'", 1)[0].strip()
    return text.split("/", 1)[0].strip()


def _scan_headers(path: str, fh) -> None:
    """Walk the HDUs of an open FITS file by their headers' structural cards
    (BITPIX, NAXISn, PCOUNT, GCOUNT) until the three planes are seen or the
    file ends: each header must end (END card) within MAX_HEADER_BYTES, and
    each HDU's data must fit in the file. Tile-compressed HDUs are binary
    tables, walked the same way. Files that do not start with a FITS
    ``SIMPLE`` card (gzip-compressed files) are left to astropy."""
    size = os.fstat(fh.fileno()).st_size
    start = fh.read(_CARD)
    if not start.startswith(b"SIMPLE  ="):
        if start[:2] in (b"\x1f\x8b", b"BZ"):
            return  # a whole-file compressed FITS: astropy decompresses it
        raise InputError(f"{path}: not a readable FITS file (it does not start with a SIMPLE card)")
    offset, labels = 0, set()
    for index in range(MAX_HDUS):
        cards, ncards = _read_header_cards(path, fh, offset, index, size)
        header_end = offset + _BLOCK * -(-ncards * _CARD // _BLOCK)
        label = None
        for key in ("EXTTYPE", "EXTNAME"):
            value = cards.get(key)
            if value and value.strip().lower() in PLANES:
                label = value.strip().lower()
                break
        nbytes = _data_bytes(path, index, cards)
        if header_end + nbytes > size:
            raise InputError(_misfit_message(path, index, label, cards, nbytes, size - header_end, size))
        if label:
            labels.add(label)
        offset = header_end + _BLOCK * -(-nbytes // _BLOCK)
        if len(labels) == len(PLANES) or offset >= size:
            return
    raise InputError(f"{path}: more than {MAX_HDUS} HDUs before the IMAGE, MASK and VARIANCE planes")


_SCANNED = ("BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "GROUPS", "EXTTYPE", "EXTNAME", "XTENSION")


def _read_header_cards(path: str, fh, offset: int, index: int, size: int) -> tuple[dict, int]:
    """The values of the scanned cards of the header at ``offset``, and its number of cards."""
    fh.seek(offset)
    cards: dict[str, str | None] = {}
    n = 0
    while n * _CARD < MAX_HEADER_BYTES:
        block = fh.read(_BLOCK)
        if len(block) < _BLOCK:
            raise InputError(f"{path}: truncated: the header of HDU {index} ends before its END card "
                             f"(the file has {size} bytes)")
        for i in range(0, _BLOCK, _CARD):
            card = block[i:i + _CARD]
            n += 1
            key = card[:8].decode("ascii", "replace").strip()
            if key == "END":
                return cards, n
            if n == 1 and index > 0 and key != "XTENSION":
                raise InputError(f"{path}: HDU {index} at byte {offset} does not start with an "
                                 "XTENSION card (unreadable FITS header)")
            if key in _SCANNED or (key.startswith("NAXIS") and key[5:].isdigit()):
                cards.setdefault(key, _card_value(card))
    raise InputError(f"{path}: the header of HDU {index} has no END card within {MAX_HEADER_BYTES} bytes "
                     "(unreadable FITS header)")


def _int_card(path: str, index: int, cards: Mapping, key: str, default: int | None = None) -> int:
    value = cards.get(key)
    if value is None and default is not None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InputError(f"{path}: unreadable FITS header: HDU {index} has {key} = {value!r}") from None


def _data_bytes(path: str, index: int, cards: Mapping) -> int:
    """The size of an HDU's data by the FITS standard (without its padding)."""
    bitpix = _int_card(path, index, cards, "BITPIX")
    naxis = _int_card(path, index, cards, "NAXIS")
    if bitpix not in (8, 16, 32, 64, -32, -64) or not 0 <= naxis <= 999:
        raise InputError(f"{path}: unreadable FITS header: HDU {index} has BITPIX = {bitpix}, NAXIS = {naxis}")
    if naxis == 0:
        return 0
    axes = [_int_card(path, index, cards, f"NAXIS{i}") for i in range(1, naxis + 1)]
    if any(a < 0 for a in axes):
        raise InputError(f"{path}: unreadable FITS header: HDU {index} has NAXISn = {axes}")
    if axes[0] == 0 and str(cards.get("GROUPS", "")).strip() == "T":
        axes = axes[1:]  # random groups
    pcount = _int_card(path, index, cards, "PCOUNT", 0)
    gcount = _int_card(path, index, cards, "GCOUNT", 1)
    return abs(bitpix) // 8 * gcount * (pcount + math.prod(axes))


def _misfit_message(path: str, index: int, label: str | None, cards: Mapping, nbytes: int,
                    after: int, size: int) -> str:
    name = f"HDU {index}" + (f" ({label.upper()})" if label else "")
    naxis = _int_card(path, index, cards, "NAXIS")
    axes = " x ".join(str(cards.get(f"NAXIS{i}")) for i in range(1, naxis + 1))
    what = (f"{path}: {name}: its header's NAXIS ({axes}, BITPIX {cards.get('BITPIX')}) needs "
            f"{nbytes} bytes of data but only {max(after, 0)} follow the header")
    if size % _BLOCK:
        return f"{what}: truncated (the file size {size} is not a multiple of 2880 bytes)"
    return f"{what}: the header does not fit the file size {size} (a wrong NAXIS, or a file cut short)"


# -- headers -----------------------------------------------------------------


def read_warp_header(path: str | os.PathLike) -> WarpHeader:
    """Parse the headers of the warp file at ``path`` (no pixel data is read)."""
    path = os.fspath(path)
    with _open(path) as hdul:
        return _parse_header(path, hdul)


def _parse_header(path: str, hdul: fits.HDUList) -> WarpHeader:
    hdus = _find_planes(path, hdul)
    headers = {plane: hdul[index].header for plane, index in hdus.items()}
    height, width = _common_value(path, "shape", {p: _shape(path, p, h) for p, h in headers.items()})
    x0, y0 = _common_value(path, "box origin", {p: _origin(path, p, h) for p, h in headers.items()})
    mask_bitpix = headers["mask"].get("BITPIX")
    if mask_bitpix not in (8, 16, 32):
        raise InputError(
            f"{path}: the MASK plane has BITPIX = {mask_bitpix}; expected 8, 16 or 32 (integers)"
        )
    compressed = any(isinstance(hdul[index], fits.CompImageHDU) for index in hdus.values())
    for plane, index in hdus.items():
        if not isinstance(hdul[index], fits.CompImageHDU):
            _check_size(path, hdul, plane, index, rows=height)
    mask_planes = (_mask_planes(path, headers["mask"]) or _mask_planes(path, hdul[0].header)
                   or _lsst_images_mask_planes(path, headers["mask"]))
    primary = hdul[0].header
    layout = None
    if not compressed:
        layout = {plane: (int(hdul[index].fileinfo()["datLoc"]), int(headers[plane]["BITPIX"]),
                          headers[plane].get("BZERO", 0), headers[plane].get("BSCALE", 1))
                  for plane, index in hdus.items()}
    return WarpHeader(
        path=path,
        x0=x0,
        y0=y0,
        width=width,
        height=height,
        mask_planes=mask_planes,
        visit=_butler_int(path, primary, "VISIT"),
        patch=_butler_int(path, primary, "PATCH"),
        tract=_butler_int(path, primary, "TRACT"),
        band=_butler_str(primary, "BAND"),
        hdus=hdus,
        compressed=compressed,
        layout=layout,
    )


def _find_planes(path: str, hdul: fits.HDUList) -> dict[str, int]:
    """Plane name -> HDU index, by EXTTYPE/EXTNAME, else by order if unlabeled."""
    found: dict[str, int] = {}
    unlabeled: list[int] = []
    for index, hdu in enumerate(hdul):
        if not isinstance(hdu, fits.ImageHDU | fits.PrimaryHDU):
            continue
        has_data = _has_pixels(hdu.header)
        if index == 0 and not has_data:
            continue
        plane = _label(hdu.header)
        if plane is None:
            if has_data:
                unlabeled.append(index)
            continue
        if plane in found:
            if plane == "mask" and any(_MSKN.match(k) for k in hdu.header):
                raise InputError(
                    f"{path}: the mask is split over HDUs {found[plane]} and {index} (an lsst.images "
                    "file with more than 31 mask planes); bgdask reads masks of at most 31 planes"
                )
            raise InputError(f"{path}: HDUs {found[plane]} and {index} are both labeled {plane.upper()}")
        found[plane] = index
        if len(found) == len(PLANES):
            break
    if not found and len(unlabeled) == len(PLANES):
        return dict(zip(PLANES, unlabeled))
    missing = [plane.upper() for plane in PLANES if plane not in found]
    if missing:
        raise InputError(
            f"{path}: no {' or '.join(missing)} plane (an image HDU with EXTTYPE or EXTNAME "
            f"{' / '.join(missing)}){_truncation_hint(path)}"
        )
    return {plane: found[plane] for plane in PLANES}


def _has_pixels(header: fits.Header) -> bool:
    naxis = header.get("NAXIS", 0)
    return naxis > 0 and all(header.get(f"NAXIS{axis}", 0) > 0 for axis in range(1, naxis + 1))


def _label(header: fits.Header) -> str | None:
    """The plane an HDU holds according to its EXTTYPE, else EXTNAME card."""
    for key in ("EXTTYPE", "EXTNAME"):
        value = header.get(key)
        if isinstance(value, str) and value.strip().lower() in PLANES:
            return value.strip().lower()
    return None


def _truncation_hint(path: str) -> str:
    size = os.path.getsize(path)
    return f"; the file size {size} is not a multiple of 2880 bytes: truncated?" if size % 2880 else ""


def _shape(path: str, plane: str, header: fits.Header) -> tuple[int, int]:
    naxis = header.get("NAXIS", 0)
    shape = tuple(header.get(f"NAXIS{axis}", 0) for axis in range(naxis, 0, -1))
    if naxis != 2:
        raise InputError(f"{path}: the {plane.upper()} plane has {naxis} axes {shape}; expected 2")
    if 0 in shape:
        raise InputError(f"{path}: the {plane.upper()} plane is empty ({shape[1]} x {shape[0]} pixels)")
    return shape


def _origin(path: str, plane: str, header: fits.Header) -> tuple[int, int]:
    """(x0, y0) from LTV1/LTV2, cross-checked against CRVAL1A/CRVAL2A."""
    origin = []
    for axis in (1, 2):
        ltv = _integer_card(path, plane, header, f"LTV{axis}")
        crval = _integer_card(path, plane, header, f"CRVAL{axis}A")
        if ltv is not None and crval is not None and -ltv != crval:
            raise InputError(
                f"{path}: the {plane.upper()} header's LTV{axis} = {ltv} and CRVAL{axis}A = {crval} "
                f"disagree on the box origin (expected LTV{axis} = -CRVAL{axis}A)"
            )
        origin.append(-ltv if ltv is not None else (crval if crval is not None else 0))
    return origin[0], origin[1]


def _integer_card(path: str, plane: str, header: fits.Header, key: str) -> int | None:
    value = header.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
        raise InputError(
            f"{path}: the {plane.upper()} header's {key} = {value!r} is not a whole pixel offset"
        )
    return int(value)


def _common_value(path: str, what: str, values: dict[str, tuple[int, int]]) -> tuple[int, int]:
    if len(set(values.values())) != 1:
        listed = ", ".join(f"{plane.upper()} {value}" for plane, value in values.items())
        raise InputError(f"{path}: the planes disagree on their {what}: {listed}")
    return values["image"]


def _check_size(path: str, hdul: fits.HDUList, plane: str, index: int, rows: int) -> None:
    """Raise unless the file holds the first ``rows`` rows of a plain HDU's data."""
    header = hdul[index].header
    needed = hdul[index].fileinfo()["datLoc"] + rows * _row_bytes(header)   # the HDU's: the list's re-serialises every header
    size = os.path.getsize(path)
    if size < needed:
        raise InputError(
            f"{path}: truncated: the {plane.upper()} plane needs {needed} bytes, the file has {size}"
        )


def _row_bytes(header: fits.Header) -> int:
    return header["NAXIS1"] * abs(header["BITPIX"]) // 8


def _mask_planes(path: str, header: fits.Header) -> dict[str, int]:
    """Mask plane name -> bit from the ``MP_<NAME>`` cards of ``header``."""
    planes = {}
    for key, value in header.items():
        if not key.upper().startswith("MP_"):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 32:
            raise InputError(f"{path}: mask plane card {key} = {value!r} is not a bit number 0-31")
        planes[key[3:].upper()] = value
    return planes


#: lsst.images' mask plane cards: ``MSKNnnnn`` = name, ``MSKMnnnn`` = 1 << bit.
_MSKN = re.compile(r"MSKN(\d{4})$")


def _lsst_images_mask_planes(path: str, header: fits.Header) -> dict[str, int]:
    """Mask plane name -> bit from lsst.images' ``MSKNnnnn`` (name) and
    ``MSKMnnnn`` (bitmask, ``1 << n``) cards (tests/data/lsst_images/README.md)."""
    planes: dict[str, int] = {}
    for key, name in header.items():
        m = _MSKN.match(key.upper())
        if m is None:
            continue
        n = int(m.group(1))
        value = header.get(f"MSKM{m.group(1)}", 1 << n if n < 32 else 0)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value & (value - 1):
            raise InputError(f"{path}: mask plane card MSKM{m.group(1)} = {value!r} is not one bit")
        bit = value.bit_length() - 1
        if not isinstance(name, str) or not name.strip() or bit > 31:
            raise InputError(f"{path}: mask plane card {key} = {name!r} (bit {bit}) is not a plane name "
                             "with a bit number 0-31")
        name = name.strip().upper()
        if name in planes:
            raise InputError(f"{path}: mask plane {name} is named twice (MSKN cards)")
        planes[name] = bit
    return planes


def _butler_int(path: str, header: fits.Header, field: str) -> int | None:
    key = f"{_BUTLER} {field}"
    value = header.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise InputError(f"{path}: primary header card '{key}' = {value!r} is not an integer")


def _butler_str(header: fits.Header, field: str) -> str | None:
    value = header.get(f"{_BUTLER} {field}")
    return None if value is None else str(value).strip()


# -- pixels ------------------------------------------------------------------


def read_plane(
    source: str | os.PathLike | WarpHeader, plane: str, rows: slice | None = None
) -> np.ndarray:
    """One plane of a warp (``image``, ``mask`` or ``variance``), or some of its rows.

    ``rows`` selects rows (y, 0-based within the warp) as a slice. Image and
    variance come back as float32, the mask as int32 with BZERO applied.
    Plain HDUs are read for the selected rows only; compressed ones decode
    the tiles holding them. Passing a :class:`WarpHeader` skips re-checking
    the headers.
    """
    if plane not in PLANES:
        raise ValueError(f"plane must be one of {PLANES}, not {plane!r}")
    if rows is not None and not isinstance(rows, slice):
        raise TypeError(f"rows must be a slice or None, not {type(rows).__name__}")
    path = source.path if isinstance(source, WarpHeader) else os.fspath(source)
    rows = rows or slice(None)
    if isinstance(source, WarpHeader) and source.layout is not None and rows.step in (None, 1):
        return _read_plain(source, plane, rows)
    with _open(path) as hdul:
        header = source if isinstance(source, WarpHeader) else _parse_header(path, hdul)
        return _read_rows(header, hdul, plane, rows)


_BIG_ENDIAN = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


def _read_plain(header: WarpHeader, plane: str, rows: slice) -> np.ndarray:
    """Rows of a plain HDU read at their known byte offset: one seek and one
    read, no header parsing (each warp is read several times in a run)."""
    offset, bitpix, bzero, bscale = header.layout[plane]
    start, stop, _ = rows.indices(header.height)
    n = max(stop - start, 0)
    dtype = np.dtype(_BIG_ENDIAN[bitpix])
    row_bytes = header.width * dtype.itemsize
    raw = np.empty((n, header.width), dtype=dtype)
    try:
        with open_regular(header.path) as fh:
            fh.seek(offset + start * row_bytes)
            got = fh.readinto(memoryview(raw.reshape(-1)).cast("B")) if raw.size else 0
    except OSError as exc:
        raise InputError(f"{header.path}: cannot read the {plane.upper()} plane ({exc})") from None
    if got != n * row_bytes:
        raise InputError(f"{header.path}: truncated: the {plane.upper()} plane ends early")
    if bzero or bscale != 1:
        if bitpix > 0 and bscale == 1 and float(bzero).is_integer():
            return (raw.astype(np.int64) + int(bzero)).astype(PLANE_DTYPES[plane])
        return (raw * bscale + bzero).astype(PLANE_DTYPES[plane])
    return raw.astype(PLANE_DTYPES[plane])


def _read_rows(header: WarpHeader, hdul: fits.HDUList, plane: str, rows: slice) -> np.ndarray:
    wanted = range(*rows.indices(header.height))
    if not wanted:
        return np.empty((0, header.width), dtype=PLANE_DTYPES[plane])
    first, stop = min(wanted), max(wanted) + 1
    index = header.hdus[plane]
    hdu = hdul[index]
    if not isinstance(hdu, fits.CompImageHDU):
        _check_size(header.path, hdul, plane, index, rows=stop)
    block = hdu.section[first:stop]
    if wanted.step != 1:
        block = block[np.asarray(wanted) - first]
    # A mask wider than int32 (uint32 via BZERO) wraps around, keeping its bits.
    return np.array(block, dtype=PLANE_DTYPES[plane])


def read_warp(path: str | os.PathLike) -> Warp:
    """All planes of the warp file at ``path``, with its header information."""
    path = os.fspath(path)
    with _open(path) as hdul:
        header = _parse_header(path, hdul)
        planes = {plane: _read_rows(header, hdul, plane, slice(None)) for plane in PLANES}
        wcs = _celestial_wcs(path, hdul[header.hdus["image"]].header)
    return Warp(
        **planes,
        x0=header.x0,
        y0=header.y0,
        mask_planes=dict(header.mask_planes),
        visit=header.visit,
        patch=header.patch,
        tract=header.tract,
        band=header.band,
        wcs=wcs,
        path=path,
    )


def _celestial_wcs(path: str, header: fits.Header) -> "WCS | None":  # noqa: F821
    """The celestial WCS of an image header, or None when it has none."""
    from astropy.wcs import WCS, FITSFixedWarning

    if "CTYPE1" not in header and "CTYPE2" not in header:
        return None  # at most the alternate linear WCS 'A' of the box origin
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header)
    except Exception as exc:  # wcslib reports bad cards with many exception types
        raise InputError(f"{path}: the IMAGE header's WCS is unreadable ({exc})") from None
    return _celestial(wcs) if wcs.has_celestial else None


def _celestial(wcs):
    return wcs if wcs.naxis == 2 else wcs.celestial


# -- writing -----------------------------------------------------------------


def write_warp(
    path: str | os.PathLike, warp: Warp, *, overwrite: bool = False, compress: bool = False
) -> None:
    """Write ``warp`` to ``path`` in the afw layout, atomically.

    The file appears under its final name only once complete. An existing
    file is replaced only with ``overwrite=True``. ``compress=True`` writes
    losslessly tile-compressed planes (one row per tile).
    """
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise InputError(f"{path}: file exists", api="pass overwrite=True to replace it",
                         cli="use --overwrite to replace it")
    _write_atomic(path, _warp_hdus(path, warp, compress))


def _warp_hdus(path: str, warp: Warp, compress: bool) -> fits.HDUList:
    arrays = _checked_planes(path, warp)
    cards = [] if warp.wcs is None else list(_celestial(warp.wcs).to_header(relax=True).cards)
    cards.extend(_plane_cards(int(warp.x0), int(warp.y0)))
    hdus: list[fits.PrimaryHDU | fits.ImageHDU] = [fits.PrimaryHDU(header=_primary_header(warp))]
    for plane in PLANES:
        header = fits.Header([("EXTTYPE", plane.upper()), *cards])
        if plane == "mask":
            header.extend(_mask_cards(path, warp.mask_planes))
        if compress:
            hdu = fits.CompImageHDU(arrays[plane], header, name=plane.upper(), **_COMPRESSION[plane])
        else:
            hdu = fits.ImageHDU(arrays[plane], header, name=plane.upper())
        hdus.append(hdu)
    return fits.HDUList(hdus)


def _checked_planes(path: str, warp: Warp) -> dict[str, np.ndarray]:
    arrays = {plane: np.asarray(getattr(warp, plane)) for plane in PLANES}
    shapes = {plane: array.shape for plane, array in arrays.items()}
    if len(set(shapes.values())) != 1 or len(shapes["image"]) != 2 or 0 in shapes["image"]:
        raise InputError(
            f"{path}: cannot write planes of shapes {shapes}; they need one non-empty 2-d shape"
        )
    if not np.issubdtype(arrays["mask"].dtype, np.integer):
        dtype = arrays["mask"].dtype
        raise InputError(f"{path}: cannot write a mask of type {dtype}; it must be integer")
    # uint32 masks wrap around to int32, keeping their bits.
    return {plane: array.astype(PLANE_DTYPES[plane], copy=False) for plane, array in arrays.items()}


def _primary_header(warp: Warp) -> fits.Header:
    header = fits.Header()
    for field in ("visit", "patch", "tract"):
        value = getattr(warp, field)
        if value is not None:
            header[f"HIERARCH {_BUTLER} {field.upper()}"] = int(value)
    if warp.band is not None:
        header[f"HIERARCH {_BUTLER} BAND"] = str(warp.band)
    return header


def _plane_cards(x0: int, y0: int) -> list[tuple]:
    """The box origin as LTV cards and as the alternate linear WCS 'A'."""
    return [
        ("LTV1", -x0),
        ("LTV2", -y0),
        ("CTYPE1A", "LINEAR", "Type of projection"),
        ("CTYPE2A", "LINEAR", "Type of projection"),
        ("CRPIX1A", 1, "Column Pixel Coordinate of Reference"),
        ("CRPIX2A", 1, "Row Pixel Coordinate of Reference"),
        ("CRVAL1A", x0, "Column pixel of Reference Pixel"),
        ("CRVAL2A", y0, "Row pixel of Reference Pixel"),
        ("CUNIT1A", "PIXEL", "Column unit"),
        ("CUNIT2A", "PIXEL", "Row unit"),
    ]


def _mask_cards(path: str, mask_planes: dict[str, int]) -> list[tuple[str, int]]:
    cards = []
    for name, bit in sorted(mask_planes.items(), key=lambda item: item[1]):
        if not _MASK_NAME.fullmatch(name) or not 0 <= int(bit) < 32:
            raise InputError(
                f"{path}: cannot write mask plane {name!r} = {bit!r}: names take A-Z, 0-9, '_', '-' "
                "and bits 0-31"
            )
        key = f"MP_{name}"
        cards.append((key if len(key) <= 8 else f"HIERARCH {key}", int(bit)))
    return cards


def _write_atomic(path: str, hdul: fits.HDUList) -> None:
    """Write to a temporary file beside ``path``, then rename it into place."""
    directory, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(descriptor, "wb") as stream:
            hdul.writeto(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(exc, OSError):
            raise InputError(f"{path}: cannot write ({exc})") from None
        raise
