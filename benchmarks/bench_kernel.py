"""Benchmark of the superpixel statistics kernel (bgdask.kernels.stats).

Run from the repository root:

    python benchmarks/bench_kernel.py            # one 4200 x 4200 warp
    python benchmarks/bench_kernel.py --size 1000

It builds one float32 warp (sky with a gradient, Gaussian noise, a few
sources, ~5 % bad pixels) and prints, each timed side by side in this run
(best of --repeat, after a warm-up that excludes numba compilation):

1. bgdask's kernel (MEANCLIP, window_scale=1.0, 128 px bins) against photutils
   Background2D with the same boxes, 3-sigma clipping (3 iterations) and a
   mean estimator, both on one thread; goal: ratio <= 0.33.
2. the kernel with Rubin's default window (window_scale=2.0) against one read
   of the array (``image.sum()``; the memory floor).
"""

from __future__ import annotations

import os

# One thread everywhere, before numpy / numba / astropy are imported.
for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
             "MKL_NUM_THREADS", "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
             "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numba

from bgdask.kernels.stats import superpixel_stats


def make_warp(size: int, seed: int = 12345) -> tuple[np.ndarray, np.ndarray]:
    """A realistic-looking float32 warp and its bad mask (~5 %)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    sky = 1200.0 + 80.0 * x - 50.0 * y + 30.0 * (x - 0.5) * (y - 0.5)
    image = sky + rng.normal(0.0, 35.0, (size, size)).astype(np.float32)
    # sources: Gaussian blobs, a few bright with broad wings
    n_src = max(10, size * size // 20000)
    xs = rng.uniform(0, size, n_src)
    ys = rng.uniform(0, size, n_src)
    flux = rng.lognormal(8.0, 1.5, n_src)
    sig = rng.uniform(1.5, 4.0, n_src)
    for xc, yc, f, s in zip(xs, ys, flux, sig):
        r = int(6 * s) + 1
        x0, x1 = max(int(xc) - r, 0), min(int(xc) + r + 1, size)
        y0, y1 = max(int(yc) - r, 0), min(int(yc) + r + 1, size)
        gy, gx = np.mgrid[y0:y1, x0:x1]
        image[y0:y1, x0:x1] += (f / (2 * np.pi * s * s)
                                * np.exp(-((gx - xc) ** 2 + (gy - yc) ** 2) / (2 * s * s)))
    # cosmic-ray-like spikes
    n_cr = size * size // 5000
    image[rng.integers(0, size, n_cr), rng.integers(0, size, n_cr)] += 5000.0
    image = image.astype(np.float32)
    # bad mask: random pixels (3 %), a few bad columns and a saturated block
    bad = rng.random((size, size)) < 0.04
    for c in rng.integers(0, size, max(1, size // 200)):
        bad[:, c] = True
    b = size // 20
    bad[size // 3:size // 3 + b, size // 2:size // 2 + b] = True
    return image, bad


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def best_time(fn, repeat: int) -> tuple[float, float]:
    """Best wall time and best CPU time (of this thread) of ``repeat`` calls.

    The machine may be shared: CPU time is less affected by other processes
    competing for the cores, so both are reported."""
    wall, cpu = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        c0 = time.thread_time()
        fn()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - t0)
    return min(wall), min(cpu)


def row(label, t):
    print(f"    {label:<30s}{t[0] * 1e3:10.1f}{t[1] * 1e3:10.1f}")


def ratio(label, a, b, goal=""):
    print(f"    {label:<30s}{a[0] / b[0]:10.3f}{a[1] / b[1]:10.3f}   {goal}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4200, help="warp side in pixels (default 4200)")
    ap.add_argument("--bin", type=int, default=128, help="superpixel size (default 128)")
    ap.add_argument("--repeat", type=int, default=5, help="timings per measurement (best kept)")
    ap.add_argument("--no-photutils", action="store_true", help="skip the photutils comparison")
    args = ap.parse_args(argv)

    size, b = args.size, args.bin
    image, bad = make_warp(size)
    grid = (size // b, size // b)

    print("machine:", platform.machine(), cpu_model(), f"{os.cpu_count()} cores,",
          "python", platform.python_version())
    versions = f"numpy {np.__version__}, numba {numba.__version__}"
    try:
        import astropy
        import photutils
        versions += f", photutils {photutils.__version__}, astropy {astropy.__version__}"
    except ImportError:
        pass
    print("versions:", versions)
    print(f"warp: {size} x {size} float32, {bad.mean() * 100:.1f} % bad, bins {b}, "
          f"grid {grid[0]} x {grid[1]}, best of {args.repeat}")

    def kernel(scale):
        return lambda: superpixel_stats(image, bad, 0, 0, grid, b, b, window_scale=scale,
                                        statistic="MEANCLIP", num_sigma_clip=3.0, num_iter=3)

    kernel(1.0)()  # warm-up: numba compile (or cache load)
    kernel(2.0)()

    print("\n    (times in ms, best of --repeat)     wall       cpu")
    # (1) kernel, window_scale 1.0, against photutils Background2D
    t_k1 = best_time(kernel(1.0), args.repeat)
    print(f"(1) MEANCLIP, window_scale=1.0, {b} px bins, 1 thread")
    row("bgdask superpixel_stats", t_k1)
    if not args.no_photutils:
        from astropy.stats import SigmaClip
        from photutils.background import Background2D, MeanBackground

        def photutils_bkg():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                bkg = Background2D(image, (b, b), filter_size=(1, 1),
                                   sigma_clip=SigmaClip(sigma=3, maxiters=3),
                                   bkg_estimator=MeanBackground(), mask=bad)
                return bkg.background_mesh

        photutils_bkg()
        t_pu = best_time(photutils_bkg, args.repeat)
        row("photutils Background2D", t_pu)
        ratio("ratio bgdask / photutils", t_k1, t_pu, "(goal <= 0.33)")

    # (2) Rubin's window (scale 2.0) against one read of the array
    t_k2 = best_time(kernel(2.0), args.repeat)
    t_read = best_time(lambda: image.sum(dtype=np.float64), max(args.repeat, 5))
    print(f"(2) MEANCLIP, window_scale=2.0 (Rubin), {b} px bins, 1 thread")
    row("bgdask superpixel_stats", t_k2)
    row("one read (image.sum)", t_read)
    ratio("ratio kernel / read", t_k2, t_read)
    npix = size * size
    print(f"\n    kernel CPU time per pixel: window_scale 1.0 {t_k1[1] / npix * 1e9:.2f} ns, "
          f"2.0 {t_k2[1] / npix * 1e9:.2f} ns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
