"""What the Butler tests share: whether the Rubin packages are there, the
simulated tracts' parameters, small helpers (imported by conftest and tests)."""

from __future__ import annotations

from pathlib import Path

def _missing() -> str | None:
    try:
        import bgdask.butler  # noqa: F401  (its ImportError says what to install)
        import lsst.ctrl.mpexec  # noqa: F401
        import lsst.pipe.base  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


MISSING = _missing()
SKIP_REASON = f"{MISSING}; see .ci/butler-env"
WHERE = "skymap='bgdask_sim' AND tract={tract} AND band='r'"
SIM_ARGS = dict(n_visits=3, num_patches=(2, 2), patch_inner=128, patch_border=8)
CONFIG = dict(x_bin=32, y_bin=32, binning=16)



def file_map(sim, directory) -> dict:
    from bgdask.simulate import warp_filename

    return {(sim.skymap.tract, v, p): str(Path(directory) / warp_filename(v, p)) for v, p in sim.warps}


# -- helpers for the tests ---------------------------------------------------------

def butler_state(repo: str) -> tuple:
    """What a failed command must leave unchanged: collections, dataset types, datasets."""
    from lsst.daf.butler import Butler

    butler = Butler.from_config(repo)
    collections = tuple(sorted(butler.collections.query("*")))
    types = tuple(sorted(t.name for t in butler.registry.queryDatasetTypes()))
    count = sum(len(butler.query_datasets(t, collections="*", find_first=False, limit=None, explain=False))
                for t in types)
    return collections, types, count


def check_outputs(repo, run, store, sims, tract=9813, dataset_type="psf_matched_warp", every=1):
    """The outputs (every ``every``-th warp's) read back with butler.get equal
    the store; returns the matched datasets' ids."""
    import numpy as np
    import xarray as xr
    from lsst.daf.butler import Butler

    from bgdask.butler import output_dataset_types, read_store

    butler = Butler.from_config(repo, collections=[run])
    names = output_dataset_types(dataset_type)
    view = read_store(store)
    ds = xr.open_zarr(store)
    ids = set()
    for n, (visit, patch) in enumerate(view.keys):
        if n % every:
            continue
        w = view.warp(visit, patch)
        data_id = dict(skymap="bgdask_sim", tract=tract, visit=w.visit, patch=w.patch, instrument="SimCam")
        matched = butler.get(names["matched"], data_id)
        np.testing.assert_array_equal(matched.image.array, w.image)
        np.testing.assert_array_equal(matched.variance.array, w.variance)
        assert (matched.bbox.x.start, matched.bbox.y.start) == (w.x0, w.y0)
        # the mask: the input's plane names, each plane's pixels where the input has them
        warp = sims[tract].warps[(w.visit, w.patch)]
        assert set(matched.mask.schema.names) == set(view.mask_planes) >= set(warp.mask_planes)
        for name, bit in warp.mask_planes.items():
            np.testing.assert_array_equal(matched.mask.get(name), (warp.mask >> bit) & 1 == 1, err_msg=name)
        diff = butler.get(names["diff"], data_id)
        assert diff.array.dtype == np.float64
        np.testing.assert_array_equal((warp.image.astype(np.float64) + diff.array).astype(np.float32),
                                      matched.image.array)
        ids.add(butler.find_dataset(names["matched"], data_id).id)
    table = butler.get(names["table"], skymap="bgdask_sim", tract=tract, band="r",
                       parameters={"strip_astropy_meta_yaml": False})
    assert list(table["visit"]) == [int(v) for v in ds.visit.values]
    np.testing.assert_array_equal(np.asarray(table["model_mean"]), ds.model_mean.values)
    assert table.meta["reference_visit"] == int(ds.attrs["reference_visit"])
    assert int(np.asarray(table["visit"])[np.asarray(table["reference"])][0]) == table.meta["reference_visit"]
    return ids
