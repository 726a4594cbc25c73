"""The global method against the reference method, side by side (issues 14 and 18).

On simulated tracts with truth (a chain tract, whose reference at one end
shares no pixel with most visits, and an ordinary tract), both methods run
serially from bgdask's pure functions (``benchmarks/global_proto.py``) and
this prints, in one run:

* through the real pipeline (``bgdask.match_backgrounds`` on the tracts
  written as afw FITS; ``--only pipeline``), for both methods and both
  placements: seams inside and outside the reference's footprint, the worst
  pair's seam over its noise floor, the offset error, wall and CPU time and
  each stage's, the solve's time and size, and the warps read; the cost of
  stages A and B of both methods on many small visits;

* per method and placement: the seam RMS inside and outside the reference's
  footprint, the worst pair's seam over its noise floor, the offset error
  against the truth, the wall time, and the solve's time and size;
* the smoothness (lambda) scan at 128- and 64-pixel bins, the weighting,
  the margin and ``max_partners``;
* the solve of a synthetic system of 100 (and 200) visits x 2,000
  superpixels x 8 partners with SuperLU and, when scikit-sparse imports,
  CHOLMOD: time, peak memory (each in a fresh process) and bitwise
  agreement across BLAS thread counts;
* a tract of 200 small visits: simulation time, pair statistics against
  the reference method's statistics;
* a visit with a sharp step: its residual against its expected value.

Definitions (seam, floor, error): see benchmarks/global_proto.py.

    python benchmarks/bench_global.py --only pipeline # the four runs through bgdask.match_backgrounds
    python benchmarks/bench_global.py --only synthetic --sizes 100   # the solve of 100 visits
    python benchmarks/bench_global.py                 # about 20 minutes on 2 busy cores
    python benchmarks/bench_global.py --small         # no scans, 20 synthetic visits, 60 small visits
    python benchmarks/bench_global.py --only tracts   # the side-by-side tables alone (about a minute)

The synthetic solves use CHOLMOD when scikit-sparse imports (and SuperLU up
to 50 visits: 50 take minutes and 5 GB).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import common  # noqa: E402
import global_proto as gp  # noqa: E402

from bgdask.config import MatchConfig  # noqa: E402
from bgdask.kernels.solve import DEFAULT_SMOOTHNESS, have_cholmod  # noqa: E402
from bgdask.simulate import make_tract  # noqa: E402

#: The benchmark tracts: strong gradients, wide chip gaps every 150-160 px
#: (edges and gaps inside the superpixels), pixel noise 5 nJy, sources.
TRACTS = {
    "chain": dict(n_visits=6, num_patches=(8, 4), patch_inner=320, patch_border=16, layout="chain",
                  gradient_scale=5.0, chip_pitch=160.0, gap_width=12.0, seed=1),
    "ordinary": dict(n_visits=6, num_patches=(3, 3), patch_inner=400, patch_border=20, n_full=0,
                     gradient_scale=5.0, chip_pitch=150.0, gap_width=12.0, seed=0),
}
#: Reference-method recentring used for its centroid row (bench_centroid.py compares them).
REF_RECENTRE = "fit"


def load(name, **over):
    params = {**TRACTS[name], **over}
    t0 = time.perf_counter()
    sim = make_tract(**params)
    return sim, time.perf_counter() - t0


def setup(sim, cfg, chain):
    t = gp.Tract.from_sim(sim, cfg)
    ref = sim.visits[0] if chain else gp.choose_ref(t)
    allpairs = {}
    for a in t.visits:
        for b in t.visits:
            if a < b:
                allpairs[(a, b)] = gp.pair_stats(t, a, b)
    floors = {k: gp.pair_floor(t, *k, pd) for k, pd in allpairs.items()}
    return t, ref, allpairs, floors


HEAD = (f"  {'method':<34}{'matched':>8}{'seam in':>9}{'seam out':>9}{'/floor in':>10}{'/floor out':>11}"
        f"{'err in':>8}{'err out':>8}{'wall s':>8}{'cpu s':>7}{'solve s':>9}{'unknowns':>9}{'nnz M':>8}")


def row(label, m, matched, wall, info=None, cpu=float("nan")):
    solve = f"{info.t_factor + info.t_solve:>9.3f}{info.n_unknowns:>9}{info.nnz_normal:>8}" if info else f"{'-':>9}{'-':>9}{'-':>8}"
    print(f"  {label:<34}{matched:>8}{m.seam_in:>9.4f}{m.seam_out:>9.4f}{m.worst_in:>10.2f}{m.worst_out:>11.2f}"
          f"{m.err_in:>8.3f}{m.err_out:>8.3f}{wall:>8.2f}{cpu:>7.2f}{solve}")
    sys.stdout.flush()


def reference_run(t, ref, placement, recentre):
    """The reference method with its own statistics (visits that share nothing with the
    reference are left unmatched, as with on_no_overlap: skip)."""
    t0, c0 = time.perf_counter(), time.process_time()
    models, tm = gp.reference_models(t, ref, placement, recentre, skip=True)
    offs, _ = gp.offsets(t, models)
    return offs, len(t.visits) - len(tm["unmatched"]), time.perf_counter() - t0, time.process_time() - c0


def global_run(t, ref, placement, lam, **kw):
    t0, c0 = time.perf_counter(), time.process_time()
    models, sol, tm = gp.global_models(t, ref, placement, smoothness=lam, **kw)
    offs, _ = gp.offsets(t, models)
    n = sum(s in ("matched", "reference") for s in sol.status.values())
    return offs, n, time.perf_counter() - t0, time.process_time() - c0, sol, tm


def side_by_side(name, sim, cfg):
    chain = name == "chain"
    t, ref, allpairs, floors = setup(sim, cfg, chain)
    nv = len(t.visits)
    print(f"\n{name} tract: {sim.skymap}; {nv} visits, {len(sim.warps)} warps; reference visit {ref}; "
          f"grid {t.grid[0]} x {t.grid[1]} superpixels of {cfg.x_bin} px")
    print(f"  noise floors per pair [nJy]: median {np.nanmedian(list(floors.values())):.4f}, "
          f"range {np.nanmin(list(floors.values())):.4f} - {np.nanmax(list(floors.values())):.4f}")
    print(HEAD)
    out = {}
    for placement, recentre in (("centre", "none"), ("centroid", REF_RECENTRE)):
        offs, n, wall, cpu = reference_run(t, ref, placement, recentre)
        m = gp.measure(t, ref, offs, floors)
        row(f"reference, {placement}" + (f" ({recentre})" if placement == "centroid" else ""), m, f"{n}/{nv}",
            wall, cpu=cpu)
        out[("reference", placement)] = m
    for placement in ("centre", "centroid"):
        offs, n, wall, cpu, sol, tm = global_run(t, ref, placement, DEFAULT_SMOOTHNESS)
        m = gp.measure(t, ref, offs, floors)
        row(f"global, {placement} (lambda {DEFAULT_SMOOTHNESS:g})", m, f"{n}/{nv}", wall, sol.info, cpu)
        out[("global", placement)] = m
    print(f"  global: {tm['n_pairs']} pairs; time split: coverage {tm['coverage']:.2f} s, pair statistics "
          f"{tm['stats']:.2f} s, solve (build + factor + solve) {tm['solve']:.3f} s; "
          f"solver {sol.info.solver}, {sol.info.refinements} refinement step(s), residual {sol.info.residual:.1e}")
    worst = max(out[("global", "centroid")].pairs.items(),
                key=lambda kv: kv[1]["seam_out"] / kv[1]["floor"] if kv[1]["n_out"] >= 2000 else 0)
    print(f"  global centroid, worst pair outside: {worst[0]}: seam {worst[1]['seam_out']:.4f} nJy "
          f"over {worst[1]['n_out']} px, floor {worst[1]['floor']:.4f}")
    return t, ref, allpairs, floors


def scan(name, t, ref, allpairs, floors, lams, label=""):
    print(f"\n{name} tract{label}: global, centroid placement, smoothness scan")
    print(f"  {'lambda':>8}{'seam in':>9}{'seam out':>9}{'/floor in':>10}{'/floor out':>11}{'err in':>8}{'err out':>8}")
    res = {}
    for lam in lams:
        models, sol, _ = gp.global_models(t, ref, "centroid", smoothness=lam, pairs=allpairs)
        offs, _ = gp.offsets(t, models)
        m = gp.measure(t, ref, offs, floors)
        res[lam] = m
        print(f"  {lam:>8g}{m.seam_in:>9.4f}{m.seam_out:>9.4f}{m.worst_in:>10.2f}{m.worst_out:>11.2f}"
              f"{m.err_in:>8.3f}{m.err_out:>8.3f}")
        sys.stdout.flush()
    return res


def variants(name, t, ref, allpairs, floors):
    print(f"\n{name} tract: global, centroid, lambda {DEFAULT_SMOOTHNESS:g}: weighting, margin, max_partners")
    print(f"  {'variant':<30}{'seam in':>9}{'seam out':>9}{'/floor in':>10}{'/floor out':>11}{'err in':>8}{'err out':>8}{'unknowns':>9}{'pairs':>6}")
    for label, kw in (("weights N/var (default)", {}), ("uniform weights", dict(weighting="uniform")),
                      ("margin 0", dict(margin=0)), ("margin 2", dict(margin=2)),
                      ("max_partners 2", dict(max_partners=2)), ("max_partners 4", dict(max_partners=4)),
                      ("centre placement", dict(placement="centre"))):
        kw = dict(kw)
        placement = kw.pop("placement", "centroid")
        models, sol, tm = gp.global_models(t, ref, placement, smoothness=DEFAULT_SMOOTHNESS, pairs=allpairs, **kw)
        offs, _ = gp.offsets(t, models)
        m = gp.measure(t, ref, offs, floors)
        print(f"  {label:<30}{m.seam_in:>9.4f}{m.seam_out:>9.4f}{m.worst_in:>10.2f}{m.worst_out:>11.2f}"
              f"{m.err_in:>8.3f}{m.err_out:>8.3f}{sol.info.n_unknowns:>9}{tm['n_pairs']:>6}")
        sys.stdout.flush()


# -- synthetic systems -------------------------------------------------------------

def synthetic_pairs(n_visits, cells, partners, seed=0):
    """Visits as random squares of about ``cells`` superpixels on a grid that
    holds them with about 2 x ``partners`` overlaps each; smooth random skies,
    noise, values at jittered centroids."""
    from bgdask.kernels.solve import PairData, pair_overlaps, select_pairs

    rng = np.random.default_rng(seed)
    side = int(round(np.sqrt(cells)))
    n = int(np.ceil(side * np.sqrt(n_visits / (2 * partners) * 4)))   # grid side
    ny = nx = max(n, side + 1)
    cover, sky = {}, {}
    yy, xx = np.mgrid[0:ny, 0:nx] * 1.0
    for v in range(n_visits):
        j0, i0 = rng.integers(0, ny - side + 1), rng.integers(0, nx - side + 1)
        m = np.zeros((ny, nx), bool)
        m[j0:j0 + side, i0:i0 + side] = True
        cover[v] = m
        a, b, c = rng.normal(0, 10), rng.normal(0, 0.05), rng.normal(0, 0.05)
        sky[v] = a + b * xx + c * yy
    ref = 0
    chosen = select_pairs(pair_overlaps(cover), ref, partners)
    bin_ = 128
    pairs = []
    for u, v in chosen:
        both = cover[u] & cover[v]
        N = np.where(both, 4.0 * bin_ * bin_ * 0.8, 0.0)
        d = sky[u] - sky[v] + rng.normal(0, 0.03, (ny, nx))
        cx = (xx + 0.5 + rng.uniform(-0.2, 0.2, (ny, nx))) * bin_
        cy = (yy + 0.5 + rng.uniform(-0.2, 0.2, (ny, nx))) * bin_
        pairs.append(PairData(u, v, d * N, N, 50.0 * N, cx * N, cy * N))
    return pairs, cover, ref, bin_


def synthetic_solve(n_visits, solver, threads=None, placement="centroid", timeout=1200):
    """Run one synthetic solve in a fresh process; returns its figures (JSON)."""
    env = dict(os.environ)
    if threads:
        for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[k] = str(threads)
    code = (
        "import sys, json, time, resource, hashlib, numpy as np; sys.path.insert(0, %r); "
        "import bench_global as b; from bgdask.kernels.solve import solve_global; "
        "t0 = time.perf_counter(); pairs, cover, ref, bin_ = b.synthetic_pairs(%d, 2000, 8); t1 = time.perf_counter(); "
        "rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        "sol = solve_global(pairs, {v: c for v, c in cover.items()}, ref, bin_, bin_, min_count=1.0, solver=%r, placement=%r); "
        "h = hashlib.sha256(b''.join(sol.grids[v].tobytes() for v in sorted(sol.grids))).hexdigest()[:16]; "
        "i = sol.info; print(json.dumps(dict(make=t1 - t0, pairs=len(pairs), unknowns=i.n_unknowns, rows=i.n_data_rows + i.n_smooth_rows, "
        "nnz=i.nnz_normal, nnz_factor=i.nnz_factor, build=i.t_build, factor=i.t_factor, solve=i.t_solve, refine=i.refinements, "
        "residual=i.residual, solver=i.solver, rss0=rss0 / 1024, rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, hash=h)))"
    ) % (str(Path(__file__).parent), n_visits, solver, placement)
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s", "wall": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    if p.returncode:
        return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}", "wall": wall}
    d = json.loads(p.stdout.strip().splitlines()[-1])
    d["wall"] = wall
    return d


def synthetic(sizes=(20, 50, 100), superlu_max=50, timeout=1200):
    """Synthetic solves, one fresh process each: CHOLMOD (when scikit-sparse
    imports) at every size, SuperLU up to ``superlu_max`` visits; the
    determinism check runs the smallest size with 1 and 2 BLAS threads."""
    print("\nsynthetic systems: visits x 2,000 superpixels x 8 partners (about 4-5 visits per superpixel), "
          "centroid placement; each run in a fresh process; RSS = its peak resident memory")
    if not have_cholmod():
        print("  (scikit-sparse does not import: CHOLMOD not measured)")
    print(f"  {'visits':>6} {'solver':<8}{'threads':>8}{'pairs':>7}{'unknowns':>10}{'nnz M':>10}{'nnz L':>11}"
          f"{'build s':>9}{'factor s':>9}{'solve s':>9}{'refine':>7}{'residual':>10}{'RSS MB':>8}{'grids hash':>18}")
    runs = []
    for n in sizes:
        if have_cholmod():
            runs.append((n, "cholmod", 1))
        if n <= superlu_max:
            runs.append((n, "superlu", 1))
    runs.append((sizes[0], "cholmod" if have_cholmod() else "superlu", 2))
    for n, solver, threads in runs:
        d = synthetic_solve(n, solver, threads, timeout=timeout)
        if "error" in d:
            print(f"  {n:>6} {solver:<8}{threads:>8}  failed: {d['error']} (after {d['wall']:.0f} s)")
            continue
        print(f"  {n:>6} {solver:<8}{threads:>8}{d['pairs']:>7}{d['unknowns']:>10}{d['nnz']:>10}{d['nnz_factor']:>11}"
              f"{d['build']:>9.2f}{d['factor']:>9.2f}{d['solve']:>9.2f}{d['refine']:>7}{d['residual']:>10.1e}"
              f"{d['rss']:>8.0f}{d['hash']:>18}")
        sys.stdout.flush()
    print("  (threads: OPENBLAS_NUM_THREADS of the process; the solver holds BLAS to one thread with "
          "threadpoolctl when it imports, so equal hashes mean bitwise-equal grids)")


# -- 200 small visits ------------------------------------------------------------------

def many_small(n_visits=200):
    params = dict(n_visits=n_visits, num_patches=2, patch_inner=128, patch_border=8, seed=0)
    t0 = time.perf_counter()
    sim = make_tract(**params)
    t_sim = time.perf_counter() - t0
    cfg = MatchConfig(x_bin=32, y_bin=32, binning=16)
    t = gp.Tract.from_sim(sim, cfg)
    ref = sim.visits[0]
    t0, c0 = time.perf_counter(), time.process_time()
    for v in t.visits[1:]:
        gp.pair_stats(t, ref, v, with_sums=False)
    t_ref, c_ref = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    models, sol, tm = gp.global_models(t, ref, "centroid")
    t_glob, c_glob = time.perf_counter() - t0, time.process_time() - c0
    print(f"\n{n_visits} small visits: {sim.skymap}, {len(sim.warps)} warps; make_tract {t_sim:.2f} s; "
          f"bins of 32 px ({t.grid[0]} x {t.grid[1]} grid)")
    print(f"  reference method statistics (ref - visit, {len(t.visits) - 1} visits): {t_ref:.2f} s "
          f"(CPU {c_ref:.2f} s)")
    print(f"  global method: {tm['n_pairs']} pairs (max_partners 8); coverage {tm['coverage']:.2f} s, "
          f"pair statistics with centroid sums {tm['stats']:.2f} s ({tm['stats'] / max(t_ref, 1e-9):.1f} x the reference's), "
          f"solve {tm['solve']:.2f} s ({sol.info.n_unknowns} unknowns, nnz {sol.info.nnz_normal}); total {t_glob:.2f} s "
          f"(CPU {c_glob:.2f} s, {c_glob / max(c_ref, 1e-9):.1f} x the reference statistics' CPU)")
    parts = [r["n_partners"] for r in sol.visit_table.values()]
    print(f"  partners per visit: median {np.median(parts):.0f}, max {max(parts)} (the reference keeps all its pairs)")


# -- a visit with a step ------------------------------------------------------------------

def step_visit():
    sim, _ = load("ordinary", step_visit=1003, step_amp=2.0)
    cfg = MatchConfig()
    t = gp.Tract.from_sim(sim, cfg)
    ref = gp.choose_ref(t)
    _, sol, _ = gp.global_models(t, ref, "centroid")
    print(f"\nordinary tract, visit 1003 with a 2 nJy step in its sky (reference {ref}): global method diagnostics")
    print(f"  {'visit':>6}{'partners':>9}{'data':>6}{'resid rms':>11}{'expected':>10}{'ratio':>7}")
    for v, r in sol.visit_table.items():
        ratio = r["resid_rms"] / r["expected_rms"] if r["n_data"] else float("nan")
        print(f"  {v:>6}{r['n_partners']:>9}{r['n_data']:>6}{r['resid_rms']:>11.4f}{r['expected_rms']:>10.4f}{ratio:>7.2f}")


# -- the real pipeline ---------------------------------------------------------------

#: The four runs of the side-by-side table: (method, placement).
VARIANTS = (("reference", "centre"), ("reference", "centroid"), ("global", "centre"), ("global", "centroid"))

PIPE_HEAD = (f"  {'method, placement':<24}{'matched':>8}{'seam in':>9}{'seam out':>9}{'/floor in':>10}"
             f"{'/floor out':>11}{'err in':>8}{'err out':>8}{'wall s':>8}{'cpu s':>7}{'A s':>6}{'B s':>6}"
             f"{'C s':>6}{'solve s':>9}{'unknowns':>9}{'nnz M':>8}{'pairs':>6}{'reads':>7}")


def pipeline_reads(tract, cfg, ref, result) -> int:
    """Warp reads of the run's statistics (stages A and B): one per warp per
    leaf that reads it (a difference or a pair reads two warps)."""
    from bgdask.stages import graph_b

    if cfg.method == "global":
        n = len(tract.keys)                                           # coverage: every warp once
        pairs = [(int(u), int(v)) for u, v in result.pairs[["u", "v"]].values]
        present = set(tract.keys)
        return n + 2 * sum(1 for u, v in pairs for _, p in tract.keys_of[u] if (v, p) in present)
    n = 0 if cfg.ref_visit is not None else len(tract.keys)
    graph, _, _, _ = graph_b(tract, cfg, ref)
    keys = [k for layer in graph.layers.values() for k in layer if isinstance(k, tuple)]
    return n + sum(2 if str(k[0]).endswith("-diff") else 1 for k in keys
                   if str(k[0]).endswith(("-diff", "-count")))


def pipeline_run(sim, method, placement, ref, client=None, workdir=None):
    """One run of bgdask.match_backgrounds on the tract's FITS files (written
    once under ``workdir``), on ``client`` or the synchronous scheduler;
    returns (result, wall s, CPU s of this process)."""
    import tempfile
    import warnings

    import bgdask
    from bgdask.simulate import write_tract

    src = Path(workdir) / "tract"
    if not (src / "manifest.csv").exists():
        write_tract(sim, src)
    # the reference method cannot match a chain's far visits: they are left unmatched
    cfg = MatchConfig(method=method, placement=placement, ref_visit=ref, on_no_overlap="skip")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0, c0 = time.perf_counter(), time.process_time()
        res = bgdask.match_backgrounds(src / "manifest.csv", Path(tmp) / "out.zarr", cfg, client=client,
                                       scheduler=None if client else "sync", skymap=sim.skymap)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        res.matched = None                       # its store is about to go
    return res, wall, cpu


def pipeline_side_by_side(name, sim, workdir, client=None):
    """The four (method, placement) runs through the real pipeline on one tract."""
    from bgdask.collection import open_warps
    from bgdask.stages import tract_of

    chain = name == "chain"
    t = gp.Tract.from_sim(sim, MatchConfig())
    ref = sim.visits[0] if chain else gp.choose_ref(t)
    floors = {(u, v): gp.pair_floor(t, u, v) for u in t.visits for v in t.visits if u < v}
    tract = tract_of(open_warps(sim.warps, skymap=sim.skymap), sim.skymap)
    where = "2 workers (LocalCluster on 127.0.0.1)" if client else "the synchronous scheduler"
    print(f"\n{name} tract through the pipeline (bgdask.match_backgrounds on afw FITS files, {where}): "
          f"{sim.skymap}; {len(t.visits)} visits, {len(sim.warps)} warps; reference visit {ref}")
    print(PIPE_HEAD)
    d = Path(workdir) / f"pipeline-{name}"
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for method, placement in VARIANTS:
        res, wall, cpu = pipeline_run(sim, method, placement, ref, client=client, workdir=d)
        m = gp.measure(t, ref, gp.pipeline_offsets(t, res), floors)
        n = int(sum(s in ("matched", "reference") for s in res.table.status))
        tm = res.timings
        info = res.solve_info
        cfg = MatchConfig(method=method, placement=placement, ref_visit=ref)
        reads = pipeline_reads(tract, cfg, ref, res)
        solve = (f"{tm['global solve']:>9.3f}{info['n_unknowns']:>9}{info['nnz_normal']:>8}{len(res.pairs):>6}"
                 if info else f"{'-':>9}{'-':>9}{'-':>8}{'-':>6}")
        print(f"  {method + ', ' + placement:<24}{f'{n}/{len(t.visits)}':>8}{m.seam_in:>9.4f}{m.seam_out:>9.4f}"
              f"{m.worst_in:>10.2f}{m.worst_out:>11.2f}{m.err_in:>8.3f}{m.err_out:>8.3f}{wall:>8.2f}{cpu:>7.2f}"
              f"{tm.get('stage A', 0.0):>6.2f}{tm['stage B']:>6.2f}{tm['stage C']:>6.2f}{solve}{reads:>7}")
        sys.stdout.flush()
        out[(method, placement)] = (res, m)
    info = out[("global", "centroid")][0].solve_info
    print(f"  global, centroid: solver {info['solver']}, {info['refinements']} refinement step(s), "
          f"residual {info['residual']:.1e}, factor {info['nnz_factor']} non-zeros ({info['factor_bytes'] / 1e6:.2f} MB)")
    print("  reads: warps read by stages A and B (a difference or a pair reads two; with the reference "
          "given the reference method has no stage A)")
    return out


def pipeline_many_small(n_visits):
    """Stages A and B, reference method against global, on many small visits
    (the reference given: no stage A for the reference method)."""
    import warnings

    import bgdask

    sim = make_tract(n_visits=n_visits, num_patches=2, patch_inner=128, patch_border=8, seed=0)
    print(f"\n{n_visits} small visits through bgdask.match (synchronous scheduler, bins of 32 px): {sim.skymap}, "
          f"{len(sim.warps)} warps; reference visit {sim.visits[0]} given")
    ds = bgdask.open_warps(sim.warps, skymap=sim.skymap)
    for method in ("reference", "global"):
        cfg = MatchConfig(method=method, ref_visit=sim.visits[0], x_bin=32, y_bin=32, binning=16)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0, c0 = time.perf_counter(), time.process_time()
            res = bgdask.match(ds, cfg, scheduler="sync")
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        tm = res.timings
        extra = (f"; {len(res.pairs)} pairs, solve {tm['global solve']:.2f} s "
                 f"({res.solve_info['n_unknowns']} unknowns, {res.solve_info['solver']})" if res.pairs is not None else "")
        print(f"  {method:<10} stages A + B: {wall:.2f} s wall, {cpu:.2f} s CPU (stage A {tm.get('stage A', 0.0):.2f} s, "
              f"stage B {tm['stage B']:.2f} s){extra}")
        sys.stdout.flush()


def main():
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--only", choices=["pipeline", "tracts", "scan", "synthetic", "small", "step"], action="append")
    p.add_argument("--cluster", action="store_true", help="pipeline: 2 workers instead of the synchronous scheduler")
    p.add_argument("--sizes", type=int, nargs="+", default=None, metavar="VISITS",
                   help="synthetic: numbers of visits (default 20 50 100; with --small 20)")
    args = p.parse_args()
    common.apply_common(args)
    common.banner("bench_global: global vs reference method, centre vs centroid placement")
    only = set(args.only or ["pipeline", "tracts", "scan", "synthetic", "small", "step"])
    cfg = MatchConfig()
    if "pipeline" in only:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        ctx = common.local_cluster(2, 1, dashboard=False) if args.cluster else None
        client = ctx.__enter__() if ctx is not None else None
        try:
            if client is not None:
                common.warm_workers(client)
            for name in ("chain", "ordinary"):
                sim, _ = load(name)
                pipeline_side_by_side(name, sim, args.workdir, client)
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)
        pipeline_many_small(60 if args.small else 200)
    if only & {"tracts", "scan"}:
        for name in ("chain", "ordinary"):
            sim, t_sim = load(name)
            print(f"\n[{name}: make_tract {t_sim:.1f} s]")
            t, ref, allpairs, floors = side_by_side(name, sim, cfg)
            if "scan" in only and not args.small:
                scan(name, t, ref, allpairs, floors, (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0))
                variants(name, t, ref, allpairs, floors)
                cfg64 = MatchConfig(x_bin=64, y_bin=64)
                t64, ref64, pairs64, floors64 = setup(sim, cfg64, name == "chain")
                scan(name, t64, ref64, pairs64, floors64, (0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
                     label=" at 64-pixel bins (lambda rescaled by (128 / 64)**4 inside the solver)")
    if "synthetic" in only:
        synthetic(tuple(args.sizes) if args.sizes else (20,) if args.small else (20, 50, 100))
    if "small" in only:
        many_small(60 if args.small else 200)
    if "step" in only:
        step_visit()


if __name__ == "__main__":
    main()
