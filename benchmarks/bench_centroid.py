"""Centre or centroid placement of the superpixel values (issue 18), measured side by side.

Prints, in one run:

1. the cost of the position sums (:func:`bgdask.kernels.centroid.window_sums`)
   against the statistics kernel on a Rubin-sized 4200 x 4200 warp;
2. how far the centroid of the pixels that survive the clipping lies from
   the centroid of the counted pixels (which the kernel sums), and what that
   shift is worth through the sky's gradient;
3. the node values of the reference method's differences against the truth at
   the node: as measured (Rubin: read at the centre), and moved from their
   centroids to the nodes by each recentring (gradient, fit, scattered), with
   their cost;
4. end to end (seams and offset errors, as bench_global.py) for the reference
   method with each recentring, and for the global method with each placement.

    python benchmarks/bench_centroid.py           # about 3 minutes on 2 busy cores
    python benchmarks/bench_centroid.py --small   # skips the 4200 x 4200 timing
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import common  # noqa: E402
import global_proto as gp  # noqa: E402
from bench_global import TRACTS, load  # noqa: E402

from bgdask.config import MatchConfig  # noqa: E402
from bgdask.kernels.centroid import centroids, recentre_values, window_sums  # noqa: E402
from bgdask.kernels.solve import DEFAULT_SMOOTHNESS  # noqa: E402
from bgdask.kernels.stats import IQ_TO_STDEV, superpixel_stats  # noqa: E402

#: Smoothness of the reference method's "fit" recentring tried here.
FIT_LAMBDAS = (0.01, 0.1, 1.0)


def kernel_cost(repeats=3):
    rng = np.random.default_rng(0)
    n = 4200
    image = rng.normal(100.0, 5.0, (n, n)).astype(np.float32)
    bad = rng.random((n, n)) < 0.05
    var = np.full((n, n), 25.0, np.float32)
    grid = (n // 128, n // 128)
    args = (image, bad, 0, 0, grid, 128, 128)
    superpixel_stats(image[:300, :300], bad[:300, :300], 0, 0, (2, 2), 128, 128)   # compile
    window_sums(image[:300, :300], bad[:300, :300], 0, 0, (2, 2), 128, 128, plane=var[:300, :300])
    window_sums(image[:300, :300], bad[:300, :300], 0, 0, (2, 2), 128, 128)
    best = {}
    for name, fn in (("superpixel_stats (MEANCLIP)", lambda: superpixel_stats(*args)),
                     ("window_sums", lambda: window_sums(*args)),
                     ("window_sums + variance plane", lambda: window_sums(*args, plane=var))):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        best[name] = min(times)
    base = best["superpixel_stats (MEANCLIP)"]
    print(f"\n1. kernel cost on a {n} x {n} float32 warp, 128-px bins, window 2 (best of {repeats}, one thread)")
    for name, t in best.items():
        print(f"  {name:<32}{t:>8.3f} s  {1e9 * t / n / n:>6.2f} ns/pixel  {t / base:>6.2f} x the statistics")


def meanclip_kept(x, nsig=3.0, num_iter=3):
    """The pixels a window's MEANCLIP keeps (the kernel's definition, NumPy)."""
    if x.size == 0:
        return np.zeros(0, bool)
    med = np.median(x)
    q = np.percentile(x, 75) - np.percentile(x, 25)
    c, h = med, nsig * IQ_TO_STDEV * q
    kept = np.ones(x.size, bool)
    for _ in range(num_iter):
        k = np.abs(x - c) < h
        if not k.any():
            break
        kept = k
        c = x[k].mean()
        var = x[k].var(ddof=1) if k.sum() > 1 else np.nan
        h = nsig * np.sqrt(var)
    return kept


def survivors(t, ref, n_pairs=3):
    """Centroid of the counted pixels against that of the clipping survivors."""
    cfg = t.cfg
    sm = t.sim.skymap
    W, H = sm.width, sm.height
    shifts, worth = [], []
    visits = [v for v in t.visits if v != ref][:n_pairs]
    wx = int(round(cfg.window_scale * cfg.x_bin))
    for v in visits:
        # the tract-wide difference (warps of one visit agree where they overlap)
        diff = np.full((H, W), np.nan)
        bad = np.ones((H, W), bool)
        for p in t.patches(v):
            if (ref, p) not in t.warps:
                continue
            ir, br, _, box = t.warps[(ref, p)]
            iv, bv, _, _ = t.warps[(v, p)]
            sl = (slice(box.y0, box.y1), slice(box.x0, box.x1))
            diff[sl] = ir.astype(np.float64) - iv
            bad[sl] = br | bv
        counted = np.isfinite(diff) & ~bad
        ny, nx = t.grid
        tr = t.sim.truth[ref]
        tv = t.sim.truth[v]
        for j in range(ny):
            ly = max(((2 * j + 1) * cfg.y_bin - wx) // 2, 0)
            for i in range(nx):
                lx = max(((2 * i + 1) * cfg.x_bin - wx) // 2, 0)
                sl = (slice(ly, ly + wx), slice(lx, lx + wx))
                c = counted[sl]
                if c.sum() < cfg.good_pixel_threshold:
                    continue
                yy, xx = np.nonzero(c)
                vals = diff[sl][c]
                k = meanclip_kept(vals)
                dx = xx[k].mean() - xx.mean()
                dy = yy[k].mean() - yy.mean()
                shifts.append(np.hypot(dx, dy))
                x0, y0 = lx + xx.mean(), ly + yy.mean()
                f = lambda x, y: tr.sky(x, y, W, H) - tv.sky(x, y, W, H)  # noqa: E731
                worth.append(abs(f(x0 + dx, y0 + dy) - f(x0, y0)))
    shifts, worth = np.array(shifts), np.array(worth)
    print(f"\n2. centroid of the clipping survivors - centroid of the counted pixels "
          f"({shifts.size} good windows of {len(visits)} differences with the reference)")
    print(f"  shift [px]: median {np.median(shifts):.3f}, 99th percentile {np.percentile(shifts, 99):.3f}, max {shifts.max():.3f}")
    print(f"  worth through the true gradient [nJy]: median {np.median(worth):.5f}, max {worth.max():.5f}")


def node_accuracy(name, t, ref):
    cfg = t.cfg
    rows = {}
    costs = {}
    for v in t.visits:
        if v == ref:
            continue
        pd = gp.pair_stats(t, ref, v)
        with np.errstate(invalid="ignore", divide="ignore"):
            binned = pd.S / pd.N
            var = pd.V / pd.N
        good = (pd.N >= cfg.good_pixel_threshold) & np.isfinite(binned)
        if not good.any():
            continue
        cx, cy = centroids(pd.SX, pd.SY, pd.N)
        truth = gp.node_truth(t, ref, v)
        full = pd.N >= 0.6 * pd.N[good].max()
        sm = t.sim.skymap
        at_centroid = (t.sim.truth[ref].sky(cx, cy, sm.width, sm.height)
                       - t.sim.truth[v].sky(cx, cy, sm.width, sm.height))
        variants = {"measured - truth at centroid (floor)": binned - at_centroid + truth}
        for method in ("none", "gradient", "scattered"):
            t0 = time.perf_counter()
            variants[method] = recentre_values(binned, good, cx, cy, cfg.x_bin, cfg.y_bin, method=method)
            costs[method] = costs.get(method, 0.0) + time.perf_counter() - t0
        w = np.where(good & (var > 0), pd.N / np.where(var > 0, var, 1.0), 0.0)
        for lam in FIT_LAMBDAS:
            key = f"fit, lambda {lam:g}"
            t0 = time.perf_counter()
            variants[key] = recentre_values(binned, good, cx, cy, cfg.x_bin, cfg.y_bin, method="fit",
                                            weights=w, smoothness=lam)
            costs[key] = costs.get(key, 0.0) + time.perf_counter() - t0
        for key, val in variants.items():
            e = (val - truth)
            r = rows.setdefault(key, [[], []])
            r[0].extend(e[good & full])
            r[1].extend(e[good & ~full])
    print(f"\n3. {name} tract: reference method node values - truth at the node [nJy RMS], "
          f"windows with >= 60% of the best count ('full') and the others ('partial'); cost per visit grid")
    print(f"  {'values':<40}{'full':>8}{'partial':>9}{'all':>8}{'ms/grid':>9}")
    nvis = len(t.visits) - 1
    for key, (a, b) in rows.items():
        a, b = np.array(a), np.array(b)
        rms = lambda x: float(np.sqrt(np.mean(x ** 2))) if x.size else float("nan")  # noqa: E731
        label = "none (Rubin: read at the centre)" if key == "none" else key
        cost = f"{1e3 * costs[key] / nvis:>9.2f}" if key in costs else f"{'-':>9}"
        print(f"  {label:<40}{rms(a):>8.4f}{rms(b):>9.4f}{rms(np.concatenate([a, b])):>8.4f}{cost}")


def end_to_end(name, t, ref, allpairs, floors):
    print(f"\n4. {name} tract (reference visit {ref}): end to end")
    print(f"  {'method':<44}{'seam in':>9}{'seam out':>9}{'/floor in':>10}{'/floor out':>11}{'err in':>8}{'err out':>8}")

    def show(label, models):
        offs, _ = gp.offsets(t, models)
        m = gp.measure(t, ref, offs, floors)
        print(f"  {label:<44}{m.seam_in:>9.4f}{m.seam_out:>9.4f}{m.worst_in:>10.2f}{m.worst_out:>11.2f}"
              f"{m.err_in:>8.3f}{m.err_out:>8.3f}")
        sys.stdout.flush()

    for placement, recentre, lam in [("centre", "none", None), ("centre", "fit", 0.1), ("centroid", "gradient", None),
                                     ("centroid", "scattered", None)] + [("centroid", "fit", x) for x in FIT_LAMBDAS]:
        models, _ = gp.reference_models(t, ref, placement, recentre, fit_smoothness=lam or DEFAULT_SMOOTHNESS, pairs=allpairs, skip=True)
        if placement == "centre" and recentre == "fit":
            # control: the fit with the values read at the centres (smoothing alone)
            models, _ = gp.reference_models(t, ref, "centroid", "fit", fit_smoothness=lam,
                                            pairs={k: _at_centres(pd, t) for k, pd in allpairs.items()}, skip=True)
        label = f"reference, {placement}, {recentre}" + (f" (lambda {lam:g})" if lam else "")
        show(label + (" [Rubin]" if recentre == "none" else ""), models)
    for placement in ("centre", "centroid"):
        models, _, _ = gp.global_models(t, ref, placement, pairs=allpairs, on_disconnected="skip")
        show(f"global, {placement} (lambda {DEFAULT_SMOOTHNESS:g})", models)


def _at_centres(pd, t):
    """The pair's statistics with every centroid moved onto its node."""
    ny, nx = t.grid
    xc = (np.arange(nx) + 0.5) * t.cfg.x_bin
    yc = (np.arange(ny) + 0.5) * t.cfg.y_bin
    return gp.PairData(pd.u, pd.v, pd.S, pd.N, pd.V, xc[None, :] * pd.N, yc[:, None] * pd.N, pd.SP)


def main():
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args()
    common.banner("bench_centroid: centre vs centroid placement")
    if not args.small:
        kernel_cost()
    cfg = MatchConfig()
    for name in ("ordinary", "chain"):
        sim, _ = load(name)
        t = gp.Tract.from_sim(sim, cfg)
        ref = sim.visits[0] if name == "chain" else gp.choose_ref(t)
        if name == "ordinary":
            survivors(t, ref)
        allpairs = {(a, b): gp.pair_stats(t, a, b) for a in t.visits for b in t.visits if a < b}
        floors = {k: gp.pair_floor(t, *k, pd) for k, pd in allpairs.items()}
        node_accuracy(name, t, ref)
        end_to_end(name, t, ref, allpairs, floors)
    print(f"\n(tracts: {TRACTS})")


if __name__ == "__main__":
    main()
