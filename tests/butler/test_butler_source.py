"""The Butler as a source: warps found by a query, read by the workers from their files."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import bgdask
from bgdask.butler import find_warp_groups, find_warps, read_store
from bgdask.errors import InputError
from bgdask.io import read_warp
from butler_env import WHERE

#: Store variables that must be bitwise equal between two runs of the same warps.
COMPARED = ("image", "mask", "variance", "offset_coarse", "diff_model", "present", "usable",
            "model_mean", "model_rms", "fit_rms", "n_good", "ref_cost", "status")


def assert_same_store(a, b):
    da, db = xr.open_zarr(a), xr.open_zarr(b)
    for name in COMPARED:
        np.testing.assert_array_equal(da[name].values, db[name].values, err_msg=name)
    for name in ("reference_visit", "mask_planes", "skymap", "config"):
        assert da.attrs[name] == db.attrs[name], name
    assert int(da.present.sum()) > 0 and da.attrs["complete"]


def test_rubin_layout_matches_like_its_files(rubin_repo, file_stores, config, cluster, tmp_path,
                                            monkeypatch):
    """ExposureF datasets (no afw): the store equals the one made from the files,
    and the client reads no pixel (the workers do)."""
    from lsst.daf.butler import Butler

    butler = Butler.from_config(rubin_repo)
    ref = butler.query_datasets("psf_matched_warp", collections="warps", limit=1)[0]
    with pytest.raises(Exception, match="lsst.obs.base|afw|could not read|No module"):
        butler.get(ref)               # a real repository's warps: not readable without afw
    catalog = find_warps(rubin_repo, "warps", WHERE.format(tract=9813))

    def no_pixels_here(*args, **kwargs):
        raise AssertionError("the client read pixels")

    import bgdask.io.fits as fits_module

    for name in ("read_plane", "_read_plain", "_read_rows", "read_warp"):
        monkeypatch.setattr(fits_module, name, no_pixels_here)
    store = tmp_path / "butler.zarr"
    result = bgdask.match_backgrounds(catalog, store, config, cluster)
    monkeypatch.undo()
    assert_same_store(store, file_stores[9813])
    assert result.reference_visit == int(xr.open_zarr(file_stores[9813]).attrs["reference_visit"])


def test_open_warps_of_a_butler_catalog(rubin_repo, files):
    catalog = find_warps(rubin_repo, ["warps"], WHERE.format(tract=9814))
    ds = bgdask.open_warps(catalog)
    ref = bgdask.open_warps(files[9814] / "warps")
    assert ds.attrs["tract"] == 9814
    for name in ("image", "mask", "variance", "present"):
        np.testing.assert_array_equal(ds[name].values, ref[name].values, err_msg=name)


def test_masked_image_v2_datasets(v2_repo, file_stores, config, cluster, tmp_path):
    """lsst.images datasets: read from their files with their mask plane names."""
    from lsst.daf.butler import Butler

    group, = find_warp_groups(v2_repo, "warps", WHERE.format(tract=9813))
    key = sorted(group.refs)[0]
    from_butler = Butler.from_config(v2_repo).get(group.refs[key])
    warp = read_warp(group.paths[key])
    np.testing.assert_array_equal(warp.image, from_butler.image.array)
    assert set(warp.mask_planes) == set(from_butler.mask.schema.names)
    for name in warp.mask_planes:
        np.testing.assert_array_equal((warp.mask & (1 << warp.mask_planes[name])) != 0,
                                      from_butler.mask.get(name))
    assert (warp.x0, warp.y0) == (from_butler.bbox.x.start, from_butler.bbox.y.start)
    store = tmp_path / "v2.zarr"
    bgdask.match_backgrounds(group.catalog(), store, config, cluster)
    assert_same_store(store, file_stores[9813])


def test_header_cards_disagreeing_with_the_data_id_are_refused(rubin_repo):
    """The data ID says visit 1000; the file's VISIT card says 1001: which
    visit the pixels are is unknown, so the dataset is refused, by name."""
    with pytest.raises(InputError) as err:
        find_warps(rubin_repo, "warps/mislabeled", WHERE.format(tract=9813))
    message = str(err.value)
    assert "psf_matched_warp" in message and "visit: 1000" in message and "warps/mislabeled" in message
    assert "1001" in message and "Butler data ID" in message


def test_groups_by_tract_and_band(rubin_repo):
    where = "skymap='bgdask_sim' AND tract IN (9813, 9814) AND band='r'"
    groups = find_warp_groups(rubin_repo, "warps", where)
    assert [g.key for g in groups] == [("bgdask_sim", 9813, "r"), ("bgdask_sim", 9814, "r")]
    assert all(int(bgdask.open_warps(g.catalog()).present.sum()) == len(g.refs) > 0 for g in groups)
    with pytest.raises(InputError, match="2 \\(skymap, tract, band\\) groups"):
        find_warps(rubin_repo, "warps", where)
    # the repository named by its config URI
    by_uri = find_warp_groups(f"file://{rubin_repo}/butler.yaml", "warps", where)
    assert [g.paths for g in by_uri] == [g.paths for g in groups]


def test_read_store_gives_the_offset_that_was_added(file_stores, sims):
    """float32(input + offset) is the matched image, bit for bit, for every warp."""
    view = read_store(file_stores[9813])
    sim = sims[9813]
    nonzero = 0
    for w in view.warps():
        warp = sim.warps[(w.visit, w.patch)]
        expected = (warp.image.astype(np.float64) + w.offset).astype(np.float32)
        np.testing.assert_array_equal(expected, w.image)
        assert (w.x0, w.y0) == (warp.x0, warp.y0)
        if w.visit == view.reference_visit:
            assert not w.offset.any()
        else:
            nonzero += bool(np.abs(w.offset).max() > 1.0)
    assert nonzero > 0
    assert list(view.table["visit"]) == sorted(sim.visits)
    assert list(view.table["reference"]).count(True) == 1
