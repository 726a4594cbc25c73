"""Several (tract, band) groups in one run: one store each, on one cluster at once."""

from __future__ import annotations

import numpy as np
import xarray as xr

from bgdask.butler import find_warp_groups, match_groups
from bgdask.cli import main

TWO_TRACTS = "skymap='bgdask_sim' AND tract IN (9813, 9814) AND band='r'"


def test_two_tracts_run_concurrently_on_one_cluster(rubin_repo, file_stores, config, cluster, tmp_path):
    groups = find_warp_groups(rubin_repo, "warps", TWO_TRACTS)
    assert [g.tract for g in groups] == [9813, 9814]
    results = match_groups(groups, tmp_path / "out", config, cluster)
    assert all(r.ok for r in results), [r.error for r in results]
    assert [r.store for r in results] == [str(tmp_path / "out" / f"tract{t}-r.zarr") for t in (9813, 9814)]
    # one cluster, both groups in flight at the same time
    assert {r.scheduler for r in results} == {cluster.scheduler.address}
    assert max(r.started for r in results) < min(r.finished for r in results)
    for r in results:
        a, b = xr.open_zarr(r.store), xr.open_zarr(file_stores[r.group.tract])
        for name in ("image", "mask", "variance", "offset_coarse"):
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=f"{r.group.tract} {name}")


def test_a_failed_group_does_not_stop_the_others(rubin_repo, config_file, cluster, tmp_path, capsys):
    """Tract 9814 of warps/damaged has a file with damaged pixel data: its
    group fails, tract 9813 is matched and put; exit status 1."""
    from lsst.daf.butler import Butler

    out = tmp_path / "out"
    code = main(["match", rubin_repo, "-o", f"{out}/", "--collections", "warps/damaged", "--where", TWO_TRACTS,
                 "--config", str(config_file), "--output-run", "u/test/damaged",
                 "--scheduler", cluster.scheduler.address, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1, err
    errors = [line for line in err.splitlines() if line.startswith("bgdask: error:")]
    assert len(errors) == 1 and "tract 9814 band r" in errors[0] and "9814_1_r_SimCam-r_1000" in errors[0]
    assert "1 of 2 groups failed" in err
    good = xr.open_zarr(out / "tract9813-r.zarr")
    assert good.attrs["complete"]
    butler = Butler.from_config(rubin_repo)
    refs = butler.query_datasets("psf_matched_warp_background_matched", collections="u/test/damaged",
                                 limit=None, explain=False)
    assert {r.dataId["tract"] for r in refs} == {9813}
    assert len(refs) == int(good.present.sum())
    assert {r.dataId["tract"] for r in butler.query_datasets("psf_matched_warp_background_table",
                                                              collections="u/test/damaged")} == {9813}
