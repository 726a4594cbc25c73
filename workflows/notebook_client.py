# bgdask from a notebook, with your own Dask client.
#
# Notebook-style: each "[cell]" block in main() is what you would type in one
# notebook cell (with `args.input` etc. replaced by your paths); as a script it
# runs them all:
#
#     python workflows/notebook_client.py WARPS OUT.zarr --workers 2
#
# You start the `distributed.Client` yourself (here on a `LocalCluster` bound to
# 127.0.0.1; in a notebook use `Client("tcp://scheduler:8786")` for a cluster
# that already runs) and hand it to `bgdask.match_backgrounds(..., client=client)`.
# The result names the reference visit and holds the per-visit table as a
# pandas DataFrame; the store opens with `xarray.open_zarr`.

from __future__ import annotations

import argparse
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="bgdask with your own distributed.Client (notebook style)")
    p.add_argument("input", help="directory of warp FITS files, manifest CSV, or Zarr store")
    p.add_argument("output", help="output Zarr store")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads-per-worker", type=int, default=1)
    p.add_argument("--overwrite", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)

    # [cell] Start a Dask cluster and a client (everything on loopback)
    from distributed import Client, LocalCluster

    cluster = LocalCluster(host="127.0.0.1", dashboard_address="127.0.0.1:0", n_workers=args.workers,
                           threads_per_worker=args.threads_per_worker, processes=True)
    client = Client(cluster)
    print("dashboard:", client.dashboard_link)

    try:
        # [cell] Look at the warps lazily: one (visit, patch) Dataset, nothing read yet
        import bgdask

        ds = bgdask.open_warps(args.input)
        print(ds)
        print("warps present per visit:", dict(zip(ds.visit.values.tolist(),
                                                   ds.present.values.sum(axis=1).tolist())))

        # [cell] Match: the reference is chosen by cost unless MatchConfig(ref_visit=...) says
        config = bgdask.MatchConfig()               # e.g. MatchConfig(x_bin=256, y_bin=256)
        result = bgdask.match_backgrounds(args.input, args.output, config, client=client,
                                          overwrite=args.overwrite)
        print(result)

        # [cell] The per-visit table: reference-choice figures and the difference models
        table = result.table
        print("reference visit:", result.reference_visit)
        print(table.to_string(float_format="{:.4g}".format))
        matched = table[table.status == "matched"]
        print(f"{len(matched)} visits matched; mean |offset| {matched.model_mean.abs().mean():.3g} nJy")

        # [cell] The matched tract, lazily, with xarray
        import xarray as xr

        out = xr.open_zarr(args.output)
        print("store complete:", bool(out.attrs["complete"]), "| reference:", out.attrs["reference_visit"])
        print("difference model of the first visit (superpixels):", out.diff_model.isel(visit=0).shape)
    finally:
        # [cell] Done: close the client and the cluster
        client.close()
        cluster.close()
    return 0


if __name__ == "__main__":  # worker processes re-import this file: run only as a script
    sys.exit(main())
