"""The lazy (visit, patch) collection and the warp catalog."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import bgdask
from bgdask.errors import GeometryError, InputError
from bgdask.io import WarpHeader, read_warp, write_warp
from bgdask.io.catalog import find_warps
from bgdask.masks import remap_mask


def test_open_warps_reads_headers_only(small_tract, monkeypatch):
    calls = []
    real = WarpHeader.read

    def counting(header, plane, rows=None):
        calls.append(((header.visit, header.patch), plane, rows))
        return real(header, plane, rows)

    monkeypatch.setattr(WarpHeader, "read", counting)
    ds = bgdask.open_warps(small_tract, chunks={"y": 100})
    assert calls == []          # opening read no pixel
    present = np.argwhere(ds.present.values)
    vi, pi = present[0]
    block = ds.image[vi, pi, 100:200].values
    assert calls == [((int(ds.visit[vi]), int(ds.patch[pi])), "image", slice(100, 200))]
    assert block.shape == (100, ds.sizes["x"])
    absent = np.argwhere(~ds.present.values)
    if len(absent):
        calls.clear()
        assert np.isnan(ds.image[absent[0][0], absent[0][1]].values).all()
        assert calls == []      # absent warps read nothing


def test_open_warps_values(small_tract, small_sim):
    ds = bgdask.open_warps(small_tract)
    assert set(ds.image.dims) == {"visit", "patch", "y", "x"}
    assert ds.image.data.chunksize[:2] == (1, 1)
    planes = ds.attrs["mask_planes"]
    assert bgdask.SkyMap.from_dict(ds.attrs["skymap"]) == small_sim.skymap
    for (v, p), w in small_sim.warps.items():
        sel = dict(visit=v, patch=p)
        h, wd = w.height, w.width
        assert (int(ds.width.sel(patch=p)), int(ds.height.sel(patch=p))) == (wd, h)
        np.testing.assert_array_equal(ds.image.sel(sel).values[:h, :wd], w.image)
        np.testing.assert_array_equal(ds.variance.sel(sel).values[:h, :wd], w.variance)
        mask = ds.mask.sel(sel).values[:h, :wd]
        np.testing.assert_array_equal(mask, remap_mask(w.mask, w.mask_planes, planes))
        # the same planes carry the same names whatever the file's bits
        for name in ("NO_DATA", "BAD"):
            np.testing.assert_array_equal((mask >> planes[name]) & 1, (w.mask >> w.mask_planes[name]) & 1)
        assert bool(ds.present.sel(sel))
        if wd < ds.sizes["x"]:
            assert np.isnan(ds.image.sel(sel).values[:, wd:]).all()   # padding


def test_catalog_from_directory_and_manifest(small_tract, small_sim):
    by_dir = find_warps(small_tract / "warps")
    by_csv = find_warps(small_tract / "manifest.csv")
    assert set(by_dir.entries) == set(small_sim.warps) == set(by_csv.entries)
    assert by_dir.tract == small_sim.skymap.tract
    assert by_dir.resolve_skymap() == small_sim.skymap        # inferred
    assert by_csv.resolve_skymap(small_tract / "skymap.yaml") == small_sim.skymap


def _copy_tract(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_duplicate_warps_are_named(small_tract, tmp_path):
    d = _copy_tract(small_tract / "warps", tmp_path / "w")
    first = sorted(d.rglob("*.fits"))[0]
    shutil.copy(first, d / "copy.fits")
    with pytest.raises(InputError, match=r"two warps for \(visit .*copy\.fits"):
        find_warps(d)


def test_mixed_tracts_are_refused(small_tract, tmp_path):
    d = _copy_tract(small_tract / "warps", tmp_path / "w")
    f = sorted(d.rglob("*.fits"))[0]
    w = read_warp(f)
    w.tract = 1234
    write_warp(f, w, overwrite=True)
    with pytest.raises(InputError, match="more than one tract.*1234"):
        find_warps(d)


def test_box_not_its_patch_is_named(small_tract, tmp_path):
    d = _copy_tract(small_tract / "warps", tmp_path / "w")
    f = sorted(d.rglob("*.fits"))[0]
    w = read_warp(f)
    w.x0 += 8
    write_warp(f, w, overwrite=True)
    with pytest.raises(GeometryError, match=f.name):
        find_warps(d).resolve_skymap(small_tract / "skymap.yaml")


def test_manifest_errors(small_tract, tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("visit,patch\n1,2\n")
    with pytest.raises(InputError, match="path"):
        find_warps(bad)
    bad.write_text("visit,patch,path\n1,2,nowhere.fits\n")
    with pytest.raises(InputError, match="nowhere.fits"):
        find_warps(bad)
    bad.write_text("visit,patch,path\nx,2,a.fits\n")
    with pytest.raises(InputError, match="line 2"):
        find_warps(bad)
    with pytest.raises(InputError, match="no such file"):
        find_warps(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no FITS files"):
        find_warps(tmp_path / "empty")


def test_manifest_ids_for_files_without_butler_cards(small_sim, tmp_path):
    (v, p), w = next(iter(small_sim.warps.items()))
    import dataclasses

    anon = dataclasses.replace(w, visit=None, patch=None, tract=None)
    write_warp(tmp_path / "a.fits", anon)
    with pytest.raises(InputError, match="LSST BUTLER DATAID"):
        find_warps(tmp_path)
    (tmp_path / "m.csv").write_text(f"visit,patch,path\n{v},{p},a.fits\n")
    cat = find_warps(tmp_path / "m.csv")
    assert list(cat.entries) == [(v, p)]
