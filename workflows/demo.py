"""The bgdask demo through the Python API: simulate a small tract, match it on a
local Dask cluster, compare with the injected truth, and write the run report.

    python workflows/demo.py -o demo-out                 # 4 visits, 3 x 3 patches of 400 pixels
    python workflows/demo.py -o tiny --visits 3 --patches 2 2 --patch-size 256 --workers 1

Writes OUT/tract/ (afw-format FITS warps, manifest.csv, skymap.yaml, truth.json),
OUT/demo.zarr (the matched tract) and OUT/report.html. The same as `bgdask demo`,
spelled out with the library calls a script or notebook would use.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path



def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", default="bgdask-demo", help="output directory (default ./bgdask-demo)")
    p.add_argument("--visits", type=int, default=4, help="number of visits (default 4)")
    p.add_argument("--patches", type=int, nargs=2, default=(3, 3), metavar=("NX", "NY"),
                   help="patches along x and y (default 3 3)")
    p.add_argument("--patch-size", type=int, default=400, help="inner patch size in pixels (default 400)")
    p.add_argument("--border", type=int, default=20, help="patch border in pixels (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="local Dask worker processes (default 2)")
    p.add_argument("--threads-per-worker", type=int, default=1)
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import bgdask
    from bgdask.cluster import ClusterOptions, connect, dashboard_line
    from bgdask.simulate import simulate, store_offset_error

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)

    # 1. A synthetic tract with known truth (afw-format FITS warps on disk).
    t0 = time.perf_counter()
    sim = simulate(out / "tract", n_visits=args.visits, num_patches=tuple(args.patches),
                   patch_inner=args.patch_size, patch_border=args.border, seed=args.seed)
    print(f"simulated {len(sim.warps)} warps of {len(sim.visits)} visits ({sim.skymap}) "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)

    # 2. Match on a local Dask cluster; scheduler, workers and dashboard bind 127.0.0.1.
    store = out / "demo.zarr"
    options = ClusterOptions(kind="local", workers=args.workers, threads_per_worker=args.threads_per_worker)
    with connect(options) as client:
        print(dashboard_line(client), flush=True)
        result = bgdask.match_backgrounds(out / "tract" / "manifest.csv", store, client=client,
                                          skymap=out / "tract" / "skymap.yaml", overwrite=True)

    # 3. What came out.
    print(f"reference visit: {result.reference_visit}")
    print(result.table.to_string(float_format="{:.4g}".format))
    for stage, seconds in result.timings.items():
        print(f"{stage}: {seconds:.2f} s")
    err, size = store_offset_error(sim, store)
    print(f"offset error against the injected truth: RMS {err:.4f} nJy "
          f"({100 * err / size:.2f}% of the injected offsets' RMS {size:.3f} nJy)")
    print(f"matched tract: {store}")

    # 4. The run report: one self-contained HTML page.
    if not args.no_report:
        from bgdask.report import write_report

        print(f"report: {write_report(store, out / 'report.html')}")
    return 0


if __name__ == "__main__":  # worker processes re-import this file: run only as a script
    sys.exit(main())
