"""The same match on the test SLURM and on a LocalCluster, side by side.

    python benchmarks/bench_slurm.py [--small] [--repeats N] [--jobs N]

Runs the command a user runs, ``bgdask match`` on the tract of
``bench_pipeline.py``, as N SLURM jobs of 1 core and 1 worker each
(``--cluster slurm --jobs N --cores 1``, dask-jobqueue on the single-node
SLURM of deploy/slurm, which must be up: ``bash deploy/slurm/start-slurm.sh``)
and as a LocalCluster of N workers x 1 thread, alternating, and prints both
wall times, their ratio, and whether the two stores are bitwise equal.
The difference is what a batch system adds: job submission, workers that
start in jobs and connect over TCP. The default N is 2: the test node has 2
CPUs, so with 4 jobs of 1 core two would wait in the queue for the whole run
(the run starts with the first worker and uses those that join).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
from bench_pipeline import FULL, SMALL


def run(manifest: Path, out: Path, where: list[str], logs: Path) -> float:
    cmd = [sys.executable, "-m", "bgdask.cli", "match", str(manifest), "-o", str(out), "--overwrite",
           "--no-progress", *where]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                         f"{proc.stderr[-3000:]}")
    return wall


def main() -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=2, help="alternating runs of each (best is kept)")
    p.add_argument("--jobs", type=int, default=2, help="SLURM jobs of 1 core (and local workers)")
    args = p.parse_args()
    common.banner("bgdask match: SLURM jobs against a LocalCluster")
    if shutil.which("sinfo") is None or subprocess.run(["sinfo"], capture_output=True).returncode:
        raise SystemExit("no SLURM here: start it with bash deploy/slurm/start-slurm.sh")
    tract = common.simulated_tract(args.workdir, **(SMALL if args.small else FULL))
    manifest = tract / "manifest.csv"
    work = Path(args.workdir) / "slurm-bench"
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    where = {
        "slurm": ["--cluster", "slurm", "--jobs", str(args.jobs), "--cores", "1", "--processes", "1",
                  "--memory", "4GB", "--walltime", "00:30:00", "--log-directory", str(logs),
                  "--local-directory", str(work / "scratch")],
        "local": ["--workers", str(args.jobs), "--threads-per-worker", "1"],
    }
    times: dict[str, list[float]] = {k: [] for k in where}
    for r in range(args.repeats):
        for kind, opts in where.items():
            wall = run(manifest, work / f"{kind}.zarr", opts, logs)
            times[kind].append(wall)
            print(f"run {r + 1}, {kind}: {wall:.1f} s")
            sys.stdout.flush()
    best = {k: min(v) for k, v in times.items()}
    for kind, v in times.items():
        print(f"{kind:5s}: best {best[kind]:.1f} s ({', '.join(f'{x:.1f}' for x in v)})")
    print(f"SLURM / local: {best['slurm'] / best['local']:.2f}x "
          f"(+{best['slurm'] - best['local']:.1f} s: submitting {args.jobs} jobs, workers starting in them)")
    from bgdask.testing import assert_stores_equal

    assert_stores_equal(work / "slurm.zarr", work / "local.zarr")
    print("stores bitwise equal: yes")


if __name__ == "__main__":
    main()
