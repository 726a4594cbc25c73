"""Scheduler overhead with thousands of tiny warps.

    python benchmarks/bench_overhead.py [--small] [--warps N] [--workdir DIR]

A tract of 10 x 10 patches of 60 pixels (outer boxes 64 x 64, clipped to
62 at the tract's edges) with N / 100 visits covering every patch (default
N = 3,000 warps; --small: 1,000). The catalog is built in memory
(bgdask.io.catalog.Catalog of warp sources) pointing at 16 real tiny afw FITS
files (4 box shapes x 4 sky levels), each reused by many (visit, patch)
through a small WarpSource that places a file's pixels at another box.

Measured, on the local cluster bgdask starts, 2 workers x 1 thread:

* ``bgdask.match_backgrounds`` end to end: wall time per warp, the task
  time per warp, and the overhead per warp = (wall - task seconds / 2) /
  warps (goal: at most 8 ms per warp);
* graph build time and task count of stages A, B and C (recorded by
  wrapping bgdask.executors.Executor.compute: build = stage time - compute);
* ``bgdask.open_warps`` build time and task count for 5,000 and 20,000 warps
  (no I/O: headers come from the catalog);
* the graph build of stages A, B and C alone for 5,000 warps (no compute);
* with ``--baseline REV`` (e.g. c283238, before the collection-centred
  redesign), the same script of that revision first, run from a temporary
  git worktree in a subprocess, so both sets of figures come from one run.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import numpy as np

GOAL_MS = 8.0
INNER, BORDER, NP = 60, 2, (10, 10)


def tiny_files(work: Path) -> dict[tuple[int, int, int], object]:
    """16 tiny afw FITS files: (height, width, variant) -> WarpHeader."""
    from bgdask.io import Warp, read_warp_header, write_warp
    from bgdask.simulate import MASK_PLANES

    params = {"inner": INNER, "border": BORDER, "variants": 4}
    d, ready = common.cached_dir(work, "tiny", params)
    shapes = [(h, w) for h in (INNER + BORDER, INNER + 2 * BORDER) for w in (INNER + BORDER, INNER + 2 * BORDER)]
    if not ready:
        d.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for h, w in shapes:
            for k in range(params["variants"]):
                img = (100.0 + 10 * k + rng.normal(0, 5, (h, w))).astype(np.float32)
                mask = np.zeros((h, w), np.int32)
                mask[0, :] = 1 << MASK_PLANES.index("EDGE")
                var = np.full((h, w), 25.0, np.float32)
                write_warp(d / f"tiny_{h}x{w}_{k}.fits",
                           Warp(img, mask, var, 0, 0, {n: i for i, n in enumerate(MASK_PLANES)}), overwrite=True)
        common.mark_built(d, params)
    return {(h, w, k): read_warp_header(d / f"tiny_{h}x{w}_{k}.fits")
            for h, w in shapes for k in range(params["variants"])}


class Relocated:
    """A tiny FITS warp placed at another patch's box (a WarpSource)."""

    def __init__(self, header, box):
        self.header, self.box = header, box
        self.path, self.mask_planes = header.path, header.mask_planes

    def read(self, plane, rows=None):
        return self.header.read(plane, rows)


def tiny_catalog(headers, n_warps: int):
    """A Catalog of n_warps warps (n_warps / 100 visits x 100 patches) in memory."""
    from bgdask.geometry import SkyMap
    from bgdask.io.catalog import Catalog

    sm = SkyMap((INNER, INNER), BORDER, NP, tract=0)
    n_visits = max(1, n_warps // sm.n_patches)
    entries = {}
    for vi in range(n_visits):
        v = 1000 + vi
        for p in sm.patches:
            box = sm.outer_box(p)
            entries[(v, p)] = Relocated(headers[(box.height, box.width, vi % 4)], box)
    return Catalog(entries, source=f"in-memory catalog of {len(entries)} tiny warps", tract=0), sm


class Recorder:
    """Wraps bgdask.executors.Executor.compute so that every compute()
    records its label, task count and times."""

    def __init__(self):
        self.calls = []

    def __enter__(self):
        from bgdask.executors import Executor

        rec, base = self, Executor.compute

        def compute(ex, graph, keys, label="", **kw):
            t_enter = time.perf_counter()
            n = len(graph.cull(set(keys)))
            t_counted = time.perf_counter()
            out = base(ex, graph, keys, label, **kw)
            rec.calls.append({"label": label, "tasks": n, "count_s": t_counted - t_enter,
                              "compute_s": time.perf_counter() - t_counted})
            return out

        self._base = base
        Executor.compute = compute
        return self

    def __exit__(self, *exc):
        from bgdask.executors import Executor

        Executor.compute = self._base
        return False


def bench_match(client, catalog, sm, out: Path, n_threads: int):
    from distributed import get_task_stream

    import bgdask

    common.fresh(out)
    with Recorder() as rec, get_task_stream(client) as ts:
        t0 = time.perf_counter()
        result = bgdask.match_backgrounds(catalog, str(out), client=client, skymap=sm)
        wall = time.perf_counter() - t0
    summary = common.task_stream_summary(ts.data)
    return wall, result, rec.calls, summary


def bench_open_warps(headers, n: int, repeats: int = 3):
    import bgdask

    catalog, sm = tiny_catalog(headers, n)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        ds = bgdask.open_warps(catalog, skymap=sm)
        best = min(best, time.perf_counter() - t0)
    per_plane = len(ds.image.data.__dask_graph__())
    total = common.count_tasks([ds.image.data, ds.mask.data, ds.variance.data])
    # one chunk computes (reads one tiny file)
    v, p = next(iter(catalog.entries))
    block = ds.image.sel(visit=v, patch=p).values
    assert np.isfinite(block[: catalog[(v, p)].box.height, : catalog[(v, p)].box.width]).all()
    return best, per_plane, total, len(catalog)


def bench_graph_build(headers, n: int, repeats: int = 3) -> dict[str, tuple[float, int]]:
    """Seconds (best of ``repeats``) and tasks to build each stage's graph for
    ``n`` warps, computing nothing (stage B with the first visit as reference)."""
    from bgdask import MatchConfig
    from bgdask.collection import open_warps
    from bgdask.io.store import Store
    from bgdask.stages import Solution, graph_a, graph_b, matched_arrays, tract_of, write_graph

    catalog, sm = tiny_catalog(headers, n)
    cfg = MatchConfig()
    out: dict[str, tuple[float, int]] = {}

    def best(label, fn):
        t = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            r = fn()
            t = min(t, time.perf_counter() - t0)
        out[label] = (t, r)
        return r

    tract = best("open_warps + checks", lambda: tract_of(open_warps(catalog, sm), sm))
    out["open_warps + checks"] = (out["open_warps + checks"][0], 3 * len(tract.keys))
    def tasks(graph, key):
        return len(next(lay for lay in graph.layers.values() if key in lay))

    ga = best("stage A", lambda: graph_a(tract, cfg))
    out["stage A"] = (out["stage A"][0], tasks(ga[0], ga[1][0]))
    gb = best("stage B", lambda: graph_b(tract, cfg, tract.visits[0]))
    out["stage B"] = (out["stage B"][0], tasks(gb[0], gb[1][0]))
    models = {v: __import__("bgdask").background.VisitModel.zero(v, (4, 4), "matched") for v in tract.visits}
    sol = Solution(tract.visits[0], models, {})
    gc = best("stage C (store writes)", lambda: write_graph(tract, cfg, sol, Store("/nonexistent.zarr"), tract.keys))
    out["stage C (store writes)"] = (out["stage C (store writes)"][0], tasks(gc[0], gc[1][0]))
    lazy = best("stage C (lazy matched)", lambda: matched_arrays(tract, cfg, sol))
    out["stage C (lazy matched)"] = (out["stage C (lazy matched)"][0],
                                     len(lazy["image"].dask.layers[lazy["image"].name]))
    return out


def run_baseline(rev: str, argv: list[str]) -> None:
    """This script as it was at ``rev``, in a temporary worktree, in a subprocess."""
    import subprocess
    import tempfile

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="bgdask-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(tree), rev], check=True,
                       capture_output=True)
        try:
            print(f"--- baseline {rev}: benchmarks/bench_overhead.py {' '.join(argv)} (its own output) ---")
            sys.stdout.flush()
            subprocess.run([sys.executable, "benchmarks/bench_overhead.py", *argv], cwd=tree, check=True,
                           env={**os.environ, "PYTHONPATH": str(tree)})
            print(f"--- end of baseline {rev} ---\n")
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(tree)], check=False)


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--warps", type=int, default=None, help="warps in the matched tract (default 3000; --small 1000)")
    p.add_argument("--repeats", type=int, default=1, help="match runs (best is kept)")
    p.add_argument("--baseline", default=None, metavar="REV",
                   help="first run this script as it was at git revision REV (e.g. c283238)")
    args = p.parse_args(argv)
    common.apply_common(args)
    if args.baseline:
        passed = [a for a in (argv if argv is not None else sys.argv[1:])]
        i = passed.index("--baseline")
        run_baseline(args.baseline, passed[:i] + passed[i + 2:])
    common.banner("bench_overhead: thousands of tiny (64 x 64) warps")
    n = args.warps or (1000 if args.small else 3000)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    headers = tiny_files(work)
    catalog, sm = tiny_catalog(headers, n)
    n = len(catalog)
    print(f"tract: {sm}, {len(catalog.visits)} visits x {len(catalog.patches)} patches = {n} warps "
          f"of <= 64 x 64, reusing {len(headers)} tiny FITS files")

    out = work / "overhead-out.zarr"
    runs = []
    with common.local_cluster(2, 1) as client:
        common.warm_workers(client)
        pids = common.worker_pids(client)
        per_task = common.scheduler_cost_per_task(client)
        print(f"scheduler: {1e3 * per_task:.2f} ms per no-op task (2,000 independent tasks, best of 3)")
        # warm-up on a small catalog
        small_cat, _ = tiny_catalog(headers, 200)
        bench_match(client, small_cat, sm, out, 2)
        for r in range(args.repeats):
            c0 = common.cpu_seconds(pids)
            wall, result, calls, summary = bench_match(client, catalog, sm, out, 2)
            cpu = common.cpu_seconds(pids) - c0
            runs.append((wall, result, calls, summary, cpu))
            print(f"  run {r + 1}: {wall:.2f} s ({', '.join(f'{k} {v:.2f} s' for k, v in result.timings.items())}), "
                  f"worker CPU {cpu:.2f} s, load avg {os.getloadavg()[0]:.2f}")
            sys.stdout.flush()
    wall, result, calls, summary, cpu = min(runs, key=lambda x: x[0])
    task_s = sum(r["compute"] for r in summary.values())
    n_tasks = sum(r["n"] for r in summary.values())
    per_warp = 1e3 * wall / n
    overhead = 1e3 * (wall - task_s / 2) / n
    print()
    print(f"end to end: {wall:.2f} s for {n} warps = {per_warp:.2f} ms per warp (best of {len(runs)})")
    print(f"  task compute: {task_s:.2f} thread-s = {1e3 * task_s / n:.2f} ms per warp; {n_tasks} tasks "
          f"({n_tasks / n:.1f} per warp); worker CPU {cpu:.2f} s = {1e3 * cpu / n:.2f} ms per warp")
    print(f"  OVERHEAD per warp (wall - task time / 2 threads) / warps: {overhead:.2f} ms "
          f"(goal at most {GOAL_MS:g} ms: {'MET' if overhead <= GOAL_MS else 'NOT MET'})")
    print(f"  RATIO overhead per warp / scheduler cost per no-op task: {overhead / (1e3 * per_task):.1f} "
          f"(tasks per warp {n_tasks / n:.1f}, on 2 workers)")
    print("\nper stage: graph build (stage time - compute) and task counts")
    stage_of = {"stage A": "stage A", "stage B": "stage B", "stage C": "stage C"}
    print(f"  {'stage':<9}{'tasks':>8}{'per warp':>10}{'build s':>10}{'build us/task':>15}{'compute s':>11}"
          f"{'ms/warp':>9}{'stage s':>9}")
    for c in calls:
        st = next((k for k in stage_of if c["label"].startswith(k)), c["label"])
        stage_t = result.timings.get(st, np.nan)
        build = stage_t - c["count_s"] - c["compute_s"]
        print(f"  {st:<9}{c['tasks']:>8}{c['tasks'] / n:>10.2f}{build:>10.3f}{1e6 * build / max(c['tasks'], 1):>15.1f}"
              f"{c['compute_s']:>11.2f}{1e3 * c['compute_s'] / n:>9.2f}{stage_t:>9.2f}")
    setup = wall - sum(result.timings.values())
    print(f"  setup (catalog checks, fingerprint, store creation, models, completion): {setup:.2f} s "
          f"= {1e3 * setup / n:.2f} ms per warp")
    common.print_task_summary(summary, wall, 2, "task time per key prefix (best run)")

    print("\ngraph build alone, 5,000 warps (no compute; best of 3):")
    built = bench_graph_build(headers, 5000)
    stages = [k for k in built if k.startswith("stage") and k != "stage C (lazy matched)"]
    for label, (t, tasks) in built.items():
        print(f"  {label:<24}{t:>8.3f} s  {tasks:>7} tasks  {1e6 * t / max(tasks, 1):>6.1f} us/task")
    total = sum(built[k][0] for k in stages)
    print(f"  RESULT stages A + B + C build: {total:.3f} s for 5,000 warps = {1e3 * total / 5000:.3f} ms per warp "
          f"(goal at most 0.5 s: {'MET' if total <= 0.5 else 'NOT MET'}); with open_warps "
          f"{total + built['open_warps + checks'][0]:.3f} s")

    print("\nbgdask.open_warps on an in-memory catalog (best of 3 builds):")
    for size in (5000, 20000):
        t, per_plane, total, nw = bench_open_warps(headers, size)
        print(f"  {nw:>6} warps: build {t:.3f} s ({1e6 * t / nw:.1f} us per warp); tasks: {per_plane} per plane, "
              f"{total} for image+mask+variance ({total / nw:.2f} per warp)")


if __name__ == "__main__":
    main()
