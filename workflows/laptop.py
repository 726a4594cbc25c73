"""Match a directory of warps on this machine: a LocalCluster of worker processes.

    python workflows/laptop.py WARPS_DIR OUT.zarr
    python workflows/laptop.py warps/ out.zarr --workers 4 --threads-per-worker 2 --memory-limit 6GB
    python workflows/laptop.py warps/ out.zarr --resume          # finish an interrupted run

WARPS_DIR is searched recursively for warp FITS files (afw format, .fits or
.fits.fz); a manifest CSV or an input Zarr store works too. The scheduler, the
workers and the dashboard bind 127.0.0.1; the dashboard link is printed
(unless bgdask.dashboard is false in Dask's configuration).

Sizing: a worker thread needs about 1.5 GB for Rubin's 4200 x 4200 warps (a
stage-B task holds a reference warp, a visit's warp and their difference), and
far less for small warps. With 16 GB and 8 cores, --workers 4
--threads-per-worker 2 --memory-limit 3.5GB is a good start.
"""

from __future__ import annotations

import argparse
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("input", help="directory of warp FITS files (or a manifest CSV, or a Zarr store)")
    p.add_argument("output", help="output Zarr store")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: Dask's choice)")
    p.add_argument("--threads-per-worker", type=int, default=None)
    p.add_argument("--memory-limit", default=None, help="per worker, e.g. 4GB (default: Dask's 'auto')")
    p.add_argument("--config", default=None, help="YAML or TOML file of MatchConfig fields")
    p.add_argument("--ref-visit", type=int, default=None, help="reference visit (default: chosen by cost)")
    p.add_argument("--skymap", default=None, help="skymap YAML (default: inferred from the warps' boxes)")
    p.add_argument("--resume", action="store_true", help="finish an interrupted run of the same inputs")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--report", default=None, metavar="HTML", help="also write the run report here")
    p.add_argument("--performance-report", default=None, metavar="HTML",
                   help="write Dask's performance report (task stream, profiles) here")
    return p.parse_args(argv)


def progress(label: str, n: int, total: int) -> None:
    if n == total or n % max(1, total // 10) == 0:
        print(f"  {label}: {n}/{total}", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    import contextlib

    import bgdask
    from bgdask.cluster import ClusterOptions, connect, dashboard_line

    config = bgdask.MatchConfig.from_file(args.config) if args.config else bgdask.MatchConfig()
    if args.ref_visit is not None:
        config = config.replace(ref_visit=args.ref_visit)
    options = ClusterOptions(kind="local", workers=args.workers, threads_per_worker=args.threads_per_worker,
                             memory_limit=args.memory_limit)
    t0 = time.perf_counter()
    with connect(options) as client:
        print(dashboard_line(client), flush=True)
        print(f"workers: {len(client.scheduler_info()['workers'])}", flush=True)
        perf = contextlib.nullcontext()
        if args.performance_report:
            from distributed import performance_report

            perf = performance_report(filename=args.performance_report)
        with perf:
            result = bgdask.match_backgrounds(
                args.input, args.output, config, client=client, skymap=args.skymap,
                resume=args.resume, overwrite=args.overwrite, progress=progress, echo=print,
            )
    print(f"reference visit: {result.reference_visit}")
    print(result.table.to_string(float_format="{:.4g}".format))
    print(f"matched tract written to {result.store} in {time.perf_counter() - t0:.1f} s")
    if args.report:
        from bgdask.report import write_report

        print(f"report: {write_report(args.output, args.report)}")
    return 0


if __name__ == "__main__":  # worker processes re-import this file: run only as a script
    from bgdask.errors import BgdaskError

    try:
        sys.exit(main())
    except BgdaskError as exc:  # bad input, store or cluster: one clear message
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
