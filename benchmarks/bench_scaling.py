"""Speed-up from 1 to 2 workers, and a projection to a full Rubin tract.

    python benchmarks/bench_scaling.py [--small] [--repeats N] [--workdir DIR]

The tract of bench_pipeline.py (6 visits x 3 x 3 patches of 2100 x 2100;
--small: 4 visits x 2 x 2 patches of 1050 x 1050) is matched with
``bgdask.match_backgrounds`` on the local cluster bgdask starts, of 1 worker
x 1 thread and of 2 workers x 1 thread, alternately (both clusters stay up; the best of
``--repeats`` runs each is kept). Goal: speed-up >= 1.7 on 2 cores.

The projection takes, from the task stream of the 2-worker runs, the seconds
of task time per megapixel of each stage's leaf tasks (stage A: bgdask-a-warp,
stage B: bgdask-b-diff, stage C: bgdask-write-warps) and the
per-visit tasks, and scales them to a Rubin tract: 100 patches of 4200 x
4200 with 40 visits covering it (3,000 warps: visits cover about three
quarters of the patches each; what counts is the number of warps, which is
what the model takes), superpixel grid 312 x 312. It prints the projected
wall time on N = 1, 16, 64, 256 workers (one thread each) with its
assumptions, the graph's size and the scheduler's share, the bytes each
stage reads and writes, and the shared-filesystem bandwidth that N workers
need to stay busy (bytes over the projected compute time). I/O bandwidth is
not measured: the simulated warps sit in the page cache here.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_pipeline
import common
import numpy as np

GOAL = 1.7
RUBIN = dict(n_warps=3_000, n_visits=40, n_patches=100, warp=(4200, 4200), grid=(312, 312))
N_WORKERS = (1, 16, 64, 256)


def stage_costs(stream, catalog, ref: int, grid_shape) -> dict:
    """Seconds of task time per unit for each stage, from one run's task stream."""
    s = common.task_stream_summary(stream)
    get = lambda *names: sum(s.get(n, {}).get("compute", 0.0) for n in names)
    count = lambda *names: sum(s.get(n, {}).get("n", 0) for n in names)
    mpix_all = sum(e.box.width * e.box.height for e in catalog) / 1e6
    ref_patches = {e.patch for e in catalog if e.visit == ref}
    b_warps = [e for e in catalog if e.visit != ref and e.patch in ref_patches]
    mpix_b = sum(e.box.width * e.box.height for e in b_warps) / 1e6
    n_visits = len(catalog.visits)
    cells = grid_shape[0] * grid_shape[1]
    return {
        "A_per_mpix": get(*common.KEYS["A"]) / mpix_all,
        "B_per_mpix": get(*common.KEYS["B"]) / max(mpix_b, 1e-9),
        # stage C's tasks now do a whole warp (rows, coarse grid, done flag): all of it per Mpix
        "C_per_mpix": get(*common.KEYS["C"]) / mpix_all,
        "add_per_task": get(*common.KEYS["add"]) / max(count(*common.KEYS["add"]), 1),
        # per-visit work (stats image, gap filling, plane fit) scales with the superpixel grid
        "visit_per_cell": get(*common.KEYS["visit"]) / max(count(*common.KEYS["visit"]), 1) / cells,
        "n_tasks": sum(r["n"] for r in s.values()),
        "n_warps": len(catalog),
        "mpix": mpix_all,
        "n_visits": n_visits,
        "summary": s,
    }


def project(c: dict, overhead_per_task: float, efficiency: float) -> None:
    nw = RUBIN["n_warps"]
    mp = RUBIN["warp"][0] * RUBIN["warp"][1] / 1e6
    nv, npch = RUBIN["n_visits"], RUBIN["n_patches"]
    cells = RUBIN["grid"][0] * RUBIN["grid"][1]
    rows = bench_pipeline_chunks(RUBIN["warp"][0])
    nb = nw - npch  # stage B leaves: every warp but the reference visit's (reference covers every patch)
    work = {
        "stage A (bgdask-a-warp)": nw * mp * c["A_per_mpix"],
        "stage A (per-visit figures, tree sums)": nv * cells * c["visit_per_cell"] + nw * c["add_per_task"],
        "stage B (bgdask-b-diff)": nb * mp * c["B_per_mpix"],
        "stage B (per-visit models, tree sums)": nv * cells * c["visit_per_cell"] + nb * c["add_per_task"],
        "stage C (bgdask-write-warps)": nw * mp * c["C_per_mpix"],
    }
    tasks = {"A": nw * 2 + nv, "B": nb * 2 + nv, "C": nw + 3 * nv}
    n_tasks = sum(tasks.values())
    total = sum(work.values())
    print(f"\nprojection to a full Rubin tract: {nw} warps of {RUBIN['warp'][0]} x {RUBIN['warp'][1]} "
          f"({mp:.2f} Mpix each, {nw * mp / 1e3:.0f} Gpix), ~{nv} visits x {npch} patches, "
          f"superpixel grid {RUBIN['grid'][0]} x {RUBIN['grid'][1]}")
    print("  assumptions: task seconds per Mpix as measured here (1 worker x 1 thread, this CPU); "
          "the reference visit covers all patches; a visit's warp count, not visits x patches, sets the work "
          f"(visits covering subsets of the patches change only the warp count); stage C one task per warp, "
          f"its {rows} row blocks one after another; "
          f"parallel efficiency {efficiency:.2f} (measured busy fraction of 2 workers); "
          f"scheduler cost {1e3 * overhead_per_task:.2f} ms per task, serial (measured with no-op tasks; "
          "it overlaps the workers' compute); I/O bandwidth NOT modelled (the data sat in the page cache here).")
    for k, v in work.items():
        print(f"  {k:<42}{v / 3600:9.2f} task-hours  ({100 * v / total:4.1f}%)")
    print(f"  {'total':<42}{total / 3600:9.2f} task-hours; {n_tasks} tasks "
          f"(A {tasks['A']}, B {tasks['B']}, C {tasks['C']})")
    # I/O volume: 12 bytes a pixel for image (float32), mask (int32) and variance (float32)
    read_a = nw * mp * 1e6 * 12             # the three planes (variance <= 0 is bad)
    read_b = nb * mp * 1e6 * 24             # two warps' three planes
    read_c = nw * mp * 1e6 * 24             # its three planes and the reference's (the quality)
    write_c = nw * mp * 1e6 * 12            # three planes (before compression)
    tot = read_a + read_b + read_c + write_c
    print(f"  {'workers':>8}{'compute h':>11}{'scheduler h':>13}{'wall h':>9}{'needs GB/s':>12}")
    for n in N_WORKERS:
        comp = total / (n * efficiency)
        sched = n_tasks * overhead_per_task
        wall = max(comp, sched)  # the scheduler works while workers compute: the larger one bounds
        print(f"  {n:>8}{comp / 3600:>11.2f}{sched / 3600:>13.3f}{wall / 3600:>9.2f}{tot / wall / 1e9:>12.2f}")
    print(f"  bytes moved (uncompressed): stage A reads {read_a / 1e12:.2f} TB, B reads {read_b / 1e12:.2f} TB, "
          f"C reads {read_c / 1e12:.2f} TB and writes {write_c / 1e12:.2f} TB; total {tot / 1e12:.2f} TB "
          "(needs GB/s: that total over the wall time, what the shared filesystem must sustain to keep "
          "the workers busy)")
    print(f"  graph: {n_tasks} tasks; the scheduler's share at {1e3 * overhead_per_task:.2f} ms a task: "
          f"{n_tasks * overhead_per_task / 60:.1f} min in all")


def bench_pipeline_chunks(height: int) -> int:
    import dask.config

    return -(-height // int(dask.config.get("bgdask.chunk-rows")))


#: Calls per worker in :func:`cores_at_once`.
CORE_CALLS = 8


def _work_of_a_task(path: str, what: str, calls: int, start_at: float = 0.0) -> float:
    """Per-call seconds of one piece of a stage's work on the first 1024 rows
    of a warp (in a worker): the superpixel statistics (compute-bound), or
    reading its three planes and writing them as float64 (memory-bound)."""
    import time as _time

    import numpy as _np

    from bgdask.config import MatchConfig
    from bgdask.io.fits import read_plane
    from bgdask.kernels.stats import superpixel_stats

    rows = slice(0, 1024)
    image = read_plane(path, "image", rows)
    bad = _np.zeros(image.shape, bool)
    cfg = MatchConfig()
    _time.sleep(max(0.0, start_at - _time.time()))   # both workers start together
    t0 = _time.perf_counter()
    for _ in range(calls):
        if what == "stats":
            superpixel_stats(image, bad, 0, 0, (64, 64), cfg.x_bin, cfg.y_bin)
        else:
            planes = [read_plane(path, p, rows) for p in ("image", "mask", "variance")]
            [p.astype(_np.float64) + 1.0 for p in planes]
    return (_time.perf_counter() - t0) / calls


def cores_at_once(client, manifest: Path) -> dict[str, tuple[float, float]]:
    """(seconds a call alone, with the other worker running the same) for
    the two kinds of work: whether two busy cores slow each other down on
    this machine, apart from the graph."""
    from bgdask.io.catalog import find_warps

    cat = find_warps(manifest)
    key = max(cat.entries, key=lambda k: cat[k].box.width * cat[k].box.height)
    path = str(cat[key].path)
    workers = sorted(client.scheduler_info()["workers"])
    out = {}
    for name, what in (("superpixel statistics, 1024 rows (compute)", "stats"),
                       ("read 3 planes + float64 copies, 1024 rows (memory)", "memory")):
        client.run(_work_of_a_task, path, what, 1, workers=workers[:1])   # warm
        alone = min(client.run(_work_of_a_task, path, what, CORE_CALLS, workers=workers[:1]).popitem()[1]
                    for _ in range(3))
        both = min(max(client.run(_work_of_a_task, path, what, CORE_CALLS, time.time() + 0.5).values())
                   for _ in range(3))
        out[name] = (alone, both)
    return out


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2, help="runs per cluster size (best is kept)")
    p.add_argument("--overhead-ms", type=float, default=None,
                   help="scheduler cost per task for the projection (default: measured here with no-op tasks)")
    args = p.parse_args(argv)
    common.apply_common(args)
    common.banner("bench_scaling: 1 worker vs 2 workers (1 thread each); projection to a Rubin tract")
    params = bench_pipeline.SMALL if args.small else bench_pipeline.FULL
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    tract = common.simulated_tract(work, **params)
    manifest, skymap = tract / "manifest.csv", tract / "skymap.yaml"
    from distributed import get_task_stream

    from bgdask.geometry import superpixel_shape
    from bgdask.io.catalog import find_warps

    catalog = find_warps(manifest)
    sm = catalog.resolve_skymap(skymap)
    tag = "small" if args.small else "full"
    walls = {1: [], 2: []}
    cpus = {1: [], 2: []}
    streams, results = {}, {}
    with common.local_cluster(1, 1) as c1, common.local_cluster(2, 1) as c2:
        clients = {1: c1, 2: c2}
        pids = {}
        for n, c in clients.items():
            common.warm_workers(c)
            pids[n] = common.worker_pids(c)
            bench_pipeline.run_pipeline(c, manifest, work / f"scaling-{tag}-{n}.zarr", skymap)  # warm-up
        per_task = common.scheduler_cost_per_task(c2)
        print(f"  scheduler: {1e3 * per_task:.2f} ms per no-op task (2 workers)")
        contention = cores_at_once(c2, manifest)
        for r in range(args.repeats):
            for n in ((1, 2) if r % 2 == 0 else (2, 1)):
                out = work / f"scaling-{tag}-{n}.zarr"
                with get_task_stream(clients[n]) as ts:
                    wall, cpu, res = bench_pipeline.measured(pids[n], bench_pipeline.run_pipeline,
                                                             clients[n], manifest, out, skymap)
                walls[n].append(wall)
                cpus[n].append(cpu)
                if wall == min(walls[n]):
                    streams[n], results[n] = ts.data, res
                print(f"  run {r + 1}: {n} worker{'s' if n > 1 else ' '} {wall:7.2f} s, worker CPU {cpu:7.2f} s, "
                      f"load avg {os.getloadavg()[0]:.2f} "
                      f"({', '.join(f'{k} {v:.2f} s' for k, v in res.timings.items())})")
                sys.stdout.flush()
    w1, w2 = min(walls[1]), min(walls[2])
    speedup = w1 / w2
    print()
    print(f"1 worker  (best of {len(walls[1])}): {w1:7.2f} s")
    print(f"2 workers (best of {len(walls[2])}): {w2:7.2f} s")
    print(f"SPEED-UP 1 -> 2 workers: {speedup:.2f}x  (goal >= {GOAL}: {'MET' if speedup >= GOAL else 'NOT MET'})"
          f"   [median {np.median(walls[1]) / np.median(walls[2]):.2f}x]")
    for st in results[1].timings:
        a, b = results[1].timings[st], results[2].timings.get(st, np.nan)
        print(f"  {st}: {a:6.2f} s -> {b:6.2f} s, speed-up {a / b:.2f}x")
    s2 = common.task_stream_summary(streams[2])
    task2 = sum(r["compute"] for r in s2.values())
    busy = task2 / (2 * w2)
    s1 = common.task_stream_summary(streams[1])
    task1 = sum(r["compute"] for r in s1.values())
    print(f"  task seconds: {task1:.1f} on 1 worker, {task2:.1f} on 2 workers "
          f"(ratio {task2 / task1:.2f}: >1 means each task ran slower with 2 workers busy on 2 shared cores)")
    print(f"  2 workers busy {100 * busy:.0f}% of the wall time; speed-up if tasks kept their 1-worker duration: "
          f"{w1 / (task1 / (2 * busy)):.2f}x")
    print(f"  worker CPU seconds: {min(cpus[1]):.1f} (1 worker), {min(cpus[2]):.1f} (2 workers); "
          f"load average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus (other users' processes share the cores)")

    print("  the same work in one worker alone, then in both at once (each worker runs it "
          f"{CORE_CALLS} times; best of 3 per-call means):")
    for name, (alone, both) in contention.items():
        print(f"    {name:<46} {1e3 * alone:7.1f} ms alone, {1e3 * both:7.1f} ms with the other core busy: "
              f"{both / alone:.2f}x")

    grid = superpixel_shape(sm.width, sm.height, 128, 128)
    # per-task costs from the 1-worker run: there a task has a core to itself (no self-contention),
    # as it would on a cluster with one worker thread per core
    costs = stage_costs(streams[1], catalog, results[1].reference_visit, grid)
    costs["n_tasks"] = sum(r["n"] for r in s2.values())
    print(f"\nscheduler: {1e3 * per_task:.2f} ms per task (2,000 no-op tasks on the 2-worker cluster, best of 3)")
    print("measured costs (1-worker run): "
          f"A {costs['A_per_mpix']:.4f} s/Mpix, B {costs['B_per_mpix']:.4f} s/Mpix, "
          f"C {costs['C_per_mpix']:.4f} s/Mpix, "
          f"tree add {1e3 * costs['add_per_task']:.2f} ms/task, per-visit {1e6 * costs['visit_per_cell']:.2f} us/superpixel")
    ovh = args.overhead_ms / 1e3 if args.overhead_ms is not None else per_task
    project(costs, ovh, min(max(busy, 0.05), 1.0))
    return speedup


if __name__ == "__main__":
    main()
