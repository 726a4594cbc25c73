"""Bad input through the command line, and warps with nothing usable.

Every bad input gives one clear message naming the file, warp or field at
fault, a non-zero exit, no traceback, and no store that claims to be
complete. A warp with no usable pixel is not an error: it is flagged, named
in a warning, and written unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from astropy.io import fits
from distributed import LocalCluster

from bgdask.config import MatchConfig
from bgdask.io import read_warp, write_warp
from bgdask.masks import remap_mask
from bgdask import UnusableWarpWarning, match_arrays, match_backgrounds
from bgdask.simulate import warp_filename

FIXTURES = Path(__file__).resolve().parent / "data" / "afw"
EMPTY_EXPOSURE = FIXTURES / "ticket2233.fits"


# -- helpers ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scheduler(small_tract):
    """One worker process for the whole module, reached with --scheduler, so
    that each case does not pay for starting a cluster."""
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR) as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def tract(small_tract, tmp_path):
    """A private copy of the small tract (warps/, manifest.csv, skymap.yaml)."""
    return Path(shutil.copytree(small_tract, tmp_path / "in"))


def warp_path(root: Path, visit: int, patch: int) -> Path:
    return root / warp_filename(visit, patch)


def match(cli, scheduler, source, output, *extra) -> tuple[int, str, str]:
    """``bgdask match`` through the ``cli`` fixture (conftest): (exit status, stdout, stderr)."""
    return cli("match", source, "-o", output, "--scheduler", scheduler, "--no-progress", *extra)


def assert_clean_failure(rc, out, err, names, output: Path | None = None) -> str:
    """Non-zero exit, one 'bgdask: error:' line naming each of ``names``, no
    traceback, and no store at ``output`` that claims to be complete."""
    assert rc not in (0, None), f"exit status {rc}; stdout: {out}\nstderr: {err}"
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("bgdask: error:")]
    assert len(errors) == 1, f"expected one error line, got {errors!r} in {err!r}"
    msg = errors[0]
    for name in names:
        assert str(name) in msg, f"the message does not name {name!r}: {msg}"
    if output is not None and output.exists():
        group = zarr.open_group(str(output), mode="r")
        assert group.attrs.get("complete") is not True, f"{output} claims to be complete after: {msg}"
    return msg


def rewrite(path: Path, edit) -> None:
    """Apply ``edit(hdul)`` to a FITS file and write it back (for corrupting warps)."""
    with fits.open(path) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    hdul = edit(hdul) or hdul
    path.unlink()
    hdul.writeto(path)


# -- the bad input matrix ----------------------------------------------------------------

def test_missing_input_path(cli, scheduler, tmp_path):
    out = tmp_path / "out.zarr"
    rc, o, e = match(cli, scheduler, tmp_path / "no-such-dir", out)
    assert_clean_failure(rc, o, e, ["no-such-dir"], out)
    assert not out.exists()


def test_manifest_lists_a_missing_file(cli, scheduler, tract, tmp_path):
    gone = warp_path(tract, 1001, 1)
    gone.unlink()
    out = tmp_path / "out.zarr"
    rc, o, e = match(cli, scheduler, tract / "manifest.csv", out)
    assert_clean_failure(rc, o, e, [gone.name], out)
    assert not out.exists()


def test_file_that_is_not_fits(cli, scheduler, tract, tmp_path):
    bad = warp_path(tract, 1000, 2)
    bad.write_text("visit,patch\n1000,2\n" * 200)
    out = tmp_path / "out.zarr"
    rc, o, e = match(cli, scheduler, tract / "warps", out)
    assert_clean_failure(rc, o, e, [bad.name], out)


def _data_end(path: Path) -> int:
    """Where the last plane's pixels end (the FITS padding follows)."""
    with fits.open(path) as hdul:
        h = hdul[-1].header
        return hdul.fileinfo(len(hdul) - 1)["datLoc"] + h["NAXIS1"] * h["NAXIS2"] * abs(h["BITPIX"]) // 8


@pytest.mark.parametrize("keep", ["1000", "half", "data-100", "size-2880"])
def test_truncated_fits(cli, scheduler, tract, tmp_path, keep):
    bad = warp_path(tract, 1002, 1)
    data = bad.read_bytes()
    n = {"1000": 1000, "half": len(data) // 2, "data-100": _data_end(bad) - 100,
         "size-2880": len(data) - 2880}[keep]
    bad.write_bytes(data[:n])
    out = tmp_path / "out.zarr"
    rc, o, e = match(cli, scheduler, tract / "manifest.csv", out)
    assert_clean_failure(rc, o, e, [bad.name], out)


@pytest.mark.parametrize("plane", ["MASK", "VARIANCE"])
def test_missing_plane(cli, scheduler, tract, tmp_path, plane):
    bad = warp_path(tract, 1000, 1)
    rewrite(bad, lambda hdul: fits.HDUList([h for h in hdul if h.header.get("EXTTYPE") != plane]))
    out = tmp_path / "out.zarr"
    rc, o, e = match(cli, scheduler, tract / "manifest.csv", out)
    assert_clean_failure(rc, o, e, [bad.name, plane], out)


def test_planes_of_different_shapes(cli, scheduler, tract, tmp_path):
    bad = warp_path(tract, 1001, 0)

    def crop(hdul):
        for h in hdul:
            if h.header.get("EXTTYPE") == "VARIANCE":
                h.data = h.data[:-3, :-1].copy()
    rewrite(bad, crop)
    out = tmp_path / "out.zarr"
    rc, o, e = match(cli, scheduler, tract / "manifest.csv", out)
    assert_clean_failure(rc, o, e, [bad.name], out)


@pytest.mark.parametrize("with_skymap", [True, False], ids=["skymap", "inferred"])
def test_box_that_is_not_its_patch(cli, scheduler, tract, tmp_path, with_skymap):
    bad = warp_path(tract, 1001, 3)
    w = read_warp(bad)
    w.x0 += 5
    write_warp(bad, w, overwrite=True)
    out = tmp_path / "out.zarr"
    extra = ["--skymap", tract / "skymap.yaml"] if with_skymap else []
    rc, o, e = match(cli, scheduler, tract / "manifest.csv", out, *extra)
    assert_clean_failure(rc, o, e, [bad.name], out)


def test_duplicate_visit_patch(cli, scheduler, tract, tmp_path):
    original = warp_path(tract, 1000, 0)
    shutil.copy(original, original.with_name("again.fits"))
    out = tmp_path / "out.zarr"
    rc, o, e = match(cli, scheduler, tract / "warps", out)
    assert_clean_failure(rc, o, e, ["visit 1000", "patch 0"], out)
    assert not out.exists()


def test_warps_of_two_tracts(cli, scheduler, tract, tmp_path):
    bad = warp_path(tract, 1002, 2)
    fits.setval(bad, "HIERARCH LSST BUTLER DATAID TRACT", value=9999, ext=0)
    out = tmp_path / "out.zarr"
    rc, o, e = match(cli, scheduler, tract / "warps", out)
    assert_clean_failure(rc, o, e, ["9999", "9813"], out)
    assert not out.exists()


def test_unknown_ref_visit(cli, scheduler, small_tract, tmp_path):
    out = tmp_path / "out.zarr"
    rc, o, e = match(cli, scheduler, small_tract / "manifest.csv", out, "--ref-visit", 4242)
    assert_clean_failure(rc, o, e, ["4242"], out)
    assert not out.exists()


@pytest.mark.slow
def test_visit_without_overlap_with_the_reference(cli, scheduler, tract, tmp_path):
    # visit 1001 keeps only patch 3, which the reference 1002 does not cover
    for p in (0, 1):
        warp_path(tract, 1001, p).unlink()
    out = tmp_path / "out.zarr"
    rc, o, e = match(cli, scheduler, tract / "warps", out, "--ref-visit", 1002)
    assert_clean_failure(rc, o, e, ["visit 1001"], out)


def test_empty_exposure(cli, scheduler, small_tract, tmp_path):
    assert EMPTY_EXPOSURE.exists(), EMPTY_EXPOSURE
    manifest = tmp_path / "manifest.csv"
    rows = (small_tract / "manifest.csv").read_text().splitlines()[1:]
    lines = ["visit,patch,path"] + [
        f"{v},{p},{small_tract / rel}" for v, p, _, rel in (r.split(",") for r in rows)
    ] + [f"1003,0,{EMPTY_EXPOSURE}"]
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.zarr"
    rc, o, e = match(cli, scheduler, manifest, out)
    assert_clean_failure(rc, o, e, [EMPTY_EXPOSURE.name], out)
    assert not out.exists()


@pytest.mark.parametrize("text, field", [
    ("x_bin: -64\n", "x_bin"),
    ("y_bin: 0\n", "y_bin"),
    ("binning: -1\n", "binning"),
    ("interpolation: CUBIC_SPLINE\n", "interpolation"),
    ("best_ref_weight_chi2: 1.5\n", "best_ref_weight_chi2"),
    ("best_ref_weight_global_coverage: -0.1\n", "best_ref_weight_global_coverage"),
    ("x_bins: 64\n", "x_bins"),
    ("bgdask:\n  min_frac: 2\n", "min_frac"),
], ids=["negative-x_bin", "zero-y_bin", "negative-binning", "interpolation", "weight-high",
        "weight-negative", "unknown-key", "nested-min_frac"])
def test_bad_config(cli, small_tract, tmp_path, text, field):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    out = tmp_path / "out.zarr"
    # errors found before any cluster starts: no --scheduler needed
    rc, o, e = cli("match", small_tract / "manifest.csv", "-o", out, "--config", config,
                       "--no-progress", "--workers", 1, "--threads-per-worker", 1)
    assert_clean_failure(rc, o, e, [field, config.name], out)
    assert not out.exists()
    assert "dask dashboard" not in o, "a cluster was started before the configuration was checked"


# -- an output path that holds another run ------------------------------------------------

@pytest.fixture(scope="module")
def other_run(small_tract, tmp_path_factory):
    """A complete store of another run (another configuration) of the same warps."""
    out = tmp_path_factory.mktemp("other") / "other.zarr"
    match_backgrounds(small_tract / "manifest.csv", out, MatchConfig(x_bin=64, y_bin=64), scheduler="sync")
    return out


def _digest(store: Path) -> dict[str, str]:
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("flags, says", [
    ((), "already exists"),
    (("--resume",), "another run"),
], ids=["no-flag", "resume-other-config"])
def test_output_holds_another_run(cli, scheduler, small_tract, other_run, flags, says):
    before = _digest(other_run)
    rc, o, e = match(cli, scheduler, small_tract / "manifest.csv", other_run, *flags)
    msg = assert_clean_failure(rc, o, e, [other_run.name, says])
    if not flags:
        assert "--resume" in msg and "--overwrite" in msg, msg
    assert _digest(other_run) == before, "the other run's store was modified"
    assert zarr.open_group(str(other_run), mode="r").attrs["complete"] is True


# -- warps with nothing usable ---------------------------------------------------------------

#: (visit, patch) -> how it is made unusable
UNUSABLE = {(1000, 2): "all NaN", (1001, 1): "all BAD"}


def _unusable_warps(sim):
    warps = {}
    for key, w in sim.warps.items():
        w = dataclasses.replace(w)
        if UNUSABLE.get(key) == "all NaN":
            w.image = np.full_like(w.image, np.nan)
        elif UNUSABLE.get(key) == "all BAD":
            w.mask = np.full_like(w.mask, 1 << w.mask_planes["BAD"])
        warps[key] = w
    return warps


@pytest.fixture(scope="module")
def unusable_tract(small_sim, tmp_path_factory):
    root = tmp_path_factory.mktemp("unusable")
    warps = _unusable_warps(small_sim)
    for (v, p), w in warps.items():
        path = root / warp_filename(v, p)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_warp(path, w)
    return root, warps


def test_unusable_warps_through_the_pipeline(unusable_tract, tmp_path):
    root, warps = unusable_tract
    out = tmp_path / "out.zarr"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = match_backgrounds(root / "warps", out, scheduler="sync", chunk_rows=100)
    messages = [str(w.message) for w in caught if issubclass(w.category, UnusableWarpWarning)]
    for (v, p), how in UNUSABLE.items():
        named = [m for m in messages if f"visit {v}, patch {p}" in m or warp_filename(v, p) in m]
        assert len(named) == 1, f"warning for ({v}, {p}) ({how}): {messages}"
    assert len(messages) == len(UNUSABLE), messages
    assert sorted(result.unusable) == sorted(UNUSABLE)

    group = zarr.open_group(str(out), mode="r")
    assert group.attrs["complete"] is True
    visits, patches = list(group["visit"][:]), list(group["patch"][:])
    planes = json.loads(group.attrs["mask_planes"])
    usable, done = group["usable"][:], group["done"][:]
    for (v, p), w in warps.items():
        vi, pi = visits.index(v), patches.index(p)
        assert done[vi, pi]
        assert bool(usable[vi, pi]) == ((v, p) not in UNUSABLE), (v, p)
        if (v, p) not in UNUSABLE:
            continue
        h, wd = w.image.shape
        image = group["image"][vi, pi, :h, :wd]
        assert image.tobytes() == w.image.tobytes(), (
            f"unusable warp ({v}, {p}) ({UNUSABLE[(v, p)]}) was not written unchanged: "
            f"max |matched - input| = {np.nanmax(np.abs(image - w.image)) if np.isfinite(w.image).any() else 'n/a'}"
        )
        np.testing.assert_array_equal(group["mask"][vi, pi, :h, :wd], remap_mask(w.mask, w.mask_planes, planes))
        assert group["variance"][vi, pi, :h, :wd].tobytes() == w.variance.tobytes()


def test_unusable_warps_serial_driver(unusable_tract, small_sim):
    _, warps = unusable_tract
    with pytest.warns(UnusableWarpWarning) as caught:
        result = match_arrays(warps, small_sim.skymap)
    assert len([w for w in caught if issubclass(w.category, UnusableWarpWarning)]) == len(UNUSABLE)
    assert sorted(result.unusable) == sorted(UNUSABLE)
    for key, how in UNUSABLE.items():
        assert result.warp(*key).image.tobytes() == warps[key].image.tobytes(), (
            f"unusable warp {key} ({how}) was not left unchanged by the serial driver")
