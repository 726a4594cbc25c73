"""``bgdask.match(ds)``: the collection at the centre, stage C lazy."""

from __future__ import annotations

import numpy as np
import pytest

import bgdask
from bgdask.testing import CountComputes, assert_matched_equal


@pytest.fixture
def store(sync_store):
    return sync_store[1]


def test_match_computes_no_stage_c_chunk(small_tract):
    ds = bgdask.open_warps(small_tract / "manifest.csv")
    with CountComputes("bgdask-c") as stage_c, CountComputes("bgdask-a", "bgdask-b") as stages_ab:
        result = bgdask.match(ds, scheduler="sync")
    assert stage_c.count == 0, "match() computed stage-C chunks"
    assert stages_ab.count > 0, "the callback saw no task at all"
    assert result.matched.image.data.name.startswith("bgdask-c")
    # asking for one warp's chunk runs stage C for that warp only
    v, p = result.keys()[0]
    with CountComputes("bgdask-c") as stage_c:
        result.matched.image.sel(visit=v, patch=p).compute(scheduler="sync")
    n_chunks = len(result.matched.image.data.chunks[2])
    assert 1 <= stage_c.count <= n_chunks + 1   # its chunks and its coarse grid


def test_lazy_matched_equals_the_store(small_tract, store):
    result = bgdask.match(bgdask.open_warps(small_tract / "manifest.csv", chunks={"y": 100}), scheduler="sync")
    assert result.reference_visit == bgdask.io.store.Store.open(store).reference_visit
    assert_matched_equal(result.matched, store)


def test_a_user_reduction_over_the_lazy_result(small_tract, store):
    result = bgdask.match(bgdask.open_warps(small_tract / "manifest.csv"), scheduler="sync")
    v = result.keys()[-1][0]
    mean = result.matched.image.sel(visit=v).mean(["patch", "y", "x"], skipna=True).compute(scheduler="sync")
    stored = bgdask.io.store.Store.open(store).dataset()
    want = stored.image.sel(visit=v).mean(["patch", "y", "x"], skipna=True).compute(scheduler="sync")
    assert float(mean) == float(want)


def test_any_dataset_with_the_variables_works(small_tract, store):
    """A Dataset held in memory (no read tasks to find) gives the same result."""
    ds = bgdask.open_warps(small_tract / "manifest.csv").compute(scheduler="sync")
    assert not hasattr(ds.image.data, "dask")
    result = bgdask.match(ds, scheduler="sync")
    assert_matched_equal(result.matched, store)


def test_a_selection_of_the_collection(small_tract, small_sim):
    ds = bgdask.open_warps(small_tract / "manifest.csv")
    keep = small_sim.visits[:2]
    result = bgdask.match(ds.sel(visit=keep), bgdask.MatchConfig(ref_visit=keep[0]), scheduler="sync")
    direct = bgdask.match_arrays({k: w for k, w in small_sim.warps.items() if k[0] in keep}, small_sim.skymap,
                                 bgdask.MatchConfig(ref_visit=keep[0]))
    for key in direct.keys():
        np.testing.assert_array_equal(result.warp(*key).image, direct.warp(*key).image)


def test_match_checks_the_dataset():
    import xarray as xr

    with pytest.raises(bgdask.InputError, match="lacks image"):
        bgdask.match(xr.Dataset())


def test_lazy_coarse_offsets_equal_the_stores(small_tract, store):
    from bgdask.io.store import Store

    result = bgdask.match(bgdask.open_warps(small_tract / "manifest.csv"), scheduler="sync")
    stored = Store.open(store)
    for v, p in result.keys():
        grid, ky0, kx0 = result.coarse(v, p)
        want, wy0, wx0 = stored.coarse(v, p)
        assert (ky0, kx0) == (wy0, wx0) and grid.tobytes() == want.tobytes()
