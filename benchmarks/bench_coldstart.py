"""Cold start: the first `bgdask demo` after an install against the second.

    python benchmarks/bench_coldstart.py [--repeats N] [--baseline REV]

The numba kernels of bgdask are compiled on first use and cached on disk.
"After an install" is reproduced with an empty numba cache (NUMBA_CACHE_DIR
set to a new directory, inherited by the workers) and an empty matplotlib
cache (MPLCONFIGDIR, its font list); the second run finds the caches the
first one wrote. Each pair runs side by side (cold, then warm),
and the script prints both wall times and their difference. The client
compiles the kernels once, while the cluster starts, so that the workers only
load them (goal: cold at most 20 s slower than warm).

With ``--baseline REV`` each repeat first runs the pair with the bgdask of
revision REV (a temporary git worktree), then with this tree's, so both
differences come from the same minutes of this shared machine.
"""

from __future__ import annotations

import contextlib
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


ROOT = Path(__file__).resolve().parents[1]


def demo(out: Path, cache: Path, tree: Path) -> tuple[float, bool]:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache / "numba"), MPLCONFIGDIR=str(cache / "matplotlib"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bgdask.cli", "demo", "-o", str(out), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"bgdask demo failed:\n{proc.stdout}\n{proc.stderr}")
    return wall, NOTE in proc.stdout


def pair(tree: Path) -> tuple[float, float, bool, bool]:
    """A cold demo (new empty numba and matplotlib caches), then a warm one (the caches it wrote)."""
    with tempfile.TemporaryDirectory(prefix="bgdask-caches-") as cache, \
            tempfile.TemporaryDirectory(prefix="bgdask-cold-") as work:
        cold, said_cold = demo(Path(work) / "cold", Path(cache), tree)
        warm, said_warm = demo(Path(work) / "warm", Path(cache), tree)
    return cold, warm, said_cold, said_warm


@contextlib.contextmanager
def worktree(rev: str):
    with tempfile.TemporaryDirectory(prefix="bgdask-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True,
                       capture_output=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=1, help="cold/warm pairs (each with new empty caches)")
    p.add_argument("--baseline", default=None, metavar="REV", help="also measure the bgdask of this git revision")
    args = p.parse_args(argv)
    common.banner("bench_coldstart: first `bgdask demo` (empty caches) against the second")
    with worktree(args.baseline) if args.baseline else contextlib.nullcontext() as base:
        trees = ([(f"baseline {args.baseline}", base)] if base else []) + [("this tree", ROOT)]
        rows = {name: [] for name, _ in trees}
        for r in range(args.repeats):
            for name, tree in trees:
                cold, warm, said_cold, said_warm = pair(tree)
                rows[name].append((cold, warm))
                print(f"  {name}, pair {r + 1}: cold {cold:.1f} s (note shown: {said_cold}), warm {warm:.1f} s "
                      f"(note shown: {said_warm}), difference {cold - warm:.1f} s, "
                      f"load avg {os.getloadavg()[0]:.2f}", flush=True)
    print()
    for name, _ in trees:
        diffs = sorted(c - w for c, w in rows[name])
        cold, warm = min(rows[name], key=lambda x: x[0] - x[1])
        print(f"{name}: cold costs {diffs[0]:.1f} s more than warm at best ({cold:.1f} s against {warm:.1f} s), "
              f"median {diffs[len(diffs) // 2]:.1f} s")
    diff = min(c - w for c, w in rows["this tree"])
    print(f"\nRESULT cold start costs {diff:.1f} s more than a warm one; goal at most {GOAL_S:g} s: "
          f"{'MET' if diff <= GOAL_S else 'NOT MET'}")


if __name__ == "__main__":
    main()
