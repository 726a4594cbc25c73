"""The Butler as a sink: ``bgdask match REPO --output-run RUN``."""

from __future__ import annotations

import numpy as np
import xarray as xr

from bgdask.butler import output_dataset_types
from bgdask.cli import main
from butler_env import WHERE, check_outputs

RUN = "u/test/matched"


def match_into_run(repo, out, config_file, cluster, *extra):
    return main(["match", repo, "-o", str(out), "--collections", "warps", "--where", WHERE.format(tract=9813),
                 "--config", str(config_file), "--output-run", RUN, "--scheduler", cluster.scheduler.address,
                 "--no-progress", *extra])


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
    from lsst.daf.butler import Butler

    again = Butler.from_config(rubin_repo).query_datasets(output_dataset_types("psf_matched_warp")["matched"],
                                                          collections=[RUN], limit=None)
    assert {ref.id for ref in again} == ids
