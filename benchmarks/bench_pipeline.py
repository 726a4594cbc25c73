"""End to end vs the I/O floor.

    python benchmarks/bench_pipeline.py [--small] [--repeats N] [--workdir DIR]

A simulated tract (default: 6 visits x 3 x 3 patches of 2100 x 2100, written
once with bgdask.simulate.write_tract and reused) is matched with
``bgdask.match_backgrounds(manifest, out, client=client)`` (automatic
reference, stages A, B and C) on the local cluster bgdask starts (2 workers
x 1 thread; ``--dask-malloc``: a plain LocalCluster). On the same cluster, the I/O floor reads every input plane once
(bgdask.io.read_plane) and writes every output plane once to a Zarr store of
the same layout, chunking and compression (bgdask.io.store.create_store), one
Dask task per warp. Both are repeated, alternating, and the best of each is
compared: goal pipeline / floor <= 2.5. The ``bgdask match`` command, as a
user runs it (its own LocalCluster of 2 workers x 1 thread, the dashboard
on: the defaults), is timed in the same alternation against the same floor:
its ratio adds what a run pays before and after the stages (imports, the
cluster's start and stop, the check of the kernels' cache).

Where the rest goes: the pipeline's stage times (result.timings), the task
time per key prefix (client.get_task_stream), a Dask performance report
(HTML, in the workdir), and the anatomy of one warp's tasks timed in this
process (reads, kernels, writes; best of 3).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import numpy as np

FULL = dict(n_visits=6, num_patches=(3, 3), patch_inner=2000, patch_border=50)
SMALL = dict(n_visits=4, num_patches=(2, 2), patch_inner=1000, patch_border=50)
GOAL = 2.5


def run_pipeline(client, manifest: Path, out: Path, skymap: Path):
    import bgdask

    common.fresh(out)
    t0 = time.perf_counter()
    result = bgdask.match_backgrounds(str(manifest), str(out), client=client, skymap=str(skymap))
    return time.perf_counter() - t0, result


def run_command(manifest: Path, out: Path, skymap: Path) -> tuple[float, int]:
    """Wall seconds of ``bgdask match`` in a process of its own, and the CPU
    seconds (user + sys) of it and its children (the cluster's workers)."""
    import resource
    import subprocess

    common.fresh(out)
    cmd = [sys.executable, "-c", "import sys; from bgdask.cli import main; sys.exit(main())", "match",
           str(manifest), "-o", str(out), "--skymap", str(skymap), "--workers", "2",
           "--threads-per-worker", "1", "--no-progress"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"bgdask match failed ({done.returncode}):\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measured(pids, fn, *args):
    """(wall s, worker CPU s, result of fn)."""
    c0 = common.cpu_seconds(pids)
    wall, res = fn(*args)
    return wall, common.cpu_seconds(pids) - c0, res


def warp_anatomy(tract: Path, scratch: Path) -> list[tuple[str, float, float]]:
    """Time the steps of one full-size warp's tasks in this process (best of 3).
    Returns (step, ms, share of its stage)."""
    import dask.config
    import zarr

    from bgdask import background as bg
    from bgdask.config import MatchConfig
    from bgdask.geometry import coarse_cells, coarse_shape, superpixel_shape
    from bgdask.io.catalog import find_warps
    from bgdask.io.store import Store
    from bgdask.kernels.stats import bad_pixels
    from bgdask.masks import plane_bits, remap_mask

    chunk_rows = int(dask.config.get("bgdask.chunk-rows"))
    cat = find_warps(tract / "manifest.csv")
    sm = cat.resolve_skymap(tract / "skymap.yaml")
    cfg = MatchConfig()
    grid = superpixel_shape(sm.width, sm.height, cfg.x_bin, cfg.y_bin)
    # the biggest warp of the first (full) visit, and another visit's warp of that patch
    v0 = cat.visits[0]
    k = max((k for k in cat.entries if k[0] == v0), key=lambda k: cat[k].box.width * cat[k].box.height)
    k2 = next(x for x in cat.entries if x[1] == k[1] and x[0] != v0)
    e, e2 = cat[k], cat[k2]

    def best(f, n=3):
        t = np.inf
        for _ in range(n):
            t0 = time.perf_counter()
            r = f()
            t = min(t, time.perf_counter() - t0)
        return t * 1000, r

    def leaf_a():
        image = e.read("image")
        return bg.warp_partial(k, image, bad_pixels(e.read("mask"), bits, image), e.box, grid, cfg)

    def leaf_b():
        image, image2 = e.read("image"), e2.read("image")
        return bg.difference_partial(k, image, bad_pixels(e.read("mask"), bits, image), k2, image2,
                                     bad_pixels(e2.read("mask"), bits2, image2), e.box, grid, cfg)

    rows = slice(0, min(chunk_rows, e.box.height))
    bits = plane_bits(e.mask_planes, cfg.bad_mask_planes)
    bits2 = plane_bits(e2.mask_planes, cfg.bad_mask_planes)
    steps = []
    # stage A leaf
    t_img, img = best(lambda: e.read("image"))
    t_msk, msk = best(lambda: e.read("mask"))
    t_bad, bad = best(lambda: bad_pixels(msk, bits, img))
    t_st, _ = best(lambda: bg.image_stats(img, bad, e.box, grid, cfg))
    t_a, _ = best(leaf_a)
    steps += [("A warp_partial: read image", t_img, t_a), ("A warp_partial: read mask", t_msk, t_a),
              ("A warp_partial: bad_pixels", t_bad, t_a), ("A warp_partial: superpixel stats", t_st, t_a),
              ("A warp_partial: total", t_a, t_a)]
    # stage B leaf
    img2 = e2.read("image")
    bad2 = bad_pixels(e2.read("mask"), bits2, img2)
    t_diff, _ = best(lambda: bg.difference_stats(img, bad, img2, bad2, e.box, grid, cfg))
    t_b, _ = best(leaf_b)
    steps += [("B difference_partial: 2 warps read + bad", t_b - t_diff, t_b),
              ("B difference_partial: ref-warp + stats", t_diff, t_b),
              ("B difference_partial: total", t_b, t_b)]
    # stage C chunk
    model = np.random.default_rng(0).normal(size=grid)
    cs = coarse_shape(sm.width, sm.height, cfg.binning)
    kx, ky = coarse_cells(e.box, cfg.binning, cs)
    coarse = bg.coarse_offsets(model, cfg, kx, ky)
    t_r3, planes = best(lambda: [e.read(p, rows) for p in ("image", "mask", "variance")])
    t_off, off = best(lambda: bg.offset_rows(coarse, kx[0], ky[0], e.box, rows, cfg))
    t_app, _ = best(lambda: bg.apply_offset(planes[0], off))
    t_remap, mask = best(lambda: remap_mask(planes[1], e.mask_planes, cat.mask_planes))
    t_mc, image = best(lambda: bg.matched_rows(planes[0], (coarse, ky[0], kx[0]), e.box, rows, True, cfg))
    out = common.fresh(scratch)
    h, w = sm.max_outer_shape
    st = Store.create(out, visits=[k[0]], patches=[k[1]], present=np.ones((1, 1), bool), skymap=sm, config=cfg,
                      chunk_rows=chunk_rows, attrs={})
    t_w, _ = best(lambda: st.write_rows(0, 0, rows.start, image, mask, planes[2]))
    arr = zarr.open_array(os.path.join(out, "image"), mode="r+")
    block = np.full((rows.stop - rows.start, w), np.nan, np.float32)
    block[:, : e.box.width] = image
    t_wi, _ = best(lambda: arr.__setitem__((0, 0, rows, slice(None)), block))
    # the quality of the same rows (stage C measures it on the rows it writes,
    # against the reference's rows of the same patch: read again)
    from bgdask.quality import inner_part, quality_partial

    r, c, part = inner_part(e.box, sm.inner_box(k[1]), rows)
    t_badc, bad_c = best(lambda: bad_pixels(planes[1], bits, planes[0], planes[2]))
    t_ref, refp = best(lambda: [e2.read(p, rows) for p in ("image", "mask", "variance")])
    ref = (refp[0][r, c], bad_pixels(refp[1], bits2, refp[0], refp[2])[r, c], refp[2][r, c])
    t_q, _ = best(lambda: quality_partial(image[r, c], planes[0][r, c], bad_c[r, c], planes[2][r, c], ref, part,
                                          grid, cfg))
    t_c = t_r3 + t_mc + t_remap + t_w
    t_cq = t_c + t_badc + t_ref + t_q
    n = rows.stop - rows.start
    # the floor's task for the same warp, in this process
    t_floor, _ = best(lambda: common._floor_warp(e, str(out), 0, 0, w, chunk_rows))
    t_read_all, _ = best(lambda: [e.read(p) for p in ("image", "mask", "variance")])
    steps += [(f"floor task, whole warp ({e.box.height} rows): read 3 planes", t_read_all, t_floor),
              ("floor task, whole warp: write 3 planes", t_floor - t_read_all, t_floor),
              ("floor task, whole warp: total", t_floor, t_floor)]
    frac = e.box.height / n
    steps += [(f"C per warp (total x {frac:.2f} chunks) / floor task", t_c * frac, t_floor)]
    steps += [(f"C match_and_write ({n} rows): read 3 planes", t_r3, t_c),
              ("C match_and_write: offset_rows (Akima)", t_off, t_c),
              ("C match_and_write: apply_offset", t_app, t_c),
              ("C match_and_write: remap_mask", t_remap, t_c),
              ("C match_and_write: write 3 planes (zarr)", t_w, t_c),
              ("C   of which image plane encode+write", t_wi, t_c),
              ("C match_and_write: total", t_c, t_c),
              ("C quality: bad pixels of the rows", t_badc, t_cq),
              ("C quality: the reference's rows read again", t_ref, t_cq),
              ("C quality: 4 superpixel passes (quality_partial)", t_q, t_cq),
              ("C total with the quality", t_cq, t_cq)]
    common.fresh(scratch)
    return steps, e


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2, help="alternating floor/pipeline runs (best is kept)")
    args = p.parse_args(argv)
    common.apply_common(args)
    common.banner("bench_pipeline: bgdask.match_backgrounds vs the I/O floor (2 workers x 1 thread)")
    params = SMALL if args.small else FULL
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    tract = common.simulated_tract(work, **params)
    manifest, skymap = tract / "manifest.csv", tract / "skymap.yaml"
    with open(manifest) as fh:
        n_warps = sum(1 for _ in fh) - 1
    in_bytes = common.dir_bytes(tract / "warps")
    print(f"tract: {params}, {n_warps} warps, {in_bytes / 1e9:.2f} GB of FITS input")

    from distributed import get_task_stream, performance_report

    tag = "small" if args.small else "full"
    out = work / f"pipeline-out-{tag}.zarr"
    floor_out = work / f"floor-out-{tag}.zarr"
    report = work / f"pipeline-performance-report-{tag}.html"
    cmd_out = work / f"command-out-{tag}.zarr"
    floors, pipes, floor_cpu, pipe_cpu, cmds, cmd_cpu = [], [], [], [], [], []
    best_stream, best_result, floor_stream = None, None, None
    with common.local_cluster(2, 1) as client:
        common.warm_workers(client)
        pids = common.worker_pids(client)
        # one untimed pipeline run: numba caches, imports, page cache
        run_pipeline(client, manifest, out, skymap)
        for r in range(args.repeats):
            order = ("floor", "pipeline", "command") if r % 2 == 0 else ("command", "pipeline", "floor")
            for what in order:
                if what == "command":
                    wall, cpu = run_command(manifest, cmd_out, skymap)
                    cmds.append(wall)
                    cmd_cpu.append(cpu)
                    print(f"  run {r + 1}: command   {wall:7.2f} s, CPU {cpu:7.2f} s (the command and its "
                          f"cluster: bgdask match --workers 2 --threads-per-worker 1)")
                elif what == "floor":
                    with get_task_stream(client) as ts:
                        wall, cpu, nbytes = measured(pids, common.io_floor, client, manifest, floor_out)
                    floors.append(wall)
                    floor_cpu.append(cpu)
                    if wall == min(floors):
                        floor_stream = ts.data
                    print(f"  run {r + 1}: I/O floor {wall:7.2f} s, worker CPU {cpu:7.2f} s "
                          f"({nbytes / 1e9:.2f} GB of planes read, then written)")
                else:
                    last = r == args.repeats - 1
                    ctx = performance_report(filename=str(report)) if last else _null()
                    with ctx, get_task_stream(client) as ts:
                        wall, cpu, result = measured(pids, run_pipeline, client, manifest, out, skymap)
                    pipes.append(wall)
                    pipe_cpu.append(cpu)
                    if wall == min(pipes):
                        best_stream, best_result = ts.data, result
                    stages = ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items())
                    print(f"  run {r + 1}: pipeline  {wall:7.2f} s, worker CPU {cpu:7.2f} s ({stages}); "
                          f"reference visit {result.reference_visit}")
                sys.stdout.flush()
        out_bytes = common.dir_bytes(out)
    f, pp = min(floors), min(pipes)
    ratio = pp / f
    print()
    print(f"I/O floor (best of {len(floors)}):          {f:7.2f} s")
    print(f"match_backgrounds (best of {len(pipes)}):  {pp:7.2f} s")
    print(f"RATIO pipeline / I/O floor: {ratio:.2f}x  (goal <= {GOAL:g}x: {'MET' if ratio <= GOAL else 'NOT MET'})"
          f"   [median ratio {np.median(pipes) / np.median(floors):.2f}x]")
    c = min(cmds)
    print(f"bgdask match, the command (best of {len(cmds)}): {c:7.2f} s")
    print(f"RATIO command / I/O floor:  {c / f:.2f}x  (goal <= {GOAL:g}x: {'MET' if c / f <= GOAL else 'NOT MET'})"
          f"   [median ratio {np.median(cmds) / np.median(floors):.2f}x]; the command's own costs beyond "
          f"match_backgrounds on a running cluster: {c - pp:+.2f} s; its CPU (all processes) "
          f"{min(cmd_cpu):.1f} s")
    if common.plain_cluster():
        print("  (--dask-malloc: the floor ran on a plain LocalCluster, the command on the cluster bgdask starts)")
    cr = min(pipe_cpu) / min(floor_cpu)
    print(f"RATIO of worker CPU seconds (user+sys, best of each), pipeline / floor: {cr:.2f}x "
          f"({min(pipe_cpu):.1f} s / {min(floor_cpu):.1f} s): the same comparison, less sensitive to other load")
    print(f"output store: {out_bytes / 1e9:.2f} GB; input {in_bytes / 1e9:.2f} GB")

    tm = best_result.timings
    setup = pp - sum(tm.values())
    print("\nwhere the pipeline's wall time goes (best run), in units of the I/O floor:")
    for k, v in list(tm.items()) + [("setup (catalog, store, models, complete)", setup)]:
        print(f"  {k:<44}{v:7.2f} s  = {v / f:5.2f} x floor  ({100 * v / pp:4.1f}% of the run)")

    summ = common.task_stream_summary(best_stream)
    common.print_task_summary(summ, pp, 2, "pipeline (best run)")
    fsum = common.task_stream_summary(floor_stream)
    common.print_task_summary(fsum, f, 2, "I/O floor (best run)")
    fl = fsum.get("io_floor", {"compute": np.nan})
    print("\nper-warp task time (thread-seconds per warp), pipeline stages vs the floor's one task per warp:")
    get = lambda *names: sum(summ.get(n, {}).get("compute", 0.0) for n in names)
    per = {
        "stage A (bgdask-a-warp)": get(*common.KEYS["A"]),
        "stage B (bgdask-b-diff, -count)": get(*common.KEYS["B"]),
        "stage C (bgdask-write-warps / -rows, -done, -coarse)": get(*common.KEYS["C"]),
    }
    fpw = fl["compute"] / n_warps
    for k, v in per.items():
        print(f"  {k:<54}{v / n_warps:7.3f} s/warp = {v / n_warps / fpw:5.2f} x floor task")
    print(f"  {'I/O floor (read + write all planes)':<54}{fpw:7.3f} s/warp")
    print(f"\nDask performance report (last pipeline run): {report}")

    steps, e = warp_anatomy(tract, work / f"anatomy-{tag}.zarr")
    print(f"\nanatomy of one warp's tasks ({e.box.width} x {e.box.height}, in this process, best of 3):")
    for name, ms, total in steps:
        print(f"  {name:<48}{ms:8.1f} ms  {100 * ms / total:5.1f}%")
    return ratio


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


if __name__ == "__main__":
    main()
