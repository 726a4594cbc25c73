"""Match one tract on a SLURM cluster: Dask workers run as SLURM jobs (dask-jobqueue).

Run it on a login node (the Dask scheduler lives in this process; the jobs'
workers connect back to it):

    python workflows/slurm_tract.py /data/tract9813/warps out/tract9813.zarr --jobs 8
    python workflows/slurm_tract.py warps/ out.zarr --jobs 4 --cores 16 --memory 24GB --queue normal
    python workflows/slurm_tract.py warps/ out.zarr --print-job-script     # show the batch script, submit nothing
    python workflows/slurm_tract.py warps/ out.zarr --resume               # finish an interrupted tract

Needs dask-jobqueue (pip install 'bgdask[hpc]'). Every job option not given here
comes from your dask-jobqueue configuration (~/.config/dask/jobqueue.yaml; a
commented one for bgdask is deploy/jobqueue-slurm.yaml), so a site keeps its
partition, account, interface and prologue (module load ..., venv activation)
in one place. Without any configuration the sizing below is used.

Job sizing for Rubin warps (4200 x 4200 pixels, patch 4000 + 2 x 100 border):

* one plane is 4200 * 4200 * 4 bytes = 70.6 MB; image + mask + variance = 212 MB;
* measured peaks of one task above its inputs (scripted in docs/how-it-works.md):
  stage A (statistics of one warp) ~90 MB on top of image + mask (141 MB);
  stage B (reference - visit on one patch) ~320 MB on top of two images and two
  masks (282 MB), so ~0.6 GB; stage C (1024 rows of one warp) ~130 MB + 52 MB read;
* a Dask worker process itself takes ~150-250 MB, and results wait in memory
  until written, so budget **about 1.5 GB per worker thread**:
  memory per job = cores x 1.5 GB (8 cores -> 12 GB);
* a few threads per process (processes = cores / 4): the kernels release the GIL
  (NumPy / Numba), and fewer processes mean fewer inter-worker transfers;
* jobs: a tract of 100 patches x 200 visits is 20,000 warps, ~4 TB of input
  for stage C. I/O dominates, so 4-8 jobs of 8 cores usually saturate a
  parallel file system; more jobs help only if it keeps up. --adapt MIN MAX lets
  SLURM hand out jobs as they free up;
* walltime: stage B and C read every warp once or twice; 2 hours is generous for
  a tract on 8 x 8 cores. A run cut by the walltime finishes with --resume (done
  warps are not redone).

Networking: the scheduler binds all interfaces by default so compute nodes can
reach it; pass --host with the login node's address on the cluster network (or
set jobqueue.slurm.interface / scheduler-options). --host 127.0.0.1 binds the
scheduler, the workers and the dashboard to loopback: only for a single-node
SLURM such as deploy/slurm/start-slurm.sh (tests, CI).
"""

from __future__ import annotations

import argparse
import sys
import time

#: Sizing used when neither the command line nor jobqueue.yaml sets it (see above).
DEFAULT_CORES = 8
DEFAULT_PROCESSES = 2
GB_PER_THREAD = 1.5
DEFAULT_WALLTIME = "02:00:00"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("input", help="directory of warp FITS files, manifest CSV, or Zarr store")
    p.add_argument("output", help="output Zarr store (on a file system the compute nodes share)")
    g = p.add_argument_group("SLURM jobs (unset: jobqueue.yaml, else the sizing above)")
    g.add_argument("--jobs", type=int, default=1, help="jobs to submit (default 1)")
    g.add_argument("--adapt", type=int, nargs=2, metavar=("MIN", "MAX"), default=None,
                   help="scale between MIN and MAX jobs instead of a fixed --jobs")
    g.add_argument("--cores", type=int, default=None, help=f"cores (threads) per job (default {DEFAULT_CORES})")
    g.add_argument("--processes", type=int, default=None,
                   help=f"Dask worker processes per job (default {DEFAULT_PROCESSES})")
    g.add_argument("--memory", default=None, help=f"memory per job (default cores x {GB_PER_THREAD} GB)")
    g.add_argument("--walltime", default=None, help=f"per job (default {DEFAULT_WALLTIME})")
    g.add_argument("--queue", default=None, help="partition")
    g.add_argument("--account", default=None, help="account to charge")
    g.add_argument("--job-extra-directive", action="append", default=[], metavar="LINE",
                   help="extra #SBATCH directive, e.g. --job-extra-directive=--constraint=cpu (repeatable)")
    g.add_argument("--local-directory", default=None, help="node-local scratch for worker spilling")
    g.add_argument("--log-directory", default=None, help="where the jobs' stdout/stderr go")
    g.add_argument("--host", default=None,
                   help="address the scheduler binds (127.0.0.1: single-node SLURM only)")
    g.add_argument("--worker-timeout", type=float, default=None,
                   help="seconds to wait for the first worker (default 600: jobs may queue)")
    g.add_argument("--print-job-script", action="store_true",
                   help="print the batch script one job would run, submit nothing, and exit")
    m = p.add_argument_group("matching")
    m.add_argument("--config", default=None, help="YAML or TOML file of MatchConfig fields")
    m.add_argument("--ref-visit", type=int, default=None)
    m.add_argument("--skymap", default=None, help="skymap YAML (default: inferred from the warps)")
    m.add_argument("--resume", action="store_true", help="finish an interrupted run (e.g. cut by walltime)")
    m.add_argument("--overwrite", action="store_true")
    m.add_argument("--report", default=None, metavar="HTML", help="also write the run report here")
    return p.parse_args(argv)


def cluster_options(args):
    """ClusterOptions from the arguments, falling back on jobqueue.yaml, then on the sizing above."""
    import dask.config

    from bgdask.cluster import ClusterOptions

    def configured(key):
        return dask.config.get(f"jobqueue.slurm.{key}", None)

    cores = args.cores or configured("cores") or DEFAULT_CORES
    processes = args.processes or (None if configured("processes") else min(DEFAULT_PROCESSES, cores))
    memory = args.memory or (None if configured("memory") else f"{cores * GB_PER_THREAD:g}GB")
    walltime = args.walltime or (None if configured("walltime") else DEFAULT_WALLTIME)
    return ClusterOptions(
        kind="slurm",
        jobs=args.jobs,
        adapt=tuple(args.adapt) if args.adapt else None,
        cores=cores,
        processes=processes,
        memory=memory,
        walltime=walltime,
        queue=args.queue,
        account=args.account,
        job_extra_directives=args.job_extra_directive,
        local_directory=args.local_directory,
        log_directory=args.log_directory,
        host=args.host,
        worker_timeout=args.worker_timeout,
    )


def progress(label: str, n: int, total: int) -> None:
    if n == total or n % max(1, total // 10) == 0:
        print(f"  {label}: {n}/{total}", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    from bgdask.cluster import connect, dashboard_line, job_script

    options = cluster_options(args)
    if args.print_job_script:
        print(job_script(options))
        return 0

    import bgdask

    config = bgdask.MatchConfig.from_file(args.config) if args.config else bgdask.MatchConfig()
    if args.ref_visit is not None:
        config = config.replace(ref_visit=args.ref_visit)
    t0 = time.perf_counter()
    # connect() submits the jobs, waits for the first worker, and cancels the jobs on exit
    # (also on errors and Ctrl-C).
    with connect(options) as client:
        print(dashboard_line(client), flush=True)
        print(f"scheduler: {client.scheduler.address}; workers so far: "
              f"{len(client.scheduler_info()['workers'])}", flush=True)
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
    except BgdaskError as exc:  # bad input, store, or jobs that cannot start: one clear message
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
