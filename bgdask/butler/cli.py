"""``bgdask match REPO -o OUT --collections C1,C2 --where "..." [--output-run RUN]``."""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback

from ..errors import BgdaskError, InputError
from ._query import DEFAULT_DATASET_TYPE, find_warp_groups, open_butler
from ._run import GroupProgress, match_groups, plan_stores
from ._sink import check_output_run

__all__ = ["cmd_match_butler"]


_LOCK = threading.Lock()


def _echo(msg: str = "") -> None:
    with _LOCK:                      # groups echo from their threads: whole lines only
        sys.stdout.write(msg + "\n")
        sys.stdout.flush()


def _config(args):
    from ..config import MatchConfig

    cfg = MatchConfig.from_file(args.config) if getattr(args, "config", None) else MatchConfig()
    if getattr(args, "ref_visit", None) is not None:
        cfg = cfg.replace(ref_visit=args.ref_visit)
    from ..cli import _method_config

    return _method_config(args, cfg)   # --method, --placement, ... (bgdask match's flags)


def _print_table(table, reference) -> None:
    import pandas as pd

    _echo(f"reference visit: {reference}")
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.max_rows", 500,
                           "display.float_format", "{:.4g}".format):
        _echo(table.to_string())


def cmd_match_butler(args) -> int:
    """Query the repository, match each (tract, band) group on one cluster,
    put the outputs when --output-run is given. 0: all groups done; 1: some
    groups failed (the others finished); 2 (BgdaskError): nothing was done."""
    from ..cluster import KernelWarmUp

    if getattr(args, "resume", False) and getattr(args, "overwrite", False):
        raise InputError("--resume and --overwrite exclude each other")
    if not getattr(args, "verbose", False):
        logging.getLogger("lsst").setLevel(logging.WARNING)   # the Butler's per-call INFO lines
    cfg = _config(args)
    repo = args.input
    if not args.collections:
        raise InputError(f"{repo}: a Butler repository: give the collections to search with --collections C1[,C2]")
    dataset_type = args.dataset_type or DEFAULT_DATASET_TYPE
    t0 = time.perf_counter()
    with KernelWarmUp() as warming:  # compiles while the repository is queried and the cluster starts
        return _match_repo(args, cfg, repo, dataset_type, t0, warming)


def _match_repo(args, cfg, repo, dataset_type, t0, warming) -> int:
    from ..cluster import connect, dashboard_line, options_from_args

    butler = open_butler(repo, writeable=bool(args.output_run))
    if args.output_run:
        check_output_run(butler, args.output_run)
    groups = find_warp_groups(repo, args.collections, args.where or "", dataset_type, butler=butler)
    plan_stores(groups, args.output, resume=getattr(args, "resume", False),
                overwrite=getattr(args, "overwrite", False))
    for g in groups:
        g.catalog()          # headers of every file: bad input stops here, before any write
    _echo(f"butler: {sum(len(g.refs) for g in groups)} {dataset_type} datasets in "
          f"{len(groups)} group(s) ({'; '.join(g.label for g in groups)}), "
          f"queried in {time.perf_counter() - t0:.2f} s")
    progress = GroupProgress(sys.stderr.isatty() and not getattr(args, "no_progress", False))
    with connect(options_from_args(args)) as client:
        _echo(dashboard_line(client))
        warming.wait(_echo)
        results = match_groups(
            groups, args.output, cfg, client, butler=butler, output_run=args.output_run,
            skymap=getattr(args, "skymap", None), resume=getattr(args, "resume", False),
            overwrite=getattr(args, "overwrite", False), chunk_rows=getattr(args, "chunk_rows", None),
            progress=progress, echo=_echo,
        )
    failed = []
    for res in results:
        if res.ok:
            if len(results) > 1:
                _echo(f"== {res.group.label}")
            _print_table(res.result.table, res.result.reference_visit)
            _echo(f"matched tract written to {res.store}")
        else:
            failed.append(res)
    _echo(f"total: {time.perf_counter() - t0:.2f} s")
    for res in failed:
        if not isinstance(res.error, BgdaskError):
            traceback.print_exception(res.error, file=sys.stderr)
        print(f"bgdask: error: {res.group.label}: {res.error}", file=sys.stderr)
    if failed:
        print(f"bgdask: {len(failed)} of {len(results)} groups failed; the others were written",
              file=sys.stderr)
        return 1
    return 0
