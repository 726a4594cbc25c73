"""The ``bgdask`` command.

Every subcommand has a description, an example and help for each option
(``bgdask COMMAND --help``). Errors a user can cause print one line,
``bgdask: error: ...``, naming the file, warp or option at fault, and exit
with status 2; ``-v`` adds the traceback and the workers' logs. The exit
statuses are defined in :mod:`bgdask.errors` (``EXIT_STATUSES``);
``bgdask inspect --strict`` exits with ``EXIT_FLAGGED`` when a visit of
the store is flagged.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading
import time
import traceback
from pathlib import Path

from . import __version__
from ._butler_hook import add_butler_arguments, run_butler_match, wants_butler
from .errors import (EXIT_ERROR, EXIT_FLAGGED, EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, EXIT_STATUSES,
                     BgdaskError, DamagedStoreError)

log = logging.getLogger("bgdask")


def _echo(msg: str = "") -> None:
    print(msg, flush=True)


# -- progress -------------------------------------------------------------------

class Progress:
    """A one-line progress display on a terminal (stderr)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

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
    return _method_config(args, cfg)


#: ``bgdask match`` flags that set a configuration field of the global method
#: or the placement (flag dest -> field); given, they override the --config file.
METHOD_FLAGS = {"method": "method", "placement": "placement", "global_smoothness": "global_smoothness",
                "max_partners": "max_partners", "solver": "solver"}


def _method_config(args, cfg):
    changes = {f: getattr(args, d) for d, f in METHOD_FLAGS.items() if getattr(args, d, None) is not None}
    if not changes:
        return cfg
    from .config import MatchConfig

    return MatchConfig.from_dict({**cfg.to_dict(), **changes}, source="command line")


def add_method_arguments(p) -> None:
    """The flags of the matching method (docs/global.md), defaults from MatchConfig."""
    from .config import METHODS, PLACEMENT_CHOICES, MatchConfig
    from .kernels import SOLVERS

    d = MatchConfig()
    g = p.add_argument_group("method (docs/global.md; each overrides the field of --config)")
    g.add_argument("--method", choices=METHODS, default=None,
                   help=f"reference: every visit matched to the reference visit (Rubin's); global: one "
                        f"least-squares solve through every pair of overlapping visits (default: {d.method})")
    g.add_argument("--placement", choices=PLACEMENT_CHOICES, default=None,
                   help="where a superpixel's value sits: centre (Rubin's) or the centroid of its counted "
                        "pixels (default: auto, centroid for global, centre for reference)")
    g.add_argument("--global-smoothness", type=float, default=None, metavar="LAMBDA",
                   help=f"global method: weight of the smoothness prior (default: {d.global_smoothness:g})")
    g.add_argument("--max-partners", type=int, default=None, metavar="N",
                   help=f"global method: most partners a visit keeps (default: {d.max_partners})")
    g.add_argument("--solver", choices=SOLVERS, default=None,
                   help="global method: sparse solver; auto takes CHOLMOD (pip install 'bgdask[cholmod]') "
                        "when installed, else SuperLU (default: auto)")


def _print_table(table, reference) -> None:
    import pandas as pd

    from .table import shown_columns

    _echo(f"reference visit: {reference}")
    with pd.option_context("display.width", 160, "display.max_columns", 30, "display.max_rows", 500,
                           "display.float_format", "{:.4g}".format):
        _echo(table[shown_columns(table)].to_string())


def _print_global(pairs, info) -> None:
    """The global method's pair table and solve figures (nothing for the reference method)."""
    if pairs is None:
        return
    import pandas as pd

    _echo(f"pairs: {len(pairs)} (u - v; residual RMS and the RMS expected from the noise, nJy)")
    with pd.option_context("display.width", 160, "display.max_rows", 500, "display.float_format", "{:.4g}".format):
        _echo(pairs.to_string(index=False))
    if info:
        _echo(f"solve: {info['n_unknowns']} unknowns, {info['n_data_rows']} pair equations, "
              f"{info['nnz_normal']} non-zeros, factor {info['nnz_factor']} non-zeros "
              f"({info['factor_bytes'] / 1e6:.1f} MB), {info['solver']}, {info['refinements']} refinement "
              f"step(s), residual {info['residual']:.1e}")


def _print_flagged(table, config) -> list[int]:
    """Say which visits are flagged; returns them."""
    import numpy as np

    from .table import flagged_visits

    flagged = flagged_visits(table)
    if not np.isfinite(np.asarray(table["match_ratio"], dtype=float)).any():
        _echo("flagged: not measured (stage C has not finished)")
    elif flagged:
        _echo(f"flagged: {len(flagged)} visit(s) with match_ratio > max_match_ratio = {config.max_match_ratio:g}: "
              + ", ".join(map(str, flagged)))
    else:
        _echo(f"flagged: none (every match_ratio <= max_match_ratio = {config.max_match_ratio:g})")
    return flagged


def _run_match(args, source, output, cfg, skymap=None, overwrite=None, warming=None):
    """Check everything that needs no cluster, start the cluster, run
    (the kernels compile meanwhile in ``warming``, started here if None)."""
    from .cluster import KernelWarmUp

    if warming is None:
        with KernelWarmUp() as warming:
            return _run_match(args, source, output, cfg, skymap, overwrite, warming)
    from .cluster import options_from_args
    from .pipeline import prepare

    options = options_from_args(args)
    t0 = time.perf_counter()
    prepared = prepare(source, output, cfg, skymap=skymap, resume=getattr(args, "resume", False),
                       overwrite=args.overwrite if overwrite is None else overwrite,
                       chunk_rows=getattr(args, "chunk_rows", None),
                       verify=not getattr(args, "no_verify", False), echo=_echo)
    # the inputs are fine and the output is ours (locked): now load what
    # computing needs, and start the cluster
    try:
        result = _compute(args, options, prepared, warming)
    finally:
        prepared.release()  # also when the cluster never started
    result.timings["total"] = time.perf_counter() - t0
    report = getattr(args, "performance_report", None)
    if report:
        _echo(f"dask performance report: {report}")
    _echo("times: " + ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in result.timings.items()))
    return result


@contextlib.contextmanager
def _ctrl_c_spares_workers(options):
    """Start a local cluster with SIGINT blocked in this thread: the threads
    the cluster starts inherit the mask, and so do the worker processes they
    spawn (now and when a worker is restarted), so a Ctrl-C, which reaches
    the whole process group, never interrupts a worker half started (its
    traceback used to precede bgdask's one-line message). This process
    receives a Ctrl-C pressed meanwhile as soon as the cluster is up, and
    shuts the cluster down."""
    import signal

    if options.effective_kind != "local" or threading.current_thread() is not threading.main_thread():
        yield
        return
    # multiprocessing unblocks SIGINT in the thread that starts its resource
    # tracker (once per process): start it first, with SIGINT unblocked
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _compute(args, options, prepared, warming):
    from .cluster import connect, dashboard_line
    from .pipeline import run

    _quiet_distributed(args.verbose)
    with contextlib.ExitStack() as stack:
        with _ctrl_c_spares_workers(options):
            client = stack.enter_context(connect(options))
        if not args.verbose:
            from ._worker_preload import QuietExpectedErrors

            client.register_plugin(QuietExpectedErrors())
        _echo(dashboard_line(client))
        # the workers load the kernels from numba's cache rather than all compile them at once
        warming.wait(_echo)
        report = getattr(args, "performance_report", None)
        ctx = contextlib.nullcontext()
        if report:
            from distributed import performance_report

            ctx = performance_report(filename=str(report))
        with ctx:
            progress = Progress(sys.stderr.isatty() and not args.no_progress)
            attrs = {"performance_report": str(Path(report).resolve())} if report else {}
            return run(prepared, client, progress=progress, echo=_echo, attrs=attrs)


def cmd_match(args) -> int:
    if wants_butler(args):                  # INPUT is a Butler repository (docs/butler.md)
        return run_butler_match(args)
    result = _run_match(args, args.input, args.output, _config(args), skymap=args.skymap)
    _print_table(result.table, result.reference_visit)
    _print_global(result.pairs, result.solve_info)
    _print_flagged(result.table, result.config)
    _echo(f"matched tract written to {result.store}")
    if result.unusable:
        _echo(f"{len(result.unusable)} warp(s) had no usable pixel and were written unchanged")
    return EXIT_OK


def cmd_simulate(args) -> int:
    from .simulate import simulate

    t0 = time.perf_counter()
    sim = simulate(
        args.outdir, n_visits=args.visits, num_patches=tuple(args.patches),
        patch_inner=args.patch_size, patch_border=args.border, seed=args.seed,
        noise_sigma=args.noise, partial=not args.full, compress=args.compress,
        layout=args.layout, gradient_scale=args.gradient_scale, curvature_scale=args.curvature_scale,
        chip_pitch=args.chip_pitch, gap_width=args.gap_width, step_visit=args.step_visit, step_amp=args.step_amp,
    )
    _echo(f"simulated {len(sim.warps)} warps of {len(sim.visits)} visits in "
          f"{time.perf_counter() - t0:.1f} s: {sim.skymap}")
    _echo(f"wrote {Path(args.outdir) / 'manifest.csv'}, skymap.yaml, truth.json and warps/")
    return EXIT_OK


def cmd_demo(args) -> int:
    from .cluster import KernelWarmUp
    from .config import MatchConfig
    from .report import write_report
    from .simulate import simulate, store_offset_error

    outdir = Path(args.output)
    outdir.mkdir(parents=True, exist_ok=True)
    warps_dir = outdir / "tract"
    with KernelWarmUp() as warming:  # compiles while the tract is simulated
        t0 = time.perf_counter()
        sim = simulate(warps_dir, n_visits=args.visits, num_patches=(3, 3), patch_inner=args.patch_size,
                       patch_border=20, seed=args.seed)
        _echo(f"demo: simulated {len(sim.warps)} warps of {len(sim.visits)} visits "
              f"({sim.skymap}) in {time.perf_counter() - t0:.1f} s")
        store = outdir / "demo.zarr"
        args.overwrite = True
        result = _run_match(args, warps_dir / "manifest.csv", store, MatchConfig(),
                            skymap=warps_dir / "skymap.yaml", warming=warming)
    _print_table(result.table, result.reference_visit)
    _print_flagged(result.table, result.config)
    err, rms = store_offset_error(sim, store)
    _echo(f"offset error against the injected truth: RMS {err:.4f} nJy = "
          f"{100 * err / rms:.2f}% of the injected offsets' RMS {rms:.3f} nJy")
    _echo(f"matched tract written to {store}")
    _echo(f"report: {write_report(store, outdir / 'report.html')}")
    return EXIT_OK


def cmd_inspect(args) -> int:
    from .io.store import Store

    try:
        return _inspect(args, Store.open(args.store))
    except DamagedStoreError as exc:  # a store, damaged: inspect's answer is "not whole"
        print(f"bgdask: error: {exc.cli_message()}", file=sys.stderr)
        return EXIT_INCOMPLETE


def _inspect(args, st) -> int:
    present = st.present
    done = st.done() & present
    complete = st.complete and bool(done.sum() == present.sum())
    _echo(f"store: {args.store} (bgdask {st.attrs.get('bgdask_version')})")
    _echo(f"skymap: {st.skymap}")
    _echo(f"warps: {int(present.sum())} present, {int(done.sum())} done; "
          f"{int((st.usable & done).sum())} with usable pixels")
    flagged = []
    if st.models_done:
        cfg = st.config
        if cfg is not None and cfg.method != "reference":
            _echo(f"method: {cfg.method} (placement {cfg.value_placement})")
        table = st.table()
        _print_table(table, st.reference_visit)
        _print_global(st.pairs(), st.solve_info)
        flagged = _print_flagged(table, cfg)
    else:
        _echo("models: not computed yet")
    damaged = {}
    if args.verify:
        t0 = time.perf_counter()
        damaged = st.verify()
        for (v, p), why in sorted(damaged.items()):
            _echo(f"damaged: warp (visit {v}, patch {p}): {why}")
        _echo(f"verified: {int(done.sum())} done warps read back in {time.perf_counter() - t0:.1f} s, "
              f"{len(damaged)} damaged")
    if damaged:
        names = ", ".join(f"(visit {v}, patch {p})" for v, p in sorted(damaged))
        _echo(f"complete: NO ({len(damaged)} damaged warps: {names}); "
              "repair them with: bgdask match INPUT -o STORE --resume")
        return EXIT_INCOMPLETE
    if complete:
        _echo("complete: yes" + (" (verified)" if args.verify else ""))
        return EXIT_FLAGGED if args.strict and flagged else EXIT_OK
    _echo(f"complete: NO ({int(present.sum() - done.sum())} warps not done); "
          "finish it with: bgdask match INPUT -o STORE --resume")
    return EXIT_INCOMPLETE


def cmd_export(args) -> int:
    from .io.fits import write_warp
    from .io.store import Store
    from .io.warp import Warp

    st = Store.open(args.store)
    if not st.complete:
        raise BgdaskError(f"{args.store}: the store is incomplete",
                          cli="finish it with bgdask match INPUT -o STORE --resume before exporting")
    out = Path(args.fits)
    out.mkdir(parents=True, exist_ok=True)
    tract = st.skymap.tract if st.skymap else None
    n = 0
    st.check_models()
    for v, p in st.keys():
        box = st.boxes[p]
        planes = st.read_verified(v, p)  # a damaged warp is an error naming it, not NaN in the output
        warp = Warp(planes["image"], planes["mask"], planes["variance"], x0=box.x0,
                    y0=box.y0, mask_planes=st.mask_planes, visit=v, patch=p, tract=tract)
        write_warp(out / f"matched_{v}_{p}.fits", warp, overwrite=args.overwrite)
        n += 1
    _echo(f"wrote {n} matched warps to {out}")
    return EXIT_OK


def _beside(store: str, suffix: str) -> Path:
    """A path next to the store: ``out.zarr`` -> ``out<suffix>``."""
    p = Path(store)
    return p.with_name(p.name.removesuffix(".zarr") + suffix)


def cmd_plot(args) -> int:
    from .report import write_figures

    for p in write_figures(args.store, args.output or _beside(args.store, "_figures"), visits=args.visit):
        _echo(str(p))
    return EXIT_OK


def cmd_report(args) -> int:
    from .report import write_report

    _echo(str(write_report(args.store, args.output or _beside(args.store, "_report.html"), visits=args.visit)))
    return EXIT_OK


def cmd_cluster(args) -> int:
    from .cluster import job_script, options_from_args

    _echo(job_script(options_from_args(args)))
    return EXIT_OK


# -- parser -------------------------------------------------------------------------

class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option's help; descriptions and examples kept as written."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.help is None or "%(default)" in action.help:
            return action.help
        return super()._get_help_string(action)


def _command(sub, name: str, summary: str, description: str, example: str, func):
    p = sub.add_parser(name, help=summary, description=f"{description}\n\nexample:\n  {example}",
                       formatter_class=_Formatter)
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    from .cluster import add_cluster_arguments

    parser = argparse.ArgumentParser(
        prog="bgdask", formatter_class=_Formatter,
        description="Match the sky backgrounds of warped exposures to a reference visit, on Dask.",
        epilog="Run `bgdask COMMAND --help` for a command's options and an example. "
               "Start with `bgdask demo`. Exit status: "
               + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_STATUSES.items()) + ".",
    )
    parser.add_argument("--version", action="version", version=f"bgdask {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show log messages, the workers' logs and tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _command(sub, "match", "match a tract's warps and write the matched tract to a Zarr store",
                 "Match the backgrounds of INPUT's warps to a reference visit and write the matched tract\n"
                 "to OUT.zarr. The inputs are checked before any worker starts.",
                 "bgdask match tract/manifest.csv -o out.zarr --workers 2", cmd_match)
    p.add_argument("input", help="a directory of warp FITS files (searched recursively), a manifest CSV "
                                 "(visit,patch,path[,tract]), or a bgdask store")
    p.add_argument("-o", "--output", required=True, metavar="OUT.zarr", help="the output Zarr store")
    p.add_argument("--ref-visit", type=int, default=None, metavar="V",
                   help="the reference visit (default: chosen by the cost function)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="YAML or TOML file of configuration fields (docs/configuration.md)")
    p.add_argument("--skymap", default=None, metavar="FILE",
                   help="skymap YAML: patch_inner, patch_border, num_patches (default: inferred from the boxes)")
    p.add_argument("--resume", action="store_true",
                   help="finish an interrupted run of the same inputs; done warps are first checked against "
                        "their checksums and damaged ones written again")
    p.add_argument("--no-verify", action="store_true",
                   help="with --resume: trust the done warps instead of reading them back")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store at OUT.zarr")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--performance-report", default=None, metavar="FILE",
                   help="write Dask's performance report (HTML) to FILE")
    p.add_argument("--chunk-rows", type=int, default=None, metavar="N",
                   help="rows per output chunk and per block a stage-C task holds in memory "
                        "(default: dask config bgdask.chunk-rows, 1024)")
    add_method_arguments(p)
    add_butler_arguments(p)
    add_cluster_arguments(p)

    p = _command(sub, "simulate", "write a synthetic tract with known truth",
                 "Simulate the warps of several visits over a tract (partial footprints, chip gaps, stars,\n"
                 "bad columns, per-visit skies) and write them as afw-format FITS with manifest.csv,\n"
                 "skymap.yaml and truth.json (the injected skies).",
                 "bgdask simulate tract/ --visits 6 --patches 3 3", cmd_simulate)
    p.add_argument("outdir", help="directory to write (created; files in it are replaced)")
    p.add_argument("--visits", type=int, default=4, metavar="N", help="number of visits")
    p.add_argument("--patches", type=int, nargs=2, default=(3, 3), metavar=("NX", "NY"),
                   help="patches along x and y")
    p.add_argument("--patch-size", type=int, default=400, metavar="PIXELS", help="inner patch size")
    p.add_argument("--border", type=int, default=20, metavar="PIXELS", help="patch border")
    p.add_argument("--noise", type=float, default=5.0, metavar="NJY", help="pixel noise sigma (nJy)")
    p.add_argument("--seed", type=int, default=0, help="random seed (equal seeds give equal files)")
    p.add_argument("--full", action="store_true", help="every visit covers the whole tract")
    p.add_argument("--compress", action="store_true", help="write tile-compressed .fits.fz files")
    _simulate_test_arguments(p)

    p = _command(sub, "demo", "simulate a small tract and match it",
                 "Simulate 4 visits on 3 x 3 patches, match them on a local cluster, print the error\n"
                 "against the injected truth, and write an HTML report.",
                 "bgdask demo -o bgdask-demo", cmd_demo)
    p.add_argument("-o", "--output", default="bgdask-demo", metavar="DIR",
                   help="directory for the tract, the store and the report")
    p.add_argument("--visits", type=int, default=4, metavar="N", help="number of visits")
    p.add_argument("--patch-size", type=int, default=400, metavar="PIXELS", help="inner patch size")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_cluster_arguments(p)

    p = _command(sub, "inspect", "print a store's reference visit, table, flagged visits and completeness",
                 "Print what a store holds: geometry, warps present and done, the reference visit, the\n"
                 "per-visit table and the flagged visits (match_ratio above max_match_ratio).\n"
                 "Exit status: 0 when the store is complete, 1 when it is not (or is damaged), 2 on an\n"
                 f"error; with --strict, {EXIT_FLAGGED} when it is complete and a visit is flagged.",
                 "bgdask inspect out.zarr --verify --strict", cmd_inspect)
    p.add_argument("store", help="a bgdask store (OUT.zarr)")
    p.add_argument("--verify", action="store_true",
                   help="read every chunk of every done warp back and check it against the checksum "
                        "recorded when it was written; name the damaged warps")
    p.add_argument("--strict", action="store_true",
                   help=f"exit with status {EXIT_FLAGGED} when a visit is flagged")

    p = _command(sub, "export", "write a store's matched warps as afw-format FITS",
                 "Write every matched warp of a complete store as an afw-format FITS file\n"
                 "(matched_VISIT_PATCH.fits), with its mask plane names and Butler cards.",
                 "bgdask export out.zarr --fits matched/", cmd_export)
    p.add_argument("store", help="a complete bgdask store")
    p.add_argument("--fits", required=True, metavar="DIR", help="output directory (created)")
    p.add_argument("--overwrite", action="store_true", help="replace files that exist in DIR")

    p = _command(sub, "plot", "write PNG figures of a store",
                 "Write the figures of a store as PNG files: the reference choice (when it was chosen),\n"
                 "the seam maps, the quality per visit, every visit's difference model on one scale,\n"
                 "and the difference model and mosaics of each flagged visit and of each --visit.",
                 "bgdask plot out.zarr -o figures/ --visit 1001", cmd_plot)
    p.add_argument("store", help="a bgdask store")
    p.add_argument("-o", "--output", default=None, metavar="DIR",
                   help="output directory (default: beside the store, STORE_figures)")
    p.add_argument("--visit", type=int, action="append", metavar="V",
                   help="also the detail figures of visit V (repeat for more)")

    p = _command(sub, "report", "write a self-contained HTML run report",
                 "Write one HTML page (no external resource): a summary first (the reference, the flagged\n"
                 "visits, a sortable per-visit table, the seam maps, every visit's difference model on one\n"
                 "scale), the details of each flagged visit and of each --visit, then the configuration,\n"
                 "geometry, completeness and timings.",
                 "bgdask report out.zarr -o report.html --visit 1001", cmd_report)
    p.add_argument("store", help="a bgdask store")
    p.add_argument("-o", "--output", default=None, metavar="FILE",
                   help="output HTML file (default: beside the store, STORE_report.html)")
    p.add_argument("--visit", type=int, action="append", metavar="V",
                   help="also the details (difference model, mosaics) of visit V (repeat for more)")

    p = _command(sub, "cluster", "print the SLURM or PBS job script bgdask would submit",
                 "Print the job script dask-jobqueue would submit for these cluster options\n"
                 "(site defaults from ~/.config/dask/jobqueue.yaml).",
                 "bgdask cluster --print-job-script --cluster slurm --cores 8 --memory 12GB", cmd_cluster)
    p.add_argument("--print-job-script", action="store_true", help="print the job script (what this command does)")
    add_cluster_arguments(p)
    return parser


def _simulate_test_arguments(p) -> None:
    """``bgdask simulate``'s options for testing the matching methods (bgdask.simulate.make_tract)."""
    from .simulate import GAP_WIDTH, LAYOUTS

    g = p.add_argument_group("harder tracts (testing the matching methods; docs/global.md)")
    g.add_argument("--layout", choices=LAYOUTS, default="random",
                   help="chain: footprints in a chain along the tract, the first visit sharing no pixel "
                        "with the third and beyond")
    g.add_argument("--gradient-scale", type=float, default=1.0, metavar="F",
                   help="multiply every sky's gradients (5: up to 40 nJy across the tract)")
    g.add_argument("--curvature-scale", type=float, default=1.0, metavar="F",
                   help="multiply every sky's curvatures")
    g.add_argument("--chip-pitch", type=float, default=None, metavar="PIXELS",
                   help="chip size of the focal planes (default: a quarter of the tract's smaller side)")
    g.add_argument("--gap-width", type=float, default=GAP_WIDTH, metavar="PIXELS", help="chip gap width")
    g.add_argument("--step-visit", type=int, default=None, metavar="V",
                   help="give visit V a sharp step in its sky (a structure no smooth model follows)")
    g.add_argument("--step-amp", type=float, default=5.0, metavar="NJY", help="the step's height (nJy)")


def _parse(parser: argparse.ArgumentParser, argv) -> argparse.Namespace:
    """Parse; an unknown option is reported with its subcommand's usage."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        command = sub.choices.get(getattr(args, "command", None)) if sub else None
        (command or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _configure_logging(verbose: bool) -> None:
    """bgdask's log messages (INFO) only with -v."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO if verbose else logging.WARNING)


def _quiet_distributed(verbose: bool) -> None:
    """Dask's own log messages at WARNING unless -v (distributed sets its
    levels when imported: import it first)."""
    import distributed  # noqa: F401

    for name in ("distributed", "dask_jobqueue"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:  # a slow worker shutdown after Ctrl-C or a failed run is not news
        logging.getLogger("distributed.nanny").addFilter(_drop_slow_shutdown)


def _drop_slow_shutdown(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Worker process still alive after")


def main(argv: list[str] | None = None) -> int:
    import warnings

    parser = build_parser()
    args = _parse(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    _configure_logging(args.verbose)
    warnings.simplefilter("default", UserWarning)
    try:
        return args.func(args)
    except BgdaskError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"bgdask: error: {exc.cli_message()}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\nbgdask: interrupted; workers were shut down. Finish the run with the same "
              "command and --resume.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
