"""The Dask pipeline: equal to the serial driver, bitwise, on every scheduler."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from distributed import Client, LocalCluster

import bgdask
from bgdask.background import offset_rows
from bgdask.config import MatchConfig
from bgdask.errors import ConfigError, StoreError
from bgdask.table import SEAM_PLANES, STATUS_CODES
from bgdask import match_arrays, match_backgrounds


@pytest.fixture(scope="module")
def serial(small_sim):
    return match_arrays(small_sim.warps, small_sim.skymap)


@pytest.fixture(scope="module")
def serial_100(small_sim):
    """The serial driver on 100-row chunks: the quality is measured per row
    block, so it is bitwise the pipeline's for the same chunks."""
    return match_arrays(small_sim.warps, small_sim.skymap, chunk_rows=100)


QUALITY = ("match_rms", "match_noise", "match_ratio", "flagged")


def assert_store_equals_serial(out, serial, sim, quality=None):
    """The store holds ``serial``'s result; its quality columns and seam map
    are ``quality``'s (a serial result on the store's chunks; default ``serial``)."""
    quality = quality or serial
    ds = xr.open_zarr(out)
    assert int(ds.attrs["reference_visit"]) == serial.reference_visit
    assert ds.attrs["complete"] is True
    visits, patches = list(ds.visit.values), list(ds.patch.values)
    planes = json.loads(ds.attrs["mask_planes"])
    assert planes == serial.mask_planes
    for v, p in serial.keys():
        m = serial.warp(v, p)
        sel = dict(visit=visits.index(v), patch=patches.index(p))
        h, w = m.image.shape
        for name in ("image", "mask", "variance"):
            got = ds[name][sel].values
            np.testing.assert_array_equal(got[:h, :w], getattr(m, name), err_msg=f"{name} of {(v, p)}")
        assert bool(ds.done[sel]) and bool(ds.present[sel])
    for vi, v in enumerate(visits):
        np.testing.assert_array_equal(ds.diff_model.values[vi], serial.models[v].model)
        row = serial.table.loc[v]
        for col in ("ref_chi2", "ref_variance", "ref_cost", "model_mean", "model_rms", "fit_rms", "extrap_frac"):
            np.testing.assert_array_equal(ds[col].values[vi], row[col])
        for col in QUALITY:
            np.testing.assert_array_equal(ds[col].values[vi], quality.table.loc[v, col])
        assert ds.status.values[vi] == STATUS_CODES[row["status"]]
    np.testing.assert_array_equal(ds.seam.values, np.stack([quality.seam[k] for k in SEAM_PLANES]))


def test_sync_store_equals_serial_driver(sync_store, serial, small_sim):
    res, out = sync_store
    assert res.reference_visit == serial.reference_visit
    assert res.table.equals(serial.table)
    assert_store_equals_serial(out, serial, small_sim)


@pytest.mark.slow
@pytest.mark.parametrize("n_workers", [1, 2])
def test_distributed_store_equals_serial(small_tract, tmp_path, serial, serial_100, small_sim, n_workers):
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None, processes=True) as cluster, Client(cluster) as client:
        res = match_backgrounds(small_tract / "manifest.csv", tmp_path / "out.zarr", client=client,
                                chunk_rows=100)
    assert res.reference_visit == serial.reference_visit
    assert_store_equals_serial(tmp_path / "out.zarr", serial, small_sim, quality=serial_100)
    assert res.table[list(QUALITY)].equals(serial_100.table[list(QUALITY)])


def test_store_contents(sync_store, small_sim):
    res, out = sync_store
    ds = xr.open_zarr(out)
    cfg = MatchConfig.from_dict(json.loads(ds.attrs["config"]))
    sm = bgdask.SkyMap.from_dict(json.loads(ds.attrs["skymap"]))
    assert sm == small_sim.skymap
    for key in ("reference_visit", "config", "skymap", "bgdask_version", "fingerprint", "stage_times"):
        assert key in ds.attrs
    visits, patches = list(ds.visit.values), list(ds.patch.values)
    for vi, v in enumerate(visits):
        for pi, p in enumerate(patches):
            present = (v, p) in small_sim.warps
            assert bool(ds.present.values[vi, pi]) == present
            if not present:
                # absent warps have no chunks on disk
                assert not list((Path(out) / "image" / "c" / str(vi) / str(pi)).glob("*"))
                continue
            w = small_sim.warps[(v, p)]
            box = w.box
            assert (ds.x0.values[pi], ds.y0.values[pi], ds.width.values[pi], ds.height.values[pi]) == (
                box.x0, box.y0, box.width, box.height)
            # matched = input + offset rebuilt from the stored coarse grid
            coarse = ds.offset_coarse.values[vi, pi]
            coarse = coarse[~np.isnan(coarse).all(axis=1)][:, ~np.isnan(coarse).all(axis=0)]
            kx0, ky0 = int(ds.coarse_x0.values[pi]), int(ds.coarse_y0.values[pi])
            offset = offset_rows(coarse, kx0, ky0, box, slice(None), cfg)
            expected = (w.image.astype(np.float64) + offset).astype(np.float32)
            got = ds.image.values[vi, pi, : box.height, : box.width]
            if v == res.reference_visit:
                expected = w.image
            np.testing.assert_array_equal(got, expected)


def test_open_warps_on_the_output_store(sync_store):
    _, out = sync_store
    ds = bgdask.open_warps(out)
    stored = xr.open_zarr(out)
    np.testing.assert_array_equal(ds.image.values, stored.image.values)


def test_refuses_existing_and_foreign_stores(small_tract, sync_store, tmp_path):
    _, out = sync_store
    with pytest.raises(StoreError, match="already exists.*resume=True.*overwrite=True") as info:
        match_backgrounds(small_tract / "manifest.csv", out, scheduler="sync")
    assert "--resume" in info.value.cli_message() and "--overwrite" in info.value.cli_message()
    with pytest.raises(StoreError, match="another run"):
        match_backgrounds(small_tract / "manifest.csv", out, MatchConfig(x_bin=64, y_bin=64),
                          scheduler="sync", resume=True)
    (tmp_path / "notastore").mkdir()
    (tmp_path / "notastore" / "precious.txt").write_text("x")
    with pytest.raises(StoreError, match="not a Zarr store"):
        match_backgrounds(small_tract / "manifest.csv", tmp_path / "notastore", scheduler="sync",
                          overwrite=True)
    assert (tmp_path / "notastore" / "precious.txt").exists()


def test_unknown_reference_visit(small_tract, tmp_path):
    with pytest.raises(ConfigError, match="ref_visit 4242"):
        match_backgrounds(small_tract / "manifest.csv", tmp_path / "o.zarr", MatchConfig(ref_visit=4242),
                          scheduler="sync")
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.slow
def test_resume_redoes_only_what_is_not_done(small_tract, tmp_path, serial, small_sim):
    import zarr

    out = tmp_path / "out.zarr"
    match_backgrounds(small_tract / "manifest.csv", out, scheduler="sync")
    group = zarr.open_group(str(out), mode="r+")
    done = group["done"][:]
    # forget two warps as if the run had been killed before they landed
    keys = list(zip(*np.nonzero(group["present"][:])))[:2]
    stamp = {}
    for vi, pi in keys:
        done[vi, pi] = False
        group["image"][vi, pi] = np.float32(-1)
    group["done"][:] = done
    group.attrs["complete"] = False
    for vi, pi in zip(*np.nonzero(group["done"][:])):
        stamp[(vi, pi)] = os.stat(out / "image" / "c" / str(vi) / str(pi) / "0" / "0").st_mtime_ns
    match_backgrounds(small_tract / "manifest.csv", out, scheduler="sync", resume=True)
    assert_store_equals_serial(out, serial, small_sim)
    for (vi, pi), t in stamp.items():   # done warps were not rewritten
        assert os.stat(out / "image" / "c" / str(vi) / str(pi) / "0" / "0").st_mtime_ns == t
