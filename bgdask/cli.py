"""The ``bgdask`` command."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
import warnings
from pathlib import Path

from . import __version__
from ._butler_hook import add_butler_arguments, run_butler_match, wants_butler
from .errors import BgdaskError

log = logging.getLogger("bgdask")


def _echo(msg: str = "") -> None:
    print(msg, flush=True)


# -- progress -------------------------------------------------------------------

class Progress:
    """A one-line progress display on a terminal (stderr)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.label = None

    def __call__(self, label: str, n: int, total: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * n / max(total, 1))
        end = "\n" if n >= total else ""
        sys.stderr.write(f"\r{label:<32} [{'#' * filled}{'.' * (width - filled)}] {n}/{total}{end}")
        sys.stderr.flush()


# -- commands ---------------------------------------------------------------------

def _config(args):
    from .config import MatchConfig

    cfg = MatchConfig.from_file(args.config) if getattr(args, "config", None) else MatchConfig()
    if getattr(args, "ref_visit", None) is not None:
        cfg = cfg.replace(ref_visit=args.ref_visit)
    return cfg


def _print_table(table, reference) -> None:
    import pandas as pd

    _echo(f"reference visit: {reference}")
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.max_rows", 500,
                           "display.float_format", "{:.4g}".format):
        _echo(table.to_string())


def _run_match(args, source, output, cfg, skymap=None, overwrite=None):
    """Run the pipeline on the cluster the options name; returns the result."""
    from .cluster import connect, dashboard_link, options_from_args
    from .pipeline import match_backgrounds

    options = options_from_args(args)
    progress = Progress(sys.stderr.isatty() and not args.no_progress)
    t0 = time.perf_counter()
    with connect(options) as client:
        link = dashboard_link(client)
        _echo(f"dask dashboard: {link}" if link else "dask dashboard: not available")
        report = getattr(args, "performance_report", None)
        ctx = contextlib.nullcontext()
        if report:
            from distributed import performance_report

            ctx = performance_report(filename=str(report))
        with ctx:
            result = match_backgrounds(
                source, output, cfg, client, skymap=skymap,
                resume=getattr(args, "resume", False),
                overwrite=args.overwrite if overwrite is None else overwrite,
                chunk_rows=getattr(args, "chunk_rows", None),
                progress=progress, echo=_echo,
            )
    result.timings["total"] = time.perf_counter() - t0
    if report:
        from .io.store import set_attrs

        set_attrs(result.store, performance_report=str(Path(report).resolve()))
        _echo(f"dask performance report: {report}")
    for stage, seconds in result.timings.items():
        _echo(f"{stage}: {seconds:.2f} s")
    return result


def cmd_match(args) -> int:
    if wants_butler(args):                  # INPUT is a Butler repository (docs/butler.md)
        return run_butler_match(args)
    cfg = _config(args)
    result = _run_match(args, args.input, args.output, cfg, skymap=args.skymap)
    _print_table(result.table, result.reference_visit)
    _echo(f"matched tract written to {result.store}")
    if result.unusable:
        _echo(f"{len(result.unusable)} warp(s) had no usable pixel and were written unchanged")
    return 0


def cmd_simulate(args) -> int:
    from .simulate import simulate

    t0 = time.perf_counter()
    sim = simulate(
        args.outdir, n_visits=args.visits, num_patches=tuple(args.patches),
        patch_inner=args.patch_size, patch_border=args.border, seed=args.seed,
        noise_sigma=args.noise, partial=not args.full, compress=args.compress,
    )
    _echo(f"simulated {len(sim.warps)} warps of {len(sim.visits)} visits in "
          f"{time.perf_counter() - t0:.1f} s: {sim.skymap}")
    _echo(f"wrote {Path(args.outdir) / 'manifest.csv'}, skymap.yaml, truth.json and warps/")
    return 0


def cmd_demo(args) -> int:

    from .config import MatchConfig
    from .simulate import simulate, store_offset_error

    outdir = Path(args.output)
    outdir.mkdir(parents=True, exist_ok=True)
    warps_dir = outdir / "tract"
    t0 = time.perf_counter()
    sim = simulate(warps_dir, n_visits=args.visits, num_patches=(3, 3), patch_inner=args.patch_size,
                   patch_border=20, seed=args.seed)
    _echo(f"demo: simulated {len(sim.warps)} warps of {len(sim.visits)} visits "
          f"({sim.skymap}) in {time.perf_counter() - t0:.1f} s")
    store = outdir / "demo.zarr"
    result = _run_match(args, warps_dir / "manifest.csv", store, MatchConfig(),
                        skymap=warps_dir / "skymap.yaml", overwrite=True)
    _print_table(result.table, result.reference_visit)
    err, rms = store_offset_error(sim, store)
    _echo(f"offset error against the injected truth: RMS {err:.4f} nJy = "
          f"{100 * err / rms:.2f}% of the injected offsets' RMS {rms:.3f} nJy")
    _echo(f"matched tract written to {store}")
    try:
        from .report import write_report

        path = write_report(store, outdir / "report.html")
        _echo(f"report: {path}")
    except ImportError:
        pass
    return 0


def cmd_inspect(args) -> int:
    import pandas as pd
    import xarray as xr

    from .io.store import STATUS_CODES, TABLE_FIELDS, open_store

    open_store(args.store)  # clear error when it is not a store
    ds = xr.open_zarr(args.store)
    present = ds.present.values
    done = ds.done.values & present
    complete = bool(ds.attrs.get("complete")) and bool(done.sum() == present.sum())
    _echo(f"store: {args.store} (bgdask {ds.attrs.get('bgdask_version')})")
    _echo(f"skymap: {ds.attrs.get('skymap')}")
    _echo(f"warps: {int(present.sum())} present, {int(done.sum())} done; "
          f"{int((ds.usable.values & done).sum())} with usable pixels")
    if ds.attrs.get("models_done"):
        names = {c: s for s, c in STATUS_CODES.items()}
        table = pd.DataFrame({f: ds[f].values for f in TABLE_FIELDS}, index=pd.Index(ds.visit.values, name="visit"))
        table["status"] = [names[int(s)] for s in table["status"]]
        _print_table(table, ds.attrs.get("reference_visit"))
    else:
        _echo("models: not computed yet")
    if complete:
        _echo("complete: yes")
        return 0
    _echo(f"complete: NO ({int(present.sum() - done.sum())} warps not done); "
          "finish it with: bgdask match INPUT -o STORE --resume")
    return 1


def cmd_export(args) -> int:
    import json as _json

    import xarray as xr

    from .io.fits import write_warp
    from .io.store import open_store
    from .io.warp import Warp

    open_store(args.store)
    ds = xr.open_zarr(args.store)
    if not ds.attrs.get("complete"):
        raise BgdaskError(f"{args.store}: the store is incomplete; finish it with --resume before exporting")
    planes = _json.loads(ds.attrs["mask_planes"])
    tract = _json.loads(ds.attrs["skymap"]).get("tract")
    out = Path(args.fits)
    out.mkdir(parents=True, exist_ok=True)
    present = ds.present.values
    x0, y0 = ds.x0.values, ds.y0.values
    width, height = ds.width.values, ds.height.values
    n = 0
    for vi, v in enumerate(ds.visit.values):
        for pi, p in enumerate(ds.patch.values):
            if not present[vi, pi]:
                continue
            h, w = int(height[pi]), int(width[pi])
            sel = dict(visit=vi, patch=pi)
            warp = Warp(
                image=ds.image[sel].values[:h, :w], mask=ds.mask[sel].values[:h, :w],
                variance=ds.variance[sel].values[:h, :w], x0=int(x0[pi]), y0=int(y0[pi]),
                mask_planes=planes, visit=int(v), patch=int(p), tract=tract,
            )
            write_warp(out / f"matched_{int(v)}_{int(p)}.fits", warp, overwrite=args.overwrite)
            n += 1
    _echo(f"wrote {n} matched warps to {out}")
    return 0


def cmd_plot(args) -> int:
    from .report import write_figures

    paths = write_figures(args.store, args.output or Path(args.store).with_suffix("").as_posix() + "_figures")
    for p in paths:
        _echo(str(p))
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    _echo(str(write_report(args.store, args.output)))
    return 0


def cmd_cluster(args) -> int:
    from .cluster import job_script, options_from_args

    if args.print_job_script:
        _echo(job_script(options_from_args(args)))
        return 0
    _echo("nothing to do: use --print-job-script")
    return 0


# -- parser -------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from .cluster import add_cluster_arguments

    parser = argparse.ArgumentParser(
        prog="bgdask",
        description="Match the sky backgrounds of warped exposures to a reference visit, on Dask.",
    )
    parser.add_argument("--version", action="version", version=f"bgdask {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("match", help="match a tract's warps and write the matched tract to Zarr",
                       description="Match the backgrounds of INPUT's warps and write OUT.zarr.")
    p.add_argument("input", help="directory of warp FITS files, manifest CSV, or Zarr store")
    p.add_argument("-o", "--output", required=True, help="output Zarr store (OUT.zarr)")
    p.add_argument("--ref-visit", type=int, default=None, help="reference visit (default: chosen by cost)")
    p.add_argument("--config", default=None, help="YAML or TOML file of MatchConfig fields")
    p.add_argument("--skymap", default=None, help="skymap YAML (default: inferred from the warps' boxes)")
    p.add_argument("--resume", action="store_true", help="finish an interrupted run of the same inputs")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--performance-report", default=None, metavar="FILE",
                   help="write Dask's performance report (HTML) to FILE")
    p.add_argument("--chunk-rows", type=int, default=None, help="rows per stage-C block and output chunk (default: dask config bgdask.chunk-rows, 1024)")
    add_butler_arguments(p)
    add_cluster_arguments(p)
    p.set_defaults(func=cmd_match)

    p = sub.add_parser("simulate", help="write a synthetic tract with known truth")
    p.add_argument("outdir")
    p.add_argument("--visits", type=int, default=4)
    p.add_argument("--patches", type=int, nargs=2, default=(3, 3), metavar=("NX", "NY"))
    p.add_argument("--patch-size", type=int, default=400, help="inner patch size in pixels")
    p.add_argument("--border", type=int, default=20, help="patch border in pixels")
    p.add_argument("--noise", type=float, default=5.0, help="pixel noise sigma (nJy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--full", action="store_true", help="every visit covers the whole tract")
    p.add_argument("--compress", action="store_true", help="write tile-compressed .fits.fz")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("demo", help="simulate a small tract and match it")
    p.add_argument("-o", "--output", default="bgdask-demo", help="directory for the demo (default ./bgdask-demo)")
    p.add_argument("--visits", type=int, default=4)
    p.add_argument("--patch-size", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    add_cluster_arguments(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("inspect", help="print a store's reference visit, table and completeness")
    p.add_argument("store")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("export", help="write a store's matched warps as afw-format FITS")
    p.add_argument("store")
    p.add_argument("--fits", required=True, metavar="DIR", help="output directory")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("plot", help="write PNG figures of a store")
    p.add_argument("store")
    p.add_argument("-o", "--output", default=None, metavar="DIR")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("report", help="write a self-contained HTML run report")
    p.add_argument("store")
    p.add_argument("-o", "--output", default="report.html")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("cluster", help="show how bgdask would start a cluster")
    p.add_argument("--print-job-script", action="store_true", help="print the SLURM/PBS job script")
    add_cluster_arguments(p)
    p.set_defaults(func=cmd_cluster)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    import distributed  # noqa: F401 - configures its loggers; quiet them below

    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("distributed", "dask_jobqueue")):
            logging.getLogger(name).setLevel(logging.WARNING if not args.verbose else logging.INFO)
    warnings.simplefilter("default", UserWarning)
    try:
        return args.func(args)
    except BgdaskError as exc:
        print(f"bgdask: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nbgdask: interrupted; workers were shut down. Finish the run with the same "
              "command and --resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
