"""The Butler as a sink: ``bgdask match REPO --output-run RUN``."""

from __future__ import annotations

import numpy as np
import xarray as xr

from bgdask.butler import output_dataset_types, read_store
from bgdask.cli import main
from butler_env import WHERE

RUN = "u/test/matched"


def match_into_run(repo, out, config_file, cluster, *extra):
    return main(["match", repo, "-o", str(out), "--collections", "warps", "--where", WHERE.format(tract=9813),
                 "--config", str(config_file), "--output-run", RUN, "--scheduler", cluster.scheduler.address,
                 "--no-progress", *extra])


def check_outputs(repo, run, store, sims, tract=9813):
    """Every output read back with butler.get equals the store; returns the datasets' ids."""
    from lsst.daf.butler import Butler

    butler = Butler.from_config(repo, collections=[run])
    names = output_dataset_types("psf_matched_warp")
    view = read_store(store)
    ds = xr.open_zarr(store)
    ids = set()
    for w in view.warps():
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


def count(repo, run):
    from lsst.daf.butler import Butler

    butler = Butler.from_config(repo)
    return sum(len(butler.query_datasets(n, collections=[run], limit=None, explain=False))
               for n in output_dataset_types("psf_matched_warp").values())


def test_output_run_round_trip_and_rerun(rubin_repo, file_stores, sims, config_file, cluster, tmp_path, capsys):
    out = tmp_path / "out.zarr"
    assert match_into_run(rubin_repo, out, config_file, cluster) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "datasets put into run u/test/matched" in printed
    # the store is the one matched from the files
    for name in ("image", "mask", "variance", "offset_coarse"):
        np.testing.assert_array_equal(xr.open_zarr(out)[name].values, xr.open_zarr(file_stores[9813])[name].values)
    ids = check_outputs(rubin_repo, RUN, out, sims)
    n = count(rubin_repo, RUN)
    assert n == 2 * len(sims[9813].warps) + 1
    # again: the store is finished, the datasets are there: nothing duplicated, nothing fails
    assert match_into_run(rubin_repo, out, config_file, cluster, "--resume") == 0, capsys.readouterr().err
    assert f"0 datasets put into run {RUN}, {n} already there kept" in capsys.readouterr().out
    assert count(rubin_repo, RUN) == n
    assert check_outputs(rubin_repo, RUN, out, sims) == ids
