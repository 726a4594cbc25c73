"""Peak worker memory with Rubin-sized (4200 x 4200) warps, and flat in the number of visits.

    python benchmarks/bench_memory.py [--small] [--workdir DIR]

A few distinct 4200 x 4200 warps of the central patch of a 3 x 3 tract of
4000-pixel patches with a 100-pixel border (Rubin's skymap) are written once
as afw FITS files without Butler ids (default 4 files, 212 MB each; --small:
2). Manifest CSVs list the same files under 4 and under 16 visit ids
(--small: 3 and 6), so the number of visits grows while the disk use does
not. Each manifest is matched with ``bgdask.match_backgrounds`` (automatic
reference, default chunking: 1024-row blocks) on a local cluster of its own
as bgdask starts it, 2 workers x 1 thread, while a thread samples the
resident set size (RSS) of both worker processes every 50 ms (psutil). Printed: the peak RSS per worker (goal <= 1.5
GB), its rise above the idle worker, the peak per stage, and the ratio of the
peaks with the most and the fewest visits (goal: flat, ~1.0).
"""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import numpy as np

GOAL_GB = 1.5
SKYMAP = dict(patch_inner=4000, patch_border=100, num_patches=(3, 3))
PATCH = 4  # the central patch: 4200 x 4200


def big_warps(work: Path, n_files: int) -> tuple[Path, list[Path]]:
    """n_files distinct 4200 x 4200 warps of patch 4 and the skymap file."""
    from bgdask.geometry import SkyMap
    from bgdask.io import Warp, write_warp
    from bgdask.simulate import MASK_PLANES

    params = dict(SKYMAP, patch=PATCH, files=n_files)
    d, ready = common.cached_dir(work, "bigwarps", params)
    sm = SkyMap((SKYMAP["patch_inner"],) * 2, SKYMAP["patch_border"], SKYMAP["num_patches"])
    files = [d / f"warp_{k}.fits" for k in range(n_files)]
    if ready:
        print(f"reusing {n_files} warps of {sm.outer_box(PATCH)} in {d}")
        return d, files
    d.mkdir(parents=True, exist_ok=True)
    sm.to_yaml(d / "skymap.yaml")
    box = sm.outer_box(PATCH)
    yy, xx = np.mgrid[0:box.height, 0:box.width].astype(np.float32)
    planes = {n: i for i, n in enumerate(MASK_PLANES)}
    t0 = time.perf_counter()
    for k in range(n_files):
        rng = np.random.default_rng(k)
        sky = 100.0 + 10 * k + 3e-3 * (k + 1) * xx - 2e-3 * yy
        img = (sky + rng.standard_normal(box.shape, dtype=np.float32) * 5.0).astype(np.float32)
        mask = np.zeros(box.shape, np.int32)
        # a visit edge: no data in a corner band that differs per file
        cut = xx + yy < 600 + 300 * k
        img[cut] = np.nan
        mask[cut] = 1 << planes["NO_DATA"]
        mask[:, 1000 + 50 * k] |= 1 << planes["BAD"]
        var = np.full(box.shape, 25.0, np.float32)
        var[cut] = np.nan
        write_warp(files[k], Warp(img, mask, var, box.x0, box.y0, planes), overwrite=True)
    common.mark_built(d, params)
    print(f"wrote {n_files} warps of {box} to {d} ({time.perf_counter() - t0:.1f} s, "
          f"{common.dir_bytes(d) / 1e9:.2f} GB)")
    return d, files


def manifest(d: Path, files: list[Path], n_visits: int) -> Path:
    path = d / f"manifest-{n_visits}.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["visit", "patch", "path"])
        for i in range(n_visits):
            w.writerow([1000 + i, PATCH, files[i % len(files)].name])
    return path


class TimedSampler(common.RSSSampler):
    """RSSSampler that also keeps the time series (for per-stage peaks)."""

    def __init__(self, pids, interval=0.05):
        super().__init__(pids, interval)
        self.series = []

    def _run(self):
        while not self._stop.is_set():
            t = time.perf_counter()
            row = []
            for pid, p in self.procs.items():
                try:
                    rss = p.memory_info().rss
                except Exception:  # noqa: BLE001
                    rss = 0
                row.append(rss)
                self.peak[pid] = max(self.peak[pid], rss)
            self.series.append((t, row))
            self.samples += 1
            self._stop.wait(self.interval)


def run(client, pids, man: Path, skymap: Path, out: Path):
    import bgdask

    marks = []

    def progress(label, n, total):
        if not marks or marks[-1][0] != label:
            marks.append((label, time.perf_counter()))

    common.fresh(out)
    idle = common.worker_rss(client)
    with TimedSampler(pids) as s:
        t0 = time.perf_counter()
        res = bgdask.match_backgrounds(str(man), str(out), client=client, skymap=str(skymap), progress=progress)
        t1 = time.perf_counter()
    # per-stage peaks (approximate): a stage's window runs from its first completed task
    # (t0 for the first stage) to the next stage's first completed task
    bounds = [(lab.split(":")[0], t) for lab, t in marks]
    stage_peak = {}
    for i, (lab, _) in enumerate(bounds):
        start = bounds[i][1] if i > 0 else t0
        stop = bounds[i + 1][1] if i + 1 < len(bounds) else t1
        vals = [max(r) for t, r in s.series if start <= t <= stop]
        stage_peak[lab] = max(vals) if vals else 0
    common.fresh(out)
    return {"wall": t1 - t0, "peak": dict(s.peak), "idle": idle, "samples": s.samples,
            "stage_peak": stage_peak, "timings": res.timings}


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
    common.apply_common(args)
    common.banner("bench_memory: peak worker RSS with 4200 x 4200 warps, and its growth with the visits")
    n_files, counts = (2, (3, 6)) if args.small else (4, (4, 16))
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    d, files = big_warps(work, n_files)
    skymap = d / "skymap.yaml"
    import dask.config

    print(f"default chunking: {dask.config.get('bgdask.chunk-rows')} rows per stage-C block; one 4200 x 4200 plane is "
          f"{4200 * 4200 * 4 / 1e6:.0f} MB (float32/int32)")
    results = {}
    for n in counts:
        # a cluster of its own for each run: what one run's workers hold, not
        # what an earlier run's left them (glibc keeps freed memory mapped)
        with common.local_cluster(2, 1, memory_limit="8GB") as client:
            common.warm_workers(client)
            pids = common.worker_pids(client)
            man = manifest(d, files, n)
            r = run(client, pids, man, skymap, work / f"memory-out-{n}.zarr")
        results[n] = r
        peaks = ", ".join(f"{v / 1e9:.2f} GB" for v in r["peak"].values())
        idle = ", ".join(f"{v / 1e9:.2f} GB" for v in r["idle"].values())
        stages = ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in r["stage_peak"].items())
        print(f"  {n:>3} visits: {r['wall']:.1f} s; peak RSS per worker {peaks} (idle before: {idle}; "
              f"{r['samples']} samples); peak by stage: {stages}")
        sys.stdout.flush()
    lo, hi = counts
    peak_lo = max(results[lo]["peak"].values())
    peak_hi = max(results[hi]["peak"].values())
    idle_hi = max(results[hi]["idle"].values())
    print()
    print(f"peak worker RSS: {peak_lo / 1e9:.2f} GB with {lo} visits, {peak_hi / 1e9:.2f} GB with {hi} visits "
          f"(goal <= {GOAL_GB} GB: {'MET' if max(peak_lo, peak_hi) <= GOAL_GB * 1e9 else 'NOT MET'})")
    print(f"RATIO peak({hi} visits) / peak({lo} visits): {peak_hi / peak_lo:.2f}  (goal: flat, ~1.0)")
    print(f"  rise above the idle worker: {(peak_lo - max(results[lo]['idle'].values())) / 1e9:.2f} GB ({lo} visits), "
          f"{(peak_hi - idle_hi) / 1e9:.2f} GB ({hi} visits)")


if __name__ == "__main__":
    main()
