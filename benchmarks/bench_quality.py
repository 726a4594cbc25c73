"""The quality of a match (issue 15): what it costs in stage C, and what its numbers are.

    python benchmarks/bench_quality.py cost [--small] [--repeats N] [--workdir DIR]
    python benchmarks/bench_quality.py ratios [--seeds N]

``cost``: a simulated tract (default 6 visits x 3 x 3 patches of 1000 x 1000,
written once and reused) goes through stages A and B once on the local
cluster bgdask starts, 2 workers x 1 thread; then stage C is run into fresh stores with the
quality measured (``write_graph(..., quality=True)``, what ``bgdask match``
does) and without (``quality=False``, stage C as it was), alternating,
``--repeats`` times each. Printed: wall seconds and worker CPU seconds of
each (best and median) and their ratios. The machine is shared: read the
ratios, and the CPU-second ratio first.

``ratios``: the per-visit ``match_ratio`` of simulated tracts (4 visits on
3 x 3 patches of 400 pixels and on 2 x 2 patches of 256, seeds 0..N-1 each;
``bgdask.match_arrays``, the default configuration but ``on_no_overlap:
skip``) whose skies are flat (level only: a model can follow the
differences exactly), linear (level and gradients) or as simulated
(quadratic); and of the same tracts with a sharp step of 5, 10 and 20 nJy
added to one visit's sky right of the vertical line through its
footprint's centre (``bgdask.testing.with_step``; the reference fixed to the
one chosen without the step). Printed: the distribution per kind and how
many visits ``max_match_ratio`` flags.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import numpy as np

FULL = dict(n_visits=6, num_patches=(3, 3), patch_inner=1000, patch_border=50)
SMALL = dict(n_visits=4, num_patches=(2, 2), patch_inner=500, patch_border=25)
STEPS = (5.0, 10.0, 20.0)


# -- cost ------------------------------------------------------------------------------

def stage_c(client, prepared, tract, sol, table, out: Path, quality: bool):
    """Stage C of ``prepared`` into a fresh store at ``out``: (wall s, worker CPU s)."""
    import os as _os

    from bgdask.executors import Executor
    from bgdask.io.store import Store
    from bgdask.stages import write_graph
    from bgdask.pipeline import _usable_array

    p = prepared
    common.fresh(out)
    store = Store.create(out, visits=tract.visits, patches=tract.patches, present=tract.present,
                         skymap=p.skymap, config=p.config, chunk_rows=p.chunk_rows,
                         attrs={"config": p.config.to_json(), "skymap": p.skymap.to_dict(),
                                "mask_planes": tract.mask_planes, "source": _os.path.abspath(p.catalog.source)})
    store.write_models(sol.models, table, sol.reference, _usable_array(tract, sol))
    pids = list(client.run(_os.getpid).values())
    c0 = common.cpu_seconds(pids)
    t0 = time.perf_counter()
    graph, ends, key = write_graph(tract, p.config, sol, store, tract.keys, quality=quality)
    keys = ends + ([key] if key is not None else [])
    Executor(client).compute(graph, keys, "stage C", keep={key} if key is not None else set())
    wall = time.perf_counter() - t0
    return wall, common.cpu_seconds(pids) - c0


def cost(args) -> None:
    from bgdask.collection import open_warps
    from bgdask.executors import Executor
    from bgdask.matching import solve
    from bgdask.pipeline import prepare
    from bgdask.stages import tract_of
    from bgdask.table import visit_table

    params = dict(SMALL if args.small else FULL, seed=0)
    d = common.simulated_tract(args.workdir, **params)
    work = Path(args.workdir) / "quality-cost"
    work.mkdir(parents=True, exist_ok=True)
    prepared = prepare(d / "manifest.csv", work / "unused.zarr", skymap=d / "skymap.yaml", overwrite=True)
    rows = {True: [], False: []}
    with common.local_cluster(2, 1) as client:
        common.warm_workers(client)
        tract = tract_of(open_warps(prepared.catalog, prepared.skymap, chunks={"y": prepared.chunk_rows}),
                         prepared.skymap)
        t0 = time.perf_counter()
        sol, criteria = solve(tract, prepared.config, Executor(client))
        ab = time.perf_counter() - t0
        table = visit_table(tract.visits, criteria, sol.models)
        print(f"tract: {len(tract.keys)} warps, chunk rows {prepared.chunk_rows}; stages A and B once: {ab:.2f} s")
        stage_c(client, prepared, tract, sol, table, work / "warm.zarr", True)   # warm the file cache
        for r in range(args.repeats):
            for quality in ((True, False) if r % 2 == 0 else (False, True)):
                wall, cpu = stage_c(client, prepared, tract, sol, table, work / f"q{int(quality)}.zarr", quality)
                rows[quality].append((wall, cpu))
                print(f"  run {r}: stage C {'with   ' if quality else 'without'} quality: "
                      f"{wall:6.2f} s wall, {cpu:6.2f} s worker CPU")
    print()
    print("| stage C | wall s (best / median) | worker CPU s (best / median) |")
    print("|---|---|---|")
    best = {}
    for quality in (False, True):
        w = [x[0] for x in rows[quality]]
        c = [x[1] for x in rows[quality]]
        best[quality] = (min(w), statistics.median(w), min(c), statistics.median(c))
        print(f"| {'with' if quality else 'without'} quality | {min(w):.2f} / {statistics.median(w):.2f} "
              f"| {min(c):.2f} / {statistics.median(c):.2f} |")
    print(f"\nratio with / without: wall {best[True][0] / best[False][0]:.2f}x best "
          f"({best[True][1] / best[False][1]:.2f}x median), worker CPU "
          f"{best[True][2] / best[False][2]:.2f}x best ({best[True][3] / best[False][3]:.2f}x median)")


# -- ratios -------------------------------------------------------------------------------

GEOMETRIES = {
    "3 x 3 patches of 400 px": dict(n_visits=4, num_patches=(3, 3), patch_inner=400, patch_border=20),
    "2 x 2 patches of 256 px": dict(n_visits=4, num_patches=(2, 2), patch_inner=256, patch_border=16),
}


def ratios(args) -> None:
    from bgdask import MatchConfig, match_arrays
    from bgdask.simulate import make_tract
    from bgdask.testing import simpler_skies, with_step

    cfg = MatchConfig(on_no_overlap="skip")     # a visit sharing nothing with the reference has no ratio
    seeds = range(args.seeds)
    rows = []   # (geometry, kind, ratios)
    t0 = time.perf_counter()
    for name, params in GEOMETRIES.items():
        normal: dict[str, list[float]] = {"flat": [], "linear": [], "quadratic": []}
        steps: dict[float, list[float]] = {a: [] for a in STEPS}
        for seed in seeds:
            sim = make_tract(seed=seed, **params)
            for kind in normal:
                warps = sim.warps if kind == "quadratic" else simpler_skies(sim, kind)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = match_arrays(warps, sim.skymap, cfg)
                normal[kind] += [float(r) for r in res.table["match_ratio"].dropna()]
            ref = res.reference_visit                      # of the tract as simulated
            stepped = next(v for v in sim.visits if v != ref)
            for a in STEPS:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = match_arrays(with_step(sim, sim.warps, stepped, a), sim.skymap, cfg.replace(ref_visit=ref))
                steps[a].append(float(res.table.loc[stepped, "match_ratio"]))
            print(f"  {name}, seed {seed} done ({time.perf_counter() - t0:.0f} s)", flush=True)
        rows += [(name, f"{kind} skies", vals) for kind, vals in normal.items()]
        rows += [(name, f"{a:g} nJy step", vals) for a, vals in steps.items()]
    threshold = cfg.max_match_ratio
    print(f"\nmatch_ratio per visit ({len(seeds)} tracts of 4 visits per geometry; default config but "
          f"on_no_overlap: skip, "
          f"max_match_ratio = {threshold:g}; steps: one visit per tract, the reference of its tract as simulated)")
    print("| tract | visits | n | min | median | max | flagged |")
    print("|---|---|---|---|---|---|---|")
    for name, kind, vals in rows:
        print(f"| {name} | {kind} | {len(vals)} | {min(vals):.2f} | {statistics.median(vals):.2f} "
              f"| {max(vals):.2f} | {sum(v > threshold for v in vals)} |")


def main(argv=None) -> int:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("cost", "ratios"))
    p.add_argument("--repeats", type=int, default=3, help="stage C runs of each kind (cost)")
    p.add_argument("--seeds", type=int, default=8, help="simulated tracts (ratios)")
    args = p.parse_args(argv)
    common.apply_common(args)
    common.banner(f"bench_quality {args.what}")
    if args.what == "cost":
        cost(args)
    else:
        ratios(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
